//! The walking skeleton end to end: the gateway and simulated cameras as
//! separate processes on loopback, real clients (ffprobe, ffmpeg,
//! GStreamer, sipp) pulling RTSP or registering over SIP.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn rtsp_clients_play_the_simulated_camera() {
    if !have("ffprobe") || !have("ffmpeg") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let url = rig.url(DEVICE, CHANNEL);

    let probe = ffprobe_json(&url, "tcp");
    let video = &probe["streams"][0];
    assert_eq!(video["codec_name"], "h264", "{probe}");
    assert_eq!(video["width"], 640, "{probe}");
    assert_eq!(video["height"], 360, "{probe}");

    for transport in ["tcp", "udp"] {
        let out = ffmpeg_decode(&url, transport, ["-t", "2"]);
        let frames = ffmpeg_frames(&out);
        assert!(
            frames >= 25,
            "{transport}: decoded {frames} frames\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            rig.logs()
        );
    }

    if have("gst-launch-1.0") {
        let out = run_with_timeout(
            Command::new("gst-launch-1.0").args([
                "-q",
                "rtspsrc",
                &format!("location={url}"),
                "protocols=tcp",
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "fakesink",
                "num-buffers=50",
            ]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "gst-launch failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            rig.logs()
        );
    }
}

#[test]
fn viewers_share_one_invite_and_idle_sends_one_bye() {
    if !have("ffmpeg") {
        return;
    }
    let mut rig = Rig::start(Options {
        idle_timeout: 1.5,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let url = rig.url(DEVICE, CHANNEL);
    let ok = r#"camgate_invites_total{outcome="ok"}"#;
    assert_eq!(rig.metric(ok), 0.0);

    // Two viewers at once: one INVITE.
    let a = {
        let url = url.clone();
        std::thread::spawn(move || ffmpeg_frames(&ffmpeg_decode(&url, "tcp", ["-t", "3"])))
    };
    std::thread::sleep(Duration::from_millis(300));
    let during = {
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.metric("camgate_viewers") < 1.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let b = ffmpeg_frames(&ffmpeg_decode(&url, "tcp", ["-t", "1"]));
        assert!(b >= 10, "second viewer decoded {b}");
        rig.metrics()
    };
    let frames_a = a.join().unwrap();
    assert!(
        frames_a >= 25,
        "first viewer decoded {frames_a}\n{}",
        rig.logs()
    );
    assert_eq!(metric_value(&during, ok), 1.0, "{during}");
    assert_eq!(metric_value(&during, "camgate_streams_active"), 1.0);
    assert_eq!(metric_value(&during, "camgate_byes_sent_total"), 0.0);

    // Both gone: the stream outlives them by idle_timeout, then one BYE.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.metric("camgate_byes_sent_total") < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = rig.metrics();
    assert_eq!(
        metric_value(&after, "camgate_byes_sent_total"),
        1.0,
        "{}",
        rig.logs()
    );
    assert_eq!(metric_value(&after, ok), 1.0);
    assert_eq!(metric_value(&after, "camgate_streams_active"), 0.0);
    assert_eq!(metric_value(&after, "camgate_viewers"), 0.0);
    assert_eq!(
        metric_value(&after, r#"camgate_stream_stops_total{reason="idle"}"#),
        1.0
    );
    assert_eq!(metric_value(&after, "camgate_rtp_ports_in_use"), 0.0);
    let camera_log = rig.cameras[0].log_text();
    assert_eq!(
        camera_log.matches("INVITE received").count(),
        1,
        "{camera_log}"
    );
    assert_eq!(
        camera_log.matches("BYE received").count(),
        1,
        "{camera_log}"
    );
}

#[test]
fn dead_device_fails_fast_and_other_streams_keep_flowing() {
    if !have("ffprobe") || !have("ffmpeg") {
        return;
    }
    let invite_timeout = 2.0;
    let mut rig = Rig::start(Options {
        invite_timeout,
        ..Options::default()
    });
    let dead = "34020000001320000009";
    let dead_ch = "34020000001310000009";
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.add_camera(dead, dead_ch, &["--ignore-invites"]);
    rig.wait_channel(DEVICE, CHANNEL);
    rig.wait_channel(dead, dead_ch);

    let live_url = rig.url(DEVICE, CHANNEL);
    let viewer =
        std::thread::spawn(move || ffmpeg_frames(&ffmpeg_decode(&live_url, "tcp", ["-t", "6"])));
    std::thread::sleep(Duration::from_secs(1));

    let started = Instant::now();
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            &rig.url(dead, dead_ch),
        ]),
        Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert!(
        !out.status.success(),
        "ffprobe should fail on a dead device"
    );
    assert!(
        took <= Duration::from_secs_f64(invite_timeout + 1.0),
        "error took {took:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("504"), "client saw: {stderr}");
    assert!(
        rig.gateway.log_text().contains("did not answer"),
        "no log line for the timeout"
    );

    let frames = viewer.join().unwrap();
    assert!(
        frames >= 100,
        "live stream stalled: {frames} frames in 6 s\n{}",
        rig.logs()
    );
    assert_eq!(
        rig.metric(r#"camgate_invites_total{outcome="timeout"}"#),
        1.0
    );
}

#[test]
fn unknown_device_or_channel_is_404() {
    if !have("ffprobe") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    for url in [
        rig.url("34020000001320000777", CHANNEL),
        rig.url(DEVICE, "34020000001310000777"),
    ] {
        let out = run_with_timeout(
            Command::new("ffprobe").args(["-v", "error", "-rtsp_transport", "tcp", &url]),
            Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("404"), "{url}: {stderr}");
    }
}

#[test]
fn sipp_device_registers_with_right_password_and_is_refused_with_wrong() {
    if !have("sipp") {
        return;
    }
    let rig = Rig::start(Options::default());
    // u1: UDP; t1: TCP (one connection). Both listen on the same port.
    let devices = [
        ("u1", "34020000001320000042"),
        ("t1", "34020000001320000043"),
    ];
    for (transport, device) in devices {
        let ok = sipp_register(&rig, transport, device, "12345678", 200);
        assert!(
            ok.status.success(),
            "sipp {transport} (right password): {ok:?}\n{}",
            rig.logs()
        );
        let bad = sipp_register(&rig, transport, device, "not-the-password", 403);
        assert!(
            bad.status.success(),
            "sipp {transport} (wrong password): {bad:?}\n{}",
            rig.logs()
        );
    }
    let m = rig.metrics();
    assert_eq!(
        metric_value(&m, r#"camgate_sip_registrations_total{outcome="ok"}"#),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"camgate_sip_registrations_total{outcome="forbidden"}"#
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &m,
            r#"camgate_sip_registrations_total{outcome="challenged"}"#
        ),
        4.0
    );
    let (_, devices_json) = http_get(rig.ports.http, "/api/v1/devices").unwrap();
    let devices_json: serde_json::Value = serde_json::from_str(&devices_json).unwrap();
    let transport_of = |id: &str| {
        devices_json
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| d["transport"].clone())
    };
    assert_eq!(
        transport_of(devices[0].1),
        Some("udp".into()),
        "{devices_json}"
    );
    assert_eq!(
        transport_of(devices[1].1),
        Some("tcp".into()),
        "{devices_json}"
    );
}
