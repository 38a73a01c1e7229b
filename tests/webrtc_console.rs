//! The console's channel panels in headless Chromium against the real
//! binary and the simulated camera: the preset list (PresetQuery) and a
//! preset call reaching the camera as its PTZ word; a recording search
//! drawn on the timeline; a click on a recording playing it over WHEP
//! (frames decoded and rising); speed, seek and pause arriving at the
//! camera as MANSRTSP; the stream table counting the WebRTC viewer.

mod common;

use std::time::{Duration, Instant};

use camgate::gb28181::gbtime;
use common::webdriver::Browser;
use common::{CHANNEL, DEVICE, Options, Rig, have, plain, wait_for};
use serde_json::Value;

/// Poll `script` in the page until `done` accepts its value.
fn wait_page(
    rig: &Rig,
    b: &Browser,
    what: &str,
    limit: Duration,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = b.eval(script);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last value {v}\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn camera_log_has(rig: &Rig, needle: &str) -> bool {
    wait_for(Duration::from_secs(5), || {
        plain(&rig.cameras[0].log_text())
            .contains(needle)
            .then_some(())
    })
    .is_some()
}

fn frames(b: &Browser) -> u64 {
    b.eval("return Number(document.getElementById('stats').dataset.framesDecoded || 0);")
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn console_presets_recordings_timeline_and_trick_play() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let mut rig = Rig::start(Options {
        idle_timeout: 0.5,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let browser = Browser::start(rig.ports.spare, rig.dir.path().join("chromedriver.log"));
    browser.goto(&format!("http://127.0.0.1:{}/", rig.ports.http));

    // Select the channel in the device tree (it starts playing live).
    let channel = format!("li.channel[data-path=\"gb/{DEVICE}/{CHANNEL}\"]");
    wait_page(
        &rig,
        &browser,
        "channel listed",
        Duration::from_secs(10),
        &format!("const c = document.querySelector('{channel}'); if (c) c.click(); return !!c;"),
        |v| v == &Value::Bool(true),
    );

    // Presets: the camera's PresetQuery answer, by id and name.
    let presets = wait_page(
        &rig,
        &browser,
        "presets listed",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#presets li[data-preset]')]
                .map((li) => li.querySelector('span').textContent);",
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    );
    assert_eq!(presets, serde_json::json!(["1 Gate", "2 Yard"]));
    browser.eval(
        "document.querySelector('#presets li[data-preset=\"2\"] button[data-action=\"call\"]').click(); return 0;",
    );
    // Preset call 2, address 0: A5 0F 00 82 00 02 00, checksum 0x38.
    assert!(
        camera_log_has(&rig, "A50F008200020038"),
        "preset call never reached the camera\n{}",
        rig.logs()
    );
    wait_page(
        &rig,
        &browser,
        "preset note",
        Duration::from_secs(5),
        "return document.getElementById('preset-note').dataset.last || '';",
        |v| v == "call 2",
    );

    // Recording search: the camera keeps one file per hour.
    browser.eval(
        "document.getElementById('rec-start').value = '2024-05-01T08:00:00';
         document.getElementById('rec-end').value = '2024-05-01T11:00:00';
         document.getElementById('rec-search').click(); return 0;",
    );
    let bars = wait_page(
        &rig,
        &browser,
        "recordings on the timeline",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#timeline .record')]
                .map((b) => [b.dataset.start, b.dataset.end, parseFloat(b.style.left), parseFloat(b.style.width)]);",
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    );
    let bars = bars.as_array().unwrap();
    assert_eq!(bars.len(), 3, "{bars:?}");
    for (i, bar) in bars.iter().enumerate() {
        let hour = 8 + i;
        assert_eq!(bar[0], format!("2024-05-01T{hour:02}:00:00"), "{bar}");
        assert_eq!(bar[1], format!("2024-05-01T{:02}:00:00", hour + 1), "{bar}");
        // Each hour is a third of the three-hour window.
        let (left, width) = (bar[2].as_f64().unwrap(), bar[3].as_f64().unwrap());
        assert!((left - 100.0 * i as f64 / 3.0).abs() < 0.01, "{bar}");
        assert!((width - 100.0 / 3.0).abs() < 0.01, "{bar}");
    }

    // A click at the left edge of the first recording plays 08:00–09:00.
    browser.eval("document.querySelector('#timeline .record').click(); return 0;");
    let start = gbtime::parse("2024-05-01T08:00:00").unwrap();
    let end = gbtime::parse("2024-05-01T09:00:00").unwrap();
    let key = format!("gb/{DEVICE}/{CHANNEL}/playback/{start}-{end}");
    wait_page(
        &rig,
        &browser,
        "playback started",
        Duration::from_secs(5),
        "return window.camgate.state.playing || '';",
        |v| v == key.as_str(),
    );
    let connected = Instant::now();
    let first = loop {
        let f = frames(&browser);
        if f >= 50 {
            break f;
        }
        assert!(
            connected.elapsed() < Duration::from_secs(15),
            "{f} frames of the recording decoded\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(150));
    };
    std::thread::sleep(Duration::from_secs(1));
    let later = frames(&browser);
    assert!(later > first, "playback stalled at {first} frames");
    let camera = plain(&rig.cameras[0].log_text());
    assert!(
        camera.contains(&format!("{start}")),
        "the camera was asked for another range\n{camera}"
    );

    // The stream table: this playback, with its one WebRTC viewer.
    wait_page(
        &rig,
        &browser,
        "stream table counts the viewer",
        Duration::from_secs(8),
        &format!(
            "const r = document.querySelector('#streams tr[data-key=\"{key}\"]');
             return r ? [r.querySelector('.viewers').textContent, r.querySelector('.webrtc').textContent] : null;"
        ),
        |v| v == &serde_json::json!(["1", "1"]),
    );

    // Trick play from the controls: speed 2, seek to 10 min, pause.
    browser.eval(
        "const s = document.getElementById('pb-speed'); s.value = '2';
         s.dispatchEvent(new Event('change')); return 0;",
    );
    let note = || browser.eval("return document.getElementById('pb-note').textContent;");
    assert!(
        camera_log_has(&rig, "Scale(2.0)"),
        "{}\n{}",
        note(),
        rig.logs()
    );
    browser.eval(
        "const s = document.getElementById('seek'); s.value = '600';
         s.dispatchEvent(new Event('change')); return 0;",
    );
    assert!(camera_log_has(&rig, "Seek(600)"), "{}", rig.logs());
    browser.eval("document.getElementById('pb-pause').click(); return 0;");
    assert!(camera_log_has(&rig, "cmd=Pause"), "{}", rig.logs());
    let state = wait_page(
        &rig,
        &browser,
        "paused position",
        Duration::from_secs(5),
        "return [document.getElementById('pb-pause').textContent,
                 Number(document.getElementById('playback').dataset.position),
                 document.getElementById('pb-note').textContent];",
        |v| v[0] == "resume",
    );
    let position = state[1].as_u64().unwrap_or(0);
    assert!(
        (600..=610).contains(&position),
        "position shown after seek to 600 s: {state}"
    );
    assert_eq!(
        rig.metric(r#"camgate_webrtc_playback_commands_total{outcome="ok"}"#),
        3.0
    );
}
