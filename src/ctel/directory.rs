//! Telecom (手机看店) devices in the shared device list
//! ([`crate::streams::directory`]): each registered device with channels
//! `0..channels` as its login reported, streams `ctel/{devId}/{channel}`.

use super::platform::{CtelDevice, CtelPlatform};
use crate::streams::directory::{
    Capabilities, ChannelEntry, DeviceDirectory, DeviceEntry, Protocol,
};

/// A device that reports no channel count still has channel 0.
const MIN_CHANNELS: u16 = 1;
/// More channels than any telecom camera or NVR has; a larger count in a
/// login is not listed channel by channel.
const MAX_CHANNELS: u16 = 256;

fn device_entry(d: CtelDevice) -> DeviceEntry {
    let capabilities = Capabilities {
        ptz: d.ptz,
        // The spec has direction PTZ only (VIDEO_PTZ_REQ); recordings are
        // searchable but not played through the stream table.
        presets: false,
        talk: false,
        playback: false,
        snapshot: false,
        audio: false,
    };
    let count = d.channels.clamp(MIN_CHANNELS, MAX_CHANNELS);
    let channels = (0..count)
        .map(|ch| ChannelEntry {
            id: ch.to_string(),
            name: None,
            online: d.online,
            stream: format!("ctel/{}/{ch}", d.dev_id),
            capabilities,
        })
        .collect();
    let mut details = serde_json::Map::new();
    details.insert("firmware".into(), d.dev_ver.clone().into());
    details.insert("net_type".into(), d.net_type.into());
    details.insert("registered_at".into(), d.registered_at.into());
    details.insert("last_heartbeat".into(), d.last_heartbeat.into());
    details.insert("current_viewers".into(), d.current_viewers.into());
    DeviceEntry {
        protocol: Protocol::Ctel,
        id: d.dev_id,
        name: None,
        manufacturer: d.manufacturer.map(str::to_owned),
        model: None,
        online: d.online,
        address: d.peer.map(|p| p.to_string()),
        details,
        channels,
    }
}

impl DeviceDirectory for CtelPlatform {
    fn protocol(&self) -> Protocol {
        Protocol::Ctel
    }

    fn devices(&self) -> Vec<DeviceEntry> {
        let mut all: Vec<DeviceEntry> = CtelPlatform::devices(self)
            .into_iter()
            .map(device_entry)
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}
