//! WebRTC fan-out: the server-side cost of sending one 2 Mbps H.264 stream
//! to many browser peers (issue 6 target: ≥ 500 viewers on 2 cores).
//!
//! Each peer is a real str0m client that completed ICE, DTLS and SRTP
//! with camgate's [`Peer`] in memory. A measured iteration sends one
//! 10 KB frame (2 Mbps at 25 fps) to every peer: gather once (shared
//! cache), packetize, SRTP-encrypt and `send_to` each datagram on a real
//! loopback UDP socket. Client-side work (consent checks, RTCP) runs
//! between iterations and is not timed.
//!
//! viewers per core at 25 fps = 1 s / (25 × time per frame per viewer).
//! Measured: 2.57 ms per frame for 50 viewers → ~770 viewers per core.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use camgate::media::frame::{Chunks, Codec, Frame, StreamInfo, VideoParams};
use camgate::webrtc::annexb::FrameCache;
use camgate::webrtc::peer::{LocalAddr, Peer, PeerOutput};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc};

const FRAME_BYTES: usize = 2_000_000 / 8 / 25;
const SPS: &[u8] = &[0x67, 0x4d, 0x00, 0x1f, 0x95, 0xa8, 0x14, 0x01, 0x6e, 0x40];
const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];

fn info() -> StreamInfo {
    StreamInfo {
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
    }
}

fn frame(n: i64) -> Arc<Frame> {
    let keyframe = n % 50 == 0;
    let mut units = smallvec::SmallVec::new();
    if keyframe {
        units.push(Chunks::from(Bytes::from_static(SPS)));
        units.push(Chunks::from(Bytes::from_static(PPS)));
    }
    // 0x55 filler never forms a start code, like real slice data.
    let mut slice = vec![0x55u8; FRAME_BYTES];
    slice[0] = if keyframe { 0x65 } else { 0x41 };
    units.push(Chunks::from(Bytes::from(slice)));
    Arc::new(Frame {
        codec: Codec::H264,
        pts: n * 3600,
        dts: n * 3600,
        keyframe,
        units,
    })
}

struct Pair {
    server: Peer,
    client: Rtc,
    client_addr: SocketAddr,
}

const SERVER: &str = "127.0.0.1:9";

/// Move datagrams both ways until neither side has any; returns whether
/// the server side reported Connected.
fn shuttle(p: &mut Pair, now: Instant) -> bool {
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    let mut connected = false;
    for _ in 0..64 {
        let mut moved = false;
        loop {
            match p.client.poll_output() {
                Ok(Output::Transmit(t)) => {
                    moved = true;
                    let _ = p
                        .server
                        .handle_datagram(now, p.client_addr, server_addr, &t.contents);
                }
                Ok(Output::Event(_)) => {}
                _ => break,
            }
        }
        loop {
            match p.server.poll() {
                Ok(PeerOutput::Transmit { data, .. }) => {
                    moved = true;
                    if let Ok(r) = Receive::new(Protocol::Udp, server_addr, p.client_addr, &data) {
                        let _ = p.client.handle_input(Input::Receive(now, r));
                    }
                }
                Ok(PeerOutput::Connected) => connected = true,
                Ok(PeerOutput::Wait(_)) | Err(_) | Ok(PeerOutput::Closed) => break,
                Ok(_) => {}
            }
        }
        let _ = p.client.handle_input(Input::Timeout(now));
        let _ = p.server.handle_timeout(now);
        if !moved {
            break;
        }
    }
    connected
}

fn connect(n: usize, now: Instant) -> Vec<Pair> {
    let server: SocketAddr = SERVER.parse().unwrap();
    let locals = [LocalAddr {
        bound: server,
        announced: server,
    }];
    (0..n)
        .map(|i| {
            let client_addr: SocketAddr = format!("127.0.0.2:{}", 10000 + i).parse().unwrap();
            let mut client = Rtc::builder().build(now);
            client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
            let mut change = client.sdp_api();
            change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
            let (offer, pending) = change.apply().unwrap();
            let (server_peer, answer) =
                Peer::accept(&offer.to_sdp_string(), &info(), &locals, now).unwrap();
            client
                .sdp_api()
                .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
                .unwrap();
            let mut pair = Pair {
                server: server_peer,
                client,
                client_addr,
            };
            let mut t = now;
            let mut ok = false;
            for _ in 0..50 {
                ok |= shuttle(&mut pair, t);
                if ok && pair.server.is_connected() {
                    break;
                }
                t += Duration::from_millis(20);
            }
            assert!(pair.server.is_connected(), "peer {i} did not connect");
            pair
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let viewers = 50;
    let start = Instant::now();
    let mut pairs = connect(viewers, start);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    out.set_nonblocking(true).unwrap();
    let cache = FrameCache::default();
    let mut n = 0i64;
    let mut clock = start + Duration::from_secs(1);
    let mut sent = 0u64;
    let mut frames_sent = 0u64;

    let mut group = c.benchmark_group("webrtc_fanout");
    group.throughput(Throughput::Bytes((FRAME_BYTES * viewers) as u64));
    group.bench_function(format!("one_10KB_frame_to_{viewers}_viewers"), |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            for _ in 0..iters {
                let f = frame(n);
                n += 1;
                frames_sent += 1;
                clock += Duration::from_millis(40);
                let t0 = Instant::now();
                for p in pairs.iter_mut() {
                    p.server.send_frame(clock, &f, || cache.get(&f)).unwrap();
                    // The driver's timer tick lets the pacer release packets.
                    p.server.handle_timeout(clock).unwrap();
                    while let Ok(PeerOutput::Transmit { data, .. }) = p.server.poll() {
                        // The sink is never read: the kernel drops what
                        // overflows its buffer, as for a slow browser.
                        if out.send_to(&data, sink_addr).is_ok() {
                            sent += data.len() as u64;
                        }
                    }
                }
                measured += t0.elapsed();
                // Keep consent and RTCP flowing, untimed, now and then.
                if n % 25 == 0 {
                    for p in pairs.iter_mut() {
                        shuttle(p, clock);
                    }
                }
            }
            measured
        })
    });
    group.finish();
    // Proof the timed loop really produced the media: bytes on the wire per
    // frame per viewer should be the frame plus RTP/SRTP overhead.
    let per = sent as f64 / (frames_sent.max(1) * viewers as u64) as f64;
    println!("sent {sent} bytes: {per:.0} bytes per frame per viewer (frame {FRAME_BYTES})");
    drop(sink);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
