//! Liveness and readiness, as Kubernetes probes read them.
//!
//! `/healthz` (liveness) answers while the HTTP task runs: a wedged process
//! is restarted. `/readyz` (readiness) is 200 only once every listener is
//! bound on a validated configuration, and 503 from the moment a drain
//! starts, so the endpoints controller stops sending new viewers and
//! devices here while the drain sends its BYEs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics;

/// Shared readiness flags; cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Flags>,
}

#[derive(Default)]
struct Flags {
    listeners_bound: AtomicBool,
    draining: AtomicBool,
    /// Cluster: Redis unreachable. Still ready (this node serves what it
    /// owns), but `/readyz` says so.
    redis_degraded: AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// SIP, RTSP and HTTP listeners are bound (the configuration they came
    /// from was validated before any was bound).
    pub fn set_listeners_bound(&self) {
        self.inner.listeners_bound.store(true, Ordering::SeqCst);
        self.publish();
    }

    /// A graceful shutdown has begun.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.publish();
    }

    /// Cluster: Redis is (un)reachable.
    pub fn set_degraded_redis(&self, degraded: bool) {
        self.inner.redis_degraded.store(degraded, Ordering::SeqCst);
    }

    /// What works only in part, while still ready: `["redis"]` when the
    /// cluster's Redis is unreachable.
    pub fn degraded(&self) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.inner.redis_degraded.load(Ordering::SeqCst) {
            d.push("redis");
        }
        d
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// `Ok` when ready; otherwise every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<&'static str>> {
        let mut not = Vec::new();
        if !self.inner.listeners_bound.load(Ordering::SeqCst) {
            not.push("listeners not bound");
        }
        if self.is_draining() {
            not.push("draining");
        }
        if not.is_empty() { Ok(()) } else { Err(not) }
    }

    fn publish(&self) {
        metrics::get()
            .ready
            .set(i64::from(self.readiness().is_ok()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_bind_and_drain() {
        let h = Health::new();
        assert_eq!(h.readiness(), Err(vec!["listeners not bound"]));
        h.set_listeners_bound();
        assert_eq!(h.readiness(), Ok(()));
        h.set_degraded_redis(true);
        assert_eq!(h.readiness(), Ok(()));
        assert_eq!(h.degraded(), ["redis"]);
        h.set_degraded_redis(false);
        assert!(h.degraded().is_empty());
        h.set_draining();
        assert_eq!(h.readiness(), Err(vec!["draining"]));
    }
}
