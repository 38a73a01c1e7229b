//! The sans-IO core of a simulated GB28181 device (a camera with one
//! channel), modelled on a real Dahua IPC's SIP exchange.
//!
//! Datagrams and a `now: Instant` go in ([`GbDevice::handle_datagram`],
//! [`GbDevice::handle_timeout`]); datagrams to send ([`GbDevice::poll_transmit`])
//! and [`DeviceEvent`]s come out. No sockets, no clock reads, no randomness
//! beyond a seeded generator, so tests drive it deterministically.
//!
//! What it does, by GB/T 28181-2016 section:
//! - §9.1 registration: REGISTER with `Expires`, answering a 401 digest
//!   challenge (RFC 3261 §22.2, RFC 2617, `qop` absent or `auth`), refresh
//!   before expiry, retry after failure, `Expires: 0` on shutdown; a 302
//!   (GB/T 28181-2022 §9.1.2.3) sends it to the platform in its Contact
//!   until that one is lost, then it starts over at its configured server.
//! - §9.6 status: a Keepalive `Notify` MESSAGE every `keepalive_interval`;
//!   three unanswered keepalives, or one refused, mean the platform lost us,
//!   so the device registers again (what the Dahua trace shows after a 400).
//! - §9.5 queries: Catalog, DeviceInfo and DeviceStatus `Query` MESSAGEs get
//!   200 OK, then a separate `Response` MESSAGE; §9.3 DeviceControl likewise
//!   (PTZ commands get no Response, as the standard says).
//! - §9.2 live media: INVITE with an SDP offer (`c=`, `m=`, `y=` SSRC) gets
//!   100 Trying, 101 Dialog Establishement (sic, as devices send it), 200 OK
//!   with a `PS/90000` sendonly answer, and a [`DeviceEvent::StartMedia`];
//!   the 200 is retransmitted until ACK (RFC 3261 §13.3.1.4); BYE stops it.
//!
//! Client transactions retransmit on Timer E and give up on Timer F (RFC 3261
//! §17.1.2); server transactions absorb retransmitted requests by resending
//! the last response (§17.2.2). Nothing derived from the network panics: bad
//! input yields a [`DeviceError`] and, where SIP has one, an error response.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::sip::{self, DigestAnswer, DigestChallenge, SipMessage, SipParseError};

/// RFC 3261 §17.1.1.1 T1: RTT estimate.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2 T2: cap on non-INVITE retransmission interval.
const T2: Duration = Duration::from_secs(4);
/// Timer F / Timer H / 2xx retransmission give-up: 64·T1.
const TX_TIMEOUT: Duration = Duration::from_secs(32);
/// Keepalives in a row that may go unanswered before re-registering
/// (GB/T 28181-2016 §9.6.1 uses three).
const KEEPALIVE_MISSES: u32 = 3;
/// 3xx answers to REGISTER followed in a row before giving up (a loop of
/// platforms sending us to each other).
const MAX_REDIRECTS: u32 = 3;
/// Bounds on the state a hostile or confused peer can make us hold.
const MAX_CLIENT_TX: usize = 64;
const MAX_SERVER_TX: usize = 256;
const MAX_CALLS: usize = 16;
/// Challenges answered per registration attempt: one for a stale cached
/// nonce, one fresh. A server that keeps challenging is refusing us.
const MAX_AUTH_ANSWERS: u32 = 2;
const MANSCDP: &str = "Application/MANSCDP+xml";
const ALLOW: &str = "Allow: INVITE, ACK, BYE, CANCEL, MESSAGE, INFO, OPTIONS, SUBSCRIBE";

/// Everything the device needs to know; see [`DeviceConfig::new`] defaults.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The platform's SIP address (where REGISTER and MESSAGE go).
    pub server_addr: SocketAddr,
    /// The platform's 20-digit id.
    pub server_id: String,
    /// SIP domain / digest realm.
    pub realm: String,
    /// This device's 20-digit id (also the digest username).
    pub device_id: String,
    /// The one video channel's 20-digit id.
    pub channel_id: String,
    /// Channel name in Catalog responses.
    pub channel_name: String,
    /// Registration password; `None` answers no challenge.
    pub password: Option<String>,
    /// Our SIP address as written in Via and Contact.
    pub local_addr: SocketAddr,
    /// Address and port RTP leaves from, written in the SDP answer.
    pub media_addr: SocketAddr,
    /// Where the speaker listens for voice broadcast audio (§9.12).
    pub audio_addr: SocketAddr,
    /// Registration lifetime asked for, seconds.
    pub register_expires: u32,
    /// Period of Keepalive MESSAGEs once registered.
    pub keepalive_interval: Duration,
    /// Wait before trying again after a failed registration.
    pub register_retry: Duration,
    /// `false` makes a dead device: INVITEs are counted and never answered.
    pub answer_invites: bool,
    /// Catalog queries whose Response MESSAGE is never sent (the query
    /// still gets its 200 OK), as if a busy platform's socket dropped the
    /// answer: the first this many.
    pub lose_catalog_answers: u32,
    pub user_agent: String,
    /// Firmware string in DeviceInfo.
    pub firmware: String,
    /// The local port TCP media is accepted on when the platform offers
    /// `a=setup:active`; `None`: TCP offers are refused with 488.
    pub tcp_media_port: Option<u16>,
    /// What `y=` the 200 OK carries.
    pub answer_ssrc: AnswerSsrc,
    /// How our talk INVITE asks for the platform's audio.
    pub talk_media: TalkMedia,
    /// Keepalives in a row left unanswered (by the time the next is due,
    /// or by Timer F) before the device registers again, to `server_addr`.
    pub keepalive_misses: u32,
}

/// The transport a talk callback INVITE offers (GB/T 28181-2016 §9.12,
/// Annex F).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TalkMedia {
    /// `RTP/AVP` to `audio_addr`.
    #[default]
    Udp,
    /// `TCP/RTP/AVP` with `a=setup:passive`: the platform connects to
    /// `audio_addr`'s port over TCP.
    TcpListen,
    /// `TCP/RTP/AVP` with `a=setup:active`: we connect to the address in
    /// the platform's answer.
    TcpConnect,
}

/// The `y=` of our answer: devices differ (GB/T 28181-2016 §9.2.2 asks
/// for the offered one; some send their own, some none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerSsrc {
    #[default]
    Offered,
    /// Answer with (and send) this SSRC instead.
    Own(u32),
    /// No `y=` line; media still uses the offered SSRC.
    Omit,
    /// No `y=` line, and media uses this SSRC: the platform must learn it.
    Hidden(u32),
}

/// How the media of a call travels (GB/T 28181-2016 Annex F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaLink {
    /// RTP/AVP datagrams to `dest`.
    Udp,
    /// TCP/RTP/AVP, the platform offered `setup:passive`: we connect to
    /// `dest`.
    TcpConnect,
    /// TCP/RTP/AVP, the platform offered `setup:active`: it connects to our
    /// `tcp_media_port` from `dest`.
    TcpAccept,
}

impl DeviceConfig {
    /// A device with the demo ids and the GB28181 defaults: server
    /// `34020000002000000001`, realm `3402000000`, device
    /// `34020000001320000001`, channel `34020000001310000001`, password
    /// `12345678`, Expires 3600, keepalive 60 s.
    pub fn new(server_addr: SocketAddr, local_addr: SocketAddr, media_addr: SocketAddr) -> Self {
        Self {
            server_addr,
            server_id: "34020000002000000001".into(),
            realm: "3402000000".into(),
            device_id: "34020000001320000001".into(),
            channel_id: "34020000001310000001".into(),
            channel_name: "Demo Camera".into(),
            password: Some("12345678".into()),
            local_addr,
            media_addr,
            audio_addr: media_addr,
            register_expires: 3600,
            keepalive_interval: Duration::from_secs(60),
            register_retry: Duration::from_secs(5),
            answer_invites: true,
            lose_catalog_answers: 0,
            user_agent: concat!("camgate-sim/", env!("CARGO_PKG_VERSION")).into(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            tcp_media_port: None,
            answer_ssrc: AnswerSsrc::Offered,
            talk_media: TalkMedia::Udp,
            keepalive_misses: KEEPALIVE_MISSES,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub payload: Bytes,
}

/// Why a media stream stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The platform sent BYE.
    Bye,
    /// The platform never ACKed our 200 OK; we sent BYE.
    AckTimeout,
    /// [`GbDevice::shutdown`]; we sent BYE.
    Shutdown,
}

/// What happened, for the driver and for counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    Registered {
        expires: u32,
    },
    /// `status` is `None` when the platform never answered.
    RegistrationFailed {
        status: Option<u16>,
        reason: String,
    },
    /// Our `Expires: 0` was accepted.
    Unregistered,
    /// A 302 sent our REGISTER to another platform.
    Redirected {
        to: SocketAddr,
    },
    KeepaliveSent {
        sn: u32,
    },
    /// A query or control MESSAGE was answered (200 OK, maybe a Response).
    QueryAnswered {
        cmd: String,
        sn: String,
    },
    /// A DeviceControl `PTZCmd` word (A.3); `valid` is its checksum check.
    PtzReceived {
        word: String,
        valid: bool,
    },
    /// A new INVITE (retransmissions are not reported again).
    InviteReceived {
        call_id: String,
        answered: bool,
    },
    /// Start sending PS over RTP to `dest` with this SSRC.
    StartMedia {
        call_id: String,
        dest: SocketAddr,
        ssrc: u32,
        link: MediaLink,
    },
    StopMedia {
        call_id: String,
        reason: StopReason,
    },
    /// The INVITE asked for a recording (`s=Playback` / `s=Download`);
    /// comes just before its [`DeviceEvent::StartMedia`]. `start`/`end`
    /// are the offer's `t=` (Unix seconds), `speed` its `a=downloadspeed`.
    HistoryRequested {
        call_id: String,
        download: bool,
        start: u64,
        end: u64,
        speed: u32,
    },
    /// An INFO in a call (MANSRTSP playback control, §9.8), its body as
    /// received; answered 200.
    PlaybackControl {
        call_id: String,
        body: String,
    },
    /// GB/T 28181-2022 SnapShotConfig: upload `num` images to `url`.
    SnapshotRequested {
        url: String,
        session: String,
        num: u32,
        interval: u32,
    },
    /// A `Broadcast` notify: we call `source` back for voice.
    BroadcastReceived {
        source: String,
        target: String,
    },
    /// The platform accepted our talk INVITE (200, ACK sent): audio comes.
    TalkStarted {
        call_id: String,
        /// With [`TalkMedia::TcpConnect`]: where the platform's answer
        /// says to connect.
        connect_to: Option<SocketAddr>,
    },
    /// The platform refused or never answered our talk INVITE.
    TalkFailed {
        status: Option<u16>,
    },
    /// The platform hung up the talk call (its BYE).
    TalkEnded {
        call_id: String,
    },
    /// A new BYE; `known` is false when it matched no call (481 sent).
    ByeReceived {
        call_id: String,
        known: bool,
    },
}

/// Input the device could not use. The datagram is dropped (after an
/// error response where SIP has one); the device carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unparsable SIP from {from}: {source}")]
    Parse {
        from: SocketAddr,
        source: SipParseError,
    },
    #[error("{what} missing from {method} from {from}")]
    Missing {
        from: SocketAddr,
        method: String,
        what: &'static str,
    },
    #[error("response {status} from {from} matches no transaction")]
    StrayResponse { from: SocketAddr, status: u16 },
    #[error("cannot answer challenge: {0}")]
    Challenge(#[from] sip::DigestError),
    #[error("unusable SDP offer in INVITE {call_id}: {reason}")]
    BadOffer { call_id: String, reason: String },
    #[error("MESSAGE from {from} has no MANSCDP CmdType")]
    BadManscdp { from: SocketAddr },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegState {
    /// Not started, or shut down.
    Idle,
    /// A REGISTER is in flight.
    Registering,
    Registered,
    /// Waiting `register_retry` after a failure.
    Backoff,
    /// `Expires: 0` in flight.
    Unregistering,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TxKind {
    /// Our voice broadcast callback INVITE (§9.12).
    TalkInvite,
    Register {
        expires: u32,
    },
    Keepalive,
    Message,
    Bye,
}

/// An outstanding request of ours (non-INVITE client transaction).
#[derive(Debug)]
struct ClientTx {
    branch: String,
    kind: TxKind,
    payload: Bytes,
    dest: SocketAddr,
    retransmit_at: Option<Instant>,
    interval: Duration,
    deadline: Instant,
}

/// A request we answered, kept to absorb its retransmissions.
#[derive(Debug)]
struct ServerTx {
    key: String,
    /// Last response sent (`None`: deliberately unanswered INVITE).
    response: Option<Transmit>,
    expires: Instant,
}

/// A response to build: status, extra header lines, To tag, SDP body.
#[derive(Debug)]
struct Reply {
    code: u16,
    reason: &'static str,
    headers: Vec<String>,
    tag: Option<String>,
    sdp: Option<Bytes>,
}

impl Reply {
    fn new(code: u16, reason: &'static str) -> Self {
        Self {
            code,
            reason,
            headers: Vec::new(),
            tag: None,
            sdp: None,
        }
    }

    fn header(mut self, line: String) -> Self {
        self.headers.push(line);
        self
    }

    fn tag(mut self, tag: &str) -> Self {
        self.tag = Some(tag.to_owned());
        self
    }

    fn sdp(mut self, sdp: Bytes) -> Self {
        self.sdp = Some(sdp);
        self
    }
}

/// An answered INVITE: one media session.
#[derive(Debug)]
struct Call {
    call_id: String,
    /// Our To header, tag included: From of requests we send in the dialog.
    local_header: String,
    /// Their From header: To of requests we send.
    remote_header: String,
    /// Where in-dialog requests go (their Contact).
    remote_target: String,
    sdp_answer: Bytes,
    contact: String,
    to_tag: String,
    /// The 200 OK, retransmitted until ACK.
    ok: Transmit,
    acked: bool,
    retransmit_at: Instant,
    interval: Duration,
    ack_deadline: Instant,
    local_cseq: u32,
}

/// Our talk INVITE's dialog (we are the UAC here).
#[derive(Debug)]
struct TalkCall {
    call_id: String,
    /// Our From header with tag.
    local_header: String,
    /// Their To header, tag included once answered.
    remote_header: String,
    established: bool,
}

/// Small deterministic generator (SplitMix64) for tags, branches, Call-IDs
/// and cnonces: they need uniqueness, not secrecy.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Decimal token like the ones cameras use (`tag=1876074656`).
    fn token(&mut self) -> String {
        (self.next() as u32).to_string()
    }
}

/// The simulated device.
#[derive(Debug)]
pub struct GbDevice {
    cfg: DeviceConfig,
    /// Where requests go now: `cfg.server_addr` (home), or the platform a
    /// 302 sent us to (GB/T 28181-2022 §9.1.2.3) until it is lost.
    server: SocketAddr,
    /// 3xx answers followed since the last registration.
    redirects: u32,
    rng: SplitMix,
    reg_state: RegState,
    reg_call_id: String,
    reg_from_tag: String,
    reg_cseq: u32,
    /// When to (re-)register: refresh, retry, or first registration.
    next_register: Option<Instant>,
    challenge: Option<DigestChallenge>,
    nonce_count: u32,
    /// Nonce our last Authorization answered, and answers this attempt.
    answered_nonce: Option<String>,
    auth_answers: u32,
    next_keepalive: Option<Instant>,
    keepalive_misses: u32,
    sn: u32,
    /// Catalog answers withheld so far (`lose_catalog_answers`).
    catalog_answers_lost: u32,
    client_tx: Vec<ClientTx>,
    server_tx: VecDeque<ServerTx>,
    calls: Vec<Call>,
    /// The voice broadcast call we placed, if any.
    talk: Option<TalkCall>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DeviceEvent>,
}

impl GbDevice {
    /// A device that does nothing until [`GbDevice::start`]. `seed` feeds
    /// the tag/branch generator; give each device a different one.
    pub fn new(cfg: DeviceConfig, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let reg_call_id = format!("{}@{}", rng.token(), cfg.local_addr.ip());
        let reg_from_tag = rng.token();
        Self {
            server: cfg.server_addr,
            redirects: 0,
            cfg,
            rng,
            reg_state: RegState::Idle,
            reg_call_id,
            reg_from_tag,
            reg_cseq: 0,
            next_register: None,
            challenge: None,
            nonce_count: 0,
            answered_nonce: None,
            auth_answers: 0,
            next_keepalive: None,
            keepalive_misses: 0,
            sn: 0,
            catalog_answers_lost: 0,
            client_tx: Vec::new(),
            server_tx: VecDeque::new(),
            calls: Vec::new(),
            talk: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }

    /// Send the first REGISTER.
    pub fn start(&mut self, now: Instant) {
        if self.reg_state == RegState::Idle {
            self.send_register(now, self.cfg.register_expires);
        }
    }

    /// Stop: BYE every call, unregister. Keep pumping timeouts and
    /// datagrams until [`GbDevice::is_quiet`] (or a deadline) so those
    /// requests get their retransmissions.
    pub fn shutdown(&mut self, now: Instant) {
        let calls = std::mem::take(&mut self.calls);
        for call in calls {
            self.send_bye(now, call, StopReason::Shutdown);
        }
        self.next_keepalive = None;
        self.next_register = None;
        // Drop our own pending keepalives and MESSAGEs: nobody waits for them.
        self.client_tx
            .retain(|tx| !matches!(tx.kind, TxKind::Keepalive | TxKind::Message));
        match self.reg_state {
            RegState::Registered | RegState::Registering => {
                self.client_tx
                    .retain(|tx| !matches!(tx.kind, TxKind::Register { .. }));
                self.send_register(now, 0);
                self.reg_state = RegState::Unregistering;
            }
            _ => self.reg_state = RegState::Idle,
        }
    }

    /// No request of ours awaits an answer.
    pub fn is_quiet(&self) -> bool {
        self.client_tx.is_empty()
    }

    pub fn is_registered(&self) -> bool {
        self.reg_state == RegState::Registered
    }

    /// The platform requests go to now (home, or where a 302 sent us).
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The recording streamed on `call_id` reached its end: tell the
    /// platform (A.2.5 MediaStatus, NotifyType 121); it then sends BYE.
    pub fn media_finished(&mut self, now: Instant, call_id: &str) {
        if !self.calls.iter().any(|c| c.call_id == call_id) {
            return;
        }
        self.sn = self.sn.wrapping_add(1);
        let body = crate::sim::gb_device_extra::media_status_body(self.sn, &self.cfg.channel_id);
        self.send_message(now, TxKind::Message, body);
    }

    /// A motion alarm of the channel at `time` (A.2.5.3 Alarm Notify:
    /// priority 1, video alarm, type 2 motion detection).
    pub fn alarm(&mut self, now: Instant, time: &str) {
        self.sn = self.sn.wrapping_add(1);
        let body = crate::sim::gb_device_extra::alarm_body(self.sn, &self.cfg.channel_id, time);
        self.send_message(now, TxKind::Message, body);
    }

    /// Snapshot uploads of `session` are done: `UploadSnapShotFinished`
    /// listing the uploaded files.
    pub fn snapshot_finished(&mut self, now: Instant, session: &str, files: &[String]) {
        self.sn = self.sn.wrapping_add(1);
        let mut list = String::new();
        for f in files.iter().take(10) {
            let _ = write!(
                list,
                "<SnapShotFileID>{}</SnapShotFileID>\r\n",
                xml_escape(f)
            );
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n\
             <Notify>\r\n\
             <CmdType>UploadSnapShotFinished</CmdType>\r\n\
             <SN>{sn}</SN>\r\n\
             <DeviceID>{ch}</DeviceID>\r\n\
             <SessionID>{session}</SessionID>\r\n\
             <SnapShotList>\r\n{list}</SnapShotList>\r\n\
             </Notify>\r\n",
            sn = self.sn,
            ch = self.cfg.channel_id,
            session = xml_escape(session),
        );
        self.send_message(now, TxKind::Message, gb2312(&xml));
    }

    /// Calls currently streaming.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    /// The next instant [`GbDevice::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.client_tx.iter().flat_map(|t| {
            t.retransmit_at
                .into_iter()
                .chain(std::iter::once(t.deadline))
        });
        let calls = self
            .calls
            .iter()
            .filter(|c| !c.acked)
            .flat_map(|c| [c.retransmit_at, c.ack_deadline]);
        tx.chain(calls)
            .chain(self.next_register)
            .chain(self.next_keepalive)
            .min()
    }

    /// Run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.server_tx.retain(|s| s.expires > now);

        // Client transactions: retransmit (Timer E) or give up (Timer F).
        let mut expired = Vec::new();
        for tx in &mut self.client_tx {
            if tx.deadline <= now {
                expired.push(tx.branch.clone());
            } else if let Some(at) = tx.retransmit_at
                && at <= now
            {
                self.transmits.push_back(Transmit {
                    dest: tx.dest,
                    payload: tx.payload.clone(),
                });
                tx.interval = (tx.interval * 2).min(T2);
                tx.retransmit_at = Some(now + tx.interval);
            }
        }
        for branch in expired {
            if let Some(tx) = self.take_client_tx(&branch) {
                self.client_tx_timed_out(now, tx);
            }
        }

        // 2xx retransmission until ACK (RFC 3261 §13.3.1.4).
        let mut dead = Vec::new();
        for call in &mut self.calls {
            if call.acked {
                continue;
            }
            if call.ack_deadline <= now {
                dead.push(call.call_id.clone());
            } else if call.retransmit_at <= now {
                self.transmits.push_back(call.ok.clone());
                call.interval = (call.interval * 2).min(T2);
                call.retransmit_at = now + call.interval;
            }
        }
        for call_id in dead {
            if let Some(i) = self.calls.iter().position(|c| c.call_id == call_id) {
                let call = self.calls.remove(i);
                self.send_bye(now, call, StopReason::AckTimeout);
            }
        }

        if let Some(at) = self.next_register
            && at <= now
        {
            self.next_register = None;
            self.send_register(now, self.cfg.register_expires);
        }
        if let Some(at) = self.next_keepalive
            && at <= now
        {
            // The previous keepalive still unanswered when the next is due
            // counts as missed, as cameras count them (Timer F, 32 s,
            // would stretch a failover far past the keepalive period).
            let pending = self
                .client_tx
                .iter()
                .position(|t| matches!(t.kind, TxKind::Keepalive));
            if let Some(i) = pending {
                self.client_tx.remove(i);
                self.keepalive_missed(now);
            }
            if self.next_keepalive.is_some() {
                self.next_keepalive = Some(now + self.cfg.keepalive_interval);
                self.send_keepalive(now);
            }
        }
    }

    /// Feed one received datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        // A bare CRLF keep-alive ping (RFC 5626 §3.5.1) needs no answer.
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(());
        }
        let msg = SipMessage::parse(data).map_err(|source| DeviceError::Parse { from, source })?;
        match msg.status() {
            Some(status) => self.handle_response(now, from, status, &msg),
            None => self.handle_request(now, from, &msg),
        }
    }

    // ---- registration (§9.1) ------------------------------------------

    fn register_uri(&self) -> String {
        format!("sip:{}@{}", self.cfg.server_id, self.cfg.realm)
    }

    fn send_register(&mut self, now: Instant, expires: u32) {
        self.client_tx
            .retain(|tx| !matches!(tx.kind, TxKind::Register { .. }));
        // A refresh keeps us Registered (keepalives go on meanwhile).
        if expires > 0 && self.reg_state != RegState::Registered {
            self.reg_state = RegState::Registering;
        }
        let auth = match (&self.challenge, &self.cfg.password) {
            (Some(ch), Some(pw)) => {
                self.nonce_count += 1;
                let cnonce = format!("{:016x}", self.rng.next());
                self.answered_nonce = Some(ch.nonce.clone());
                Some(ch.authorization(
                    &self.cfg.device_id,
                    pw,
                    "REGISTER",
                    &self.register_uri(),
                    &cnonce,
                    self.nonce_count,
                ))
            }
            _ => None,
        };
        self.reg_cseq += 1;
        let branch = self.branch();
        let aor = format!("<sip:{}@{}>", self.cfg.device_id, self.cfg.realm);
        let mut s = String::with_capacity(600);
        let _ = write!(
            s,
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};rport;branch={branch}\r\n\
             From: {aor};tag={tag}\r\n\
             To: {aor}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{dev}@{local}>\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: {ua}\r\n\
             Expires: {expires}\r\n",
            uri = self.register_uri(),
            local = self.cfg.local_addr,
            tag = self.reg_from_tag,
            call_id = self.reg_call_id,
            cseq = self.reg_cseq,
            dev = self.cfg.device_id,
            ua = self.cfg.user_agent,
        );
        if let Some(auth) = auth {
            let _ = write!(s, "Authorization: {auth}\r\n");
        }
        let payload = sip::finish(s, None);
        self.start_client_tx(now, branch, TxKind::Register { expires }, payload);
    }

    fn on_register_response(&mut self, now: Instant, msg: &SipMessage, status: u16, expires: u32) {
        match status {
            100..=199 => {}
            200..=299 if expires == 0 => {
                self.reg_state = RegState::Idle;
                self.events.push_back(DeviceEvent::Unregistered);
            }
            200..=299 => {
                // The registrar may grant less than we asked (§10.3 step 8).
                let granted = msg
                    .header("Contact")
                    .and_then(|c| sip::param(c, "expires"))
                    .or_else(|| msg.header("Expires"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .filter(|&e| e > 0)
                    // More than we asked for is a registrar bug; do not
                    // let it push our refresh out of reach.
                    .map_or(expires, |e| e.min(expires));
                let was_registered = self.reg_state == RegState::Registered;
                self.reg_state = RegState::Registered;
                self.redirects = 0;
                self.auth_answers = 0;
                self.keepalive_misses = 0;
                // Refresh a minute early, or halfway for short lifetimes.
                let refresh = if granted > 120 {
                    granted - 60
                } else {
                    (granted / 2).max(1)
                };
                self.next_register = Some(now + Duration::from_secs(u64::from(refresh)));
                self.events
                    .push_back(DeviceEvent::Registered { expires: granted });
                if !was_registered {
                    // The first keepalive goes out at once, as cameras do:
                    // it is what marks the device online on many platforms.
                    self.next_keepalive = Some(now + self.cfg.keepalive_interval);
                    self.send_keepalive(now);
                }
            }
            301 | 302 if expires > 0 => {
                // GB/T 28181-2022 §9.1.2.3: register to the platform the
                // Contact names instead (a cluster node's owner).
                let target = msg
                    .header("Contact")
                    .and_then(|c| contact_addr(sip::uri_of(c)));
                match target {
                    Some(addr) if self.redirects < MAX_REDIRECTS => {
                        self.redirects += 1;
                        self.server = addr;
                        self.challenge = None;
                        self.answered_nonce = None;
                        self.auth_answers = 0;
                        self.events.push_back(DeviceEvent::Redirected { to: addr });
                        self.send_register(now, expires);
                    }
                    Some(_) => self.register_failed(now, Some(status), "too many redirects"),
                    None => self.register_failed(now, Some(status), "302 without a usable Contact"),
                }
            }
            401 | 407 => {
                let header = if status == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let challenge = msg.header(header).map(DigestChallenge::parse);
                match (challenge, &self.cfg.password) {
                    (Some(Ok(ch)), Some(_)) => {
                        let same_nonce = self.answered_nonce.as_deref() == Some(ch.nonce.as_str());
                        if (same_nonce && !ch.stale) || self.auth_answers >= MAX_AUTH_ANSWERS {
                            self.challenge = None;
                            self.register_failed(now, Some(status), "credentials refused");
                        } else {
                            self.auth_answers += 1;
                            self.challenge = Some(ch);
                            self.nonce_count = 0;
                            self.send_register(now, expires);
                        }
                    }
                    (Some(Err(e)), _) => {
                        self.register_failed(now, Some(status), &e.to_string());
                    }
                    (None, _) => self.register_failed(now, Some(status), "challenge missing"),
                    (_, None) => self.register_failed(now, Some(status), "no password configured"),
                }
            }
            _ => {
                let reason = match &msg.start {
                    sip::StartLine::Response { reason, .. } => reason.clone(),
                    sip::StartLine::Request { .. } => String::new(),
                };
                if expires == 0 {
                    // Refused unregistration: nothing more to do.
                    self.reg_state = RegState::Idle;
                } else {
                    self.register_failed(now, Some(status), &reason);
                }
            }
        }
    }

    fn register_failed(&mut self, now: Instant, status: Option<u16>, reason: &str) {
        self.reg_state = RegState::Backoff;
        // Start over at home: it knows where we belong now.
        self.server = self.cfg.server_addr;
        self.redirects = 0;
        self.next_keepalive = None;
        self.answered_nonce = None;
        self.auth_answers = 0;
        self.next_register = Some(now + self.cfg.register_retry);
        self.events.push_back(DeviceEvent::RegistrationFailed {
            status,
            reason: reason.to_owned(),
        });
    }

    /// The platform forgot us (or is gone): register again now, at home.
    fn reregister(&mut self, now: Instant) {
        if self.reg_state == RegState::Registered {
            self.reg_state = RegState::Registering;
            if self.server != self.cfg.server_addr {
                self.server = self.cfg.server_addr;
                self.redirects = 0;
                self.challenge = None;
            }
            self.next_keepalive = None;
            self.answered_nonce = None;
            self.auth_answers = 0;
            self.send_register(now, self.cfg.register_expires);
        }
    }

    // ---- keepalive and MANSCDP MESSAGEs (§9.5, §9.6) -------------------

    fn send_keepalive(&mut self, now: Instant) {
        self.sn = self.sn.wrapping_add(1);
        let sn = self.sn;
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n\
             <Notify>\r\n\
             <CmdType>Keepalive</CmdType>\r\n\
             <SN>{sn}</SN>\r\n\
             <DeviceID>{}</DeviceID>\r\n\
             <Status>OK</Status>\r\n\
             </Notify>\r\n",
            self.cfg.device_id
        );
        self.send_message(now, TxKind::Keepalive, body.into_bytes());
        self.events.push_back(DeviceEvent::KeepaliveSent { sn });
    }

    /// A MESSAGE to the platform carrying a MANSCDP body.
    fn send_message(&mut self, now: Instant, kind: TxKind, body: Vec<u8>) {
        let branch = self.branch();
        let tag = self.rng.token();
        let call_id = format!("{}@{}", self.rng.token(), self.cfg.local_addr.ip());
        let mut s = String::with_capacity(400);
        let _ = write!(
            s,
            "MESSAGE sip:{server}@{realm} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};rport;branch={branch}\r\n\
             From: <sip:{dev}@{realm}>;tag={tag}\r\n\
             To: <sip:{server}@{realm}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 20 MESSAGE\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: {ua}\r\n",
            server = self.cfg.server_id,
            realm = self.cfg.realm,
            local = self.cfg.local_addr,
            dev = self.cfg.device_id,
            ua = self.cfg.user_agent,
        );
        let payload = sip::finish(s, Some((MANSCDP, &body)));
        self.start_client_tx(now, branch, kind, payload);
    }

    fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &SipMessage,
    ) -> Result<(), DeviceError> {
        let text = msg.body_text();
        let root = xml_root(&text).unwrap_or_default();
        let Some(cmd) = xml_value(&text, "CmdType").map(str::to_owned) else {
            self.reply(now, from, msg, Reply::new(400, "Bad Request"));
            return Err(DeviceError::BadManscdp { from });
        };
        // Echoed values are reduced to safe characters: they go back into XML.
        let sn = sanitize(xml_value(&text, "SN").unwrap_or("0"));
        let target = sanitize(xml_value(&text, "DeviceID").unwrap_or(&self.cfg.device_id));
        self.reply(now, from, msg, Reply::new(200, "OK"));
        let body = match (root, cmd.as_str()) {
            ("Query", "Catalog") if self.catalog_answers_lost < self.cfg.lose_catalog_answers => {
                self.catalog_answers_lost += 1;
                None
            }
            ("Query", "Catalog") => Some(self.catalog_body(&sn)),
            ("Query", "DeviceInfo") => Some(self.device_info_body(&sn, &target)),
            ("Query", "DeviceStatus") => Some(self.device_status_body(&sn, &target)),
            // §9.7: one recording per hour of the queried window.
            ("Query", "RecordInfo") => Some(crate::sim::gb_device_extra::record_list_body(
                &sn,
                &target,
                xml_value(&text, "StartTime"),
                xml_value(&text, "EndTime"),
            )),
            // §9.3.2: PTZ commands are not answered; other controls are.
            ("Control", "DeviceControl") if xml_value(&text, "PTZCmd").is_none() => {
                Some(self.result_body("DeviceControl", &sn, &target))
            }
            ("Control", "DeviceControl") => {
                let word = sanitize(xml_value(&text, "PTZCmd").unwrap_or_default());
                let valid = crate::gb28181::ptz::PtzFrame::parse(&word).is_ok();
                self.events
                    .push_back(DeviceEvent::PtzReceived { word, valid });
                None
            }
            ("Control", "DeviceConfig") => {
                if let (Some(url), Some(session)) =
                    (xml_value(&text, "UploadURL"), xml_value(&text, "SessionID"))
                {
                    let num = xml_value(&text, "SnapNum")
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(1)
                        .clamp(1, 10);
                    let interval = xml_value(&text, "Interval")
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(1)
                        .clamp(1, 60);
                    self.events.push_back(DeviceEvent::SnapshotRequested {
                        url: url.chars().take(512).collect(),
                        session: sanitize(session),
                        num,
                        interval,
                    });
                }
                Some(self.result_body("DeviceConfig", &sn, &target))
            }
            ("Notify", "Broadcast") => {
                let source = sanitize(xml_value(&text, "SourceID").unwrap_or_default());
                let target = sanitize(xml_value(&text, "TargetID").unwrap_or(&self.cfg.channel_id));
                self.events.push_back(DeviceEvent::BroadcastReceived {
                    source: source.clone(),
                    target: target.clone(),
                });
                let answer = self.result_body("Broadcast", &sn, &target);
                self.send_message(now, TxKind::Message, answer);
                self.send_talk_invite(now, &source, &target);
                None
            }
            ("Query", "PresetQuery") => {
                Some(crate::sim::gb_device_extra::preset_body(&sn, &target))
            }
            ("Query", "ConfigDownload") => Some(crate::sim::gb_device_extra::basic_param_body(
                &sn,
                &self.cfg.device_id,
                self.cfg.keepalive_interval.as_secs(),
            )),
            _ => None,
        };
        if let Some(body) = body {
            self.send_message(now, TxKind::Message, body);
        }
        if root == "Query" || root == "Control" {
            self.events
                .push_back(DeviceEvent::QueryAnswered { cmd, sn });
        }
        Ok(())
    }

    fn catalog_body(&self, sn: &str) -> Vec<u8> {
        let c = &self.cfg;
        let civil = c.device_id.get(..6).unwrap_or("340200");
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n\
             <Response>\r\n\
             <CmdType>Catalog</CmdType>\r\n\
             <SN>{sn}</SN>\r\n\
             <DeviceID>{dev}</DeviceID>\r\n\
             <SumNum>1</SumNum>\r\n\
             <DeviceList Num=\"1\">\r\n\
             <Item>\r\n\
             <DeviceID>{ch}</DeviceID>\r\n\
             <Name>{name}</Name>\r\n\
             <Manufacturer>camgate</Manufacturer>\r\n\
             <Model>sim</Model>\r\n\
             <Owner>0</Owner>\r\n\
             <CivilCode>{civil}</CivilCode>\r\n\
             <Address>loopback</Address>\r\n\
             <Parental>0</Parental>\r\n\
             <ParentID>{dev}</ParentID>\r\n\
             <SafetyWay>0</SafetyWay>\r\n\
             <RegisterWay>1</RegisterWay>\r\n\
             <Secrecy>0</Secrecy>\r\n\
             <Status>ON</Status>\r\n\
             </Item>\r\n\
             </DeviceList>\r\n\
             </Response>\r\n",
            dev = c.device_id,
            ch = c.channel_id,
            name = xml_escape(&c.channel_name),
        );
        gb2312(&xml)
    }

    fn device_info_body(&self, sn: &str, target: &str) -> Vec<u8> {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n\
             <Response>\r\n\
             <CmdType>DeviceInfo</CmdType>\r\n\
             <SN>{sn}</SN>\r\n\
             <DeviceID>{target}</DeviceID>\r\n\
             <DeviceName>{name}</DeviceName>\r\n\
             <Result>OK</Result>\r\n\
             <Manufacturer>camgate</Manufacturer>\r\n\
             <Model>sim</Model>\r\n\
             <Firmware>{fw}</Firmware>\r\n\
             <Channel>1</Channel>\r\n\
             </Response>\r\n",
            name = xml_escape(&self.cfg.channel_name),
            fw = xml_escape(&self.cfg.firmware),
        );
        gb2312(&xml)
    }

    fn device_status_body(&self, sn: &str, target: &str) -> Vec<u8> {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n\
             <Response>\r\n\
             <CmdType>DeviceStatus</CmdType>\r\n\
             <SN>{sn}</SN>\r\n\
             <DeviceID>{target}</DeviceID>\r\n\
             <Result>OK</Result>\r\n\
             <Online>ONLINE</Online>\r\n\
             <Status>OK</Status>\r\n\
             <Encode>ON</Encode>\r\n\
             <Record>OFF</Record>\r\n\
             </Response>\r\n"
        );
        gb2312(&xml)
    }

    fn result_body(&self, cmd: &str, sn: &str, target: &str) -> Vec<u8> {
        gb2312(&format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n\
             <Response>\r\n\
             <CmdType>{cmd}</CmdType>\r\n\
             <SN>{sn}</SN>\r\n\
             <DeviceID>{target}</DeviceID>\r\n\
             <Result>OK</Result>\r\n\
             </Response>\r\n"
        ))
    }

    // ---- catalog subscription (§9.7.1) ----------------------------------

    /// Answer a catalog SUBSCRIBE with one NOTIFY in its dialog carrying a
    /// fixed script of changes, so a platform's handling of every event
    /// can be checked: a second channel (`…98`) is added OFF, turned ON,
    /// the main channel goes OFF, a third (`…99`) is added and deleted, and
    /// the second is renamed `Gate 2` by UPDATE.
    fn send_catalog_changes(&mut self, now: Instant, sub: &SipMessage, our_tag: &str) {
        let base = self
            .cfg
            .channel_id
            .get(..18)
            .unwrap_or("340200000013100000");
        let (ch1, ch2, ch3) = (
            self.cfg.channel_id.clone(),
            format!("{base}98"),
            format!("{base}99"),
        );
        let item = |id: &str, event: &str, extra: &str| {
            format!(
                "<Item>\r\n<DeviceID>{id}</DeviceID>\r\n{extra}<Event>{event}</Event>\r\n</Item>\r\n"
            )
        };
        let items = [
            item(
                &ch2,
                "ADD",
                "<Name>Gate</Name>\r\n<ParentID>{dev}</ParentID>\r\n<Status>OFF</Status>\r\n",
            ),
            item(&ch2, "ON", ""),
            item(&ch1, "OFF", ""),
            item(&ch3, "ADD", "<Name>Temp</Name>\r\n<Status>ON</Status>\r\n"),
            item(&ch3, "DEL", ""),
            item(
                &ch2,
                "UPDATE",
                "<Name>Gate 2</Name>\r\n<Status>ON</Status>\r\n",
            ),
        ]
        .concat()
        .replace("{dev}", &self.cfg.device_id);
        self.sn = self.sn.wrapping_add(1);
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n\
             <Notify>\r\n\
             <CmdType>Catalog</CmdType>\r\n\
             <SN>{sn}</SN>\r\n\
             <DeviceID>{dev}</DeviceID>\r\n\
             <SumNum>6</SumNum>\r\n\
             <DeviceList Num=\"6\">\r\n{items}</DeviceList>\r\n\
             </Notify>\r\n",
            sn = self.sn,
            dev = self.cfg.device_id,
        );
        let branch = self.branch();
        let to = sub.header("From").unwrap_or_default();
        let from = format!("{};tag={our_tag}", sub.header("To").unwrap_or_default());
        let target = sub
            .header_uri("Contact")
            .or_else(|| sub.header_uri("From"))
            .unwrap_or_default()
            .to_owned();
        let mut s = String::with_capacity(600);
        let _ = write!(
            s,
            "NOTIFY {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};rport;branch={branch}\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 NOTIFY\r\n\
             Event: Catalog\r\n\
             Subscription-State: active\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: {ua}\r\n",
            local = self.cfg.local_addr,
            call_id = sub.call_id().unwrap_or_default(),
            ua = self.cfg.user_agent,
        );
        let payload = sip::finish(s, Some((MANSCDP, &gb2312(&body))));
        self.start_client_tx(now, branch, TxKind::Message, payload);
    }

    // ---- voice broadcast (§9.12) ---------------------------------------

    /// Call `source` (the platform) back with our audio receive offer.
    fn send_talk_invite(&mut self, now: Instant, source: &str, target: &str) {
        if self.talk.is_some() {
            return;
        }
        let branch = self.branch();
        let tag = self.rng.token();
        let call_id = format!("{}@{}", self.rng.token(), self.cfg.local_addr.ip());
        let audio = self.cfg.audio_addr;
        let family = if audio.is_ipv6() { "IP6" } else { "IP4" };
        let ssrc = format!("0{:09}", self.rng.next() % 1_000_000_000);
        let (proto, setup, port) = match self.cfg.talk_media {
            TalkMedia::Udp => ("RTP/AVP", "", audio.port()),
            TalkMedia::TcpListen => (
                "TCP/RTP/AVP",
                "a=setup:passive\r\na=connection:new\r\n",
                audio.port(),
            ),
            // The discard port: we open the connection, nothing listens.
            TalkMedia::TcpConnect => ("TCP/RTP/AVP", "a=setup:active\r\na=connection:new\r\n", 9),
        };
        let sdp = format!(
            "v=0\r\n\
             o={target} 0 0 IN {family} {ip}\r\n\
             s=Play\r\n\
             c=IN {family} {ip}\r\n\
             t=0 0\r\n\
             m=audio {port} {proto} 8 96\r\n\
             a=recvonly\r\n\
             {setup}\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:96 PS/90000\r\n\
             y={ssrc}\r\n\
             f=v/////a/1/8/1\r\n",
            ip = audio.ip(),
        );
        let local_header = format!("<sip:{target}@{}>;tag={tag}", self.cfg.realm);
        let remote_header = format!("<sip:{source}@{}>", self.cfg.realm);
        let mut s = String::with_capacity(600);
        let _ = write!(
            s,
            "INVITE sip:{source}@{realm} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};rport;branch={branch}\r\n\
             From: {local_header}\r\n\
             To: {remote_header}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:{target}@{local}>\r\n\
             Subject: {source}:{ssrc},{target}:0\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: {ua}\r\n",
            realm = self.cfg.realm,
            local = self.cfg.local_addr,
            ua = self.cfg.user_agent,
        );
        let payload = sip::finish(s, Some(("application/sdp", sdp.as_bytes())));
        self.start_client_tx(now, branch, TxKind::TalkInvite, payload);
        self.talk = Some(TalkCall {
            call_id,
            local_header,
            remote_header,
            established: false,
        });
    }

    /// The final answer to our talk INVITE: ACK it either way (RFC 3261
    /// §17.1.1.3 for non-2xx, §13.2.2.4 for 2xx).
    fn on_talk_answer(&mut self, status: u16, msg: &SipMessage, branch: &str) {
        let Some(talk) = self.talk.as_mut() else {
            return;
        };
        let to = msg.header("To").unwrap_or_default().to_owned();
        let ok = (200..300).contains(&status);
        // A 2xx ACK is a new transaction; a non-2xx ACK reuses the branch.
        let ack_branch = if ok {
            format!("z9hG4bK{}", self.rng.token())
        } else {
            branch.to_owned()
        };
        let target = msg
            .header_uri("Contact")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sip:{}", self.server));
        let mut s = String::with_capacity(300);
        let _ = write!(
            s,
            "ACK {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};rport;branch={ack_branch}\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 ACK\r\n\
             Max-Forwards: 70\r\n",
            local = self.cfg.local_addr,
            from = talk.local_header,
            call_id = talk.call_id,
        );
        self.transmits.push_back(Transmit {
            dest: self.server,
            payload: Bytes::from(sip::finish(s, None)),
        });
        if ok {
            talk.remote_header = to;
            talk.established = true;
            let call_id = talk.call_id.clone();
            let connect_to = match self.cfg.talk_media {
                TalkMedia::TcpConnect => answer_audio_addr(&msg.body_text()),
                TalkMedia::Udp | TalkMedia::TcpListen => None,
            };
            self.events.push_back(DeviceEvent::TalkStarted {
                call_id,
                connect_to,
            });
        } else {
            self.talk = None;
            self.events.push_back(DeviceEvent::TalkFailed {
                status: Some(status),
            });
        }
    }

    // ---- INVITE / ACK / BYE (§9.2) -------------------------------------

    fn handle_invite(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &SipMessage,
    ) -> Result<(), DeviceError> {
        let missing = |what| DeviceError::Missing {
            from,
            method: "INVITE".into(),
            what,
        };
        let call_id = msg.call_id().ok_or_else(|| missing("Call-ID"))?.to_owned();
        // In-dialog, or a fresh transaction for a call we already answered
        // (a confused peer): either way the answer stands as given.
        if msg.to_tag().is_some() || self.calls.iter().any(|c| c.call_id == call_id) {
            return self.handle_reinvite(now, from, msg, &call_id);
        }
        let answered = self.cfg.answer_invites;
        self.events.push_back(DeviceEvent::InviteReceived {
            call_id: call_id.clone(),
            answered,
        });
        if !answered {
            // Dead device: remember the transaction so its retransmissions
            // are not reported as new INVITEs, and say nothing.
            self.remember_server_tx(now, msg, None);
            return Ok(());
        }
        let target = match &msg.start {
            sip::StartLine::Request { uri, .. } => sip::uri_user(uri).unwrap_or("").to_owned(),
            sip::StartLine::Response { .. } => String::new(),
        };
        if target != self.cfg.channel_id && target != self.cfg.device_id {
            self.reply(now, from, msg, Reply::new(404, "Not Found"));
            return Ok(());
        }
        if self.calls.len() >= MAX_CALLS {
            self.reply(now, from, msg, Reply::new(486, "Busy Here"));
            return Ok(());
        }
        let offer = match SdpOffer::parse(&msg.body_text()).and_then(|o| {
            if o.tcp_setup.is_some() && self.cfg.tcp_media_port.is_none() {
                Err("TCP media is not enabled on this device".to_owned())
            } else {
                Ok(o)
            }
        }) {
            Ok(offer) => offer,
            Err(reason) => {
                self.reply(now, from, msg, Reply::new(488, "Not Acceptable Here"));
                return Err(DeviceError::BadOffer { call_id, reason });
            }
        };
        let mut ssrc = offer
            .ssrc
            .unwrap_or_else(|| (self.rng.next() % 1_000_000_000) as u32);
        if let AnswerSsrc::Own(own) | AnswerSsrc::Hidden(own) = self.cfg.answer_ssrc {
            ssrc = own;
        }
        let link = match offer.tcp_setup.as_deref() {
            None => MediaLink::Udp,
            // RFC 4145: the platform's `active` makes us passive.
            Some("active") => MediaLink::TcpAccept,
            Some(_) => MediaLink::TcpConnect,
        };
        let sdp = Bytes::from(self.sdp_answer(&offer, ssrc, &target, link));
        let to_tag = self.rng.token();
        let contact = format!("Contact: <sip:{target}@{}>", self.cfg.local_addr);

        self.reply(now, from, msg, Reply::new(100, "Trying"));
        self.reply(
            now,
            from,
            msg,
            Reply::new(101, "Dialog Establishement")
                .header(contact.clone())
                .tag(&to_tag),
        );
        let ok = self.reply(
            now,
            from,
            msg,
            Reply::new(200, "OK")
                .header(contact.clone())
                .tag(&to_tag)
                .sdp(sdp.clone()),
        );

        let to = msg.header("To").unwrap_or_default();
        let local_header = format!("{to};tag={to_tag}");
        let remote_header = msg.header("From").unwrap_or_default().to_owned();
        let remote_target = msg
            .header_uri("Contact")
            .or_else(|| msg.header_uri("From"))
            .unwrap_or_default()
            .to_owned();
        self.calls.push(Call {
            call_id: call_id.clone(),
            local_header,
            remote_header,
            remote_target,
            sdp_answer: sdp,
            contact,
            to_tag,
            ok,
            acked: false,
            retransmit_at: now + T1,
            interval: T1,
            ack_deadline: now + TX_TIMEOUT,
            local_cseq: 0,
        });
        if offer.session_name != "Play" {
            let mut t = offer
                .timing
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0));
            self.events.push_back(DeviceEvent::HistoryRequested {
                call_id: call_id.clone(),
                download: offer.session_name == "Download",
                start: t.next().unwrap_or(0),
                end: t.next().unwrap_or(0),
                speed: offer.download_speed.unwrap_or(1),
            });
        }
        self.events.push_back(DeviceEvent::StartMedia {
            call_id,
            dest: SocketAddr::new(offer.ip, offer.port),
            ssrc,
            link,
        });
        Ok(())
    }

    /// An INVITE inside an existing dialog (session refresh): same answer.
    fn handle_reinvite(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &SipMessage,
        call_id: &str,
    ) -> Result<(), DeviceError> {
        let Some(call) = self.calls.iter().find(|c| c.call_id == call_id) else {
            self.reply(
                now,
                from,
                msg,
                Reply::new(481, "Call/Transaction Does Not Exist"),
            );
            return Ok(());
        };
        let (contact, tag, sdp) = (
            call.contact.clone(),
            call.to_tag.clone(),
            call.sdp_answer.clone(),
        );
        self.reply(
            now,
            from,
            msg,
            Reply::new(200, "OK").header(contact).tag(&tag).sdp(sdp),
        );
        Ok(())
    }

    fn sdp_answer(&self, offer: &SdpOffer, ssrc: u32, owner: &str, link: MediaLink) -> Vec<u8> {
        let ip = self.cfg.media_addr.ip();
        let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
        let (port, proto, tcp_lines) = match link {
            MediaLink::Udp => (self.cfg.media_addr.port(), "RTP/AVP", ""),
            MediaLink::TcpAccept => (
                self.cfg.tcp_media_port.unwrap_or(9),
                "TCP/RTP/AVP",
                "a=setup:passive\r\na=connection:new\r\n",
            ),
            // RFC 4145 §4.1: the active side's port is irrelevant (9).
            MediaLink::TcpConnect => (9, "TCP/RTP/AVP", "a=setup:active\r\na=connection:new\r\n"),
        };
        let y = match self.cfg.answer_ssrc {
            AnswerSsrc::Omit | AnswerSsrc::Hidden(_) => String::new(),
            _ => format!("y={ssrc:010}\r\n"),
        };
        format!(
            "v=0\r\n\
             o={owner} 0 0 IN {family} {ip}\r\n\
             s={s}\r\n\
             c=IN {family} {ip}\r\n\
             t={t}\r\n\
             m=video {port} {proto} 96\r\n\
             a=sendonly\r\n\
             a=rtpmap:96 PS/90000\r\n\
             {tcp_lines}\
             {y}\
             f=\r\n",
            s = offer.session_name,
            t = offer.timing,
        )
        .into_bytes()
    }

    fn handle_ack(&mut self, msg: &SipMessage) {
        if let Some(call) = msg
            .call_id()
            .and_then(|id| self.calls.iter_mut().find(|c| c.call_id == id))
        {
            call.acked = true;
        }
    }

    fn handle_bye(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &SipMessage,
    ) -> Result<(), DeviceError> {
        let call_id = msg
            .call_id()
            .ok_or_else(|| DeviceError::Missing {
                from,
                method: "BYE".into(),
                what: "Call-ID",
            })?
            .to_owned();
        if self.talk.as_ref().is_some_and(|t| t.call_id == call_id) {
            self.talk = None;
            self.reply(now, from, msg, Reply::new(200, "OK"));
            self.events.push_back(DeviceEvent::TalkEnded { call_id });
            return Ok(());
        }
        let known = self.calls.iter().position(|c| c.call_id == call_id);
        self.events.push_back(DeviceEvent::ByeReceived {
            call_id: call_id.clone(),
            known: known.is_some(),
        });
        match known {
            Some(i) => {
                self.calls.remove(i);
                self.reply(now, from, msg, Reply::new(200, "OK"));
                self.events.push_back(DeviceEvent::StopMedia {
                    call_id,
                    reason: StopReason::Bye,
                });
            }
            None => {
                self.reply(
                    now,
                    from,
                    msg,
                    Reply::new(481, "Call/Transaction Does Not Exist"),
                );
            }
        }
        Ok(())
    }

    /// Our own BYE, for a call we end (shutdown, no ACK).
    fn send_bye(&mut self, now: Instant, mut call: Call, reason: StopReason) {
        call.local_cseq += 1;
        let branch = self.branch();
        let mut s = String::with_capacity(400);
        let _ = write!(
            s,
            "BYE {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};rport;branch={branch}\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} BYE\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: {ua}\r\n",
            target = call.remote_target,
            local = self.cfg.local_addr,
            from = call.local_header,
            to = call.remote_header,
            call_id = call.call_id,
            cseq = call.local_cseq,
            ua = self.cfg.user_agent,
        );
        let payload = sip::finish(s, None);
        self.start_client_tx(now, branch, TxKind::Bye, payload);
        self.events.push_back(DeviceEvent::StopMedia {
            call_id: call.call_id,
            reason,
        });
    }

    // ---- dispatch -------------------------------------------------------

    fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &SipMessage,
    ) -> Result<(), DeviceError> {
        let method = msg.method().unwrap_or_default().to_owned();
        if method == "ACK" {
            // ACK for a 2xx is its own transaction and gets no response.
            self.handle_ack(msg);
            return Ok(());
        }
        let missing = |what| DeviceError::Missing {
            from,
            method: method.clone(),
            what,
        };
        if msg.call_id().is_none() {
            return Err(missing("Call-ID"));
        }
        if msg.cseq().is_none() {
            return Err(missing("CSeq"));
        }
        if msg.header("Via").is_none() {
            return Err(missing("Via"));
        }
        // A retransmission: repeat what we said (or our silence).
        let key = server_tx_key(msg);
        if let Some(tx) = self.server_tx.iter().find(|t| t.key == key) {
            if let Some(resp) = &tx.response {
                self.transmits.push_back(resp.clone());
            }
            return Ok(());
        }
        match method.as_str() {
            "MESSAGE" => self.handle_message(now, from, msg),
            "INVITE" => self.handle_invite(now, from, msg),
            "BYE" => self.handle_bye(now, from, msg),
            "CANCEL" => {
                // We answer INVITEs at once, so a CANCEL finds nothing to
                // cancel (§9.2: it then has no effect).
                let known = msg
                    .call_id()
                    .is_some_and(|id| self.calls.iter().any(|c| c.call_id == id));
                if known {
                    self.reply(now, from, msg, Reply::new(200, "OK"));
                } else if self.cfg.answer_invites {
                    self.reply(
                        now,
                        from,
                        msg,
                        Reply::new(481, "Call/Transaction Does Not Exist"),
                    );
                }
                Ok(())
            }
            "INFO" => {
                // MANSRTSP playback control (§9.8); live streams ignore it.
                let known = msg
                    .call_id()
                    .is_some_and(|id| self.calls.iter().any(|c| c.call_id == id));
                if known {
                    self.reply(now, from, msg, Reply::new(200, "OK"));
                    let body = msg.body_text();
                    if !body.trim().is_empty() {
                        self.events.push_back(DeviceEvent::PlaybackControl {
                            call_id: msg.call_id().unwrap_or_default().to_owned(),
                            body: body.chars().take(1024).collect(),
                        });
                    }
                } else {
                    self.reply(
                        now,
                        from,
                        msg,
                        Reply::new(481, "Call/Transaction Does Not Exist"),
                    );
                }
                Ok(())
            }
            "OPTIONS" => {
                self.reply(now, from, msg, Reply::new(200, "OK").header(ALLOW.into()));
                Ok(())
            }
            "SUBSCRIBE" => {
                // Accepted but never notified: enough for platforms that
                // subscribe to catalog or alarm events as a matter of course.
                let expires = msg
                    .header("Expires")
                    .and_then(|e| e.trim().parse::<u32>().ok())
                    .unwrap_or(3600);
                let tag = self.rng.token();
                let contact = format!(
                    "Contact: <sip:{}@{}>",
                    self.cfg.device_id, self.cfg.local_addr
                );
                self.reply(
                    now,
                    from,
                    msg,
                    Reply::new(200, "OK")
                        .header(contact)
                        .header(format!("Expires: {expires}"))
                        .tag(&tag),
                );
                let catalog = msg
                    .header("Event")
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case("Catalog"));
                if catalog {
                    self.send_catalog_changes(now, msg, &tag);
                }
                Ok(())
            }
            _ => {
                self.reply(
                    now,
                    from,
                    msg,
                    Reply::new(405, "Method Not Allowed").header(ALLOW.into()),
                );
                Ok(())
            }
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        status: u16,
        msg: &SipMessage,
    ) -> Result<(), DeviceError> {
        let stray = DeviceError::StrayResponse { from, status };
        let Some(branch) = msg.top_via_branch() else {
            return Err(stray);
        };
        let Some(i) = self.client_tx.iter().position(|t| t.branch == branch) else {
            return Err(stray);
        };
        if status < 200 {
            // Provisional: the request arrived; stop retransmitting quickly
            // (§17.1.2.2, Proceeding state retransmits at T2).
            let tx = &mut self.client_tx[i];
            tx.interval = T2;
            tx.retransmit_at = Some(now + T2);
            return Ok(());
        }
        let tx = self.client_tx.remove(i);
        match tx.kind {
            TxKind::TalkInvite => self.on_talk_answer(status, msg, &tx.branch),
            TxKind::Register { expires } => self.on_register_response(now, msg, status, expires),
            TxKind::Keepalive => {
                if (200..300).contains(&status) {
                    self.keepalive_misses = 0;
                } else {
                    // The platform refuses our keepalive (the Dahua trace
                    // shows 400 when it no longer knows the device):
                    // register again at once.
                    self.reregister(now);
                }
            }
            TxKind::Message | TxKind::Bye => {}
        }
        Ok(())
    }

    fn client_tx_timed_out(&mut self, now: Instant, tx: ClientTx) {
        match tx.kind {
            TxKind::Register { expires: 0 } => self.reg_state = RegState::Idle,
            TxKind::Register { .. } => self.register_failed(now, None, "no answer"),
            TxKind::Keepalive => self.keepalive_missed(now),
            TxKind::Message | TxKind::Bye => {}
            TxKind::TalkInvite => {
                self.talk = None;
                self.events
                    .push_back(DeviceEvent::TalkFailed { status: None });
            }
        }
    }

    fn keepalive_missed(&mut self, now: Instant) {
        self.keepalive_misses += 1;
        if self.keepalive_misses >= self.cfg.keepalive_misses.max(1) {
            self.keepalive_misses = 0;
            self.reregister(now);
        }
    }

    // ---- plumbing ---------------------------------------------------------

    fn branch(&mut self) -> String {
        // RFC 3261 §8.1.1.7: the magic cookie marks a unique branch.
        format!("z9hG4bK{}", self.rng.token())
    }

    fn start_client_tx(&mut self, now: Instant, branch: String, kind: TxKind, payload: Vec<u8>) {
        let payload = Bytes::from(payload);
        let dest = self.server;
        self.transmits.push_back(Transmit {
            dest,
            payload: payload.clone(),
        });
        if self.client_tx.len() >= MAX_CLIENT_TX {
            self.client_tx.remove(0);
        }
        self.client_tx.push(ClientTx {
            branch,
            kind,
            payload,
            dest,
            retransmit_at: Some(now + T1),
            interval: T1,
            deadline: now + TX_TIMEOUT,
        });
    }

    fn take_client_tx(&mut self, branch: &str) -> Option<ClientTx> {
        let i = self.client_tx.iter().position(|t| t.branch == branch)?;
        Some(self.client_tx.remove(i))
    }

    /// Queue a response to the request's source (symmetric response
    /// routing, RFC 3581) and remember final ones for retransmissions.
    /// Responses above 100 without a tag get a fresh To tag (§8.2.6.2).
    fn reply(&mut self, now: Instant, to: SocketAddr, req: &SipMessage, r: Reply) -> Transmit {
        let tag = match r.tag {
            Some(t) => Some(t),
            None if r.code > 100 => Some(self.rng.token()),
            None => None,
        };
        let mut lines = r.headers;
        lines.push(format!("User-Agent: {}", self.cfg.user_agent));
        let body = r.sdp.as_ref().map(|b| ("application/sdp", &b[..]));
        let payload = sip::response_to(req, r.code, r.reason, tag.as_deref(), to, &lines, body);
        let t = Transmit {
            dest: to,
            payload: Bytes::from(payload),
        };
        self.transmits.push_back(t.clone());
        if r.code >= 200 {
            self.remember_server_tx(now, req, Some(t.clone()));
        }
        t
    }

    fn remember_server_tx(&mut self, now: Instant, req: &SipMessage, response: Option<Transmit>) {
        let key = server_tx_key(req);
        self.server_tx.retain(|t| t.key != key);
        if self.server_tx.len() >= MAX_SERVER_TX {
            self.server_tx.pop_front();
        }
        self.server_tx.push_back(ServerTx {
            key,
            response,
            expires: now + TX_TIMEOUT,
        });
    }
}

/// Server transaction id (§17.2.3): top Via branch + method, or Call-ID +
/// CSeq for pre-RFC 3261 peers without a magic-cookie branch.
fn server_tx_key(msg: &SipMessage) -> String {
    let method = msg.method().unwrap_or_default();
    match msg.top_via_branch() {
        Some(b) if b.starts_with("z9hG4bK") => format!("{b} {method}"),
        _ => format!(
            "{} {} {method}",
            msg.call_id().unwrap_or_default(),
            msg.header("CSeq").unwrap_or_default()
        ),
    }
}

/// What the device uses from a GB28181 SDP offer (GB/T 28181-2016 Annex F).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpOffer {
    /// `c=` address (media level wins over session level).
    pub ip: IpAddr,
    /// `m=video` port.
    pub port: u16,
    /// `y=` SSRC, when present.
    pub ssrc: Option<u32>,
    /// `s=`: Play, Playback or Download.
    pub session_name: String,
    /// `t=` line, echoed (playback offers carry the time range).
    pub timing: String,
    /// `a=downloadspeed:N` of a Download offer.
    pub download_speed: Option<u32>,
    /// For `TCP/RTP/AVP`: the platform's `a=setup:` role (`active`,
    /// `passive`; `passive` when absent, the GB default).
    pub tcp_setup: Option<String>,
}

impl SdpOffer {
    /// Parse an offer; the error says what is wrong, for a 488 and a log line.
    pub fn parse(sdp: &str) -> Result<Self, String> {
        let mut session_c: Option<IpAddr> = None;
        let mut media_c: Option<IpAddr> = None;
        let mut port: Option<u16> = None;
        let mut in_video = false;
        let mut ssrc = None;
        let mut session_name = "Play".to_owned();
        let mut timing = "0 0".to_owned();
        let mut download_speed = None;
        let mut tcp_setup = None;
        for line in sdp.lines().take(256) {
            let line = line.trim_end();
            let Some((kind, value)) = line.split_once('=') else {
                continue;
            };
            match kind {
                "m" => {
                    let mut f = value.split_whitespace();
                    let media = f.next().unwrap_or_default();
                    in_video = media == "video";
                    if in_video {
                        let p = f.next().unwrap_or_default();
                        let proto = f.next().unwrap_or_default();
                        let proto = proto.to_ascii_uppercase();
                        if proto == "TCP/RTP/AVP" || proto == "RTP/AVP/TCP" {
                            tcp_setup = Some("passive".to_owned());
                        } else if proto != "RTP/AVP" {
                            return Err(format!("transport {proto} (RTP/AVP or TCP/RTP/AVP)"));
                        }
                        let p: u16 = p
                            .split('/')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .ok_or_else(|| format!("bad m= port {p:?}"))?;
                        port = Some(p);
                    }
                }
                "c" => {
                    let addr = value.split_whitespace().nth(2).unwrap_or_default();
                    let ip = addr
                        .split('/')
                        .next()
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        .ok_or_else(|| format!("bad c= address {addr:?}"))?;
                    if port.is_some() && in_video {
                        media_c = Some(ip);
                    } else if port.is_none() {
                        session_c = Some(ip);
                    }
                }
                "a" if in_video && tcp_setup.is_some() => {
                    if let Some(v) = value.trim().strip_prefix("downloadspeed:") {
                        download_speed = v.trim().parse::<u32>().ok().filter(|v| *v > 0);
                    }
                    if let Some(role) = value.trim().strip_prefix("setup:") {
                        let role = role.trim().to_ascii_lowercase();
                        if role != "active" && role != "passive" {
                            return Err(format!("a=setup:{role} (active or passive)"));
                        }
                        tcp_setup = Some(role);
                    }
                }
                "y" => {
                    let v = value.trim();
                    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!("bad y= SSRC {v:?} (10 decimal digits)"));
                    }
                    ssrc = Some(
                        v.parse::<u32>()
                            .map_err(|_| format!("y= SSRC {v} does not fit 32 bits"))?,
                    );
                }
                "s" => {
                    let v = value.trim();
                    if ["Play", "Playback", "Download"].contains(&v) {
                        session_name = v.to_owned();
                    }
                }
                "a" => {
                    if let Some(v) = value.trim().strip_prefix("downloadspeed:") {
                        download_speed = v.trim().parse::<u32>().ok().filter(|v| *v > 0);
                    }
                }
                "t" => {
                    let v = value.trim();
                    if v.split_whitespace().count() == 2
                        && v.bytes().all(|b| b.is_ascii_digit() || b == b' ')
                    {
                        timing = v.to_owned();
                    }
                }
                _ => {}
            }
        }
        let port = port.ok_or("no m=video line")?;
        let ip = media_c.or(session_c).ok_or("no c= line")?;
        if port == 0 || ip.is_unspecified() {
            return Err(format!("offer points at {ip}:{port}"));
        }
        Ok(Self {
            ip,
            port,
            ssrc,
            session_name,
            timing,
            download_speed,
            tcp_setup,
        })
    }
}

/// Where a talk answer's `m=audio` listens: its `c=` (media level, else
/// session level) and port.
fn answer_audio_addr(sdp: &str) -> Option<SocketAddr> {
    let mut ip: Option<std::net::IpAddr> = None;
    let mut port = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=") {
            // Session-level c= comes first; a media-level one overrides it.
            ip = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.parse().ok())
                .or(ip);
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok());
        }
    }
    Some(SocketAddr::new(ip?, port.filter(|p| *p != 0)?))
}

/// Name of the root element (skipping the declaration and comments).
/// The `host:port` of a redirect Contact URI (`sip:id@10.0.0.2:5060;…`);
/// a missing port is 5060 (RFC 3261 §19.1.2). Names are not resolved.
fn contact_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri.strip_prefix("sip:")?;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split([';', '?']).next()?;
    host_port.parse().ok().or_else(|| {
        let ip: IpAddr = host_port.trim_matches(['[', ']']).parse().ok()?;
        Some(SocketAddr::new(ip, 5060))
    })
}

fn xml_root(text: &str) -> Option<&str> {
    let mut rest = text;
    for _ in 0..16 {
        let start = rest.find('<')?;
        rest = &rest[start + 1..];
        if rest.starts_with('?') || rest.starts_with('!') {
            let end = rest.find('>')?;
            rest = &rest[end + 1..];
            continue;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        return Some(&rest[..end]);
    }
    None
}

/// Text of the first `<tag>…</tag>`, trimmed. Enough for the flat MANSCDP
/// queries a device receives.
fn xml_value<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(text[start..start + len].trim())
}

/// Keep only characters that are safe to echo into XML, at most 32.
fn sanitize(v: &str) -> String {
    v.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect()
}

fn xml_escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The XML declares GB2312; encode as GBK (its superset) so a non-ASCII
/// channel name arrives as declared.
fn gb2312(xml: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(xml).0.into_owned()
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self::new(SocketAddr::new(lo.ip(), 5060), lo, lo)
    }
}

#[cfg(test)]
mod tests;
