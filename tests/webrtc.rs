//! WebRTC (WHEP) egress against the real binary: headless Chromium plays
//! the simulated camera from the built-in console, and the WHEP HTTP
//! surface answers plain clients as the draft says.

mod common;

use std::time::{Duration, Instant};

use common::webdriver::Browser;
use common::{CHANNEL, DEVICE, Options, Rig, have, http_exchange};

/// The demo clip is 640x360 H.264 Main (testdata MANIFEST; the sim camera
/// streams it).
const SOURCE_WIDTH: u64 = 640;

/// The console's stats line, as numbers: (framesDecoded, videoWidth,
/// connectionState).
fn stats(b: &Browser) -> (u64, u64, String) {
    let v = b.eval(
        "const s = document.getElementById('stats').dataset; \
         const pc = window.camgate && window.camgate.state.pc; \
         return [Number(s.framesDecoded || 0), Number(s.videoWidth || 0), pc ? pc.connectionState : ''];",
    );
    (
        v[0].as_u64().unwrap_or(0),
        v[1].as_u64().unwrap_or(0),
        v[2].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn chromium_plays_the_demo_camera_from_the_console() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let browser = Browser::start(rig.ports.spare, rig.dir.path().join("chromedriver.log"));
    browser.goto(&format!(
        "http://127.0.0.1:{}/#play=gb/{DEVICE}/{CHANNEL}",
        rig.ports.http
    ));

    // Connecting includes the INVITE to the camera; give it its timeout.
    let deadline = Instant::now() + Duration::from_secs(15);
    let connected_at = loop {
        let (_, _, state) = stats(&browser);
        if state == "connected" {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "browser never connected (state {state:?})\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // Within 5 s of connecting: ≥ 50 frames decoded at the source's width.
    let (frames, width) = loop {
        let (frames, width, _) = stats(&browser);
        if frames >= 50 && width > 0 {
            break (frames, width);
        }
        assert!(
            connected_at.elapsed() < Duration::from_secs(5),
            "only {frames} frames decoded (width {width}) 5 s after connecting\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(width, SOURCE_WIDTH);
    std::thread::sleep(Duration::from_secs(1));
    let (later, _, _) = stats(&browser);
    assert!(later > frames, "decoding stalled at {frames} frames");
    assert!(rig.metric("camgate_webrtc_frames_sent_total") >= later as f64);
    assert_eq!(rig.metric("camgate_webrtc_peers"), 1.0);
    assert_eq!(
        rig.metric(r#"camgate_webrtc_sessions_total{outcome="ok"}"#),
        1.0
    );

    // Stop in the console: it DELETEs the WHEP resource and the gateway
    // lets the viewer go.
    browser.eval("window.camgate.stop(); return 0;");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.metric("camgate_webrtc_peers") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "viewer not released\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The session task counts its end just after the peer is released. The
    // console closes its RTCPeerConnection and sends DELETE together, so the
    // session may see either first: one end, for one of those two reasons.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ended = || {
        rig.metric(r#"camgate_webrtc_sessions_ended_total{reason="deleted"}"#)
            + rig.metric(r#"camgate_webrtc_sessions_ended_total{reason="ice_closed"}"#)
    };
    while ended() != 1.0 {
        assert!(
            Instant::now() < deadline,
            "session end not counted as deleted or ice_closed\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn whep_http_surface() {
    let rig = Rig::start(Options::default());
    let port = rig.ports.http;
    let sdp = [("Content-Type", "application/sdp")];

    // CORS preflight from a page on another origin.
    let (status, head, _) = http_exchange(port, "OPTIONS", "/whep/gb/a/b", &[], "").unwrap();
    assert_eq!(status, 204);
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(
        head.contains("access-control-allow-methods: post, delete"),
        "{head}"
    );
    assert!(head.contains("accept-post: application/sdp"), "{head}");

    // Not SDP.
    let (status, _, _) = http_exchange(
        port,
        "POST",
        "/whep/gb/a/b",
        &[("Content-Type", "application/json")],
        "{}",
    )
    .unwrap();
    assert_eq!(status, 415);

    // A device that never registered.
    let (status, head, body) = http_exchange(
        port,
        "POST",
        "/whep/gb/34020000001320000099/x",
        &sdp,
        "v=0\r\n",
    )
    .unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");

    // ICE-lite: no trickle, and unknown resources are 404.
    let (status, head, _) = http_exchange(port, "PATCH", "/whep/resource/nope", &[], "").unwrap();
    assert_eq!(status, 405);
    assert!(head.contains("allow: delete"), "{head}");
    let (status, _, _) = http_exchange(port, "DELETE", "/whep/resource/nope", &[], "").unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        rig.metric(r#"camgate_webrtc_sessions_total{outcome="not_found"}"#),
        1.0
    );
}

#[test]
fn garbage_offer_is_a_400_and_the_stream_is_released() {
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let (status, _, body) = http_exchange(
        rig.ports.http,
        "POST",
        &format!("/whep/gb/{DEVICE}/{CHANNEL}"),
        &[("Content-Type", "application/sdp")],
        "v=0\r\nthis is not sdp\r\n",
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        rig.metric(r#"camgate_webrtc_sessions_total{outcome="bad_offer"}"#),
        1.0
    );
    assert_eq!(rig.metric("camgate_webrtc_peers"), 0.0);
    // The viewer the offer opened is gone, so the idle timer stops the
    // camera stream (idle_timeout 1 s in tests).
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.metric("camgate_streams_active") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "stream kept alive\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The console's audio stats: (inbound audio packetsReceived, its codec's
/// mimeType).
fn audio_stats(b: &Browser) -> (u64, String) {
    let v = b.eval(
        "const s = document.getElementById('stats').dataset; \
         return [Number(s.audioPackets || 0), s.audioCodec || ''];",
    );
    (
        v[0].as_u64().unwrap_or(0),
        v[1].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn chromium_receives_the_cameras_g711_audio() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    // G.711 A-law in the camera's PS, beside the video.
    rig.add_camera(DEVICE, CHANNEL, &["--audio"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let browser = Browser::start(rig.ports.spare, rig.dir.path().join("chromedriver.log"));
    browser.goto(&format!(
        "http://127.0.0.1:{}/#play=gb/{DEVICE}/{CHANNEL}",
        rig.ports.http
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    let (first, codec) = loop {
        let (packets, codec) = audio_stats(&browser);
        if packets >= 25 {
            break (packets, codec);
        }
        assert!(
            Instant::now() < deadline,
            "{packets} audio packets after 15 s\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(codec, "audio/PCMA", "negotiated audio codec");
    std::thread::sleep(Duration::from_secs(1));
    let (later, _) = audio_stats(&browser);
    // 20–40 ms packets: a second brings 25–50 more; at least 10 is
    // "still flowing" with room for a slow machine.
    assert!(
        later >= first + 10,
        "audio stalled: {first} then {later} packets a second later"
    );
    let (frames, _, _) = stats(&browser);
    assert!(frames > 0, "video plays beside the audio");
}
