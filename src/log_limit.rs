//! Per-source rate limiting of warnings about bad input.
//!
//! Anyone on the network can send garbage to every open port; if each bad
//! datagram wrote a log line, an attacker could fill the disk through the
//! log. The rule: the first warning from a source in a window is logged,
//! later ones in the same window only counted, and the next warning after
//! the window closes is logged with the count it stood for ("and N more").
//! Metrics still count every event; the log only samples them.
//!
//! Sans-IO: callers pass `now`; [`LogGate`] is the shared, locked wrapper
//! drivers use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One summary line per source per minute.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at once; past this, unknown sources share one bucket, so
/// a spoofed-source flood cannot grow the map without bound.
pub const DEFAULT_MAX_SOURCES: usize = 4096;

/// What to do with one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `suppressed` warnings from this source were dropped since the
    /// last logged one (say so in the line when non-zero).
    Log { suppressed: u64 },
    /// Count it only.
    Suppress,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    suppressed: u64,
}

/// The limiter's state, without locking.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    max_sources: usize,
    sources: HashMap<IpAddr, Window>,
    /// Shared by every source that found the map full.
    overflow: Option<Window>,
}

impl LogLimiter {
    pub fn new(window: Duration, max_sources: usize) -> Self {
        Self {
            window,
            max_sources: max_sources.max(1),
            sources: HashMap::new(),
            overflow: None,
        }
    }

    /// Decide for one warning about input from `source` at `now`.
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> Admit {
        if !self.sources.contains_key(&source) && self.sources.len() >= self.max_sources {
            let window = self.window;
            self.sources
                .retain(|_, w| now.saturating_duration_since(w.opened) < window);
        }
        if let Some(w) = self.sources.get_mut(&source) {
            return Self::step(w, self.window, now);
        }
        if self.sources.len() >= self.max_sources {
            return match &mut self.overflow {
                Some(w) => Self::step(w, self.window, now),
                None => {
                    self.overflow = Some(Window {
                        opened: now,
                        suppressed: 0,
                    });
                    Admit::Log { suppressed: 0 }
                }
            };
        }
        self.sources.insert(
            source,
            Window {
                opened: now,
                suppressed: 0,
            },
        );
        Admit::Log { suppressed: 0 }
    }

    fn step(w: &mut Window, window: Duration, now: Instant) -> Admit {
        if now.saturating_duration_since(w.opened) >= window {
            let suppressed = w.suppressed;
            w.opened = now;
            w.suppressed = 0;
            Admit::Log { suppressed }
        } else {
            w.suppressed = w.suppressed.saturating_add(1);
            Admit::Suppress
        }
    }

    /// Sources tracked now (for tests and a gauge).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

/// A [`LogLimiter`] shared between tasks.
#[derive(Debug)]
pub struct LogGate(Mutex<LogLimiter>);

impl Default for LogGate {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_MAX_SOURCES)
    }
}

impl LogGate {
    pub fn new(window: Duration, max_sources: usize) -> Self {
        Self(Mutex::new(LogLimiter::new(window, max_sources)))
    }

    /// `Some(suppressed)` when this warning should be logged.
    pub fn admit(&self, source: IpAddr) -> Option<u64> {
        let mut limiter = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match limiter.admit(source, Instant::now()) {
            Admit::Log { suppressed } => Some(suppressed),
            Admit::Suppress => None,
        }
    }
}

/// `warn!` at most once per source per window, with the count of the
/// warnings it stands for: `warn_limited!(gate, peer_ip, field = x, "msg {e}")`.
#[macro_export]
macro_rules! warn_limited {
    ($gate:expr, $source:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $gate.admit($source) {
            ::tracing::warn!(source = %$source, suppressed, $($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_line_per_source_per_window_then_the_count() {
        let mut l = LogLimiter::new(Duration::from_secs(60), 16);
        let t0 = Instant::now();
        assert_eq!(l.admit(ip(1), t0), Admit::Log { suppressed: 0 });
        for i in 1..=749 {
            assert_eq!(
                l.admit(ip(1), t0 + Duration::from_millis(i)),
                Admit::Suppress
            );
        }
        // Another source is not silenced by the first one's flood.
        assert_eq!(l.admit(ip(2), t0), Admit::Log { suppressed: 0 });
        assert_eq!(
            l.admit(ip(1), t0 + Duration::from_secs(60)),
            Admit::Log { suppressed: 749 }
        );
        assert_eq!(
            l.admit(ip(1), t0 + Duration::from_secs(61)),
            Admit::Suppress
        );
    }

    #[test]
    fn a_spoofed_source_flood_keeps_the_map_bounded() {
        let mut l = LogLimiter::new(Duration::from_secs(60), 8);
        let t0 = Instant::now();
        let mut logged = 0;
        for i in 0..10_000u32 {
            let source = IpAddr::from((0x0A00_0000 + i).to_be_bytes());
            if matches!(l.admit(source, t0), Admit::Log { .. }) {
                logged += 1;
            }
        }
        assert_eq!(l.tracked(), 8);
        // Eight tracked sources plus one line for the shared overflow bucket.
        assert_eq!(logged, 9);
        // Once their windows pass, tracked sources make room again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.admit(ip(9), later), Admit::Log { suppressed: 0 });
        assert_eq!(l.tracked(), 1);
    }
}
