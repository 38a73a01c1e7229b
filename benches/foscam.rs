//! Foscam ingest and MJPEG egress cost per frame: splitting MO_V
//! Video_Data frames out of a receive buffer, RFC 2435 packetization of
//! the JPEG, and ADPCM → PCM → A-law for one 40 ms audio packet.
//!
//! Issue 7 sets no numeric target; these figures watch for regressions.
//! The video path copies no payload bytes: the setup asserts that the JPEG
//! and every RTP payload slice still point into the receive buffer.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use camgate::foscam::adpcm::AdpcmState;
use camgate::foscam::g711::linear_to_alaw;
use camgate::foscam::proto::{Channel, FrameDecoder, MediaMessage};
use camgate::media::frame::{Chunks, Codec, Frame};
use camgate::rtsp::packetize::{DEFAULT_MTU, Packetizer};
use camgate::sim::foscam_camera::{DEMO_MJPEG, split_jpegs};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn wire(jpeg: &Bytes) -> BytesMut {
    let mut out = BytesMut::new();
    MediaMessage::VideoData {
        timestamp: 100,
        capture_time: 0,
        jpeg: jpeg.clone(),
    }
    .encode(&mut out);
    out
}

fn decode_jpeg(buf: &mut BytesMut) -> Bytes {
    let raw = FrameDecoder::new(Channel::Media)
        .decode(buf)
        .and_then(Result::ok)
        .expect("frame");
    match MediaMessage::parse(&raw) {
        Ok(MediaMessage::VideoData { jpeg, .. }) => jpeg,
        other => panic!("{other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let jpeg = split_jpegs(DEMO_MJPEG).swap_remove(0);
    let template = wire(&jpeg);

    // Zero-copy check, once.
    let mut buf = template.clone();
    let base = buf.as_ptr() as usize;
    let got = decode_jpeg(&mut buf);
    assert_eq!(
        got.as_ptr() as usize,
        base + 23 + 13,
        "JPEG is a slice of the buffer"
    );
    let frame = Frame {
        codec: Codec::Mjpeg,
        pts: 0,
        dts: 0,
        keyframe: true,
        units: [Chunks::from(got.clone())].into_iter().collect(),
    };
    let mut out = Vec::new();
    Packetizer::Jpeg.packetize(&frame, DEFAULT_MTU, &mut out);
    let range = got.as_ptr() as usize..got.as_ptr() as usize + got.len();
    for f in &out {
        // The first part of each payload is the RFC 2435 header we made.
        for part in &f.payload.parts()[1..] {
            assert!(range.contains(&(part.as_ptr() as usize)), "payload copied");
        }
    }

    let mut g = c.benchmark_group("foscam");
    g.throughput(Throughput::Bytes(jpeg.len() as u64));
    g.bench_function("video_data_decode", |b| {
        b.iter_batched(
            || template.clone(),
            |mut buf| black_box(decode_jpeg(&mut buf)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("rfc2435_packetize", |b| {
        let mut out = Vec::with_capacity(32);
        b.iter(|| {
            out.clear();
            Packetizer::Jpeg.packetize(black_box(&frame), DEFAULT_MTU, &mut out);
            black_box(out.len())
        })
    });
    g.throughput(Throughput::Elements(320));
    let adpcm: Vec<u8> = (0..160u32).map(|i| (i * 37) as u8).collect();
    g.bench_function("adpcm_to_alaw_packet", |b| {
        let mut state = AdpcmState::new();
        let mut pcm = Vec::with_capacity(320);
        b.iter(|| {
            pcm.clear();
            state.decode(black_box(&adpcm), &mut pcm);
            let alaw: Vec<u8> = pcm.iter().map(|&s| linear_to_alaw(s)).collect();
            black_box(alaw)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
