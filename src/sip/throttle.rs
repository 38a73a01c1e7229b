//! Throttling of failed digest attempts (issue 13 scope 6): a source IP or
//! a device id that failed [`FailureThrottle::LIMIT`] digests within
//! [`FailureThrottle::WINDOW`] is refused (403, without checking anything)
//! for [`FailureThrottle::COOL_DOWN`]. Guessing a password online then
//! costs a minute per ten guesses, per IP and per device.
//!
//! Both keys count because each alone is easy to dodge: many IPs against
//! one device, or one IP against many devices. A device whose password was
//! changed and keeps retrying is throttled too, which only slows its
//! retries down.
//!
//! Sans-IO: callers pass `now`. Memory is bounded: at most
//! [`FailureThrottle::MAX_ENTRIES`] keys are tracked; when full, the
//! oldest window is evicted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Device(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Start of the counting window.
    since: Instant,
    failures: u32,
    /// Refused until then.
    blocked_until: Option<Instant>,
}

/// Failure counts per IP and per device id.
#[derive(Debug, Default)]
pub struct FailureThrottle {
    entries: HashMap<Key, Entry>,
}

impl FailureThrottle {
    /// Failures allowed in one window.
    pub const LIMIT: u32 = 10;
    pub const WINDOW: Duration = Duration::from_secs(60);
    pub const COOL_DOWN: Duration = Duration::from_secs(60);
    pub const MAX_ENTRIES: usize = 8192;

    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `ip` or `device` is cooling down at `now`.
    pub fn is_blocked(&self, ip: IpAddr, device: &str, now: Instant) -> bool {
        [Key::Ip(ip), Key::Device(device.to_owned())]
            .iter()
            .any(|k| {
                self.entries
                    .get(k)
                    .and_then(|e| e.blocked_until)
                    .is_some_and(|t| now < t)
            })
    }

    /// Count one failed digest from `ip` for `device`.
    pub fn failed(&mut self, ip: IpAddr, device: &str, now: Instant) {
        for key in [Key::Ip(ip), Key::Device(device.to_owned())] {
            self.bump(key, now);
        }
    }

    /// A device proved itself: its own count starts over (its IP's does
    /// not — one good device must not launder guesses from its address).
    pub fn succeeded(&mut self, device: &str) {
        self.entries.remove(&Key::Device(device.to_owned()));
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn bump(&mut self, key: Key, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= Self::MAX_ENTRIES {
            self.evict(now);
        }
        let e = self.entries.entry(key).or_insert(Entry {
            since: now,
            failures: 0,
            blocked_until: None,
        });
        if e.blocked_until.is_some_and(|t| now >= t)
            || now.saturating_duration_since(e.since) >= Self::WINDOW
        {
            *e = Entry {
                since: now,
                failures: 0,
                blocked_until: None,
            };
        }
        e.failures += 1;
        if e.failures >= Self::LIMIT {
            e.blocked_until = Some(now + Self::COOL_DOWN);
        }
    }

    /// Drop lapsed entries; if none lapsed, the one with the oldest window.
    fn evict(&mut self, now: Instant) {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            let blocked = e.blocked_until.is_some_and(|t| now < t);
            blocked || now.saturating_duration_since(e.since) < Self::WINDOW
        });
        if self.entries.len() < before {
            return;
        }
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.since)
            .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "34020000001320000001";

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn ten_failures_block_the_ip_and_the_device_for_the_cool_down() {
        let mut t = FailureThrottle::new();
        let t0 = Instant::now();
        for i in 0..9 {
            t.failed(ip(1), DEV, t0 + Duration::from_secs(i));
            assert!(!t.is_blocked(ip(1), DEV, t0 + Duration::from_secs(i)));
        }
        t.failed(ip(1), DEV, t0 + Duration::from_secs(9));
        let at = t0 + Duration::from_secs(9);
        assert!(t.is_blocked(ip(1), DEV, at));
        // The same device from elsewhere, and elsewhere from the same IP.
        assert!(t.is_blocked(ip(2), DEV, at));
        assert!(t.is_blocked(ip(1), "34020000001320000002", at));
        assert!(!t.is_blocked(ip(2), "34020000001320000002", at));
        // Cool-down over.
        let later = at + FailureThrottle::COOL_DOWN;
        assert!(!t.is_blocked(ip(1), DEV, later));
    }

    #[test]
    fn failures_spread_beyond_the_window_never_block() {
        let mut t = FailureThrottle::new();
        let t0 = Instant::now();
        for i in 0..30u64 {
            let now = t0 + Duration::from_secs(i * 7);
            t.failed(ip(1), DEV, now);
            assert!(!t.is_blocked(ip(1), DEV, now), "failure {i}");
        }
    }

    #[test]
    fn success_clears_the_device_and_memory_stays_bounded() {
        let mut t = FailureThrottle::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            t.failed(ip(1), DEV, t0);
        }
        t.succeeded(DEV);
        for _ in 0..5 {
            t.failed(ip(3), DEV, t0);
        }
        assert!(!t.is_blocked(ip(3), DEV, t0));
        for i in 0..(FailureThrottle::MAX_ENTRIES as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()), &format!("{i:020}"), t0);
        }
        assert!(t.len() <= FailureThrottle::MAX_ENTRIES);
    }
}
