//! Recordings over RTSP show clients where they are (RFC 2326 §C.1.5,
//! §12.29, §12.33): DESCRIBE gives the recording's length, PLAY answers
//! the position actually played with an `RTP-Info` that maps it, so the
//! timestamps a client computes are positions in the recording.
//!
//! The simulated camera marks every frame of a playback with its position
//! (a user-data SEI, `NPT_MS=…`), so the tests compare what ffprobe says a
//! frame's time is with where the camera took that frame from.

mod common;

use std::process::Command;
use std::time::Duration;

use common::raw_rtsp::{RawRtsp, Reply, header};
use common::*;

/// One ffprobe packet: its presentation time and the camera's marker.
#[derive(Debug)]
struct Packet {
    pts: Option<f64>,
    marker_ms: Option<u64>,
}

/// Bytes of an ffprobe `-show_data` hex dump
/// (`00000000: 0000 0001 0910 …  ascii`).
fn hexdump_bytes(dump: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in dump.lines() {
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        // 8 groups of 4 hex digits, then two spaces and the ASCII column.
        let hex = rest.split("  ").next().unwrap_or("");
        for group in hex.split_whitespace() {
            for pair in group.as_bytes().chunks(2) {
                if let Ok(b) = u8::from_str_radix(std::str::from_utf8(pair).unwrap_or(""), 16) {
                    out.push(b);
                }
            }
        }
    }
    out
}

fn marker(data: &[u8]) -> Option<u64> {
    let tag = b"NPT_MS=";
    let at = data.windows(tag.len()).position(|w| w == tag)? + tag.len();
    std::str::from_utf8(data.get(at..at + 10)?)
        .ok()?
        .parse()
        .ok()
}

/// Video packets ffprobe reads in `interval` (`-read_intervals`).
fn probe_packets(rig: &Rig, url: &str, interval: &str) -> Vec<Packet> {
    let out = run_draining(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-select_streams",
            "v:0",
            "-read_intervals",
            interval,
            "-show_entries",
            "packet=pts_time,data",
            "-show_data",
            "-of",
            "json",
            url,
        ]),
        Duration::from_secs(40),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ffprobe failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.logs()
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("ffprobe JSON");
    json["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| Packet {
            pts: p["pts_time"].as_str().and_then(|t| t.parse().ok()),
            marker_ms: marker(&hexdump_bytes(p["data"].as_str().unwrap_or(""))),
        })
        .collect()
}

/// Every packet with a timestamp shows the position the camera took it
/// from; returns the (pts, marker) pairs.
fn assert_positions(packets: &[Packet]) -> Vec<(f64, f64)> {
    let pairs: Vec<(f64, f64)> = packets
        .iter()
        .filter_map(|p| Some((p.pts?, p.marker_ms? as f64 / 1000.0)))
        .collect();
    assert!(pairs.len() >= 10, "too few timed packets: {packets:?}");
    for (pts, position) in &pairs {
        assert!(
            (pts - position).abs() < 0.001,
            "a frame from {position} s has timestamp {pts} s: {pairs:?}"
        );
    }
    pairs
}

fn playback_url(rig: &Rig, start: &str, end: &str) -> String {
    format!(
        "{}?start=2024-05-01T{start}&end=2024-05-01T{end}",
        rig.url(DEVICE, CHANNEL)
    )
}

/// Bodies of the MANSRTSP INFOs the camera received, in order.
fn camera_controls(rig: &Rig) -> Vec<String> {
    plain(&rig.cameras[0].log_text())
        .lines()
        .filter(|l| l.contains("playback control received"))
        .filter_map(|l| l.split("body=\"").nth(1))
        .filter_map(|b| b.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn playback_shows_its_length_and_the_position_played() {
    if !have("ffprobe") {
        return;
    }
    let mut rig = Rig::start(Options {
        idle_timeout: 0.5,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);

    // The length: a=range:npt=0-120 becomes the format's duration.
    let out = run_draining(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            &playback_url(&rig, "08:00:00", "08:02:00"),
        ]),
        Duration::from_secs(40),
    );
    let duration: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no duration: {out:?}\n{}", rig.logs()));
    assert!((duration - 120.0).abs() < 0.001, "duration {duration}");

    // GStreamer reads the same line: its segment spans the 120 s.
    if have("gst-launch-1.0") {
        let out = run_draining(
            Command::new("gst-launch-1.0").args([
                "-v",
                "rtspsrc",
                &format!("location={}", playback_url(&rig, "08:04:00", "08:06:00")),
                "protocols=tcp",
                "!",
                "rtph264depay",
                "!",
                "fakesink",
                "silent=false",
                "num-buffers=5",
            ]),
            Duration::from_secs(40),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |line: &str, name: &str| -> Option<u64> {
            line.split(&format!("{name}=(guint64)"))
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let segment = text
            .lines()
            .find(|l| l.contains("type: segment"))
            .unwrap_or_else(|| panic!("no segment event: {text}"));
        let (start, stop) = (field(segment, "start"), field(segment, "stop"));
        assert_eq!(
            stop.zip(start).map(|(b, a)| b - a),
            Some(120_000_000_000),
            "{segment}"
        );
    }

    // From the start: timestamps are positions from 0.
    let from_start = probe_packets(&rig, &playback_url(&rig, "08:10:00", "08:12:00"), "%+1");
    let pairs = assert_positions(&from_start);
    assert!(pairs[0].0 < 0.1, "first frame at {} s", pairs[0].0);

    // A seek (ffprobe pauses, then PLAYs with Range: npt=20-): the frames
    // are those from 20 s on, stamped 20 s on, and nothing from before
    // the seek slips through.
    let seek_url = playback_url(&rig, "08:20:00", "08:22:00");
    // An absolute end: ffprobe reckons a relative one from the first
    // packet's pts, and its h264 parser leaves the first packet untimed.
    let after_seek = probe_packets(&rig, &seek_url, "20%21.5");
    let pairs = assert_positions(&after_seek);
    assert!(
        (20.0..20.1).contains(&pairs[0].0),
        "first frame after the seek at {} s: {pairs:?}",
        pairs[0].0
    );
    let earliest = after_seek.iter().filter_map(|p| p.marker_ms).min();
    assert_eq!(earliest, Some(20_000), "{after_seek:?}");
    let controls = camera_controls(&rig);
    assert!(
        controls.ends_with(&[
            r"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n".to_owned(),
            r"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=20-\r\n".to_owned(),
        ]),
        "{controls:?}\n{}",
        rig.logs()
    );
}

/// The `rtptime` of track `id` in an RTP-Info header.
fn rtptime(rtp_info: &str, id: u8) -> Option<u32> {
    rtp_info
        .split(',')
        .find(|t| t.contains(&format!("trackID={id};")))?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("rtptime="))?
        .parse()
        .ok()
}

#[test]
fn describe_and_play_replies_carry_range_and_rtp_info() {
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let url = playback_url(&rig, "09:00:00", "09:02:00");
    let mut c = RawRtsp::connect(rig.ports.rtsp);
    let Reply {
        head, body: sdp, ..
    } = c.request("DESCRIBE", &url, &[]);
    assert!(head.starts_with("RTSP/1.0 200 "), "{head}\n{}", rig.logs());
    assert!(sdp.contains("a=range:npt=0-120.000\r\n"), "{sdp}");
    assert_eq!(
        header(&head, "Media-Range"),
        Some("npt=0.000-120.000, clock=20240501T090000Z-20240501T090200Z"),
        "{head}"
    );
    let base = header(&head, "Content-Base")
        .expect("Content-Base")
        .to_owned();
    let Reply { head, .. } = c.request(
        "SETUP",
        &format!("{base}trackID=0"),
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
    );
    assert!(head.starts_with("RTSP/1.0 200 "), "{head}");

    let Reply { head: play, .. } = c.request("PLAY", &base, &["Range: npt=0-"]);
    assert_eq!(header(&play, "Range"), Some("npt=0.000-120.000"), "{play}");
    let origin = rtptime(header(&play, "RTP-Info").unwrap_or(""), 0).expect("rtptime");
    std::thread::sleep(Duration::from_millis(300));

    // A seek: the reply names the new position, and its rtptime is 30 s
    // of 90 kHz past the origin's: one timeline for the whole recording.
    let Reply { head: seek, .. } = c.request("PLAY", &base, &["Range: npt=30.6-"]);
    assert_eq!(
        header(&seek, "Range"),
        Some("npt=30.000-120.000"),
        "MANSRTSP seeks whole seconds: {seek}"
    );
    let at_30 = rtptime(header(&seek, "RTP-Info").unwrap_or(""), 0).expect("rtptime");
    assert_eq!(at_30.wrapping_sub(origin), 30 * 90_000, "{play}\n{seek}");

    // Pause and resume: the reply says where the stream stands.
    let Reply { head: pause, .. } = c.request("PAUSE", &base, &[]);
    let paused_at: f64 = header(&pause, "Range")
        .and_then(|r| r.strip_prefix("npt="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no Range in {pause}"));
    assert!((30.0..35.0).contains(&paused_at), "{pause}");
    let Reply { head: resume, .. } = c.request("PLAY", &base, &[]);
    assert_eq!(
        header(&resume, "Range"),
        Some(format!("npt={paused_at:.3}-120.000").as_str()),
        "{resume}"
    );
    let resumed = rtptime(header(&resume, "RTP-Info").unwrap_or(""), 0).expect("rtptime");
    let expected = origin.wrapping_add((paused_at * 90_000.0).round() as u32);
    assert_eq!(resumed, expected, "{resume}");

    // A live stream keeps npt=0- and still refuses Scale.
    let live = rig.url(DEVICE, CHANNEL);
    let mut l = RawRtsp::connect(rig.ports.rtsp);
    let Reply {
        head, body: sdp, ..
    } = l.request("DESCRIBE", &live, &[]);
    assert!(sdp.contains("a=range:npt=0-\r\n"), "{sdp}");
    assert_eq!(header(&head, "Media-Range"), None);
    let base = header(&head, "Content-Base")
        .expect("Content-Base")
        .to_owned();
    l.request(
        "SETUP",
        &format!("{base}trackID=0"),
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
    );
    let Reply { head: play, .. } = l.request("PLAY", &base, &["Scale: 2"]);
    assert!(play.starts_with("RTSP/1.0 456 "), "{play}");
    let Reply { head: play, .. } = l.request("PLAY", &base, &[]);
    assert_eq!(header(&play, "Range"), Some("npt=0.000-"), "{play}");
}
