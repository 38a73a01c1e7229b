//! The requests answered statelessly in the last 64×T1 (RFC 3261 §17.2.2,
//! Timer J), remembered by transaction key, so that a retransmission is
//! answered again but not acted on twice.
//!
//! A MESSAGE carrying a catalog page or an alarm must be applied once: its
//! retransmission (the 200 was lost) would add the page's channels to the
//! count again or record the alarm twice. rsipstack absorbs
//! retransmissions with a server transaction that keeps the parsed
//! response for 32 s; a registration storm keeps one per device's catalog
//! page alive at once (issue 17). Recognising the repeat needs only the
//! key's hash and the time: 24 bytes, not a transaction.
//!
//! Bounded: past [`MAX_REMEMBERED`] keys in the window, [`Seen::Full`]
//! tells the caller to answer through a stored transaction as before, so
//! a flood costs at most this table plus what it cost already.
//!
//! Sans-IO: callers pass `now` and the key (rsipstack's transaction key,
//! the top Via branch with method and sent-by, §17.2.3).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// RFC 3261 Timer J for UDP: how long a retransmission can follow.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(32);

/// Keys remembered at once: 10,000 devices' first catalog pages with room
/// to spare, at ~24 bytes (plus the set's slack) each.
pub const MAX_REMEMBERED: usize = 65_536;

/// What a request's key says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen in the window: act on it and answer statelessly.
    First,
    /// A retransmission of one answered within the window: answer it
    /// again, act on nothing.
    Repeat,
    /// The table is full: act on it and answer through a stored
    /// transaction, which absorbs its retransmissions itself.
    Full,
}

/// Keys of requests answered statelessly, oldest first.
#[derive(Debug)]
pub struct AnsweredRequests {
    /// Hashes with a per-process random key, so that nobody can craft a
    /// request whose hash matches another's and have it taken for a repeat.
    hasher: RandomState,
    keys: HashSet<u64>,
    order: VecDeque<(Instant, u64)>,
    limit: usize,
}

impl Default for AnsweredRequests {
    fn default() -> Self {
        Self::with_limit(MAX_REMEMBERED)
    }
}

impl AnsweredRequests {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            keys: HashSet::new(),
            order: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    /// Classify the request with transaction key `key` arriving at `now`,
    /// and remember it when it is new.
    pub fn note(&mut self, key: &str, now: Instant) -> Seen {
        self.expire(now);
        let hash = self.hasher.hash_one(key);
        if self.keys.contains(&hash) {
            return Seen::Repeat;
        }
        if self.keys.len() >= self.limit {
            return Seen::Full;
        }
        self.keys.insert(hash);
        self.order.push_back((now, hash));
        Seen::First
    }

    /// Forget keys older than [`REPEAT_WINDOW`], and give back the memory
    /// a burst left behind.
    pub fn expire(&mut self, now: Instant) {
        let before = self.keys.len();
        while let Some(&(at, hash)) = self.order.front() {
            if now.saturating_duration_since(at) < REPEAT_WINDOW {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&hash);
        }
        if self.keys.len() < before && self.keys.capacity() > 4 * self.keys.len().max(256) {
            self.keys.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_recognised_and_forgotten_after_it() {
        let mut answered = AnsweredRequests::default();
        let t0 = Instant::now();
        assert_eq!(
            answered.note("z9hG4bKa MESSAGE 10.0.0.1:5060", t0),
            Seen::First
        );
        assert_eq!(
            answered.note("z9hG4bKb MESSAGE 10.0.0.1:5060", t0),
            Seen::First
        );
        let later = t0 + Duration::from_secs(31);
        assert_eq!(
            answered.note("z9hG4bKa MESSAGE 10.0.0.1:5060", later),
            Seen::Repeat
        );
        assert_eq!(answered.len(), 2);
        // Past the window the key is new again (the sender started over).
        let gone = t0 + REPEAT_WINDOW;
        assert_eq!(
            answered.note("z9hG4bKa MESSAGE 10.0.0.1:5060", gone),
            Seen::First
        );
        assert_eq!(answered.len(), 1, "b expired, a noted afresh");
    }

    #[test]
    fn a_full_table_says_so_and_takes_new_keys_once_old_ones_expire() {
        let mut answered = AnsweredRequests::with_limit(2);
        let t0 = Instant::now();
        assert_eq!(answered.note("a", t0), Seen::First);
        assert_eq!(answered.note("b", t0 + Duration::from_secs(1)), Seen::First);
        assert_eq!(answered.note("c", t0 + Duration::from_secs(2)), Seen::Full);
        // A key already held is still recognised when full.
        assert_eq!(
            answered.note("a", t0 + Duration::from_secs(3)),
            Seen::Repeat
        );
        // "a" expires at 32 s; "b" is still held.
        assert_eq!(answered.note("c", t0 + REPEAT_WINDOW), Seen::First);
        assert_eq!(answered.note("d", t0 + REPEAT_WINDOW), Seen::Full);
    }

    #[test]
    fn a_burst_gives_its_memory_back_after_the_window() {
        let mut answered = AnsweredRequests::default();
        let t0 = Instant::now();
        for i in 0..20_000 {
            answered.note(&format!("z9hG4bK{i} MESSAGE 10.0.0.1:5060"), t0);
        }
        let burst = answered.keys.capacity();
        answered.expire(t0 + REPEAT_WINDOW);
        assert!(answered.is_empty());
        assert!(
            answered.keys.capacity() < burst / 4,
            "{}",
            answered.keys.capacity()
        );
    }
}
