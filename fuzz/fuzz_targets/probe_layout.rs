#![no_main]
//! `camgate probe` on arbitrary bytes: the layout guess (PS, raw RTP,
//! RFC 4571) and the demux behind it never panic, and what the report
//! counts stays within what the input could hold.
use bytes::Bytes;
use camgate::media::probe::{Layout, MAX_SIZES, probe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let report = probe(Bytes::copy_from_slice(data));
    assert_eq!(report.layout, Layout::detect(data));
    assert_eq!(report.bytes, data.len() as u64);
    assert!(report.sizes.len() <= MAX_SIZES);
    assert!(report.keyframes <= report.video_frames);
    // Every frame needs at least one byte of its own on the wire.
    assert!(report.video_frames + report.audio_frames <= data.len() as u64);
});
