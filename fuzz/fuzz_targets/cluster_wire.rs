#![no_main]
//! What one node reads from another or from Redis (issue 18): a forwarded
//! request's HTTP answer (`cluster::forward::parse`) and the JSON node and
//! device records. No panic; a parsed answer never claims more body than it
//! was given; a node record re-serializes to the same value.
use camgate::cluster::forward;
use camgate::cluster::records::{DeviceRecord, NodeRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(reply) = forward::parse(data) {
        assert!(reply.body.len() <= data.len());
    }
    if let Ok(node) = serde_json::from_slice::<NodeRecord>(data) {
        let text = serde_json::to_string(&node).expect("a parsed record serializes");
        let again: NodeRecord = serde_json::from_str(&text).expect("and parses back");
        assert_eq!(again, node);
    }
    if let Ok(device) = serde_json::from_slice::<DeviceRecord>(data) {
        let text = serde_json::to_string(&device).expect("a parsed record serializes");
        assert!(serde_json::from_str::<DeviceRecord>(&text).is_ok());
    }
});
