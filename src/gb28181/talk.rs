//! Voice broadcast (GB/T 28181-2016 §9.12): we send a `Broadcast` notify
//! (`SourceID` = our id, `TargetID` = the channel); the device calls us
//! back with an INVITE offering where it listens (`m=audio PORT RTP/AVP 8
//! …`, `a=rtpmap:8 PCMA/8000`); we answer 200 with our sending address and
//! stream G.711 A-law over RTP — payload type 8, 20 ms per packet (160
//! samples), timestamps +160 — then BYE. One session per channel.
//!
//! The audio is a [`TalkFeed`]: an uploaded clip paced at 20 ms per
//! packet, or live packets (a browser's microphone, `crate::webrtc::talk`)
//! sent as they come until their sender goes.
//!
//! The device may ask for the audio over TCP instead (`m=audio PORT
//! TCP/RTP/AVP 8`, GB/T 28181-2016 Annex F): `a=setup:passive` means it
//! listens at PORT and we connect, from the port we answer with;
//! `a=setup:active` (or no `a=setup`, RFC 4145 §4's default for an offer)
//! means it connects to the port we answer with. Each packet then goes
//! out with RFC 4571's two-byte length in front.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rsipstack::dialog::dialog::DialogState;
use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::Transaction;
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{Instrument, info, info_span, warn};

use super::control::broadcast_notify;
use super::exchanges::QueryError;
use super::sdp::{Direction, GbSdp, MediaKind, Payload, SessionName, Setup, Transport};
use crate::config::Config;
use crate::ingest::port_pool::{BoundPair, BoundTcp, PortError, PortHold, PortPool};
use crate::ingest::tcp::{accept_device, connect_device};
use crate::metrics::{self, label};
use crate::sip::request::RequestFacts;
use crate::sip::stack::SipStack;

pub use crate::media::audio::g711::SAMPLES_PER_PACKET;
pub const PAYLOAD_TYPE_PCMA: u8 = 8;
/// A-law code of a zero sample.
pub const SILENCE: u8 = 0xD5;
/// How long the device has to call back after the Broadcast notify.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TCP audio connection may take to come up after our 200 OK.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one packet may take to be written to a TCP audio connection:
/// a device that stops reading for this long is treated as gone, so it
/// cannot hold the task, a pool port and the channel.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A boxed future a [`TalkHost`] returns (the trait is used as `dyn`).
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a talk session needs from the GB28181 side that holds it, and no
/// more: the sessions, config, serial numbers, SIP stack (dialogs), port
/// pool, MANSCDP sending, device state and sender checks. Taking this
/// narrow handle instead of the platform keeps the platform ↔ talk
/// dependency one-way (issue 15; enforced by `crate::module_graph`).
pub trait TalkHost: Send + Sync {
    /// The talk sessions, one per channel, this host keeps.
    fn talk_sessions(&self) -> &TalkSessions;
    fn config(&self) -> Arc<Config>;
    /// The next MANSCDP `SN`.
    fn next_sn(&self) -> u32;
    fn sip(&self) -> &SipStack;
    fn ports(&self) -> &PortPool;
    /// Send a MANSCDP document to `device` and wait for its 200.
    fn send_manscdp<'a>(
        &'a self,
        device: &'a str,
        xml: &'a str,
    ) -> HostFuture<'a, Result<(), QueryError>>;
    /// Resolves, with a description for the log, at the next change of
    /// `device`'s state (offline, restarted) — subscribed at the call.
    fn device_change(&self, device: &str) -> HostFuture<'static, String>;
    /// `Ok` if the request came from where `device` last registered, else
    /// the reason to refuse it with.
    fn sender_verdict(&self, device: &str, facts: &RequestFacts) -> Result<(), &'static str>;
    /// Refuse a request from the wrong sender (403, counted, logged).
    fn refuse_sender<'a>(
        &'a self,
        tx: &'a mut Transaction,
        facts: &'a RequestFacts,
        reason: &'static str,
    ) -> HostFuture<'a, ()>;
}

/// A poisoned lock still guards consistent records (each update is one
/// insert or removal), so it is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TalkError {
    #[error("channel {0} already has a talk session")]
    Busy(String),
    #[error("broadcast notify failed: {0}")]
    Notify(#[from] QueryError),
    #[error("the device did not call back within {0:?}")]
    NoCallback(Duration),
    #[error("the device's offer is unusable: {0}")]
    BadOffer(String),
    #[error("{0}")]
    Failed(String),
}

impl TalkError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Busy(_) => "busy",
            Self::Notify(_) => "notify",
            Self::NoCallback(_) => "no_callback",
            Self::BadOffer(_) => "bad_offer",
            Self::Failed(_) => "failed",
        }
    }
}

/// What the API reports once the device has accepted.
#[derive(Debug, Clone, Serialize)]
pub struct TalkStarted {
    pub device: String,
    pub channel: String,
    /// Where the audio goes (the device's `c=` and `m=audio` port).
    pub destination: String,
    /// `udp`, `tcp_active` (we connect) or `tcp_passive` (the device does).
    pub transport: &'static str,
    pub ssrc: u32,
    pub packets: usize,
    pub duration_ms: u64,
}

/// A talk waiting for the device's INVITE, by channel.
struct Pending {
    device: String,
    invite: Option<oneshot::Sender<Transaction>>,
}

#[derive(Default)]
pub struct TalkSessions {
    by_channel: Arc<std::sync::Mutex<HashMap<String, Pending>>>,
}

/// A channel taken for one talk session; the channel is free again when
/// this is dropped — whether the talk ended, failed, or the HTTP handler
/// waiting for the device's callback was dropped with its client.
struct ChannelClaim {
    by_channel: Arc<std::sync::Mutex<HashMap<String, Pending>>>,
    channel: String,
}

impl TalkSessions {
    /// Take `channel` for a talk with `device`; `invite` receives the
    /// device's callback INVITE.
    fn claim(
        &self,
        device: &str,
        channel: &str,
        invite: oneshot::Sender<Transaction>,
    ) -> Result<ChannelClaim, TalkError> {
        let mut talks = lock(&self.by_channel);
        if talks.contains_key(channel) {
            return Err(TalkError::Busy(channel.to_owned()));
        }
        talks.insert(
            channel.to_owned(),
            Pending {
                device: device.to_owned(),
                invite: Some(invite),
            },
        );
        Ok(ChannelClaim {
            by_channel: self.by_channel.clone(),
            channel: channel.to_owned(),
        })
    }

    /// Channels with a talk pending or running.
    pub fn busy(&self) -> usize {
        lock(&self.by_channel).len()
    }
}

impl Drop for ChannelClaim {
    fn drop(&mut self) {
        lock(&self.by_channel).remove(&self.channel);
    }
}

/// One RTP packet of PCMA (RFC 3550 §5.1; marker on the first packet of
/// the talkspurt, RFC 3551 §4.1).
pub fn rtp_packet(seq: u16, timestamp: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(PAYLOAD_TYPE_PCMA | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// How the audio reaches the device, from its offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkLink {
    /// RTP/AVP datagrams to this address.
    Udp(SocketAddr),
    /// TCP/RTP/AVP, the device listens (`a=setup:passive`): we connect.
    TcpConnect(SocketAddr),
    /// TCP/RTP/AVP, the device connects (`a=setup:active`) from this host.
    TcpAccept(IpAddr),
}

impl TalkLink {
    pub fn transport(&self) -> &'static str {
        match self {
            Self::Udp(_) => "udp",
            Self::TcpConnect(_) => "tcp_active",
            Self::TcpAccept(_) => "tcp_passive",
        }
    }
}

impl std::fmt::Display for TalkLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udp(a) => write!(f, "udp:{a}"),
            Self::TcpConnect(a) => write!(f, "tcp:{a}"),
            Self::TcpAccept(ip) => write!(f, "tcp:{ip} (device connects)"),
        }
    }
}

/// Our answer: send-only PCMA from `ip:port`, echoing the device's SSRC;
/// over TCP, the opposite `a=setup` role of the device's.
pub fn answer_sdp(server_id: &str, ip: &str, port: u16, ssrc: &str, link: TalkLink) -> String {
    let mut sdp = GbSdp::live_offer(server_id, ip, port, ssrc);
    sdp.session_name = SessionName::Play;
    let transport = match link {
        TalkLink::Udp(_) => Transport::RtpAvp,
        TalkLink::TcpConnect(_) | TalkLink::TcpAccept(_) => Transport::TcpRtpAvp,
    };
    let mut m = super::sdp::Media::new(MediaKind::Audio, port, transport, Direction::SendOnly);
    m.payloads = vec![Payload::new(PAYLOAD_TYPE_PCMA, "PCMA", 8000)];
    match link {
        TalkLink::Udp(_) => {}
        TalkLink::TcpConnect(_) => {
            m.setup = Some(Setup::Active);
            m.connection_new = true;
        }
        TalkLink::TcpAccept(_) => {
            m.setup = Some(Setup::Passive);
            m.connection_new = true;
        }
    }
    sdp.media = vec![m];
    sdp.build()
}

/// Where and how the device wants the audio, from its offer: PCMA over
/// RTP/AVP or TCP/RTP/AVP.
fn destination(offer: &GbSdp) -> Result<TalkLink, String> {
    let audio = offer
        .media
        .iter()
        .find(|m| m.kind == MediaKind::Audio)
        .ok_or("no m=audio")?;
    if !audio.payloads.iter().any(|p| p.pt == PAYLOAD_TYPE_PCMA) {
        return Err("PCMA (payload type 8) not offered".into());
    }
    let ip: IpAddr = audio
        .connection_ip
        .as_deref()
        .unwrap_or(&offer.connection_ip)
        .trim()
        .parse()
        .map_err(|_| "c= is not an IP address".to_owned())?;
    if ip.is_unspecified() {
        return Err(format!("offer points at {ip}"));
    }
    let device_listens = |port: u16| {
        if port == 0 {
            Err(format!("offer points at {ip}:0"))
        } else {
            Ok(SocketAddr::new(ip, port))
        }
    };
    match (&audio.transport, audio.setup) {
        (Transport::RtpAvp, _) => device_listens(audio.port).map(TalkLink::Udp),
        (Transport::TcpRtpAvp, Some(Setup::Passive)) => {
            device_listens(audio.port).map(TalkLink::TcpConnect)
        }
        // `actpass` leaves the choice to us: listening needs nothing
        // from the device's port, which is often a placeholder.
        (Transport::TcpRtpAvp, Some(Setup::Active | Setup::ActPass) | None) => {
            Ok(TalkLink::TcpAccept(ip))
        }
        (Transport::Other(t), _) => Err(format!("transport {t} (only RTP/AVP or TCP/RTP/AVP)")),
    }
}

/// The audio path once negotiated: a pool port (UDP pair or TCP socket)
/// that lives as long as the talk.
enum AudioPort {
    Udp(BoundPair),
    TcpListen(BoundTcp<tokio::net::TcpListener>),
    TcpConnect(BoundTcp<tokio::net::TcpSocket>),
}

impl AudioPort {
    async fn bind(pool: &PortPool, link: TalkLink) -> Result<Self, PortError> {
        Ok(match link {
            TalkLink::Udp(_) => Self::Udp(pool.bind_pair().await?),
            TalkLink::TcpAccept(_) => Self::TcpListen(pool.bind_tcp_listener()?),
            TalkLink::TcpConnect(_) => Self::TcpConnect(pool.bind_tcp_socket()?),
        })
    }

    fn port(&self) -> u16 {
        match self {
            Self::Udp(p) => p.port,
            Self::TcpListen(t) => t.port,
            Self::TcpConnect(t) => t.port,
        }
    }

    /// Bring the path up (for TCP: the connection) and return the sender.
    async fn open(self, link: TalkLink) -> Result<AudioSink, String> {
        match (self, link) {
            (Self::Udp(pair), TalkLink::Udp(dest)) => Ok(AudioSink::Udp { pair, dest }),
            (Self::TcpListen(listener), TalkLink::TcpAccept(device_ip)) => {
                let stream = accept_device(&listener.socket, Some(device_ip), TCP_CONNECT_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(AudioSink::Tcp {
                    stream,
                    _port: listener.split().1,
                    framed: Vec::with_capacity(2 + 12 + SAMPLES_PER_PACKET),
                })
            }
            (Self::TcpConnect(socket), TalkLink::TcpConnect(dest)) => {
                let (socket, hold) = socket.split();
                let stream = connect_device(socket, dest, TCP_CONNECT_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(AudioSink::Tcp {
                    stream,
                    _port: hold,
                    framed: Vec::with_capacity(2 + 12 + SAMPLES_PER_PACKET),
                })
            }
            _ => Err("audio port does not match the negotiated link".into()),
        }
    }
}

/// Sends RTP packets to the device.
enum AudioSink {
    Udp {
        pair: BoundPair,
        dest: SocketAddr,
    },
    Tcp {
        stream: tokio::net::TcpStream,
        /// Keeps our port leased until the talk ends.
        _port: PortHold,
        framed: Vec<u8>,
    },
}

impl AudioSink {
    async fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Udp { pair, dest } => pair.rtp.send_to(packet, *dest).await.map(drop),
            Self::Tcp { stream, framed, .. } => {
                write_framed(stream, packet, framed, TCP_WRITE_TIMEOUT).await
            }
        }
    }
}

/// Write one RFC 4571 framed packet within `limit` (a deadline for this
/// write, measured from its start).
async fn write_framed<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    packet: &[u8],
    framed: &mut Vec<u8>,
    limit: Duration,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    framed.clear();
    crate::ingest::rfc4571::frame(packet, framed)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "packet too large"))?;
    match tokio::time::timeout(limit, stream.write_all(framed)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the device took no audio for {limit:?}"),
        )),
    }
}

/// Where a talk session's A-law comes from.
pub enum TalkFeed {
    /// A whole clip, paced out at one packet per 20 ms.
    Clip(Vec<u8>),
    /// Live audio (a browser's microphone): each item is one packet of
    /// [`SAMPLES_PER_PACKET`] A-law bytes, sent as it arrives; the talk
    /// ends when the sender is dropped.
    Live(tokio::sync::mpsc::Receiver<Vec<u8>>),
}

/// The packets of a [`TalkFeed`] in sending order and pace.
struct Packets {
    feed: TalkFeed,
    at: usize,
    tick: tokio::time::Interval,
}

impl Packets {
    fn new(feed: TalkFeed) -> Self {
        let feed = match feed {
            // Every packet is a whole 20 ms: pad the tail with A-law silence.
            TalkFeed::Clip(mut alaw) => {
                let padded = alaw.len().div_ceil(SAMPLES_PER_PACKET) * SAMPLES_PER_PACKET;
                alaw.resize(padded, SILENCE);
                TalkFeed::Clip(alaw)
            }
            live => live,
        };
        Self {
            feed,
            at: 0,
            tick: tokio::time::interval(Duration::from_millis(20)),
        }
    }

    /// Packets a clip will take (0 for live audio).
    fn clip_packets(&self) -> usize {
        match &self.feed {
            TalkFeed::Clip(alaw) => alaw.len() / SAMPLES_PER_PACKET,
            TalkFeed::Live(_) => 0,
        }
    }

    /// The next packet's payload, or `None` at the end. Cancel-safe: a
    /// clip only advances once its tick has passed.
    async fn next(&mut self) -> Option<Vec<u8>> {
        match &mut self.feed {
            TalkFeed::Clip(alaw) => {
                let chunk = alaw.get(self.at..self.at + SAMPLES_PER_PACKET)?.to_vec();
                self.tick.tick().await;
                self.at += SAMPLES_PER_PACKET;
                Some(chunk)
            }
            TalkFeed::Live(rx) => {
                let mut packet = rx.recv().await?;
                packet.resize(SAMPLES_PER_PACKET, SILENCE);
                Some(packet)
            }
        }
    }
}

/// Ask `channel` to call back, then play `alaw` to it. Returns once the
/// device accepted; the audio goes on in the background.
pub async fn talk(
    host: &dyn TalkHost,
    device: &str,
    channel: &str,
    alaw: Vec<u8>,
) -> Result<TalkStarted, TalkError> {
    talk_feed(host, device, channel, TalkFeed::Clip(alaw)).await
}

/// [`talk`] from any [`TalkFeed`], e.g. live audio.
pub async fn talk_feed(
    host: &dyn TalkHost,
    device: &str,
    channel: &str,
    feed: TalkFeed,
) -> Result<TalkStarted, TalkError> {
    let outcome = talk_inner(host, device, channel, feed).await;
    if let Err(e) = &outcome {
        // The channel was freed when talk_inner's claim was dropped.
        metrics::get()
            .gb_talk_sessions
            .get_or_create(&label("outcome", e.kind()))
            .inc();
        warn!(%device, %channel, "talk failed: {e}");
    }
    outcome
}

async fn talk_inner(
    host: &dyn TalkHost,
    device: &str,
    channel: &str,
    feed: TalkFeed,
) -> Result<TalkStarted, TalkError> {
    let (tx, rx) = oneshot::channel();
    // Held across every await below and then by the audio task.
    let claim = host.talk_sessions().claim(device, channel, tx)?;
    let xml = broadcast_notify(host.next_sn(), &host.config().sip.server_id, channel);
    host.send_manscdp(device, &xml).await?;
    let mut invite = tokio::time::timeout(CALLBACK_TIMEOUT, rx)
        .await
        .map_err(|_| TalkError::NoCallback(CALLBACK_TIMEOUT))?
        .map_err(|_| TalkError::Failed("talk superseded".into()))?;
    let offer_text = String::from_utf8_lossy(invite.original.body()).into_owned();
    let offer = match GbSdp::parse(&offer_text)
        .map_err(|e| e.to_string())
        .and_then(|o| destination(&o).map(|d| (o, d)))
    {
        Ok(v) => v,
        Err(e) => {
            let _ = invite.reply(StatusCode::NotAcceptableHere).await;
            return Err(TalkError::BadOffer(e));
        }
    };
    let (offer, link) = offer;
    let port = match AudioPort::bind(host.ports(), link).await {
        Ok(p) => p,
        Err(e) => {
            let _ = invite.reply(StatusCode::NotAcceptableHere).await;
            return Err(TalkError::Failed(format!("no RTP port: {e}")));
        }
    };
    let ssrc_text = offer
        .ssrc
        .clone()
        .filter(|s| super::ssrc::Ssrc::parse(s).is_some())
        .unwrap_or_else(|| format!("{:010}", rand::random::<u32>() % 1_000_000_000));
    let ssrc = super::ssrc::Ssrc::parse(&ssrc_text).map_or(0, |s| s.value());
    let ip = host.config().advertised_ip().to_string();
    let answer = answer_sdp(
        &host.config().sip.server_id,
        &ip,
        port.port(),
        &ssrc_text,
        link,
    );
    let (state_tx, mut states) = host.sip().dialogs.new_dialog_state_channel();
    let contact = rsipstack::sip::Uri::try_from(
        format!(
            "sip:{}@{}",
            host.config().sip.server_id,
            host.sip().advertised
        )
        .as_str(),
    )
    .ok();
    let dialog = host
        .sip()
        .dialogs
        .get_or_create_server_invite(&invite, state_tx, None, contact)
        .map_err(|e| TalkError::Failed(format!("dialog: {e}")))?;
    dialog
        .accept(
            Some(vec![Header::ContentType("application/sdp".into())]),
            Some(answer.into_bytes()),
        )
        .map_err(|e| TalkError::Failed(format!("accept: {e}")))?;
    {
        let mut handler = dialog.clone();
        tokio::spawn(async move {
            let _ = handler.handle(&mut invite).await;
        });
    }
    let mut feed = Packets::new(feed);
    let packets = feed.clip_packets();
    let started = TalkStarted {
        device: device.to_owned(),
        channel: channel.to_owned(),
        destination: link.to_string(),
        transport: link.transport(),
        ssrc,
        packets,
        duration_ms: (packets * SAMPLES_PER_PACKET) as u64 * 1000 / 8000,
    };
    metrics::get()
        .gb_talk_sessions
        .get_or_create(&label("outcome", "ok"))
        .inc();
    info!(%device, %channel, %link, packets, "talk accepted");
    let dialogs = host.sip().dialogs.clone();
    let span = info_span!("talk", device = %device, channel = %channel);
    // The device going offline or restarting ends the talk; so does a
    // live feed that stops (one deadline from its last packet).
    let device_change = host.device_change(device);
    let silence_limit = host.config().media.rtp_timeout;
    tokio::spawn(
        async move {
            tokio::pin!(device_change);
            let mut last_audio = tokio::time::Instant::now();
            let silence = tokio::time::sleep_until(last_audio + silence_limit);
            tokio::pin!(silence);
            let mut sink = match port.open(link).await {
                Ok(sink) => Some(sink),
                Err(e) => {
                    metrics::get()
                        .gb_talk_sessions
                        .get_or_create(&label("outcome", "media_failed"))
                        .inc();
                    warn!(%link, "talk audio connection failed: {e}");
                    None
                }
            };
            let mut seq: u16 = rand::random();
            let mut ts: u32 = rand::random();
            let mut sent = 0usize;
            let mut hung_up = false;
            let mut first = true;
            while let Some(out) = sink.as_mut() {
                let chunk = tokio::select! {
                    chunk = feed.next() => match chunk {
                        Some(c) => {
                            last_audio = tokio::time::Instant::now();
                            c
                        }
                        None => break,
                    },
                    change = &mut device_change => {
                        info!(%change, "talk ended by the device's state");
                        break;
                    }
                    _ = &mut silence => {
                        let due = last_audio + silence_limit;
                        if due > tokio::time::Instant::now() {
                            silence.as_mut().reset(due);
                            continue;
                        }
                        info!("talk audio feed silent: ending");
                        break;
                    }
                    s = states.recv() => {
                        if matches!(s, None | Some(DialogState::Terminated(..))) {
                            hung_up = true;
                            break;
                        }
                        // Other dialog states (ACK arrived) do not pace.
                        continue;
                    }
                };
                let pkt = rtp_packet(seq, ts, ssrc, first, &chunk);
                first = false;
                match out.send(&pkt).await {
                    Ok(()) => {
                        sent += 1;
                        metrics::get().gb_talk_packets_sent.inc();
                    }
                    // A closed TCP connection will not come back.
                    Err(e) if matches!(out, AudioSink::Tcp { .. }) => {
                        warn!("talk audio connection lost: {e}");
                        break;
                    }
                    Err(_) => {}
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(SAMPLES_PER_PACKET as u32);
            }
            info!(sent, hung_up, "talk audio done");
            if !hung_up && let Err(e) = dialog.bye().await {
                warn!("talk BYE failed: {e}");
            }
            dialogs.remove_dialog(&dialog.id());
            drop(sink);
            drop(claim);
        }
        .instrument(span),
    );
    Ok(started)
}

/// An INVITE from a device outside any dialog: the callback of a
/// Broadcast we sent, matched by the caller (`From` user) being the
/// channel or its device.
pub async fn on_talk_invite(host: &dyn TalkHost, mut tx: Transaction, facts: &RequestFacts) {
    // The callback must come from the registered device it claims to
    // be (or whose channel it names), or anyone could take the call.
    let device = lock(&host.talk_sessions().by_channel)
        .iter()
        .find(|(ch, p)| {
            p.invite.is_some() && (**ch == facts.from_user || p.device == facts.from_user)
        })
        .map(|(_, p)| p.device.clone());
    if let Some(device) = &device
        && let Err(reason) = host.sender_verdict(device, facts)
    {
        host.refuse_sender(&mut tx, facts, reason).await;
        return;
    }
    let waiting = {
        let mut talks = lock(&host.talk_sessions().by_channel);
        talks
            .iter_mut()
            .find(|(ch, p)| {
                p.invite.is_some() && (**ch == facts.from_user || p.device == facts.from_user)
            })
            .and_then(|(_, p)| p.invite.take())
    };
    match waiting {
        Some(sender) => {
            info!(caller = %facts.from_user, "talk callback INVITE");
            let _ = tx.send_trying().await;
            if let Err(mut tx) = sender.send(tx) {
                let _ = tx.reply(StatusCode::RequestTimeout).await;
            }
        }
        None => {
            metrics::get()
                .gb_talk_sessions
                .get_or_create(&label("outcome", "unexpected_invite"))
                .inc();
            warn!(caller = %facts.from_user, "INVITE from a device with no talk pending");
            let _ = tx.reply(StatusCode::NotFound).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=34020000001310000001 0 0 IN IP4 192.168.1.64\r\ns=Play\r\nc=IN IP4 192.168.1.64\r\nt=0 0\r\nm=audio 15060 RTP/AVP 8 96\r\na=recvonly\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 PS/90000\r\ny=0100000001\r\nf=v/////a/1/8/1\r\n";

    #[test]
    fn offer_destination_and_answer() {
        let offer = GbSdp::parse(OFFER).unwrap();
        assert_eq!(
            destination(&offer),
            Ok(TalkLink::Udp("192.168.1.64:15060".parse().unwrap()))
        );
        let tcp = OFFER.replace("RTP/AVP 8 96", "TCP/RTP/AVP 8 96");
        let device = "192.168.1.64".parse().unwrap();
        // No a=setup: the offerer is active (RFC 4145 §4).
        assert_eq!(
            destination(&GbSdp::parse(&tcp).unwrap()),
            Ok(TalkLink::TcpAccept(device))
        );
        let listens = tcp.replace("a=recvonly", "a=recvonly\r\na=setup:passive");
        assert_eq!(
            destination(&GbSdp::parse(&listens).unwrap()),
            Ok(TalkLink::TcpConnect(SocketAddr::new(device, 15060)))
        );
        let other = OFFER.replace("RTP/AVP 8 96", "RTP/SAVP 8 96");
        assert!(destination(&GbSdp::parse(&other).unwrap()).is_err());
        let no_pcma = OFFER.replace("RTP/AVP 8 96", "RTP/AVP 96");
        assert!(destination(&GbSdp::parse(&no_pcma).unwrap()).is_err());

        let udp = TalkLink::Udp("192.168.1.64:15060".parse().unwrap());
        let answer = answer_sdp("34020000002000000001", "10.0.0.1", 30002, "0100000001", udp);
        let a = GbSdp::parse(&answer).unwrap();
        let m = &a.media[0];
        assert_eq!((m.kind.clone(), m.port), (MediaKind::Audio, 30002));
        assert_eq!(m.direction, Direction::SendOnly);
        assert_eq!(m.payloads[0].pt, 8);
        assert_eq!((m.transport.clone(), m.setup), (Transport::RtpAvp, None));
        assert_eq!(a.ssrc.as_deref(), Some("0100000001"));

        // Over TCP we take the role the device left: it listens, we connect.
        let connect = TalkLink::TcpConnect("192.168.1.64:15060".parse().unwrap());
        let a = GbSdp::parse(&answer_sdp("s", "10.0.0.1", 30002, "0100000001", connect)).unwrap();
        let m = &a.media[0];
        assert_eq!(
            (m.transport.clone(), m.setup, m.connection_new),
            (Transport::TcpRtpAvp, Some(Setup::Active), true)
        );
        let accept = TalkLink::TcpAccept("192.168.1.64".parse().unwrap());
        let a = GbSdp::parse(&answer_sdp("s", "10.0.0.1", 30002, "0100000001", accept)).unwrap();
        assert_eq!(a.media[0].setup, Some(Setup::Passive));
    }

    #[test]
    fn rtp_header() {
        let p = rtp_packet(0x0102, 0x0A0B_0C0D, 1, true, &[0xD5; 160]);
        assert_eq!(p.len(), 172);
        assert_eq!(&p[..12], &[0x80, 0x88, 1, 2, 10, 11, 12, 13, 0, 0, 0, 1]);
        assert_eq!(rtp_packet(0, 0, 0, false, &[])[1], 8);
    }

    /// Issue 13: the HTTP handler waiting for the device's callback is
    /// dropped when its client disconnects; the channel must not stay busy.
    #[tokio::test]
    async fn a_dropped_waiting_talk_frees_its_channel() {
        let sessions = TalkSessions::default();
        let (tx, rx) = oneshot::channel::<Transaction>();
        // The shape of talk_inner: claim, then wait for the callback.
        let waiting = async {
            let _claim = sessions.claim("dev", "ch1", tx)?;
            let _ = rx.await;
            Ok::<(), TalkError>(())
        };
        let mut waiting = Box::pin(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        assert_eq!(sessions.busy(), 1);
        let (tx2, _rx2) = oneshot::channel();
        assert!(matches!(
            sessions.claim("dev", "ch1", tx2),
            Err(TalkError::Busy(_))
        ));
        drop(waiting);
        assert_eq!(sessions.busy(), 0);
        let (tx3, _rx3) = oneshot::channel();
        assert!(sessions.claim("dev", "ch1", tx3).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_that_stops_reading_ends_the_tcp_talk() {
        // The device's side of the connection is never read.
        let (mut ours, _device) = tokio::io::duplex(512);
        let mut framed = Vec::new();
        let packet = rtp_packet(0, 0, 1, true, &[SILENCE; SAMPLES_PER_PACKET]);
        let mut result = Ok(());
        for _ in 0..10 {
            result = write_framed(&mut ours, &packet, &mut framed, TCP_WRITE_TIMEOUT).await;
            if result.is_err() {
                break;
            }
        }
        let err = result.expect_err("a stuck write must end");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
