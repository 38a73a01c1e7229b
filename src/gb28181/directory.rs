//! GB28181 devices in the shared device list
//! ([`crate::streams::directory`]): each registered device with the
//! channels of its last catalog (GB/T 28181-2016 A.2.6.4).

use super::platform::GbPlatform;
use super::registry::{Channel, DeviceSummary};
use crate::streams::directory::{
    Capabilities, ChannelEntry, DeviceDirectory, DeviceEntry, Protocol,
};

/// Whether a catalog `PTZType` (A.2.1 note: 1 dome, 2 half-dome, 3 fixed
/// bullet, 4 remote-controlled bullet) moves. Unknown types are offered
/// PTZ: the device refuses the command if it cannot.
fn moves(ptz_type: Option<u32>) -> bool {
    !matches!(ptz_type, Some(2 | 3))
}

fn channel_entry(device: &str, c: &Channel) -> ChannelEntry {
    let ptz = moves(c.ptz_type);
    ChannelEntry {
        id: c.id.clone(),
        name: c.name.clone(),
        online: c.online,
        stream: format!("gb/{device}/{}", c.id),
        capabilities: Capabilities {
            ptz,
            presets: ptz,
            // Voice broadcast (§9.12), recordings (§9.7/§9.8) and snapshots
            // (2022 §9.14) are per-device services every channel reaches.
            talk: true,
            playback: true,
            snapshot: true,
            // PS streams carry G.711/AAC when the device has a microphone.
            audio: true,
        },
    }
}

fn device_entry(d: DeviceSummary, channels: &[Channel]) -> DeviceEntry {
    let mut details = serde_json::Map::new();
    for (k, v) in [
        ("transport", serde_json::to_value(d.transport)),
        ("firmware", serde_json::to_value(&d.firmware)),
        ("registered_at", serde_json::to_value(d.registered_at)),
        (
            "last_keepalive_secs_ago",
            serde_json::to_value(d.last_keepalive_secs_ago),
        ),
        ("channel_count", serde_json::to_value(d.channel_count)),
    ] {
        if let Ok(v) = v {
            details.insert(k.to_owned(), v);
        }
    }
    DeviceEntry {
        protocol: Protocol::Gb28181,
        channels: channels.iter().map(|c| channel_entry(&d.id, c)).collect(),
        id: d.id,
        name: d.name,
        manufacturer: d.manufacturer,
        model: d.model,
        online: d.online,
        address: Some(d.address),
        details,
    }
}

impl DeviceDirectory for GbPlatform {
    fn protocol(&self) -> Protocol {
        Protocol::Gb28181
    }

    fn devices(&self) -> Vec<DeviceEntry> {
        GbPlatform::devices(self)
            .into_iter()
            .map(|d| {
                let channels = self.channels(&d.id).unwrap_or_default();
                device_entry(d, &channels)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_cameras_offer_no_ptz_and_keys_name_the_channel() {
        let mut c = Channel {
            id: "34020000001310000001".into(),
            name: Some("gate".into()),
            manufacturer: None,
            model: None,
            status: Some("ON".into()),
            online: true,
            parent_id: None,
            civil_code: None,
            address: None,
            ptz_type: Some(3),
        };
        let e = channel_entry("34020000001320000001", &c);
        assert_eq!(e.stream, "gb/34020000001320000001/34020000001310000001");
        assert!(!e.capabilities.ptz && !e.capabilities.presets);
        assert!(e.capabilities.playback && e.capabilities.talk);
        c.ptz_type = Some(1);
        assert!(channel_entry("d", &c).capabilities.ptz);
        c.ptz_type = None;
        assert!(channel_entry("d", &c).capabilities.ptz);
    }
}
