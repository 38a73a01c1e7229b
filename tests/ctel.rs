//! China Telecom 手机看店 devices end to end: the gateway and a simulated
//! camera (`camgate sim-ctel`) as separate processes on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEV: &str = "81200000001";
const KEY: &str = "s3cret";

struct Sim {
    status_port: u16,
}

fn rig(heartbeat_timeout: f64, sim_args: &[&str]) -> (Rig, Sim) {
    let block = free_ports(2);
    let yaml = format!(
        "ctel:\n  enabled: true\n  listen: \"127.0.0.1:{link}\"\n  heartbeat_timeout: {heartbeat_timeout}\n  token_password: \"tp\"\n  devices:\n    - dev_id: \"{DEV}\"\n      dev_key: \"{KEY}\"\n",
        link = block,
    );
    let mut rig = Rig::start_with_yaml(Options::default(), &yaml);
    let status = (block + 1).to_string();
    let mut args = vec!["sim-ctel", "--status-port", &status];
    args.extend_from_slice(sim_args);
    rig.add_process("sim-ctel", &args);
    let sim = Sim {
        status_port: block + 1,
    };
    wait_for(&rig, "device online", || device(&rig)["online"] == true);
    (rig, sim)
}

fn wait_for(rig: &Rig, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}\n{}", rig.logs());
}

fn json(port: u16, path: &str) -> serde_json::Value {
    http_get(port, path)
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn device(rig: &Rig) -> serde_json::Value {
    json(rig.ports.http, &format!("/api/v1/ctel/devices/{DEV}"))
}

fn status(sim: &Sim) -> serde_json::Value {
    json(sim.status_port, "/status")
}

fn ctel_url(rig: &Rig) -> String {
    format!("rtsp://127.0.0.1:{}/ctel/{DEV}/0", rig.ports.rtsp)
}

/// One raw RTSP request; returns the status line.
fn rtsp_status_line(port: u16, method: &str, url: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect sim RTSP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn registers_logs_in_and_serves_h264_behind_a_one_time_token() {
    if !have("ffprobe") {
        return;
    }
    // The camera advertises a dead LocalIP port: the pull must fall back to
    // UpnpIP, and the dead address costs no token check.
    let (rig, sim) = rig(360.0, &["--heartbeat-secs", "1", "--dead-local-address"]);
    let d = device(&rig);
    assert_eq!(d["manufacturer"], "Dahua");
    assert_eq!(d["channels"], 1);
    assert!(d["registered_at"].is_u64(), "{d}");
    assert_ne!(d["rtsp"]["local"], d["rtsp"]["upnp"]);
    let st = status(&sim);
    assert_eq!(st["registered"], 1);
    assert_eq!(st["logins"], 1);

    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "default=nw=1",
            &ctel_url(&rig),
        ]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("codec_name=h264"), "{text}\n{}", rig.logs());
    assert!(
        text.contains("width=640") && text.contains("height=360"),
        "{text}"
    );

    let checks = status(&sim)["token_checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(checks.len(), 1, "exactly one 0x35 check: {checks:?}");
    assert_eq!(checks[0]["result"], 0);
    assert_eq!(checks[0]["stream_type"], 1);
    let token = checks[0]["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32);
    assert!(rig.metric("camgate_ctel_token_checks_total{outcome=\"ok\"}") >= 1.0);

    // Replaying the spent token straight at the camera: the platform refuses.
    let sim_rtsp = status(&sim)["rtsp_port"].as_u64().unwrap();
    let replay = format!(
        "rtsp://127.0.0.1:{sim_rtsp}/realplay?devid={DEV}&channelno=0&streamtype=1&hashtoken={token}"
    );
    let line = rtsp_status_line(sim_rtsp as u16, "DESCRIBE", &replay);
    assert!(line.starts_with("RTSP/1.0 401"), "{line}");
    let checks = status(&sim)["token_checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let for_token: Vec<_> = checks
        .iter()
        .filter(|c| c["token"] == token.as_str())
        .collect();
    assert_eq!(for_token.len(), 2);
    assert_eq!(for_token[1]["result"], 1);
    // The viewer left: after idle_timeout the gateway tears the pull down.
    wait_for(&rig, "the camera to stop streaming", || {
        status(&sim)["playing"] == 0
    });
    // A wrong channel is the camera's own 404, no check needed.
    let wrong = replay.replace("channelno=0", "channelno=7");
    assert!(rtsp_status_line(sim_rtsp as u16, "DESCRIBE", &wrong).starts_with("RTSP/1.0 404"));
}

#[test]
fn ptz_and_record_search_reach_the_camera() {
    let (rig, sim) = rig(360.0, &["--heartbeat-secs", "1"]);
    let path = format!("/api/v1/ctel/devices/{DEV}/ptz");
    for dir in ["left", "up", "stop"] {
        let (code, body) = http_request(
            rig.ports.http,
            "POST",
            &path,
            "application/json",
            &format!(r#"{{"channel":0,"direction":"{dir}"}}"#),
        )
        .expect("ptz");
        assert_eq!(code, 200, "{body}");
    }
    let ptz: Vec<u64> = status(&sim)["ptz"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ptz, [3, 1, 0]);
    let bad = http_request(
        rig.ports.http,
        "POST",
        &path,
        "application/json",
        r#"{"direction":"sideways"}"#,
    );
    assert_eq!(bad.map(|(c, _)| c), Some(422));

    let records = json(
        rig.ports.http,
        &format!(
            "/api/v1/ctel/devices/{DEV}/records?channel=0&start=202601010000&end=202601010430"
        ),
    );
    assert_eq!(records["total"], 5, "{records}");
    let names: Vec<&str> = records["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["file_name"].as_str())
        .collect();
    assert_eq!(
        names,
        (0..5)
            .map(|h| format!("ch0_20260101{h:02}0000.mp4"))
            .collect::<Vec<_>>()
    );
    let page2 = json(
        rig.ports.http,
        &format!("/api/v1/ctel/devices/{DEV}/records?start=202601010000&end=202601012359&page=3"),
    );
    assert_eq!(
        (
            page2["total"].as_u64(),
            page2["files"].as_array().map(Vec::len)
        ),
        (Some(24), Some(4))
    );
    let (code, _) = http_get(
        rig.ports.http,
        &format!("/api/v1/ctel/devices/{DEV}/records?start=2026&end=202601012359"),
    )
    .unwrap();
    assert_eq!(code, 400);

    // Video parameters: set, then read back through the camera.
    let vpath = format!("/api/v1/ctel/devices/{DEV}/video");
    let (code, body) = http_request(
        rig.ports.http,
        "PUT",
        &vpath,
        "application/json",
        r#"{"channel":0,"stream_type":2,"frame_size":3,"frame_rate":15,"rate_type":1,"bit_rate":4}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v = json(rig.ports.http, &format!("{vpath}?channel=0&stream_type=2"));
    assert_eq!(
        (
            v["frame_size"].as_u64(),
            v["frame_rate"].as_u64(),
            v["bit_rate"].as_u64()
        ),
        (Some(3), Some(15), Some(4)),
        "{v}"
    );
    let (code, _) = http_request(
        rig.ports.http,
        "POST",
        &format!("/api/v1/ctel/devices/{DEV}/reboot"),
        "application/json",
        "",
    )
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(status(&sim)["reboots"], 1);
}

#[test]
fn heartbeat_expiry_takes_the_device_offline_and_ends_its_stream() {
    if !have("ffmpeg") {
        return;
    }
    // Four heartbeats half a second apart, then silence; the gateway gives
    // up after 3 s without a byte.
    let (rig, _sim) = rig(3.0, &["--heartbeat-secs", "0.5", "--heartbeats", "4"]);
    let mut viewer = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            &ctel_url(&rig),
            "-t",
            "60",
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    wait_for(&rig, "the stream to run", || {
        json(rig.ports.http, "/api/v1/streams")
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|s| s["key"] == format!("ctel/{DEV}/0") && s["frames"].as_u64() > Some(0))
            })
    });
    wait_for(&rig, "device offline", || device(&rig)["online"] == false);
    wait_for(&rig, "the stream to end", || {
        json(rig.ports.http, "/api/v1/streams")
            .as_array()
            .is_some_and(|a| !a.iter().any(|s| s["key"] == format!("ctel/{DEV}/0")))
    });
    wait_for(&rig, "the viewer to be let go", || {
        matches!(viewer.try_wait(), Ok(Some(_)))
    });
    assert!(rig.metric("camgate_ctel_link_errors_total{kind=\"timeout\"}") >= 1.0);
    // A new viewer is refused while the device is offline.
    let probe = run_with_timeout(
        Command::new("ffprobe").args(["-v", "error", "-rtsp_transport", "tcp", &ctel_url(&rig)]),
        Duration::from_secs(20),
    );
    assert!(!probe.status.success());
    let _ = viewer.kill();
}
