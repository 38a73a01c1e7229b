//! What each upstream is doing, for `GET /api/v1/cascade` and the console:
//! written by the drivers, read by the API.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::register::{ClientStats, Phase};

/// One upstream as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub server_id: String,
    pub platform_id: String,
    /// The configured `host:port`.
    pub address: String,
    /// SIP transport toward it: `udp` or `tcp`.
    pub transport: super::config::UpstreamTransport,
    /// Where REGISTER goes now (differs after a redirect); empty until
    /// the address resolves.
    pub target: String,
    /// Our SIP address toward it.
    pub local: String,
    pub state: Phase,
    pub last_error: Option<String>,
    /// Seconds until the registration lapses unless refreshed.
    pub expires_in: Option<u64>,
    /// Unix time of the last successful registration.
    pub registered_at: Option<u64>,
    pub stats: ClientStats,
}

/// One slot: the status and when its registration lapses.
type Slot = (UpstreamStatus, Option<Instant>);

/// Every upstream's status, shared between drivers and the API.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<Vec<Slot>>>,
}

impl StatusBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add an upstream; returns its slot.
    pub fn add(&self, status: UpstreamStatus) -> usize {
        let mut v = self.lock();
        v.push((status, None));
        v.len() - 1
    }

    /// Change slot `index` (its lapse instant is kept beside it, so
    /// `expires_in` is computed when read).
    pub fn update(&self, index: usize, f: impl FnOnce(&mut UpstreamStatus, &mut Option<Instant>)) {
        if let Some((s, until)) = self.lock().get_mut(index) {
            f(s, until);
        }
    }

    /// Everything, as of `now`.
    pub fn snapshot(&self, now: Instant) -> Vec<UpstreamStatus> {
        self.lock()
            .iter()
            .map(|(s, until)| {
                let mut s = s.clone();
                s.expires_in = until.map(|u| u.saturating_duration_since(now).as_secs());
                s
            })
            .collect()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
