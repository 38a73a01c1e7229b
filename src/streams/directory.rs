//! One list of every camera, whatever protocol brought it: what each
//! southbound adapter reports about its devices, in the shape egress shows
//! (`GET /api/v1/devices`, the console).
//!
//! Each adapter implements [`DeviceDirectory`]; `app.rs` hands the list of
//! them to the API, which adds the play URLs (those depend on how the
//! viewer reached the gateway, so the adapters never build them). This
//! keeps the rule of `lib.rs`: egress reads this module, never an adapter.

use serde::{Deserialize, Serialize};

/// Which adapter a device came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Gb28181,
    Foscam,
    Ctel,
}

/// What a channel can do besides live video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Pan/tilt (and zoom where the protocol has it).
    pub ptz: bool,
    /// Stored PTZ positions.
    pub presets: bool,
    /// Audio to the camera's speaker.
    pub talk: bool,
    /// Recordings that can be searched and played back.
    pub playback: bool,
    /// A still image on request.
    pub snapshot: bool,
    /// An audio track with the video.
    pub audio: bool,
}

/// One playable channel of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    pub id: String,
    pub name: Option<String>,
    pub online: bool,
    /// The stream key that plays it live (`gb/{dev}/{ch}`, `foscam/{name}`,
    /// `ctel/{dev}/{ch}`): the path of its RTSP and WHEP URLs.
    pub stream: String,
    pub capabilities: Capabilities,
}

/// One device as every adapter describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    pub protocol: Protocol,
    pub id: String,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub online: bool,
    /// Where the device is reached or was last seen from, if known.
    pub address: Option<String>,
    /// Protocol-specific facts (GB28181 transport and registration time,
    /// telecom firmware …), kept as the adapter reports them.
    pub details: serde_json::Map<String, serde_json::Value>,
    pub channels: Vec<ChannelEntry>,
}

/// An adapter's view of its devices.
pub trait DeviceDirectory: Send + Sync {
    fn protocol(&self) -> Protocol;
    /// Every device the adapter knows, in a stable order.
    fn devices(&self) -> Vec<DeviceEntry>;
}

/// Every adapter's devices, grouped by protocol in [`Protocol`] order.
pub fn all_devices(directories: &[std::sync::Arc<dyn DeviceDirectory>]) -> Vec<DeviceEntry> {
    let mut all: Vec<DeviceEntry> = directories.iter().flat_map(|d| d.devices()).collect();
    // Stable: each adapter's own order is kept within its group.
    all.sort_by_key(|d| d.protocol);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Fixed(Protocol, &'static [&'static str]);

    impl DeviceDirectory for Fixed {
        fn protocol(&self) -> Protocol {
            self.0
        }
        fn devices(&self) -> Vec<DeviceEntry> {
            self.1
                .iter()
                .map(|id| DeviceEntry {
                    protocol: self.0,
                    id: (*id).to_owned(),
                    name: None,
                    manufacturer: None,
                    model: None,
                    online: true,
                    address: None,
                    details: Default::default(),
                    channels: Vec::new(),
                })
                .collect()
        }
    }

    #[test]
    fn devices_group_by_protocol_keeping_each_adapters_order() {
        let dirs: Vec<Arc<dyn DeviceDirectory>> = vec![
            Arc::new(Fixed(Protocol::Ctel, &["c1"])),
            Arc::new(Fixed(Protocol::Gb28181, &["g2", "g1"])),
            Arc::new(Fixed(Protocol::Foscam, &["f1"])),
        ];
        let ids: Vec<String> = all_devices(&dirs).into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["g2", "g1", "f1", "c1"]);
        let json = serde_json::to_value(Protocol::Gb28181).unwrap();
        assert_eq!(json, "gb28181");
    }
}
