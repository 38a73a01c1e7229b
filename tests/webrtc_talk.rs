//! Talk from the browser against the real binary and the simulated
//! camera: headless Chromium with a fake microphone presses the console's
//! talk button; the gateway answers its Opus offer, calls the camera back
//! over GB28181 (Broadcast → INVITE), decodes the Opus and sends PCMA; the
//! camera's speaker counts what arrived — PT 8, 20 ms payloads, no
//! sequence or timestamp jumps, and packets that carry sound.

mod common;

use std::time::{Duration, Instant};

use common::webdriver::Browser;
use common::{CHANNEL, DEVICE, Options, Rig, have, plain, wait_for};

/// `name=value` from a log line, as a number.
fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

#[test]
fn console_talk_button_sends_the_microphone_to_the_camera_as_pcma() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let browser = Browser::start_with_args(
        rig.ports.spare,
        rig.dir.path().join("chromedriver.log"),
        &[
            // A fake microphone (a beeping tone) and no permission prompt.
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
        ],
    );
    browser.goto(&format!("http://127.0.0.1:{}/", rig.ports.http));
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.eval("return !!(window.camgate && window.camgate.select);") != true {
        assert!(Instant::now() < deadline, "console did not load");
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.eval(&format!(
        "window.camgate.select('{DEVICE}', '{CHANNEL}'); document.getElementById('talk').click(); return 0;"
    ));

    // Talk for two seconds of browser packets after it connects.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent = browser
            .eval("return Number(document.getElementById('talk-note').dataset.packetsSent || 0);")
            .as_u64()
            .unwrap_or(0);
        if sent >= 100 {
            break;
        }
        let note = browser.eval("return document.getElementById('talk-note').textContent;");
        assert!(
            Instant::now() < deadline,
            "browser sent {sent} packets; console says {note}\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        rig.metric(r#"camgate_webrtc_talk_sessions_total{outcome="ok"}"#),
        1.0
    );
    browser.eval("document.getElementById('talk').click(); return 0;");

    // The console's DELETE ends the peer; the device gets its BYE.
    let ended = wait_for(Duration::from_secs(10), || {
        plain(&rig.cameras[0].log_text())
            .lines()
            .find(|l| l.contains("talk ended"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("talk never ended at the camera\n{}", rig.logs()));
    eprintln!("camera: {ended}");
    let packets = field(&ended, "packets");
    assert!(packets >= 80, "{packets} packets at the camera: {ended}");
    assert_eq!(field(&ended, "bad"), 0, "{ended}");
    assert_eq!(field(&ended, "discontinuities"), 0, "{ended}");
    // Chromium's fake microphone beeps a few times a second.
    let loud = field(&ended, "loud");
    assert!(loud >= 2, "no sound in {packets} packets: {ended}");
    assert!(loud < packets, "between beeps it is quiet: {ended}");
    assert!(rig.metric("camgate_webrtc_talk_packets_total") >= packets as f64 - 5.0);
    assert_eq!(
        rig.metric(r#"camgate_webrtc_talk_errors_total{kind="opus_decode"}"#),
        0.0,
        "{}",
        rig.logs()
    );
}

/// Issue 13: a browser that stops sending audio (its sender's track
/// replaced by none: ICE and DTLS stay up, no RTP) must not keep the talk
/// session, and the device's talk channel, busy. The live feed's silence
/// deadline (`media.rtp_timeout`, 5 s here, from its last packet) ends the
/// talk: the camera gets its BYE within rtp_timeout + 2 s, the WebRTC
/// session ends with it, and the channel takes a new talk at once.
#[test]
fn a_browser_that_stops_sending_audio_frees_the_talk_channel() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let browser = Browser::start_with_args(
        rig.ports.spare,
        rig.dir.path().join("chromedriver.log"),
        &[
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
        ],
    );
    browser.goto(&format!("http://127.0.0.1:{}/", rig.ports.http));
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.eval("return !!(window.camgate && window.camgate.select);") != true {
        assert!(Instant::now() < deadline, "console did not load");
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.eval(&format!(
        "window.camgate.select('{DEVICE}', '{CHANNEL}'); document.getElementById('talk').click(); return 0;"
    ));
    let packets_sent = || {
        browser
            .eval("return Number(document.getElementById('talk-note').dataset.packetsSent || 0);")
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(20), || (packets_sent() >= 50)
            .then_some(()))
        .is_some(),
        "the browser never talked\n{}",
        rig.logs()
    );
    // Silence the microphone without hanging up.
    browser.eval(
        "window.camgate.state.talk.pc.getSenders().forEach((s) => s.replaceTrack(null)); return 0;",
    );
    let silenced = Instant::now();
    let ended = wait_for(Duration::from_secs(15), || {
        plain(&rig.cameras[0].log_text())
            .lines()
            .find(|l| l.contains("talk ended"))
            .map(|_| Instant::now())
    })
    .unwrap_or_else(|| panic!("the silent talk never ended at the camera\n{}", rig.logs()));
    let after = ended.duration_since(silenced);
    eprintln!("silent browser: camera's talk ended {after:?} after the track was removed");
    assert!(
        after <= Duration::from_secs(5 + 2),
        "{after:?}\n{}",
        rig.logs()
    );
    let gateway_ended = wait_for(Duration::from_secs(3), || {
        plain(&rig.gateway.log_text())
            .lines()
            .find(|l| l.contains("browser talk ended"))
            .map(str::to_owned)
    });
    assert!(
        gateway_ended.is_some(),
        "the WebRTC talk session outlived the device's talk\n{}",
        rig.logs()
    );
    // The channel is free: a new talk is accepted, not refused as busy.
    browser.eval(
        "window.camgate.stopTalk('silent'); document.getElementById('talk').click(); return 0;",
    );
    assert!(
        wait_for(Duration::from_secs(20), || {
            (rig.metric(r#"camgate_webrtc_talk_sessions_total{outcome="ok"}"#) >= 2.0).then_some(())
        })
        .is_some(),
        "second talk not accepted\n{}",
        rig.logs()
    );
    assert_eq!(
        rig.metric(r#"camgate_webrtc_talk_sessions_total{outcome="busy"}"#),
        0.0
    );
}
