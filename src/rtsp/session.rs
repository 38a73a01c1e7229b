//! Sans-IO state machine of one RTSP connection (RFC 2326).
//!
//! Bytes from the socket go in through [`Connection::receive`]; answers and
//! media come out as [`Transmit`]s and the things only the driver can do
//! (open a stream, bind UDP ports, start or stop pulling frames) come out
//! as [`Event`]s. The driver reports back with [`Connection::stream_opened`]
//! and [`Connection::udp_bound`]. No sockets, clocks or tasks in here: time
//! is passed in, randomness comes from a seeded generator.
//!
//! Requests are answered strictly in order (§9.1 pipelining): while one
//! waits for the driver (a stream start, a port bind), later requests stay
//! buffered.
//!
//! Recordings (playback keys, or any stream whose source takes trick-play
//! commands) run on their own play time (§3.6, §C.1.5): DESCRIBE gives
//! `a=range:npt=0-LENGTH` and a `Media-Range` with the absolute times
//! (RFC 7826 §18.30), PLAY answers the position actually played in
//! `Range` (§12.29) with an `RTP-Info` (§12.33) whose `rtptime` maps it,
//! and every RTP timestamp is `base + position × clock`. ffmpeg adds the
//! `Range` start to its timestamps; GStreamer makes it the segment start;
//! RTSP 1.0 clients ignore `Media-Range`. A seek re-anchors the timeline
//! at its target and tells the driver to drop what is already queued
//! ([`Event::Flush`]); a pause holds the viewer's place in the stream.
//!
//! One connection carries at most one session (§12.37). Sessions over
//! TCP-interleaved transport live as long as the connection; others expire
//! after `session_timeout` without a request or client RTCP (§12.37).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rtsp_types::headers;
use rtsp_types::headers::{RtpLowerTransport, RtpProfile, Transport, Transports};
use rtsp_types::{
    Message, Method, ParseError, Request, Response, ResponseBuilder, StatusCode, Url, Version,
};
use tracing::{debug, warn};

use super::auth::{AuthError, Authenticator, Presented, hashtoken};
use super::packetize::{DEFAULT_MTU, Fragment, Head, Packetizer, Payload, RtpHeader};
use super::receiver_report;
use super::rtcp::{self, MediaClock, SR_INTERVAL, SenderReport};
use super::sdp::{self, TrackDesc};
use crate::media::frame::{Codec, Frame, StreamInfo};
use crate::metrics::{self, label};
use crate::streams::{PlaybackCommand, StartError, StreamKey};

/// Largest request (headers and body) accepted; a client that sends more
/// without completing a message is answered 400 and disconnected.
pub const MAX_REQUEST: usize = 64 * 1024;

const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
const SERVER: &str = concat!("camgate/", env!("CARGO_PKG_VERSION"));

/// Tuning of one connection.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Seconds announced in `Session: …;timeout=` and enforced.
    pub session_timeout: u32,
    /// RTP payload budget per packet.
    pub mtu: usize,
    /// Access policy; `None` lets everyone in.
    pub auth: Option<Arc<Authenticator>>,
    /// A connection must complete its first request this long after
    /// opening, and any started request this long after its first byte
    /// (`limits.request_timeout`).
    pub request_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            session_timeout: 60,
            mtu: DEFAULT_MTU,
            auth: None,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Lower transport of a session, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Udp,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Teardown,
    Timeout,
    ConnectionClosed,
    /// The stream the session watched went away (the source ended).
    StreamEnded,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Teardown => "teardown",
            Self::Timeout => "timeout",
            Self::ConnectionClosed => "connection closed",
            Self::StreamEnded => "stream ended",
        }
    }
}

/// Something only the driver can do.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Open `key` (hold the viewer from now on, replacing any previous
    /// one) and answer with [`Connection::stream_opened`].
    OpenStream(StreamKey),
    /// Bind an even/odd UDP port pair for `track`, to send to the client's
    /// `client_rtp`/`client_rtcp` ports; answer with [`Connection::udp_bound`].
    BindUdp {
        track: u8,
        client_rtp: u16,
        client_rtcp: u16,
    },
    SessionStarted {
        id: String,
        key: StreamKey,
        transport: TransportKind,
    },
    /// Start pulling frames from the viewer and feed them to
    /// [`Connection::push_frame`].
    StartMedia,
    /// Stop pulling frames (PAUSE, TEARDOWN).
    StopMedia,
    /// Stop pulling frames but keep the place in the stream (PAUSE of a
    /// recording: its source pauses too, and a later [`Event::StartMedia`]
    /// continues with the very next frame).
    HoldMedia,
    /// Whatever the viewer has not been given yet is stale (a jump in a
    /// recording): from now on pull only frames published after this
    /// point, starting at a keyframe.
    Flush,
    /// The session is gone: drop the viewer and the UDP sockets.
    SessionEnded {
        id: String,
        key: StreamKey,
        reason: EndReason,
        packets: u64,
    },
    /// Release a viewer held since DESCRIBE that no session uses.
    ReleaseStream,
    /// Pass a trick-play request to the playback stream's control (only
    /// after [`Connection::set_playback`] said the stream has one).
    Playback(PlaybackCommand),
    /// The first media packet of the session was queued (for the
    /// time-to-first-frame metric, measured from PLAY).
    FirstMedia,
    /// Flush what is queued, then close the connection.
    Close,
}

/// Where a [`Transmit`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The RTSP connection itself: responses and interleaved RTP/RTCP.
    Tcp,
    /// A track's UDP socket pair: its RTP or its RTCP port.
    Udp { track: u8, rtcp: bool },
}

/// Bytes to send: `head` (framing and headers, built here) followed by
/// `payload` slices (frame data, never copied here).
#[derive(Clone, Debug)]
pub struct Transmit {
    pub dest: Dest,
    pub head: Head,
    pub payload: Payload,
}

impl Transmit {
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request refused: each maps to one status code (RFC 2326 §7.1.1) and
/// one metric kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no such stream")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("unknown method")]
    NotImplemented,
    #[error("RTSP version not supported")]
    VersionNotSupported,
    #[error("session not found")]
    SessionNotFound,
    #[error("method not valid in this state: {0}")]
    MethodNotValid(&'static str),
    #[error("aggregate operation not allowed")]
    AggregateNotAllowed,
    #[error("unsupported transport")]
    UnsupportedTransport,
    #[error("no codec of the stream can be sent over RTP here")]
    UnsupportedMedia,
    #[error("no free UDP port")]
    NoUdpPort,
    #[error("the source did not describe its media in time")]
    NoMedia,
    #[error("not authorized: {0}")]
    Unauthorized(AuthError, StreamKey),
    #[error("stream disabled")]
    Forbidden,
    #[error("viewer limit reached")]
    TooManyViewers,
    #[error("header not valid for this stream: {0}")]
    HeaderNotValid(&'static str),
    /// Another cluster node serves the stream: 302 with this `Location`.
    #[error("served by another node: {0}")]
    Moved(String),
    #[error(transparent)]
    Start(#[from] StartError),
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BadRequest,
            Self::NotFound => StatusCode::NotFound,
            Self::MethodNotAllowed => StatusCode::MethodNotAllowed,
            Self::NotImplemented => StatusCode::NotImplemented,
            Self::VersionNotSupported => StatusCode::RTSPVersionNotSupported,
            Self::SessionNotFound => StatusCode::SessionNotFound,
            Self::MethodNotValid(_) => StatusCode::MethodNotValidInThisState,
            Self::AggregateNotAllowed => StatusCode::AggregateOperationNotAllowed,
            Self::UnsupportedTransport => StatusCode::UnsupportedTransport,
            Self::UnsupportedMedia => StatusCode::UnsupportedMediaType,
            Self::NoUdpPort => StatusCode::NotEnoughBandwidth,
            Self::NoMedia => StatusCode::GatewayTimeout,
            Self::Unauthorized(..) => StatusCode::Unauthorized,
            Self::Forbidden => StatusCode::Forbidden,
            Self::TooManyViewers => StatusCode::NotEnoughBandwidth,
            Self::HeaderNotValid(_) => StatusCode::HeaderFieldNotValidForResource,
            Self::Moved(_) => StatusCode::Found,
            Self::Start(e) => match e {
                StartError::NotFound(_) => StatusCode::NotFound,
                StartError::Offline(_) | StartError::Failed(_) => StatusCode::ServiceUnavailable,
                StartError::Timeout(_) => StatusCode::GatewayTimeout,
                StartError::Rejected { .. } => StatusCode::BadGateway,
                StartError::NoPort => StatusCode::NotEnoughBandwidth,
                StartError::Unauthorized(_) => StatusCode::Unauthorized,
            },
        }
    }

    /// Label value for `camgate_rtsp_errors{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed | Self::NotImplemented => "method",
            Self::VersionNotSupported => "version",
            Self::SessionNotFound => "session_not_found",
            Self::MethodNotValid(_) | Self::AggregateNotAllowed => "state",
            Self::UnsupportedTransport => "transport",
            Self::UnsupportedMedia => "codec",
            Self::NoUdpPort => "no_port",
            Self::NoMedia => "no_media",
            Self::Unauthorized(..) => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::TooManyViewers => "viewer_limit",
            Self::HeaderNotValid(_) => "header_not_valid",
            Self::Moved(_) => "moved",
            Self::Start(e) => match e {
                StartError::NotFound(_) => "not_found",
                StartError::Offline(_) => "offline",
                StartError::Failed(_) => "start_failed",
                StartError::Timeout(_) => "start_timeout",
                StartError::Rejected { .. } => "rejected",
                StartError::NoPort => "no_port",
                StartError::Unauthorized(_) => "device_unauthorized",
            },
        }
    }
}

/// What a request is waiting for from the driver.
#[derive(Debug)]
enum Waiting {
    Open(StreamKey),
    Bind(u8),
}

/// The stream this connection holds a viewer on (from DESCRIBE or SETUP).
#[derive(Debug)]
struct Described {
    key: StreamKey,
    info: StreamInfo,
    tracks: Vec<TrackDesc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrackTransport {
    Interleaved {
        rtp: u8,
        rtcp: u8,
    },
    Udp {
        client_rtp: u16,
        client_rtcp: u16,
        server_rtp: u16,
        server_rtcp: u16,
    },
}

#[derive(Debug)]
struct TrackState {
    desc: TrackDesc,
    transport: TrackTransport,
    rtp: RtpHeader,
    /// RTP timestamp of the session's media origin (random, RFC 3550 §5.1).
    base: u32,
    packets: u32,
    octets: u32,
    next_sr: Option<Instant>,
    /// Cumulative loss the client last reported for this track.
    reported_lost: i64,
}

impl TrackState {
    fn transmit_for(&self, rtcp: bool, len: usize) -> (Dest, Head) {
        match self.transport {
            TrackTransport::Interleaved { rtp, rtcp: rtcp_ch } => {
                let ch = if rtcp { rtcp_ch } else { rtp };
                // Packets are bounded by the MTU, far below 64 KiB.
                (
                    Dest::Tcp,
                    Head::interleaved(ch, len.min(usize::from(u16::MAX)) as u16),
                )
            }
            TrackTransport::Udp { .. } => (
                Dest::Udp {
                    track: self.desc.id,
                    rtcp,
                },
                Head::default(),
            ),
        }
    }
}

#[derive(Debug)]
struct Session {
    id: String,
    key: StreamKey,
    /// Content base for RTP-Info URLs.
    base_url: String,
    tracks: Vec<TrackState>,
    playing: bool,
    clock: MediaClock,
    packets: u64,
    /// Paused by the client after playing (a later PLAY resumes).
    paused: bool,
    first_media_sent: bool,
    /// Lower transport of the first track, for the per-transport gauge.
    transport: TransportKind,
    /// The recording this session plays (`None`: a live stream).
    recording: Option<Recording>,
    /// Position (npt seconds) that the clock's origin stands for: 0 for a
    /// live stream and at the start of a recording, the target after a
    /// seek (RFC 2326 §3.6).
    npt_base: f64,
    /// Position of the latest frame sent, for the `Range` of a resume.
    position: f64,
    /// PLAY was answered at least once.
    started: bool,
}

/// A recorded stream: its span when the key names one (for `a=range`,
/// `Range` and `Media-Range`); positions are tracked either way.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Recording {
    span: Option<Span>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Span {
    /// Unix seconds of the recording's start (as the key names it).
    start: u64,
    /// Seconds of media.
    duration: f64,
}

impl Recording {
    /// A stream is a recording when its key names a span or its source
    /// takes trick-play commands.
    fn of(key: &StreamKey, controllable: bool) -> Option<Self> {
        let span = Span::of(key);
        (span.is_some() || controllable).then_some(Self { span })
    }

    /// `npt=POS-END` (§3.6), END when the length is known.
    fn range_from(&self, position: f64) -> String {
        match self.span {
            Some(s) => format!("npt={position:.3}-{:.3}", s.duration),
            None => format!("npt={position:.3}-"),
        }
    }
}

impl Span {
    fn of(key: &StreamKey) -> Option<Self> {
        let r = key.playback_range()?;
        Some(Self {
            start: r.start,
            duration: (r.end - r.start) as f64,
        })
    }

    /// `Media-Range` (RFC 7826 §18.30): the whole recording as play time
    /// and as the absolute times the device recorded it at (GB28181 times
    /// carry no zone; camgate reads them as UTC, see `media::datetime`).
    fn media_range(&self) -> String {
        let clock = |secs: u64| {
            let t = crate::media::datetime::format(secs).replace(['-', ':'], "");
            format!("{t}Z")
        };
        format!(
            "npt=0.000-{:.3}, clock={}-{}",
            self.duration,
            clock(self.start),
            clock(self.start + self.duration as u64)
        )
    }
}

/// `secs` of media in RTP clock ticks (modulo 2^32, as RTP timestamps go).
fn npt_ticks(secs: f64, clock_rate: u32) -> u32 {
    (secs.max(0.0) * f64::from(clock_rate)).round() as u64 as u32
}

impl Session {
    /// RTP timestamp of a track at `rel` clock ticks from the clock origin.
    fn rtp_time(&self, t: &TrackState, rel: i64) -> u32 {
        t.base
            .wrapping_add(npt_ticks(self.npt_base, t.desc.clock_rate))
            .wrapping_add(rel as u32)
    }

    fn interleaved_only(&self) -> bool {
        self.tracks
            .iter()
            .all(|t| matches!(t.transport, TrackTransport::Interleaved { .. }))
    }
}

/// One RTSP connection.
pub struct Connection {
    config: SessionConfig,
    local_ip: IpAddr,
    input: BytesMut,
    events: VecDeque<Event>,
    out: Vec<Transmit>,
    waiting: Option<(Request<Vec<u8>>, Waiting)>,
    udp_ready: Option<(u8, u16, u16)>,
    described: Option<Described>,
    session: Option<Session>,
    last_activity: Instant,
    /// When the request being awaited must be complete: set at opening and
    /// at the first byte of each request, cleared when one completes. One
    /// deadline per request, so dribbling bytes does not extend it.
    request_deadline: Option<Instant>,
    closing: bool,
    rng: SmallRng,
    /// Query options of the request waiting on [`Event::OpenStream`].
    open_options: crate::streams::SourceOptions,
    /// Digest nonce of this connection.
    nonce: String,
    /// The stream this connection has been let into (credentials are
    /// checked once per connection and stream).
    authorized: Option<StreamKey>,
    /// The open stream is a playback with trick-play control.
    playback: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Keep the gauge right even if the driver never said goodbye.
        if let Some(s) = &self.session {
            metrics::get().rtsp_sessions.dec();
            metrics::get()
                .rtsp_sessions_by_transport
                .get_or_create(&label("transport", s.transport.as_str()))
                .dec();
        }
    }
}

/// What a handler decided.
enum Handled {
    Reply(ResponseBuilder, Vec<u8>),
    Wait(Waiting),
}

/// A response builder with the reason phrase of RFC 2326 §7.1.1 (the
/// crate's default phrases follow Rust naming, e.g. "Ok").
fn builder(status: StatusCode) -> ResponseBuilder {
    let code = u16::from(status);
    let phrase = match code {
        200 => "OK",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        451 => "Parameter Not Understood",
        453 => "Not Enough Bandwidth",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        456 => "Header Field Not Valid for Resource",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Time-out",
        505 => "RTSP Version not supported",
        _ => "Error",
    };
    Response::builder(Version::V1_0, status).reason_phrase(phrase)
}

fn method_label(m: &Method) -> &'static str {
    match m {
        Method::Describe => "DESCRIBE",
        Method::GetParameter => "GET_PARAMETER",
        Method::Options => "OPTIONS",
        Method::Pause => "PAUSE",
        Method::Play => "PLAY",
        Method::PlayNotify => "PLAY_NOTIFY",
        Method::Redirect => "REDIRECT",
        Method::Setup => "SETUP",
        Method::SetParameter => "SET_PARAMETER",
        Method::Announce => "ANNOUNCE",
        Method::Record => "RECORD",
        Method::Teardown => "TEARDOWN",
        Method::Extension(_) => "other",
    }
}

/// The stream and track a request URL names.
///
/// Control URLs are `{base}/trackID=N`; clients join them to the base
/// differently (live555 and GStreamer resolve the relative `trackID=N`,
/// ffmpeg appends it even after a query), so the track is taken from a
/// trailing `trackID=N` wherever it ends up.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    key: StreamKey,
    track: Option<u8>,
    /// Aggregate URL with a trailing slash, for Content-Base.
    base: String,
    /// The URL query (e.g. `transport=tcp_active`), for the source.
    options: crate::streams::SourceOptions,
}

fn strip_track(s: &str) -> (&str, Option<Option<u8>>) {
    match s.rsplit_once('/') {
        Some((head, last)) => match last.strip_prefix("trackID=") {
            Some(n) => (head, Some(n.parse().ok())),
            None => (s, None),
        },
        None => (s, None),
    }
}

fn parse_target(url: &Url) -> Result<Target, RequestError> {
    let (path, mut track) = strip_track(url.path());
    let mut query = None;
    if let Some(q) = url.query() {
        let (head, t) = strip_track(q);
        track = track.or(t);
        query = Some(head);
    }
    let track = match track {
        Some(Some(n)) => Some(n),
        Some(None) => return Err(RequestError::NotFound),
        None => None,
    };
    // `?start=…&end=…` asks for a recording of the path.
    let key = StreamKey::from_path_and_query(path, query).ok_or(RequestError::NotFound)?;
    let options = url
        .query()
        .map(|q| crate::streams::SourceOptions::from_query(strip_track(q).0))
        .unwrap_or_default();
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    // Credentials in the request URL are not echoed back.
    let _ = base.set_username("");
    let _ = base.set_password(None);
    base.set_path(&format!("/{}/", key.as_str()));
    Ok(Target {
        key,
        track,
        base: base.to_string(),
        options,
    })
}

fn random_id(rng: &mut SmallRng) -> String {
    format!("{:016X}", rng.next_u64())
}

impl Connection {
    /// `local_ip` goes into SDP `o=`; `seed` feeds SSRCs, sequence numbers,
    /// timestamps and session ids (the driver seeds it from the OS).
    pub fn new(config: SessionConfig, local_ip: IpAddr, seed: u64, now: Instant) -> Self {
        let request_deadline = Some(now + config.request_timeout);
        Self {
            config,
            local_ip,
            input: BytesMut::new(),
            events: VecDeque::new(),
            out: Vec::new(),
            waiting: None,
            udp_ready: None,
            described: None,
            session: None,
            last_activity: now,
            request_deadline,
            closing: false,
            rng: SmallRng::seed_from_u64(seed),
            nonce: String::new(),
            authorized: None,
            playback: false,
            open_options: Default::default(),
        }
        .with_nonce()
    }

    fn with_nonce(mut self) -> Self {
        self.nonce = format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
        self
    }

    /// Whether the stream being opened is a playback whose source takes
    /// [`Event::Playback`] commands. Call before [`Connection::stream_opened`].
    pub fn set_playback(&mut self, playback: bool) {
        self.playback = playback;
    }

    /// The URL query options of the request that asked to open a stream
    /// (see [`crate::streams::SourceOptions`]).
    pub fn open_options(&self) -> crate::streams::SourceOptions {
        self.open_options.clone()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Move everything queued for sending into `into`, in order. An empty
    /// `into` trades buffers with the queue, so the one the driver keeps
    /// small (see `rtsp::server`) is what the next frame is queued in.
    pub fn take_transmits(&mut self, into: &mut Vec<Transmit>) {
        if into.is_empty() {
            std::mem::swap(into, &mut self.out);
        } else {
            into.append(&mut self.out);
        }
    }

    pub fn is_playing(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.playing)
    }

    /// The stream of the current session, if any.
    pub fn session_key(&self) -> Option<&StreamKey> {
        self.session.as_ref().map(|s| &s.key)
    }

    /// Bytes read from the connection.
    pub fn receive(&mut self, data: &[u8], now: Instant) {
        if self.closing {
            return;
        }
        // While a request waits (DESCRIBE on its stream opening, SETUP on
        // its ports) nothing is parsed, so the buffer is bounded here: a
        // client cannot push more than one request's worth meanwhile.
        if self.waiting.is_some() && self.input.len() + data.len() > MAX_REQUEST {
            self.fail_connection("too much input while a request waits");
            return;
        }
        self.input.extend_from_slice(data);
        self.process(now);
    }

    /// Bytes received and not yet parsed (bounded by [`MAX_REQUEST`]).
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// A datagram arrived from the client on a UDP port of this session:
    /// RTCP receiver reports keep a UDP session alive.
    pub fn client_datagram(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// Client RTCP (from its RTCP port or an interleaved RTCP channel):
    /// a sign of life, and the loss it reports goes into the metrics.
    pub fn client_rtcp(&mut self, data: &[u8], now: Instant) {
        self.last_activity = now;
        let m = metrics::get();
        match receiver_report::parse(data) {
            Ok(rtcp) => {
                let Some(s) = self.session.as_mut() else {
                    return;
                };
                for block in &rtcp.reports {
                    let Some(t) = s.tracks.iter_mut().find(|t| t.rtp.ssrc == block.ssrc) else {
                        continue;
                    };
                    let lost = i64::from(block.cumulative_lost.max(0));
                    let delta = lost - t.reported_lost;
                    if delta > 0 {
                        m.rtsp_client_packets_lost.inc_by(delta as u64);
                    }
                    t.reported_lost = lost;
                    m.rtsp_client_loss_fraction
                        .observe(f64::from(block.fraction_lost) / 256.0);
                }
                m.rtsp_client_rtcp
                    .get_or_create(&label("type", if rtcp.bye { "bye" } else { "report" }))
                    .inc();
                if rtcp.bye {
                    debug!(session = %s.id, "client sent RTCP BYE");
                }
            }
            Err(e) => {
                m.rtsp_errors.get_or_create(&label("kind", e.kind())).inc();
                debug!(error = %e, "unparsable client RTCP");
            }
        }
    }

    fn process(&mut self, now: Instant) {
        while self.waiting.is_none() && !self.closing && !self.input.is_empty() {
            let parsed = Message::<Vec<u8>>::parse(&self.input[..]);
            match parsed {
                Ok((msg, used)) => {
                    self.input.advance(used);
                    self.last_activity = now;
                    self.request_deadline = None;
                    match msg {
                        Message::Request(req) => self.handle(req, now),
                        // Client RTCP on an interleaved channel (RFC 2326
                        // §10.12); RTP from a client has no business here.
                        Message::Data(d) => {
                            let rtcp_channel = self.session.as_ref().is_some_and(|s| {
                                s.tracks.iter().any(|t| {
                                    matches!(t.transport, TrackTransport::Interleaved { rtcp, .. } if rtcp == d.channel_id())
                                })
                            });
                            if rtcp_channel {
                                self.client_rtcp(d.as_slice(), now);
                            }
                        }
                        Message::Response(_) => debug!("ignoring a response from the client"),
                    }
                }
                Err(ParseError::Incomplete(_)) => {
                    if self.input.len() > MAX_REQUEST {
                        self.fail_connection("request too large");
                    }
                    break;
                }
                Err(ParseError::Error) => {
                    self.fail_connection("unparsable request");
                    break;
                }
            }
        }
        // The first byte of the next request starts its clock.
        if self.request_deadline.is_none()
            && self.waiting.is_none()
            && !self.closing
            && !self.input.is_empty()
        {
            self.request_deadline = Some(now + self.config.request_timeout);
        }
    }

    /// Answer 400 without a CSeq (we could not read one) and close: after
    /// garbage there is no telling where the next message starts.
    fn fail_connection(&mut self, why: &'static str) {
        debug!(why, "closing RTSP connection");
        metrics::get()
            .rtsp_errors
            .get_or_create(&label("kind", "bad_request"))
            .inc();
        let resp = builder(StatusCode::BadRequest)
            .header(headers::SERVER, SERVER)
            .empty();
        self.queue_response(&resp);
        self.input.clear();
        self.closing = true;
        self.events.push_back(Event::Close);
    }

    fn queue_response<B: AsRef<[u8]>>(&mut self, resp: &Response<B>) {
        let mut buf = Vec::with_capacity(256);
        // Writing into a Vec cannot fail.
        let _ = resp.write(&mut buf);
        self.out.push(Transmit {
            dest: Dest::Tcp,
            head: Head::default(),
            payload: Bytes::from(buf).into(),
        });
    }

    fn handle(&mut self, req: Request<Vec<u8>>, now: Instant) {
        metrics::get()
            .rtsp_requests
            .get_or_create(&label("method", method_label(req.method())))
            .inc();
        let Some(cseq) = req.header(&headers::CSEQ).map(|v| v.as_str().to_owned()) else {
            self.reply_error(None, &RequestError::BadRequest("missing CSeq"));
            return;
        };
        let result = self.dispatch(&req, now);
        match result {
            Ok(Handled::Reply(builder, body)) => {
                let resp = builder
                    .header(headers::CSEQ, cseq)
                    .header(headers::SERVER, SERVER)
                    .build(body);
                self.queue_response(&resp);
            }
            Ok(Handled::Wait(w)) => {
                match &w {
                    Waiting::Open(key) => self.events.push_back(Event::OpenStream(key.clone())),
                    Waiting::Bind(track) => {
                        // dispatch only waits on a bind after checking the
                        // client ports, so this lookup succeeds.
                        if let Some((rtp, rtcp)) = client_ports(&req) {
                            self.events.push_back(Event::BindUdp {
                                track: *track,
                                client_rtp: rtp,
                                client_rtcp: rtcp,
                            });
                        }
                    }
                }
                self.waiting = Some((req, w));
            }
            Err(e) => self.reply_error(Some(cseq), &e),
        }
    }

    fn reply_error(&mut self, cseq: Option<String>, e: &RequestError) {
        metrics::get()
            .rtsp_errors
            .get_or_create(&label("kind", e.kind()))
            .inc();
        debug!(error = %e, "RTSP request refused");
        let mut b = builder(e.status()).header(headers::SERVER, SERVER);
        if let Some(cseq) = cseq {
            b = b.header(headers::CSEQ, cseq);
        }
        if *e == RequestError::MethodNotAllowed {
            b = b.header(headers::ALLOW, PUBLIC);
        }
        if let RequestError::Moved(location) = e {
            b = b.header(headers::LOCATION, location.as_str());
        }
        if let Some(s) = &self.session {
            b = b.header(headers::SESSION, self.session_header(s));
        }
        let resp = b.empty();
        let challenges = match (e, &self.config.auth) {
            (RequestError::Unauthorized(why, key), Some(auth)) => {
                auth.challenges(key, &self.nonce, *why == AuthError::StaleNonce)
            }
            _ => Vec::new(),
        };
        if challenges.is_empty() {
            self.queue_response(&resp);
            return;
        }
        // rtsp-types folds repeated headers into one comma-joined line,
        // which clients misread for challenges; RFC 7616 §3.7 gives each
        // its own WWW-Authenticate line, inserted before the blank line.
        let mut buf = Vec::with_capacity(512);
        let _ = resp.write(&mut buf);
        let end = buf.len().saturating_sub(2);
        let mut lines = Vec::new();
        for c in challenges {
            lines.extend_from_slice(b"WWW-Authenticate: ");
            lines.extend_from_slice(c.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        buf.splice(end..end, lines);
        self.out.push(Transmit {
            dest: Dest::Tcp,
            head: Head::default(),
            payload: Bytes::from(buf).into(),
        });
    }

    /// Let the request into `key`, once per connection and stream.
    fn authorize(
        &mut self,
        req: &Request<Vec<u8>>,
        key: &StreamKey,
        now: Instant,
    ) -> Result<(), RequestError> {
        let Some(auth) = self.config.auth.clone() else {
            return Ok(());
        };
        if self.authorized.as_ref() == Some(key) {
            return Ok(());
        }
        let presented = Presented {
            method: method_label(req.method()),
            authorization: req.header(&headers::AUTHORIZATION).map(|v| v.as_str()),
            token: hashtoken(req.request_uri().and_then(|u| u.query())),
        };
        match auth.check(key, presented, &self.nonce, now) {
            Ok(()) => {
                self.authorized = Some(key.clone());
                Ok(())
            }
            Err(e) => {
                metrics::get()
                    .rtsp_auth_failures
                    .get_or_create(&label("kind", e.kind()))
                    .inc();
                if e == AuthError::Disabled {
                    return Err(RequestError::Forbidden);
                }
                // A client's first try usually has no credentials: quiet.
                if e != AuthError::Missing {
                    warn!(stream = %key, error = %e, "RTSP authentication failed");
                }
                Err(RequestError::Unauthorized(e, key.clone()))
            }
        }
    }

    fn session_header(&self, s: &Session) -> String {
        format!("{};timeout={}", s.id, self.config.session_timeout)
    }

    fn ok(&self) -> ResponseBuilder {
        let mut b = builder(StatusCode::Ok);
        if let Some(s) = &self.session {
            b = b.header(headers::SESSION, self.session_header(s));
        }
        b
    }

    fn dispatch(&mut self, req: &Request<Vec<u8>>, now: Instant) -> Result<Handled, RequestError> {
        if req.version() != Version::V1_0 {
            return Err(RequestError::VersionNotSupported);
        }
        // A Session header must name this connection's session (§12.37).
        match req.typed_header::<headers::Session>() {
            Ok(None) => {}
            Ok(Some(id)) => {
                if self.session.as_ref().is_none_or(|s| s.id != id.0) {
                    return Err(RequestError::SessionNotFound);
                }
            }
            Err(_) => return Err(RequestError::SessionNotFound),
        }
        if matches!(
            req.method(),
            Method::Describe | Method::Setup | Method::Play
        ) && let Ok(target) = Self::target(req)
        {
            self.authorize(req, &target.key, now)?;
        }
        match req.method() {
            Method::Options => Ok(Handled::Reply(
                self.ok().header(headers::PUBLIC, PUBLIC),
                Vec::new(),
            )),
            Method::Describe => self.describe(req),
            Method::Setup => self.setup(req),
            Method::Play => self.play(req, now),
            Method::Pause => self.pause(),
            Method::Teardown => self.teardown(),
            Method::GetParameter => Ok(Handled::Reply(self.ok(), Vec::new())),
            Method::SetParameter => {
                if req.body().is_empty() {
                    Ok(Handled::Reply(self.ok(), Vec::new()))
                } else {
                    // We have no settable parameters (§10.9).
                    Ok(Handled::Reply(
                        builder(StatusCode::ParameterNotUnderstood),
                        Vec::new(),
                    ))
                }
            }
            Method::Announce | Method::Record | Method::Redirect | Method::PlayNotify => {
                Err(RequestError::MethodNotAllowed)
            }
            Method::Extension(_) => Err(RequestError::NotImplemented),
        }
    }

    fn target(req: &Request<Vec<u8>>) -> Result<Target, RequestError> {
        let url = req
            .request_uri()
            .ok_or(RequestError::BadRequest("missing request URL"))?;
        parse_target(url)
    }

    /// The stream `key` is described on this connection, or we must wait
    /// for the driver to open it.
    fn need_stream(&self, key: &StreamKey) -> Result<Option<&Described>, RequestError> {
        if let Some(s) = &self.session
            && s.key != *key
        {
            // One session per connection, on one stream.
            return Err(RequestError::AggregateNotAllowed);
        }
        Ok(self.described.as_ref().filter(|d| d.key == *key))
    }

    fn describe(&mut self, req: &Request<Vec<u8>>) -> Result<Handled, RequestError> {
        let target = Self::target(req)?;
        let origin_id = self.rng.next_u64() >> 1;
        let Some(d) = self.need_stream(&target.key)? else {
            self.open_options = target.options;
            return Ok(Handled::Wait(Waiting::Open(target.key)));
        };
        if d.tracks.is_empty() {
            return Err(RequestError::UnsupportedMedia);
        }
        let recording = Span::of(&d.key);
        let sdp = sdp::render_with_range(
            &d.info,
            &d.tracks,
            self.local_ip,
            origin_id,
            d.key.as_str(),
            recording.map(|r| r.duration),
        );
        let mut reply = self
            .ok()
            .header(headers::CONTENT_TYPE, "application/sdp")
            .header(headers::CONTENT_BASE, target.base);
        if let Some(r) = recording {
            reply = reply.header(headers::MEDIA_RANGE, r.media_range());
        }
        Ok(Handled::Reply(reply, sdp.into_bytes()))
    }

    fn setup(&mut self, req: &Request<Vec<u8>>) -> Result<Handled, RequestError> {
        let target = Self::target(req)?;
        let Some(d) = self.need_stream(&target.key)? else {
            self.open_options = target.options;
            return Ok(Handled::Wait(Waiting::Open(target.key)));
        };
        let desc = match target.track {
            Some(id) => d.tracks.iter().find(|t| t.id == id),
            // SETUP on the aggregate URL only makes sense with one track.
            None if d.tracks.len() == 1 => d.tracks.first(),
            None => return Err(RequestError::AggregateNotAllowed),
        }
        .ok_or(RequestError::NotFound)?
        .clone();

        if let Some(s) = &self.session
            && s.playing
        {
            // Changing transports mid-play is optional (§10.4); we don't.
            return Err(RequestError::MethodNotValid("SETUP while playing"));
        }

        let transport = match pick_transport(req, desc.id)? {
            Chosen::Interleaved(rtp, rtcp) => {
                let clash = self.session.as_ref().is_some_and(|s| {
                    s.tracks.iter().any(|t| {
                        t.desc.id != desc.id
                            && matches!(t.transport, TrackTransport::Interleaved { rtp: a, rtcp: b }
                                if [a, b].contains(&rtp) || [a, b].contains(&rtcp))
                    })
                });
                if clash {
                    return Err(RequestError::UnsupportedTransport);
                }
                TrackTransport::Interleaved { rtp, rtcp }
            }
            Chosen::Udp(client_rtp, client_rtcp) => match self.udp_ready.take() {
                Some((track, server_rtp, server_rtcp)) if track == desc.id => TrackTransport::Udp {
                    client_rtp,
                    client_rtcp,
                    server_rtp,
                    server_rtcp,
                },
                _ => return Ok(Handled::Wait(Waiting::Bind(desc.id))),
            },
        };

        let kind = match transport {
            TrackTransport::Interleaved { .. } => TransportKind::Tcp,
            TrackTransport::Udp { .. } => TransportKind::Udp,
        };
        if self.session.is_none() {
            let id = random_id(&mut self.rng);
            metrics::get().rtsp_sessions.inc();
            metrics::get()
                .rtsp_sessions_by_transport
                .get_or_create(&label("transport", kind.as_str()))
                .inc();
            metrics::get()
                .rtsp_sessions_started
                .get_or_create(&label("transport", kind.as_str()))
                .inc();
            self.events.push_back(Event::SessionStarted {
                id: id.clone(),
                key: target.key.clone(),
                transport: kind,
            });
            self.session = Some(Session {
                id,
                key: target.key.clone(),
                base_url: target.base.clone(),
                tracks: Vec::new(),
                playing: false,
                clock: MediaClock::default(),
                packets: 0,
                paused: false,
                first_media_sent: false,
                transport: kind,
                recording: Recording::of(&target.key, self.playback),
                npt_base: 0.0,
                position: 0.0,
                started: false,
            });
        }
        let ssrc = self.rng.next_u32();
        let seq = self.rng.next_u32() as u16;
        let base = self.rng.next_u32();
        let Some(session) = self.session.as_mut() else {
            return Err(RequestError::SessionNotFound);
        };
        session.tracks.retain(|t| t.desc.id != desc.id);
        session.tracks.push(TrackState {
            rtp: RtpHeader {
                payload_type: desc.payload_type,
                ssrc,
                seq,
            },
            desc,
            transport,
            base,
            packets: 0,
            octets: 0,
            next_sr: None,
            reported_lost: 0,
        });
        session.tracks.sort_by_key(|t| t.desc.id);

        let transport_header = match transport {
            TrackTransport::Interleaved { rtp, rtcp } => {
                format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp};ssrc={ssrc:08X}")
            }
            TrackTransport::Udp {
                client_rtp,
                client_rtcp,
                server_rtp,
                server_rtcp,
            } => format!(
                "RTP/AVP;unicast;client_port={client_rtp}-{client_rtcp};server_port={server_rtp}-{server_rtcp};ssrc={ssrc:08X}"
            ),
        };
        Ok(Handled::Reply(
            self.ok().header(headers::TRANSPORT, transport_header),
            Vec::new(),
        ))
    }

    fn play(&mut self, req: &Request<Vec<u8>>, now: Instant) -> Result<Handled, RequestError> {
        let controllable = self.playback;
        let session = self.session.as_mut().ok_or(RequestError::SessionNotFound)?;
        if session.tracks.is_empty() {
            return Err(RequestError::MethodNotValid("PLAY before SETUP"));
        }
        let scale = match req.header(&headers::SCALE) {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|s| s.is_finite() && *s != 0.0)
                    .ok_or(RequestError::BadRequest("bad Scale"))?,
            ),
        };
        let Some(recording) = session.recording else {
            if scale.is_some_and(|s| s != 1.0) {
                // RFC 2326 §11.3.8 names exactly this case: the request
                // header is understood but the (live) resource cannot
                // honour it.
                return Err(RequestError::HeaderNotValid("Scale on a live stream"));
            }
            // A live stream ignores Range: every client sends `npt=0-` or
            // `now-` and the only position is now.
            return Ok(self.play_live(now));
        };
        // A recording is played from where the request says, in the whole
        // seconds MANSRTSP can seek to (GB/T 28181-2016 Annex B); `npt=0-`
        // on the first PLAY is where it starts anyway.
        let seek = req
            .header(&headers::RANGE)
            .and_then(|v| npt_start(v.as_str()))
            .map(|start| {
                let end = recording.span.map_or(f64::MAX, |s| s.duration);
                start.floor().min(end)
            })
            .filter(|start| *start > 0.0);
        let mut commands = Vec::new();
        if controllable {
            if let Some(at) = seek {
                commands.push(PlaybackCommand::Seek(at));
            }
            if let Some(scale) = scale {
                commands.push(PlaybackCommand::Scale(scale));
            }
            if session.paused && seek.is_none() {
                commands.push(PlaybackCommand::Resume);
            }
        }
        let position = match seek.filter(|_| controllable) {
            Some(at) => {
                // The next frame the source sends is the one at `at`.
                session.clock = MediaClock::default();
                session.npt_base = at;
                session.position = at;
                at
            }
            None if session.started => session.position,
            None => 0.0,
        };
        session.paused = false;
        session.started = true;
        // Flush before the seek is sent: the driver waits for the device
        // to accept the command, and the device starts sending from the
        // new place at once; a flush after that wait dropped the first
        // keyframe from there whenever it came in during the wait, and
        // the timeline was then anchored one GOP late (seen under load).
        if seek.is_some() && controllable {
            self.events.push_back(Event::Flush);
        }
        self.events
            .extend(commands.into_iter().map(Event::Playback));
        let infos: Vec<String> = session
            .tracks
            .iter()
            .map(|t| {
                let rtptime = t.base.wrapping_add(npt_ticks(position, t.desc.clock_rate));
                format!(
                    "url={}trackID={};seq={};rtptime={}",
                    session.base_url, t.desc.id, t.rtp.seq, rtptime
                )
            })
            .collect();
        if !session.playing {
            session.playing = true;
            self.events.push_back(Event::StartMedia);
        }
        // §12.29: the range actually played, so clients place the first
        // frame at `position` (ffmpeg adds it to every timestamp).
        let mut reply = self
            .ok()
            .header(headers::RANGE, recording.range_from(position))
            .header(headers::RTP_INFO, infos.join(","));
        if let Some(span) = recording.span {
            reply = reply.header(headers::MEDIA_RANGE, span.media_range());
        }
        if let Some(scale) = scale.filter(|_| controllable) {
            reply = reply.header(headers::SCALE, format!("{scale}"));
        }
        Ok(Handled::Reply(reply, Vec::new()))
    }

    fn play_live(&mut self, now: Instant) -> Handled {
        let mut infos = Vec::new();
        if let Some(session) = self.session.as_mut() {
            session.paused = false;
            session.started = true;
            for t in &session.tracks {
                // Before the first frame the origin maps to `base`; on
                // resume, to where the shared clock says the stream is now.
                let rel = session
                    .clock
                    .media_time_at(t.desc.clock_rate, now)
                    .unwrap_or(0);
                infos.push(format!(
                    "url={}trackID={};seq={};rtptime={}",
                    session.base_url,
                    t.desc.id,
                    t.rtp.seq,
                    session.rtp_time(t, rel)
                ));
            }
            if !session.playing {
                session.playing = true;
                self.events.push_back(Event::StartMedia);
            }
        }
        Handled::Reply(
            self.ok()
                .header(headers::RANGE, "npt=0.000-")
                .header(headers::RTP_INFO, infos.join(",")),
            Vec::new(),
        )
    }

    /// The stream's first video frame had presentation time `pts` (90 kHz):
    /// a recording that did not start with this viewer maps it to position
    /// 0, so a viewer joining late sees the positions the first one sees.
    /// Call after [`Event::StartMedia`], before pushing frames.
    pub fn anchor_recording(&mut self, first_video_pts: Option<i64>, now: Instant) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if let Some(pts) = first_video_pts
            && s.recording.is_some()
            && s.npt_base == 0.0
            && !s.clock.is_anchored()
        {
            s.clock = MediaClock::anchored(pts, 90_000, now);
        }
    }

    fn pause(&mut self) -> Result<Handled, RequestError> {
        let playback = self.playback;
        let session = self.session.as_mut().ok_or(RequestError::SessionNotFound)?;
        if session.playing {
            session.playing = false;
            if session.recording.is_some() {
                self.events.push_back(Event::HoldMedia);
            } else {
                self.events.push_back(Event::StopMedia);
            }
            if playback {
                session.paused = true;
                self.events
                    .push_back(Event::Playback(PlaybackCommand::Pause));
            }
        }
        let mut reply = self.ok();
        if let Some(r) = self
            .session
            .as_ref()
            .and_then(|s| s.recording.map(|r| r.range_from(s.position)))
        {
            reply = reply.header(headers::RANGE, r);
        }
        Ok(Handled::Reply(reply, Vec::new()))
    }

    fn teardown(&mut self) -> Result<Handled, RequestError> {
        if self.session.is_none() {
            return Err(RequestError::SessionNotFound);
        }
        let reply = self.ok();
        self.end_session(EndReason::Teardown);
        Ok(Handled::Reply(reply, Vec::new()))
    }

    /// End the session and release the stream.
    fn end_session(&mut self, reason: EndReason) {
        self.described = None;
        if let Some(s) = self.session.take() {
            metrics::get().rtsp_sessions.dec();
            metrics::get()
                .rtsp_sessions_by_transport
                .get_or_create(&label("transport", s.transport.as_str()))
                .dec();
            if s.playing {
                self.events.push_back(Event::StopMedia);
            }
            self.events.push_back(Event::SessionEnded {
                id: s.id,
                key: s.key,
                reason,
                packets: s.packets,
            });
        } else {
            self.events.push_back(Event::ReleaseStream);
        }
    }

    /// The stream asked for by [`Event::OpenStream`] is open (the driver
    /// holds its viewer) and described as `info`, or failed to open.
    pub fn stream_opened(&mut self, result: Result<StreamInfo, RequestError>, now: Instant) {
        let Some((req, Waiting::Open(key))) = self.waiting.take() else {
            return;
        };
        let cseq = req.header(&headers::CSEQ).map(|v| v.as_str().to_owned());
        match result {
            Ok(info) => {
                let described = match &info.video {
                    Some((_, v)) => v.sps.is_some() || v.width > 0,
                    None => info.audio.is_some(),
                };
                if !described {
                    self.described = None;
                    self.events.push_back(Event::ReleaseStream);
                    self.reply_error(cseq, &RequestError::NoMedia);
                } else {
                    let tracks = sdp::tracks(&info);
                    if tracks.is_empty() {
                        warn!(stream = %key, ?info, "no codec of the stream has an RTP payload format here");
                    }
                    self.described = Some(Described { key, info, tracks });
                    self.handle(req, now);
                }
            }
            Err(e) => {
                if let RequestError::Start(StartError::Rejected { code, reason }) = &e {
                    warn!(stream = %key, code, %reason, "device refused the stream");
                } else {
                    debug!(stream = %key, error = %e, "stream did not start");
                }
                self.reply_error(cseq, &e);
            }
        }
        self.process(now);
    }

    /// The UDP pair asked for by [`Event::BindUdp`] is bound at
    /// `ports` (RTP, RTCP), or could not be.
    pub fn udp_bound(&mut self, ports: Option<(u16, u16)>, now: Instant) {
        let Some((req, Waiting::Bind(track))) = self.waiting.take() else {
            return;
        };
        match ports {
            Some((rtp, rtcp)) => {
                self.udp_ready = Some((track, rtp, rtcp));
                self.handle(req, now);
                self.udp_ready = None;
            }
            None => {
                let cseq = req.header(&headers::CSEQ).map(|v| v.as_str().to_owned());
                self.reply_error(cseq, &RequestError::NoUdpPort);
            }
        }
        self.process(now);
    }

    /// The driver's stream ended under a playing session: each playing
    /// track says so with an RTCP BYE (RFC 3550 §6.6), then the
    /// connection closes (UDP sessions go with it).
    pub fn stream_ended(&mut self) {
        self.queue_rtcp_byes(std::time::SystemTime::now());
        if self.session.is_some() || self.described.is_some() {
            self.end_session(EndReason::StreamEnded);
            self.closing = true;
            self.events.push_back(Event::Close);
        }
    }

    /// The connection is gone; end whatever session it had.
    pub fn connection_closed(&mut self) {
        if self.session.is_some() {
            self.end_session(EndReason::ConnectionClosed);
        }
    }

    /// When [`Connection::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = None;
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        };
        let tcp_playing = self
            .session
            .as_ref()
            .is_some_and(|s| s.playing && s.interleaved_only());
        if !tcp_playing && !self.closing && self.waiting.is_none() {
            consider(self.last_activity + self.timeout());
        }
        if let Some(d) = self
            .request_deadline
            .filter(|_| !self.closing && self.waiting.is_none())
        {
            consider(d);
        }
        if let Some(s) = self.session.as_ref().filter(|s| s.playing) {
            for t in &s.tracks {
                if let Some(at) = t.next_sr {
                    consider(at);
                }
            }
        }
        next
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.session_timeout.max(1)))
    }

    /// Expire an idle session and send due sender reports. `wall` is the
    /// wallclock at `now`, for the SR's NTP timestamp.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        if self.closing {
            return;
        }
        if self.waiting.is_none() && self.request_deadline.is_some_and(|d| now >= d) {
            metrics::get()
                .request_timeouts
                .get_or_create(&label("listener", "rtsp"))
                .inc();
            debug!("closing RTSP connection: no complete request in time");
            if self.session.is_some() || self.described.is_some() {
                self.end_session(EndReason::Timeout);
            }
            self.input.clear();
            self.closing = true;
            self.events.push_back(Event::Close);
            return;
        }
        let tcp_playing = self
            .session
            .as_ref()
            .is_some_and(|s| s.playing && s.interleaved_only());
        if !tcp_playing && self.waiting.is_none() && now >= self.last_activity + self.timeout() {
            if self.session.is_some() || self.described.is_some() {
                self.end_session(EndReason::Timeout);
            }
            self.closing = true;
            self.events.push_back(Event::Close);
            return;
        }
        let Some(s) = self.session.as_mut().filter(|s| s.playing) else {
            return;
        };
        let ntp = rtcp::ntp_timestamp(wall);
        for t in &mut s.tracks {
            if t.next_sr.is_none_or(|at| at > now) {
                continue;
            }
            t.next_sr = Some(now + SR_INTERVAL);
            let rel = s.clock.media_time_at(t.desc.clock_rate, now).unwrap_or(0);
            let rtp_time = t
                .base
                .wrapping_add(npt_ticks(s.npt_base, t.desc.clock_rate))
                .wrapping_add(rel as u32);
            let sr = SenderReport {
                ssrc: t.rtp.ssrc,
                ntp,
                rtp_time,
                packets: t.packets,
                octets: t.octets,
            };
            let mut buf = Vec::with_capacity(64);
            sr.encode("camgate", &mut buf);
            let (dest, head) = t.transmit_for(true, buf.len());
            self.out.push(Transmit {
                dest,
                head,
                payload: Bytes::from(buf).into(),
            });
        }
    }

    /// An SR + BYE compound packet for every track of the playing session.
    fn queue_rtcp_byes(&mut self, wall: std::time::SystemTime) {
        let Some(s) = self.session.as_ref().filter(|s| s.playing) else {
            return;
        };
        let ntp = rtcp::ntp_timestamp(wall);
        for t in &s.tracks {
            let sr = SenderReport {
                ssrc: t.rtp.ssrc,
                ntp,
                rtp_time: t.base,
                packets: t.packets,
                octets: t.octets,
            };
            let mut buf = Vec::with_capacity(72);
            sr.encode("camgate", &mut buf);
            rtcp::encode_bye(t.rtp.ssrc, &mut buf);
            let (dest, head) = t.transmit_for(true, buf.len());
            self.out.push(Transmit {
                dest,
                head,
                payload: Bytes::from(buf).into(),
            });
        }
    }

    /// Packetize a frame for the playing session; the packets are queued
    /// for [`Connection::take_transmits`]. Frames of a codec the session
    /// did not set up are dropped.
    pub fn push_frame(&mut self, frame: &Frame, now: Instant) {
        let Some((packetizer, mtu)) = self.track_packetizer(frame.codec) else {
            return;
        };
        let mut fragments = Vec::new();
        packetizer.packetize(frame, mtu, &mut fragments);
        self.push_fragments(frame, fragments.into(), now);
    }

    /// How the playing session packetizes `codec` (payload format and
    /// MTU), for a packetization shared between viewers; `None` when the
    /// session would drop such frames.
    pub fn track_packetizer(&self, codec: Codec) -> Option<(Packetizer, usize)> {
        let s = self.session.as_ref().filter(|s| s.playing)?;
        let t = s.tracks.iter().find(|t| t.desc.codec == codec)?;
        Some((t.desc.packetizer, self.config.mtu))
    }

    /// [`Connection::push_frame`] with the frame already packetized by
    /// [`Connection::track_packetizer`]'s format: only this session's RTP
    /// headers are written here.
    pub fn push_fragments(&mut self, frame: &Frame, fragments: Arc<[Fragment]>, now: Instant) {
        let Some(s) = self.session.as_mut().filter(|s| s.playing) else {
            return;
        };
        let Some(t) = s.tracks.iter_mut().find(|t| t.desc.codec == frame.codec) else {
            return;
        };
        let rel = s.clock.observe(frame.pts, t.desc.clock_rate, now);
        let ts = t
            .base
            .wrapping_add(npt_ticks(s.npt_base, t.desc.clock_rate))
            .wrapping_add(rel as u32);
        if s.recording.is_some() {
            s.position = s.npt_base + rel as f64 / f64::from(t.desc.clock_rate.max(1));
        }
        self.out.reserve(fragments.len());
        for (i, f) in fragments.iter().enumerate() {
            let len = 12 + f.len();
            let (dest, mut head) = t.transmit_for(false, len);
            t.rtp
                .write(&mut head, f.marker, ts.wrapping_add(f.ts_delta), f.prefix());
            t.packets = t.packets.wrapping_add(1);
            t.octets = t.octets.wrapping_add(f.len() as u32);
            s.packets += 1;
            self.out.push(Transmit {
                dest,
                head,
                payload: Payload::Shared(fragments.clone(), i),
            });
        }
        if !s.first_media_sent && t.packets > 0 {
            s.first_media_sent = true;
            self.events.push_back(Event::FirstMedia);
        }
        if t.next_sr.is_none() && t.packets > 0 {
            // First SR right after the first frame, so receivers can sync
            // audio and video without waiting a whole interval.
            t.next_sr = Some(now);
        }
    }
}

/// Start of an `npt=` Range (RFC 2326 §3.6), in seconds; `now` and
/// other formats give `None`.
fn npt_start(range: &str) -> Option<f64> {
    let v = range.trim().strip_prefix("npt=")?;
    let start = v.split('-').next()?.trim();
    if let Ok(secs) = start.parse::<f64>() {
        return secs.is_finite().then_some(secs);
    }
    // npt-hhmmss: H+:MM:SS[.frac]
    let mut parts = start.splitn(3, ':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    let total = h.parse::<f64>().ok()? * 3600.0
        + m.parse::<f64>().ok()? * 60.0
        + sec.parse::<f64>().ok()?;
    total.is_finite().then_some(total)
}

enum Chosen {
    Interleaved(u8, u8),
    Udp(u16, u16),
}

fn client_ports(req: &Request<Vec<u8>>) -> Option<(u16, u16)> {
    transports(req).ok()?.iter().find_map(|t| match t {
        Transport::Rtp(rtp) if !is_tcp(rtp) => rtp
            .params
            .client_port
            .map(|(a, b)| (a, b.unwrap_or(a.wrapping_add(1)))),
        _ => None,
    })
}

fn is_tcp(rtp: &rtsp_types::headers::RtpTransport) -> bool {
    rtp.lower_transport == Some(RtpLowerTransport::Tcp)
}

fn transports(req: &Request<Vec<u8>>) -> Result<Transports, RequestError> {
    let raw = req
        .header(&headers::TRANSPORT)
        .ok_or(RequestError::UnsupportedTransport)?;
    // rtsp-types 0.1 can panic on malformed RTSP 2.0 address lists
    // (`dest_addr`, `src_addr`); they are meaningless in RTSP 1.0, so such
    // headers are refused before the typed parser sees them.
    if raw.as_str().contains("_addr") {
        return Err(RequestError::UnsupportedTransport);
    }
    match req.typed_header::<Transports>() {
        Ok(Some(t)) => Ok(t),
        _ => Err(RequestError::UnsupportedTransport),
    }
}

/// The first offered transport we support (§12.39: the client lists them
/// in preference order).
fn pick_transport(req: &Request<Vec<u8>>, track: u8) -> Result<Chosen, RequestError> {
    for t in transports(req)?.iter() {
        let Transport::Rtp(rtp) = t else { continue };
        if rtp.profile != RtpProfile::Avp || rtp.params.multicast {
            continue;
        }
        if is_tcp(rtp) {
            let (a, b) = rtp
                .params
                .interleaved
                .unwrap_or((track.wrapping_mul(2), None));
            return Ok(Chosen::Interleaved(a, b.unwrap_or(a.wrapping_add(1))));
        }
        if matches!(rtp.lower_transport, None | Some(RtpLowerTransport::Udp))
            && let Some((a, b)) = rtp.params.client_port
        {
            return Ok(Chosen::Udp(a, b.unwrap_or(a.wrapping_add(1))));
        }
    }
    Err(RequestError::UnsupportedTransport)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod access_tests;
