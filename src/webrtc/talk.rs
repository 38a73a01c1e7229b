//! Talk from the browser: a peer that only receives, one Opus audio track
//! (RFC 7587) from the microphone, on the same shared UDP port and ICE-lite
//! terms as the WHEP viewers (`super` module docs). Its audio is decoded to
//! A-law ([`super::talk_audio`]) and handed, one 20 ms packet at a time, to
//! whoever holds the other end of the feed — the GB28181 talk path.
//!
//! - [`TalkPeer`]: sans-IO, over `str0m::Rtc` (datagrams and time in;
//!   datagrams, A-law packets and a wake-up time out).
//! - [`WebRtc::talk_offer`] / [`WebRtc::talk_start`]: answer the offer,
//!   then, once the device has accepted, run the peer until DELETE, ICE
//!   loss, the connect timeout, or the device hanging up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::MediaKind;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::peer::{LocalAddr, PeerError};
use super::talk_audio::TalkAudio;
use super::udp::{Datagram, UdpMux};
use super::{INBOX_DATAGRAMS, WebRtc, WhepError};
use crate::media::audio::g711::SAMPLES_PER_PACKET;
use crate::metrics::{self, label};

/// What the driver must do next.
#[derive(Debug)]
pub enum TalkOutput {
    Transmit {
        source: SocketAddr,
        destination: SocketAddr,
        data: Vec<u8>,
    },
    Connected,
    /// The peer is gone (ICE consent lost, DTLS closed).
    Closed,
    /// Nothing more until this time or new input.
    Wait(Instant),
}

/// One browser microphone.
pub struct TalkPeer {
    rtc: Rtc,
    locals: Vec<LocalAddr>,
    ufrag: String,
    /// Key of the browser's STUN MESSAGE-INTEGRITY.
    ice_pwd: String,
    audio: TalkAudio,
    /// Last RTP sequence number decoded, to conceal what went missing.
    last_seq: Option<u64>,
    /// A-law packets ready for the device.
    ready: Vec<Vec<u8>>,
    connected: bool,
}

impl std::fmt::Debug for TalkPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalkPeer")
            .field("ufrag", &self.ufrag)
            .field("connected", &self.connected)
            .finish()
    }
}

/// Whether an SDP answer accepted an audio section with Opus.
fn answer_has_opus(sdp: &str) -> bool {
    let mut in_audio = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split(' ');
            in_audio = fields.next() == Some("audio") && fields.next() != Some("0");
        } else if in_audio
            && line.starts_with("a=rtpmap:")
            && line.to_ascii_lowercase().contains(" opus/48000")
        {
            return true;
        }
    }
    false
}

impl TalkPeer {
    /// Answer a browser's offer to send its microphone, with every local
    /// candidate in the answer (ICE-lite).
    pub fn accept(
        offer: &str,
        locals: &[LocalAddr],
        now: Instant,
    ) -> Result<(TalkPeer, String), PeerError> {
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| PeerError::BadOffer(e.to_string()))?;
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let ice_pwd = creds.pass.clone();
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds)
            .clear_codecs()
            .enable_opus(true, false)
            .build(now);
        for local in locals {
            let candidate = Candidate::host(local.announced, "udp")
                .map_err(|e| PeerError::Candidate(e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::Refused(e.to_string()))?
            .to_sdp_string();
        if !answer_has_opus(&answer) {
            return Err(PeerError::Refused("the offer sends no Opus audio".into()));
        }
        Ok((
            TalkPeer {
                rtc,
                locals: locals.to_vec(),
                ufrag,
                ice_pwd,
                audio: TalkAudio::default(),
                last_seq: None,
                ready: Vec::new(),
                connected: false,
            },
            answer,
        ))
    }

    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    pub fn ice_pwd(&self) -> &str {
        &self.ice_pwd
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    pub fn close(&mut self) {
        self.rtc.disconnect();
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> Result<(), PeerError> {
        let destination = self
            .locals
            .iter()
            .find(|l| l.bound == destination)
            .map_or(destination, |l| l.announced);
        let receive = Receive::new(Protocol::Udp, source, destination, data)
            .map_err(|e| PeerError::Rtc(str0m::RtcError::Net(e)))?;
        self.rtc.handle_input(Input::Receive(now, receive))?;
        Ok(())
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PeerError> {
        self.rtc.handle_input(Input::Timeout(now))?;
        Ok(())
    }

    /// A-law packets decoded so far (20 ms each), oldest first.
    pub fn take_audio(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.ready)
    }

    /// Next thing to do; call until it returns [`TalkOutput::Wait`].
    pub fn poll(&mut self) -> Result<TalkOutput, PeerError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(TalkOutput::Wait(t)),
                Output::Transmit(t) => {
                    let source = self
                        .locals
                        .iter()
                        .find(|l| l.announced == t.source)
                        .map_or(t.source, |l| l.bound);
                    return Ok(TalkOutput::Transmit {
                        source,
                        destination: t.destination,
                        data: t.contents.into(),
                    });
                }
                Output::Event(Event::Connected) => {
                    self.connected = true;
                    return Ok(TalkOutput::Connected);
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => return Ok(TalkOutput::Closed),
                Output::Event(Event::MediaData(data)) => {
                    if data.params.spec().codec == RtcCodec::Opus {
                        self.on_opus(**data.seq_range.start(), **data.seq_range.end(), &data.data);
                    }
                }
                Output::Event(Event::MediaAdded(m)) if m.kind != MediaKind::Audio => {
                    debug!(mid = %m.mid, "talk peer ignores a non-audio section");
                }
                Output::Event(_) => {}
            }
        }
    }

    fn on_opus(&mut self, first_seq: u64, last_seq: u64, opus: &[u8]) {
        if let Some(prev) = self.last_seq {
            if last_seq <= prev {
                count_error("late");
                return;
            }
            let missing = first_seq.saturating_sub(prev + 1);
            if missing > 0 {
                // WebRTC's Opus frames are 20 ms (RFC 7587 §4.2 default).
                let samples = usize::try_from(missing).unwrap_or(usize::MAX);
                self.audio
                    .conceal(samples.saturating_mul(SAMPLES_PER_PACKET), &mut self.ready);
            }
        }
        self.last_seq = Some(last_seq);
        match self.audio.push(opus, &mut self.ready) {
            Ok(()) => {
                metrics::get().webrtc_talk_packets.inc();
            }
            Err(e) => {
                count_error(e.kind());
                debug!(error = %e, "browser Opus packet dropped");
            }
        }
    }
}

fn count_error(kind: &'static str) {
    metrics::get()
        .webrtc_talk_errors
        .get_or_create(&label("kind", kind))
        .inc();
}

/// A talk offer answered, waiting for the device before it runs.
pub struct PreparedTalk {
    peer: TalkPeer,
    pub answer: String,
}

impl std::fmt::Debug for PreparedTalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedTalk")
            .field("peer", &self.peer)
            .finish()
    }
}

/// A-law packets waiting for the device beyond which new ones are dropped
/// (one second).
pub const FEED_PACKETS: usize = 50;

impl WebRtc {
    /// Answer a browser's microphone offer; nothing runs until
    /// [`talk_start`](Self::talk_start).
    pub fn talk_offer(&self, offer: &str) -> Result<PreparedTalk, WhepError> {
        let max = self.inner.config.max_peers;
        if self.peers() + self.talk_sessions() >= max {
            return Err(WhepError::TooMany(max));
        }
        let (peer, answer) = TalkPeer::accept(offer, &self.inner.locals, Instant::now())?;
        Ok(PreparedTalk { peer, answer })
    }

    /// Run a prepared talk peer, sending its audio into `feed` until the
    /// browser leaves, DELETE, or the feed's receiver (the device) goes.
    /// Returns the session id.
    pub fn talk_start(
        &self,
        prepared: PreparedTalk,
        feed: mpsc::Sender<Vec<u8>>,
        label: String,
    ) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        let (inbox_tx, inbox) = mpsc::channel(INBOX_DATAGRAMS);
        self.inner
            .mux
            .register(prepared.peer.ufrag(), prepared.peer.ice_pwd(), inbox_tx);
        let cancel = self.inner.shutdown.child_token();
        self.talks().insert(id.clone(), cancel.clone());
        let driver = TalkDriver {
            id: id.clone(),
            peer: prepared.peer,
            inbox,
            mux: self.inner.mux.clone(),
            feed,
            cancel,
            connect_timeout: self.inner.config.connect_timeout,
            owner: self.clone(),
        };
        let span = info_span!("talk_webrtc", %id, target = %label);
        self.inner.tasks.spawn(driver.run().instrument(span));
        id
    }

    /// End talk session `id`; false when there is none.
    pub fn talk_stop(&self, id: &str) -> bool {
        match self.talks().get(id) {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }

    pub fn talk_sessions(&self) -> usize {
        self.talks().len()
    }

    fn talks(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, CancellationToken>> {
        self.inner.talks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct TalkDriver {
    id: String,
    peer: TalkPeer,
    inbox: mpsc::Receiver<Datagram>,
    mux: std::sync::Arc<UdpMux>,
    feed: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
    connect_timeout: Duration,
    owner: WebRtc,
}

impl TalkDriver {
    async fn run(mut self) {
        let started = Instant::now();
        let connect_deadline = started + self.connect_timeout;
        let mut sent = 0u64;
        let reason: &str = loop {
            let wait = match self.flush().await {
                Ok(Some(wait)) => wait,
                Ok(None) => break "ice_closed",
                Err(e) => {
                    warn!(error = %e, "talk peer failed");
                    break "error";
                }
            };
            for packet in self.peer.take_audio() {
                match self.feed.try_send(packet) {
                    Ok(()) => sent += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => count_error("late"),
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            if !self.peer.is_alive() {
                break "ice_closed";
            }
            let deadline = if self.peer.is_connected() {
                wait
            } else {
                wait.min(connect_deadline)
            };
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    self.peer.close();
                    let _ = self.flush().await;
                    break "deleted";
                }
                _ = self.feed.closed() => {
                    self.peer.close();
                    let _ = self.flush().await;
                    break "device_hung_up";
                }
                datagram = self.inbox.recv() => {
                    let Some(d) = datagram else { break "deleted" };
                    if let Err(e) = self.peer.handle_datagram(Instant::now(), d.source, d.destination, &d.data) {
                        debug!(error = %e, from = %d.source, "talk datagram rejected");
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if !self.peer.is_connected() && now >= connect_deadline {
                        break "connect_timeout";
                    }
                    if let Err(e) = self.peer.handle_timeout(now) {
                        warn!(error = %e, "talk peer timer failed");
                        break "error";
                    }
                }
            }
        };
        info!(
            id = %self.id,
            reason,
            packets = sent,
            seconds = started.elapsed().as_secs_f64(),
            "browser talk ended"
        );
        self.mux.unregister(self.peer.ufrag());
        self.owner.talks().remove(&self.id);
        // Dropping the feed ends the device's talk (BYE).
    }

    async fn flush(&mut self) -> Result<Option<Instant>, PeerError> {
        loop {
            match self.peer.poll()? {
                TalkOutput::Transmit {
                    source,
                    destination,
                    data,
                } => {
                    if let Some(socket) = self.mux.socket_for(source) {
                        let _ = socket.send_to(&data, destination).await;
                    }
                }
                TalkOutput::Connected => info!(id = %self.id, "browser microphone connected"),
                TalkOutput::Closed => return Ok(None),
                TalkOutput::Wait(t) => return Ok(Some(t)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Vec<LocalAddr> {
        let a: SocketAddr = "192.0.2.10:8189".parse().unwrap();
        vec![LocalAddr {
            bound: a,
            announced: a,
        }]
    }

    /// A sendonly Opus microphone offer in the shape Chromium writes.
    fn mic_offer() -> String {
        [
            "v=0",
            "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "a=msid-semantic: WMS",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=ice-ufrag:abcd",
            "a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa",
            "a=ice-options:trickle",
            "a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99",
            "a=setup:actpass",
            "a=mid:0",
            "a=sendonly",
            "a=msid:- 8f5c",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=ssrc:1001 cname:x",
            "",
        ]
        .join("\r\n")
    }

    #[test]
    fn answers_a_microphone_with_opus_recvonly() {
        let (peer, answer) = TalkPeer::accept(&mic_offer(), &local(), Instant::now()).unwrap();
        assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
        assert!(answer.contains("a=recvonly"), "{answer}");
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("192.0.2.10 8189 typ host"), "{answer}");
        assert!(answer.contains(&format!("a=ice-ufrag:{}", peer.ufrag())));
        assert!(!answer.contains("PCMA"), "only Opus is taken: {answer}");
    }

    #[test]
    fn offers_without_opus_or_sdp_are_refused() {
        let no_opus = mic_offer()
            .replace(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8",
                "m=audio 9 UDP/TLS/RTP/SAVPF 0 8",
            )
            .replace("a=rtpmap:111 opus/48000/2\r\n", "")
            .replace("a=fmtp:111 minptime=10;useinbandfec=1\r\n", "");
        let e = TalkPeer::accept(&no_opus, &local(), Instant::now()).unwrap_err();
        assert_eq!(e.kind(), "offer_refused");
        let e = TalkPeer::accept("v=0\r\nnot sdp", &local(), Instant::now()).unwrap_err();
        assert_eq!(e.kind(), "bad_offer");
        assert!(!answer_has_opus(
            "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
        ));
    }
}
