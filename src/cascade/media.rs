//! The media side of an upper platform's INVITE (GB/T 28181-2016 §9.2 live
//! view, §9.8 playback, §9.9 download, Annex F SDP): the offer read (the
//! recorded kinds' `u=`, `t=` and `a=downloadspeed` through
//! [`super::playback`]), the answer written, and PS packed
//! into RTP (RFC 3550, payload type 96 `PS/90000`). RTP goes over UDP, or
//! over TCP framed per RFC 4571 with the side that connects chosen by
//! `a=setup:` (RFC 4145): an offer saying `active` connects to us, one
//! saying `passive` listens on its `m=` port for us.
//!
//! Sans-IO: text and frames in, text and packets out.

use bytes::{BufMut, BytesMut};

use super::playback::{SessionKind, range_of_t};
use crate::streams::recording::PlaybackRange;

/// RTP payload type GB28181 gives MPEG-PS.
pub const PS_PAYLOAD_TYPE: u8 = 96;
/// Largest RTP payload sent: with IP/UDP/RTP headers a packet stays under
/// a 1500-byte MTU.
pub const MAX_RTP_PAYLOAD: usize = 1_400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("offer has no {0}")]
    Missing(&'static str),
    #[error("session {0:?} is not served (Play, Playback or Download)")]
    UnsupportedSession(String),
    #[error("{0} offer has no usable t= range")]
    NoRange(&'static str),
    #[error("media transport {0:?} is not served (RTP/AVP or TCP/RTP/AVP)")]
    UnsupportedTransport(String),
}

/// How RTP reaches the upper platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaLink {
    Udp,
    /// The upper platform connects to a port of ours (`a=setup:active`).
    TcpWeListen,
    /// We connect to the upper platform's port (`a=setup:passive`).
    TcpWeConnect,
}

/// What the upper platform asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// `s=`: Play, Playback or Download (with its speed).
    pub kind: SessionKind,
    /// `t=` of Playback and Download, Unix seconds.
    pub range: Option<PlaybackRange>,
    /// `u=`: `{channel id}:{type}` of Playback and Download, if given.
    pub uri: Option<String>,
    /// Where to send RTP.
    pub address: std::net::IpAddr,
    /// Its port (0 when it will connect to us over TCP).
    pub port: u16,
    /// `y=`: the SSRC to use (10 decimal digits), if given.
    pub ssrc: Option<u32>,
    pub link: MediaLink,
}

/// Read an SDP offer: `Play`, or `Playback`/`Download` with a range.
pub fn parse_offer(sdp: &str) -> Result<Offer, OfferError> {
    let mut session = None;
    let mut time = None;
    let mut uri = None;
    let mut download_speed = None;
    let mut address = None;
    let mut media = None;
    let mut ssrc = None;
    let mut setup = None;
    for line in sdp.lines().map(str::trim).take(256) {
        if let Some(s) = line.strip_prefix("s=") {
            session = Some(s.trim().to_owned());
        } else if let Some(c) = line.strip_prefix("c=") {
            // c=IN IP4 192.168.1.10
            address = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.parse::<std::net::IpAddr>().ok());
        } else if let Some(m) = line.strip_prefix("m=video ") {
            let mut parts = m.split_whitespace();
            let port = parts.next().and_then(|p| p.parse::<u16>().ok());
            let proto = parts.next().unwrap_or_default().to_owned();
            media = Some((port, proto));
        } else if let Some(y) = line.strip_prefix("y=") {
            ssrc = y.trim().parse::<u32>().ok();
        } else if let Some(v) = line.strip_prefix("a=setup:") {
            setup = Some(v.trim().to_ascii_lowercase());
        } else if let Some(t) = line.strip_prefix("t=") {
            time = Some(t.to_owned());
        } else if let Some(u) = line.strip_prefix("u=") {
            uri = Some(u.trim().chars().take(64).collect::<String>());
        } else if let Some(v) = line.strip_prefix("a=downloadspeed:") {
            download_speed = v.trim().parse::<u32>().ok();
        }
    }
    let session: String = session.ok_or(OfferError::Missing("s="))?;
    let kind = SessionKind::from_sdp(&session, download_speed)
        .ok_or_else(|| OfferError::UnsupportedSession(session.chars().take(64).collect()))?;
    let range = if kind.is_recorded() {
        let range = time.as_deref().and_then(range_of_t);
        Some(range.ok_or(OfferError::NoRange(kind.sdp_name()))?)
    } else {
        None
    };
    let address = address.ok_or(OfferError::Missing("c="))?;
    let (port, proto) = media.ok_or(OfferError::Missing("m=video"))?;
    let port = port.ok_or(OfferError::Missing("m= port"))?;
    let link = if proto.eq_ignore_ascii_case("RTP/AVP") {
        MediaLink::Udp
    } else if proto.eq_ignore_ascii_case("TCP/RTP/AVP") || proto.eq_ignore_ascii_case("RTP/AVP/TCP")
    {
        // RFC 4145 §4.1: without a=setup the offerer is active.
        match setup.as_deref() {
            Some("passive") => MediaLink::TcpWeConnect,
            Some("active") | Some("actpass") | None => MediaLink::TcpWeListen,
            Some(other) => {
                return Err(OfferError::UnsupportedTransport(format!("a=setup:{other}")));
            }
        }
    } else {
        return Err(OfferError::UnsupportedTransport(proto));
    };
    if port == 0 && link != MediaLink::TcpWeListen {
        return Err(OfferError::Missing("m= port"));
    }
    Ok(Offer {
        kind,
        range,
        uri,
        address,
        port,
        ssrc,
        link,
    })
}

/// Our answer: the offer's `s=` (and `t=` of a recording) echoed, where
/// we send from (or listen, for TCP), the SSRC in `y=` (10 digits) and an
/// empty `f=` (no media parameters declared, §F.2.2).
pub fn answer(
    channel_id: &str,
    local: std::net::SocketAddr,
    ssrc: u32,
    link: MediaLink,
    offer: (SessionKind, Option<PlaybackRange>),
) -> String {
    let (kind, range) = offer;
    let (start, end) = range.map_or((0, 0), |r| (r.start, r.end));
    let family = if local.is_ipv4() { "IP4" } else { "IP6" };
    let (proto, setup) = match link {
        MediaLink::Udp => ("RTP/AVP", ""),
        MediaLink::TcpWeListen => ("TCP/RTP/AVP", "a=setup:passive\r\na=connection:new\r\n"),
        MediaLink::TcpWeConnect => ("TCP/RTP/AVP", "a=setup:active\r\na=connection:new\r\n"),
    };
    format!(
        "v=0\r\no={channel_id} 0 0 IN {family} {ip}\r\ns={name}\r\nc=IN {family} {ip}\r\nt={start} {end}\r\n\
         m=video {port} {proto} {pt}\r\na=sendonly\r\na=rtpmap:{pt} PS/90000\r\n{setup}y={ssrc:010}\r\nf=\r\n",
        name = kind.sdp_name(),
        ip = local.ip(),
        port = local.port(),
        pt = PS_PAYLOAD_TYPE,
    )
}

/// Cuts PS into RTP packets of one SSRC.
#[derive(Debug, Clone)]
pub struct RtpPacker {
    ssrc: u32,
    seq: u16,
}

impl RtpPacker {
    pub fn new(ssrc: u32, first_seq: u16) -> Self {
        Self {
            ssrc,
            seq: first_seq,
        }
    }

    /// Packets for one access unit's PS bytes at 90 kHz time `ts`; the
    /// last carries the marker bit (end of the frame).
    pub fn pack(&mut self, ps: &[u8], ts: u32, out: &mut Vec<BytesMut>) {
        let chunks = ps.chunks(MAX_RTP_PAYLOAD);
        let n = chunks.len();
        for (i, chunk) in chunks.enumerate() {
            let mut p = BytesMut::with_capacity(12 + chunk.len());
            p.put_u8(0x80);
            p.put_u8(if i + 1 == n { 0x80 } else { 0 } | PS_PAYLOAD_TYPE);
            p.put_u16(self.seq);
            p.put_u32(ts);
            p.put_u32(self.ssrc);
            p.put_slice(chunk);
            self.seq = self.seq.wrapping_add(1);
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpPacket;

    const OFFER: &str = "v=0\r\no=34020000002000000001 0 0 IN IP4 10.0.0.5\r\ns=Play\r\n\
        c=IN IP4 10.0.0.5\r\nt=0 0\r\nm=video 30000 RTP/AVP 96 98 97\r\na=recvonly\r\n\
        a=rtpmap:96 PS/90000\r\ny=0100000001\r\n";

    #[test]
    fn play_offer_is_read() {
        let o = parse_offer(OFFER).unwrap();
        assert_eq!(o.address.to_string(), "10.0.0.5");
        assert_eq!(o.port, 30000);
        assert_eq!(o.ssrc, Some(100_000_001));
    }

    #[test]
    fn playback_and_download_offers_carry_their_range() {
        let playback = OFFER
            .replace("s=Play", "s=Playback\r\nu=34020000001310000001:0")
            .replace("t=0 0", "t=1714550430 1714550434");
        let o = parse_offer(&playback).unwrap();
        assert_eq!(o.kind, SessionKind::Playback);
        assert_eq!(
            o.range,
            Some(PlaybackRange {
                start: 1_714_550_430,
                end: 1_714_550_434
            })
        );
        assert_eq!(o.uri.as_deref(), Some("34020000001310000001:0"));
        let a = answer(
            "34020000001310000001",
            "127.0.0.1:40000".parse().unwrap(),
            1,
            MediaLink::Udp,
            (o.kind, o.range),
        );
        assert!(a.contains("\r\ns=Playback\r\n"), "{a}");
        assert!(a.contains("\r\nt=1714550430 1714550434\r\n"), "{a}");
        let download = playback.replace("s=Playback", "s=Download") + "a=downloadspeed:4\r\n";
        assert_eq!(
            parse_offer(&download).unwrap().kind,
            SessionKind::Download { speed: 4 }
        );
        // A recording without a range cannot be played.
        let no_range = OFFER.replace("s=Play", "s=Playback");
        assert_eq!(parse_offer(&no_range), Err(OfferError::NoRange("Playback")));
    }

    #[test]
    fn other_sessions_and_transports_are_refused() {
        let talk = OFFER.replace("s=Play", "s=Talk");
        assert!(matches!(
            parse_offer(&talk),
            Err(OfferError::UnsupportedSession(_))
        ));
        let srtp = OFFER.replace("RTP/AVP 96", "UDP/TLS/RTP/SAVP 96");
        assert!(matches!(
            parse_offer(&srtp),
            Err(OfferError::UnsupportedTransport(_))
        ));
        assert_eq!(parse_offer("v=0\r\n"), Err(OfferError::Missing("s=")));
        let no_port = OFFER.replace("m=video 30000", "m=video 0");
        assert_eq!(parse_offer(&no_port), Err(OfferError::Missing("m= port")));
    }

    #[test]
    fn tcp_setup_decides_who_connects() {
        let tcp = OFFER.replace("RTP/AVP 96", "TCP/RTP/AVP 96");
        let active = tcp.replace("m=video 30000", "m=video 0") + "a=setup:active\r\n";
        let o = parse_offer(&active).unwrap();
        assert_eq!((o.link, o.port), (MediaLink::TcpWeListen, 0));
        let passive = tcp + "a=setup:passive\r\n";
        let o = parse_offer(&passive).unwrap();
        assert_eq!((o.link, o.port), (MediaLink::TcpWeConnect, 30000));
        let a = answer(
            "1",
            "127.0.0.1:40000".parse().unwrap(),
            1,
            MediaLink::TcpWeListen,
            (SessionKind::Play, None),
        );
        assert!(a.contains("m=video 40000 TCP/RTP/AVP 96\r\n"));
        assert!(a.contains("a=setup:passive\r\n"));
    }

    #[test]
    fn answer_carries_y_and_f() {
        let local = "127.0.0.1:40000".parse().unwrap();
        let a = answer(
            "34020000001310000001",
            local,
            100_000_001,
            MediaLink::Udp,
            (SessionKind::Play, None),
        );
        assert!(
            a.contains("\r\ns=Play\r\n") && a.contains("\r\nt=0 0\r\n"),
            "{a}"
        );
        assert!(a.contains("m=video 40000 RTP/AVP 96\r\n"));
        assert!(a.contains("y=0100000001\r\n"));
        assert!(a.contains("\r\nf=\r\n"));
        assert!(!a.contains("a=setup"));
    }

    #[test]
    fn packets_carry_the_ps_with_marker_on_the_last() {
        let ps: Vec<u8> = (0..3_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        let mut packer = RtpPacker::new(7, 65_535);
        packer.pack(&ps, 90_000, &mut out);
        assert_eq!(out.len(), 3);
        let mut joined = Vec::new();
        for (i, p) in out.iter().enumerate() {
            let rtp = RtpPacket::parse(p.clone().freeze()).unwrap();
            assert_eq!(rtp.ssrc, 7);
            assert_eq!(rtp.timestamp, 90_000);
            assert_eq!(rtp.payload_type, PS_PAYLOAD_TYPE);
            assert_eq!(rtp.marker, i == 2);
            assert_eq!(rtp.sequence, 65_535u16.wrapping_add(i as u16));
            joined.extend_from_slice(&rtp.payload);
        }
        assert_eq!(joined, ps);
    }
}
