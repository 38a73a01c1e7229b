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
//! RTP over TCP (`TCP/RTP/AVP`, `a=setup`) is refused with 488 for now.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog::DialogState;
use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::Transaction;
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{Instrument, info, info_span, warn};

use super::control::broadcast_notify;
use super::exchanges::QueryError;
use super::platform::{GbPlatform, lock};
use super::sdp::{Direction, GbSdp, MediaKind, Payload, SessionName, Transport};
use crate::metrics::{self, label};
use crate::sip::request::RequestFacts;

/// Samples per RTP packet: 20 ms at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
pub const PAYLOAD_TYPE_PCMA: u8 = 8;
/// A-law code of a zero sample.
pub const SILENCE: u8 = 0xD5;
/// How long the device has to call back after the Broadcast notify.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

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
    by_channel: std::sync::Mutex<HashMap<String, Pending>>,
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

/// Our answer: send-only PCMA from `ip:port`, echoing the device's SSRC.
pub fn answer_sdp(server_id: &str, ip: &str, port: u16, ssrc: &str) -> String {
    let mut sdp = GbSdp::live_offer(server_id, ip, port, ssrc);
    sdp.session_name = SessionName::Play;
    let mut m = super::sdp::Media::new(
        MediaKind::Audio,
        port,
        Transport::RtpAvp,
        Direction::SendOnly,
    );
    m.payloads = vec![Payload::new(PAYLOAD_TYPE_PCMA, "PCMA", 8000)];
    sdp.media = vec![m];
    sdp.build()
}

/// Where the device listens, from its offer: UDP RTP with PCMA.
fn destination(offer: &GbSdp) -> Result<SocketAddr, String> {
    let audio = offer
        .media
        .iter()
        .find(|m| m.kind == MediaKind::Audio)
        .ok_or("no m=audio")?;
    if audio.transport != Transport::RtpAvp {
        return Err(format!(
            "transport {} (only RTP/AVP)",
            audio.transport.as_str()
        ));
    }
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
    if audio.port == 0 || ip.is_unspecified() {
        return Err(format!("offer points at {ip}:{}", audio.port));
    }
    Ok(SocketAddr::new(ip, audio.port))
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

impl GbPlatform {
    /// Ask `channel` to call back, then play `alaw` to it. Returns once the
    /// device accepted; the audio goes on in the background.
    pub async fn talk(
        self: &Arc<Self>,
        device: &str,
        channel: &str,
        alaw: Vec<u8>,
    ) -> Result<TalkStarted, TalkError> {
        self.talk_feed(device, channel, TalkFeed::Clip(alaw)).await
    }

    /// [`talk`](Self::talk) from any [`TalkFeed`], e.g. live audio.
    pub async fn talk_feed(
        self: &Arc<Self>,
        device: &str,
        channel: &str,
        feed: TalkFeed,
    ) -> Result<TalkStarted, TalkError> {
        let outcome = self.talk_inner(device, channel, feed).await;
        if let Err(e) = &outcome {
            // A busy channel's entry is the running session's, not ours.
            if !matches!(e, TalkError::Busy(_)) {
                lock(&self.talks.by_channel).remove(channel);
            }
            metrics::get()
                .gb_talk_sessions
                .get_or_create(&label("outcome", e.kind()))
                .inc();
            warn!(%device, %channel, "talk failed: {e}");
        }
        outcome
    }

    async fn talk_inner(
        self: &Arc<Self>,
        device: &str,
        channel: &str,
        feed: TalkFeed,
    ) -> Result<TalkStarted, TalkError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut talks = lock(&self.talks.by_channel);
            if talks.contains_key(channel) {
                return Err(TalkError::Busy(channel.to_owned()));
            }
            talks.insert(
                channel.to_owned(),
                Pending {
                    device: device.to_owned(),
                    invite: Some(tx),
                },
            );
        }
        let xml = broadcast_notify(self.next_sn(), &self.config().sip.server_id, channel);
        self.send_manscdp(device, &xml).await?;
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
        let (offer, dest) = offer;
        let ports = self
            .ports
            .bind_pair()
            .await
            .map_err(|e| TalkError::Failed(format!("no RTP port: {e}")))?;
        let ssrc_text = offer
            .ssrc
            .clone()
            .filter(|s| super::ssrc::Ssrc::parse(s).is_some())
            .unwrap_or_else(|| format!("{:010}", rand::random::<u32>() % 1_000_000_000));
        let ssrc = super::ssrc::Ssrc::parse(&ssrc_text).map_or(0, |s| s.value());
        let ip = self.config().advertised_ip().to_string();
        let answer = answer_sdp(&self.config().sip.server_id, &ip, ports.port, &ssrc_text);
        let (state_tx, mut states) = self.sip.dialogs.new_dialog_state_channel();
        let contact = rsipstack::sip::Uri::try_from(
            format!(
                "sip:{}@{}",
                self.config().sip.server_id,
                self.sip.advertised
            )
            .as_str(),
        )
        .ok();
        let dialog = self
            .sip
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
            destination: dest.to_string(),
            ssrc,
            packets,
            duration_ms: (packets * SAMPLES_PER_PACKET) as u64 * 1000 / 8000,
        };
        metrics::get()
            .gb_talk_sessions
            .get_or_create(&label("outcome", "ok"))
            .inc();
        info!(%device, %channel, %dest, packets, "talk accepted");
        let this = self.clone();
        let channel = channel.to_owned();
        let span = info_span!("talk", device = %device, channel = %channel);
        tokio::spawn(
            async move {
                let socket = ports.rtp;
                let mut seq: u16 = rand::random();
                let mut ts: u32 = rand::random();
                let mut sent = 0usize;
                let mut hung_up = false;
                let mut first = true;
                loop {
                    let chunk = tokio::select! {
                        chunk = feed.next() => match chunk {
                            Some(c) => c,
                            None => break,
                        },
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
                    if socket.send_to(&pkt, dest).await.is_ok() {
                        sent += 1;
                        metrics::get().gb_talk_packets_sent.inc();
                    }
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(SAMPLES_PER_PACKET as u32);
                }
                info!(sent, hung_up, "talk audio done");
                if !hung_up && let Err(e) = dialog.bye().await {
                    warn!("talk BYE failed: {e}");
                }
                this.sip.dialogs.remove_dialog(&dialog.id());
                lock(&this.talks.by_channel).remove(&channel);
                drop(ports.rtcp);
            }
            .instrument(span),
        );
        Ok(started)
    }

    /// An INVITE from a device outside any dialog: the callback of a
    /// Broadcast we sent, matched by the caller (`From` user) being the
    /// channel or its device.
    pub(crate) async fn on_talk_invite(&self, mut tx: Transaction, facts: &RequestFacts) {
        let waiting = {
            let mut talks = lock(&self.talks.by_channel);
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
            Ok("192.168.1.64:15060".parse().unwrap())
        );
        let tcp = OFFER.replace("RTP/AVP 8 96", "TCP/RTP/AVP 8 96");
        assert!(destination(&GbSdp::parse(&tcp).unwrap()).is_err());
        let no_pcma = OFFER.replace("RTP/AVP 8 96", "RTP/AVP 96");
        assert!(destination(&GbSdp::parse(&no_pcma).unwrap()).is_err());

        let answer = answer_sdp("34020000002000000001", "10.0.0.1", 30002, "0100000001");
        let a = GbSdp::parse(&answer).unwrap();
        let m = &a.media[0];
        assert_eq!((m.kind.clone(), m.port), (MediaKind::Audio, 30002));
        assert_eq!(m.direction, Direction::SendOnly);
        assert_eq!(m.payloads[0].pt, 8);
        assert_eq!(a.ssrc.as_deref(), Some("0100000001"));
    }

    #[test]
    fn rtp_header() {
        let p = rtp_packet(0x0102, 0x0A0B_0C0D, 1, true, &[0xD5; 160]);
        assert_eq!(p.len(), 172);
        assert_eq!(&p[..12], &[0x80, 0x88, 1, 2, 10, 11, 12, 13, 0, 0, 0, 1]);
        assert_eq!(rtp_packet(0, 0, 0, false, &[])[1], 8);
    }
}
