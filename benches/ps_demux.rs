//! Demux throughput of the receive path on the shared Hikvision capture.
//!
//! Targets (issue 3):
//! - the whole-process comparison is `camgate probe` on 30 concatenated
//!   copies of the capture, at least 5× faster than
//!   `ffmpeg -v error -f mpeg -i FILE -map 0:v -c copy -f null -` (measured
//!   with hyperfine; command and figures in README "Performance"); this
//!   bench tracks the demuxer's share of it;
//! - at most 0.05 bytes copied per payload byte (asserted in
//!   `tests/media_demux.rs` and `benches/rtp_frames.rs`; currently 0);
//! - zero heap allocations per RTP packet in steady state (counted in
//!   `benches/rtp_frames.rs`).
//!
//! Without the capture (`CAMGATE_TESTDATA`), the bench says so and returns.

use bytes::Bytes;
use camgate::media::ps::{PsDemuxer, PsEvent};
use camgate::media::rtp_ps::RtpPsReceiver;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn split_rtp(data: &Bytes) -> Vec<Bytes> {
    let ssrc = data.get(8..12).map(<[u8]>::to_vec).unwrap_or_default();
    let mut starts = vec![0];
    let mut at = 12;
    while at + 12 <= data.len() {
        if data[at] == 0x80 && data[at + 1] & 0x7f == 96 && data[at + 8..at + 12] == ssrc[..] {
            starts.push(at);
            at += 12;
        } else {
            at += 1;
        }
    }
    starts.push(data.len());
    starts.windows(2).map(|w| data.slice(w[0]..w[1])).collect()
}

fn bench(c: &mut Criterion) {
    let (Some(ps), Some(rtp)) = (
        camgate::testdata::file("hik_h264_704x576.ps"),
        camgate::testdata::file("hik_h264_704x576.rtp"),
    ) else {
        eprintln!("ps_demux bench: captures not found, nothing to measure");
        return;
    };
    let ps = Bytes::from(std::fs::read(ps).expect("read .ps"));
    let rtp = Bytes::from(std::fs::read(rtp).expect("read .rtp"));
    let packets = split_rtp(&rtp);

    let mut g = c.benchmark_group("ps_demux");
    g.throughput(Throughput::Bytes(ps.len() as u64));
    g.bench_function("whole_file_1400B_pushes", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            let mut d = PsDemuxer::new();
            let mut frames = 0usize;
            let mut at = 0;
            while at < ps.len() {
                let end = (at + 1400).min(ps.len());
                d.push(ps.slice(at..end), &mut out);
                frames += out
                    .iter()
                    .filter(|e| matches!(e, PsEvent::Frame(_)))
                    .count();
                out.clear();
                at = end;
            }
            d.flush(&mut out);
            frames + out.len()
        })
    });
    g.throughput(Throughput::Bytes(rtp.len() as u64));
    g.bench_function("rtp_to_frames", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            let mut rx = RtpPsReceiver::new();
            let mut frames = 0usize;
            for p in &packets {
                let _ = rx.push_datagram(p.clone(), &mut out);
                frames += out.len();
                out.clear();
            }
            rx.flush(&mut out);
            frames
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
