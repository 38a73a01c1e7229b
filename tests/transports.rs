//! Every GB28181 media transport (GB/T 28181-2016 Annex F) end to end: the
//! gateway and a simulated camera as separate processes on loopback, the
//! gateway configured for one transport, ffprobe reading its RTSP output.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn ffprobe_streams(url: &str) -> serde_json::Value {
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_streams",
            "-of",
            "json",
            url,
        ]),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

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
    let probe = ffprobe_streams(&rig.url(DEVICE, CHANNEL));
    let video = &probe["streams"][0];
    assert_eq!(video["codec_name"], "h264", "{probe}\n{}", rig.logs());
    assert_eq!(video["width"], 640, "{probe}");
    assert_eq!(video["height"], 360, "{probe}");
    let started = rig.metric(&format!(
        "camgate_media_streams_total{{transport=\"{transport}\"}}"
    ));
    assert!(started >= 1.0, "no {transport} stream in metrics\n{}", rig.logs());
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
    assert_eq!(
        rig.metric("camgate_shared_port_packets_total{outcome=\"unknown_ssrc\"}"),
        0.0
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
