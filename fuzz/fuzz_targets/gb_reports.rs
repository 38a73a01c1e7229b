#![no_main]
//! MANSCDP reports (RecordInfo, DeviceStatus, ConfigDownload, PresetQuery,
//! Alarm, MediaStatus, snapshots) on arbitrary bytes: must never panic.
use camgate::gb28181::manscdp::decode_tree;
use camgate::gb28181::reports::classify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = decode_tree(data) {
        let _ = classify(&tree);
    }
});
