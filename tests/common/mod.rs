//! Harness for tests that drive the real `camgate` binary over loopback.
#![allow(dead_code)]

pub mod capture_replay;
pub mod gst;
pub mod impair;
pub mod live_viewer;
pub mod marker_viewer;
pub mod openmetrics;
pub mod raw_rtsp;

#[allow(unused_imports)]
pub use gst::{gst_pause_cancelled_at_shutdown, gst_played};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const DEVICE: &str = "34020000001320000001";
pub const CHANNEL: &str = "34020000001310000001";

/// The 20-digit GB28181 id `i` places after `id`, as `sim-camera --count`
/// numbers its devices and channels.
pub fn nth_id(id: &str, i: u32) -> String {
    let v: u128 = id.parse().unwrap();
    format!("{:0>20}", v + u128::from(i))
}

/// Whether an external tool is on PATH; tests print SKIPPED without it.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: {tool} not installed (scripts/test installs it)");
    }
    found
}

/// The ports the kernel hands out to port-0 binds (Linux
/// `ip_local_port_range`).
fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut ports = text.split_whitespace().map(str::parse::<u16>);
            Some(ports.next()?.ok()?..=ports.next()?.ok()?)
        })
        .unwrap_or(32_768..=60_999)
}

/// Distinct port blocks per test in this process, spread by pid so
/// parallel test binaries do not collide, and kept out of the ephemeral
/// range: the gateway binds RTP ports and the shared RTP port only when a
/// stream starts, and in that range any process's client socket (a
/// simulated camera's, a viewer's) could take one after the check below.
fn port_block(size: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral = ephemeral_ports();
    // Below the ephemeral range from 10,000 when there is room, else above.
    let (first, span) = if *ephemeral.start() >= 20_000 {
        (10_000u32, u32::from(*ephemeral.start()) - 10_000)
    } else {
        let first = u32::from(*ephemeral.end()) + 1;
        (first, 65_536 - first)
    };
    let span = span.saturating_sub(u32::from(size)).max(1);
    let spread = std::process::id() % 100 * 200;
    loop {
        let n = u32::from(NEXT.fetch_add(size, Ordering::SeqCst));
        let start = (first + (spread + n) % span) as u16;
        let all_free = (start..start + size).all(|p| {
            UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if all_free {
            return start;
        }
    }
}

pub struct Ports {
    pub sip: u16,
    pub rtsp: u16,
    pub http: u16,
    /// Free for a test's own peer (e.g. sipp's local port).
    pub spare: u16,
    pub rtp_min: u16,
    pub rtp_max: u16,
    /// `media.shared_rtp_port` (RTCP on the next port).
    pub shared_rtp: u16,
}

impl Ports {
    pub fn new() -> Self {
        let b = port_block(26);
        Self {
            sip: b,
            rtsp: b + 1,
            http: b + 2,
            spare: b + 3,
            rtp_min: b + 4,
            rtp_max: b + 23,
            shared_rtp: b + 24,
        }
    }
}

pub struct Options {
    pub idle_timeout: f64,
    pub invite_timeout: f64,
    pub password: &'static str,
    /// Appended to the generated YAML (e.g. a `gb:` section).
    pub extra_yaml: String,
    /// YAML lines added to the `rtsp:` section (indented two spaces).
    pub rtsp_extra: String,
    /// YAML lines added to the `http:` section (indented two spaces).
    pub http_extra: String,
    /// `media.transport`.
    pub transport: &'static str,
    /// `media.ssrc_policy`.
    pub ssrc_policy: &'static str,
    /// `media.rtp_timeout`, seconds.
    pub rtp_timeout: f64,
    /// `sip.keepalive_timeout`, seconds.
    pub keepalive_timeout: f64,
    /// YAML lines added to the `streams:` section (indented two spaces).
    pub streams_extra: String,
    /// YAML lines added to the `media:` section (indented two spaces).
    pub media_extra: String,
    /// YAML lines added to the `sip:` section (indented two spaces).
    pub sip_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            idle_timeout: 1.0,
            invite_timeout: 2.0,
            password: "12345678",
            extra_yaml: String::new(),
            rtsp_extra: String::new(),
            http_extra: String::new(),
            transport: "udp",
            ssrc_policy: "learn",
            rtp_timeout: 5.0,
            // The gateway's default: the simulated camera's keepalives
            // come every 60 s, and an offline device ends its streams.
            keepalive_timeout: 180.0,
            streams_extra: String::new(),
            media_extra: String::new(),
            sip_extra: String::new(),
        }
    }
}

pub fn write_config(dir: &std::path::Path, ports: &Ports, opts: &Options) -> PathBuf {
    let yaml = format!(
        r#"sip:
  listen: "127.0.0.1:{sip}"
  password: "{password}"
  invite_timeout: {invite}
  keepalive_timeout: {keepalive}
{sip_extra}
media:
  rtp_bind: "127.0.0.1"
  rtp_port_min: {rtp_min}
  rtp_port_max: {rtp_max}
  rtp_timeout: {rtp_timeout}
  transport: {transport}
  shared_rtp_port: {shared}
  ssrc_policy: {ssrc_policy}
{media_extra}
streams:
  idle_timeout: {idle}
{streams_extra}
rtsp:
  listen: "127.0.0.1:{rtsp}"
{rtsp_extra}
http:
  listen: "127.0.0.1:{http}"
{http_extra}
webrtc:
  udp_port: 0
  ips: ["127.0.0.1"]
"#,
        sip = ports.sip,
        password = opts.password,
        invite = opts.invite_timeout,
        rtp_min = ports.rtp_min,
        rtp_max = ports.rtp_max,
        idle = opts.idle_timeout,
        rtsp = ports.rtsp,
        http = ports.http,
        rtsp_extra = opts.rtsp_extra,
        http_extra = opts.http_extra,
        transport = opts.transport,
        shared = ports.shared_rtp,
        ssrc_policy = opts.ssrc_policy,
        rtp_timeout = opts.rtp_timeout,
        keepalive = opts.keepalive_timeout,
        streams_extra = opts.streams_extra,
        media_extra = opts.media_extra,
        sip_extra = opts.sip_extra,
    );
    let yaml = yaml + &opts.extra_yaml;
    let path = dir.join("camgate.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// A child process killed on drop, its stderr kept in a file for failures.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[&str], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_camgate"))
            .args(args)
            .env("RUST_LOG", "info,camgate=debug,rsipstack=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn camgate");
        Self { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Gateway and one simulated camera, as separate processes.
pub struct Rig {
    pub dir: tempdir::Dir,
    pub ports: Ports,
    pub config: PathBuf,
    pub gateway: Proc,
    pub cameras: Vec<Proc>,
}

impl Rig {
    pub fn start(opts: Options) -> Self {
        let dir = tempdir::Dir::new();
        let ports = Ports::new();
        let config = write_config(dir.path(), &ports, &opts);
        let gateway = Proc::spawn(
            &["--config", config.to_str().unwrap()],
            dir.path().join("gateway.log"),
        );
        let rig = Self {
            dir,
            ports,
            config,
            gateway,
            cameras: Vec::new(),
        };
        rig.wait_http();
        rig
    }

    /// Start a simulated camera; `extra` are sim-camera flags.
    pub fn add_camera(&mut self, device: &str, channel: &str, extra: &[&str]) {
        let mut args = vec![
            "sim-camera",
            "--config",
            self.config.to_str().unwrap(),
            "--device-id",
            device,
            "--channel-id",
            channel,
        ];
        args.extend_from_slice(extra);
        let log = self.dir.path().join(format!("camera-{device}.log"));
        self.cameras.push(Proc::spawn(&args, log));
    }

    pub fn wait_http(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(self.ports.http, "/healthz").is_some_and(|(s, _)| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("gateway did not come up:\n{}", self.gateway.log_text());
    }

    /// Wait until `device` is online and lists `channel`.
    pub fn wait_channel(&self, device: &str, channel: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some((200, body)) = http_get(
                self.ports.http,
                &format!("/api/v1/devices/{device}/channels"),
            ) && body.contains(channel)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "device {device} never listed channel {channel}\n--- gateway\n{}\n--- cameras\n{}",
            self.gateway.log_text(),
            self.cameras
                .iter()
                .map(Proc::log_text)
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
    }

    /// The `count` cameras of one `sim-camera --count` run from
    /// [`DEVICE`]/[`CHANNEL`] (ids counted up in decimal), once each is
    /// online and lists its channel.
    pub fn wait_cameras(&self, count: u32) -> Vec<(String, String)> {
        let cameras: Vec<(String, String)> = (0..count)
            .map(|i| (nth_id(DEVICE, i), nth_id(CHANNEL, i)))
            .collect();
        for (device, channel) in &cameras {
            self.wait_channel(device, channel);
        }
        cameras
    }

    pub fn url(&self, device: &str, channel: &str) -> String {
        format!("rtsp://127.0.0.1:{}/gb/{device}/{channel}", self.ports.rtsp)
    }

    pub fn metrics(&self) -> String {
        http_get(self.ports.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Value of a metric sample line starting with `prefix` (name and labels).
    pub fn metric(&self, prefix: &str) -> f64 {
        metric_value(&self.metrics(), prefix)
    }

    pub fn logs(&self) -> String {
        format!(
            "--- gateway\n{}\n--- cameras\n{}",
            self.gateway.log_text(),
            self.cameras
                .iter()
                .map(Proc::log_text)
                .collect::<Vec<_>>()
                .join("\n---\n")
        )
    }
}

impl Rig {
    /// A simulated Foscam camera on `ports.spare` (started first, so the
    /// gateway's first login finds it) and a gateway configured with it as
    /// `foscam/{name}`. `sim_args` are sim-foscam flags; `camera_yaml` is
    /// extra keys of the camera entry (e.g. `password: x`).
    pub fn start_foscam(
        mut opts: Options,
        name: &str,
        sim_args: &[&str],
        camera_yaml: &str,
    ) -> Self {
        let dir = tempdir::Dir::new();
        let ports = Ports::new();
        let sim = spawn_sim_foscam(dir.path(), ports.spare, sim_args);
        wait_tcp(ports.spare);
        opts.extra_yaml.push_str(&format!(
            "foscam:\n  - {{ name: {name}, host: \"127.0.0.1\", port: {port}{sep}{camera_yaml} }}\n",
            port = ports.spare,
            sep = if camera_yaml.is_empty() { "" } else { ", " },
        ));
        let config = write_config(dir.path(), &ports, &opts);
        let gateway = Proc::spawn(
            &["--config", config.to_str().unwrap()],
            dir.path().join("gateway.log"),
        );
        let rig = Self {
            dir,
            ports,
            config,
            gateway,
            cameras: vec![sim],
        };
        rig.wait_http();
        rig
    }

    /// Kill the simulated Foscam camera (it vanishes from the network).
    pub fn kill_foscam(&mut self) {
        if let Some(sim) = self.cameras.first_mut() {
            let _ = sim.child.kill();
            let _ = sim.child.wait();
        }
    }

    /// Start it again on the same port with `sim_args`.
    pub fn restart_foscam(&mut self, sim_args: &[&str]) {
        let sim = spawn_sim_foscam(self.dir.path(), self.ports.spare, sim_args);
        wait_tcp(self.ports.spare);
        if self.cameras.is_empty() {
            self.cameras.push(sim);
        } else {
            self.cameras[0] = sim;
        }
    }

    pub fn foscam_url(&self, name: &str) -> String {
        format!("rtsp://127.0.0.1:{}/foscam/{name}", self.ports.rtsp)
    }

    /// Wait until the API shows the camera in `state` (e.g. "online").
    pub fn wait_foscam_state(&self, name: &str, state: &str) -> String {
        let want = format!("\"state\":\"{state}\"");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some((200, body)) = http_get(self.ports.http, &format!("/api/v1/foscam/{name}"))
            {
                if body.contains(&want) {
                    return body;
                }
                last = body;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "camera {name} never became {state}: {last}\n{}",
            self.logs()
        );
    }
}

fn spawn_sim_foscam(dir: &std::path::Path, port: u16, sim_args: &[&str]) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["sim-foscam", "--listen", listen.as_str()];
    args.extend_from_slice(sim_args);
    static N: AtomicU16 = AtomicU16::new(0);
    let log = dir.join(format!("foscam-{}.log", N.fetch_add(1, Ordering::SeqCst)));
    Proc::spawn(&args, log)
}

/// Wait until something accepts TCP on `port`.
pub fn wait_tcp(port: u16) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on {port}");
}

pub fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Poll `f` every 100 ms until it returns `Some`, up to `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run a command with a time limit; kill it past the limit.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    child.wait_with_output().expect("tool output")
}

/// ffprobe's `-show_streams` JSON for `url`, read over RTSP `transport`.
pub fn ffprobe_json(url: &str, transport: &str) -> serde_json::Value {
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-show_streams",
            "-of",
            "json",
            url,
        ]),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// The `codec_name` of each stream in ffprobe's JSON, in order.
pub fn ffprobe_codecs(probe: &serde_json::Value) -> Vec<&str> {
    probe["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["codec_name"].as_str())
        .collect()
}

/// ffmpeg decoding `url` (RTSP over `transport`) to nothing until `limit`
/// (`["-t", "2"]`, `["-frames:v", "25"]`), with `-progress` on stdout for
/// [`ffmpeg_frames`].
pub fn ffmpeg_decode(url: &str, transport: &str, limit: [&str; 2]) -> Output {
    run_with_timeout(
        Command::new("ffmpeg").args([
            "-nostdin",
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-i",
            url,
            limit[0],
            limit[1],
            "-f",
            "null",
            "-progress",
            "pipe:1",
            "-",
        ]),
        Duration::from_secs(30),
    )
}

/// Frames ffmpeg decoded, from its `-progress` output.
pub fn ffmpeg_frames(out: &Output) -> u64 {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|v| v.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

pub mod webdriver;

pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A temporary directory removed on drop (kept when the test failed,
    /// for its logs).
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "camgate-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).expect("temp dir");
            Self(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

/// `text` without ANSI colour escapes (the processes log in colour), so
/// tests can look for `field=value`.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
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

/// Send `signal` (e.g. "HUP", "STOP") to a process.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Poll `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Register `device` with sipp's digest (`tests/sipp/register.xml`) over
/// UDP and expect `expect` as the final answer; sipp exits 0 only if it came.
pub fn sipp_register_device(
    rig: &Rig,
    device: &str,
    password: &str,
    expect: u16,
) -> std::process::Output {
    sipp_register(rig, "u1", device, password, expect)
}

/// The same over sipp transport `transport` (`u1` UDP, `t1` TCP).
pub fn sipp_register(
    rig: &Rig,
    transport: &str,
    device: &str,
    password: &str,
    expect: u16,
) -> std::process::Output {
    let scenario =
        include_str!("../sipp/register.xml").replace("FINAL_STATUS", &expect.to_string());
    let name = format!("register-{transport}-{device}-{expect}.xml");
    sipp_register_scenario(rig, &scenario, &name, transport, device, password)
}

/// Run one REGISTER `scenario` (sipp XML, saved as `name` in the rig's
/// folder) as `device` with `password` over sipp transport `transport`.
pub fn sipp_register_scenario(
    rig: &Rig,
    scenario: &str,
    name: &str,
    transport: &str,
    device: &str,
    password: &str,
) -> std::process::Output {
    let path = rig.dir.path().join(name);
    std::fs::write(&path, scenario).expect("write sipp scenario");
    let scenario = path;
    let port = rig.ports.spare.to_string();
    let server = format!("127.0.0.1:{}", rig.ports.sip);
    run_with_timeout(
        Command::new("sipp").args([
            "-sf",
            scenario.to_str().unwrap(),
            "-key",
            "device",
            device,
            "-key",
            "server",
            "34020000002000000001",
            "-key",
            "domain",
            "3402000000",
            "-au",
            device,
            "-ap",
            password,
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-m",
            "1",
            "-t",
            transport,
            "-timeout",
            "10s",
            "-timeout_error",
            "-nostdin",
            &server,
        ]),
        Duration::from_secs(20),
    )
}

/// A block of `size` free loopback ports (TCP and UDP) for a test's extra
/// peers.
pub fn free_ports(size: u16) -> u16 {
    port_block(size)
}

impl Rig {
    /// Start the gateway with `extra_yaml` appended to the generated config.
    pub fn start_with_yaml(mut opts: Options, extra_yaml: &str) -> Self {
        opts.extra_yaml.push_str(extra_yaml);
        Self::start(opts)
    }

    /// Start another `camgate` subcommand (e.g. `sim-ctel`) as a camera
    /// process; `--config` of this rig is appended.
    pub fn add_process(&mut self, name: &str, args: &[&str]) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--config", self.config.to_str().unwrap()]);
        let log = self.dir.path().join(format!("{name}.log"));
        self.cameras.push(Proc::spawn(&all, log));
    }
}

/// A reply to [`http_call`]: status, header block with lower-cased names,
/// raw body.
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh loopback connection. The body is read by
/// Content-Length when there is one (some servers, chromedriver among them,
/// keep the socket open despite `Connection: close`), else to EOF.
pub fn http_call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Option<HttpReply> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| raw.len() - split - 4 >= n) {
                break;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(HttpReply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    })
}

/// GET; status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = http_call(port, "GET", path, &[], b"", Duration::from_secs(5))?;
    Some((r.status, r.text()))
}

/// GET of a binary body; status, header block, body.
pub fn http_get_bytes(port: u16, path: &str) -> Option<(u16, String, Vec<u8>)> {
    let r = http_call(port, "GET", path, &[], b"", Duration::from_secs(15))?;
    Some((r.status, r.head, r.body))
}

/// A request with a JSON body; status and body.
pub fn http_send(port: u16, method: &str, path: &str, json: &str) -> Option<(u16, String)> {
    http_request(port, method, path, "application/json", json)
}

/// POST of a JSON body; status and body.
pub fn http_post(port: u16, path: &str, json: &str) -> Option<(u16, String)> {
    http_send(port, "POST", path, json)
}

/// POST of a body of any type; status and body.
pub fn http_post_body(
    port: u16,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    let headers = [("Content-Type", content_type)];
    let r = http_call(port, "POST", path, &headers, body, Duration::from_secs(30))?;
    Some((r.status, r.text()))
}

/// POST of a binary body; status and body.
pub fn http_post_bytes(
    port: u16,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    http_post_body(port, path, content_type, body)
}

/// A request with a typed text body; status and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Option<(u16, String)> {
    let headers = [("Content-Type", content_type)];
    let r = http_call(
        port,
        method,
        path,
        &headers,
        body.as_bytes(),
        Duration::from_secs(20),
    )?;
    Some((r.status, r.text()))
}

/// A request with extra headers; status, header block, body.
pub fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String, String)> {
    let r = http_call(
        port,
        method,
        path,
        headers,
        body.as_bytes(),
        Duration::from_secs(15),
    )?;
    let text = r.text();
    Some((r.status, r.head, text))
}

/// Run a tool with a time limit, draining its output as it comes (verbose
/// GStreamer fills a pipe long before it exits).
pub fn run_draining(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                break child.wait().expect("wait for tool");
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
