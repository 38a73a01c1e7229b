#![no_main]
//! MANSRTSP playback bodies and PTZ command words on arbitrary bytes: must
//! never panic; what parses must render and parse back the same.
use camgate::gb28181::mansrtsp::PlaybackCommand;
use camgate::gb28181::ptz::PtzFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((cmd, cseq)) = PlaybackCommand::parse(data) {
        assert_eq!(
            PlaybackCommand::parse(cmd.body(cseq).as_bytes()),
            Ok((cmd, cseq))
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PtzFrame::parse(text);
    }
});
