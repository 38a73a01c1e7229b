//! A simulated Foscam MJPEG camera speaking the MO_O / MO_V protocol over
//! real TCP, for `--demo` and the tests.
//!
//! Like the real thing it takes both connections on one port and tells
//! them apart by their magic; the operation connection must Login and
//! Verify before anything else, start requests hand out the data-connection
//! id the media connection must log in with (a wrong id is closed), and
//! both sides send Keep_Alive every minute. Video is the JPEGs of
//! `assets/demo.mjpeg` at 10 fps (or `fps`); audio is a 1 kHz tone as IMA ADPCM;
//! alarms come on a timer; talk data is decoded and summarised in the log.
//! Refusals (too many connections, wrong user or password) are
//! configurable so the gateway's handling of them can be tested.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::foscam::adpcm::AdpcmState;
use crate::foscam::proto::{
    self, AlarmKind, CameraIdent, Channel, FrameDecoder, MediaMessage, OpMessage,
};

/// `assets/demo.mjpeg`; see `assets/README.md`.
pub static DEMO_MJPEG: &[u8] = include_bytes!("../../assets/demo.mjpeg");
pub const DEMO_FPS: u64 = 10;
pub const CAMERA_ID: &str = "SIMFOSCAM0001";
const FIRMWARE: [u8; 4] = [11, 37, 2, 49];
/// Audio packet period: 320 samples at 8 kHz.
const AUDIO_PERIOD: Duration = Duration::from_millis(40);
const TONE_HZ: f64 = 1000.0;
const TONE_AMPLITUDE: f64 = 8000.0;

#[derive(Debug, Clone)]
pub struct SimFoscamConfig {
    pub listen: SocketAddr,
    pub user: String,
    pub password: String,
    /// Answer every Login_Req with "too many connections".
    pub refuse_too_many: bool,
    /// Offer audio (otherwise Audio_Start_Resp says "not supported").
    pub audio: bool,
    /// Send a motion alarm (and its stop half a period later, at most a
    /// second) this often.
    pub alarm_every: Option<Duration>,
    pub keepalive: Duration,
    /// Video frames per second (the clip loops).
    pub fps: u64,
}

impl Default for SimFoscamConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            user: "admin".into(),
            password: String::new(),
            refuse_too_many: false,
            audio: true,
            alarm_every: None,
            keepalive: crate::foscam::client::KEEPALIVE_INTERVAL,
            fps: DEMO_FPS,
        }
    }
}

/// The JPEGs of a concatenated MJPEG file, split where EOI meets SOI.
pub fn split_jpegs(stream: &'static [u8]) -> Vec<Bytes> {
    let whole = Bytes::from_static(stream);
    let mut frames = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 4 <= stream.len() {
        if stream[i..i + 4] == [0xff, 0xd9, 0xff, 0xd8] {
            frames.push(whole.slice(start..i + 2));
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if start < stream.len() {
        frames.push(whole.slice(start..));
    }
    frames
}

/// What one logged-in operation connection has asked for.
#[derive(Debug, Default)]
struct Session {
    video: bool,
    audio: bool,
    talk: bool,
    talk_pcm: Vec<i16>,
}

type Sessions = Arc<Mutex<HashMap<u32, Session>>>;

fn lock(s: &Sessions) -> std::sync::MutexGuard<'_, HashMap<u32, Session>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bind and serve until `cancel`.
pub async fn run(config: SimFoscamConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    serve(listener, config, cancel).await
}

/// Serve on an already bound listener until `cancel`.
pub async fn serve(
    listener: TcpListener,
    config: SimFoscamConfig,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    info!(addr = %listener.local_addr()?, "simulated Foscam camera listening");
    let config = Arc::new(config);
    let sessions: Sessions = Arc::default();
    let jpegs: Arc<[Bytes]> = split_jpegs(DEMO_MJPEG).into();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = listener.accept() => r?,
        };
        let _ = stream.set_nodelay(true);
        let (config, sessions, jpegs, cancel) = (
            config.clone(),
            sessions.clone(),
            jpegs.clone(),
            cancel.clone(),
        );
        let span = info_span!("sim_foscam", %peer);
        tokio::spawn(
            async move {
                let result = tokio::select! {
                    _ = cancel.cancelled() => Ok(()),
                    r = connection(stream, &config, &sessions, &jpegs) => r,
                };
                if let Err(e) = result {
                    debug!("connection ended: {e}");
                }
            }
            .instrument(span),
        );
    }
}

async fn connection(
    mut stream: TcpStream,
    config: &SimFoscamConfig,
    sessions: &Sessions,
    jpegs: &[Bytes],
) -> Result<(), String> {
    let mut buf = BytesMut::with_capacity(4096);
    while buf.len() < 4 {
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
    }
    if buf.starts_with(Channel::Operation.magic()) {
        operation(stream, buf, config, sessions).await
    } else if buf.starts_with(Channel::Media.magic()) {
        media(stream, buf, sessions, jpegs, config.fps).await
    } else {
        Err("neither MO_O nor MO_V".into())
    }
}

async fn send(stream: &mut TcpStream, out: &BytesMut) -> Result<(), String> {
    stream.write_all(out).await.map_err(|e| e.to_string())
}

async fn send_op(stream: &mut TcpStream, msg: OpMessage) -> Result<(), String> {
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    send(stream, &out).await
}

/// Read until one whole frame is available.
async fn next_frame(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
) -> Result<proto::RawFrame, String> {
    loop {
        while let Some(r) = decoder.decode(buf) {
            match r {
                Ok(frame) => return Ok(frame),
                Err(e) => warn!("bad frame from client: {e}"),
            }
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("client closed".into());
        }
    }
}

async fn operation(
    mut stream: TcpStream,
    mut buf: BytesMut,
    config: &SimFoscamConfig,
    sessions: &Sessions,
) -> Result<(), String> {
    let mut decoder = FrameDecoder::new(Channel::Operation);
    let mut verified = false;
    let mut id: Option<u32> = None;
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + config.keepalive,
        config.keepalive,
    );
    let alarm_period = config.alarm_every.unwrap_or(Duration::from_secs(3600));
    let mut alarms =
        tokio::time::interval_at(tokio::time::Instant::now() + alarm_period, alarm_period);
    let mut alarm_stop: Option<tokio::time::Instant> = None;
    let result = loop {
        let frame = tokio::select! {
            r = next_frame(&mut stream, &mut buf, &mut decoder) => match r {
                Ok(f) => f,
                Err(e) => break Err(e),
            },
            _ = keepalive.tick() => {
                if let Err(e) = send_op(&mut stream, OpMessage::KeepAlive).await { break Err(e) }
                continue;
            }
            _ = alarms.tick(), if verified && config.alarm_every.is_some() => {
                info!("sending motion alarm");
                let msg = OpMessage::AlarmNotify { kind: AlarmKind::Motion, area: [0, 0, 320, 180] };
                if let Err(e) = send_op(&mut stream, msg).await { break Err(e) }
                alarm_stop = Some(tokio::time::Instant::now() + (alarm_period / 2).min(Duration::from_secs(1)));
                continue;
            }
            _ = sleep_opt(alarm_stop) => {
                alarm_stop = None;
                let msg = OpMessage::AlarmNotify { kind: AlarmKind::Stop, area: [0; 4] };
                if let Err(e) = send_op(&mut stream, msg).await { break Err(e) }
                continue;
            }
        };
        let msg = match OpMessage::parse(&frame) {
            Ok(m) => m,
            Err(e) => {
                warn!("bad message: {e}");
                continue;
            }
        };
        let reply = match (msg, verified) {
            (OpMessage::LoginReq, _) if config.refuse_too_many => {
                info!("refusing login: too many connections");
                let _ = send_op(
                    &mut stream,
                    OpMessage::LoginResp {
                        result: proto::LOGIN_TOO_MANY,
                        ident: None,
                    },
                )
                .await;
                break Ok(());
            }
            (OpMessage::LoginReq, _) => OpMessage::LoginResp {
                result: proto::LOGIN_OK,
                ident: Some(CameraIdent {
                    camera_id: CAMERA_ID.into(),
                    firmware: FIRMWARE,
                }),
            },
            (OpMessage::VerifyReq { user, password }, _) => {
                let result = if user != config.user {
                    proto::VERIFY_WRONG_USER
                } else if password != config.password {
                    proto::VERIFY_WRONG_PASSWORD
                } else {
                    proto::VERIFY_OK
                };
                info!(%user, result, "verify");
                if result != proto::VERIFY_OK {
                    let _ = send_op(&mut stream, OpMessage::VerifyResp { result }).await;
                    break Ok(());
                }
                verified = true;
                OpMessage::VerifyResp { result }
            }
            (OpMessage::KeepAlive, _) => continue,
            (other, false) => {
                info!(opcode = other.opcode(), "request before Verify: closing");
                break Ok(());
            }
            (OpMessage::VideoStartReq { .. }, true) => {
                let id = session_id(&mut id, sessions);
                update(sessions, id, |s| s.video = true);
                info!(id, "video start");
                OpMessage::VideoStartResp {
                    result: proto::START_OK,
                    connection_id: Some(id),
                }
            }
            (OpMessage::AudioStartReq { .. }, true) => {
                if config.audio {
                    let id = session_id(&mut id, sessions);
                    update(sessions, id, |s| s.audio = true);
                    OpMessage::AudioStartResp {
                        result: proto::START_OK,
                        connection_id: Some(id),
                    }
                } else {
                    OpMessage::AudioStartResp {
                        result: proto::START_UNSUPPORTED,
                        connection_id: None,
                    }
                }
            }
            (OpMessage::TalkStartReq { .. }, true) => {
                let id = session_id(&mut id, sessions);
                update(sessions, id, |s| {
                    s.talk = true;
                    s.talk_pcm.clear();
                });
                OpMessage::TalkStartResp {
                    result: proto::START_OK,
                    connection_id: Some(id),
                }
            }
            (OpMessage::VideoEnd, true) => {
                info!("video end");
                if let Some(id) = id {
                    update(sessions, id, |s| s.video = false);
                }
                continue;
            }
            (OpMessage::AudioEnd, true) => {
                if let Some(id) = id {
                    update(sessions, id, |s| s.audio = false);
                }
                continue;
            }
            (OpMessage::TalkEnd, true) => {
                if let Some(id) = id {
                    // Give the media connection a moment to drain.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let pcm = lock(sessions)
                        .get_mut(&id)
                        .map(|s| {
                            s.talk = false;
                            std::mem::take(&mut s.talk_pcm)
                        })
                        .unwrap_or_default();
                    info!(
                        samples = pcm.len(),
                        peak_hz = peak_frequency(&pcm),
                        "talk received"
                    );
                }
                continue;
            }
            (OpMessage::DecoderControl { command }, true) => {
                info!(code = command, "ptz decoder_control");
                continue;
            }
            (other, true) => {
                debug!(opcode = other.opcode(), "ignored");
                continue;
            }
        };
        if let Err(e) = send_op(&mut stream, reply).await {
            break Err(e);
        }
    };
    if let Some(id) = id {
        lock(sessions).remove(&id);
    }
    result
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn session_id(id: &mut Option<u32>, sessions: &Sessions) -> u32 {
    *id.get_or_insert_with(|| {
        let mut table = lock(sessions);
        loop {
            let candidate: u32 = rand::random();
            if candidate != 0 && !table.contains_key(&candidate) {
                table.insert(candidate, Session::default());
                return candidate;
            }
        }
    })
}

fn update(sessions: &Sessions, id: u32, f: impl FnOnce(&mut Session)) {
    if let Some(s) = lock(sessions).get_mut(&id) {
        f(s);
    }
}

async fn media(
    mut stream: TcpStream,
    mut buf: BytesMut,
    sessions: &Sessions,
    jpegs: &[Bytes],
    fps: u64,
) -> Result<(), String> {
    let mut decoder = FrameDecoder::new(Channel::Media);
    let login = tokio::time::timeout(
        Duration::from_secs(5),
        next_frame(&mut stream, &mut buf, &mut decoder),
    )
    .await
    .map_err(|_| "no media login".to_string())??;
    let id = match MediaMessage::parse(&login) {
        Ok(MediaMessage::LoginReq { connection_id }) => connection_id,
        other => return Err(format!("expected media Login_Req, got {other:?}")),
    };
    if !lock(sessions).contains_key(&id) {
        warn!(id, "media login with an unknown id: closing");
        return Ok(());
    }
    info!(id, "media connection logged in");
    let started = Instant::now();
    let mut video = tokio::time::interval(Duration::from_secs(1) / fps.clamp(1, 60) as u32);
    let mut audio = tokio::time::interval(AUDIO_PERIOD);
    let mut encoder = AdpcmState::new();
    let mut tone_pos = 0usize;
    let mut audio_seq = 0u32;
    let mut frame_no = 0usize;
    let mut talk_decoder = AdpcmState::new();
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let ts = (started.elapsed().as_millis() / 10) as u32;
        let unix = crate::foscam::client::unix_seconds() as u32;
        tokio::select! {
            _ = video.tick() => {
                let Some(on) = lock(sessions).get(&id).map(|s| s.video) else {
                    return Ok(());
                };
                if on && let Some(jpeg) = jpegs.get(frame_no % jpegs.len().max(1)) {
                    frame_no += 1;
                    out.clear();
                    MediaMessage::VideoData { timestamp: ts, capture_time: unix, jpeg: jpeg.clone() }
                        .encode(&mut out);
                    send(&mut stream, &out).await?;
                }
            }
            _ = audio.tick() => {
                let Some(on) = lock(sessions).get(&id).map(|s| s.audio) else {
                    return Ok(());
                };
                if on {
                    let pcm: Vec<i16> = (tone_pos..tone_pos + 320)
                        .map(|n| (TONE_AMPLITUDE * (2.0 * std::f64::consts::PI * TONE_HZ * n as f64 / 8000.0).sin()) as i16)
                        .collect();
                    tone_pos = (tone_pos + 320) % 8000;
                    let mut adpcm = Vec::with_capacity(160);
                    encoder.encode(&pcm, &mut adpcm);
                    out.clear();
                    MediaMessage::AudioData {
                        // A real camera stamps audio by its sample clock.
                        timestamp: audio_seq.wrapping_mul(4),
                        sequence: audio_seq,
                        capture_time: unix,
                        format: 0,
                        data: Bytes::from(adpcm),
                    }
                    .encode(&mut out);
                    audio_seq = audio_seq.wrapping_add(1);
                    send(&mut stream, &out).await?;
                }
            }
            r = next_frame(&mut stream, &mut buf, &mut decoder) => {
                let frame = r?;
                if let Ok(MediaMessage::TalkData { data, .. }) = MediaMessage::parse(&frame) {
                    let mut pcm = Vec::with_capacity(320);
                    talk_decoder.decode(&data, &mut pcm);
                    update(sessions, id, |s| if s.talk { s.talk_pcm.extend_from_slice(&pcm) });
                }
            }
        }
    }
}

/// The 50 Hz-grid frequency with the most energy: a plain DFT, enough to
/// tell a talk tone apart in the log.
pub fn peak_frequency(pcm: &[i16]) -> f64 {
    let window = &pcm[..pcm.len().min(8000)];
    let magnitude = |freq: f64| {
        let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (n, &s) in window.iter().enumerate() {
            re += f64::from(s) * (w * n as f64).cos();
            im -= f64::from(s) * (w * n as f64).sin();
        }
        re * re + im * im
    };
    (1..80)
        .map(|k| f64::from(k) * 50.0)
        .max_by(|a, b| magnitude(*a).total_cmp(&magnitude(*b)))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::jpeg::JpegHeader;

    #[test]
    fn demo_clip_splits_into_twenty_640x360_jpegs() {
        let jpegs = split_jpegs(DEMO_MJPEG);
        assert_eq!(jpegs.len(), 20);
        for j in &jpegs {
            assert!(j.starts_with(&[0xff, 0xd8]) && j.ends_with(&[0xff, 0xd9]));
            let h = JpegHeader::parse(j).unwrap();
            assert_eq!((h.width, h.height), (640, 360));
        }
    }
}
