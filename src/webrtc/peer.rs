//! One browser peer: a str0m [`Rtc`] (RFC 8829 offer/answer, RFC 8445
//! ICE-lite, RFC 5764 DTLS-SRTP) plus the choices camgate makes on top —
//! which payload type carries the camera's video, when media may flow.
//!
//! Sans-IO like the `Rtc` it wraps: datagrams, frames and time go in,
//! datagrams to send and a wake-up time come out. The tokio driver is
//! [`super::session`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use tracing::{debug, info, warn};

use super::codec::{H264Choice, OfferedH264, choose_h264_preferring, profile_level_id};
use crate::media::frame::{Codec, Frame, StreamInfo};

/// Why a peer could not be set up or had to end.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("offer is not valid SDP: {0}")]
    BadOffer(String),
    #[error("offer refused: {0}")]
    Refused(String),
    #[error("the offer accepts no H.264 with packetization-mode=1")]
    NoCodec,
    #[error("source codec {0:?} cannot go to a browser without transcoding")]
    SourceCodec(Codec),
    #[error("bad candidate address: {0}")]
    Candidate(String),
    #[error("WebRTC: {0}")]
    Rtc(#[from] str0m::RtcError),
}

impl PeerError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerError::BadOffer(_) => "bad_offer",
            PeerError::Refused(_) => "offer_refused",
            PeerError::NoCodec => "no_codec",
            PeerError::SourceCodec(_) => "source_codec",
            PeerError::Candidate(_) => "candidate",
            PeerError::Rtc(_) => "rtc",
        }
    }
}

/// Where a local candidate lives: the socket address packets arrive at,
/// and the address announced for it (differs behind 1:1 NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr {
    pub bound: SocketAddr,
    pub announced: SocketAddr,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum PeerOutput {
    /// Send `data` from local `source` to `destination`.
    Transmit {
        source: SocketAddr,
        destination: SocketAddr,
        data: Vec<u8>,
    },
    /// ICE and DTLS are up: start feeding frames.
    Connected,
    /// The browser asked for a key frame (PLI/FIR).
    KeyframeRequested,
    /// The peer is gone (ICE consent lost, DTLS closed).
    Closed,
    /// Nothing more until this time or new input.
    Wait(Instant),
}

/// The accepted (port ≠ 0) audio and video sections of an SDP answer
/// with their `a=mid` (RFC 8843 §5).
fn answered_mids(sdp: &str) -> Vec<(MediaKind, Mid)> {
    let mut out = Vec::new();
    let mut current: Option<MediaKind> = None;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split(' ');
            let kind = fields.next();
            let port = fields.next();
            current = match (kind, port) {
                (_, Some("0")) => None,
                (Some("video"), _) => Some(MediaKind::Video),
                (Some("audio"), _) => Some(MediaKind::Audio),
                _ => None,
            };
        } else if let (Some(kind), Some(mid)) = (current, line.strip_prefix("a=mid:")) {
            out.push((kind, Mid::from(mid.trim())));
            current = None;
        }
    }
    out
}

/// A negotiated track we send on.
#[derive(Debug, Clone, Copy)]
struct Track {
    mid: Mid,
    pt: Pt,
}

pub struct Peer {
    rtc: Rtc,
    locals: Vec<LocalAddr>,
    ufrag: String,
    ice_pwd: String,
    source_plid: Option<u32>,
    /// A `profile-level-id` to send under whenever offered.
    preferred_plid: Option<u32>,
    video: Option<Track>,
    video_choice: Option<H264Choice>,
    audio: Option<(Track, Codec)>,
    audio_codec: Option<Codec>,
    connected: bool,
    /// First pts written, so RTP time starts near 0 for every peer.
    video_origin: Option<i64>,
    audio_origin: Option<i64>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("ufrag", &self.ufrag)
            .field("video", &self.video_choice)
            .field("connected", &self.connected)
            .finish()
    }
}

impl Peer {
    /// Answer a WHEP offer for a stream described by `info`, with every
    /// local candidate in the answer (ICE-lite, no trickle).
    pub fn accept(
        offer: &str,
        info: &StreamInfo,
        locals: &[LocalAddr],
        now: Instant,
    ) -> Result<(Peer, String), PeerError> {
        Self::accept_preferring(offer, info, locals, now, None)
    }

    /// [`accept`](Self::accept), sending the video under the payload type
    /// whose `profile-level-id` is `preferred` when the browser offers it
    /// (see [`choose_h264_preferring`]).
    pub fn accept_preferring(
        offer: &str,
        info: &StreamInfo,
        locals: &[LocalAddr],
        now: Instant,
        preferred: Option<u32>,
    ) -> Result<(Peer, String), PeerError> {
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| PeerError::BadOffer(e.to_string()))?;
        let (codec, params) = info
            .video
            .as_ref()
            .map(|(c, p)| (*c, Some(p)))
            .unwrap_or((Codec::H264, None));
        if codec != Codec::H264 {
            return Err(PeerError::SourceCodec(codec));
        }
        let audio_codec = info
            .audio
            .as_ref()
            .map(|(c, _)| *c)
            .filter(|c| matches!(c, Codec::Pcma | Codec::Pcmu));
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let ice_pwd = creds.pass.clone();
        let config = RtcConfig::new()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds)
            .clear_codecs()
            .enable_h264(true);
        // G.711 is always offered back, even for a silent camera: str0m
        // answers an audio section it has no codec for with an empty format
        // list, which Chromium refuses to parse.
        let config = config.enable_pcma(true, false).enable_pcmu(true, false);
        let mut rtc = config.build(now);
        for local in locals {
            // Behind 1:1 NAT the public address is announced as a host
            // candidate and datagrams are relabelled between the two
            // addresses at this boundary (see `to_announced`).
            let candidate = Candidate::host(local.announced, "udp")
                .map_err(|e| PeerError::Candidate(e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::Refused(e.to_string()))?;
        let mut peer = Peer {
            rtc,
            locals: locals.to_vec(),
            ufrag,
            ice_pwd,
            source_plid: params
                .and_then(|p| p.sps.as_deref())
                .and_then(profile_level_id),
            preferred_plid: preferred,
            video: None,
            video_choice: None,
            audio: None,
            audio_codec,
            connected: false,
            video_origin: None,
            audio_origin: None,
        };
        // str0m announces tracks (MediaAdded) only once DTLS is up; the
        // payload types are settled by the answer already, so read them now
        // and refuse a useless offer in the HTTP answer rather than later.
        let answer = answer.to_sdp_string();
        for (kind, mid) in answered_mids(&answer) {
            match kind {
                MediaKind::Video if peer.video.is_none() => peer.pick_video(mid),
                MediaKind::Audio if peer.audio.is_none() => peer.pick_audio(mid),
                _ => {}
            }
        }
        // An audio-only source needs the audio section; any other, video.
        let usable = match &info.video {
            None => peer.audio.is_some() && audio_codec.is_some(),
            Some(_) => peer.video.is_some(),
        };
        if !usable {
            return Err(PeerError::NoCodec);
        }
        Ok((peer, answer))
    }

    /// Our ICE username fragment: STUN requests from the browser carry it
    /// (`USERNAME = ours:theirs`), which is how the shared socket finds us.
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// Our ICE password: the key of the browser's STUN MESSAGE-INTEGRITY.
    pub fn ice_pwd(&self) -> &str {
        &self.ice_pwd
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The H.264 payload type chosen and whether it matches the source
    /// profile exactly.
    pub fn video_choice(&self) -> Option<H264Choice> {
        self.video_choice
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> Result<(), PeerError> {
        let destination = self.to_announced(destination);
        let receive = Receive::new(Protocol::Udp, source, destination, data)
            .map_err(|e| PeerError::Rtc(str0m::RtcError::Net(e)))?;
        self.rtc.handle_input(Input::Receive(now, receive))?;
        Ok(())
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PeerError> {
        self.rtc.handle_input(Input::Timeout(now))?;
        Ok(())
    }

    /// Send one frame of the stream; `data` is the frame as one buffer
    /// ([`super::annexb`]). Returns whether it went to a track (frames of
    /// a kind the browser did not negotiate, or before connect, do not).
    pub fn send_frame(
        &mut self,
        now: Instant,
        frame: &Frame,
        data: impl FnOnce() -> Arc<[u8]>,
    ) -> Result<bool, PeerError> {
        if !self.connected {
            return Ok(false);
        }
        let (track, origin, rate) = match frame.codec {
            Codec::H264 => match self.video {
                Some(t) => (t, &mut self.video_origin, Frequency::NINETY_KHZ),
                None => return Ok(false),
            },
            c if Some(c) == self.audio_codec => match self.audio {
                Some((t, _)) => (t, &mut self.audio_origin, Frequency::EIGHT_KHZ),
                None => return Ok(false),
            },
            _ => return Ok(false),
        };
        let origin = *origin.get_or_insert(frame.pts);
        // RTP time is 32-bit on the wire; str0m wraps it, we only keep it
        // non-negative for frames that arrive slightly out of order.
        let rtp_time = MediaTime::new(frame.pts.saturating_sub(origin).max(0) as u64, rate);
        let Some(writer) = self.rtc.writer(track.mid) else {
            return Ok(false);
        };
        writer.write(track.pt, now, rtp_time, data())?;
        Ok(true)
    }

    /// End the peer (DELETE on the WHEP resource); DTLS close_notify
    /// still comes out of [`Peer::poll`].
    pub fn close(&mut self) {
        self.rtc.disconnect();
    }

    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    /// Next thing to do; call until it returns [`PeerOutput::Wait`].
    pub fn poll(&mut self) -> Result<PeerOutput, PeerError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(PeerOutput::Wait(t)),
                Output::Transmit(t) => {
                    return Ok(PeerOutput::Transmit {
                        source: self.to_bound(t.source),
                        destination: t.destination,
                        data: t.contents.into(),
                    });
                }
                Output::Event(e) => {
                    if let Some(out) = self.on_event(e) {
                        return Ok(out);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Option<PeerOutput> {
        match event {
            Event::Connected => {
                self.connected = true;
                Some(PeerOutput::Connected)
            }
            Event::KeyframeRequest(_) => Some(PeerOutput::KeyframeRequested),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                Some(PeerOutput::Closed)
            }
            _ => None,
        }
    }

    fn to_announced(&self, bound: SocketAddr) -> SocketAddr {
        self.locals
            .iter()
            .find(|l| l.bound == bound)
            .map_or(bound, |l| l.announced)
    }

    fn to_bound(&self, announced: SocketAddr) -> SocketAddr {
        self.locals
            .iter()
            .find(|l| l.announced == announced)
            .map_or(announced, |l| l.bound)
    }

    fn pick_video(&mut self, mid: Mid) {
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let offered: Vec<OfferedH264> = writer
            .payload_params()
            .filter(|p| p.spec().codec == RtcCodec::H264)
            .map(|p| OfferedH264 {
                pt: *p.pt(),
                profile_level_id: p.spec().format.profile_level_id,
                packetization_mode: p.spec().format.packetization_mode,
            })
            .collect();
        let Some(choice) = choose_h264_preferring(self.preferred_plid, self.source_plid, &offered)
        else {
            warn!(?offered, "browser offered no usable H.264");
            return;
        };
        if choice.exact {
            debug!(pt = choice.pt, "H.264 profile matches the source");
        } else {
            info!(
                source = ?self.source_plid.map(|p| format!("{p:06x}")),
                sent_as = ?choice.profile_level_id.map(|p| format!("{p:06x}")),
                "browser did not offer the source's H.264 profile; sending under the closest one"
            );
        }
        self.video_choice = Some(choice);
        self.video = Some(Track {
            mid,
            pt: choice.pt.into(),
        });
    }

    fn pick_audio(&mut self, mid: Mid) {
        let Some(codec) = self.audio_codec else {
            return;
        };
        let wanted = match codec {
            Codec::Pcma => RtcCodec::PCMA,
            _ => RtcCodec::PCMU,
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        if let Some(p) = writer.payload_params().find(|p| p.spec().codec == wanted) {
            self.audio = Some((Track { mid, pt: p.pt() }, codec));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::VideoParams;
    use bytes::Bytes;

    /// A recvonly video+audio offer captured from Debian's Chromium 156.
    const CHROMIUM_OFFER: &str = include_str!("testdata/chromium-156-offer.sdp");

    fn h264_info(sps: &'static [u8]) -> StreamInfo {
        StreamInfo {
            audio_decided_by: None,
            video: Some((
                Codec::H264,
                VideoParams {
                    width: 640,
                    height: 360,
                    sps: Some(Bytes::from_static(sps)),
                    pps: Some(Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80])),
                    vps: None,
                },
            )),
            audio: None,
        }
    }

    fn local() -> Vec<LocalAddr> {
        let a: SocketAddr = "192.0.2.10:8189".parse().unwrap();
        vec![LocalAddr {
            bound: a,
            announced: a,
        }]
    }

    #[test]
    fn main_profile_camera_answers_chromium_on_its_main_pt() {
        let (peer, answer) = Peer::accept(
            CHROMIUM_OFFER,
            &h264_info(&[0x67, 0x4d, 0x00, 0x1f, 0x95]),
            &local(),
            Instant::now(),
        )
        .unwrap();
        let choice = peer.video_choice().unwrap();
        assert_eq!((choice.pt, choice.exact), (116, true));
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("192.0.2.10 8189 typ host"), "{answer}");
        assert!(answer.contains(&format!("a=ice-ufrag:{}", peer.ufrag())));
        assert!(answer.contains("a=rtpmap:116 H264/90000"), "{answer}");
    }

    #[test]
    fn high_profile_camera_goes_out_as_main() {
        let (peer, _) = Peer::accept(
            CHROMIUM_OFFER,
            &h264_info(&[0x67, 0x64, 0x00, 0x28, 0xac]),
            &local(),
            Instant::now(),
        )
        .unwrap();
        let choice = peer.video_choice().unwrap();
        assert_eq!((choice.pt, choice.exact), (116, false));
    }

    #[test]
    fn nat_address_is_announced_in_place_of_the_bound_one() {
        let bound: SocketAddr = "10.0.0.5:8189".parse().unwrap();
        let announced: SocketAddr = "203.0.113.7:8189".parse().unwrap();
        let (_, answer) = Peer::accept(
            CHROMIUM_OFFER,
            &h264_info(&[0x67, 0x4d, 0x00, 0x1f]),
            &[LocalAddr { bound, announced }],
            Instant::now(),
        )
        .unwrap();
        assert!(answer.contains("203.0.113.7 8189 typ host"), "{answer}");
        assert!(!answer.contains("10.0.0.5"), "{answer}");
    }

    #[test]
    fn audio_only_source_is_answered_with_its_audio() {
        let info = StreamInfo {
            audio: Some((
                Codec::Pcma,
                crate::media::frame::AudioParams {
                    sample_rate: 8000,
                    channels: 1,
                    config: None,
                },
            )),
            ..StreamInfo::default()
        };
        let (peer, answer) = Peer::accept(CHROMIUM_OFFER, &info, &local(), Instant::now()).unwrap();
        assert!(peer.audio.is_some());
        assert!(answer.contains("PCMA/8000"), "{answer}");
        // Silent and blind: nothing to offer.
        let e = Peer::accept(
            CHROMIUM_OFFER,
            &StreamInfo::default(),
            &local(),
            Instant::now(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), "no_codec");
    }

    #[test]
    fn bad_offers_and_sources_are_refused_with_a_kind() {
        let info = h264_info(&[0x67, 0x4d, 0x00, 0x1f]);
        let e = Peer::accept("v=0\r\nnonsense", &info, &local(), Instant::now()).unwrap_err();
        assert_eq!(e.kind(), "bad_offer");
        // The same offer with H.264 renamed to a codec nobody knows.
        let vp8_only = CHROMIUM_OFFER.replace("H264/90000", "X264/90000");
        let e = Peer::accept(&vp8_only, &info, &local(), Instant::now()).unwrap_err();
        assert_eq!(e.kind(), "no_codec");
        let mut h265 = info.clone();
        h265.video.as_mut().unwrap().0 = Codec::H265;
        let e = Peer::accept(CHROMIUM_OFFER, &h265, &local(), Instant::now()).unwrap_err();
        assert_eq!(e.kind(), "source_codec");
    }
}
