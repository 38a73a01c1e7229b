//! Which address a stream's RTP may come from (issue 14: media source
//! pinning). SSRCs are 32 bits and GB28181 fixes most of their digits, so
//! the SSRC alone cannot tell the device from someone who guessed it.
//!
//! A stream expects its device at the IP its SDP answer named (`c=`), or
//! else the IP of its SIP registration. The first datagram from that IP
//! pins the full source address (IP and port); every datagram from
//! anywhere else is dropped and counted by the caller. TCP media needs no
//! pin: the connection was accepted from, or made to, the device.
//!
//! Sans-IO: addresses in, a verdict out.

use std::net::{IpAddr, SocketAddr};

/// The pin of one stream.
#[derive(Debug, Clone)]
pub struct SourcePin {
    /// The device's media IP, if known before the first packet.
    expected_ip: Option<IpAddr>,
    pinned: Option<SocketAddr>,
}

impl SourcePin {
    pub fn new(expected_ip: Option<IpAddr>) -> Self {
        Self {
            expected_ip,
            pinned: None,
        }
    }

    /// Whether a datagram from `from` belongs to the stream. `None` (a
    /// connected transport) is always admitted.
    pub fn admit(&mut self, from: Option<SocketAddr>) -> bool {
        let Some(from) = from else {
            return true;
        };
        match self.pinned {
            Some(p) => p == from,
            None => {
                let ok = self.expected_ip.is_none_or(|ip| ip == from.ip());
                if ok {
                    self.pinned = Some(from);
                }
                ok
            }
        }
    }

    /// The pinned source, once the first packet came.
    pub fn pinned(&self) -> Option<SocketAddr> {
        self.pinned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ip: [u8; 4], port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from((ip, port)))
    }

    #[test]
    fn first_packet_from_the_device_ip_pins_the_port() {
        let mut pin = SourcePin::new(Some(IpAddr::from([10, 0, 0, 5])));
        assert!(!pin.admit(a([10, 0, 0, 6], 5000)), "another IP");
        assert!(pin.pinned().is_none());
        assert!(pin.admit(a([10, 0, 0, 5], 15060)));
        assert!(pin.admit(a([10, 0, 0, 5], 15060)));
        assert!(!pin.admit(a([10, 0, 0, 5], 15062)), "same IP, another port");
        assert_eq!(pin.pinned(), a([10, 0, 0, 5], 15060));
        assert!(pin.admit(None));
    }

    #[test]
    fn unknown_ip_pins_whoever_comes_first() {
        let mut pin = SourcePin::new(None);
        assert!(pin.admit(a([192, 0, 2, 1], 4000)));
        assert!(!pin.admit(a([192, 0, 2, 2], 4000)));
    }
}
