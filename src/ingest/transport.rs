//! Which way RTP reaches us from a GB28181 device (GB/T 28181-2016 Annex F,
//! §F.1 UDP and §F.2 TCP with RFC 4145 `a=setup` roles and RFC 4571
//! framing), and how strictly a device's SSRC is held to what SDP says.

use std::str::FromStr;

/// How a stream's RTP arrives. Chosen per gateway (`media.transport`) and
/// overridable per request (`?transport=` on the RTSP URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaTransport {
    /// RTP/AVP to a port pair of our own from the pool.
    Udp,
    /// RTP/AVP to the one shared port; streams told apart by SSRC.
    UdpShared,
    /// TCP/RTP/AVP, `a=setup:passive`: we listen, the device connects.
    TcpPassive,
    /// TCP/RTP/AVP, `a=setup:active`: the device listens, we connect.
    TcpActive,
}

impl MediaTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::UdpShared => "udp_shared",
            Self::TcpPassive => "tcp_passive",
            Self::TcpActive => "tcp_active",
        }
    }

    pub fn is_tcp(self) -> bool {
        matches!(self, Self::TcpPassive | Self::TcpActive)
    }
}

impl std::fmt::Display for MediaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown media transport {0:?} (udp, udp_shared, tcp_passive, tcp_active)")]
pub struct UnknownTransport(pub String);

impl FromStr for MediaTransport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "udp" => Self::Udp,
            "udp_shared" | "shared" => Self::UdpShared,
            "tcp_passive" | "tcp" => Self::TcpPassive,
            "tcp_active" => Self::TcpActive,
            _ => return Err(UnknownTransport(s.to_owned())),
        })
    }
}

/// What to do when a device's 200 OK carries no `y=` SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsrcPolicy {
    /// Take the SSRC of the first RTP packet from the device's address.
    #[default]
    Learn,
    /// Expect the SSRC we offered; anything else is dropped.
    Strict,
}

/// Where video resumes after RTP packets were lost (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterLoss {
    /// Hold video back until the next keyframe: viewers see a frozen
    /// picture, never a damaged one.
    Keyframe,
    /// Drop only the damaged frame: motion goes on, and decoders conceal
    /// the damage until the next keyframe. The default: with a camera's
    /// GOP of 2–4 s, holding back for a keyframe loses most frames on a
    /// link that drops a few per cent of packets.
    #[default]
    NextFrame,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [
            MediaTransport::Udp,
            MediaTransport::UdpShared,
            MediaTransport::TcpPassive,
            MediaTransport::TcpActive,
        ] {
            assert_eq!(t.as_str().parse::<MediaTransport>(), Ok(t));
        }
        assert_eq!("TCP".parse(), Ok(MediaTransport::TcpPassive));
        assert!("sctp".parse::<MediaTransport>().is_err());
    }
}
