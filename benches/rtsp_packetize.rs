//! RTSP egress packetization cost: RFC 6184 fragmentation of a frame, and
//! the whole per-frame path of a playing TCP session (fragments, RTP and
//! interleaved headers). Payload bytes are never copied on this path; the
//! setup asserts that every payload slice still points into the frame.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use camgate::media::frame::{Chunks, Codec, Frame, StreamInfo, VideoParams};
use camgate::rtsp::packetize::{DEFAULT_MTU, Packetizer};
use camgate::rtsp::session::{Connection, Event, SessionConfig, Transmit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SPS: &[u8] = &[0x67, 0x4d, 0x40, 0x1e, 0x9a, 0x66, 0x02, 0x80];
const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];

/// An IDR access unit of `size` bytes whose slice data spans two receive
/// buffers, as it does straight off the ingest path.
fn idr(size: usize) -> (Frame, Bytes) {
    let mut data = vec![0x65u8];
    data.extend((1..size).map(|i| i as u8));
    let data = Bytes::from(data);
    let mut unit = Chunks::new();
    unit.push(data.slice(..size / 3));
    unit.push(data.slice(size / 3..));
    let frame = Frame {
        codec: Codec::H264,
        pts: 0,
        dts: 0,
        keyframe: true,
        units: [
            Chunks::from(Bytes::from_static(SPS)),
            Chunks::from(Bytes::from_static(PPS)),
            unit,
        ]
        .into_iter()
        .collect(),
    };
    (frame, data)
}

/// A connection playing over TCP interleaved, set up through its requests.
fn playing_connection() -> Connection {
    let now = Instant::now();
    let mut c = Connection::new(SessionConfig::default(), [127, 0, 0, 1].into(), 1, now);
    let url = "rtsp://127.0.0.1:8554/gb/a/b";
    c.receive(
        format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes(),
        now,
    );
    assert!(matches!(c.poll_event(), Some(Event::OpenStream(_))));
    c.stream_opened(
        Ok(StreamInfo {
            audio_decided_by: None,
            video: Some((
                Codec::H264,
                VideoParams {
                    width: 640,
                    height: 360,
                    vps: None,
                    sps: Some(Bytes::from_static(SPS)),
                    pps: Some(Bytes::from_static(PPS)),
                },
            )),
            audio: None,
        }),
        now,
    );
    c.receive(
        format!(
            "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n\
             PLAY {url} RTSP/1.0\r\nCSeq: 3\r\n\r\n"
        )
        .as_bytes(),
        now,
    );
    while c.poll_event().is_some() {}
    assert!(c.is_playing());
    let mut sink = Vec::new();
    c.take_transmits(&mut sink);
    c
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtsp_packetize");
    for size in [8 * 1024, 100 * 1024] {
        let (frame, data) = idr(size);
        group.throughput(Throughput::Bytes(size as u64));

        let mut out = Vec::new();
        Packetizer::H264.packetize(&frame, DEFAULT_MTU, &mut out);
        let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
        let copied: usize = out
            .iter()
            .skip(2)
            .flat_map(|f| f.payload.parts())
            .filter(|p| !range.contains(&(p.as_ptr() as usize)))
            .map(Bytes::len)
            .sum();
        assert_eq!(copied, 0, "payload bytes copied by the packetizer");

        group.bench_function(format!("h264_fu_a_{}k", size / 1024), |b| {
            let mut out = Vec::with_capacity(128);
            b.iter(|| {
                out.clear();
                Packetizer::H264.packetize(black_box(&frame), DEFAULT_MTU, &mut out);
                black_box(out.len())
            })
        });

        group.bench_function(format!("tcp_session_frame_{}k", size / 1024), |b| {
            let mut conn = playing_connection();
            let mut batch: Vec<Transmit> = Vec::with_capacity(128);
            let now = Instant::now();
            let mut pts = 0;
            b.iter(|| {
                pts += 3600;
                let mut f = frame.clone();
                f.pts = pts;
                conn.push_frame(black_box(&f), now);
                batch.clear();
                conn.take_transmits(&mut batch);
                black_box(batch.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
