//! The RTSP server against real clients on loopback: ffprobe, ffmpeg,
//! GStreamer and retina, plus a raw-socket client for the edge cases.
//!
//! Media comes from a test source that replays an H.264 clip (made by
//! ffmpeg at test time) into the hub at 25 fps, standing in for the
//! GB28181 pipeline.

#[path = "common/gst.rs"]
#[allow(dead_code)]
mod gst;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use camgate::media::frame::{AudioParams, Chunks, Codec, Frame, StreamInfo, VideoParams};
use camgate::media::hub::Hub;
use camgate::rtsp::{RtspServerConfig, serve};
use camgate::streams::{
    ControlFuture, PlaybackCommand, PlaybackControl, SourceHandle, SourceProvider, StartError,
    StartFuture, StreamKey, Streams, StreamsConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const PATH: &str = "/gb/34020000001320000001/34020000001310000001";
/// The same video with AAC audio (16 kHz mono, 1024 samples a frame).
const AV_PATH: &str = "/gb/34020000001320000001/34020000001310000002";
/// A recording played back: trick play goes to [`FakeControl`].
const PLAYBACK_PATH: &str = "/gb/34020000001320000001/34020000001310000003";
const AAC_RATE: i64 = 16_000;

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
    /// ADTS AAC frames, when ffmpeg could make them.
    aac: Vec<Bytes>,
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
    Clip {
        aus,
        sps,
        pps,
        aac: Vec::new(),
    }
}

/// Split an ADTS stream into frames by the 13-bit frame length field.
fn adts_frames(data: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 7 <= data.len() && data[at] == 0xff && data[at + 1] & 0xf0 == 0xf0 {
        let len = (usize::from(data[at + 3] & 0x03) << 11)
            | (usize::from(data[at + 4]) << 3)
            | usize::from(data[at + 5] >> 5);
        if len < 7 || at + len > data.len() {
            break;
        }
        out.push(data.slice(at..at + len));
        at += len;
    }
    out
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
        let aac_path = dir.join("clip.aac");
        let aac_ok = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("sine=frequency=440:sample_rate={AAC_RATE}"))
            .args([
                "-t", "4", "-ac", "1", "-c:a", "aac", "-b:a", "32k", "-f", "adts",
            ])
            .arg(&aac_path)
            .status()
            .is_ok_and(|s| s.success());
        let aac = if aac_ok {
            adts_frames(&Bytes::from(std::fs::read(&aac_path).ok()?))
        } else {
            Vec::new()
        };
        let _ = std::fs::remove_dir_all(&dir);
        let mut clip = access_units(data);
        clip.aac = aac;
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

/// Trick-play commands a playback stream received.
#[derive(Default)]
struct FakeControl {
    commands: std::sync::Mutex<Vec<PlaybackCommand>>,
}

impl PlaybackControl for FakeControl {
    fn command(&self, command: PlaybackCommand) -> ControlFuture<'_> {
        self.commands.lock().unwrap().push(command);
        Box::pin(async { Ok(()) })
    }
}

/// Replays the clip in a loop at 25 fps, like a camera would.
struct ClipProvider {
    clip: Arc<Clip>,
    starts: AtomicU32,
    control: Arc<FakeControl>,
}

impl SourceProvider for ClipProvider {
    fn playback(&self, key: &StreamKey) -> Option<Arc<dyn PlaybackControl>> {
        (StreamKey::from_path(PLAYBACK_PATH).as_ref() == Some(key))
            .then(|| self.control.clone() as Arc<dyn PlaybackControl>)
    }

    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        Box::pin(async move {
            // Like the GB28181 provider: only known devices exist.
            let known = [PATH, AV_PATH, PLAYBACK_PATH]
                .iter()
                .any(|p| StreamKey::from_path(p).as_ref() == Some(key));
            if !known {
                return Err(StartError::NotFound(key.to_string()));
            }
            let with_audio = StreamKey::from_path(AV_PATH).as_ref() == Some(key);
            self.starts.fetch_add(1, Ordering::SeqCst);
            let clip = self.clip.clone();
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            let task = tokio::spawn(async move {
                hub.set_info(StreamInfo {
                    audio_decided_by: None,
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
                    audio: with_audio.then(|| {
                        (
                            Codec::Aac,
                            AudioParams {
                                sample_rate: AAC_RATE as u32,
                                channels: 1,
                                config: None,
                            },
                        )
                    }),
                });
                let mut tick = tokio::time::interval(Duration::from_millis(40));
                let mut pts = 0i64;
                let mut audio_pts = 0i64;
                let mut audio = clip.aac.iter().cycle();
                loop {
                    for au in &clip.aus {
                        tokio::select! {
                            _ = stop.cancelled() => return camgate::streams::SourceExit::Stopped,
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
                        // Audio up to the video's time, on its own clock.
                        while with_audio && audio_pts * 90_000 < pts * AAC_RATE {
                            let Some(frame) = audio.next() else { break };
                            hub.publish(Frame {
                                codec: Codec::Aac,
                                pts: audio_pts,
                                dts: audio_pts,
                                keyframe: true,
                                units: [Chunks::from(frame.clone())].into_iter().collect(),
                            });
                            audio_pts += 1024;
                        }
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
        Self::start_with(clip, RtspServerConfig::default()).await
    }

    async fn start_with(clip: Arc<Clip>, config: RtspServerConfig) -> Self {
        let provider = Arc::new(ClipProvider {
            clip,
            starts: AtomicU32::new(0),
            control: Arc::default(),
        });
        let streams = Streams::new(StreamsConfig::default()).with_provider("gb", provider.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, streams.clone(), config, shutdown.clone()));
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
        ok || gst::gst_pause_cancelled_at_shutdown(&stdout, &stderr),
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
    let mut demuxed = session
        .play(PlayOptions::default())
        .await
        .expect("PLAY")
        .demuxed()
        .expect("demuxer");
    let mut frames = 0;
    let mut keyframes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while frames < 30 {
        let item = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut demuxed))
            .await
            .expect("30 frames within 15 s")
            .expect("stream goes on")
            .expect("no demux error");
        if let retina::codec::CodecItem::VideoFrame(f) = item {
            assert_eq!(f.stream_id(), 0);
            assert!(!f.data().is_empty());
            frames += 1;
            keyframes += usize::from(f.is_random_access_point());
        }
    }
    assert!(keyframes >= 1, "the GOP cache starts at a keyframe");
    // Parameters as the demuxer saw them in-band, not only in the SDP.
    match demuxed.streams()[0].parameters() {
        Some(ParametersRef::Video(v)) => assert_eq!(v.pixel_dimensions(), (640, 360)),
        other => panic!("no video parameters after playing: {other:?}"),
    }
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

/// AAC frames ffmpeg copied out of the AV stream in 3 s over `transport`.
async fn ffmpeg_aac_frames(url: &str, transport: &str) -> usize {
    let (ok, stdout, stderr) = run_bytes(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error"])
            .args(["-rtsp_transport", transport, "-i", url])
            .args(["-t", "3", "-map", "0:a", "-c", "copy", "-f", "adts", "-"]),
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "ffmpeg over {transport} failed:\n{stderr}");
    adts_frames(&Bytes::from(stdout)).len()
}

async fn run_bytes(cmd: &mut Command, limit: Duration) -> (bool, Vec<u8>, String) {
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
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

macro_rules! require_aac {
    ($clip:expr) => {
        if $clip.aac.len() < 20 {
            println!("SKIPPED: ffmpeg cannot encode AAC here");
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_and_ffmpeg_get_h264_and_aac() {
    let clip = require!("ffprobe", "ffmpeg");
    require_aac!(clip);
    let server = Server::start(clip).await;
    let url = format!("rtsp://{}{AV_PATH}", server.addr);
    let (ok, stdout, stderr) = run(
        Command::new("ffprobe")
            .args(["-v", "error", "-rtsp_transport", "tcp"])
            .args(["-show_streams", "-of", "json"])
            .arg(&url),
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "ffprobe failed:\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("ffprobe JSON");
    let streams = json["streams"].as_array().expect("streams");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .unwrap_or_else(|| panic!("no audio stream: {stdout}"));
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "16000");
    assert_eq!(audio["channels"], 1);
    assert!(streams.iter().any(|s| s["codec_name"] == "h264"));

    // 3 s of 16 kHz audio is 46 frames of 1024 samples; the GOP cache may
    // add up to a second more.
    for transport in ["tcp", "udp"] {
        let n = ffmpeg_aac_frames(&url, transport).await;
        assert!((40..=80).contains(&n), "{n} AAC frames over {transport}");
    }
}

async fn gstreamer_av(protocols: &str) {
    let clip = require!("gst-launch-1.0");
    require_aac!(clip);
    let server = Server::start(clip).await;
    let (ok, stdout, stderr) = run(
        Command::new("gst-launch-1.0")
            .arg("-q")
            .args([
                "rtspsrc",
                &format!("location=rtsp://{}{AV_PATH}", server.addr),
            ])
            .args([&format!("protocols={protocols}"), "name=src"])
            .args(["src.", "!", "rtph264depay", "!", "h264parse", "!"])
            .args(["fakesink", "num-buffers=50"])
            .args(["src.", "!", "rtpmp4gdepay", "!", "aacparse", "!"])
            .args(["fakesink", "num-buffers=30"]),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        ok,
        "gst-launch over {protocols} failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_plays_h264_and_aac_over_tcp() {
    gstreamer_av("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_plays_h264_and_aac_over_udp() {
    gstreamer_av("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retina_receives_aac() {
    use retina::client::{PlayOptions, SessionOptions, SetupOptions};
    use retina::codec::{CodecItem, ParametersRef};
    let clip = require!();
    require_aac!(clip);
    let server = Server::start(clip).await;
    let url = rtsp_types::Url::parse(&format!("rtsp://{}{AV_PATH}", server.addr)).unwrap();
    let mut session = retina::client::Session::describe(url, SessionOptions::default())
        .await
        .expect("DESCRIBE");
    let audio = session
        .streams()
        .iter()
        .position(|s| s.media() == "audio")
        .expect("an audio stream");
    assert_eq!(session.streams()[audio].encoding_name(), "mpeg4-generic");
    assert_eq!(session.streams()[audio].clock_rate_hz(), 16_000);
    for i in 0..session.streams().len() {
        session
            .setup(i, SetupOptions::default())
            .await
            .expect("SETUP");
    }
    let mut demuxed = session
        .play(PlayOptions::default())
        .await
        .expect("PLAY")
        .demuxed()
        .expect("demuxer");
    match demuxed.streams()[audio].parameters() {
        Some(ParametersRef::Audio(a)) => assert_eq!(a.clock_rate(), 16_000),
        other => panic!("no audio parameters: {other:?}"),
    }
    let (mut audio_frames, mut video_frames) = (0, 0);
    while audio_frames < 20 || video_frames < 25 {
        let item = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut demuxed),
        )
        .await
        .expect("media keeps coming")
        .expect("stream goes on")
        .expect("no demux error");
        match item {
            CodecItem::AudioFrame(f) => {
                assert_eq!(f.stream_id(), audio);
                audio_frames += 1;
            }
            CodecItem::VideoFrame(_) => video_frames += 1,
            _ => {}
        }
    }
}

/// DESCRIBE, SETUP (interleaved 0-1) and PLAY, pipelined; returns the
/// session id once PLAY is answered.
async fn raw_play(c: &mut Raw, url: &str) -> String {
    c.send(&format!(
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n\
         SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    ))
    .await;
    let (describe, _) = c.response().await;
    assert!(describe.starts_with("RTSP/1.0 200 "), "{describe}");
    let (setup, _) = c.response().await;
    let session = session_of(&setup);
    c.send(&format!(
        "PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n"
    ))
    .await;
    let (play, _) = c.response().await;
    assert!(play.starts_with("RTSP/1.0 200 "), "{play}");
    session
}

/// Video frames (RTP packets with the marker bit on channel 0) a raw
/// client receives in `window`.
async fn count_frames(mut c: Raw, window: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + window;
    let mut frames = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while c.buf.len() >= 4 && c.buf[0] == b'$' {
            let len = usize::from(u16::from_be_bytes([c.buf[2], c.buf[3]]));
            if c.buf.len() < 4 + len {
                break;
            }
            if c.buf[1] == 0 && len >= 12 && c.buf[5] & 0x80 != 0 {
                frames += 1;
            }
            c.buf.drain(..4 + len);
        }
        assert!(
            c.buf.is_empty() || c.buf[0] == b'$',
            "unexpected bytes in the media stream"
        );
        match tokio::time::timeout_at(deadline, c.stream.read(&mut chunk)).await {
            Err(_) => return frames,
            Ok(Ok(0)) | Ok(Err(_)) => panic!("server closed a healthy viewer"),
            Ok(Ok(n)) => c.buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// 50 viewers of one stream over TCP; one never reads. The 49 others keep
/// the source's 25 fps, and the stalled one is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_viewer_hurts_no_one() {
    let clip = require!();
    let server = Server::start_with(
        clip,
        RtspServerConfig {
            // Bound what the kernel queues for a viewer so the stall shows
            // within seconds, not after megabytes of autotuned buffer.
            send_buffer: 32 * 1024,
            stall_timeout: Duration::from_secs(2),
            ..RtspServerConfig::default()
        },
    )
    .await;
    let url = server.url();
    let dropped = || {
        camgate::metrics::get()
            .rtsp_viewers_dropped
            .get_or_create(&[("reason", "stalled")])
            .get()
    };
    let dropped_before = dropped();

    // The stalled viewer: a tiny receive window, and it never reads media.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = Raw {
        stream: socket.connect(server.addr).await.unwrap(),
        buf: Vec::new(),
    };
    raw_play(&mut stalled, &url).await;

    let mut viewers = Vec::new();
    for _ in 0..49 {
        let mut c = Raw::connect(server.addr).await;
        raw_play(&mut c, &url).await;
        viewers.push(c);
    }
    let window = Duration::from_secs(5);
    let counts = futures::future::join_all(
        viewers
            .into_iter()
            .map(|c| tokio::spawn(count_frames(c, window))),
    )
    .await;
    let counts: Vec<u64> = counts.into_iter().map(|r| r.unwrap()).collect();
    let expected = 25 * window.as_secs();
    let min = *counts.iter().min().unwrap();
    println!("frames per healthy viewer in {window:?}: {counts:?}");
    assert!(
        min * 10 >= expected * 9,
        "slowest healthy viewer got {min} of {expected} frames: {counts:?}"
    );

    // Dropped within stall_timeout of its socket filling up.
    for _ in 0..100 {
        if dropped() > dropped_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped() > dropped_before, "stalled viewer not dropped");
    // Its connection is closed: reading drains what was queued, then EOF.
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "stalled viewer's connection still open");
    assert_eq!(server.provider.starts.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_limit_answers_453() {
    let clip = require!();
    let server = Server::start_with(
        clip,
        RtspServerConfig {
            max_viewers: 1,
            ..RtspServerConfig::default()
        },
    )
    .await;
    let url = server.url();
    let mut a = Raw::connect(server.addr).await;
    a.send(&format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"))
        .await;
    assert!(a.response().await.0.starts_with("RTSP/1.0 200 "));
    let mut b = Raw::connect(server.addr).await;
    b.send(&format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"))
        .await;
    let (refused, _) = b.response().await;
    assert!(
        refused.starts_with("RTSP/1.0 453 Not Enough Bandwidth"),
        "{refused}"
    );
    // The slot comes back when the first viewer leaves.
    drop(a);
    wait_viewers(&server, 0).await;
    b.send(&format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\n\r\n"))
        .await;
    assert!(b.response().await.0.starts_with("RTSP/1.0 200 "));
}

/// PLAY with Range and Scale, PAUSE and resume on a playback stream reach
/// its control; Scale on a live stream is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_control_and_live_scale() {
    let clip = require!();
    let server = Server::start(clip).await;
    let url = format!("rtsp://{}{PLAYBACK_PATH}", server.addr);
    let mut c = Raw::connect(server.addr).await;
    c.send(&format!(
        "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    ))
    .await;
    let session = session_of(&c.response().await.0);
    for (cseq, req) in [
        (
            2,
            format!(
                "PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\nRange: npt=10-\r\nScale: 2\r\n\r\n"
            ),
        ),
        (
            3,
            format!("PAUSE {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n"),
        ),
        (
            4,
            format!("PLAY {url} RTSP/1.0\r\nCSeq: 4\r\nSession: {session}\r\n\r\n"),
        ),
    ] {
        c.send(&req).await;
        let (resp, _) = c.response().await;
        assert!(
            resp.starts_with("RTSP/1.0 200 ") && resp.contains(&format!("CSeq: {cseq}\r\n")),
            "{resp}"
        );
    }
    assert_eq!(
        *server.provider.control.commands.lock().unwrap(),
        [
            PlaybackCommand::Seek(10.0),
            PlaybackCommand::Scale(2.0),
            PlaybackCommand::Pause,
            PlaybackCommand::Resume,
        ]
    );

    let mut live = Raw::connect(server.addr).await;
    let url = server.url();
    let session = raw_play(&mut live, &url).await;
    live.send(&format!(
        "PLAY {url} RTSP/1.0\r\nCSeq: 9\r\nSession: {session}\r\nScale: 2\r\n\r\n"
    ))
    .await;
    let (resp, _) = live.response().await;
    assert!(resp.starts_with("RTSP/1.0 456 "), "{resp}");
}
