//! Voice broadcast against the simulated camera: the API upload makes the
//! gateway send `Broadcast`, the camera INVITEs back with its audio port,
//! and PCMA RTP — PT 8, 160-byte (20 ms) payloads, sequence +1 and
//! timestamps +160 — arrives at the camera's speaker; then BYE.

mod common;

use std::time::Duration;

use camgate::media::audio::wav::write_wav;
use common::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// One second of a 440 Hz tone, 8 kHz.
fn tone() -> Vec<i16> {
    (0..8000)
        .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin() * 12_000.0) as i16)
        .collect()
}

#[test]
fn uploaded_wav_reaches_the_camera_as_pcma_rtp() {
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let http = rig.ports.http;
    let path = format!("/api/v1/devices/{DEVICE}/channels/{CHANNEL}/talk");

    let (status, body) = http_post_bytes(http, &path, "audio/wav", &write_wav(&tone())).unwrap();
    assert_eq!(status, 202, "{body}\n{}", rig.logs());
    let started = json(&body);
    assert_eq!(started["packets"], 50, "{started}");
    assert_eq!(started["duration_ms"], 1000, "{started}");

    // One session per channel: a second upload while the first plays.
    let raw: Vec<u8> = tone().iter().flat_map(|s| s.to_le_bytes()).collect();
    let (status, body) = http_post_bytes(http, &path, "application/octet-stream", &raw).unwrap();
    assert_eq!(status, 409, "{body}");

    let ended = wait_for(Duration::from_secs(10), || {
        plain(&rig.cameras[0].log_text())
            .lines()
            .find(|l| l.contains("talk ended"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("talk never ended at the camera\n{}", rig.logs()));
    assert!(ended.contains("packets=50"), "{ended}");
    assert!(ended.contains("bad=0"), "{ended}");
    assert!(ended.contains("discontinuities=0"), "{ended}");
    assert_eq!(rig.metric("camgate_gb_talk_packets_sent_total"), 50.0);

    // The channel is free again: raw s16le this time.
    let (status, body) = wait_for(Duration::from_secs(5), || {
        let r = http_post_bytes(http, &path, "application/octet-stream", &raw)?;
        (r.0 != 409).then_some(r)
    })
    .unwrap();
    assert_eq!(status, 202, "{body}");

    let (status, _) = http_post_bytes(http, &path, "audio/wav", b"").unwrap();
    assert_eq!(status, 415);
}

/// The camera asks for the audio over TCP (`TCP/RTP/AVP`): with
/// `a=setup:passive` it listens and the gateway connects; with
/// `a=setup:active` it connects to the port in the gateway's answer. The
/// same 50 RFC 4571-framed PCMA packets arrive either way.
#[test]
fn talk_over_tcp_both_directions() {
    for (mode, transport) in [("passive", "tcp_active"), ("active", "tcp_passive")] {
        let mut rig = Rig::start(Options::default());
        rig.add_camera(DEVICE, CHANNEL, &["--talk-tcp", mode]);
        rig.wait_channel(DEVICE, CHANNEL);
        let path = format!("/api/v1/devices/{DEVICE}/channels/{CHANNEL}/talk");
        let (status, body) =
            http_post_bytes(rig.ports.http, &path, "audio/wav", &write_wav(&tone())).unwrap();
        assert_eq!(status, 202, "{mode}: {body}\n{}", rig.logs());
        let started = json(&body);
        assert_eq!(started["transport"], transport, "{mode}: {started}");
        assert_eq!(started["packets"], 50, "{mode}: {started}");

        let ended = wait_for(Duration::from_secs(10), || {
            plain(&rig.cameras[0].log_text())
                .lines()
                .find(|l| l.contains("talk ended"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{mode}: talk never ended at the camera\n{}", rig.logs()));
        assert!(ended.contains("packets=50"), "{mode}: {ended}");
        assert!(ended.contains("bad=0"), "{mode}: {ended}");
        assert!(ended.contains("discontinuities=0"), "{mode}: {ended}");
        assert_eq!(rig.metric("camgate_gb_talk_packets_sent_total"), 50.0);
    }
}
