//! Faults end cleanly (issue 13): a dead device, a lost network, a reboot,
//! a lossy link or a restarted gateway never leaves a stream hanging. The
//! gateway and simulated cameras run as separate processes on loopback;
//! RTSP viewers are bare clients that record when each frame came
//! (tests/common/live_viewer.rs); the network faults come from the
//! impairment proxy of tests/common/impair.rs, which the cameras send
//! their media through (`sim-camera --media-ip 127.0.0.2`).
//!
//! Times asserted are the issue's: a viewer of a dead device is ended
//! within `rtp_timeout` + 2 s; after a network outage the same viewer has
//! frames again within 5 s of the network's return.

mod common;

use std::time::{Duration, Instant};

use common::live_viewer::LiveViewer;
use common::*;

/// `media.rtp_timeout` of these tests, seconds.
const RTP_TIMEOUT: f64 = 2.0;

fn streams_json(rig: &Rig) -> serde_json::Value {
    let (_, body) = http_get(rig.ports.http, "/api/v1/streams").expect("GET /api/v1/streams");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

fn stream_count(rig: &Rig) -> usize {
    let v = streams_json(rig);
    v.as_array()
        .or_else(|| v["streams"].as_array())
        .map_or(0, Vec::len)
}

/// A gateway on `transport` with no reconnect window, one marked camera,
/// one viewer with frames flowing; then the camera dies by `signal`:
/// KILL (its sockets close: over TCP the gateway sees the connection
/// drop at once) or STOP (frozen: no FIN, no packet, like a pulled cable
/// or a power cut, so only the inactivity deadline can notice). The
/// viewer must be ended (RTCP BYE, then the connection closed) within
/// `rtp_timeout` + 2 s of its last packet, the stream gone, its RTP port
/// back in the pool and the stop counted (`no_media` unless the TCP
/// connection visibly broke).
fn device_dies(transport: &'static str, signal: &str) {
    let mut rig = Rig::start(Options {
        transport,
        rtp_timeout: RTP_TIMEOUT,
        streams_extra: "  reconnect_window: 0".into(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &["--mark-frames"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let viewer = LiveViewer::start(rig.ports.rtsp, &rig.url(DEVICE, CHANNEL), DEVICE);
    assert!(
        viewer.wait(Duration::from_secs(10), |s| s.own.len() >= 10),
        "no frames before the kill: {:?}\n{}",
        viewer.seen(),
        rig.logs()
    );
    let ports_busy = rig.metric("camgate_rtp_ports_in_use");
    let camera = rig.cameras.first_mut().expect("camera");
    send_signal(camera.child.id(), signal);
    let killed = Instant::now();
    let limit = Duration::from_secs_f64(RTP_TIMEOUT + 2.0);
    let ended = viewer.wait(limit + Duration::from_secs(3), |s| s.closed.is_some());
    let seen = viewer.seen();
    let last = seen.last_packet.expect("packets before the kill");
    let closed = seen.closed.unwrap_or_else(|| {
        panic!(
            "viewer still connected {:?} after the kill (ended: {ended})\n{}",
            killed.elapsed(),
            rig.logs()
        )
    });
    let hung = closed.duration_since(last);
    eprintln!(
        "{transport}: viewer ended {:?} after its last packet ({:?} after SIG{signal}); RTCP BYE: {:?}",
        hung,
        closed.duration_since(killed),
        seen.bye.map(|b| b.duration_since(last))
    );
    assert!(
        hung <= limit,
        "{transport}: viewer hung {hung:?} on a dead stream (limit {limit:?})\n{}",
        rig.logs()
    );
    assert!(
        seen.bye.is_some_and(|b| b <= closed),
        "{transport}: no RTCP BYE before the close"
    );
    assert!(
        wait_until(Duration::from_secs(2), || stream_count(&rig) == 0),
        "{transport}: stream still listed: {}",
        streams_json(&rig)
    );
    let metrics = rig.metrics();
    let stops = |reason: &str| {
        metric_value(
            &metrics,
            &format!("camgate_stream_stops_total{{reason=\"{reason}\"}}"),
        )
    };
    let tcp_broke = signal == "KILL" && transport.starts_with("tcp");
    let (reason, other) = if tcp_broke {
        ("failed", "no_media")
    } else {
        ("no_media", "failed")
    };
    assert_eq!(stops(reason), 1.0, "{transport}: {reason} stops\n{metrics}");
    assert_eq!(stops(other), 0.0, "{transport}: {other} stops\n{metrics}");
    if transport != "udp_shared" {
        assert!(ports_busy >= 1.0, "{transport}: no port was in use");
    }
    assert_eq!(
        metric_value(&metrics, "camgate_rtp_ports_in_use"),
        0.0,
        "{transport}: ports still held after the stream ended"
    );
}

#[test]
fn device_killed_udp() {
    device_dies("udp", "KILL");
}

#[test]
fn device_killed_shared_udp_port() {
    device_dies("udp_shared", "KILL");
}

#[test]
fn device_frozen_tcp_passive() {
    device_dies("tcp_passive", "STOP");
}

#[test]
fn device_frozen_tcp_active() {
    device_dies("tcp_active", "STOP");
}

#[test]
fn device_killed_tcp_active() {
    device_dies("tcp_active", "KILL");
}

/// The camera's media crosses the impairment proxy: it sends to
/// 127.0.0.2 and the proxy forwards each RTP port of the gateway's range
/// (and the shared port) to the same port on 127.0.0.1.
fn proxied_media(rig: &Rig) -> common::impair::Impair {
    let impair = common::impair::Impair::new();
    impair.port_range(
        [127, 0, 0, 2],
        [127, 0, 0, 1],
        (rig.ports.rtp_min..=rig.ports.rtp_max).chain([rig.ports.shared_rtp]),
    );
    impair
}

/// One camera whose media crosses the impairment proxy, and a viewer seen
/// to get ten of its frames through it.
fn watch_through_proxy(rig: &mut Rig) -> (common::impair::Impair, LiveViewer) {
    let impair = proxied_media(rig);
    rig.add_camera(
        DEVICE,
        CHANNEL,
        &["--mark-frames", "--media-ip", "127.0.0.2"],
    );
    rig.wait_channel(DEVICE, CHANNEL);
    let viewer = LiveViewer::start(rig.ports.rtsp, &rig.url(DEVICE, CHANNEL), DEVICE);
    assert!(
        viewer.wait(Duration::from_secs(10), |s| s.own.len() >= 10),
        "no frames through the proxy: {:?}\n{}",
        viewer.seen(),
        rig.logs()
    );
    (impair, viewer)
}

/// `count` frame-marking cameras (one `sim-camera --count`, with `flags`)
/// online, and one viewer per camera seen to get a frame of its own.
fn watch_cameras(
    rig: &mut Rig,
    count: u32,
    flags: &[&str],
) -> (Vec<(String, String)>, Vec<LiveViewer>) {
    let count_arg = count.to_string();
    let mut args = vec!["--count", count_arg.as_str(), "--mark-frames"];
    args.extend_from_slice(flags);
    rig.add_camera(DEVICE, CHANNEL, &args);
    let cameras = rig.wait_cameras(count);
    let viewers = watch_all(rig, &cameras);
    (cameras, viewers)
}

/// One viewer per camera, each seen to get a frame of its own camera.
fn watch_all(rig: &Rig, cameras: &[(String, String)]) -> Vec<LiveViewer> {
    let viewers: Vec<LiveViewer> = cameras
        .iter()
        .map(|(d, c)| LiveViewer::start(rig.ports.rtsp, &rig.url(d, c), d))
        .collect();
    for v in &viewers {
        assert!(
            v.wait(Duration::from_secs(15), |s| !s.own.is_empty()),
            "{}",
            rig.logs()
        );
    }
    viewers
}

/// The first stream row of `/api/v1/streams`.
fn stream_row(rig: &Rig) -> serde_json::Value {
    let v = streams_json(rig);
    v.get(0).cloned().unwrap_or(serde_json::Value::Null)
}

/// The network between camera and gateway goes dark for a while, then
/// comes back; the reconnect window (60 s) outlasts it. Meanwhile the API
/// tells the truth (bit rate 0, a growing frame age, `stalled`, then
/// `restarting`), the gateway calls the camera again with backoff, and
/// once the network is back the same RTSP viewer has frames again within
/// 5 s, on a new call.
#[test]
fn blackhole_then_restore_resumes_the_same_viewer() {
    // 20 s as the issue asks; CAMGATE_FAULTS_BLACKHOLE_SECS may shorten it.
    let dark = std::env::var("CAMGATE_FAULTS_BLACKHOLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    let mut rig = Rig::start(Options {
        rtp_timeout: 3.0,
        streams_extra: "  reconnect_window: 60".into(),
        ..Options::default()
    });
    let (impair, viewer) = watch_through_proxy(&mut rig);
    let invites_before = rig.metric("camgate_invites_total{outcome=\"ok\"}");
    impair.blackhole(true);
    let dark_at = Instant::now();

    // Honest figures while the stream is silent but not yet given up
    // (rtp_timeout 3 s).
    std::thread::sleep(Duration::from_millis(2500));
    let row = stream_row(&rig);
    assert_eq!(
        row["bitrate_bps"], 0,
        "bit rate after 2.5 s of silence: {row}"
    );
    assert_eq!(row["state"], "stalled", "{row}");
    let age = row["last_frame_age_ms"].as_u64().unwrap_or(0);
    assert!(
        (2000..4000).contains(&age),
        "last_frame_age_ms {age}: {row}"
    );
    // Past rtp_timeout: BYE, and the stream shows it is being restarted.
    assert!(
        wait_until(Duration::from_secs(5), || stream_row(&rig)["state"]
            == "restarting"),
        "never restarting: {}",
        stream_row(&rig)
    );
    let remaining = Duration::from_secs_f64(dark).saturating_sub(dark_at.elapsed());
    std::thread::sleep(remaining);
    impair.blackhole(false);
    let restored = Instant::now();
    let back = viewer.wait(Duration::from_secs(15), |s| {
        s.first_after(restored).is_some()
    });
    let seen = viewer.seen();
    let first = seen.first_after(restored);
    eprintln!(
        "blackhole {dark} s: first frame {:?} after restore; viewer closed: {:?}",
        first.map(|t| t.duration_since(restored)),
        seen.closed
    );
    assert!(
        back,
        "no frames after the network came back\n{}",
        rig.logs()
    );
    assert!(seen.closed.is_none(), "the viewer was ended");
    let after = first.unwrap().duration_since(restored);
    assert!(
        after <= Duration::from_secs(5),
        "frames back after {after:?}"
    );
    assert!(
        rig.metric("camgate_invites_total{outcome=\"ok\"}") > invites_before,
        "no re-INVITE"
    );
    assert!(rig.metric("camgate_stream_stops_total{reason=\"no_media\"}") >= 1.0);
    assert!(
        wait_until(Duration::from_secs(3), || stream_row(&rig)["state"]
            == "running"),
        "{}",
        stream_row(&rig)
    );
}

/// Lines of a process log (colour removed) containing `needle`.
fn count_lines(log: &str, needle: &str) -> usize {
    plain(log).lines().filter(|l| l.contains(needle)).count()
}

/// The camera restarts mid-stream (killed, started again at once: a new
/// REGISTER Call-ID, no memory of its call). The gateway forgets the dead
/// dialog without a BYE, calls again at once, and the same viewer gets
/// frames again; the rebooted camera holds exactly one call.
#[test]
fn device_reboot_resumes_the_stream_with_one_dialog() {
    let mut rig = Rig::start(Options {
        // Long enough that only the reboot, not silence, can act.
        rtp_timeout: 15.0,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &["--mark-frames"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let viewer = LiveViewer::start(rig.ports.rtsp, &rig.url(DEVICE, CHANNEL), DEVICE);
    assert!(viewer.wait(Duration::from_secs(10), |s| s.own.len() >= 10));
    let old = rig.cameras.pop().expect("camera");
    drop(old); // SIGKILL, reaped
    let rebooted = Instant::now();
    rig.add_camera(DEVICE, CHANNEL, &["--mark-frames"]);
    let back = viewer.wait(Duration::from_secs(10), |s| {
        s.first_after(rebooted).is_some()
    });
    let seen = viewer.seen();
    eprintln!(
        "reboot: frames again {:?} after the camera restarted",
        seen.first_after(rebooted)
            .map(|t| t.duration_since(rebooted))
    );
    assert!(back, "no frames after the reboot\n{}", rig.logs());
    assert!(seen.closed.is_none(), "the viewer was ended");
    let resumed = seen.first_after(rebooted).unwrap().duration_since(rebooted);
    assert!(
        resumed <= Duration::from_secs(5),
        "resumed after {resumed:?}"
    );
    assert_eq!(
        rig.metric("camgate_stream_stops_total{reason=\"device_restarted\"}"),
        1.0,
        "{}",
        rig.logs()
    );
    assert_eq!(
        rig.metric("camgate_stream_stops_total{reason=\"no_media\"}"),
        0.0
    );
    // Let any stray request reach the camera before counting.
    std::thread::sleep(Duration::from_secs(1));
    let log = rig.cameras[0].log_text();
    let invites = count_lines(&log, "INVITE received");
    let stopped = count_lines(&log, "media stopped");
    let byes = count_lines(&log, "BYE received");
    assert_eq!(
        (invites, stopped, byes),
        (1, 0, 0),
        "calls at the rebooted camera (INVITEs, stops, BYEs)\n{log}"
    );
    assert_eq!(stream_count(&rig), 1);
}

/// Ten cameras stream through a link that loses 5 %, reorders 10 % and
/// duplicates 1 % of datagrams, all on the shared port. No crash, no
/// frame of one camera reaches another's viewer, and every viewer keeps
/// at least 80 % of the frames sent.
#[test]
fn lossy_link_ten_streams_keep_their_frames() {
    const CAMERAS: u32 = 10;
    let secs: f64 = std::env::var("CAMGATE_FAULTS_LOSSY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15.0);
    let mut rig = Rig::start(Options {
        transport: "udp_shared",
        ssrc_policy: "strict",
        idle_timeout: 30.0,
        invite_timeout: 10.0,
        // The default `after_loss: next_frame` loses only the damaged
        // frames; `keyframe` would hold video back until the next
        // keyframe, which at 5 % loss and a 1 s GOP keeps about 40 %.
        ..Options::default()
    });
    let impair = proxied_media(&rig);
    let (cameras, viewers) = watch_cameras(&mut rig, CAMERAS, &["--media-ip", "127.0.0.2"]);
    // The link turns bad under running streams (a DESCRIBE needs one
    // whole keyframe first, which 5 % loss of its ~20 packets often denies).
    impair.set(common::impair::Impairment {
        drop_pct: 5.0,
        reorder_pct: 10.0,
        duplicate_pct: 1.0,
        ..Default::default()
    });
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let until = Instant::now();
    let expected =
        until.duration_since(from).as_secs_f64() * f64::from(camgate::sim::clip::DEMO_FPS);
    assert!(
        rig.gateway.child.try_wait().unwrap().is_none(),
        "gateway died\n{}",
        rig.logs()
    );
    let counts = impair.counts();
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "impairment: {} forwarded, {} dropped, {} reordered, {} duplicated",
        counts.forwarded.load(Relaxed),
        counts.dropped.load(Relaxed),
        counts.reordered.load(Relaxed),
        counts.duplicated.load(Relaxed)
    );
    assert!(counts.dropped.load(Relaxed) > 0 && counts.reordered.load(Relaxed) > 0);
    for ((device, _), v) in cameras.iter().zip(&viewers) {
        let seen = v.seen();
        let kept = seen
            .own
            .iter()
            .filter(|t| **t > from && **t <= until)
            .count() as f64;
        eprintln!(
            "{device}: kept {kept} of ~{expected:.0} frames ({:.1} %)",
            100.0 * kept / expected
        );
        assert_eq!(seen.foreign, 0, "{device}: cross-talk");
        assert!(seen.closed.is_none(), "{device}: viewer ended");
        assert!(
            kept >= 0.8 * expected,
            "{device}: kept {kept} of ~{expected:.0} frames"
        );
    }
}

/// The gateway is restarted (SIGTERM, then started again on the same
/// ports) under ten cameras and ten viewers. The cameras find out on their
/// own (a keepalive refused by the new process) and register again;
/// viewers that come back get a picture within `invite_timeout` + 2 s.
#[test]
fn gateway_restart_devices_return_and_viewers_reconnect() {
    const CAMERAS: u32 = 10;
    let opts = Options {
        idle_timeout: 30.0,
        ..Options::default()
    };
    let invite_timeout = Duration::from_secs_f64(opts.invite_timeout);
    let mut rig = Rig::start(opts);
    let (cameras, viewers) = watch_cameras(&mut rig, CAMERAS, &["--keepalive-interval", "1"]);
    let status = rig.gateway.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "graceful stop: {status:?}"
    );
    // Every viewer was told: the stream ended with the gateway.
    for v in &viewers {
        assert!(v.wait(Duration::from_secs(2), |s| s.closed.is_some()));
    }
    drop(viewers);
    let restarted = Instant::now();
    rig.gateway = Proc::spawn(
        &["--config", rig.config.to_str().unwrap()],
        rig.dir.path().join("gateway-2.log"),
    );
    rig.wait_http();
    for (device, channel) in &cameras {
        rig.wait_channel(device, channel);
    }
    eprintln!(
        "restart: all {CAMERAS} devices back after {:?}",
        restarted.elapsed()
    );
    let mut worst = Duration::ZERO;
    for (device, channel) in &cameras {
        let asked = Instant::now();
        let viewer = LiveViewer::start(rig.ports.rtsp, &rig.url(device, channel), device);
        let ok = viewer.wait(invite_timeout + Duration::from_secs(4), |s| {
            !s.own.is_empty()
        });
        assert!(ok, "{device}: no picture after the restart\n{}", rig.logs());
        let took = viewer.seen().own[0].duration_since(asked);
        worst = worst.max(took);
        assert!(
            took <= invite_timeout + Duration::from_secs(2),
            "{device}: picture after {took:?}"
        );
    }
    eprintln!("restart: slowest reconnecting viewer had a picture after {worst:?}");
}

/// Where video resumes after a lost packet (`media.after_loss`): with
/// `keyframe` the frames after the hole are held back until the next
/// keyframe; with `next_frame` only the damaged frame is lost.
#[test]
fn after_loss_policy_keeps_or_holds_the_frames_after_a_hole() {
    use bytes::BytesMut;
    use camgate::media::ps::PsEvent;
    use camgate::media::ps_mux::PsMuxer;
    use camgate::media::rtp_ps::RtpPsReceiver;
    use camgate::sim::rtp::RtpPacketizer;

    // A keyframe, then four P-frames of two packets each; the second
    // packet of frame 2 is lost.
    let mut mux = PsMuxer::new();
    let mut rtp = RtpPacketizer::new(7, 96, 100);
    let mut packets = Vec::new();
    let mut ps = BytesMut::new();
    for f in 0..5u64 {
        let mut nal = vec![if f == 0 { 0x65 } else { 0x41 }];
        nal.resize(2000, f as u8 + 1);
        ps.clear();
        mux.write_video(&[nal], f * 3600, f == 0, &mut ps);
        let pkts = rtp.packetize(&ps, (f * 3600) as u32);
        assert!(pkts.len() >= 2);
        packets.push(pkts);
    }
    let frames_with = |resume_at_keyframe: bool| {
        let mut rx = RtpPsReceiver::with_ssrc(7);
        rx.set_resume_at_keyframe(resume_at_keyframe);
        let mut events = Vec::new();
        for (f, pkts) in packets.iter().enumerate() {
            for (i, p) in pkts.iter().enumerate() {
                if !(f == 2 && i == 1) {
                    rx.push_datagram(p.clone(), &mut events).unwrap();
                }
            }
        }
        rx.flush(&mut events);
        events
            .iter()
            .filter_map(|e| match e {
                PsEvent::Frame(f) => Some(f.pts / 3600),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(frames_with(true), [0, 1]);
    assert_eq!(frames_with(false), [0, 1, 3, 4]);
}

/// The camera freezes (SIGSTOP: no keepalive, no media) while its media
/// deadline is far off: the keepalive timeout marks it offline, and that
/// alone ends its stream within a second — viewer closed, stop counted as
/// `device_gone`, not restarted.
#[test]
fn device_offline_ends_its_streams() {
    let mut rig = Rig::start(Options {
        rtp_timeout: 30.0,
        keepalive_timeout: 3.0,
        ..Options::default()
    });
    rig.add_camera(
        DEVICE,
        CHANNEL,
        &["--mark-frames", "--keepalive-interval", "1"],
    );
    rig.wait_channel(DEVICE, CHANNEL);
    let viewer = LiveViewer::start(rig.ports.rtsp, &rig.url(DEVICE, CHANNEL), DEVICE);
    assert!(viewer.wait(Duration::from_secs(10), |s| s.own.len() >= 10));
    send_signal(rig.cameras[0].child.id(), "STOP");
    let stopped = Instant::now();
    let offline = wait_for(Duration::from_secs(10), || {
        let (_, body) = http_get(rig.ports.http, &format!("/api/v1/devices/{DEVICE}"))?;
        body.contains("\"online\":false").then(Instant::now)
    })
    .unwrap_or_else(|| panic!("never offline\n{}", rig.logs()));
    assert!(
        viewer.wait(Duration::from_secs(2), |s| s.closed.is_some()),
        "viewer not ended after the device went offline\n{}",
        rig.logs()
    );
    let closed = viewer.seen().closed.unwrap();
    // The API is polled every 100 ms, so "offline" is seen up to that late.
    let lag = closed.saturating_duration_since(offline);
    eprintln!(
        "offline: seen {:?} after SIGSTOP; viewer ended {:?} after SIGSTOP ({lag:?} after offline was seen)",
        offline.duration_since(stopped),
        closed.duration_since(stopped)
    );
    assert!(
        closed.duration_since(stopped) <= Duration::from_secs(5),
        "keepalive timeout 3 s + 1 s tick + 1 s to act"
    );
    assert!(lag <= Duration::from_secs(1), "{lag:?}");
    assert_eq!(
        rig.metric("camgate_stream_stops_total{reason=\"device_gone\"}"),
        1.0
    );
    assert_eq!(
        rig.metric("camgate_stream_stops_total{reason=\"no_media\"}"),
        0.0
    );
    assert!(wait_until(Duration::from_secs(2), || stream_count(&rig) == 0));
    assert_eq!(rig.metric("camgate_rtp_ports_in_use"), 0.0);
}

/// The camera's registration lapses: `sip.max_expires` grants it 4 s (it
/// refreshes every 2 s), then it freezes (SIGSTOP: no refresh, no
/// keepalive, no media) while its keepalive and media deadlines are far
/// off. The registration's expiry alone must end its stream within
/// expiry + 2 s — viewer closed, stop counted as `device_gone`, not
/// restarted, device gone from the API.
#[test]
fn registration_expiry_ends_its_streams() {
    const EXPIRES: u64 = 4;
    let mut rig = Rig::start(Options {
        rtp_timeout: 30.0,
        keepalive_timeout: 60.0,
        sip_extra: format!("  max_expires: {EXPIRES}"),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &["--mark-frames"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let viewer = LiveViewer::start(rig.ports.rtsp, &rig.url(DEVICE, CHANNEL), DEVICE);
    assert!(viewer.wait(Duration::from_secs(10), |s| s.own.len() >= 10));
    // Refreshes within the short lifetime keep it registered and streaming.
    std::thread::sleep(Duration::from_secs(2 * EXPIRES));
    assert!(
        viewer.seen().closed.is_none(),
        "viewer ended while the camera still refreshed\n{}",
        rig.logs()
    );
    send_signal(rig.cameras[0].child.id(), "STOP");
    let stopped = Instant::now();
    let limit = Duration::from_secs(EXPIRES + 2);
    assert!(
        viewer.wait(limit + Duration::from_secs(3), |s| s.closed.is_some()),
        "viewer not ended after the registration lapsed\n{}",
        rig.logs()
    );
    let after = viewer.seen().closed.unwrap().duration_since(stopped);
    eprintln!("registration expiry: viewer ended {after:?} after SIGSTOP");
    assert!(after <= limit, "{after:?}\n{}", rig.logs());
    assert!(
        plain(&rig.gateway.log_text()).contains("registration expired"),
        "{}",
        rig.logs()
    );
    assert_eq!(
        rig.metric("camgate_stream_stops_total{reason=\"device_gone\"}"),
        1.0
    );
    assert_eq!(
        rig.metric("camgate_stream_stops_total{reason=\"no_media\"}"),
        0.0
    );
    assert!(wait_until(Duration::from_secs(2), || stream_count(&rig) == 0));
    assert_eq!(rig.metric("camgate_rtp_ports_in_use"), 0.0);
    let (status, _) = http_get(rig.ports.http, &format!("/api/v1/devices/{DEVICE}")).unwrap();
    assert_eq!(status, 404, "the lapsed device is forgotten");
    send_signal(rig.cameras[0].child.id(), "CONT");
}

/// The device unregisters (REGISTER with `Expires: 0`, sent by sipp under
/// the camera's id while it streams): its stream ends within a second,
/// counted as `device_gone`, and is not restarted.
#[test]
fn device_unregister_ends_its_streams() {
    if !have("sipp") {
        return;
    }
    let mut rig = Rig::start(Options {
        rtp_timeout: 30.0,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &["--mark-frames"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let viewer = LiveViewer::start(rig.ports.rtsp, &rig.url(DEVICE, CHANNEL), DEVICE);
    assert!(viewer.wait(Duration::from_secs(10), |s| s.own.len() >= 10));
    let unregister = include_str!("sipp/register.xml")
        .replace("FINAL_STATUS", "200")
        .replace("Expires: 3600", "Expires: 0");
    let out = sipp_register_scenario(
        &rig,
        &unregister,
        "unregister.xml",
        "u1",
        DEVICE,
        "12345678",
    );
    let unregistered = Instant::now();
    assert!(
        out.status.success(),
        "sipp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        viewer.wait(Duration::from_secs(1), |s| s.closed.is_some()),
        "viewer not ended within 1 s of Expires: 0\n{}",
        rig.logs()
    );
    let seen = viewer.seen();
    eprintln!(
        "unregister: viewer ended {:?} after sipp's 200 OK",
        seen.closed.unwrap().saturating_duration_since(unregistered)
    );
    assert_eq!(
        rig.metric("camgate_stream_stops_total{reason=\"device_gone\"}"),
        1.0
    );
    assert!(wait_until(Duration::from_secs(2), || stream_count(&rig) == 0));
}

/// An RTSP viewer over UDP: when the dead device's stream ends, its RTCP
/// port gets a BYE (RFC 3550 §6.6) and the session's control connection
/// is closed.
#[test]
fn udp_viewer_gets_rtcp_bye_when_the_device_dies() {
    use std::io::Read;
    let mut rig = Rig::start(Options {
        rtp_timeout: RTP_TIMEOUT,
        streams_extra: "  reconnect_window: 0".into(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    // An even/odd pair of client ports.
    let (rtp, rtcp) = loop {
        let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port.is_multiple_of(2)
            && let Ok(rtcp) = std::net::UdpSocket::bind(("127.0.0.1", port + 1))
        {
            break (rtp, rtcp);
        }
    };
    let port = rtp.local_addr().unwrap().port();
    let url = rig.url(DEVICE, CHANNEL);
    let mut rtsp = common::raw_rtsp::RawRtsp::connect(rig.ports.rtsp);
    assert_eq!(rtsp.request("DESCRIBE", &url, &[]).status, 200);
    let transport = format!(
        "Transport: RTP/AVP;unicast;client_port={}-{}",
        port,
        port + 1
    );
    let setup = rtsp.request("SETUP", &format!("{url}/trackID=0"), &[&transport]);
    assert_eq!(setup.status, 200, "{}", setup.head);
    assert_eq!(rtsp.request("PLAY", &url, &["Range: npt=0-"]).status, 200);
    rtp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        rtp.recv(&mut buf).expect("RTP over UDP");
    }
    send_signal(rig.cameras[0].child.id(), "KILL");
    let killed = Instant::now();
    // Sender reports may come first; wait for the BYE.
    rtcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let bye = loop {
        assert!(
            killed.elapsed() < Duration::from_secs_f64(RTP_TIMEOUT + 2.0),
            "no RTCP BYE\n{}",
            rig.logs()
        );
        let Ok(n) = rtcp.recv(&mut buf) else { continue };
        let mut at = 0;
        let mut found = false;
        while let Some(h) = buf[..n].get(at..at + 4) {
            found |= h[1] == 203;
            at += 4 * (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1);
        }
        if found {
            break killed.elapsed();
        }
    };
    let mut control = rtsp.into_stream();
    control
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // EOF or a reset; a read timeout means it is still open.
    let closed = match control.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    eprintln!("udp viewer: RTCP BYE {bye:?} after SIGKILL; control connection closed: {closed}");
    assert!(closed, "control connection still open");
}

/// A WHEP viewer (headless Chromium, the built-in console) of a device
/// that dies: the gateway ends the session as `stream_ended` within
/// `rtp_timeout` + 2 s and closes the peer connection, which the browser
/// sees leave `connected`.
#[test]
fn whep_viewer_is_closed_when_the_device_dies() {
    use common::webdriver::Browser;
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let mut rig = Rig::start(Options {
        rtp_timeout: RTP_TIMEOUT,
        streams_extra: "  reconnect_window: 0".into(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let browser = Browser::start(rig.ports.spare, rig.dir.path().join("chromedriver.log"));
    browser.goto(&format!(
        "http://127.0.0.1:{}/#play=gb/{DEVICE}/{CHANNEL}",
        rig.ports.http
    ));
    let state = || {
        let v = browser.eval(
            "const pc = window.camgate && window.camgate.state.pc; \
             return [pc ? pc.connectionState : ''];",
        );
        v[0].as_str().unwrap_or_default().to_owned()
    };
    assert!(
        wait_until(Duration::from_secs(15), || state() == "connected"),
        "browser never connected\n{}",
        rig.logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    send_signal(rig.cameras[0].child.id(), "KILL");
    let killed = Instant::now();
    let ended = wait_until(Duration::from_secs_f64(RTP_TIMEOUT + 2.0), || {
        rig.metric(r#"camgate_webrtc_sessions_ended_total{reason="stream_ended"}"#) == 1.0
    });
    let took = killed.elapsed();
    assert!(ended, "WHEP session not ended\n{}", rig.logs());
    let left = wait_until(Duration::from_secs(10), || state() != "connected");
    eprintln!(
        "whep: session ended {took:?} after SIGKILL; browser state now {:?}",
        state()
    );
    assert!(left, "the browser still believes it is connected");
    assert_eq!(rig.metric("camgate_webrtc_peers"), 0.0);
}

/// The TCP media connection is cut under a watched stream (tcp_passive,
/// through the proxy): the gateway sees it drop, calls the camera again
/// after the first backoff step, and the same viewer has frames again.
#[test]
fn cut_tcp_media_connection_is_called_again() {
    let mut rig = Rig::start(Options {
        transport: "tcp_passive",
        rtp_timeout: 3.0,
        streams_extra: "  reconnect_window: 60".into(),
        ..Options::default()
    });
    let (impair, viewer) = watch_through_proxy(&mut rig);
    impair.cut();
    let cut = Instant::now();
    let back = viewer.wait(Duration::from_secs(8), |s| {
        s.first_after(cut + Duration::from_millis(500)).is_some()
    });
    let seen = viewer.seen();
    let after = seen
        .first_after(cut + Duration::from_millis(500))
        .map(|t| t.duration_since(cut));
    eprintln!("tcp cut: frames again {after:?} after the cut");
    assert!(back, "no frames after the cut\n{}", rig.logs());
    assert!(seen.closed.is_none(), "the viewer was ended");
    assert!(after.unwrap() <= Duration::from_secs(3));
    assert_eq!(
        rig.metric("camgate_stream_stops_total{reason=\"failed\"}"),
        1.0,
        "{}",
        rig.logs()
    );
    assert!(rig.metric("camgate_media_streams_total{transport=\"tcp_passive\"}") >= 2.0);
}

/// Issue 17, "every stream starts": the device's first two Catalog answers
/// are lost (the 200 OK to the query comes, the Response MESSAGE never
/// does, as when a registration burst overflows a socket buffer). The
/// gateway asks again after each `gb.query_timeout` with backoff (2 s,
/// then 4 s), so the channel gets listed; and before it is, a viewer of the not-yet-listed channel plays
/// anyway (the INVITE goes to the channel id), while a channel id the
/// device refuses (its 404 to the INVITE) gives the viewer 404.
#[test]
fn lost_catalog_answer_is_asked_again_and_unlisted_channels_are_invited() {
    let mut rig = Rig::start_with_yaml(Options::default(), "gb:\n  query_timeout: 2\n");
    let (device, channel) = ("34020000001320000171", "34020000001310000171");
    let started = Instant::now();
    rig.add_camera(device, channel, &["--lose-catalog-answers", "2"]);
    let http = rig.ports.http;
    let online =
        || http_get(http, "/api/v1/devices").is_some_and(|(s, b)| s == 200 && b.contains(device));
    assert!(
        wait_until(Duration::from_secs(10), online),
        "device never registered\n{}",
        rig.logs()
    );
    let listed = || {
        http_get(http, &format!("/api/v1/devices/{device}/channels"))
            .is_some_and(|(s, b)| s == 200 && b.contains(channel))
    };
    assert!(
        !listed(),
        "the first catalog answers were lost: nothing listed yet"
    );

    // An unlisted channel plays: ffprobe sees the H.264 track.
    let probe = ffprobe_json(&rig.url(device, channel), "tcp");
    assert_eq!(ffprobe_codecs(&probe), ["h264"], "{probe}\n{}", rig.logs());
    let played_unlisted = !listed();

    // A channel the device does not have: its 404 is the viewer's.
    let other = "34020000001310000999";
    let mut rtsp = common::raw_rtsp::RawRtsp::connect(rig.ports.rtsp);
    let reply = rtsp.request(
        "DESCRIBE",
        &rig.url(device, other),
        &["Accept: application/sdp"],
    );
    assert_eq!(reply.status, 404, "{}\n{}", reply.head, rig.logs());

    // The catalog is asked again: the channel gets listed without any
    // new registration, after three queries and two backoffs (3 × 2 s +
    // 2 s + 4 s) and some slack.
    assert!(
        wait_until(Duration::from_secs(25), listed),
        "channel never listed after the lost catalog answer\n{}",
        rig.logs()
    );
    let took = started.elapsed();
    let logs = rig.logs();
    assert_eq!(
        plain(&logs)
            .matches("catalog incomplete at the deadline")
            .count(),
        2,
        "two lost answers, two retries\n{logs}"
    );
    assert!(took < Duration::from_secs(30), "listed after {took:?}");
    assert!(
        played_unlisted,
        "the viewer played only after the channel was listed (took {took:?})"
    );
}
