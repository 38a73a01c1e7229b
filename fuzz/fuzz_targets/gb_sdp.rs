#![no_main]
//! GB28181 SDP parsing on arbitrary input: must never panic, and whatever
//! parses must re-render and re-parse to the same value.
use camgate::gb28181::sdp::{GbSdp, MediaFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(sdp) = GbSdp::parse(&text) {
        let _ = sdp.media_format();
        let _ = sdp.ssrc_value();
        let again = GbSdp::parse(&sdp.build());
        assert_eq!(again.as_ref(), Ok(&sdp));
    }
    let _ = MediaFormat::parse(&text);
});
