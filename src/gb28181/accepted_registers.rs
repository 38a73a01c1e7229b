//! The REGISTERs accepted in the last 64×T1, so that a retransmission of
//! one (its 200 was lost: same Call-ID, CSeq and source, RFC 3261
//! §17.2.2) is answered 200 again without a stored transaction.
//!
//! A server transaction would keep the whole parsed 200 for 32 s for this
//! purpose; a registration storm keeps one per device alive at once. The
//! facts needed to recognise the retransmission are a few dozen bytes.
//! Re-running the digest check instead is no answer: the nonce was
//! single-use, so the retransmission would get a 401 (see
//! [`super::registrar`]). A repeat changes nothing: the registration was
//! made by the first copy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 3261 Timer J for UDP: how long a retransmission can follow.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Accepted {
    call_id: String,
    cseq: u32,
    source: SocketAddr,
    expires: Duration,
    at: Instant,
}

/// Accepted REGISTERs by device id, forgotten after [`REPEAT_WINDOW`].
#[derive(Debug, Default)]
pub struct AcceptedRegisters {
    recent: HashMap<String, Accepted>,
}

impl AcceptedRegisters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remember that `device`'s REGISTER (`call_id`, `cseq`) from
    /// `source` was accepted for `expires` at `now`.
    pub fn note(
        &mut self,
        device: &str,
        call_id: &str,
        cseq: u32,
        source: SocketAddr,
        expires: Duration,
        now: Instant,
    ) {
        self.recent.insert(
            device.to_owned(),
            Accepted {
                call_id: call_id.to_owned(),
                cseq,
                source,
                expires,
                at: now,
            },
        );
    }

    /// The lifetime granted when this very REGISTER was accepted, if it
    /// is a retransmission of one accepted within the window.
    pub fn repeat_of(
        &self,
        device: &str,
        call_id: &str,
        cseq: u32,
        source: SocketAddr,
        now: Instant,
    ) -> Option<Duration> {
        self.recent
            .get(device)
            .filter(|a| {
                a.call_id == call_id
                    && a.cseq == cseq
                    && a.source == source
                    && now.saturating_duration_since(a.at) < REPEAT_WINDOW
            })
            .map(|a| a.expires)
    }

    /// Forget what is older than the window.
    pub fn expire(&mut self, now: Instant) {
        if !self.recent.is_empty() {
            self.recent
                .retain(|_, a| now.saturating_duration_since(a.at) < REPEAT_WINDOW);
        }
    }

    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "34020000001320000001";

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn only_the_same_register_from_the_same_source_within_the_window_repeats() {
        let t0 = Instant::now();
        let mut a = AcceptedRegisters::new();
        a.note(DEV, "c1", 2, at(5060), Duration::from_secs(3600), t0);
        let now = t0 + Duration::from_secs(1);
        assert_eq!(
            a.repeat_of(DEV, "c1", 2, at(5060), now),
            Some(Duration::from_secs(3600))
        );
        // A refresh (next CSeq), another Call-ID, another source or device.
        assert_eq!(a.repeat_of(DEV, "c1", 3, at(5060), now), None);
        assert_eq!(a.repeat_of(DEV, "c2", 2, at(5060), now), None);
        assert_eq!(a.repeat_of(DEV, "c1", 2, at(5061), now), None);
        assert_eq!(
            a.repeat_of("34020000001320000002", "c1", 2, at(5060), now),
            None
        );
        // Past the window.
        assert_eq!(
            a.repeat_of(DEV, "c1", 2, at(5060), t0 + REPEAT_WINDOW),
            None
        );
    }

    #[test]
    fn a_newer_acceptance_replaces_the_older_and_old_ones_are_forgotten() {
        let t0 = Instant::now();
        let mut a = AcceptedRegisters::new();
        a.note(DEV, "c1", 2, at(5060), Duration::from_secs(3600), t0);
        a.note(DEV, "c1", 3, at(5060), Duration::from_secs(600), t0);
        assert_eq!(a.repeat_of(DEV, "c1", 2, at(5060), t0), None);
        assert_eq!(
            a.repeat_of(DEV, "c1", 3, at(5060), t0),
            Some(Duration::from_secs(600))
        );
        a.note(
            "34020000001320000002",
            "c9",
            1,
            at(5062),
            Duration::from_secs(60),
            t0 + Duration::from_secs(20),
        );
        a.expire(t0 + REPEAT_WINDOW);
        assert_eq!(a.len(), 1);
        a.expire(t0 + Duration::from_secs(20) + REPEAT_WINDOW);
        assert!(a.is_empty());
    }
}
