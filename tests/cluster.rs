//! Issue 18: three camgate nodes and a real `redis-server` on loopback act
//! as one gateway. Devices all pointed at node 1 are spread by REGISTER 302
//! to their owners; every node lists every device with its owner; node 2's
//! events reach nodes 1 and 3 once each; a viewer on any node is sent to
//! the owner (RTSP 302, WHEP 307) or served by a relay (node 1), with one
//! INVITE for viewers on two nodes; PTZ through node 1 reaches node 3's
//! camera; when a node is
//! SIGKILLed its devices re-register on the others within keepalive
//! interval × misses + 10 s and a viewer that reconnects gets a picture;
//! when Redis is SIGKILLed for 15 s no node stops, local streams play on,
//! and the shared view is whole again within 10 s of Redis returning.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Simulated devices, all registering to node 1.
const DEVICES: u32 = 60;
/// The simulated cameras' keepalive period and misses before they go
/// back to node 1 (the address printed on them).
const KEEPALIVE_SECS: u64 = 5;
const KEEPALIVE_MISSES: u64 = 3;

/// A `redis-server` on a free loopback port, without persistence; killed
/// on drop.
struct Redis {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Redis {
    fn start(dir: &std::path::Path) -> Self {
        Self::start_on(dir, free_ports(1), "redis.log")
    }

    /// On a given port: a restart after a crash, where the nodes look.
    fn start_on(dir: &std::path::Path, port: u16, log: &str) -> Self {
        let log = dir.join(log);
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::fs::File::create(&log).expect("redis log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        wait_tcp(port);
        Self { child, port, log }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    id: String,
    ports: Ports,
    config: PathBuf,
    proc: Proc,
}

impl Node {
    /// Node `n`; `routing` is its `cluster.viewer_routing`; `extra` more
    /// YAML (top-level sections).
    fn start(dir: &std::path::Path, n: u32, redis: &Redis, routing: &str, extra: &str) -> Self {
        let id = format!("node-{n}");
        let sub = dir.join(&id);
        std::fs::create_dir_all(&sub).unwrap();
        let ports = Ports::new();
        let opts = Options {
            idle_timeout: 2.0,
            extra_yaml: format!(
                "cluster:\n  enabled: true\n  redis_url: \"redis://127.0.0.1:{}\"\n  node_id: {id}\n  key_prefix: cg{}\n  secret: test-cluster-secret\n  viewer_routing: {routing}\n{extra}",
                redis.port,
                std::process::id()
            ),
            ..Options::default()
        };
        let config = write_config(&sub, &ports, &opts);
        let proc = Proc::spawn(
            &["--config", config.to_str().unwrap()],
            sub.join("camgate.log"),
        );
        Self {
            id,
            ports,
            config,
            proc,
        }
    }

    fn metric(&self, prefix: &str) -> f64 {
        let text = http_get(self.ports.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        metric_value(&text, prefix)
    }

    /// `device id → (owner node, online)` of the GB28181 devices this node
    /// lists.
    fn owners(&self) -> BTreeMap<String, (String, bool)> {
        let Some((200, body)) = http_get(self.ports.http, "/api/v1/devices") else {
            return BTreeMap::new();
        };
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["protocol"] == "gb28181")
            .map(|d| {
                (
                    d["id"].as_str().unwrap_or_default().to_owned(),
                    (
                        d["node"].as_str().unwrap_or_default().to_owned(),
                        d["online"].as_bool().unwrap_or(false),
                    ),
                )
            })
            .collect()
    }

    fn rtsp_url(&self, device: &str) -> String {
        let channel = channel_of(device);
        format!("rtsp://127.0.0.1:{}/gb/{device}/{channel}", self.ports.rtsp)
    }
}

/// The channel `sim-camera --count` gives the device with this id.
fn channel_of(device: &str) -> String {
    let i = (device.parse::<u128>().unwrap() - DEVICE.parse::<u128>().unwrap()) as u32;
    nth_id(CHANNEL, i)
}

fn all_logs(nodes: &[Node], cameras: &Proc, redis: &Redis) -> String {
    let mut s = String::new();
    for n in nodes {
        s += &format!("--- {}\n{}\n", n.id, n.proc.log_text());
    }
    s += &format!("--- cameras\n{}\n", cameras.log_text());
    s += &format!(
        "--- redis\n{}\n",
        std::fs::read_to_string(&redis.log).unwrap_or_default()
    );
    // Keep failures readable: the end of each log is what matters.
    let keep = 60_000;
    if s.len() > keep {
        s = s[s.len() - keep..].to_owned();
    }
    s
}

/// Every node lists all `DEVICES` online with the same owners, and each
/// node holds the registrations the lists say it owns.
fn agreed_owners(nodes: &[Node]) -> Option<BTreeMap<String, String>> {
    let first = nodes[0].owners();
    if first.len() != DEVICES as usize || first.values().any(|(_, online)| !online) {
        return None;
    }
    for n in &nodes[1..] {
        if n.owners() != first {
            return None;
        }
    }
    for n in nodes {
        let owned = first.values().filter(|(o, _)| *o == n.id).count();
        if n.metric("camgate_devices_registered") as usize != owned {
            return None;
        }
    }
    Some(first.into_iter().map(|(d, (o, _))| (d, o)).collect())
}

/// One `redis-cli` command's trimmed output.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = run_with_timeout(
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args),
        Duration::from_secs(5),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn ffprobe_ok(url: &str) -> Result<Vec<String>, String> {
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_streams",
            "-of",
            "json",
            url,
        ]),
        Duration::from_secs(20),
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(ffprobe_codecs(&v).into_iter().map(str::to_owned).collect())
}

#[test]
fn three_nodes_share_devices_redirect_viewers_and_survive_a_node_loss() {
    if !have("redis-server") || !have("ffprobe") {
        return;
    }
    let dir = tempdir::Dir::new();
    let redis = Redis::start(dir.path());
    // A Foscam camera on node 2 raises a motion alarm every second: its
    // events reach the other nodes through the Redis Stream.
    let foscam_port = free_ports(1);
    let mut foscam = Proc::spawn(
        &[
            "sim-foscam",
            "--listen",
            &format!("127.0.0.1:{foscam_port}"),
            "--alarm-every",
            "1",
        ],
        dir.path().join("foscam.log"),
    );
    wait_tcp(foscam_port);
    let foscam_yaml =
        format!("foscam:\n  - {{ name: door, host: \"127.0.0.1\", port: {foscam_port} }}\n");
    // Node 1 relays other nodes' devices; nodes 2 and 3 redirect viewers.
    let mut nodes: Vec<Node> = (1..=3)
        .map(|n| {
            let routing = if n == 1 { "relay" } else { "redirect" };
            let extra = if n == 2 { foscam_yaml.as_str() } else { "" };
            Node::start(dir.path(), n, &redis, routing, extra)
        })
        .collect();
    // Every node sees all three leases before any camera starts.
    let seen = wait_for(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| {
                n.metric("camgate_cluster_nodes") == 3.0
                    && n.metric("camgate_cluster_redis_up") == 1.0
            })
            .then_some(())
    });
    let mut cameras = Proc::spawn(
        &[
            "sim-camera",
            "--config",
            nodes[0].config.to_str().unwrap(),
            "--count",
            &DEVICES.to_string(),
            "--keepalive-interval",
            &KEEPALIVE_SECS.to_string(),
            "--keepalive-misses",
            &KEEPALIVE_MISSES.to_string(),
        ],
        dir.path().join("cameras.log"),
    );
    assert!(
        seen.is_some(),
        "nodes never saw each other\n{}",
        all_logs(&nodes, &cameras, &redis)
    );

    // ---- placement: 60 devices at node 1 end up spread, listed alike ----
    let started = Instant::now();
    let owners = wait_for(Duration::from_secs(60), || agreed_owners(&nodes));
    let Some(owners) = owners else {
        let views: Vec<_> = nodes
            .iter()
            .map(|n| {
                (
                    n.id.clone(),
                    n.owners().len(),
                    n.metric("camgate_devices_registered"),
                )
            })
            .collect();
        panic!(
            "no agreed device list: {views:?}\n{}",
            all_logs(&nodes, &cameras, &redis)
        );
    };
    let mut share = BTreeMap::new();
    for o in owners.values() {
        *share.entry(o.clone()).or_insert(0u32) += 1;
    }
    eprintln!(
        "placement of {DEVICES} devices after {:.1} s: {share:?}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(share.len(), 3, "{share:?}");
    for (node, count) in &share {
        let pct = f64::from(*count) * 100.0 / f64::from(DEVICES);
        assert!(
            (20.0..=47.0).contains(&pct),
            "{node} owns {pct:.0} %: {share:?}"
        );
    }
    let redirected = nodes[0].metric("camgate_cluster_redirects_total{kind=\"register\"}");
    let not_node1 = f64::from(DEVICES - share["node-1"]);
    assert!(
        redirected >= not_node1,
        "node 1 redirected {redirected} REGISTERs, {not_node1} devices live elsewhere"
    );

    let prefix = format!("cg{}", std::process::id());
    assert_eq!(
        redis_cli(redis.port, &["SCARD", &format!("{prefix}:devices")]),
        DEVICES.to_string()
    );
    assert_eq!(
        redis_cli(redis.port, &["SCARD", &format!("{prefix}:nodes")]),
        "3"
    );

    // ---- events: node 2's alarms appear once on every node ----
    let alarms = |n: &Node, kind: &str| -> usize {
        let Some((200, body)) = http_get(n.ports.http, "/api/v1/events") else {
            return 0;
        };
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|e| match kind {
                "local" => e["type"] == "camera_alarm",
                _ => {
                    e["type"] == "cluster"
                        && e["node"] == "node-2"
                        && e["event"]["type"] == "camera_alarm"
                        && e["device_id"] == "foscam/door"
                }
            })
            .count()
    };
    let seen = wait_for(Duration::from_secs(20), || {
        (alarms(&nodes[1], "local") >= 3 && alarms(&nodes[2], "cluster") >= 3).then_some(())
    });
    assert!(
        seen.is_some(),
        "no alarms shared\n{}",
        all_logs(&nodes, &cameras, &redis)
    );
    let _ = foscam.child.kill();
    let _ = foscam.child.wait();
    std::thread::sleep(Duration::from_secs(3));
    let raised = alarms(&nodes[1], "local");
    assert_eq!(
        alarms(&nodes[0], "cluster"),
        raised,
        "node 1: each alarm once"
    );
    assert_eq!(
        alarms(&nodes[2], "cluster"),
        raised,
        "node 3: each alarm once"
    );
    assert_eq!(
        alarms(&nodes[1], "cluster"),
        0,
        "node 2 echoed its own alarms"
    );
    assert_eq!(alarms(&nodes[0], "local") + alarms(&nodes[2], "local"), 0);
    eprintln!("events: {raised} alarms of node 2 seen once on nodes 1 and 3");

    let on_node2: Vec<String> = owners
        .iter()
        .filter(|(_, o)| *o == "node-2")
        .map(|(d, _)| d.clone())
        .collect();
    let watched = on_node2[0].clone();
    let url3 = nodes[2].rtsp_url(&watched);

    // ---- two viewers at the same moment: one on node 1 (relay), one on
    // node 3 (redirect), both for node 2's device → one INVITE ----
    let invites = |n: &Node| n.metric("camgate_invites_total{outcome=\"ok\"}");
    assert_eq!(invites(&nodes[1]), 0.0);
    let url1 = nodes[0].rtsp_url(&watched);
    let viewers: Vec<_> = [url1.clone(), url3.clone()]
        .into_iter()
        .map(|u| std::thread::spawn(move || ffprobe_ok(&u)))
        .collect();
    for v in viewers {
        let codecs = v
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("ffprobe: {e}\n{}", all_logs(&nodes, &cameras, &redis)));
        assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");
    }
    assert_eq!(
        invites(&nodes[1]),
        1.0,
        "the owner sent more than one INVITE"
    );
    assert_eq!(invites(&nodes[0]) + invites(&nodes[2]), 0.0);
    assert_eq!(
        nodes[0].metric("camgate_cluster_redirects_total{kind=\"rtsp\"}"),
        0.0,
        "node 1 relays, it does not redirect"
    );
    assert!(nodes[0].metric("camgate_stream_starts_total") >= 1.0);
    if have("gst-launch-1.0") {
        let out = run_with_timeout(
            Command::new("gst-launch-1.0").args([
                "rtspsrc",
                &format!("location={url1}"),
                "protocols=tcp",
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "fakesink",
                "num-buffers=50",
            ]),
            Duration::from_secs(30),
        );
        assert!(
            gst_played(&out),
            "gst-launch rtspsrc on node 1 (relay): {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            all_logs(&nodes, &cameras, &redis)
        );
    }

    // ---- WHEP in headless Chromium: relayed on node 1, redirected (307)
    // on node 3; both decode node 2's camera ----
    if have("chromium") && have("chromedriver") {
        for (node, how) in [(&nodes[0], "relay"), (&nodes[2], "307")] {
            let browser = common::webdriver::Browser::start(
                free_ports(1),
                dir.path().join(format!("chromedriver-{}.log", node.id)),
            );
            browser.goto(&format!(
                "http://127.0.0.1:{}/#play=gb/{watched}/{}",
                node.ports.http,
                channel_of(&watched)
            ));
            let decoded = wait_for(Duration::from_secs(20), || {
                let v = browser.eval(
                    "const s = document.getElementById('stats').dataset; \
                     return Number(s.framesDecoded || 0);",
                );
                v.as_u64().filter(|&f| f >= 50)
            });
            assert!(
                decoded.is_some(),
                "Chromium on {} ({how}) decoded no video\n{}",
                node.id,
                all_logs(&nodes, &cameras, &redis)
            );
            browser.eval("window.camgate.stop(); return 0;");
        }
        assert!(nodes[2].metric("camgate_cluster_redirects_total{kind=\"whep\"}") >= 1.0);
    }

    // ---- viewers on any node: RTSP 302 to the owner ----
    let codecs = ffprobe_ok(&url3).unwrap_or_else(|e| {
        panic!(
            "ffprobe on node 3: {e}\n{}",
            all_logs(&nodes, &cameras, &redis)
        )
    });
    assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");
    assert!(nodes[2].metric("camgate_cluster_redirects_total{kind=\"rtsp\"}") >= 1.0);
    assert!(
        nodes[1].metric("camgate_stream_starts_total") >= 1.0,
        "the owner (node 2) did not serve the stream"
    );
    assert_eq!(
        nodes[2].metric("camgate_stream_starts_total"),
        0.0,
        "node 3 started a stream for a device it does not own"
    );
    if have("gst-launch-1.0") {
        let out = run_with_timeout(
            Command::new("gst-launch-1.0").args([
                "rtspsrc",
                &format!("location={url3}"),
                "protocols=tcp",
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "fakesink",
                "num-buffers=50",
            ]),
            Duration::from_secs(30),
        );
        assert!(
            gst_played(&out),
            "gst-launch rtspsrc on node 3: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            all_logs(&nodes, &cameras, &redis)
        );
    }

    // ---- WHEP on a non-owner: 307 to the owner's WHEP URL, body kept ----
    let path = format!("/whep/gb/{watched}/{}", channel_of(&watched));
    let reply = http_call(
        nodes[2].ports.http,
        "POST",
        &path,
        &[("Content-Type", "application/sdp")],
        b"v=0\r\n",
        Duration::from_secs(5),
    )
    .expect("WHEP POST on node 3");
    assert_eq!(reply.status, 307, "{}", reply.head);
    let location = format!("location: http://127.0.0.1:{}{path}", nodes[1].ports.http);
    assert!(reply.head.contains(&location), "{}", reply.head);

    // ---- PTZ through node 1's API for a device node 3 owns ----
    let on_node3 = owners
        .iter()
        .find(|(_, o)| *o == "node-3")
        .map(|(d, _)| d.clone())
        .unwrap();
    let controls_before = nodes[2].metric("camgate_gb_controls_total{outcome=\"ok\"}");
    // (The console above made per-device API calls through node 1 too.)
    let forwarded = |n: &Node| n.metric("camgate_cluster_forwarded_requests_total{outcome=\"ok\"}");
    let forwarded_before = forwarded(&nodes[0]);
    let reply = http_call(
        nodes[0].ports.http,
        "POST",
        &format!(
            "/api/v1/devices/{on_node3}/channels/{}/ptz",
            channel_of(&on_node3)
        ),
        &[("Content-Type", "application/json")],
        br#"{"action":"left","speed":64}"#,
        Duration::from_secs(20),
    )
    .expect("PTZ on node 1");
    assert_eq!(reply.status, 200, "{}\n{}", reply.head, reply.text());
    assert!(reply.text().contains("ptz_cmd"), "{}", reply.text());
    assert_eq!(forwarded(&nodes[0]), forwarded_before + 1.0);
    assert_eq!(
        nodes[2].metric("camgate_gb_controls_total{outcome=\"ok\"}"),
        controls_before + 1.0,
        "the owner (node 3) did not send the PTZ command to the device"
    );

    // ---- failover: SIGKILL node 2 while one of its devices streams ----
    let mut viewer = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            &url3,
            "-t",
            "120",
            "-f",
            "null",
            "-",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg viewer");
    let streaming = wait_for(Duration::from_secs(15), || {
        (nodes[1].metric("camgate_viewers") >= 1.0).then_some(())
    });
    assert!(streaming.is_some(), "the viewer never reached node 2");
    nodes[1].proc.child.kill().expect("SIGKILL node 2");
    let _ = nodes[1].proc.child.wait();
    let killed = Instant::now();
    let survivors = [&nodes[0], &nodes[2]];
    let bound = Duration::from_secs(KEEPALIVE_SECS * KEEPALIVE_MISSES + 10);
    let moved = wait_for(bound + Duration::from_secs(20), || {
        let lists: Vec<_> = survivors.iter().map(|n| n.owners()).collect();
        let all_home = on_node2.iter().all(|d| {
            lists.iter().all(|l| {
                l.get(d)
                    .is_some_and(|(o, online)| *online && (o == "node-1" || o == "node-3"))
            })
        });
        let registered: f64 = survivors
            .iter()
            .map(|n| n.metric("camgate_devices_registered"))
            .sum();
        (all_home && registered == f64::from(DEVICES)).then(|| killed.elapsed())
    });
    let _ = viewer.kill();
    let _ = viewer.wait();
    let Some(took) = moved else {
        panic!(
            "node 2's {} devices did not move within {:?}\n{}",
            on_node2.len(),
            bound + Duration::from_secs(20),
            all_logs(&nodes, &cameras, &redis)
        );
    };
    eprintln!(
        "failover: {} devices re-registered on nodes 1/3 {:.1} s after SIGKILL (bound {:?})",
        on_node2.len(),
        took.as_secs_f64(),
        bound
    );
    assert!(took <= bound, "failover took {took:?}, bound {bound:?}");

    // The viewer reconnects (to node 1 now): relayed from the new owner
    // or served by node 1 itself, it plays.
    let codecs =
        wait_for(Duration::from_secs(20), || ffprobe_ok(&url1).ok()).unwrap_or_else(|| {
            panic!(
                "no picture after failover\n{}",
                all_logs(&nodes, &cameras, &redis)
            )
        });
    assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");

    // ---- Redis SIGKILLed for 15 s: nodes keep serving what they own ----
    let survivors = [&nodes[0], &nodes[2]];
    let local: String = owners
        .iter()
        .find(|(_, o)| *o == "node-1")
        .map(|(d, _)| d.clone())
        .unwrap();
    let local_url = nodes[0].rtsp_url(&local);
    let watching = std::thread::spawn(move || ffmpeg_decode(&local_url, "tcp", ["-t", "20"]));
    std::thread::sleep(Duration::from_secs(2));
    let port = redis.port;
    drop(redis);
    let down = wait_for(Duration::from_secs(10), || {
        survivors
            .iter()
            .all(|n| n.metric("camgate_cluster_redis_up") == 0.0)
            .then_some(())
    });
    assert!(down.is_some(), "nodes did not notice Redis going away");
    for n in survivors {
        let ready = http_get(n.ports.http, "/readyz");
        assert_eq!(
            ready,
            Some((200, "degraded: redis\n".to_owned())),
            "{} /readyz while Redis is down",
            n.id
        );
    }
    std::thread::sleep(Duration::from_secs(13));
    for n in survivors {
        assert_eq!(
            http_get(n.ports.http, "/healthz"),
            Some((200, "ok\n".to_owned())),
            "{} stopped while Redis was down",
            n.id
        );
    }
    let redis = Redis::start_on(dir.path(), port, "redis-restarted.log");
    let back = Instant::now();
    // The data died with Redis (no persistence): each node re-publishes
    // its lease and its devices, and both lists, read back from Redis
    // (redis_up is set only after a whole sync), are whole again.
    let whole = wait_for(Duration::from_secs(20), || {
        let synced = survivors
            .iter()
            .all(|n| n.metric("camgate_cluster_redis_up") == 1.0);
        let in_redis = redis_cli(port, &["SCARD", &format!("{prefix}:devices")]);
        if !synced || in_redis != DEVICES.to_string() {
            return None;
        }
        let lists: Vec<_> = survivors.iter().map(|n| n.owners()).collect();
        let complete = lists.iter().all(|l| {
            l.len() == DEVICES as usize && l.values().all(|(o, online)| *online && o != "node-2")
        });
        (complete && lists[0] == lists[1]).then(|| back.elapsed())
    });
    let Some(took) = whole else {
        panic!(
            "shared view not whole after Redis returned\n{}",
            all_logs(&nodes, &cameras, &redis)
        );
    };
    eprintln!(
        "Redis back: shared view whole again after {:.1} s",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(10), "{took:?}");
    let out = watching.join().expect("viewer thread");
    let frames = ffmpeg_frames(&out);
    eprintln!("viewer on node 1 across the Redis outage: {frames} frames in 20 s");
    assert!(
        frames >= 20 * 20,
        "a local stream stalled while Redis was down: {frames} frames\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cameras.terminate(Duration::from_secs(5));
}
