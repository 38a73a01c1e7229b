//! Foscam MJPEG cameras end to end: the gateway and a simulated Foscam
//! camera (`camgate sim-foscam`) as separate processes on loopback, played
//! by real clients (ffprobe, GStreamer, headless Chromium, raw HTTP/RTSP).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const CAM: &str = "cam1";

/// Log text without the ANSI colour codes tracing writes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn wait_log(what: &str, log: impl Fn() -> String, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let text = plain(&log());
        if text.contains(needle) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} never logged {needle:?}:\n{}", log());
}

/// Status code of an RTSP DESCRIBE.
fn rtsp_describe_status(port: u16, url: &str) -> u16 {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn rtsp_clients_get_mjpeg_and_pcma_from_the_simulated_foscam() {
    if !have("ffprobe") {
        return;
    }
    let rig = Rig::start_foscam(Options::default(), CAM, &[], "");
    let status = rig.wait_foscam_state(CAM, "online");
    assert!(status.contains("SIMFOSCAM0001"), "{status}");
    let url = rig.foscam_url(CAM);

    let out = run_with_timeout(
        Command::new("ffprobe").args(["-v", "error", "-show_streams", "-of", "json", &url]),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ffprobe: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.logs()
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = json["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(video["codec_name"], "mjpeg");
    // The simulated camera's clip is 640x360 (assets/README.md).
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
    assert_eq!(audio["codec_name"], "pcm_alaw");
    assert_eq!(audio["sample_rate"], "8000");

    if have("gst-launch-1.0") {
        let out = run_with_timeout(
            Command::new("gst-launch-1.0").args([
                "rtspsrc",
                &format!("location={url}"),
                "!",
                "rtpjpegdepay",
                "!",
                "jpegdec",
                "!",
                "fakesink",
                "num-buffers=25",
            ]),
            Duration::from_secs(30),
        );
        assert!(
            gst_played(&out),
            "gst-launch: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            rig.logs()
        );
    }

    // On demand: the camera was told to start, and to stop once idle.
    let sim_log = || rig.cameras[0].log_text();
    wait_log("sim", sim_log, "video start");
    wait_log("sim", sim_log, "video end");
    assert!(rig.metric("camgate_foscam_frames_total{kind=\"video\"}") >= 25.0);
    assert!(rig.metric("camgate_foscam_frames_total{kind=\"audio\"}") > 0.0);
}

#[test]
fn snapshot_and_http_mjpeg_stream() {
    let rig = Rig::start_foscam(Options::default(), CAM, &[], "");
    rig.wait_foscam_state(CAM, "online");
    let (status, head, body) =
        http_get_bytes(rig.ports.http, &format!("/snapshot/foscam/{CAM}.jpg")).unwrap();
    assert_eq!(status, 200, "{head}\n{}", rig.logs());
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: image/jpeg"),
        "{head}"
    );
    assert_eq!(camgate::media::jpeg::dimensions(&body), Some((640, 360)));

    let (status, _, _) = http_get_bytes(rig.ports.http, "/snapshot/foscam/nosuch.jpg").unwrap();
    assert_eq!(status, 404);

    // Read the multipart stream for a while: parts carry whole JPEGs.
    let addr: SocketAddr = ([127, 0, 0, 1], rig.ports.http).into();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /mjpeg/foscam/{CAM} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut data = Vec::new();
    let mut chunk = [0u8; 16384];
    while data.windows(14).filter(|w| w == b"--camgateframe").count() < 6 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "stream ended early");
        data.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&data);
    assert!(
        text.contains("multipart/x-mixed-replace; boundary=camgateframe"),
        "{text:.300}"
    );
    let soi = data.windows(2).filter(|w| *w == [0xff, 0xd8]).count();
    assert!(soi >= 5, "JPEGs in parts: {soi}");
}

#[test]
fn http_mjpeg_shows_in_headless_chromium() {
    if !have("chromium") {
        return;
    }
    let rig = Rig::start_foscam(Options::default(), CAM, &[], "");
    rig.wait_foscam_state(CAM, "online");
    let page = rig.dir.path().join("mjpeg.html");
    std::fs::write(
        &page,
        format!(
            r#"<html><body><div id="out">pending</div><script>
const img = new Image();
const report = () => {{ if (img.naturalWidth > 0) document.getElementById('out').textContent = 'naturalWidth=' + img.naturalWidth + ' naturalHeight=' + img.naturalHeight; }};
img.onload = report;
setInterval(report, 100);
img.src = 'http://127.0.0.1:{port}/mjpeg/foscam/{CAM}';
document.body.appendChild(img);
</script></body></html>"#,
            port = rig.ports.http
        ),
    )
    .unwrap();
    let profile = rig.dir.path().join("chromium-profile");
    let out = run_with_timeout(
        Command::new("chromium").args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=8000",
            "--dump-dom",
            &format!("file://{}", page.display()),
        ]),
        Duration::from_secs(60),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("naturalWidth=640 naturalHeight=360"),
        "DOM: {dom}\nstderr: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.logs()
    );
}

#[test]
fn ptz_talk_and_alarms_reach_the_camera() {
    let rig = Rig::start_foscam(
        Options::default(),
        CAM,
        &["--alarm-every", "1"],
        "swap_pan: true",
    );
    rig.wait_foscam_state(CAM, "online");
    let http = rig.ports.http;

    // swap_pan: "left" is code 6 on this camera.
    let (status, body) = http_post_body(
        http,
        &format!("/api/v1/foscam/{CAM}/ptz"),
        "application/json",
        br#"{"action":"left","speed":5}"#,
    )
    .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"code":6}"#));
    let (status, body) = http_post_body(
        http,
        &format!("/api/v1/foscam/{CAM}/ptz"),
        "application/json",
        br#"{"action":"preset_goto","preset":2}"#,
    )
    .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"code":35}"#));
    let (status, _) = http_post_body(
        http,
        &format!("/api/v1/foscam/{CAM}/ptz"),
        "application/json",
        br#"{"action":"preset_goto","preset":99}"#,
    )
    .unwrap();
    assert_eq!(status, 400);
    let sim_log = || rig.cameras[0].log_text();
    wait_log("sim", sim_log, "ptz decoder_control code=6");
    wait_log("sim", sim_log, "ptz decoder_control code=35");

    // One second of a 1 kHz tone as s16le PCM → 25 ADPCM packets, which
    // the camera decodes back to a 1 kHz tone.
    let pcm: Vec<u8> = (0..8000)
        .flat_map(|n| {
            let s =
                (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0).sin()) as i16;
            s.to_le_bytes()
        })
        .collect();
    let (status, body) = http_post_body(
        http,
        &format!("/api/v1/foscam/{CAM}/talk"),
        "application/octet-stream",
        &pcm,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}\n{}", rig.logs());
    assert!(body.contains(r#""packets":25"#), "{body}");
    let log = wait_log("sim", sim_log, "talk received");
    assert!(log.contains("samples=8000 peak_hz=1000"), "{log}");

    // Alarms from the camera show up in the camera's event list.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, events) = http_get(http, &format!("/api/v1/foscam/{CAM}/events")).unwrap();
        if events.contains(r#""kind":"motion""#) && events.contains(r#""kind":"stop""#) {
            assert!(events.contains(r#""area":[0,0,320,180]"#), "{events}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alarms: {events}\n{}",
            rig.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rig.metric("camgate_foscam_alarms_total") >= 1.0);

    // …and in the gateway-wide feed, next to GB28181 alarms.
    let (_, feed) = http_get(http, "/api/v1/events").unwrap();
    let feed: serde_json::Value = serde_json::from_str(&feed).unwrap();
    let motion = feed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "camera_alarm" && e["alarm"] == "motion")
        .unwrap_or_else(|| panic!("no motion alarm in the shared feed: {feed}"));
    assert_eq!(motion["device_id"], format!("foscam/{CAM}"), "{motion}");
    assert_eq!(motion["source"], "foscam");
    assert_eq!(motion["area"], serde_json::json!([0, 0, 320, 180]));
}

#[test]
fn refusals_show_in_the_api_and_as_rtsp_status() {
    // Too many connections: 503.
    let rig = Rig::start_foscam(Options::default(), CAM, &["--refuse-too-many"], "");
    let status = rig.wait_foscam_state(CAM, "refused");
    assert!(status.contains("too_many_connections"), "{status}");
    assert_eq!(
        rtsp_describe_status(rig.ports.rtsp, &rig.foscam_url(CAM)),
        503
    );
    let log = plain(&rig.gateway.log_text());
    assert!(
        log.contains("camera refused the login: too many connections"),
        "{log}"
    );
    drop(rig);

    // Wrong password: 401.
    let rig = Rig::start_foscam(
        Options::default(),
        CAM,
        &["--password", "right"],
        "password: wrong",
    );
    let status = rig.wait_foscam_state(CAM, "refused");
    assert!(status.contains("wrong_password"), "{status}");
    assert_eq!(
        rtsp_describe_status(rig.ports.rtsp, &rig.foscam_url(CAM)),
        401
    );
    assert!(plain(&rig.gateway.log_text()).contains("wrong password"));
    assert!(rig.metric("camgate_foscam_logins_total{outcome=\"wrong_password\"}") >= 1.0);
    assert_eq!(
        rtsp_describe_status(rig.ports.rtsp, &rig.foscam_url("nosuch")),
        404
    );
}

#[test]
fn camera_vanishes_then_reconnects_and_the_viewer_resumes() {
    let mut rig = Rig::start_foscam(Options::default(), CAM, &[], "");
    rig.wait_foscam_state(CAM, "online");
    // One HTTP MJPEG viewer that keeps reading across the outage.
    let parts = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicBool::new(false));
    let addr: SocketAddr = ([127, 0, 0, 1], rig.ports.http).into();
    let reader = {
        let (parts, ended) = (parts.clone(), ended.clone());
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "GET /mjpeg/foscam/{CAM} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 65536];
            let mut tail = Vec::new();
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&chunk[..n]);
                let found = tail.windows(14).filter(|w| w == b"--camgateframe").count();
                parts.fetch_add(found, Ordering::SeqCst);
                let keep = tail.len().min(13);
                tail.drain(..tail.len() - keep);
            }
            ended.store(true, Ordering::SeqCst);
        })
    };
    let wait_parts = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while parts.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} parts",
                parts.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_parts(5);

    rig.kill_foscam();
    let offline = rig.wait_foscam_state(CAM, "offline");
    assert!(offline.contains("reason"), "{offline}");
    let before = parts.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    rig.restart_foscam(&[]);
    let online = rig.wait_foscam_state(CAM, "online");
    assert!(
        !online.contains("\"session\":1,"),
        "a new login session: {online}"
    );
    // The same HTTP response carries on with frames from the new session.
    wait_parts(before + 10);
    assert!(
        !ended.load(Ordering::SeqCst),
        "viewer was dropped\n{}",
        rig.logs()
    );
    let log = plain(&rig.gateway.log_text());
    assert!(log.contains("reconnecting"), "{log}");
    assert!(rig.metric("camgate_foscam_errors_total{kind=\"connection_lost\"}") >= 1.0);
    drop(rig);
    let _ = reader.join();
}

/// Issue 13: a camera that freezes (SIGSTOP: no FIN, no packet) must not
/// hold an HTTP MJPEG response open forever. It ends within
/// `media.rtp_timeout` (5 s here) + 2 s of the camera's last picture,
/// counted as `camgate_foscam_errors_total{kind="viewer_no_media"}`.
#[test]
fn http_mjpeg_ends_when_the_camera_goes_silent() {
    let rig = Rig::start_foscam(Options::default(), CAM, &[], "");
    rig.wait_foscam_state(CAM, "online");
    let parts = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let addr: SocketAddr = ([127, 0, 0, 1], rig.ports.http).into();
    let reader = {
        let (parts, ended) = (parts.clone(), ended.clone());
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // Without keep-alive the end of the response closes the socket.
        write!(
            s,
            "GET /mjpeg/foscam/{CAM} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 65536];
            let mut tail = Vec::new();
            // Only a clean end counts; a read timeout leaves `ended` unset.
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    *ended.lock().unwrap() = Some(Instant::now());
                    break;
                }
                tail.extend_from_slice(&chunk[..n]);
                let found = tail.windows(14).filter(|w| w == b"--camgateframe").count();
                parts.fetch_add(found, Ordering::SeqCst);
                let keep = tail.len().min(13);
                tail.drain(..tail.len() - keep);
            }
        })
    };
    assert!(
        wait_for(Duration::from_secs(20), || (parts.load(Ordering::SeqCst)
            >= 5)
            .then_some(()))
        .is_some(),
        "no parts before the stop\n{}",
        rig.logs()
    );
    send_signal(rig.cameras[0].child.id(), "STOP");
    let stopped = Instant::now();
    let limit = Duration::from_secs(5 + 2);
    let end = wait_for(limit + Duration::from_secs(5), || *ended.lock().unwrap());
    let end = end.unwrap_or_else(|| {
        panic!(
            "MJPEG response still open {:?} after SIGSTOP\n{}",
            stopped.elapsed(),
            rig.logs()
        )
    });
    let after = end.duration_since(stopped);
    eprintln!("mjpeg: response ended {after:?} after SIGSTOP");
    assert!(
        after <= limit,
        "ended {after:?} after SIGSTOP\n{}",
        rig.logs()
    );
    assert_eq!(
        rig.metric("camgate_foscam_errors_total{kind=\"viewer_no_media\"}"),
        1.0
    );
    send_signal(rig.cameras[0].child.id(), "CONT");
    drop(rig);
    let _ = reader.join();
}
