#![no_main]
//! The frame-marker SEI parser on arbitrary NAL units (it reads what
//! viewers receive), and the round trip of any digit string.
use camgate::sim::frame_marker::{marker_sei, parse_marker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for h265 in [false, true] {
        let _ = parse_marker(data, h265);
        let digits: String = data.iter().map(|b| char::from(b'0' + b % 10)).collect();
        let nal = marker_sei(&digits, h265);
        let text = parse_marker(&nal, h265).expect("own marker parses");
        assert!(digits.starts_with(text));
    }
});
