//! SSRC routing for one shared RTP port, sans-IO (RFC 3550 §8: the SSRC
//! identifies the source; GB/T 28181-2016 §9.2.2 `y=` fixes it per stream).
//!
//! A datagram is assigned to a stream from its first 12 bytes only
//! ([`peek_ssrc`]); RTCP and anything that is not RTP version 2 never
//! reaches a stream. A packet whose SSRC no stream owns is counted and
//! dropped — never handed to another stream, whatever its source address.
//!
//! A device that answered without `y=` registers as a *learner* bound to
//! its media address: the first unknown SSRC arriving from that IP becomes
//! its SSRC. Several learners on one IP (channels of one NVR) are served
//! oldest first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::media::rtp::{is_rtcp, peek_ssrc};

/// A registration, to remove it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId(u64);

/// Where a datagram goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a, T> {
    Stream(&'a T),
    /// First packet of a learner: its SSRC is now bound.
    Learned {
        sink: &'a T,
        ssrc: u32,
    },
    /// No stream owns this SSRC: drop it.
    UnknownSsrc(u32),
    /// RTCP on the RTP port: drop it.
    Rtcp,
    /// Not RTP at all.
    NotRtp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("SSRC {0} is already routed to another stream")]
    SsrcInUse(u32),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub routed: u64,
    pub learned: u64,
    pub unknown_ssrc: u64,
    pub rtcp: u64,
    pub not_rtp: u64,
}

/// SSRC → sink table of one shared port.
#[derive(Debug)]
pub struct SsrcRouter<T> {
    by_ssrc: HashMap<u32, (RouteId, T)>,
    learners: VecDeque<(RouteId, IpAddr, T)>,
    ssrc_of: HashMap<RouteId, u32>,
    next_id: u64,
    stats: RouterStats,
}

impl<T> Default for SsrcRouter<T> {
    fn default() -> Self {
        Self {
            by_ssrc: HashMap::new(),
            learners: VecDeque::new(),
            ssrc_of: HashMap::new(),
            next_id: 0,
            stats: RouterStats::default(),
        }
    }
}

impl<T> SsrcRouter<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// Streams routed by a known SSRC, and learners still waiting.
    pub fn len(&self) -> (usize, usize) {
        (self.by_ssrc.len(), self.learners.len())
    }

    pub fn is_empty(&self) -> bool {
        self.by_ssrc.is_empty() && self.learners.is_empty()
    }

    fn id(&mut self) -> RouteId {
        self.next_id += 1;
        RouteId(self.next_id)
    }

    /// Route `ssrc` to `sink`.
    pub fn insert(&mut self, ssrc: u32, sink: T) -> Result<RouteId, RouterError> {
        if self.by_ssrc.contains_key(&ssrc) {
            return Err(RouterError::SsrcInUse(ssrc));
        }
        let id = self.id();
        self.by_ssrc.insert(ssrc, (id, sink));
        self.ssrc_of.insert(id, ssrc);
        Ok(id)
    }

    /// Route the first unknown SSRC from `from_ip` to `sink`.
    pub fn learn(&mut self, from_ip: IpAddr, sink: T) -> RouteId {
        let id = self.id();
        self.learners.push_back((id, from_ip, sink));
        id
    }

    /// Remove a registration (learned or not); returns its sink.
    pub fn remove(&mut self, id: RouteId) -> Option<T> {
        if let Some(ssrc) = self.ssrc_of.remove(&id) {
            return self.by_ssrc.remove(&ssrc).map(|(_, t)| t);
        }
        let at = self.learners.iter().position(|(i, _, _)| *i == id)?;
        self.learners.remove(at).map(|(_, _, t)| t)
    }

    /// The SSRC a registration is bound to, once known.
    pub fn ssrc(&self, id: RouteId) -> Option<u32> {
        self.ssrc_of.get(&id).copied()
    }

    /// Decide where one datagram goes, from its header bytes only.
    pub fn route(&mut self, datagram: &[u8], from_ip: IpAddr) -> Route<'_, T> {
        let Some(ssrc) = peek_ssrc(datagram) else {
            if is_rtcp(datagram) {
                self.stats.rtcp += 1;
                return Route::Rtcp;
            }
            self.stats.not_rtp += 1;
            return Route::NotRtp;
        };
        if self.by_ssrc.contains_key(&ssrc) {
            self.stats.routed += 1;
            return match self.by_ssrc.get(&ssrc) {
                Some((_, sink)) => Route::Stream(sink),
                None => Route::UnknownSsrc(ssrc),
            };
        }
        let Some(at) = self.learners.iter().position(|(_, ip, _)| *ip == from_ip) else {
            self.stats.unknown_ssrc += 1;
            return Route::UnknownSsrc(ssrc);
        };
        let Some((id, _, sink)) = self.learners.remove(at) else {
            return Route::UnknownSsrc(ssrc);
        };
        self.stats.learned += 1;
        self.stats.routed += 1;
        self.ssrc_of.insert(id, ssrc);
        let (_, sink) = self.by_ssrc.entry(ssrc).or_insert((id, sink));
        Route::Learned { sink, ssrc }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32) -> Vec<u8> {
        let mut v = vec![0x80, 96, 0, 1, 0, 0, 0, 0];
        v.extend_from_slice(&ssrc.to_be_bytes());
        v.extend_from_slice(b"payload");
        v
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn routes_by_ssrc_only() {
        let mut r = SsrcRouter::new();
        let a = r.insert(100, "a").unwrap();
        r.insert(200, "b").unwrap();
        assert_eq!(r.insert(100, "c"), Err(RouterError::SsrcInUse(100)));
        assert_eq!(r.route(&rtp(100), B), Route::Stream(&"a"));
        assert_eq!(r.route(&rtp(200), A), Route::Stream(&"b"));
        // Unknown SSRC from a known stream's address goes nowhere.
        assert_eq!(r.route(&rtp(300), A), Route::UnknownSsrc(300));
        assert_eq!(r.route(&[0x81, 201, 0, 1, 0, 0, 0, 0], A), Route::Rtcp);
        assert_eq!(r.route(b"hello", A), Route::NotRtp);
        assert_eq!(r.remove(a), Some("a"));
        assert_eq!(r.route(&rtp(100), A), Route::UnknownSsrc(100));
        let s = r.stats();
        assert_eq!((s.routed, s.unknown_ssrc, s.rtcp, s.not_rtp), (2, 2, 1, 1));
    }

    #[test]
    fn learns_from_the_device_address_oldest_first() {
        let mut r = SsrcRouter::new();
        let first = r.learn(A, "first");
        let second = r.learn(A, "second");
        assert_eq!(r.route(&rtp(7), B), Route::UnknownSsrc(7));
        assert_eq!(
            r.route(&rtp(7), A),
            Route::Learned {
                sink: &"first",
                ssrc: 7
            }
        );
        assert_eq!(r.route(&rtp(7), A), Route::Stream(&"first"));
        assert_eq!(r.ssrc(first), Some(7));
        assert_eq!(
            r.route(&rtp(8), A),
            Route::Learned {
                sink: &"second",
                ssrc: 8
            }
        );
        assert_eq!(r.remove(second), Some("second"));
        assert_eq!(r.route(&rtp(8), A), Route::UnknownSsrc(8));
        assert_eq!(r.len(), (1, 0));
    }
}
