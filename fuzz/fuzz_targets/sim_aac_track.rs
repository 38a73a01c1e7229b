#![no_main]
//! Arbitrary bytes as the simulated camera's ADTS file: frames are cut
//! without panicking and each one lies inside the input.

use camgate::sim::aac_track::AacTrack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(track) = AacTrack::from_adts(bytes::Bytes::copy_from_slice(data)) {
        let total: usize = track.frames.iter().map(|f| f.len()).sum();
        assert!(total <= data.len());
        assert!(track.frames.iter().all(|f| f.len() >= 7));
        let _ = track.ticks(3);
    }
});
