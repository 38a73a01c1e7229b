//! Every GB28181 media transport (GB/T 28181-2016 Annex F) end to end: the
//! gateway and a simulated camera as separate processes on loopback, the
//! gateway configured for one transport, ffprobe reading its RTSP output.

mod common;

use std::time::Duration;

use common::*;

/// Gateway on `transport`, one camera with `camera_flags`; ffprobe must
/// see the clip's H.264 640x360, and the metrics must show the transport.
fn probe_over(transport: &'static str, camera_flags: &[&str], ssrc_policy: &'static str) -> Rig {
    let mut rig = Rig::start(Options {
        transport,
        ssrc_policy,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, camera_flags);
    rig.wait_channel(DEVICE, CHANNEL);
    let probe = ffprobe_json(&rig.url(DEVICE, CHANNEL), "tcp");
    let video = &probe["streams"][0];
    assert_eq!(video["codec_name"], "h264", "{probe}\n{}", rig.logs());
    assert_eq!(video["width"], 640, "{probe}");
    assert_eq!(video["height"], 360, "{probe}");
    let started = rig.metric(&format!(
        "camgate_media_streams_total{{transport=\"{transport}\"}}"
    ));
    assert!(
        started >= 1.0,
        "no {transport} stream in metrics\n{}",
        rig.logs()
    );
    rig
}

#[test]
fn udp_per_stream_port() {
    if !have("ffprobe") {
        return;
    }
    let rig = probe_over("udp", &[], "learn");
    assert!(rig.metric("camgate_frames_demuxed_total") > 0.0);
}

#[test]
fn udp_shared_port() {
    if !have("ffprobe") {
        return;
    }
    let rig = probe_over("udp_shared", &[], "learn");
    let routed = rig.metric("camgate_shared_port_packets_total{outcome=\"routed\"}");
    assert!(routed > 10.0, "shared port routed {routed}\n{}", rig.logs());
    // Packets still in flight when the idle stream's route is removed (the
    // camera has not processed our BYE yet) are rightly counted as unknown;
    // anything beyond that trickle would mean mis-routing.
    let unknown = rig.metric("camgate_shared_port_packets_total{outcome=\"unknown_ssrc\"}");
    assert!(
        unknown * 10.0 < routed,
        "unknown {unknown} vs routed {routed}"
    );
}

#[test]
fn udp_shared_port_learns_an_unannounced_ssrc() {
    if !have("ffprobe") {
        return;
    }
    // The camera answers without y= and sends its own SSRC.
    let rig = probe_over(
        "udp_shared",
        &["--answer-ssrc", "123456789", "--omit-ssrc"],
        "learn",
    );
    assert!(rig.metric("camgate_shared_port_packets_total{outcome=\"learned\"}") >= 1.0);
}

#[test]
fn udp_answered_ssrc_differs_from_offer() {
    if !have("ffprobe") {
        return;
    }
    // y= names another SSRC than offered: that one is received.
    let rig = probe_over("udp", &["--answer-ssrc", "123456789"], "strict");
    assert!(rig.metric("camgate_frames_demuxed_total") > 0.0);
}

#[test]
fn tcp_passive() {
    if !have("ffprobe") {
        return;
    }
    let rig = probe_over("tcp_passive", &[], "learn");
    assert!(rig.logs().contains("TCP media connected"), "{}", rig.logs());
}

#[test]
fn tcp_active_connects_from_the_offered_port() {
    if !have("ffprobe") {
        return;
    }
    let rig = probe_over("tcp_active", &[], "learn");
    let logs = rig.logs();
    assert!(logs.contains("TCP media connected"), "{logs}");
    assert!(
        !logs.contains("TCP media from another port than offered"),
        "{logs}"
    );
}

#[test]
fn camera_without_tcp_refuses_tcp_offers() {
    let mut rig = Rig::start(Options {
        transport: "tcp_passive",
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &["--no-tcp"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let (status, _) = rtsp_describe(rig.ports.rtsp, &rig.url(DEVICE, CHANNEL));
    assert_ne!(status, 200);
    assert!(rig.metric("camgate_invites_total{outcome=\"rejected\"}") >= 1.0);
}

/// One DESCRIBE over a raw socket; status and body.
fn rtsp_describe(port: u16, url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// 50 streams on the shared port at once, packets interleaved, plus a
/// stranger with an unregistered SSRC: every stream demuxes exactly its
/// own frames (each frame's NAL units carry the stream's marker byte),
/// and the stranger's packets reach no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_port_50_ssrcs_no_crosstalk() {
    use bytes::BytesMut;
    use camgate::ingest::shared_udp::SharedUdpPort;
    use camgate::media::ps::PsEvent;
    use camgate::media::ps_mux::PsMuxer;
    use camgate::media::rtp_ps::RtpPsReceiver;
    use camgate::sim::rtp::RtpPacketizer;

    const STREAMS: u32 = 50;
    const FRAMES: u64 = 20;
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let Ok(shared) = SharedUdpPort::bind("127.0.0.1".parse().unwrap(), port).await else {
        eprintln!("SKIPPED: port {port} pair not free");
        return;
    };
    let ssrc = |i: u32| 1_000_000 + i * 7919;
    let mut subs: Vec<_> = (0..STREAMS)
        .map(|i| shared.subscribe(ssrc(i)).unwrap())
        .collect();
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dest = std::net::SocketAddr::from(([127, 0, 0, 1], shared.port));
    let mut mux = PsMuxer::new();
    let mut rtp: Vec<_> = (0..STREAMS)
        .map(|i| RtpPacketizer::new(ssrc(i), 96, (i * 1000) as u16))
        .collect();
    let mut stranger = RtpPacketizer::new(42, 96, 0);
    let mut ps = BytesMut::new();
    for f in 0..FRAMES {
        for i in 0..STREAMS {
            // An IDR-typed NAL unit filled with this stream's marker, long
            // enough to span two RTP packets.
            let marker = i as u8 + 1;
            let mut nal = vec![0x65];
            nal.resize(2000, marker);
            ps.clear();
            mux.write_video(&[nal], f * 3600, true, &mut ps);
            for pkt in rtp[i as usize].packetize(&ps, (f * 3600) as u32) {
                sender.send_to(&pkt, dest).await.unwrap();
            }
            if i % 10 == 0 {
                for pkt in stranger.packetize(&ps, 0) {
                    sender.send_to(&pkt, dest).await.unwrap();
                }
            }
        }
        // Keep within the socket buffer and the per-stream queues.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, sub) in subs.iter_mut().enumerate() {
        let marker = i as u8 + 1;
        let mut rx = RtpPsReceiver::with_ssrc(ssrc(i as u32));
        let mut events = Vec::new();
        while let Ok((data, _)) = sub.rx.try_recv() {
            rx.push_datagram(data, &mut events).unwrap();
        }
        rx.flush(&mut events);
        let frames: Vec<_> = events
            .into_iter()
            .filter_map(|e| match e {
                PsEvent::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len() as u64, FRAMES, "stream {i}");
        assert_eq!(rx.stats().foreign_ssrc, 0, "stream {i}");
        for f in &frames {
            for unit in &f.units {
                let bytes = unit.to_vec();
                assert!(
                    bytes[1..].iter().all(|b| *b == marker),
                    "stream {i} got another stream's data"
                );
            }
        }
    }
    // The stranger sent 5 frames x 2 packets per round: all dropped.
    let unknown = metric_value(
        &camgate::metrics::get().encode(),
        "camgate_shared_port_packets_total{outcome=\"unknown_ssrc\"}",
    );
    assert_eq!(unknown, (FRAMES * 5 * 2) as f64);
    assert_eq!(shared.streams(), (STREAMS as usize, 0));
    drop(subs);
    assert_eq!(shared.streams(), (0, 0));
}

#[test]
fn per_request_transport_override() {
    if !have("ffprobe") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    // An unknown transport is refused, not silently replaced. (Asked while
    // no stream runs: a running stream is joined whatever the query says.)
    let bad = format!("{}?transport=sctp", rig.url(DEVICE, CHANNEL));
    let (status, _) = rtsp_describe(rig.ports.rtsp, &bad);
    assert_eq!(status, 404);
    let url = format!("{}?transport=tcp_active", rig.url(DEVICE, CHANNEL));
    let probe = ffprobe_json(&url, "tcp");
    assert_eq!(probe["streams"][0]["codec_name"], "h264", "{probe}");
    // Every start (a restart included, should the first TCP connection
    // drop) used the requested transport.
    assert!(
        rig.metric("camgate_media_streams_total{transport=\"tcp_active\"}") >= 1.0,
        "{}",
        rig.logs()
    );
    assert_eq!(
        rig.metric("camgate_media_streams_total{transport=\"udp\"}"),
        0.0
    );
}

#[test]
fn h265_source_is_served_as_hevc() {
    if !have("ffprobe") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &["--h265"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let probe = ffprobe_json(&rig.url(DEVICE, CHANNEL), "tcp");
    let video = &probe["streams"][0];
    assert_eq!(video["codec_name"], "hevc", "{probe}\n{}", rig.logs());
    assert_eq!(video["width"], 640, "{probe}");
    assert_eq!(video["height"], 360, "{probe}");
}

#[test]
fn g711a_in_ps_is_offered_as_pcma() {
    if !have("ffprobe") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &["--audio"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let (status, sdp) = rtsp_describe(rig.ports.rtsp, &rig.url(DEVICE, CHANNEL));
    assert_eq!(status, 200, "{sdp}");
    assert!(sdp.contains("PCMA/8000"), "{sdp}");
    let probe = ffprobe_json(&rig.url(DEVICE, CHANNEL), "tcp");
    let codecs = ffprobe_codecs(&probe);
    assert!(codecs.contains(&"pcm_alaw"), "{probe}");
    assert!(codecs.contains(&"h264"), "{probe}");
    let audio = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_name"] == "pcm_alaw")
        .unwrap();
    assert_eq!(audio["sample_rate"], "8000", "{probe}");
}

/// The shared-port acceptance check through the whole gateway: fifty
/// simulated GB28181 cameras (one process, distinct device ids, every
/// frame tagged with an SEI naming its device) register with a gateway
/// whose streams all use the one shared UDP port; fifty RTSP viewers, one
/// per camera, play at once. Every viewer must get frames carrying its own
/// camera's tag and none of another's, and the shared port must see no
/// packet of an unknown SSRC while they all play.
#[test]
fn udp_shared_port_50_cameras_50_viewers_no_crosstalk() {
    use common::marker_viewer::count_markers;

    const CAMERAS: u32 = 50;
    const FRAMES: u32 = 10;
    let mut rig = Rig::start(Options {
        transport: "udp_shared",
        ssrc_policy: "strict",
        // Nothing may stop while the metrics are read at the end.
        idle_timeout: 60.0,
        invite_timeout: 10.0,
        ..Options::default()
    });
    let count = CAMERAS.to_string();
    rig.add_camera(DEVICE, CHANNEL, &["--count", &count, "--mark-frames"]);
    let cameras = rig.wait_cameras(CAMERAS);
    let viewers: Vec<_> = cameras
        .iter()
        .map(|(device, channel)| {
            let (port, url, device) = (rig.ports.rtsp, rig.url(device, channel), device.clone());
            std::thread::spawn(move || {
                count_markers(port, &url, &device, FRAMES, Duration::from_secs(40))
            })
        })
        .collect();
    let seen: Vec<_> = viewers.into_iter().map(|v| v.join().unwrap()).collect();
    // Read while every viewer is still connected, so every stream is live.
    let metrics = rig.metrics();
    for ((device, _), s) in cameras.iter().zip(&seen) {
        let others: std::collections::BTreeSet<&String> = s.foreign.iter().collect();
        assert!(
            others.is_empty(),
            "viewer of {device} got {} frames of {others:?}",
            s.foreign.len()
        );
        assert!(
            s.error.is_none() && s.own >= FRAMES,
            "viewer of {device}: {} own frames in {} packets, {:?}\n{}",
            s.own,
            s.packets,
            s.error,
            rig.logs()
        );
    }
    let started = metric_value(
        &metrics,
        "camgate_media_streams_total{transport=\"udp_shared\"}",
    );
    assert!(started >= f64::from(CAMERAS), "{started} streams started");
    let routed = metric_value(
        &metrics,
        "camgate_shared_port_packets_total{outcome=\"routed\"}",
    );
    assert!(
        routed >= f64::from(CAMERAS * FRAMES),
        "shared port routed {routed}"
    );
    let unknown = metric_value(
        &metrics,
        "camgate_shared_port_packets_total{outcome=\"unknown_ssrc\"}",
    );
    let log = rig.gateway.log_text();
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("unknown SSRC"))
        .take(10)
        .collect();
    assert_eq!(
        unknown,
        0.0,
        "packets of unknown SSRC on the shared port:\n{}",
        dropped.join("\n")
    );
    drop(seen);
}
