//! The tokio driver of one camera's operation connection (`MO_O`).
//!
//! The gateway stays logged in to every configured camera: Login_Req,
//! Verify_Req with the configured user and password, then Keep_Alive every
//! minute both ways; two minutes without hearing from the camera means the
//! link is dead. A lost or refused connection is retried with exponential
//! backoff, and the outcome is kept as a [`CameraStatus`] the API shows.
//!
//! Media is asked for on demand through [`FoscamCamera::start`] (the
//! `foscam` source does so for its first viewer) and the camera answers
//! with the data-connection id the media connection (`MO_V`) logs in with.
//! All protocol decisions are in [`super::proto`]; this file only moves
//! bytes and keeps time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::adpcm::AdpcmState;
use super::events::{AlarmEvent, EventLog};
use super::proto::{
    self, ADPCM_PACKET_LEN, Channel, FrameDecoder, MediaMessage, OpMessage, ProtoError,
};
use crate::config::FoscamCameraConfig;
use crate::metrics::{self, label};
use crate::streams::StartError;

/// Keep_Alive period, both directions (protocol document).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Silence after which the link is dead (protocol document).
pub const DEAD_AFTER: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the camera has to answer a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a stream start waits for a reconnecting camera.
pub const ONLINE_WAIT: Duration = Duration::from_secs(2);
/// Samples per Talk_Data packet: 160 ADPCM bytes, 40 ms at 8 kHz.
pub const TALK_PACKET_SAMPLES: usize = 2 * ADPCM_PACKET_LEN;

/// Why a camera would not let us in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    TooManyConnections,
    WrongUser,
    WrongPassword,
    /// Another Login_Resp / Verify_Resp result code.
    Other,
}

impl Refusal {
    fn metric(self) -> &'static str {
        match self {
            Self::TooManyConnections => "too_many",
            Self::WrongUser => "wrong_user",
            Self::WrongPassword => "wrong_password",
            Self::Other => "refused",
        }
    }
}

/// The state of the operation connection, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CameraStatus {
    Connecting,
    Online {
        /// Changes at every new login, so media tied to an older login
        /// knows it is stale.
        session: u64,
        camera_id: String,
        firmware: String,
    },
    Refused {
        refusal: Refusal,
        message: String,
    },
    Offline {
        reason: String,
    },
}

/// What a start request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    Video,
    Audio,
    Talk,
}

impl StartKind {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Talk => "talk",
        }
    }

    fn request(self) -> OpMessage {
        match self {
            Self::Video => OpMessage::VideoStartReq { mode: 1 },
            Self::Audio => OpMessage::AudioStartReq { mode: 1 },
            Self::Talk => OpMessage::TalkStartReq { buffer_seconds: 1 },
        }
    }

    fn end(self) -> OpMessage {
        match self {
            Self::Video => OpMessage::VideoEnd,
            Self::Audio => OpMessage::AudioEnd,
            Self::Talk => OpMessage::TalkEnd,
        }
    }
}

/// Why a request on the operation connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("camera is not logged in: {0}")]
    NotOnline(String),
    #[error("camera refused with result {0}")]
    Refused(i16),
    #[error("camera did not answer within {0:?}")]
    Timeout(Duration),
}

impl CommandError {
    /// As a stream start error (RTSP 503 for "too many connections").
    pub fn into_start_error(self, camera: &str, what: &str) -> StartError {
        match self {
            Self::NotOnline(r) => StartError::Offline(format!("{camera}: {r}")),
            Self::Refused(proto::START_TOO_MANY) => {
                StartError::Failed(format!("{camera} refused {what}: too many connections"))
            }
            Self::Refused(code) => StartError::Rejected {
                code: code as u16,
                reason: format!("{camera} refused {what}"),
            },
            Self::Timeout(t) => StartError::Timeout(t),
        }
    }
}

enum Command {
    Start {
        kind: StartKind,
        reply: oneshot::Sender<Result<u32, CommandError>>,
    },
    End(StartKind),
    DecoderControl(u8),
}

/// One configured camera: its status, alarm events, and the channel to
/// the task that owns its operation connection.
pub struct FoscamCamera {
    pub config: FoscamCameraConfig,
    status: watch::Sender<CameraStatus>,
    commands: mpsc::Sender<Command>,
    pub events: EventLog,
}

impl FoscamCamera {
    /// Start keeping `config`'s camera logged in until `cancel`.
    pub fn spawn(config: FoscamCameraConfig, cancel: CancellationToken) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(32);
        let camera = Arc::new(Self {
            config,
            status: watch::Sender::new(CameraStatus::Connecting),
            commands: tx,
            events: EventLog::default(),
        });
        let span = info_span!(parent: None, "foscam", camera = %camera.config.name);
        tokio::spawn(control_loop(camera.clone(), rx, cancel).instrument(span));
        camera
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn status(&self) -> CameraStatus {
        self.status.borrow().clone()
    }

    /// Wait (up to `wait`) for a logged-in control connection; returns its
    /// session number. A camera that refused us fails at once.
    pub async fn wait_online(&self, wait: Duration) -> Result<u64, StartError> {
        let mut rx = self.status.subscribe();
        let _ = timeout(
            wait,
            rx.wait_for(|s| {
                matches!(
                    s,
                    CameraStatus::Online { .. } | CameraStatus::Refused { .. }
                )
            }),
        )
        .await;
        let name = self.name();
        let status = rx.borrow().clone();
        match status {
            CameraStatus::Online { session, .. } => Ok(session),
            CameraStatus::Refused { refusal, message } => Err(match refusal {
                Refusal::WrongUser | Refusal::WrongPassword => {
                    StartError::Unauthorized(format!("{name}: {message}"))
                }
                Refusal::TooManyConnections | Refusal::Other => {
                    StartError::Failed(format!("{name}: {message}"))
                }
            }),
            CameraStatus::Offline { reason } => {
                Err(StartError::Offline(format!("{name}: {reason}")))
            }
            CameraStatus::Connecting => {
                Err(StartError::Offline(format!("{name}: still connecting")))
            }
        }
    }

    /// Resolves when the login `session` is over (the link dropped).
    pub async fn session_ended(&self, session: u64) -> String {
        let mut rx = self.status.subscribe();
        let still = |s: &CameraStatus| matches!(s, CameraStatus::Online { session: n, .. } if *n == session);
        let _ = rx.wait_for(|s| !still(s)).await;
        match &*rx.borrow() {
            CameraStatus::Offline { reason } => format!("control connection lost: {reason}"),
            other => format!("control connection ended ({other:?})"),
        }
    }

    /// Ask the camera to start sending `kind`; returns the data-connection id.
    pub async fn start(&self, kind: StartKind) -> Result<u32, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Start { kind, reply })
            .await
            .map_err(|_| CommandError::NotOnline("client stopped".into()))?;
        match timeout(ANSWER_TIMEOUT, answer).await {
            Err(_) => Err(CommandError::Timeout(ANSWER_TIMEOUT)),
            Ok(Err(_)) => Err(CommandError::NotOnline("connection lost".into())),
            Ok(Ok(r)) => r,
        }
    }

    /// Tell the camera to stop sending `kind`; best effort.
    pub fn end(&self, kind: StartKind) {
        let _ = self.commands.try_send(Command::End(kind));
    }

    /// Send one `decoder_control` code (PTZ).
    pub async fn decoder_control(&self, code: u8) -> Result<(), CommandError> {
        if !matches!(self.status(), CameraStatus::Online { .. }) {
            return Err(CommandError::NotOnline(format!("{:?}", self.status())));
        }
        self.commands
            .send(Command::DecoderControl(code))
            .await
            .map_err(|_| CommandError::NotOnline("client stopped".into()))
    }

    /// Open a media connection and log it in with `connection_id`.
    pub async fn connect_media(&self, connection_id: u32) -> Result<TcpStream, String> {
        let addr = (self.config.host.as_str(), self.config.port);
        let mut stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Err(_) => return Err("media connection timed out".into()),
            Ok(Err(e)) => return Err(format!("media connection failed: {e}")),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let mut out = BytesMut::new();
        MediaMessage::LoginReq { connection_id }.encode(&mut out);
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("media login failed: {e}"))?;
        Ok(stream)
    }

    /// Send 8 kHz mono PCM to the camera's speaker as ADPCM Talk_Data,
    /// paced in real time; returns the packets sent.
    pub async fn talk(&self, pcm: &[i16]) -> Result<usize, StartError> {
        let name = self.name().to_owned();
        self.wait_online(ONLINE_WAIT).await?;
        let id = self
            .start(StartKind::Talk)
            .await
            .map_err(|e| e.into_start_error(&name, "talk"))?;
        let result = self.send_talk(id, pcm).await;
        self.end(StartKind::Talk);
        result.map_err(StartError::Failed)
    }

    async fn send_talk(&self, id: u32, pcm: &[i16]) -> Result<usize, String> {
        let mut stream = self.connect_media(id).await?;
        let mut encoder = AdpcmState::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(40));
        let unix = unix_seconds() as u32;
        let mut out = BytesMut::new();
        let mut adpcm = Vec::with_capacity(ADPCM_PACKET_LEN);
        let mut packets = 0;
        for (seq, chunk) in pcm.chunks(TALK_PACKET_SAMPLES).enumerate() {
            let mut padded = [0i16; TALK_PACKET_SAMPLES];
            padded[..chunk.len()].copy_from_slice(chunk);
            adpcm.clear();
            encoder.encode(&padded, &mut adpcm);
            out.clear();
            MediaMessage::TalkData {
                timestamp: (seq * 40) as u32,
                sequence: seq as u32,
                time: unix,
                format: 0,
                data: bytes::Bytes::copy_from_slice(&adpcm),
            }
            .encode(&mut out);
            ticker.tick().await;
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("talk data: {e}"))?;
            packets += 1;
        }
        let _ = stream.shutdown().await;
        Ok(packets)
    }
}

pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a login session ended.
enum SessionEnd {
    Refused(Refusal, String),
    Lost { reason: String, was_online: bool },
}

async fn control_loop(
    camera: Arc<FoscamCamera>,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut session = 0u64;
    loop {
        session += 1;
        let end = tokio::select! {
            _ = cancel.cancelled() => return,
            end = run_session(&camera, session, &mut commands) => end,
        };
        match end {
            SessionEnd::Refused(refusal, message) => {
                metrics::get()
                    .foscam_logins
                    .get_or_create(&label("outcome", refusal.metric()))
                    .inc();
                warn!(?refusal, %message, retry_in = ?backoff, "camera refused the login");
                camera
                    .status
                    .send_replace(CameraStatus::Refused { refusal, message });
            }
            SessionEnd::Lost { reason, was_online } => {
                if was_online {
                    metrics::get().foscam_cameras_online.dec();
                    metrics::get()
                        .foscam_errors
                        .get_or_create(&label("kind", "connection_lost"))
                        .inc();
                    backoff = BACKOFF_MIN;
                }
                warn!(%reason, retry_in = ?backoff, "camera connection down; reconnecting");
                camera.status.send_replace(CameraStatus::Offline { reason });
            }
        }
        let wake = Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sleep_until(wake) => break,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(cmd) => refuse_offline(&camera, cmd),
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn refuse_offline(camera: &FoscamCamera, cmd: Command) {
    if let Command::Start { reply, .. } = cmd {
        let why = match camera.status() {
            CameraStatus::Refused { message, .. } => message,
            CameraStatus::Offline { reason } => reason,
            _ => "connecting".into(),
        };
        let _ = reply.send(Err(CommandError::NotOnline(why)));
    }
}

/// The framed operation connection.
struct OpConn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    out: BytesMut,
}

impl OpConn {
    async fn send(&mut self, msg: &OpMessage) -> Result<(), String> {
        self.out.clear();
        msg.encode(&mut self.out);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    /// The next well-formed message. Bad frames are counted, logged and
    /// skipped: they never end the connection on their own. Cancel-safe:
    /// bytes read stay in `buf`.
    async fn next(&mut self) -> Result<OpMessage, String> {
        loop {
            while let Some(decoded) = self.decoder.decode(&mut self.buf) {
                match decoded.and_then(|raw| OpMessage::parse(&raw)) {
                    Ok(msg) => return Ok(msg),
                    Err(e) => count_error(&e),
                }
            }
            self.buf.reserve(1024);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("camera closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(OpMessage) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let msg = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.next(),
            )
            .await
            .map_err(|_| format!("no {what} within {ANSWER_TIMEOUT:?}"))??;
            if let Some(t) = pick(msg) {
                return Ok(t);
            }
        }
    }
}

pub(crate) fn count_error(e: &ProtoError) {
    metrics::get()
        .foscam_errors
        .get_or_create(&label("kind", e.kind()))
        .inc();
    debug!("bad frame from camera: {e}");
}

async fn login(camera: &FoscamCamera) -> Result<(OpConn, proto::CameraIdent), SessionEnd> {
    let cfg = &camera.config;
    let lost = |reason: String| SessionEnd::Lost {
        reason,
        was_online: false,
    };
    let stream = match timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    {
        Err(_) => {
            metrics::get()
                .foscam_logins
                .get_or_create(&label("outcome", "timeout"))
                .inc();
            return Err(lost(format!(
                "connecting to {}:{} timed out",
                cfg.host, cfg.port
            )));
        }
        Ok(Err(e)) => {
            metrics::get()
                .foscam_logins
                .get_or_create(&label("outcome", "unreachable"))
                .inc();
            return Err(lost(format!(
                "cannot connect to {}:{}: {e}",
                cfg.host, cfg.port
            )));
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let mut conn = OpConn {
        stream,
        buf: BytesMut::with_capacity(1024),
        decoder: FrameDecoder::new(Channel::Operation),
        out: BytesMut::with_capacity(64),
    };
    let failed = |reason: String| {
        metrics::get()
            .foscam_logins
            .get_or_create(&label("outcome", "error"))
            .inc();
        lost(reason)
    };
    conn.send(&OpMessage::LoginReq).await.map_err(failed)?;
    let (result, ident) = conn
        .expect("Login_Resp", |m| match m {
            OpMessage::LoginResp { result, ident } => Some((result, ident)),
            _ => None,
        })
        .await
        .map_err(failed)?;
    let ident = match (result, ident) {
        (proto::LOGIN_OK, Some(ident)) => ident,
        (proto::LOGIN_TOO_MANY, _) => {
            return Err(SessionEnd::Refused(
                Refusal::TooManyConnections,
                "camera refused the login: too many connections".into(),
            ));
        }
        (code, _) => {
            return Err(SessionEnd::Refused(
                Refusal::Other,
                format!("camera refused the login with result {code}"),
            ));
        }
    };
    conn.send(&OpMessage::VerifyReq {
        user: cfg.user.clone(),
        password: cfg.password.clone(),
    })
    .await
    .map_err(failed)?;
    let result = conn
        .expect("Verify_Resp", |m| match m {
            OpMessage::VerifyResp { result } => Some(result),
            _ => None,
        })
        .await
        .map_err(failed)?;
    match result {
        proto::VERIFY_OK => Ok((conn, ident)),
        proto::VERIFY_WRONG_USER => Err(SessionEnd::Refused(
            Refusal::WrongUser,
            format!("camera does not know user {:?}", cfg.user),
        )),
        proto::VERIFY_WRONG_PASSWORD => Err(SessionEnd::Refused(
            Refusal::WrongPassword,
            format!("wrong password for user {:?}", cfg.user),
        )),
        code => Err(SessionEnd::Refused(
            Refusal::Other,
            format!("camera refused verification with result {code}"),
        )),
    }
}

async fn run_session(
    camera: &FoscamCamera,
    session: u64,
    commands: &mut mpsc::Receiver<Command>,
) -> SessionEnd {
    let (mut conn, ident) = match login(camera).await {
        Ok(x) => x,
        Err(end) => return end,
    };
    let firmware = ident
        .firmware
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(".");
    info!(camera_id = %ident.camera_id, %firmware, session, "logged in to camera");
    let m = metrics::get();
    m.foscam_logins.get_or_create(&label("outcome", "ok")).inc();
    m.foscam_cameras_online.inc();
    camera.status.send_replace(CameraStatus::Online {
        session,
        camera_id: ident.camera_id,
        firmware,
    });
    let reason = serve(camera, &mut conn, commands).await;
    SessionEnd::Lost {
        reason,
        was_online: true,
    }
}

type Pending = [VecDeque<oneshot::Sender<Result<u32, CommandError>>>; 3];

/// Run a logged-in connection until it fails; returns why.
async fn serve(
    camera: &FoscamCamera,
    conn: &mut OpConn,
    commands: &mut mpsc::Receiver<Command>,
) -> String {
    let mut keepalive =
        tokio::time::interval_at(Instant::now() + KEEPALIVE_INTERVAL, KEEPALIVE_INTERVAL);
    let mut last_heard = Instant::now();
    let mut pending: Pending = Default::default();
    loop {
        tokio::select! {
            msg = conn.next() => match msg {
                Err(reason) => return reason,
                Ok(msg) => {
                    last_heard = Instant::now();
                    handle(camera, msg, &mut pending);
                }
            },
            _ = keepalive.tick() => {
                if let Err(e) = conn.send(&OpMessage::KeepAlive).await {
                    return e;
                }
            }
            _ = sleep_until(last_heard + DEAD_AFTER) => {
                return format!("nothing heard for {DEAD_AFTER:?}");
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return "client stopped".into() };
                let (msg, kind) = match cmd {
                    Command::Start { kind, reply } => {
                        // Bounded by the live requesters: the dead go first.
                        pending[kind.index()].retain(|r| !r.is_closed());
                        pending[kind.index()].push_back(reply);
                        (kind.request(), Some(kind))
                    }
                    Command::End(kind) => (kind.end(), None),
                    Command::DecoderControl(command) => (OpMessage::DecoderControl { command }, None),
                };
                debug!(opcode = msg.opcode(), ?kind, "request");
                if let Err(e) = conn.send(&msg).await {
                    return e;
                }
            }
        }
    }
}

/// The oldest requester of a start still waiting for its answer. Those
/// that gave up (timed out, their receiver dropped) are skipped: were one
/// left at the head of the queue when the camera never answers its request,
/// every later answer would go to it and every later start time out.
fn live_waiter(
    queue: &mut VecDeque<oneshot::Sender<Result<u32, CommandError>>>,
) -> Option<oneshot::Sender<Result<u32, CommandError>>> {
    while let Some(reply) = queue.pop_front() {
        if !reply.is_closed() {
            return Some(reply);
        }
    }
    None
}

fn handle(camera: &FoscamCamera, msg: OpMessage, pending: &mut Pending) {
    let answer = |pending: &mut Pending, kind: StartKind, result: i16, id: Option<u32>| {
        let Some(reply) = live_waiter(&mut pending[kind.index()]) else {
            debug!(kind = kind.name(), result, "unrequested start response");
            return;
        };
        let outcome = match (result, id) {
            (proto::START_OK, Some(id)) => Ok(id),
            (proto::START_OK, None) => Err(CommandError::Refused(-1)),
            (code, _) => Err(CommandError::Refused(code)),
        };
        if let Err(e) = &outcome {
            info!(kind = kind.name(), "camera refused to start: {e}");
        }
        let _ = reply.send(outcome);
    };
    match msg {
        OpMessage::KeepAlive => {}
        OpMessage::VideoStartResp {
            result,
            connection_id,
        } => answer(pending, StartKind::Video, result, connection_id),
        OpMessage::AudioStartResp {
            result,
            connection_id,
        } => answer(pending, StartKind::Audio, result, connection_id),
        OpMessage::TalkStartResp {
            result,
            connection_id,
        } => answer(pending, StartKind::Talk, result, connection_id),
        OpMessage::AlarmNotify { kind, area } => {
            metrics::get().foscam_alarms.inc();
            info!(?kind, ?area, "alarm");
            camera.events.push(AlarmEvent {
                time: unix_seconds(),
                kind,
                area,
            });
        }
        other => debug!(opcode = other.opcode(), "ignored message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a start requester that timed out must not take the answer
    /// meant for the next one.
    #[test]
    fn answers_go_to_live_waiters_only() {
        let mut queue = VecDeque::new();
        let (dead, gave_up) = oneshot::channel();
        drop(gave_up);
        let (live, mut waiting) = oneshot::channel();
        queue.push_back(dead);
        queue.push_back(live);
        let reply = live_waiter(&mut queue).expect("the live requester");
        reply.send(Ok(7)).unwrap();
        assert_eq!(waiting.try_recv().unwrap(), Ok(7));
        assert!(queue.is_empty());
        // Only dead requesters: nobody takes the answer.
        let (dead, gave_up) = oneshot::channel::<Result<u32, CommandError>>();
        drop(gave_up);
        queue.push_back(dead);
        assert!(live_waiter(&mut queue).is_none());
    }
}
