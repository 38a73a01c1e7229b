#![no_main]
//! RFC 4571 framing on an arbitrary TCP byte stream cut at arbitrary
//! points, then the jitter buffer and SSRC router on the frames: no panic,
//! every frame within the limits, no bytes invented.
use std::time::{Duration, Instant};

use bytes::Bytes;
use camgate::ingest::rfc4571::{MIN_FRAME, Rfc4571Decoder};
use camgate::ingest::ssrc_router::SsrcRouter;
use camgate::media::jitter::{JitterBuffer, JitterConfig};
use camgate::media::rtp::RtpPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut).max(1);
    let mut d = Rfc4571Decoder::new(1500);
    let mut router = SsrcRouter::new();
    router.learn([127, 0, 0, 1].into(), ());
    let mut jitter = JitterBuffer::new(JitterConfig {
        depth: 8,
        max_delay: Duration::from_millis(5),
    });
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut framed = 0usize;
    for (i, piece) in stream.chunks(chunk).enumerate() {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() >= MIN_FRAME && f.len() <= 1500);
                    framed += f.len() + 2;
                    let _ = router.route(&f, [127, 0, 0, 1].into());
                    if let Ok(p) = RtpPacket::parse(Bytes::clone(&f)) {
                        jitter.push(p, t0 + Duration::from_millis(i as u64), &mut out);
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_fatal() => return,
                Err(_) => {}
            }
        }
        jitter.poll(t0 + Duration::from_millis(i as u64), &mut out);
        out.clear();
    }
    jitter.flush(&mut out);
    assert!(framed <= stream.len());
    let s = jitter.stats();
    assert!(s.released <= s.received);
});
