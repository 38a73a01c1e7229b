//! The RTSP server against real clients on loopback: ffprobe, ffmpeg,
//! GStreamer and retina, plus a raw-socket client for the edge cases.
//!
//! Media comes from a test source that replays an H.264 clip (made by
//! ffmpeg at test time) into the hub at 25 fps, standing in for the
//! GB28181 pipeline.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use camgate::media::frame::{Chunks, Codec, Frame, StreamInfo, VideoParams};
use camgate::media::hub::Hub;
use camgate::rtsp::{RtspServerConfig, serve};
use camgate::streams::{
    SourceHandle, SourceProvider, StartError, StartFuture, StreamKey, Streams, StreamsConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const PATH: &str = "/gb/34020000001320000001/34020000001310000001";

/// One access unit of the clip: NAL units without start codes.
#[derive(Clone)]
struct AccessUnit {
    units: Vec<Bytes>,
    keyframe: bool,
}

struct Clip {
    aus: Vec<AccessUnit>,
    sps: Bytes,
    pps: Bytes,
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Split Annex B into NAL units (3- or 4-byte start codes).
fn nal_units(data: &Bytes) -> Vec<Bytes> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
        // Trailing zeros belong to the next 4-byte start code.
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            units.push(data.slice(s..end));
        }
    }
    units
}

/// Group NAL units into access units at each AUD (type 9), dropping the
/// AUDs; keyframes get the parameter sets if the encoder left them out.
fn access_units(data: Bytes) -> Clip {
    let mut aus: Vec<AccessUnit> = Vec::new();
    let (mut sps, mut pps) = (None, None);
    for unit in nal_units(&data) {
        match unit[0] & 0x1f {
            9 => {
                aus.push(AccessUnit {
                    units: Vec::new(),
                    keyframe: false,
                });
                continue;
            }
            7 => sps = sps.or(Some(unit.clone())),
            8 => pps = pps.or(Some(unit.clone())),
            5 => {
                if let Some(au) = aus.last_mut() {
                    au.keyframe = true;
                }
            }
            _ => {}
        }
        if let Some(au) = aus.last_mut() {
            au.units.push(unit);
        }
    }
    let (sps, pps) = (sps.expect("clip has an SPS"), pps.expect("clip has a PPS"));
    for au in aus.iter_mut().filter(|a| a.keyframe) {
        if !au.units.iter().any(|u| u[0] & 0x1f == 7) {
            au.units.insert(0, pps.clone());
            au.units.insert(0, sps.clone());
        }
    }
    aus.retain(|a| !a.units.is_empty());
    Clip { aus, sps, pps }
}

/// The test clip, encoded once per test binary; `None` without ffmpeg.
fn clip() -> Option<Arc<Clip>> {
    static CLIP: OnceLock<Option<Arc<Clip>>> = OnceLock::new();
    CLIP.get_or_init(|| {
        if !have("ffmpeg") {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("camgate-rtsp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let path = dir.join("clip.h264");
        let status = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=640x360:rate=25",
            ])
            .args([
                "-t",
                "4",
                "-c:v",
                "libx264",
                "-profile:v",
                "main",
                "-g",
                "25",
            ])
            .args(["-bsf:v", "h264_metadata=aud=insert", "-f", "h264"])
            .arg(&path)
            .status()
            .ok()?;
        assert!(status.success(), "ffmpeg failed to make the test clip");
        let data = Bytes::from(std::fs::read(&path).ok()?);
        let _ = std::fs::remove_dir_all(&dir);
        let clip = access_units(data);
        assert!(
            clip.aus.len() >= 100,
            "clip has {} access units",
            clip.aus.len()
        );
        Some(Arc::new(clip))
    })
    .clone()
}

macro_rules! require {
    ($($tool:literal),*) => {{
        $(
            if !have($tool) {
                println!("SKIPPED: {} not installed", $tool);
                return;
            }
        )*
        match clip() {
            Some(c) => c,
            None => {
                println!("SKIPPED: ffmpeg not installed");
                return;
            }
        }
    }};
}

/// Replays the clip in a loop at 25 fps, like a camera would.
struct ClipProvider {
    clip: Arc<Clip>,
    starts: AtomicU32,
}

impl SourceProvider for ClipProvider {
    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        Box::pin(async move {
            // Like the GB28181 provider: only known devices exist.
            if StreamKey::from_path(PATH).as_ref() != Some(key) {
                return Err(StartError::NotFound(key.to_string()));
            }
            self.starts.fetch_add(1, Ordering::SeqCst);
            let clip = self.clip.clone();
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            let task = tokio::spawn(async move {
                hub.set_info(StreamInfo {
                    video: Some((
                        Codec::H264,
                        VideoParams {
                            width: 640,
                            height: 360,
                            vps: None,
                            sps: Some(clip.sps.clone()),
                            pps: Some(clip.pps.clone()),
                        },
                    )),
                    audio: None,
                });
                let mut tick = tokio::time::interval(Duration::from_millis(40));
                let mut pts = 0i64;
                loop {
                    for au in &clip.aus {
                        tokio::select! {
                            _ = stop.cancelled() => return "stopped".to_owned(),
                            _ = tick.tick() => {}
                        }
                        hub.publish(Frame {
                            codec: Codec::H264,
                            pts,
                            dts: pts,
                            keyframe: au.keyframe,
                            units: au.units.iter().cloned().map(Chunks::from).collect(),
                        });
                        pts += 3600;
                    }
                }
            });
            Ok(SourceHandle { cancel, task })
        })
    }
}

struct Server {
    addr: SocketAddr,
    provider: Arc<ClipProvider>,
    streams: Streams,
    shutdown: CancellationToken,
}

impl Server {
    async fn start(clip: Arc<Clip>) -> Self {
        let provider = Arc::new(ClipProvider {
            clip,
            starts: AtomicU32::new(0),
        });
        let streams = Streams::new(StreamsConfig::default()).with_provider("gb", provider.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            streams.clone(),
            RtspServerConfig::default(),
            shutdown.clone(),
        ));
        Self {
            addr,
            provider,
            streams,
            shutdown,
        }
    }

    fn url(&self) -> String {
        format!("rtsp://{}{PATH}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Run a client to completion with a deadline; (exit ok, stdout, stderr).
async fn run(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .expect("client timed out")
        .expect("client runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Frames ffmpeg decoded from `url` in 2 s over `transport`.
async fn ffmpeg_frames(url: &str, transport: &str) -> u64 {
    let (ok, _, stderr) = run(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-rtsp_transport",
                transport,
                "-i",
                url,
            ])
            .args(["-t", "2", "-f", "null", "-"]),
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "ffmpeg over {transport} failed:\n{stderr}");
    stderr
        .rsplit("frame=")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in ffmpeg output:\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_sees_h264_640x360_over_tcp() {
    let clip = require!("ffprobe");
    let server = Server::start(clip).await;
    let (ok, stdout, stderr) = run(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-show_streams",
                "-of",
                "json",
            ])
            .arg(server.url()),
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "ffprobe failed:\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("ffprobe JSON");
    let stream = &json["streams"][0];
    assert_eq!(stream["codec_name"], "h264", "{stdout}");
    assert_eq!(stream["width"], 640);
    assert_eq!(stream["height"], 360);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_decodes_over_tcp() {
    let clip = require!("ffmpeg");
    let server = Server::start(clip).await;
    let frames = ffmpeg_frames(&server.url(), "tcp").await;
    assert!(frames >= 25, "decoded {frames} frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_decodes_over_udp() {
    let clip = require!("ffmpeg");
    let server = Server::start(clip).await;
    let frames = ffmpeg_frames(&server.url(), "udp").await;
    assert!(frames >= 25, "decoded {frames} frames");
}

async fn gstreamer(protocols: &str) {
    let clip = require!("gst-launch-1.0");
    let server = Server::start(clip).await;
    let (ok, stdout, stderr) = run(
        Command::new("gst-launch-1.0")
            .arg("-q")
            .arg("rtspsrc")
            .arg(format!("location={}", server.url()))
            .arg(format!("protocols={protocols}"))
            .args([
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "fakesink",
                "num-buffers=50",
            ]),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        ok,
        "gst-launch over {protocols} failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_plays_over_tcp() {
    gstreamer("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_plays_over_udp() {
    gstreamer("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_share_one_source_start() {
    let clip = require!("ffmpeg");
    let server = Server::start(clip).await;
    let url = server.url();
    let (a, b) = tokio::join!(ffmpeg_frames(&url, "tcp"), ffmpeg_frames(&url, "udp"));
    assert!(a >= 25 && b >= 25, "decoded {a} and {b} frames");
    assert_eq!(server.provider.starts.load(Ordering::SeqCst), 1);
}

/// retina negotiates DESCRIBE/SETUP/PLAY over TCP and reads the
/// parameters from our SDP with its own SPS parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retina_sets_up_and_plays_over_tcp() {
    use retina::client::{
        PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
    };
    use retina::codec::ParametersRef;
    let clip = require!();
    let server = Server::start(clip).await;
    let url = rtsp_types::Url::parse(&server.url()).unwrap();
    let mut session = retina::client::Session::describe(url, SessionOptions::default())
        .await
        .expect("DESCRIBE");
    let streams = session.streams();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].media(), "video");
    assert_eq!(streams[0].encoding_name(), "h264");
    match streams[0].parameters() {
        Some(ParametersRef::Video(v)) => assert_eq!(v.pixel_dimensions(), (640, 360)),
        other => panic!("no video parameters from the SDP: {other:?}"),
    }
    session
        .setup(
            0,
            SetupOptions::default().transport(Transport::Tcp(TcpTransportOptions::default())),
        )
        .await
        .expect("SETUP");
    let playing = session.play(PlayOptions::default()).await.expect("PLAY");
    drop(playing);
}

/// Minimal RTSP client on a raw socket, for what real clients never send.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
    }

    /// Next RTSP response (head and body), skipping interleaved packets;
    /// returns the number of interleaved packets skipped too.
    async fn response(&mut self) -> (String, usize) {
        let mut skipped = 0;
        loop {
            if self.buf.first() == Some(&b'$') && self.buf.len() >= 4 {
                let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() >= 4 + len {
                    self.buf.drain(..4 + len);
                    skipped += 1;
                    continue;
                }
            } else if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let body_len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + body_len {
                    let all: Vec<u8> = self.buf.drain(..end + 4 + body_len).collect();
                    return (String::from_utf8_lossy(&all).into_owned(), skipped);
                }
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("server answers")
                .unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn session_of(resp: &str) -> String {
    resp.lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .and_then(|s| s.split(';').next())
        .expect("Session header")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404() {
    let clip = require!();
    let server = Server::start(clip).await;
    let mut c = Raw::connect(server.addr).await;
    for (n, path) in ["/nope/1/2", "/gb", "/gb/1/2", "/"].iter().enumerate() {
        c.send(&format!(
            "DESCRIBE rtsp://{}{path} RTSP/1.0\r\nCSeq: {n}\r\n\r\n",
            server.addr
        ))
        .await;
        let (resp, _) = c.response().await;
        assert!(resp.starts_with("RTSP/1.0 404 "), "{path}: {resp}");
    }
    assert_eq!(server.provider.starts.load(Ordering::SeqCst), 0);
}

/// Pipelined requests, interleaved media between responses, and the viewer
/// leaving on TEARDOWN and on a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_session_lifecycle() {
    let clip = require!();
    let server = Server::start(clip).await;
    let url = server.url();
    let mut c = Raw::connect(server.addr).await;
    c.send(&format!(
        "OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\nDESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\n\r\n\
         SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=6-7\r\n\r\n"
    ))
    .await;
    let (options, _) = c.response().await;
    assert!(options.starts_with("RTSP/1.0 200 OK\r\n") && options.contains("CSeq: 1\r\n"));
    let (describe, _) = c.response().await;
    assert!(
        describe.contains("CSeq: 2\r\n") && describe.contains("m=video 0 RTP/AVP 96"),
        "{describe}"
    );
    let (setup, _) = c.response().await;
    assert!(
        setup.contains("CSeq: 3\r\n") && setup.contains("interleaved=6-7"),
        "{setup}"
    );
    let session = session_of(&setup);
    assert_eq!(server.streams.list()[0].viewers, 1);

    c.send(&format!(
        "PLAY {url} RTSP/1.0\r\nCSeq: 4\r\nSession: {session}\r\n\r\n"
    ))
    .await;
    let (play, _) = c.response().await;
    assert!(
        play.contains("RTP-Info: url=") && play.contains("Range: npt=0.000-"),
        "{play}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.send(&format!(
        "GET_PARAMETER {url} RTSP/1.0\r\nCSeq: 5\r\nSession: {session}\r\n\r\n"
    ))
    .await;
    let (keepalive, packets) = c.response().await;
    assert!(
        keepalive.starts_with("RTSP/1.0 200 OK") && keepalive.contains("CSeq: 5"),
        "{keepalive}"
    );
    assert!(
        packets > 10,
        "only {packets} RTP packets before the keepalive answer"
    );

    c.send(&format!(
        "TEARDOWN {url} RTSP/1.0\r\nCSeq: 6\r\nSession: {session}\r\n\r\n"
    ))
    .await;
    let (teardown, _) = c.response().await;
    assert!(teardown.contains("CSeq: 6"), "{teardown}");
    wait_viewers(&server, 0).await;

    // A second session on a new connection; dropping the socket is leaving.
    let mut d = Raw::connect(server.addr).await;
    d.send(&format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"))
        .await;
    d.response().await;
    wait_viewers(&server, 1).await;
    drop(d);
    wait_viewers(&server, 0).await;
    assert_eq!(server.provider.starts.load(Ordering::SeqCst), 1);
}

async fn wait_viewers(server: &Server, want: usize) {
    for _ in 0..100 {
        if server.streams.list().first().map_or(0, |s| s.viewers) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("viewers never became {want}: {:?}", server.streams.list());
}
