//! Answers of the simulated device to the queries that arrived with GB28181
//! control (GB/T 28181-2016 A.2.6.7 ConfigDownload `BasicParam`, A.2.6.8
//! PresetQuery): fixed content, so tests can assert it through the API.

use crate::gb28181::manscdp::{XmlWriter, encode_body};

/// Presets the simulated camera reports: (id, name).
pub const PRESETS: [(&str, &str); 2] = [("1", "Gate"), ("2", "Yard")];
/// Missed keepalives before the simulated camera counts as offline.
pub const HEARTBEAT_COUNT: u32 = 3;

pub fn preset_body(sn: &str, target: &str) -> Vec<u8> {
    let mut w = XmlWriter::new();
    w.open("Response");
    w.leaf("CmdType", "PresetQuery");
    w.leaf("SN", sn);
    w.leaf("DeviceID", target);
    w.raw(&format!("<PresetList Num=\"{}\">\r\n", PRESETS.len()));
    for (id, name) in PRESETS {
        w.open("Item");
        w.leaf("PresetID", id);
        w.leaf("PresetName", name);
        w.close("Item");
    }
    w.close("PresetList");
    w.close("Response");
    encode_body(&w.finish())
}

pub fn basic_param_body(sn: &str, device_id: &str, heartbeat_secs: u64) -> Vec<u8> {
    let mut w = XmlWriter::new();
    w.open("Response");
    w.leaf("CmdType", "ConfigDownload");
    w.leaf("SN", sn);
    w.leaf("DeviceID", device_id);
    w.leaf("Result", "OK");
    w.open("BasicParam");
    w.leaf("Name", "camgate simulated camera");
    w.leaf("Expiration", "3600");
    w.leaf("HeartBeatInterval", &heartbeat_secs.max(1).to_string());
    w.leaf("HeartBeatCount", &HEARTBEAT_COUNT.to_string());
    w.close("BasicParam");
    w.close("Response");
    encode_body(&w.finish())
}
