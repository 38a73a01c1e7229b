//! Browsers play sources WebRTC cannot carry as they are: an H.265 camera
//! (`camgate sim-camera --h265`) and a Foscam MJPEG camera (`camgate
//! sim-foscam`), transcoded by the gateway to H.264 Constrained Baseline.
//! Headless Chromium negotiates over WHEP (the offer and answer pass
//! through the test) and decodes; the transcode is shared by the stream's
//! browsers, stops when they leave, and RTSP keeps the original codec.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::webdriver::Browser;
use common::{CHANNEL, DEVICE, Options, Rig, have, http_exchange, run_with_timeout};

/// Both simulated cameras send 640x360 (assets/README.md).
const SOURCE_SIZE: (u64, u64) = (640, 360);

/// A recvonly peer in the page (as the console makes one); its offer.
fn new_peer(browser: &Browser) -> String {
    let offer = browser.eval_async(
        "const done = arguments[arguments.length - 1];
         window.peers = window.peers || [];
         const pc = new RTCPeerConnection();
         const video = document.createElement('video');
         video.muted = true; video.autoplay = true; video.playsInline = true;
         document.body.append(video);
         pc.addTransceiver('video', {direction: 'recvonly'});
         pc.addTransceiver('audio', {direction: 'recvonly'});
         pc.ontrack = (e) => { if (e.track.kind === 'video') video.srcObject = new MediaStream([e.track]); };
         window.peers.push({pc, video});
         pc.createOffer().then((o) => pc.setLocalDescription(o)).then(() => done(pc.localDescription.sdp));",
    );
    offer.as_str().expect("an SDP offer").to_owned()
}

/// POST the offer to WHEP and hand the answer to peer `index`; returns the
/// resource path.
fn negotiate(rig: &Rig, browser: &Browser, index: usize, path: &str, offer: &str) -> String {
    let (status, head, answer) = http_exchange(
        rig.ports.http,
        "POST",
        &format!("/whep/{path}"),
        &[("Content-Type", "application/sdp")],
        offer,
    )
    .expect("WHEP POST");
    assert_eq!(status, 201, "{answer}\n{}", rig.logs());
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("Location header")
        .trim()
        .to_owned();
    let answer = serde_json::to_string(&answer).unwrap();
    let set = browser.eval_async(&format!(
        "const done = arguments[arguments.length - 1];
         window.peers[{index}].pc.setRemoteDescription({{type: 'answer', sdp: {answer}}})
           .then(() => done('ok'), (e) => done(String(e)));"
    ));
    assert_eq!(set.as_str(), Some("ok"), "answer refused: {set}");
    location
}

struct Stats {
    frames: u64,
    width: u64,
    height: u64,
    state: String,
    fmtp: String,
}

fn stats(browser: &Browser, index: usize) -> Stats {
    let v = browser.eval_async(&format!(
        "const done = arguments[arguments.length - 1];
         const p = window.peers[{index}];
         p.pc.getStats().then((r) => {{
           let frames = 0, fmtp = '';
           r.forEach((s) => {{ if (s.type === 'inbound-rtp' && s.kind === 'video') {{
             frames = s.framesDecoded || 0;
             const c = r.get(s.codecId); if (c) fmtp = c.sdpFmtpLine || '';
           }}}});
           done([frames, p.video.videoWidth, p.video.videoHeight, p.pc.connectionState, fmtp]);
         }});"
    ));
    Stats {
        frames: v[0].as_u64().unwrap_or(0),
        width: v[1].as_u64().unwrap_or(0),
        height: v[2].as_u64().unwrap_or(0),
        state: v[3].as_str().unwrap_or_default().to_owned(),
        fmtp: v[4].as_str().unwrap_or_default().to_owned(),
    }
}

/// Connects, then within 5 s decodes ≥ 50 frames at the source's size as
/// Constrained Baseline, and keeps decoding; returns the frames decoded.
fn assert_plays(rig: &Rig, browser: &Browser, index: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    let connected_at = loop {
        let s = stats(browser, index);
        if s.state == "connected" {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "peer {index} never connected (state {:?})\n{}",
            s.state,
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let first = loop {
        let s = stats(browser, index);
        if s.frames >= 50 && s.width > 0 {
            break s;
        }
        assert!(
            connected_at.elapsed() < Duration::from_secs(5),
            "peer {index}: only {} frames decoded 5 s after connecting\n{}",
            s.frames,
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "peer {index}: {} frames decoded {:.1} s after connecting",
        first.frames,
        connected_at.elapsed().as_secs_f64()
    );
    assert_eq!((first.width, first.height), SOURCE_SIZE);
    assert!(
        first.fmtp.contains("profile-level-id=42e01f"),
        "sent as {}",
        first.fmtp
    );
    std::thread::sleep(Duration::from_secs(1));
    let later = stats(browser, index).frames;
    assert!(later > first.frames, "decoding stalled at {}", first.frames);
    later
}

/// The RTSP view of the same stream still carries the camera's codec.
fn rtsp_codec(url: &str) -> String {
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            url,
        ]),
        Duration::from_secs(20),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn delete(rig: &Rig, location: &str) {
    let (status, _, body) = http_exchange(rig.ports.http, "DELETE", location, &[], "").unwrap();
    assert_eq!(status, 200, "{body}");
}

fn wait_metric(rig: &Rig, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.metric(name) != want {
        assert!(
            Instant::now() < deadline,
            "{name} stayed {} (want {want})\n{}",
            rig.metric(name),
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn chromium_plays_an_h265_camera_through_one_shared_transcode() {
    if !have("chromium") || !have("chromedriver") || !have("ffmpeg") || !have("ffprobe") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &["--h265"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let browser = Browser::start(rig.ports.spare, rig.dir.path().join("chromedriver.log"));
    browser.goto("about:blank");
    let path = format!("gb/{DEVICE}/{CHANNEL}");

    let offer = new_peer(&browser);
    let first = negotiate(&rig, &browser, 0, &path, &offer);
    let decoded = assert_plays(&rig, &browser, 0);
    assert_eq!(rig.metric("camgate_transcodes_active"), 1.0);
    assert!(
        rig.metric(r#"camgate_transcode_frames_out_total{codec="h265"}"#) >= decoded as f64,
        "{}",
        rig.metrics()
    );
    assert!(rig.metric(r#"camgate_transcode_cpu_seconds_total{codec="h265"}"#) > 0.0);

    // A second browser joins the running transcode instead of starting one.
    let offer = new_peer(&browser);
    let second = negotiate(&rig, &browser, 1, &path, &offer);
    assert_plays(&rig, &browser, 1);
    assert_eq!(rig.metric("camgate_transcodes_active"), 1.0);
    assert_eq!(
        rig.metric(r#"camgate_transcode_starts_total{codec="h265"}"#),
        1.0
    );
    assert_eq!(rig.metric("camgate_webrtc_peers"), 2.0);

    // RTSP viewers still get H.265.
    assert_eq!(rtsp_codec(&rig.url(DEVICE, CHANNEL)), "hevc");

    // One browser leaving keeps the transcode; the last one stops it.
    delete(&rig, &first);
    wait_metric(&rig, "camgate_webrtc_peers", 1.0);
    assert_eq!(rig.metric("camgate_transcodes_active"), 1.0);
    delete(&rig, &second);
    wait_metric(&rig, "camgate_transcodes_active", 0.0);
    assert_eq!(
        rig.metric(r#"camgate_transcode_errors_total{kind="decoder_exit"}"#),
        0.0,
        "stopping is not a failure"
    );
}

#[test]
fn chromium_plays_a_foscam_mjpeg_camera_transcoded() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    // A real Foscam sends 15–30 fps; the sim's default 10 fps could not
    // show 50 frames within 5 s.
    let rig = Rig::start_foscam(Options::default(), "door", &["--fps", "25"], "");
    rig.wait_foscam_state("door", "online");
    let browser = Browser::start(free_port(), rig.dir.path().join("chromedriver.log"));
    browser.goto("about:blank");

    let offer = new_peer(&browser);
    let location = negotiate(&rig, &browser, 0, "foscam/door", &offer);
    let decoded = assert_plays(&rig, &browser, 0);
    assert_eq!(rig.metric("camgate_transcodes_active"), 1.0);
    assert!(rig.metric(r#"camgate_transcode_frames_out_total{codec="mjpeg"}"#) >= decoded as f64);
    assert_eq!(
        rig.metric(r#"camgate_transcode_errors_total{kind="jpeg_decode"}"#),
        0.0
    );
    delete(&rig, &location);
    wait_metric(&rig, "camgate_transcodes_active", 0.0);
}

fn free_port() -> u16 {
    common::webdriver::free_port()
}

#[test]
fn without_a_decoder_h265_is_refused_with_501_and_counted() {
    let mut rig = Rig::start(Options {
        extra_yaml: "transcode:\n  ffmpeg: /nonexistent/ffmpeg\n".into(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &["--h265"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let (status, _, body) = http_exchange(
        rig.ports.http,
        "POST",
        &format!("/whep/gb/{DEVICE}/{CHANNEL}"),
        &[("Content-Type", "application/sdp")],
        "v=0\r\n",
    )
    .unwrap();
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("/nonexistent/ffmpeg"), "{body}");
    assert_eq!(
        rig.metric(r#"camgate_transcode_errors_total{kind="decoder_start"}"#),
        1.0
    );
    assert_eq!(
        rig.metric(r#"camgate_webrtc_sessions_total{outcome="transcode_failed"}"#),
        1.0
    );
    assert_eq!(rig.metric("camgate_transcodes_active"), 0.0);
}

#[test]
fn transcoding_can_be_switched_off() {
    let rig = Rig::start_foscam(
        Options {
            extra_yaml: "transcode:\n  enabled: false\n".into(),
            ..Options::default()
        },
        "door",
        &[],
        "",
    );
    rig.wait_foscam_state("door", "online");
    let (status, _, body) = http_exchange(
        rig.ports.http,
        "POST",
        "/whep/foscam/door",
        &[("Content-Type", "application/sdp")],
        "v=0\r\n",
    )
    .unwrap();
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("transcode.enabled"), "{body}");
    assert_eq!(
        rig.metric(r#"camgate_webrtc_sessions_total{outcome="source_codec"}"#),
        1.0
    );
}
