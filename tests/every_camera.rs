//! Issue 15, a newcomer's first hour, against `camgate --demo` (its three
//! simulated cameras: GB28181, Foscam, China Telecom):
//!
//! - `GET /api/v1/devices` lists the three, one per protocol, with play
//!   URLs and capabilities;
//! - the console (headless Chromium) groups them by protocol, plays each
//!   over WHEP (frames decoded > 0), drives PTZ of each through its own
//!   protocol, shows the stream table and a download job's progress bar,
//!   and leaves a screenshot under `target/tmp/` for review;
//! - Private Network Access preflights on WHEP and the API, on and off;
//!   a page served from another origin, on the *public* address space,
//!   reads the API and plays a camera over WHEP.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::webdriver::Browser;
use common::{CHANNEL, DEVICE, Options, Ports, Proc, have, http_exchange, http_get, wait_for};
use serde_json::Value;

/// The demo telecom camera (`ctel::server::DEMO_DEV_ID`).
const CTEL_DEVICE: &str = camgate::ctel::server::DEMO_DEV_ID;

/// `camgate --demo` with the test harness's ports; `http_extra` lines are
/// added to the `http:` section.
struct Demo {
    dir: common::tempdir::Dir,
    ports: Ports,
    gateway: Proc,
}

impl Demo {
    fn start(http_extra: &str) -> Self {
        let dir = common::tempdir::Dir::new();
        let ports = Ports::new();
        let downloads = dir.path().join("dl");
        let config = common::write_config(
            dir.path(),
            &ports,
            &Options {
                extra_yaml: format!(
                    "ctel:\n  listen: \"127.0.0.1:0\"\ngb:\n  download_dir: \"{}\"\n",
                    downloads.display()
                ),
                ..Options::default()
            },
        );
        let http_line = format!("http:\n  listen: \"127.0.0.1:{}\"\n", ports.http);
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(&http_line));
        std::fs::write(
            &config,
            text.replace(&http_line, &format!("{http_line}{http_extra}")),
        )
        .unwrap();
        let gateway = Proc::spawn(
            &["--demo", "--config", config.to_str().unwrap()],
            dir.path().join("gateway.log"),
        );
        let demo = Self {
            dir,
            ports,
            gateway,
        };
        let up = wait_for(Duration::from_secs(20), || {
            http_get(demo.ports.http, "/healthz").filter(|(s, _)| *s == 200)
        });
        assert!(up.is_some(), "gateway never up\n{}", demo.logs());
        demo
    }

    fn logs(&self) -> String {
        common::plain(&self.gateway.log_text())
    }

    /// The device list once all three demo cameras are online.
    fn all_online(&self) -> Vec<Value> {
        wait_for(Duration::from_secs(30), || {
            let (status, body) = http_get(self.ports.http, "/api/v1/devices")?;
            let list: Vec<Value> = serde_json::from_str(&body).ok()?;
            (status == 200 && list.len() == 3 && list.iter().all(|d| d["online"] == true))
                .then_some(list)
        })
        .unwrap_or_else(|| {
            let last = http_get(self.ports.http, "/api/v1/devices");
            panic!("three demo cameras never online: {last:?}\n{}", self.logs())
        })
    }
}

/// Poll `script` in the page until `done` accepts its value.
fn wait_page(
    demo: &Demo,
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
            demo.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn streams() -> [String; 3] {
    [
        format!("gb/{DEVICE}/{CHANNEL}"),
        "foscam/demo".to_owned(),
        format!("ctel/{CTEL_DEVICE}/0"),
    ]
}

#[test]
fn demo_lists_three_cameras_of_three_protocols_with_play_urls() {
    let demo = Demo::start("");
    let list = demo.all_online();
    let protocols: Vec<&str> = list.iter().filter_map(|d| d["protocol"].as_str()).collect();
    assert_eq!(protocols, ["gb28181", "foscam", "ctel"], "{list:?}");
    let (http, rtsp) = (demo.ports.http, demo.ports.rtsp);
    for (device, stream) in list.iter().zip(streams()) {
        let channels = device["channels"].as_array().unwrap();
        assert_eq!(channels.len(), 1, "{device}");
        let c = &channels[0];
        assert_eq!(c["stream"], stream.as_str(), "{device}");
        assert_eq!(
            c["play"]["rtsp"],
            format!("rtsp://127.0.0.1:{rtsp}/{stream}")
        );
        assert_eq!(
            c["play"]["whep"],
            format!("http://127.0.0.1:{http}/whep/{stream}")
        );
        assert_eq!(
            c["play"]["console"],
            format!("http://127.0.0.1:{http}/#play={stream}")
        );
        let caps = c["capabilities"].as_object().unwrap();
        let names: Vec<&str> = caps.keys().map(String::as_str).collect();
        assert_eq!(
            names.len(),
            6,
            "ptz presets talk playback snapshot audio: {caps:?}"
        );
        assert!(caps.values().all(Value::is_boolean), "{caps:?}");
    }
    let caps = |i: usize, k: &str| list[i]["channels"][0]["capabilities"][k] == true;
    // GB28181 has recordings; Foscam and the telecom camera are live only.
    assert!(caps(0, "playback") && !caps(1, "playback") && !caps(2, "playback"));
    assert!(caps(0, "ptz") && caps(1, "ptz"));
    // GB28181 keeps its own fields beside the common ones.
    assert_eq!(list[0]["transport"], "udp", "{}", list[0]);
    assert_eq!(list[0]["id"], DEVICE);
    assert_eq!(list[2]["id"], CTEL_DEVICE);

    // One device by id, in the same shape, whatever its protocol.
    let (status, body) = http_get(http, "/api/v1/devices/demo").unwrap();
    assert_eq!(status, 200, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["protocol"], "foscam");
    assert_eq!(http_get(http, "/api/v1/devices/nope").unwrap().0, 404);

    // The play URL from the list really plays (RTSP, first answer).
    if have("ffprobe") {
        let url = list[1]["channels"][0]["play"]["rtsp"].as_str().unwrap();
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries"])
            .args(["stream=codec_type", "-of", "csv=p=0", url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("video"), "{url}: {out:?}\n{}", demo.logs());
    }
}

/// Frames the browser decoded of `stream` (0 while the stats still show
/// another stream's peer).
fn frames(b: &Browser, stream: &str) -> u64 {
    b.eval(&format!(
        "const s = document.getElementById('stats').dataset;
         return s.stream === '{stream}' ? Number(s.framesDecoded || 0) : 0;"
    ))
    .as_u64()
    .unwrap_or(0)
}

#[test]
fn console_groups_every_camera_by_protocol_and_plays_each() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let demo = Demo::start("");
    demo.all_online();
    let browser = Browser::start_with_args(
        demo.ports.spare,
        demo.dir.path().join("chromedriver.log"),
        &["--window-size=1400,1500"],
    );
    browser.goto(&format!("http://127.0.0.1:{}/", demo.ports.http));

    let groups = wait_page(
        &demo,
        &browser,
        "protocol groups",
        Duration::from_secs(15),
        "return [...document.querySelectorAll('section.protocol')].map((s) => s.dataset.protocol);",
        |v| v.as_array().is_some_and(|a| a.len() == 3),
    );
    assert_eq!(groups, serde_json::json!(["gb28181", "foscam", "ctel"]));

    let mut decoded = Vec::new();
    for stream in streams() {
        let started = Instant::now();
        browser.eval(&format!(
            "document.querySelector('li.channel[data-path=\"{stream}\"]').click(); return 0;"
        ));
        wait_page(
            &demo,
            &browser,
            &format!("{stream} selected"),
            Duration::from_secs(5),
            "return window.camgate.state.playing;",
            |v| v == stream.as_str(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let n = loop {
            let n = frames(&browser, &stream);
            if n > 0 {
                break n;
            }
            assert!(
                Instant::now() < deadline,
                "{stream}: no frame decoded; {}\n{}",
                browser.eval("return document.getElementById('now-playing').textContent;"),
                demo.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        decoded.push((stream.clone(), n, started.elapsed()));

        // The panels follow the protocol: recordings only for GB28181.
        let panels = browser.eval(
            "return ['ptz-panel', 'recordings-panel'].map((id) => !document.getElementById(id).hidden);",
        );
        let gb = stream.starts_with("gb/");
        assert_eq!(panels, serde_json::json!([true, gb]), "{stream}");

        // PTZ through the protocol's own endpoint.
        browser.eval("window.camgate.ptzCommand('up'); return 0;");
        let protocol = browser.eval("return window.camgate.state.selected.protocol;");
        let protocol = protocol.as_str().unwrap_or_default().to_owned();
        wait_page(
            &demo,
            &browser,
            &format!("{stream} PTZ up answered"),
            Duration::from_secs(10),
            "return document.getElementById('ptz-note').dataset.last || document.getElementById('ptz-note').textContent;",
            |v| v == format!("{protocol} up").as_str(),
        );
        browser.eval("window.camgate.ptzCommand('stop'); return 0;");

        // The stream table shows the running stream with frames counted.
        wait_page(
            &demo,
            &browser,
            &format!("{stream} in the stream table"),
            Duration::from_secs(10),
            &format!(
                "const r = document.querySelector('#streams tr[data-key=\"{stream}\"] td.frames');
                 return r ? Number(r.textContent) : 0;"
            ),
            |v| v.as_u64().is_some_and(|n| n > 0),
        );
    }
    eprintln!("frames decoded per stream (first poll above 0, time to it): {decoded:?}");

    // A download of the GB28181 channel, its progress bar filled.
    browser.eval(&format!(
        "document.querySelector('li.channel[data-path=\"gb/{DEVICE}/{CHANNEL}\"]').click();
         document.getElementById('rec-start').value = '2024-05-01T08:00:00';
         document.getElementById('rec-end').value = '2024-05-01T08:00:06';
         document.getElementById('dl-format').value = 'ps';
         return 0;"
    ));
    wait_page(
        &demo,
        &browser,
        "GB channel selected again",
        Duration::from_secs(5),
        "return window.camgate.state.selected.protocol;",
        |v| v == "gb28181",
    );
    browser.eval("document.getElementById('dl-start').click(); return 0;");
    let job = wait_page(
        &demo,
        &browser,
        "download done",
        Duration::from_secs(40),
        "const r = document.querySelector('#downloads tr[data-job]');
         return r ? [r.dataset.state, Number(r.dataset.progress),
                     r.querySelector('.progress > span').style.width] : null;",
        |v| v[0] == "done" || v[0] == "failed",
    );
    assert_eq!(
        job,
        serde_json::json!(["done", 100, "100%"]),
        "{}",
        demo.logs()
    );

    // The GB28181 camera playing, its download listed, for the screenshot.
    let gb = format!("gb/{DEVICE}/{CHANNEL}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while frames(&browser, &gb) <= 10 {
        assert!(Instant::now() < deadline, "{gb} stopped\n{}", demo.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let png = browser.screenshot_png();
    assert_eq!(&png[1..4], b"PNG");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console_every_camera.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());
}

/// A preflight as a browser sends it; the reply's lowercased header block.
fn preflight(port: u16, path: &str, origin: &str, private_network: bool) -> (u16, String) {
    let mut headers = vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    if private_network {
        headers.push(("Access-Control-Request-Private-Network", "true"));
    }
    let (status, head, _) = http_exchange(port, "OPTIONS", path, &headers, "").unwrap();
    (status, head)
}

/// One page, served from its own port (another origin), that reads the
/// gateway's device list and plays the first listed camera over WHEP.
fn serve_page(listener: TcpListener, gateway_http: u16) {
    let page = format!(
        r#"<!doctype html><html><body><video id="v" autoplay muted playsinline></video>
<div id="out">pending</div><script>
const gw = "http://127.0.0.1:{gateway_http}";
window.result = {{ devices: null, whep: null, frames: 0, error: null }};
(async () => {{
  try {{
    const list = await (await fetch(gw + "/api/v1/devices")).json();
    result.devices = list.map((d) => d.protocol);
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", {{ direction: "recvonly" }});
    pc.ontrack = (e) => {{ document.getElementById("v").srcObject = e.streams[0] || new MediaStream([e.track]); }};
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(list[1].channels[0].play.whep, {{
      method: "POST", headers: {{ "Content-Type": "application/sdp" }}, body: pc.localDescription.sdp }});
    result.whep = r.status;
    await pc.setRemoteDescription({{ type: "answer", sdp: await r.text() }});
    setInterval(async () => {{
      (await pc.getStats()).forEach((s) => {{
        if (s.type === "inbound-rtp" && s.kind === "video") result.frames = s.framesDecoded || 0;
      }});
    }}, 300);
  }} catch (e) {{ result.error = String(e); }}
}})();
</script></body></html>"#
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(16) {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
}

#[test]
fn private_network_preflights_and_a_page_from_another_origin() {
    let page_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let page_port = page_listener.local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let demo = Demo::start(&format!("  cors_origins: [\"{origin}\"]\n"));
    let http = demo.ports.http;
    let whep = "/whep/foscam/demo";
    let allow_pna = "access-control-allow-private-network: true";

    // WHEP: any origin; the private-network grant when asked.
    let (status, head) = preflight(http, whep, "http://dash.example", true);
    assert_eq!(status, 204, "{head}");
    assert!(head.contains(allow_pna), "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    let (_, head) = preflight(http, whep, "http://dash.example", false);
    assert!(!head.contains("private-network"), "{head}");
    // The API: only the configured origin, then the grant too.
    let (status, head) = preflight(http, "/api/v1/devices", &origin, true);
    assert_eq!(status, 204, "{head}");
    assert!(head.contains(allow_pna), "{head}");
    assert!(
        head.contains(&format!("access-control-allow-origin: {origin}")),
        "{head}"
    );
    let (_, head) = preflight(http, "/api/v1/devices", "http://evil.example", true);
    assert!(!head.contains("access-control-allow"), "{head}");
    let metrics = http_get(http, "/metrics").unwrap().1;
    assert!(
        metrics.contains("camgate_http_private_network_preflights_total 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("private_network"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Configured off: no grant, CORS itself unchanged.
    let off = Demo::start("  private_network_access: false\n");
    let (status, head) = preflight(off.ports.http, whep, "http://dash.example", true);
    assert_eq!(status, 204, "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(!head.contains("private-network"), "{head}");
    drop(off);

    if !have("chromium") || !have("chromedriver") {
        return;
    }
    demo.all_online();
    serve_page(page_listener, http);
    // The page's server counts as the public internet, the gateway stays
    // on loopback: Chromium applies its private-network rules. Chromium
    // 142+ gates this with the "loopback-network" permission (Local
    // Network Access) rather than the PNA preflight; granted here as a
    // user would.
    let browser = Browser::start_with_args(
        demo.ports.spare,
        demo.dir.path().join("chromedriver.log"),
        &[&format!(
            "--ip-address-space-overrides=127.0.0.1:{page_port}=public"
        )],
    );
    // Without the permission the public page cannot reach the gateway:
    // the address-space rules are really in force in this browser.
    browser.goto(&format!("{origin}/"));
    let refused = wait_page(
        &demo,
        &browser,
        "public page refused without permission",
        Duration::from_secs(15),
        "return window.result || null;",
        |v| v["error"].is_string() || v["devices"].is_array(),
    );
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("fetch")),
        "{refused}"
    );
    browser.set_permission("loopback-network", "granted");
    browser.goto(&format!("{origin}/"));
    let result = wait_page(
        &demo,
        &browser,
        "cross-origin page plays",
        Duration::from_secs(30),
        "return window.result || null;",
        |v| v["error"].is_string() || v["frames"].as_u64().is_some_and(|n| n > 0),
    );
    eprintln!("page from {origin}: {result}");
    assert_eq!(result["error"], Value::Null, "{result}");
    assert_eq!(
        result["devices"],
        serde_json::json!(["gb28181", "foscam", "ctel"])
    );
    assert_eq!(result["whep"], 201, "{result}");
}
