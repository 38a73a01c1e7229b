//! Real camera H.264 in a real browser: the Hikvision capture (Main
//! profile, 704x576) replayed through the PS demuxer into a hub, served by
//! the WebRTC engine in-process, played by headless Chromium. The browser
//! page is `about:blank` driven by script, and the offer/answer pass
//! through the test, so only the media path is under test here.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use camgate::streams::{StreamKey, Streams, StreamsConfig};
use camgate::webrtc::{WebRtc, WebRtcConfig};
use common::capture_replay::{CAPTURE_KEY, CaptureReplay, demux};
use common::have;
use common::webdriver::{Browser, free_port};
use tokio_util::sync::CancellationToken;

#[test]
fn chromium_decodes_the_hikvision_main_profile_capture() {
    let Some(path) = camgate::testdata::file("hik_h264_704x576.ps") else {
        eprintln!("SKIPPED: testdata hik_h264_704x576.ps not found");
        return;
    };
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let (frames, info) = demux(&path);
    let (_, params) = info.video.clone().expect("capture has video");
    let sps = params.sps.clone().expect("capture has an SPS");
    assert_eq!(sps.get(1), Some(&0x4d), "the capture is H.264 Main");
    assert!(frames.len() > 1000);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let streams = rt.block_on(async {
        Streams::new(StreamsConfig::default()).with_provider(
            "gb",
            Arc::new(CaptureReplay {
                frames: Arc::new(frames),
                info: info.clone(),
            }),
        )
    });
    let webrtc = rt
        .block_on(WebRtc::start(
            WebRtcConfig {
                udp_port: 0,
                ..WebRtcConfig::default()
            },
            shutdown.clone(),
        ))
        .expect("bind WebRTC port");

    let dir = common::tempdir::Dir::new();
    let browser = Browser::start(free_port(), dir.path().join("chromedriver.log"));
    browser.goto("about:blank");
    let offer = browser.eval_async(
        "const done = arguments[arguments.length - 1];
         const pc = new RTCPeerConnection();
         window.pc = pc;
         const video = document.createElement('video');
         video.muted = true; video.autoplay = true; video.playsInline = true;
         document.body.append(video);
         window.video = video;
         pc.addTransceiver('video', {direction: 'recvonly'});
         pc.ontrack = (e) => { video.srcObject = new MediaStream([e.track]); };
         pc.createOffer().then((o) => pc.setLocalDescription(o)).then(() => done(pc.localDescription.sdp));",
    );
    let offer = offer.as_str().expect("an SDP offer").to_owned();
    let key = StreamKey::from_path(CAPTURE_KEY).unwrap();
    let session = rt
        .block_on(webrtc.play(&streams, key, &offer))
        .expect("WHEP offer accepted");
    let answer = serde_json::to_string(&session.answer).unwrap();
    browser.eval_async(&format!(
        "const done = arguments[arguments.length - 1];
         window.pc.setRemoteDescription({{type: 'answer', sdp: {answer}}}).then(() => done(1), (e) => done(String(e)));"
    ));

    let stats = || {
        let v = browser.eval_async(
            "const done = arguments[arguments.length - 1];
             window.pc.getStats().then((r) => {
               let frames = 0, codec = '';
               r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') {
                 frames = s.framesDecoded || 0;
                 const c = r.get(s.codecId); if (c) codec = c.sdpFmtpLine || '';
               }});
               done([frames, window.video.videoWidth, window.video.videoHeight, window.pc.connectionState, codec]);
             });",
        );
        (
            v[0].as_u64().unwrap_or(0),
            v[1].as_u64().unwrap_or(0),
            v[2].as_u64().unwrap_or(0),
            v[3].as_str().unwrap_or_default().to_owned(),
            v[4].as_str().unwrap_or_default().to_owned(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let connected_at = loop {
        if stats().3 == "connected" {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "browser never connected");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (frames, width, height, codec) = loop {
        let (frames, width, height, _, codec) = stats();
        if frames >= 50 && width > 0 {
            break (frames, width, height, codec);
        }
        assert!(
            connected_at.elapsed() < Duration::from_secs(5),
            "{frames} frames decoded 5 s after connecting"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (width, height),
        (u64::from(params.width), u64::from(params.height))
    );
    assert_eq!((width, height), (704, 576));
    assert!(codec.contains("profile-level-id=4d"), "sent as {codec}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(stats().0 > frames, "decoding stalled");
    assert!(webrtc.stop(&session.id));
    shutdown.cancel();
}
