#![no_main]
//! Browser talk audio on arbitrary bytes: each input is split into Opus
//! packets (a length byte before each) fed to one decoder, with a gap
//! concealed now and then. Must never panic (libopus refuses what breaks
//! RFC 6716 framing), and every packet out is 20 ms of A-law.
use camgate::gb28181::talk::SAMPLES_PER_PACKET;
use camgate::webrtc::talk_audio::TalkAudio;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut audio = TalkAudio::default();
    let mut out = Vec::new();
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(n);
        if *len == 0 {
            audio.conceal(SAMPLES_PER_PACKET, &mut out);
        } else {
            let _ = audio.push(packet, &mut out);
        }
        rest = next;
    }
    assert!(out.iter().all(|p| p.len() == SAMPLES_PER_PACKET));
});
