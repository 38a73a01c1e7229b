#![no_main]
//! Voice broadcast uploads (WAV or raw s16le) on arbitrary bytes: must
//! never panic, and what parses must encode to one A-law byte per sample.
use camgate::media::audio::{g711, wav};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pcm) = wav::read_pcm(data) {
        assert_eq!(g711::encode(&pcm).len(), pcm.len());
    }
});
