#![no_main]
//! Client RTCP (receiver reports, BYE) as the RTSP server parses it.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rtcp) = camgate::rtsp::receiver_report::parse(data) {
        // Every block came from whole bytes of the input.
        assert!(rtcp.reports.len() * 24 <= data.len());
    }
});
