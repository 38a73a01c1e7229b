//! The tokio driver of the simulated GB28181 camera: one UDP socket for SIP
//! (driving [`GbDevice`]) and one for RTP, with a media task per call that
//! streams the demo clip as MPEG-2 PS over RTP (GB/T 28181-2016 §9.2 and
//! Annex C; RFC 3550) at real-time pace until BYE.
//!
//! The driver holds no protocol logic: it moves datagrams between the
//! sockets and the core, sleeps until the core's next timer, and turns
//! [`DeviceEvent`]s into media tasks and [`SimStats`] counters.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex as AsyncMutex, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::clip::{Clip, DEMO_FPS};
use super::gb_device::{
    AnswerSsrc, DeviceConfig, DeviceError, DeviceEvent, GbDevice, MediaLink, StopReason, TalkMedia,
};
use super::history_stream::{HistoryRequest, stream_history};
use super::ps_file::PsFileReplay;
use super::replay::{MediaOut, replay};
use super::rtp::{PAYLOAD_TYPE_PS, RtpPacketizer};
use super::rtp_capture::CaptureReplay;
use super::rtp_file::RtpFileReplay;
use super::snapshot_upload::upload_snapshots;
use super::talk_receive::{TalkCounters, accept_talk_tcp, receive_talk, receive_talk_tcp};
use crate::config::Config;
use crate::gb28181::mansrtsp::PlaybackCommand;
use crate::media::ps_mux::PsMuxer;
use tokio::sync::mpsc;

/// How long shutdown waits for the BYEs and the un-REGISTER to be answered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Playback control bodies kept for [`SimStats::playback_bodies`].
pub const MAX_KEPT_BODIES: usize = 256;

/// Settings of one simulated camera.
#[derive(Debug, Clone)]
pub struct SimCameraConfig {
    /// The platform's SIP address.
    pub server: SocketAddr,
    pub server_id: String,
    pub realm: String,
    pub device_id: String,
    pub channel_id: String,
    pub channel_name: String,
    /// `None`: answer no digest challenge.
    pub password: Option<String>,
    /// Local SIP socket address (port 0 = any). RTP leaves from the same IP.
    pub bind: SocketAddr,
    /// Address written in Via, Contact and SDP; default: the bound IP, or
    /// the IP that routes to `server` when bound to 0.0.0.0.
    pub advertised_ip: Option<IpAddr>,
    pub register_expires: u32,
    pub keepalive_interval: Duration,
    /// Unanswered keepalives in a row before registering again at home.
    pub keepalive_misses: u32,
    pub register_retry: Duration,
    /// `false`: a dead device that never answers INVITE.
    pub answer_invites: bool,
    /// The first this many Catalog answers are never sent.
    pub lose_catalog_answers: u32,
    /// Accept TCP/RTP/AVP offers (both `a=setup` roles).
    pub tcp_media: bool,
    /// The `y=` of INVITE answers.
    pub answer_ssrc: AnswerSsrc,
    /// Stream the H.265 clip instead of the H.264 one.
    pub h265: bool,
    /// Add a G.711 A-law tone (PS stream id 0xC0, stream type 0x90).
    pub audio: bool,
    /// How the talk callback INVITE asks for audio (UDP, or TCP either way).
    pub talk_media: TalkMedia,
    /// Add this AAC track instead of the G.711 tone (PS stream type 0x0F).
    pub aac: Option<Arc<super::aac_track::AacTrack>>,
    /// Send this program stream file as it is (looped) instead of the clip.
    pub ps_file: Option<Arc<super::ps_file::PsFile>>,
    /// Send these captured RTP packets (looped) instead of the clip.
    pub rtp_file: Option<Arc<super::rtp_file::RtpFile>>,
    /// Replay this RTP capture instead of the demo clip (load tests).
    pub rtp_capture: Option<Arc<super::rtp_capture::RtpCapture>>,
    /// Counters shared with whoever started the camera.
    pub stats: Arc<SimStats>,
    /// Tag every frame with an SEI naming this device
    /// ([`super::frame_marker`]), so viewers can check whose frames they got.
    pub mark_frames: bool,
    /// Send media to this IP instead of the one the offer names (the
    /// port stays): a fault-injection proxy listening there.
    pub media_ip: Option<IpAddr>,
    /// Raise a motion alarm this often.
    pub alarm_every: Option<Duration>,
    /// Wait a random time below this before a call's first packet of
    /// `rtp_capture`: cameras do not share a GOP clock, and a thousand
    /// replays of one capture started together would put every keyframe
    /// (and every gateway's GOP cache refill) in the same instant.
    pub start_jitter: Duration,
}

impl SimCameraConfig {
    /// A camera with the GB28181 demo ids (see [`DeviceConfig::new`]),
    /// registering to `server`, bound to an ephemeral loopback port.
    pub fn new(server: SocketAddr) -> Self {
        let d = DeviceConfig::default();
        Self {
            server,
            server_id: d.server_id,
            realm: d.realm,
            device_id: d.device_id,
            channel_id: d.channel_id,
            channel_name: d.channel_name,
            password: d.password,
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertised_ip: None,
            register_expires: d.register_expires,
            keepalive_interval: d.keepalive_interval,
            keepalive_misses: d.keepalive_misses,
            register_retry: d.register_retry,
            answer_invites: true,
            lose_catalog_answers: 0,
            tcp_media: true,
            answer_ssrc: AnswerSsrc::Offered,
            h265: false,
            audio: false,
            talk_media: TalkMedia::Udp,
            aac: None,
            ps_file: None,
            rtp_file: None,
            rtp_capture: None,
            stats: Arc::default(),
            mark_frames: false,
            start_jitter: Duration::ZERO,
            media_ip: None,
            alarm_every: None,
        }
    }

    /// The `--demo` camera: registers over loopback to this gateway's SIP
    /// port with the ids of the `demo` section and the password the gateway
    /// expects of that device.
    pub fn from_config(config: &Config) -> Self {
        let listen = config.sip.listen;
        let server_ip = if listen.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            listen.ip()
        };
        let mut c = Self::new(SocketAddr::new(server_ip, listen.port()));
        c.server_id = config.sip.server_id.clone();
        c.realm = config.sip.realm.clone();
        c.device_id = config.demo.device_id.clone();
        c.channel_id = config.demo.channel_id.clone();
        c.password = config.password_for(&c.device_id).map(str::to_owned);
        c.bind = SocketAddr::new(server_ip, config.demo.sip_port);
        c.alarm_every = (!config.demo.alarm_every.is_zero()).then_some(config.demo.alarm_every);
        c
    }
}

/// `count` cameras in one process, for load and isolation tests: camera
/// `i` takes the device and channel ids of `base` plus `i` (as 20-digit
/// numbers) and, when `base` binds a fixed SIP port, that port plus `i`.
/// `password_for` gives each device's password. Returns when all stop;
/// the first error, if any.
pub async fn run_many(
    base: SimCameraConfig,
    count: u32,
    password_for: impl Fn(&str) -> Option<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut cameras = Vec::new();
    for i in 0..count {
        let mut c = base.clone();
        c.device_id = nth_id(&base.device_id, i)?;
        c.channel_id = nth_id(&base.channel_id, i)?;
        c.password = password_for(&c.device_id);
        if c.bind.port() != 0 {
            let port = u16::try_from(u32::from(c.bind.port()) + i)
                .context("sim cameras: SIP ports run past 65535")?;
            c.bind.set_port(port);
        }
        c.stats = Arc::default();
        cameras.push(spawn(c, shutdown.clone()));
    }
    let mut first_error = None;
    for camera in cameras {
        let result = match camera.task.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("sim camera task: {e}")),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `id` plus `n`, as a decimal number of the same width (GB/T 28181 ids
/// are 20 digits: more than a u64 holds).
fn nth_id(id: &str, n: u32) -> anyhow::Result<String> {
    let v: u128 = id
        .parse()
        .with_context(|| format!("sim cameras: device id {id:?} is not a number"))?;
    let next = (v + u128::from(n)).to_string();
    anyhow::ensure!(
        next.len() <= id.len(),
        "sim cameras: {id} + {n} overflows its digits"
    );
    Ok(format!("{next:0>width$}", width = id.len()))
}

/// Counters for tests and the demo ("exactly one INVITE, one BYE").
#[derive(Debug, Default)]
pub struct SimStats {
    pub registrations: AtomicU64,
    /// 302 answers to REGISTER followed.
    pub redirects: AtomicU64,
    pub registration_failures: AtomicU64,
    pub keepalives_sent: AtomicU64,
    pub queries_answered: AtomicU64,
    pub invites_received: AtomicU64,
    pub byes_received: AtomicU64,
    pub streams_started: AtomicU64,
    /// Media tasks currently sending.
    pub active_streams: AtomicU64,
    pub rtp_packets_sent: AtomicU64,
    pub rtp_bytes_sent: AtomicU64,
    pub frames_sent: AtomicU64,
    /// Voice broadcast audio heard by the speaker.
    pub talk: Arc<TalkCounters>,
    /// SnapShotConfig requests received.
    pub snapshot_requests: AtomicU64,
    /// MANSRTSP INFOs received in calls.
    pub playback_controls: AtomicU64,
    /// Their bodies, in arrival order (at most [`MAX_KEPT_BODIES`]).
    playback_bodies: std::sync::Mutex<Vec<String>>,
    /// TCP media connections made (either role).
    pub tcp_connections: AtomicU64,
    /// Platform connections for `setup:active` that did not come from the
    /// port it offered (some real devices refuse those).
    pub tcp_port_mismatches: AtomicU64,
    registered: AtomicBool,
    sip_addr: OnceLock<SocketAddr>,
    media_addr: OnceLock<SocketAddr>,
}

impl SimStats {
    pub fn invites(&self) -> u64 {
        self.invites_received.load(Ordering::Relaxed)
    }

    pub fn byes(&self) -> u64 {
        self.byes_received.load(Ordering::Relaxed)
    }

    pub fn rtp_packets(&self) -> u64 {
        self.rtp_packets_sent.load(Ordering::Relaxed)
    }

    pub fn active_streams(&self) -> u64 {
        self.active_streams.load(Ordering::Relaxed)
    }

    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// The camera's bound SIP address, once it runs.
    pub fn sip_addr(&self) -> Option<SocketAddr> {
        self.sip_addr.get().copied()
    }

    /// The address RTP leaves from, once it runs.
    /// The MANSRTSP bodies received so far.
    pub fn playback_bodies(&self) -> Vec<String> {
        self.playback_bodies
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    pub fn media_addr(&self) -> Option<SocketAddr> {
        self.media_addr.get().copied()
    }
}

/// A camera started with [`spawn`].
#[derive(Debug)]
pub struct SimCamera {
    pub stats: Arc<SimStats>,
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Run [`run`] on a new task.
pub fn spawn(config: SimCameraConfig, shutdown: CancellationToken) -> SimCamera {
    let stats = config.stats.clone();
    let task = tokio::spawn(run(config, shutdown));
    SimCamera { stats, task }
}

/// Run the camera until `shutdown` is cancelled, then send BYE for live
/// calls and unregister (waiting up to two seconds for answers).
pub async fn run(config: SimCameraConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let span = tracing::info_span!("sim_camera", device = %config.device_id);
    run_inner(config, shutdown).instrument(span).await
}

async fn run_inner(config: SimCameraConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sip = UdpSocket::bind(config.bind)
        .await
        .with_context(|| format!("sim camera: bind SIP socket {}", config.bind))?;
    let media = UdpSocket::bind(SocketAddr::new(config.bind.ip(), 0))
        .await
        .context("sim camera: bind RTP socket")?;
    let media = Arc::new(media);
    let talk_audio = Arc::new(
        UdpSocket::bind(SocketAddr::new(config.bind.ip(), 0))
            .await
            .context("sim camera: bind audio socket")?,
    );
    let audio_local = talk_audio.local_addr()?;
    tokio::spawn(receive_talk(
        talk_audio,
        config.stats.talk.clone(),
        shutdown.child_token(),
    ));
    if config.talk_media == TalkMedia::TcpListen {
        // The same port number as the UDP speaker, which the offer names.
        let listener = TcpListener::bind(audio_local)
            .await
            .with_context(|| format!("sim camera: bind talk TCP listener {audio_local}"))?;
        tokio::spawn(accept_talk_tcp(
            listener,
            config.stats.talk.clone(),
            shutdown.child_token(),
        ));
    }
    let tcp_listener = if config.tcp_media {
        Some(
            TcpListener::bind(SocketAddr::new(config.bind.ip(), 0))
                .await
                .context("sim camera: bind TCP media listener")?,
        )
    } else {
        None
    };
    let tcp_port = match &tcp_listener {
        Some(l) => Some(l.local_addr()?.port()),
        None => None,
    };
    let sip_local = sip.local_addr()?;
    let media_local = media.local_addr()?;
    let ip = match config.advertised_ip {
        Some(ip) => ip,
        None if sip_local.ip().is_unspecified() => route_to(config.server).await?,
        None => sip_local.ip(),
    };
    let stats = config.stats.clone();
    let _ = stats.sip_addr.set(sip_local);
    let _ = stats.media_addr.set(media_local);

    let mut dc = DeviceConfig::new(
        config.server,
        SocketAddr::new(ip, sip_local.port()),
        SocketAddr::new(ip, media_local.port()),
    );
    dc.server_id = config.server_id.clone();
    dc.realm = config.realm.clone();
    dc.device_id = config.device_id.clone();
    dc.channel_id = config.channel_id.clone();
    dc.channel_name = config.channel_name.clone();
    dc.password = config.password.clone();
    dc.register_expires = config.register_expires;
    dc.keepalive_interval = config.keepalive_interval;
    dc.keepalive_misses = config.keepalive_misses;
    dc.register_retry = config.register_retry;
    dc.answer_invites = config.answer_invites;
    dc.lose_catalog_answers = config.lose_catalog_answers;
    dc.tcp_media_port = tcp_port;
    dc.answer_ssrc = config.answer_ssrc;
    dc.audio_addr = SocketAddr::new(ip, audio_local.port());
    dc.talk_media = config.talk_media;
    let mut device = GbDevice::new(dc, rand::random());
    let waiters: Waiters = Arc::default();
    if let Some(listener) = tcp_listener {
        tokio::spawn(accept_loop(
            listener,
            waiters.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
    }
    let media = MediaSockets {
        udp: media,
        waiters,
        redirect: config.media_ip,
    };
    tracing::info!(sip = %sip_local, media = %media_local, server = %config.server, "simulated camera starting");

    let mut clip = if config.h265 {
        Clip::demo_h265()
    } else {
        Clip::demo()
    };
    if config.mark_frames {
        let sei = super::frame_marker::marker_sei(&config.device_id, config.h265);
        clip = clip.with_unit_in_every_frame(&sei);
    }
    let clip = Arc::new(clip);
    let audio = Audio {
        g711: config.audio,
        aac: config.aac.clone(),
        ps_file: config.ps_file.clone(),
        rtp_file: config.rtp_file.clone(),
        rtp_capture: config.rtp_capture.clone(),
        start_jitter: config.start_jitter,
    };
    let (finished_tx, mut finished_rx) = mpsc::channel::<String>(16);
    let (snapshots_tx, mut snapshots_rx) = mpsc::channel::<(String, Vec<String>)>(16);
    let mut ctx = MediaCtx {
        streams: HashMap::new(),
        history: HashMap::new(),
        controls: HashMap::new(),
        finished: finished_tx,
        snapshots_done: snapshots_tx,
    };
    let mut buf = vec![0u8; 65_536];
    device.start(Instant::now().into_std());
    let alarm_period = config.alarm_every.unwrap_or(Duration::from_secs(3600));
    let mut alarms = tokio::time::interval_at(Instant::now() + alarm_period, alarm_period);

    loop {
        // Events first: a playback control reaches its stream before the
        // INFO's 200 leaves, so the platform never sees "done" before the
        // stream has turned (a seek's stale frames would follow the 200).
        while let Some(ev) = device.poll_event() {
            on_event(ev, &stats, &mut ctx, &media, &clip, &audio, &shutdown);
        }
        flush(&sip, &mut device).await;
        let timer = device.poll_timeout().map(Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = sip.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    match device.handle_datagram(Instant::now().into_std(), from, data) {
                        Ok(()) => {}
                        // A late duplicate of a response we already used.
                        Err(e @ DeviceError::StrayResponse { .. }) => {
                            tracing::debug!(%from, error = %e, "sim camera: ignored response");
                        }
                        Err(e) => tracing::warn!(%from, error = %e, "sim camera: dropped SIP datagram"),
                    }
                }
                // ICMP errors surface here on some platforms; they concern
                // one earlier datagram, not the socket.
                Err(e) => tracing::debug!(error = %e, "sim camera: SIP receive error"),
            },
            _ = sleep_until(timer) => device.handle_timeout(Instant::now().into_std()),
            Some((session, files)) = snapshots_rx.recv() => {
                tracing::info!(%session, files = files.len(), "snapshots uploaded: UploadSnapShotFinished");
                device.snapshot_finished(Instant::now().into_std(), &session, &files);
            }
            Some(call_id) = finished_rx.recv() => {
                tracing::info!(%call_id, "recording ended: MediaStatus 121");
                device.media_finished(Instant::now().into_std(), &call_id);
            }
            _ = alarms.tick(), if config.alarm_every.is_some() && device.is_registered() => {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let time = crate::media::datetime::format(unix);
                tracing::info!(%time, "sending motion alarm");
                device.alarm(Instant::now().into_std(), &time);
            }
        }
    }

    // Graceful exit: BYE live calls, un-REGISTER, wait a little for answers.
    device.shutdown(Instant::now().into_std());
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    loop {
        flush(&sip, &mut device).await;
        while let Some(ev) = device.poll_event() {
            on_event(ev, &stats, &mut ctx, &media, &clip, &audio, &shutdown);
        }
        if device.is_quiet() || Instant::now() >= deadline {
            break;
        }
        let timer = device
            .poll_timeout()
            .map(Instant::from_std)
            .map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            r = sip.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    let data = buf.get(..n).unwrap_or_default();
                    if let Err(e) = device.handle_datagram(Instant::now().into_std(), from, data) {
                        tracing::debug!(%from, error = %e, "sim camera: dropped SIP datagram");
                    }
                }
            }
            _ = tokio::time::sleep_until(timer) => device.handle_timeout(Instant::now().into_std()),
        }
    }
    for (_, stop) in ctx.streams.drain() {
        stop.cancel();
    }
    stats.registered.store(false, Ordering::Relaxed);
    tracing::info!("simulated camera stopped");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn flush(sip: &UdpSocket, device: &mut GbDevice) {
    while let Some(t) = device.poll_transmit() {
        if let Err(e) = sip.send_to(&t.payload, t.dest).await {
            tracing::warn!(dest = %t.dest, error = %e, "sim camera: SIP send failed");
        }
    }
}

/// Calls waiting for the platform to connect (`setup:active` offers), by
/// the address it said it would connect from.
type Waiters = Arc<AsyncMutex<Vec<(SocketAddr, oneshot::Sender<TcpStream>)>>>;

/// What media tasks send with.
struct MediaSockets {
    udp: Arc<UdpSocket>,
    waiters: Waiters,
    /// See [`SimCameraConfig::media_ip`].
    redirect: Option<IpAddr>,
}

/// Hand each accepted TCP media connection to the call expecting it: by
/// source address, else the oldest waiting call (counted as a mismatch).
async fn accept_loop(
    listener: TcpListener,
    waiters: Waiters,
    stats: Arc<SimStats>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "sim camera: TCP accept failed");
                    continue;
                }
            },
        };
        let mut w = waiters.lock().await;
        w.retain(|(_, tx)| !tx.is_closed());
        let at = match w.iter().position(|(addr, _)| *addr == peer) {
            Some(at) => at,
            None if !w.is_empty() => {
                stats.tcp_port_mismatches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, expected = %w[0].0, "TCP media from another port than offered");
                0
            }
            None => {
                tracing::warn!(%peer, "TCP media connection for no call; closed");
                continue;
            }
        };
        let (_, tx) = w.remove(at);
        let _ = tx.send(stream);
    }
}

/// Where a media task's packets go.
pub(crate) enum MediaSink {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(TcpStream),
}

impl MediaSink {
    /// Make the connection the call asked for.
    async fn open(
        link: MediaLink,
        dest: SocketAddr,
        media: &Arc<UdpSocket>,
        waiter: Option<oneshot::Receiver<TcpStream>>,
        stats: &SimStats,
    ) -> Option<Self> {
        let stream = match link {
            MediaLink::Udp => return Some(Self::Udp(media.clone(), dest)),
            MediaLink::TcpConnect => {
                match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(dest)).await {
                    Ok(Ok(s)) => s,
                    other => {
                        tracing::warn!(%dest, ?other, "TCP media connect failed");
                        return None;
                    }
                }
            }
            MediaLink::TcpAccept => {
                match tokio::time::timeout(Duration::from_secs(5), waiter?).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        tracing::warn!(%dest, "platform never connected for TCP media");
                        return None;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
        tracing::info!(?link, peer = ?stream.peer_addr().ok(), "TCP media connected");
        Some(Self::Tcp(stream))
    }

    pub(crate) async fn send(
        &mut self,
        packet: &[u8],
        framed: &mut Vec<u8>,
    ) -> std::io::Result<usize> {
        match self {
            Self::Udp(socket, dest) => socket.send_to(packet, *dest).await,
            Self::Tcp(stream) => {
                framed.clear();
                crate::ingest::rfc4571::frame(packet, framed)
                    .ok_or_else(|| std::io::Error::other("RTP packet over 65535 bytes"))?;
                stream.write_all(framed).await?;
                Ok(framed.len())
            }
        }
    }
}

/// The driver's media bookkeeping, by Call-ID.
struct MediaCtx {
    streams: HashMap<String, CancellationToken>,
    /// History INVITEs whose media has not started yet.
    history: HashMap<String, HistoryRequest>,
    /// Playback control of running history streams.
    controls: HashMap<String, mpsc::Sender<PlaybackCommand>>,
    /// History streams that played to their end report here.
    finished: mpsc::Sender<String>,
    /// Snapshot sessions whose uploads are done, with their file ids.
    snapshots_done: mpsc::Sender<(String, Vec<String>)>,
}

fn on_event(
    ev: DeviceEvent,
    stats: &Arc<SimStats>,
    ctx: &mut MediaCtx,
    media: &MediaSockets,
    clip: &Arc<Clip>,
    audio: &Audio,
    shutdown: &CancellationToken,
) {
    let inc = |c: &AtomicU64| {
        c.fetch_add(1, Ordering::Relaxed);
    };
    match ev {
        DeviceEvent::Registered { expires } => {
            inc(&stats.registrations);
            stats.registered.store(true, Ordering::Relaxed);
            tracing::info!(expires, "registered");
        }
        DeviceEvent::RegistrationFailed { status, reason } => {
            inc(&stats.registration_failures);
            stats.registered.store(false, Ordering::Relaxed);
            tracing::warn!(?status, %reason, "registration failed; will retry");
        }
        DeviceEvent::Unregistered => {
            stats.registered.store(false, Ordering::Relaxed);
            tracing::info!("unregistered");
        }
        DeviceEvent::Redirected { to } => {
            inc(&stats.redirects);
            tracing::info!(%to, "REGISTER redirected (302)");
        }
        DeviceEvent::KeepaliveSent { sn } => {
            inc(&stats.keepalives_sent);
            tracing::trace!(sn, "keepalive sent");
        }
        DeviceEvent::QueryAnswered { cmd, sn } => {
            inc(&stats.queries_answered);
            tracing::debug!(%cmd, %sn, "query answered");
        }
        DeviceEvent::PtzReceived { word, valid } => {
            inc(&stats.queries_answered);
            tracing::info!(%word, valid, "PTZ command received");
        }
        DeviceEvent::InviteReceived { call_id, answered } => {
            inc(&stats.invites_received);
            tracing::info!(%call_id, answered, "INVITE received");
        }
        DeviceEvent::ByeReceived { call_id, known } => {
            inc(&stats.byes_received);
            tracing::info!(%call_id, known, "BYE received");
        }
        DeviceEvent::StartMedia {
            call_id,
            dest,
            ssrc,
            link,
        } => {
            inc(&stats.streams_started);
            // A child token: shutdown of the camera also ends the stream.
            let stop = shutdown.child_token();
            if let Some(old) = ctx.streams.insert(call_id.clone(), stop.clone()) {
                old.cancel();
            }
            // Register before the 200 OK is flushed, so a fast platform
            // connection finds its call.
            let waiter = (link == MediaLink::TcpAccept).then(|| {
                let (tx, rx) = oneshot::channel();
                match media.waiters.try_lock() {
                    Ok(mut w) => w.push((dest, tx)),
                    Err(_) => {
                        let waiters = media.waiters.clone();
                        tokio::spawn(async move { waiters.lock().await.push((dest, tx)) });
                    }
                }
                rx
            });
            let udp = media.udp.clone();
            let dest = match (link, media.redirect) {
                (MediaLink::Udp | MediaLink::TcpConnect, Some(ip)) => {
                    SocketAddr::new(ip, dest.port())
                }
                _ => dest,
            };
            let clip = clip.clone();
            let audio = audio.clone();
            let stats = stats.clone();
            let history = ctx.history.remove(&call_id).map(|req| {
                let (tx, rx) = mpsc::channel(16);
                ctx.controls.insert(call_id.clone(), tx);
                (req, rx, ctx.finished.clone())
            });
            let span = tracing::info_span!("sim_stream", %call_id, %dest, ssrc);
            let task = async move {
                let Some(sink) = MediaSink::open(link, dest, &udp, waiter, &stats).await else {
                    return;
                };
                match history {
                    Some((req, control, finished)) => {
                        if stream_history(sink, ssrc, clip, req, control, stop, stats).await {
                            let _ = finished.send(call_id).await;
                        }
                    }
                    None => match (
                        audio.ps_file.clone(),
                        audio.rtp_file.clone(),
                        audio.rtp_capture.clone(),
                    ) {
                        (Some(file), _, _) => {
                            tracing::info!(pieces = file.pieces.len(), "streaming PS file");
                            replay(PsFileReplay::new(file, ssrc), sink, stop, stats).await
                        }
                        (None, Some(file), _) => {
                            tracing::info!(packets = file.packets.len(), "streaming RTP file");
                            replay(RtpFileReplay::new(file, ssrc), sink, stop, stats).await
                        }
                        (None, None, Some(capture)) => {
                            let wait = audio.start_jitter.mul_f64(rand::random::<f64>());
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep(wait) => {}
                            }
                            replay(CaptureReplay::new(capture, ssrc), sink, stop, stats).await
                        }
                        (None, None, None) => {
                            stream_clip(sink, ssrc, clip, audio, stop, stats).await
                        }
                    },
                }
            };
            tokio::spawn(task.instrument(span));
        }
        DeviceEvent::HistoryRequested {
            call_id,
            download,
            start,
            end,
            speed,
        } => {
            tracing::info!(%call_id, download, start, end, speed, "history INVITE");
            ctx.history.insert(
                call_id,
                HistoryRequest {
                    start,
                    end,
                    download,
                    speed,
                },
            );
        }
        DeviceEvent::SnapshotRequested {
            url,
            session,
            num,
            interval,
        } => {
            inc(&stats.snapshot_requests);
            tracing::info!(%url, %session, num, interval, "snapshot requested");
            let done = ctx.snapshots_done.clone();
            let stop = shutdown.child_token();
            tokio::spawn(async move {
                let files = upload_snapshots(
                    url,
                    session.clone(),
                    num,
                    Duration::from_secs(u64::from(interval)),
                    stop,
                )
                .await;
                let _ = done.send((session, files)).await;
            });
        }
        DeviceEvent::BroadcastReceived { source, target } => {
            // Count from here: audio may overtake our view of the 200 OK.
            stats.talk.reset();
            tracing::info!(%source, %target, "broadcast: calling the platform back");
        }
        DeviceEvent::TalkStarted {
            call_id,
            connect_to,
        } => {
            tracing::info!(%call_id, ?connect_to, "talk started");
            if let Some(addr) = connect_to {
                let talk = stats.talk.clone();
                tokio::spawn(async move {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            receive_talk_tcp(stream, talk, CancellationToken::new()).await;
                        }
                        Err(e) => tracing::warn!(%addr, "talk TCP connect failed: {e}"),
                    }
                });
            }
        }
        DeviceEvent::TalkFailed { status } => tracing::warn!(?status, "talk INVITE failed"),
        DeviceEvent::TalkEnded { call_id } => {
            // Let the last packets, sent just before the BYE, arrive.
            let talk = stats.talk.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (packets, bad, discontinuities) = talk.summary();
                let loud = talk.loud();
                tracing::info!(%call_id, packets, bad, discontinuities, loud, "talk ended");
            });
        }
        DeviceEvent::PlaybackControl { call_id, body } => {
            inc(&stats.playback_controls);
            if let Ok(mut kept) = stats.playback_bodies.lock()
                && kept.len() < MAX_KEPT_BODIES
            {
                kept.push(body.clone());
            }
            match PlaybackCommand::parse(body.as_bytes()) {
                Ok((cmd, cseq)) => {
                    tracing::info!(%call_id, ?body, ?cmd, cseq, "playback control received");
                    if let Some(tx) = ctx.controls.get(&call_id) {
                        let _ = tx.try_send(cmd);
                    }
                }
                Err(e) => tracing::warn!(%call_id, ?body, error = %e, "bad playback control"),
            }
        }
        DeviceEvent::StopMedia { call_id, reason } => {
            ctx.controls.remove(&call_id);
            ctx.history.remove(&call_id);
            if let Some(stop) = ctx.streams.remove(&call_id) {
                stop.cancel();
            }
            let reason = match reason {
                StopReason::Bye => "bye",
                StopReason::AckTimeout => "no ACK",
                StopReason::Shutdown => "shutdown",
            };
            tracing::info!(%call_id, reason, "media stopped");
        }
    }
}

/// The audio a live stream carries besides the video.
#[derive(Clone, Debug, Default)]
struct Audio {
    /// A G.711 A-law tone, 20 ms frames.
    g711: bool,
    /// AAC frames from a file (wins over `g711`).
    aac: Option<Arc<super::aac_track::AacTrack>>,
    /// A whole program stream file sent instead of clip and audio.
    ps_file: Option<Arc<super::ps_file::PsFile>>,
    /// Captured RTP packets sent instead of clip and audio.
    rtp_file: Option<Arc<super::rtp_file::RtpFile>>,
    /// A recorded RTP session sent instead of the clip and any audio.
    rtp_capture: Option<Arc<super::rtp_capture::RtpCapture>>,
    /// See [`SimCameraConfig::start_jitter`].
    start_jitter: Duration,
}

/// Send the clip as PS over RTP to `dest`, one access unit per frame
/// interval, looping with continuing timestamps until `stop`.
async fn stream_clip(
    sink: MediaSink,
    ssrc: u32,
    clip: Arc<Clip>,
    audio: Audio,
    stop: CancellationToken,
    stats: Arc<SimStats>,
) {
    stats.active_streams.fetch_add(1, Ordering::Relaxed);
    tracing::info!("streaming demo clip");
    let frame_ticks = u64::from(90_000 / DEMO_FPS);
    let mut muxer = PsMuxer::new();
    if clip.is_h265() {
        muxer = muxer.with_h265();
    }
    let aac = audio.aac.clone().filter(|a| !a.frames.is_empty());
    if aac.is_some() {
        muxer = muxer.with_aac();
    } else if audio.g711 {
        muxer = muxer.with_audio();
    }
    let g711 = audio.g711 && aac.is_none();
    // AAC frames sent so far; frame n is due at `start + ticks(n)`.
    let mut aac_sent = 0u64;
    let mut tone = super::g711::ToneSource::default();
    // Audio frames of 20 ms per video frame interval.
    let audio_per_frame = (1000 / DEMO_FPS / 20) as u64;
    let mut rtp = RtpPacketizer::new(ssrc, PAYLOAD_TYPE_PS, rand::random());
    // A random start, as RFC 3550 §5.1 asks of RTP timestamps; the PS
    // clock follows it so receivers can use either.
    let mut pts: u64 = u64::from(rand::random::<u32>() >> 1);
    let aac_start = pts;
    let mut ps = BytesMut::with_capacity(64 * 1024);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / DEMO_FPS);
    // Burst keeps the average rate after a stall, like an encoder's output.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut out = MediaOut::new(sink, stats.clone());
    'outer: loop {
        for unit in clip.units() {
            tokio::select! {
                _ = stop.cancelled() => break 'outer,
                _ = tick.tick() => {}
            }
            ps.clear();
            muxer.write_video(&unit.nals, pts, unit.keyframe, &mut ps);
            if g711 {
                for k in 0..audio_per_frame {
                    muxer.write_audio(&tone.next_frame(), pts + k * 1800, &mut ps);
                }
            }
            if let Some(aac) = &aac {
                // Every AAC frame that starts before the next video frame.
                while aac_start + aac.ticks(aac_sent) < pts + frame_ticks {
                    let n = aac.frames.len() as u64;
                    if let Some(f) = aac.frames.get((aac_sent % n) as usize) {
                        muxer.write_audio(f, aac_start + aac.ticks(aac_sent), &mut ps);
                    }
                    aac_sent += 1;
                }
            }
            for pkt in rtp.packetize(&ps, pts as u32) {
                if !out.send(&pkt).await {
                    break 'outer;
                }
            }
            stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            pts = pts.wrapping_add(frame_ticks);
        }
        if clip.is_empty() {
            stop.cancelled().await;
            break;
        }
    }
    stats.active_streams.fetch_sub(1, Ordering::Relaxed);
    tracing::info!("stream stopped");
}

/// The local IP the OS would use to reach `server` (no packet is sent).
async fn route_to(server: SocketAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = UdpSocket::bind(any).await?;
    probe
        .connect(server)
        .await
        .with_context(|| format!("sim camera: no route to {server}"))?;
    Ok(probe.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_follows_gateway_config() {
        let mut cfg = Config::default();
        cfg.sip.listen = "0.0.0.0:15062".parse().unwrap();
        cfg.sip
            .device_passwords
            .insert(cfg.demo.device_id.clone(), "secret".into());
        cfg.demo.sip_port = 15070;
        let c = SimCameraConfig::from_config(&cfg);
        assert_eq!(c.server, "127.0.0.1:15062".parse().unwrap());
        assert_eq!(c.bind, "127.0.0.1:15070".parse().unwrap());
        assert_eq!(c.device_id, "34020000001320000001");
        assert_eq!(c.channel_id, "34020000001310000001");
        assert_eq!(c.server_id, cfg.sip.server_id);
        assert_eq!(c.realm, cfg.sip.realm);
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert!(c.answer_invites);

        cfg.sip.password.clear();
        cfg.sip.device_passwords.clear();
        assert_eq!(SimCameraConfig::from_config(&cfg).password, None);
    }

    #[test]
    fn nth_id_counts_in_decimal_and_keeps_the_width() {
        assert_eq!(
            nth_id("34020000001320000001", 49).unwrap(),
            "34020000001320000050"
        );
        assert_eq!(nth_id("0099", 1).unwrap(), "0100");
        assert!(nth_id("99", 1).is_err());
        assert!(nth_id("camera-1", 1).is_err());
    }
}
