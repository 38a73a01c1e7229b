#![no_main]
//! MANSCDP body decoding (encoding sniffing + XML) on arbitrary bytes: must
//! never panic; whatever decodes must render and decode again.
use camgate::gb28181::manscdp::{decode_body, encode_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_body(data) {
        let _ = (m.sn(), m.device_id(), m.cmd_type());
        let _ = decode_body(&encode_body(&m.to_xml()));
    }
});
