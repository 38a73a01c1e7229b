//! Foscam cameras in the shared device list
//! ([`crate::streams::directory`]): one device per configured camera with
//! its one channel, `foscam/{name}`.

use super::{CameraStatus, FoscamCamera, FoscamSources};
use crate::streams::directory::{
    Capabilities, ChannelEntry, DeviceDirectory, DeviceEntry, Protocol,
};

/// What every MO_O/MO_V camera offers: `decoder_control` pan/tilt and
/// presets, talk over the MO_V audio channel, the latest JPEG as a
/// snapshot, ADPCM audio with the video; no recordings.
const CAPABILITIES: Capabilities = Capabilities {
    ptz: true,
    presets: true,
    talk: true,
    playback: false,
    snapshot: true,
    audio: true,
};

fn device_entry(camera: &FoscamCamera) -> DeviceEntry {
    let name = camera.name().to_owned();
    let status = camera.status();
    let online = matches!(status, CameraStatus::Online { .. });
    let mut details = serde_json::Map::new();
    if let Ok(v) = serde_json::to_value(&status) {
        details.insert("status".into(), v);
    }
    let firmware = match &status {
        CameraStatus::Online { firmware, .. } => Some(firmware.clone()),
        _ => None,
    };
    if let Some(f) = firmware {
        details.insert("firmware".into(), f.into());
    }
    DeviceEntry {
        protocol: Protocol::Foscam,
        id: name.clone(),
        name: Some(name.clone()),
        manufacturer: Some("Foscam".into()),
        model: None,
        online,
        address: Some(format!("{}:{}", camera.config.host, camera.config.port)),
        details,
        channels: vec![ChannelEntry {
            id: name.clone(),
            name: Some(name.clone()),
            online,
            stream: format!("foscam/{name}"),
            capabilities: CAPABILITIES,
        }],
    }
}

impl DeviceDirectory for FoscamSources {
    fn protocol(&self) -> Protocol {
        Protocol::Foscam
    }

    fn devices(&self) -> Vec<DeviceEntry> {
        let mut all: Vec<DeviceEntry> = self.cameras().map(|c| device_entry(c)).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}
