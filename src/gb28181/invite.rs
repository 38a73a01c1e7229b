//! On-demand live sessions (GB/T 28181-2016 §9.2.2): the `gb` stream
//! source. A first viewer of `gb/{device}/{channel}` leads here: bind an
//! RTP port, make an SSRC, INVITE the channel with our SDP offer, take the
//! answer, and pump RTP/PS into the stream's hub until the viewers go (we
//! send BYE) or the device goes (its BYE, or silence).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::history::{HistoryKind, history_offer};
use super::platform::{DeviceChange, GbPlatform};
use super::playback::{GbPlayback, PlaybackRange, range_of_key_segment};
use super::reports::Report;
use super::sdp::{GbSdp, Setup, Transport};
use super::ssrc::{Ssrc, SsrcKind};
use crate::ingest::packets::PacketSource;
use crate::ingest::port_pool::{BoundPair, BoundTcp, PortHold};
use crate::ingest::shared_udp::SharedUdpPort;
use crate::ingest::source_pin::SourcePin;
use crate::ingest::tcp::{accept_device, connect_device};
use crate::ingest::transport::{AfterLoss, MediaTransport, SsrcPolicy};
use crate::media::hub::Hub;
use crate::media::jitter::{JitterBuffer, JitterConfig, JitterStats};
use crate::media::ps::PsEvent;
use crate::media::rtcp_rr::{ReceiverReporter, ReceptionCounts};
use crate::media::rtp::{RtpPacket, is_rtcp, peek_ssrc};
use crate::media::rtp_ps::RtpPsReceiver;
use crate::metrics::{self, label};
use crate::sip::invite::{Call, CallControl, InviteError, InviteRequest, invite};
use crate::streams::{
    SourceExit, SourceHandle, SourceOptions, SourceProvider, StartError, StartFuture, StreamKey,
};

/// RFC 3550 §6.2: the minimum RTCP interval.
const RR_INTERVAL: Duration = Duration::from_secs(5);

/// The `gb` scheme's source provider: live `gb/{device}/{channel}` and
/// playback `gb/{device}/{channel}/playback/{start}-{end}` (see
/// [`super::playback::playback_key`]).
pub struct GbSources {
    platform: Arc<GbPlatform>,
    /// Bound on first use, so a gateway that never uses it holds no port.
    shared: OnceCell<Arc<SharedUdpPort>>,
    /// Trick-play control of each running playback, by stream key.
    playbacks: Arc<std::sync::Mutex<HashMap<StreamKey, Arc<GbPlayback>>>>,
}

impl GbSources {
    pub fn new(platform: Arc<GbPlatform>) -> Self {
        Self {
            platform,
            shared: OnceCell::new(),
            playbacks: Arc::default(),
        }
    }

    /// Pause/resume/scale/seek of a running playback stream.
    pub fn playback_control(&self, key: &StreamKey) -> Option<Arc<GbPlayback>> {
        super::platform::lock(&self.playbacks).get(key).cloned()
    }

    async fn shared_port(&self) -> Result<Arc<SharedUdpPort>, StartError> {
        let config = self.platform.config();
        let media = &config.media;
        self.shared
            .get_or_try_init(|| SharedUdpPort::bind(media.rtp_bind, media.shared_rtp_port))
            .await
            .cloned()
            .map_err(|e| {
                warn!(
                    port = media.shared_rtp_port,
                    "cannot bind the shared RTP port: {e}"
                );
                StartError::NoPort
            })
    }
}

impl SourceProvider for GbSources {
    fn playback(&self, key: &StreamKey) -> Option<Arc<dyn crate::streams::PlaybackControl>> {
        self.playback_control(key)
            .map(|c| c as Arc<dyn crate::streams::PlaybackControl>)
    }

    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        Box::pin(self.start_key(key, hub, None))
    }

    /// `?transport=udp|udp_shared|tcp_passive|tcp_active` overrides
    /// `media.transport` for this stream.
    fn start_with<'a>(
        &'a self,
        key: &'a StreamKey,
        hub: Arc<Hub>,
        options: &'a SourceOptions,
    ) -> StartFuture<'a> {
        Box::pin(async move {
            let transport = match options.get("transport").map(str::parse::<MediaTransport>) {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => return Err(StartError::NotFound(format!("{key}: {e}"))),
            };
            self.start_key(key, hub, transport).await
        })
    }
}

impl GbSources {
    async fn start_key(
        &self,
        key: &StreamKey,
        hub: Arc<Hub>,
        transport: Option<MediaTransport>,
    ) -> Result<SourceHandle, StartError> {
        let segments: Vec<&str> = key.segments().collect();
        match segments.as_slice() {
            [device, channel] => {
                let platform = self.platform.clone();
                start_session(&platform, Some(self), device, channel, hub, transport, None)
                    .await
                    .map(|(handle, _)| handle)
            }
            [device, channel, "playback", range] => {
                let range = range_of_key_segment(range).ok_or_else(|| {
                    StartError::NotFound(format!("{key}: the range must be {{start}}-{{end}}"))
                })?;
                self.start_playback(key, device, channel, range, hub, transport)
                    .await
            }
            _ => Err(StartError::NotFound(format!(
                "{key}: expected gb/{{device}}/{{channel}}[/playback/{{start}}-{{end}}]"
            ))),
        }
    }

    async fn start_playback(
        &self,
        key: &StreamKey,
        device: &str,
        channel: &str,
        range: PlaybackRange,
        hub: Arc<Hub>,
        transport: Option<MediaTransport>,
    ) -> Result<SourceHandle, StartError> {
        let history = HistoryParams::new(
            &self.platform,
            device,
            channel,
            range,
            HistoryKind::Playback,
            None,
        );
        let paused = history.paused.clone();
        let platform = self.platform.clone();
        let (source, call) = start_session(
            &platform,
            Some(self),
            device,
            channel,
            hub,
            transport,
            Some(history),
        )
        .await?;
        let control = Arc::new(GbPlayback::new(call, paused));
        super::platform::lock(&self.playbacks).insert(key.clone(), control.clone());
        // The control goes with the session: forget it when the task ends.
        let playbacks = self.playbacks.clone();
        let key = key.clone();
        let mut inner = source.task;
        let task = tokio::spawn(async move {
            let reason = (&mut inner)
                .await
                .unwrap_or_else(|e| SourceExit::Failed(format!("playback task failed: {e}")));
            let mut table = super::platform::lock(&playbacks);
            if table.get(&key).is_some_and(|c| Arc::ptr_eq(c, &control)) {
                table.remove(&key);
            }
            reason
        });
        Ok(SourceHandle {
            cancel: source.cancel,
            task,
        })
    }
}

/// What makes a session a recording (GB/T 28181-2016 §9.8, §9.9) rather
/// than live video.
pub(crate) struct HistoryParams {
    pub(crate) range: PlaybackRange,
    pub(crate) kind: HistoryKind,
    /// Downloads: every RTP payload (the PS byte stream), in order. The
    /// writer is a file, faster than any device's download speed.
    pub(crate) ps_sink: Option<super::ps_sink::PsSink>,
    pub(crate) end_of_file: EndOfFile,
    /// Set while a viewer has the playback paused: no RTP is expected.
    pub(crate) paused: Arc<AtomicBool>,
}

impl HistoryParams {
    /// Subscribes to the device's reports now, before the INVITE: a short
    /// recording may end at once.
    pub(crate) fn new(
        platform: &GbPlatform,
        device: &str,
        channel: &str,
        range: PlaybackRange,
        kind: HistoryKind,
        ps_sink: Option<super::ps_sink::PsSink>,
    ) -> Self {
        Self {
            range,
            kind,
            ps_sink,
            end_of_file: EndOfFile {
                device: device.to_owned(),
                channel: channel.to_owned(),
                reports: platform.report_tx.subscribe(),
            },
            paused: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Which device report ends a recorded session: `MediaStatus` 121 from
/// the channel (GB/T 28181-2016 A.2.5 MediaStatus). Devices name only the
/// channel, so two recordings of one channel at once both end on it.
pub(crate) struct EndOfFile {
    device: String,
    channel: String,
    reports: tokio::sync::broadcast::Receiver<(String, Report)>,
}

impl EndOfFile {
    async fn wait(&mut self) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.reports.recv().await {
                Ok((
                    device,
                    Report::MediaStatus {
                        device_id,
                        notify_type,
                    },
                )) if notify_type == "121"
                    && device == self.device
                    && (device_id == self.channel || device_id == self.device) =>
                {
                    return;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

/// Our end of the media path, bound before the offer names its port.
enum Ingress {
    Udp(BoundPair),
    Shared(Arc<SharedUdpPort>),
    TcpPassive(BoundTcp<TcpListener>),
    TcpActive(BoundTcp<TcpSocket>),
}

impl Ingress {
    fn port(&self) -> u16 {
        match self {
            Self::Udp(p) => p.port,
            Self::Shared(s) => s.port,
            Self::TcpPassive(t) => t.port,
            Self::TcpActive(t) => t.port,
        }
    }
}

/// What the device's 200 OK said about its media.
struct Answer {
    ssrc: Option<u32>,
    ip: Option<IpAddr>,
    port: Option<u16>,
}

/// INVITE `channel` of `device` for live video, or for a recording when
/// `history` is given, and pump its media into `hub`. Returns the running
/// session and its dialog (for playback control). Without `shared` (the
/// provider owning the shared port) `udp_shared` falls back to `udp`.
pub(crate) async fn start_session(
    platform: &Arc<GbPlatform>,
    shared: Option<&GbSources>,
    device: &str,
    channel: &str,
    hub: Arc<Hub>,
    transport: Option<MediaTransport>,
    mut history: Option<HistoryParams>,
) -> Result<(SourceHandle, CallControl), StartError> {
    let platform = platform.clone();
    let config = platform.config();
    let mut transport = transport.unwrap_or(config.media.transport);
    if transport == MediaTransport::UdpShared && shared.is_none() {
        transport = MediaTransport::Udp;
    }
    let route = platform.route_for_channel(device, channel)?;
    let ingress = match transport {
        MediaTransport::Udp => Ingress::Udp(
            platform
                .ports
                .bind_pair()
                .await
                .map_err(|_| StartError::NoPort)?,
        ),
        MediaTransport::UdpShared => match shared {
            Some(sources) => Ingress::Shared(sources.shared_port().await?),
            None => return Err(StartError::NoPort),
        },
        MediaTransport::TcpPassive => Ingress::TcpPassive(
            platform
                .ports
                .bind_tcp_listener()
                .map_err(|_| StartError::NoPort)?,
        ),
        MediaTransport::TcpActive => Ingress::TcpActive(
            platform
                .ports
                .bind_tcp_socket()
                .map_err(|_| StartError::NoPort)?,
        ),
    };
    let ssrc = platform.allocate_ssrc(if history.is_some() {
        SsrcKind::History
    } else {
        SsrcKind::Live
    })?;
    let ip = config.advertised_ip().to_string();
    let mut offer = match &history {
        Some(h) => history_offer(
            &config.sip.server_id,
            &ip,
            ingress.port(),
            ssrc.as_str(),
            channel,
            h.range,
            h.kind,
        ),
        None => GbSdp::live_offer(&config.sip.server_id, &ip, ingress.port(), ssrc.as_str()),
    };
    if transport.is_tcp()
        && let Some(m) = offer.media.first_mut()
    {
        m.transport = Transport::TcpRtpAvp;
        // Our role (RFC 4145): passive = we listen, active = we connect.
        m.setup = Some(if transport == MediaTransport::TcpPassive {
            Setup::Passive
        } else {
            Setup::Active
        });
        m.connection_new = true;
    }
    let request = InviteRequest {
        request_uri: format!("sip:{channel}@{}", route.addr),
        from_uri: platform.our_uri(),
        contact_uri: format!("sip:{}@{}", config.sip.server_id, platform.sip.advertised),
        subject: format!("{channel}:{},{}:0", ssrc.as_str(), config.sip.server_id),
        sdp: offer.build(),
        dest: route.addr,
        transport: route.transport,
    };
    // A shared-port stream is routed by the offered SSRC before the INVITE
    // goes out: a device may send its first packets before its 200 OK has
    // been processed here, and those must not be dropped as unknown.
    let early = match &ingress {
        Ingress::Shared(port) => match port.subscribe(ssrc.value()) {
            Ok(stream) => Some(stream),
            Err(e) => {
                platform.release_ssrc(ssrc);
                return Err(StartError::Failed(e.to_string()));
            }
        },
        _ => None,
    };
    info!(port = ingress.port(), ssrc = ssrc.as_str(), %transport, "sending INVITE");
    let sent_at = Instant::now();
    let call = match invite(&platform.sip, request, config.sip.invite_timeout).await {
        Ok(call) => call,
        Err(e) => {
            platform.release_ssrc(ssrc);
            let (outcome, err) = match e {
                InviteError::Timeout(t) => ("timeout", StartError::Timeout(t)),
                // The device does not know the channel: to the viewer that
                // is "no such stream", as when the catalog lacks it.
                InviteError::Rejected { code: 404, reason } => (
                    "rejected",
                    StartError::NotFound(format!(
                        "{device}/{channel}: device answered 404 {reason}"
                    )),
                ),
                InviteError::Rejected { code, reason } => {
                    ("rejected", StartError::Rejected { code, reason })
                }
                other => ("error", StartError::Failed(other.to_string())),
            };
            metrics::get()
                .invites
                .get_or_create(&label("outcome", outcome))
                .inc();
            warn!("INVITE failed: {err}");
            return Err(err);
        }
    };
    metrics::get()
        .invites
        .get_or_create(&label("outcome", "ok"))
        .inc();
    metrics::get()
        .media_streams
        .get_or_create(&label("transport", transport.as_str()))
        .inc();
    // The device may answer with its own SSRC (its `y=`), or none.
    let answer = match GbSdp::parse(&call.answer_sdp) {
        Ok(sdp) => {
            let video = sdp.video();
            Answer {
                ssrc: sdp.ssrc_value(),
                ip: video
                    .and_then(|m| m.connection_ip.as_deref())
                    .and_then(|ip| ip.trim().parse().ok())
                    .or_else(|| sdp.connection_addr()),
                port: video.map(|m| m.port).filter(|p| *p != 0),
            }
        }
        Err(e) => {
            warn!("unreadable SDP answer ({e}); keeping the offered SSRC");
            Answer {
                ssrc: None,
                ip: None,
                port: None,
            }
        }
    };
    // Packets already routed by the offered SSRC show that the device
    // uses it, whatever its answer left out.
    let offered_in_use = early.as_ref().is_some_and(|s| !s.rx.is_empty());
    let expect_ssrc = match (answer.ssrc, config.media.ssrc_policy) {
        (Some(s), _) => Some(s),
        (None, SsrcPolicy::Strict) => Some(ssrc.value()),
        (None, SsrcPolicy::Learn) if offered_in_use => Some(ssrc.value()),
        (None, SsrcPolicy::Learn) => None,
    };
    info!(ssrc = ?expect_ssrc, device_media = ?answer.ip.zip(answer.port), "device accepted INVITE");
    // Shared-port streams register now, so their first packets are routed.
    let ingress = match ingress {
        Ingress::Shared(port) => {
            // The early route is kept when it is the right one; otherwise
            // the new one is made before the early one goes (on return).
            let stream = match (expect_ssrc, early) {
                (Some(s), Some(early)) if s == ssrc.value() => Ok(early),
                (Some(s), _) => port.subscribe(s),
                (None, _) => Ok(port.subscribe_learning(answer.ip.unwrap_or(route.addr.ip()))),
            };
            match stream {
                Ok(stream) => Prepared::Ready(PacketSource::Shared(stream)),
                Err(e) => {
                    platform.release_ssrc(ssrc);
                    let _ = call.bye().await;
                    return Err(StartError::Failed(e.to_string()));
                }
            }
        }
        Ingress::Udp(pair) => Prepared::Ready(PacketSource::udp(pair)),
        Ingress::TcpPassive(l) => Prepared::Accept(l),
        Ingress::TcpActive(s) => match (answer.ip, answer.port) {
            (Some(ip), Some(port)) => Prepared::Connect(s, SocketAddr::new(ip, port)),
            _ => {
                platform.release_ssrc(ssrc);
                let _ = call.bye().await;
                return Err(StartError::Failed(
                    "tcp_active: the device's answer names no media address".into(),
                ));
            }
        },
    };
    let control = call.control();
    let cancel = CancellationToken::new();
    let session = MediaSession {
        platform: platform.clone(),
        device: device.to_owned(),
        hub,
        expect_ssrc,
        device_media: answer
            .ip
            .zip(answer.port)
            .map(|(ip, p)| SocketAddr::new(ip, p)),
        device_ip: answer.ip.or(Some(route.addr.ip())),
        pin_ip: match answer.ip {
            Some(ip) if ip != route.addr.ip() => None,
            _ => Some(route.addr.ip()),
        },
        ssrc,
        sent_at,
        rtp_timeout: config.media.rtp_timeout,
        jitter: JitterConfig {
            depth: config.media.reorder_depth,
            max_delay: config.media.reorder_delay,
        },
        tcp_timeout: config.media.tcp_connect_timeout,
        after_loss: config.media.after_loss,
        default_g711: config.media.default_g711.codec(),
        ps_sink: history.as_mut().and_then(|h| h.ps_sink.take()),
        paused: history.as_ref().map(|h| h.paused.clone()),
    };
    let end_of_file = history.map(|h| h.end_of_file);
    let span = tracing::Span::current();
    let task = tokio::spawn(
        session
            .run(call, ingress, end_of_file, cancel.clone())
            .instrument(span),
    );
    Ok((SourceHandle { cancel, task }, control))
}

/// The packet source, or the TCP connection still to be made.
enum Prepared {
    Ready(PacketSource),
    Accept(BoundTcp<TcpListener>),
    Connect(BoundTcp<TcpSocket>, SocketAddr),
}

struct MediaSession {
    platform: Arc<GbPlatform>,
    /// Whose offline, unregistration or restart ends the session.
    device: String,
    hub: Arc<Hub>,
    /// `None`: learn it from the first packet (answer without `y=`).
    expect_ssrc: Option<u32>,
    /// RTP address in the device's answer (RTCP goes to its port + 1).
    device_media: Option<SocketAddr>,
    device_ip: Option<IpAddr>,
    /// The IP RTP must come from before the first packet pins the port
    /// (`None`: the device's SDP named another IP than its SIP one, as
    /// behind NAT; the first packet with the right SSRC pins then).
    pin_ip: Option<IpAddr>,
    ssrc: Ssrc,
    sent_at: Instant,
    rtp_timeout: Duration,
    jitter: JitterConfig,
    tcp_timeout: Duration,
    after_loss: AfterLoss,
    /// `media.default_g711`, for audio no PSM declares.
    default_g711: crate::media::frame::Codec,
    /// Downloads: the PS byte stream goes here too.
    ps_sink: Option<super::ps_sink::PsSink>,
    /// Set while a viewer has the playback paused.
    paused: Option<Arc<AtomicBool>>,
}

impl MediaSession {
    /// Pump media until cancelled (then BYE), the device ends the call,
    /// its media stops for `rtp_timeout`, or it goes offline or restarts
    /// (see [`super::platform::DeviceChange`]). A recording also ends at
    /// the device's end-of-file notify (then we BYE and return
    /// [`SourceExit::Finished`]).
    async fn run(
        self,
        mut call: Call,
        prepared: Prepared,
        mut end_of_file: Option<EndOfFile>,
        cancel: CancellationToken,
    ) -> SourceExit {
        let eof = async {
            match end_of_file.as_mut() {
                Some(e) => e.wait().await,
                None => std::future::pending().await,
            }
        };
        let device_change = self.platform.device_change(&self.device);
        let exit = tokio::select! {
            _ = cancel.cancelled() => None,
            r = call.ended() => Some(SourceExit::Failed(r)),
            r = self.connect_and_pump(prepared) => Some(r),
            change = device_change => Some(match change {
                DeviceChange::Gone(why) => SourceExit::DeviceGone(why),
                DeviceChange::Restarted => SourceExit::DeviceRestarted,
            }),
            _ = eof => {
                info!("device reported end of file");
                Some(SourceExit::Finished)
            }
        };
        self.platform.release_ssrc(self.ssrc);
        match exit {
            None => {
                metrics::get().byes_sent.inc();
                if let Err(e) = call.bye().await {
                    warn!("BYE failed: {e}");
                } else {
                    info!("sent BYE");
                }
                SourceExit::Stopped
            }
            // The device lost this call when it restarted: a BYE would
            // only earn a 481. Forget the dialog.
            Some(SourceExit::DeviceRestarted) => {
                info!("device restarted: dialog forgotten");
                call.forget();
                SourceExit::DeviceRestarted
            }
            Some(SourceExit::Failed(r)) if r.contains("BYE") => SourceExit::Failed(r),
            Some(exit) => {
                // The device is gone or silent; tell it anyway, harmlessly,
                // without making the stream wait for a device that may
                // never answer (a BYE's retransmissions last 32 s).
                metrics::get().byes_sent.inc();
                tokio::spawn(
                    async move {
                        if let Err(e) = call.bye().await {
                            debug!("BYE to a silent device: {e}");
                        }
                    }
                    .in_current_span(),
                );
                exit
            }
        }
    }

    async fn connect_and_pump(&self, prepared: Prepared) -> SourceExit {
        // A TCP media port stays out of the pool while its connection
        // lives, not just while its listener or unconnected socket does.
        let mut _port_hold: Option<PortHold> = None;
        let source = match prepared {
            Prepared::Ready(s) => Ok(s),
            Prepared::Accept(listener) => {
                let (listener, hold) = listener.split();
                _port_hold = Some(hold);
                match accept_device(&listener, self.device_ip, self.tcp_timeout).await {
                    Ok(stream) => PacketSource::tcp(stream).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Prepared::Connect(socket, addr) => {
                let (socket, hold) = socket.split();
                _port_hold = Some(hold);
                match connect_device(socket, addr, self.tcp_timeout).await {
                    Ok(stream) => PacketSource::tcp(stream).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match source {
            Ok(source) => self.pump(source).await,
            Err(e) => {
                warn!("TCP media: {e}");
                SourceExit::Failed(e)
            }
        }
    }

    /// Read packets from any transport, reorder (UDP), demux, publish.
    ///
    /// Inactivity is one deadline, `rtp_timeout` after the last packet
    /// accepted for this stream (right SSRC, parsable). Other wake-ups
    /// (receiver reports, the reorder buffer) never move it, and packets
    /// of strangers never feed it. A paused playback is silent by design
    /// and keeps pushing it forward.
    async fn pump(&self, mut source: PacketSource) -> SourceExit {
        let mut receiver = match self.expect_ssrc {
            Some(s) => RtpPsReceiver::with_ssrc(s),
            None => RtpPsReceiver::new(),
        };
        receiver.set_resume_at_keyframe(self.after_loss == AfterLoss::Keyframe);
        receiver.set_default_g711(self.default_g711);
        let mut jitter = source.unordered().then(|| JitterBuffer::new(self.jitter));
        let mut counters = Counters::default();
        let mut events = Vec::new();
        let mut ordered = Vec::new();
        let mut learned: Option<u32> = self.expect_ssrc;
        let mut source_addr: Option<SocketAddr> = None;
        let mut reporter = ReceiverReporter::default();
        let mut base_seq: Option<u64> = None;
        let our_ssrc = self.ssrc.value();
        let mut rr_tick = tokio::time::interval(RR_INTERVAL);
        rr_tick.reset();
        let mut last_packet = Instant::now();
        let mut last_accepted = tokio::time::Instant::now();
        // A restarted call waits through the restart schedule's step for
        // its first packet; once media flows, `rtp_timeout` applies.
        let mut got_media = false;
        let limit = |got_media: bool| match self.hub.restart_patience() {
            Some(p) if !got_media => p.max(self.rtp_timeout),
            _ => self.rtp_timeout,
        };
        let silence = tokio::time::sleep_until(last_accepted + limit(false));
        tokio::pin!(silence);
        let mut pin = SourcePin::new(self.pin_ip);
        loop {
            let deadline = jitter.as_ref().and_then(JitterBuffer::deadline);
            let received = tokio::select! {
                r = source.recv() => r,
                _ = &mut silence => {
                    let now = tokio::time::Instant::now();
                    let paused = self.paused.as_ref().is_some_and(|p| p.load(Ordering::Relaxed));
                    if paused {
                        last_accepted = now;
                    }
                    let waited = limit(got_media);
                    let due = last_accepted + waited;
                    if due > now {
                        // Packets came since it was armed: re-arm it from
                        // the last one.
                        silence.as_mut().reset(due);
                        continue;
                    }
                    return SourceExit::NoMedia(waited);
                }
                _ = sleep_until(deadline) => {
                    if let Some(j) = jitter.as_mut() {
                        j.poll(Instant::now(), &mut ordered);
                    }
                    self.deliver(&mut receiver, &mut ordered, &mut events, &mut counters, &jitter, &source);
                    continue;
                }
                _ = rr_tick.tick() => {
                    if last_packet.elapsed() < RR_INTERVAL * 2 {
                        self.send_report(&source, &receiver, source_addr, base_seq, our_ssrc, &mut reporter).await;
                    }
                    continue;
                }
            };
            let (data, from) = match received {
                Err(e) => {
                    return SourceExit::Failed(format!("media transport: {e} ({})", e.kind()));
                }
                Ok(d) => d,
            };
            // Only the device's source counts, for media and for liveness.
            if !pin.admit(from) {
                metrics::get()
                    .rtp_errors
                    .get_or_create(&label("kind", "foreign_source"))
                    .inc();
                debug!(?from, pinned = ?pin.pinned(), "RTP from another source dropped");
                continue;
            }
            last_packet = Instant::now();
            let m = metrics::get();
            if is_rtcp(&data) {
                m.rtp_errors
                    .get_or_create(&label("kind", "rtcp_on_rtp_port"))
                    .inc();
                continue;
            }
            let peeked = peek_ssrc(&data);
            match learned {
                Some(s) if peeked != Some(s) => {
                    m.rtp_errors
                        .get_or_create(&label("kind", "unknown_ssrc"))
                        .inc();
                    debug!(?from, ssrc = ?peeked, "packet with unexpected SSRC dropped");
                    continue;
                }
                None => {
                    // Learning: only from the device's address when known.
                    let from_device = match (from, self.device_ip) {
                        (Some(f), Some(ip)) => f.ip() == ip,
                        _ => true,
                    };
                    if !from_device || peeked.is_none() {
                        m.rtp_errors
                            .get_or_create(&label("kind", "unknown_ssrc"))
                            .inc();
                        continue;
                    }
                    info!(ssrc = ?peeked, ?from, "SSRC learned from the first packet");
                    learned = peeked;
                }
                _ => {}
            }
            if source_addr.is_none() {
                source_addr = from;
                debug!(?from, "first RTP packet");
            }
            let packet = match RtpPacket::parse(data) {
                Ok(p) => p,
                Err(e) => {
                    m.rtp_errors.get_or_create(&label("kind", e.kind())).inc();
                    continue;
                }
            };
            last_accepted = tokio::time::Instant::now();
            got_media = true;
            match jitter.as_mut() {
                Some(j) => {
                    let now = Instant::now();
                    j.push(packet, now, &mut ordered);
                    j.poll(now, &mut ordered);
                }
                None => ordered.push(packet),
            }
            if base_seq.is_none() && !ordered.is_empty() {
                base_seq = Some(u64::from(ordered[0].sequence));
            }
            self.deliver(
                &mut receiver,
                &mut ordered,
                &mut events,
                &mut counters,
                &jitter,
                &source,
            );
        }
    }

    async fn send_report(
        &self,
        source: &PacketSource,
        receiver: &RtpPsReceiver,
        source_addr: Option<SocketAddr>,
        base_seq: Option<u64>,
        our_ssrc: u32,
        reporter: &mut ReceiverReporter,
    ) {
        let (Some(socket), Some(ssrc), Some(base)) =
            (source.rtcp_socket(), receiver.ssrc(), base_seq)
        else {
            return;
        };
        // The device's RTCP port: its answered RTP port + 1, else the port
        // its RTP comes from + 1 (RFC 3550 §11).
        let Some(rtp_addr) = self.device_media.or(source_addr) else {
            return;
        };
        let dest = SocketAddr::new(rtp_addr.ip(), rtp_addr.port().wrapping_add(1));
        let seq = receiver.sequence();
        let ext_max = seq.extended_max();
        let mut pkt = Vec::with_capacity(32);
        reporter.report(
            our_ssrc,
            ReceptionCounts {
                source_ssrc: ssrc,
                base_seq: base.min(ext_max),
                extended_max: ext_max,
                received: seq.received,
            },
            &mut pkt,
        );
        match socket.send_to(&pkt, dest).await {
            Ok(_) => {
                metrics::get().rtcp_receiver_reports.inc();
            }
            Err(e) => debug!(%dest, "RTCP receiver report not sent: {e}"),
        }
    }

    fn deliver(
        &self,
        receiver: &mut RtpPsReceiver,
        ordered: &mut Vec<RtpPacket>,
        events: &mut Vec<PsEvent>,
        counters: &mut Counters,
        jitter: &Option<JitterBuffer>,
        source: &PacketSource,
    ) {
        let m = metrics::get();
        for packet in ordered.drain(..) {
            if let Some(sink) = &self.ps_sink {
                // Never waits on the disk: a full queue drops and counts.
                sink.push(packet.payload.clone());
            }
            receiver.push(packet, events);
        }
        counters.update(receiver, jitter.as_ref().map(JitterBuffer::stats), source);
        for event in events.drain(..) {
            match event {
                PsEvent::Frame(frame) => {
                    if counters.first_frame {
                        counters.first_frame = false;
                        m.invite_first_frame_seconds
                            .observe(self.sent_at.elapsed().as_secs_f64());
                    }
                    m.frames_demuxed.inc();
                    self.hub.publish(frame);
                }
                PsEvent::Info(info) => self.hub.set_info(info),
                PsEvent::Error(e) => {
                    m.ps_demux_errors
                        .get_or_create(&label("kind", e.kind()))
                        .inc();
                    debug!("PS demux: {e}");
                }
            }
        }
    }
}

/// Last values pushed to the process-wide counters, to add only deltas.
struct Counters {
    first_frame: bool,
    lost: u64,
    copied: u64,
    psm_repaired: u64,
    jitter: JitterStats,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            first_frame: true,
            lost: 0,
            copied: 0,
            psm_repaired: 0,
            jitter: JitterStats::default(),
        }
    }
}

impl Counters {
    fn update(&mut self, rx: &RtpPsReceiver, jitter: Option<&JitterStats>, source: &PacketSource) {
        let m = metrics::get();
        let lost = rx.stats().lost;
        if lost > self.lost {
            m.rtp_packets_lost.inc_by(lost - self.lost);
            self.lost = lost;
        }
        let repaired = rx.demux_stats().psm_repaired;
        if repaired > self.psm_repaired {
            m.ps_psm_repaired.inc_by(repaired - self.psm_repaired);
            self.psm_repaired = repaired;
        }
        let copied = rx.bytes_copied() + source.bytes_copied();
        if copied > self.copied {
            m.payload_bytes_copied.inc_by(copied - self.copied);
            self.copied = copied;
        }
        if let Some(j) = jitter {
            let pairs = [
                ("reordered", j.reordered, self.jitter.reordered),
                ("late", j.late, self.jitter.late),
                ("duplicate", j.duplicates, self.jitter.duplicates),
                ("lost", j.lost, self.jitter.lost),
            ];
            for (kind, now, before) in pairs {
                if now > before {
                    m.rtp_reorder
                        .get_or_create(&label("kind", kind))
                        .inc_by(now - before);
                }
            }
            self.jitter = j.clone();
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
