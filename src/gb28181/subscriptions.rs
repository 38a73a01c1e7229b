//! When to renew our event subscriptions to devices (GB/T 28181-2016
//! §9.7.1 catalog, §9.7.2 alarm; RFC 6665 §4.1.2.1 refresh).
//!
//! A subscription lapses at its `Expires`; the platform has to SUBSCRIBE
//! again before then or the device stops notifying. We renew at four
//! fifths of the lifetime, so a lost request still has time for a retry,
//! and retry a failed one a little later while the device stays known.
//! Renewal is a fresh SUBSCRIBE with the same body: devices in the field
//! answer it like a refresh, and it needs no dialog state that a device
//! reboot would invalidate.
//!
//! Sans-IO: times come in, due renewals go out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The events we subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubscriptionKind {
    Alarm,
    Catalog,
}

impl SubscriptionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alarm => "alarm",
            Self::Catalog => "catalog",
        }
    }
}

/// How long after a failed SUBSCRIBE we try again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The renewal schedule of every live subscription.
#[derive(Debug, Default)]
pub struct Subscriptions {
    renew_at: HashMap<(String, SubscriptionKind), Instant>,
}

impl Subscriptions {
    /// The device accepted a SUBSCRIBE for `lifetime` (ignored if the
    /// device was forgotten while the request was out).
    pub fn accepted(
        &mut self,
        device: &str,
        kind: SubscriptionKind,
        now: Instant,
        lifetime: Duration,
    ) {
        let lead = (lifetime / 5).max(Duration::from_millis(500));
        if let Some(at) = self.renew_at.get_mut(&(device.to_owned(), kind)) {
            *at = now + lifetime.saturating_sub(lead);
        }
    }

    /// A SUBSCRIBE failed (refused, no answer, device offline): try again
    /// after [`RETRY_AFTER`] unless the device has been forgotten since.
    pub fn failed(&mut self, device: &str, kind: SubscriptionKind, now: Instant) {
        if let Some(at) = self.renew_at.get_mut(&(device.to_owned(), kind)) {
            *at = now + RETRY_AFTER;
        }
    }

    /// Track a subscription from its first SUBSCRIBE, before the answer, so
    /// a first attempt that fails is retried too.
    pub fn started(&mut self, device: &str, kind: SubscriptionKind, now: Instant) {
        self.renew_at
            .entry((device.to_owned(), kind))
            .or_insert(now + RETRY_AFTER);
    }

    /// Subscriptions to renew now, in a stable order. Each is pushed back
    /// by [`RETRY_AFTER`] so an answer that never comes is not re-sent every
    /// tick; [`accepted`](Self::accepted) or [`failed`](Self::failed)
    /// then sets the real next time.
    pub fn due(&mut self, now: Instant) -> Vec<(String, SubscriptionKind)> {
        let mut due: Vec<(String, SubscriptionKind)> = self
            .renew_at
            .iter_mut()
            .filter(|(_, at)| **at <= now)
            .map(|(key, at)| {
                *at = now + RETRY_AFTER;
                key.clone()
            })
            .collect();
        due.sort();
        due
    }

    /// The device is gone (unregistered, expired, removed): stop renewing.
    pub fn forget(&mut self, device: &str) {
        self.renew_at.retain(|(d, _), _| d != device);
    }

    pub fn is_tracked(&self, device: &str, kind: SubscriptionKind) -> bool {
        self.renew_at.contains_key(&(device.to_owned(), kind))
    }

    pub fn len(&self) -> usize {
        self.renew_at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.renew_at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionKind::{Alarm, Catalog};

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn renews_at_four_fifths_of_the_lifetime() {
        let t0 = Instant::now();
        let mut s = Subscriptions::default();
        s.started("dev", Catalog, t0);
        s.accepted("dev", Catalog, t0, HOUR);
        assert!(s.due(t0 + Duration::from_secs(2879)).is_empty());
        assert_eq!(
            s.due(t0 + Duration::from_secs(2880)),
            vec![("dev".to_owned(), Catalog)]
        );
        // In flight: not due again on the next tick.
        assert!(s.due(t0 + Duration::from_secs(2881)).is_empty());
        // The renewal is answered: the next one is a lifetime later.
        let t1 = t0 + Duration::from_secs(2881);
        s.accepted("dev", Catalog, t1, HOUR);
        assert!(s.due(t1 + Duration::from_secs(2879)).is_empty());
        assert_eq!(s.due(t1 + Duration::from_secs(2880)).len(), 1);
    }

    #[test]
    fn short_lifetimes_keep_a_lead() {
        let t0 = Instant::now();
        let mut s = Subscriptions::default();
        s.accepted("dev", Alarm, t0, Duration::from_secs(2));
        assert!(
            s.is_empty(),
            "accepted without started: forgotten meanwhile"
        );
        s.started("dev", Alarm, t0);
        s.accepted("dev", Alarm, t0, Duration::from_secs(2));
        assert!(s.due(t0 + Duration::from_millis(1499)).is_empty());
        assert_eq!(s.due(t0 + Duration::from_millis(1500)).len(), 1);
    }

    #[test]
    fn failures_retry_and_forgotten_devices_stop() {
        let t0 = Instant::now();
        let mut s = Subscriptions::default();
        s.started("a", Alarm, t0);
        s.started("b", Alarm, t0);
        s.started("b", Catalog, t0);
        s.failed("a", Alarm, t0);
        assert!(
            s.due(t0 + RETRY_AFTER - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            s.due(t0 + RETRY_AFTER),
            vec![
                ("a".to_owned(), Alarm),
                ("b".to_owned(), Alarm),
                ("b".to_owned(), Catalog)
            ]
        );
        s.forget("b");
        assert_eq!(s.len(), 1);
        // A failure for a forgotten device does not bring it back.
        s.failed("b", Alarm, t0);
        assert_eq!(s.len(), 1);
        s.forget("a");
        assert!(s.is_empty());
    }
}
