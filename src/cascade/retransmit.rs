//! Retransmission of our non-INVITE requests to the upper platform over
//! UDP (RFC 3261 §17.1.2.2, timers E and F; GB/T 28181-2016 §4.3 carries
//! SIP over UDP): query answers, catalog and alarm NOTIFYs, MediaStatus
//! 121 and our BYE. A datagram may be lost; the request is sent again at
//! T1, doubling up to T2, until any response arrives, and given up at
//! 64·T1 from the first send. Over TCP the transport delivers, so nothing
//! is tracked.
//!
//! Sans-IO: bytes and times in, what to resend out; the driver owns the
//! socket and the timer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 3261 §17.1.1.1: the round-trip estimate.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: the cap on the interval.
pub const T2: Duration = Duration::from_secs(4);
/// Timer F: a request unanswered this long after its first send is given up.
pub const GIVE_UP: Duration = Duration::from_millis(500 * 64);
/// Requests tracked at most; beyond it the oldest is forgotten (and
/// counted), so an upper platform that never answers costs bounded memory.
pub const MAX_TRACKED: usize = 1024;

/// A request's transaction: its Call-ID and CSeq number.
pub type Key = (String, u32);

#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    dest: SocketAddr,
    next: Instant,
    interval: Duration,
    /// Fixed from the first send (timer F).
    give_up: Instant,
    /// Order of tracking, to drop the oldest at the cap.
    order: u64,
}

/// Our requests awaiting a response.
#[derive(Debug, Default)]
pub struct Retransmissions {
    entries: HashMap<Key, Entry>,
    counter: u64,
    /// Requests given up unanswered (timer F), not yet taken.
    pub gave_up: u64,
    /// Requests forgotten at the cap, not yet taken.
    pub dropped: u64,
}

impl Retransmissions {
    /// Track a request just sent at `now`. Tracking the same key again
    /// replaces it (a new request reusing Call-ID and CSeq is a mistake of
    /// ours; the latest bytes win).
    pub fn track(&mut self, key: Key, bytes: Vec<u8>, dest: SocketAddr, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_TRACKED {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.order)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
                self.dropped += 1;
            }
        }
        self.counter += 1;
        self.entries.insert(
            key,
            Entry {
                bytes,
                dest,
                next: now + T1,
                interval: T1,
                give_up: now + GIVE_UP,
                order: self.counter,
            },
        );
    }

    /// A response (provisional or final) to `key` came: stop resending.
    /// Whether it was tracked.
    pub fn answered(&mut self, key: &Key) -> bool {
        self.entries.remove(key).is_some()
    }

    /// When [`Self::due`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.next.min(e.give_up)).min()
    }

    /// What to resend at `now`; entries past their deadline are given up.
    pub fn due(&mut self, now: Instant) -> Vec<(Vec<u8>, SocketAddr)> {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.give_up > now);
        self.gave_up += (before - self.entries.len()) as u64;
        let mut out = Vec::new();
        for e in self.entries.values_mut() {
            if e.next <= now {
                out.push((e.bytes.clone(), e.dest));
                // From its own schedule, not from `now`: a late wake-up
                // does not stretch the intervals.
                e.interval = (e.interval * 2).min(T2);
                e.next += e.interval;
                if e.next <= now {
                    e.next = now + e.interval;
                }
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Take the counts of given-up and dropped requests (for metrics).
    pub fn take_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.gave_up),
            std::mem::take(&mut self.dropped),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }

    fn key(n: u32) -> Key {
        ("c@x".to_owned(), n)
    }

    /// Send times (ms after the first) until given up, stepping by each
    /// poll_timeout.
    fn schedule(r: &mut Retransmissions, t0: Instant) -> Vec<u128> {
        let mut sent = Vec::new();
        while let Some(at) = r.poll_timeout() {
            for _ in r.due(at) {
                sent.push((at - t0).as_millis());
            }
        }
        sent
    }

    #[test]
    fn resends_at_t1_doubling_to_t2_and_gives_up_at_64_t1() {
        let t0 = Instant::now();
        let mut r = Retransmissions::default();
        r.track(key(1), b"MESSAGE".to_vec(), dest(), t0);
        let sent = schedule(&mut r, t0);
        assert_eq!(
            sent,
            vec![
                500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
            ]
        );
        assert!(r.is_empty());
        assert_eq!(r.take_counts(), (1, 0));
        assert_eq!(r.take_counts(), (0, 0));
    }

    #[test]
    fn nothing_is_due_early_and_the_bytes_and_dest_are_kept() {
        let t0 = Instant::now();
        let mut r = Retransmissions::default();
        r.track(key(1), b"abc".to_vec(), dest(), t0);
        assert!(r.due(t0 + Duration::from_millis(499)).is_empty());
        assert_eq!(
            r.due(t0 + Duration::from_millis(500)),
            vec![(b"abc".to_vec(), dest())]
        );
        // A late wake-up sends once, not once per missed slot.
        assert_eq!(r.due(t0 + Duration::from_secs(5)).len(), 1);
        assert!(r.poll_timeout().unwrap() > t0 + Duration::from_secs(5));
    }

    #[test]
    fn an_answer_stops_it() {
        let t0 = Instant::now();
        let mut r = Retransmissions::default();
        r.track(key(1), b"a".to_vec(), dest(), t0);
        r.track(key(2), b"b".to_vec(), dest(), t0);
        assert_eq!(r.due(t0 + T1).len(), 2);
        assert!(r.answered(&key(1)));
        assert!(!r.answered(&key(1)));
        assert!(!r.answered(&("other".to_owned(), 2)));
        let later = r.due(t0 + T1 * 3);
        assert_eq!(later, vec![(b"b".to_vec(), dest())]);
        assert!(r.answered(&key(2)));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.take_counts(), (0, 0));
    }

    #[test]
    fn the_oldest_is_dropped_at_the_cap() {
        let t0 = Instant::now();
        let mut r = Retransmissions::default();
        for n in 0..MAX_TRACKED as u32 + 2 {
            r.track(key(n), vec![], dest(), t0 + Duration::from_millis(n.into()));
        }
        assert_eq!(r.len(), MAX_TRACKED);
        assert!(!r.answered(&key(0)));
        assert!(!r.answered(&key(1)));
        assert!(r.answered(&key(2)));
        assert_eq!(r.take_counts(), (0, 2));
        // Re-tracking a key already there drops nothing.
        r.track(key(5), vec![], dest(), t0);
        assert_eq!(r.take_counts(), (0, 0));
    }
}
