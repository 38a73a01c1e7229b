//! Queries that wait for answers (GB/T 28181-2016 §9.5): a MESSAGE goes
//! out with a fresh `SN`, the device says 200 OK, and the real answer comes
//! later in its own MESSAGE carrying the same SN — one page, or several for
//! catalogs, record lists and presets. [`Exchanges`] matches answers to
//! waiting callers; the platform's timer expires what never completes.
//!
//! The state is sans-IO (no clock reads: `now` comes in); callers get a
//! `oneshot` receiver to await.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::aggregate::{AggregateError, Aggregator, Completed};
use super::manscdp::CatalogItem;
use super::reports::{Preset, RecordItem, Report};

/// Most single-answer queries waiting at once.
pub const MAX_WAITERS: usize = 1024;

/// Why a query to a device produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("device {0} is not registered")]
    UnknownDevice(String),
    #[error("device {0} is offline")]
    Offline(String),
    #[error("could not send to the device: {0}")]
    Send(String),
    #[error("device refused the request with {0}")]
    Refused(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("too many queries in flight")]
    Busy,
    #[error("device answered {0}")]
    Failed(String),
    #[error("bad request: {0}")]
    Invalid(String),
}

impl QueryError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownDevice(_) => "unknown_device",
            Self::Offline(_) => "offline",
            Self::Send(_) => "send",
            Self::Refused(_) => "refused",
            Self::Timeout(_) => "timeout",
            Self::Busy => "busy",
            Self::Failed(_) => "failed",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl From<AggregateError> for QueryError {
    fn from(_: AggregateError) -> Self {
        Self::Busy
    }
}

type Key = (String, u32);

/// One kind of multi-page answer and its waiting callers.
struct Paged<T> {
    agg: Aggregator<T>,
    waiters: HashMap<Key, oneshot::Sender<Completed<T>>>,
}

impl<T> Default for Paged<T> {
    fn default() -> Self {
        Self {
            agg: Aggregator::new(),
            waiters: HashMap::new(),
        }
    }
}

impl<T> Paged<T> {
    fn start(
        &mut self,
        device: &str,
        sn: u32,
        now: Instant,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<Completed<T>>, QueryError> {
        self.agg.start(device, sn, now, timeout)?;
        let (tx, rx) = oneshot::channel();
        self.waiters.insert((device.to_owned(), sn), tx);
        Ok(rx)
    }

    /// Returns whether the page was expected.
    fn push(&mut self, device: &str, sn: u32, sum: Option<u32>, items: Vec<T>) -> bool {
        if !self.agg.is_pending(device, sn) {
            return false;
        }
        if let Some(done) = self.agg.push(device, sn, sum, items) {
            self.finish(done);
        }
        true
    }

    fn finish(&mut self, done: Completed<T>) {
        if let Some(tx) = self.waiters.remove(&(done.device_id.clone(), done.sn)) {
            let _ = tx.send(done);
        }
    }

    fn expire(&mut self, now: Instant) {
        for done in self.agg.expire(now) {
            self.finish(done);
        }
    }

    fn cancel(&mut self, device: &str, sn: u32) {
        self.agg.cancel(device, sn);
        self.waiters.remove(&(device.to_owned(), sn));
    }
}

/// Every query waiting for its answer.
#[derive(Default)]
pub struct Exchanges {
    catalogs: Paged<CatalogItem>,
    records: Paged<RecordItem>,
    presets: Paged<Preset>,
    single: HashMap<Key, oneshot::Sender<Report>>,
}

impl Exchanges {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn expect_catalog(
        &mut self,
        device: &str,
        sn: u32,
        now: Instant,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<Completed<CatalogItem>>, QueryError> {
        self.catalogs.start(device, sn, now, timeout)
    }

    pub fn expect_records(
        &mut self,
        device: &str,
        sn: u32,
        now: Instant,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<Completed<RecordItem>>, QueryError> {
        self.records.start(device, sn, now, timeout)
    }

    pub fn expect_presets(
        &mut self,
        device: &str,
        sn: u32,
        now: Instant,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<Completed<Preset>>, QueryError> {
        self.presets.start(device, sn, now, timeout)
    }

    /// One answer with this SN (DeviceStatus, ConfigDownload, a Result).
    pub fn expect_one(
        &mut self,
        device: &str,
        sn: u32,
    ) -> Result<oneshot::Receiver<Report>, QueryError> {
        if self.single.len() >= MAX_WAITERS {
            // Callers that gave up leave closed senders; sweep them first.
            self.single.retain(|_, tx| !tx.is_closed());
            if self.single.len() >= MAX_WAITERS {
                return Err(QueryError::Busy);
            }
        }
        let (tx, rx) = oneshot::channel();
        self.single.insert((device.to_owned(), sn), tx);
        Ok(rx)
    }

    /// A catalog page; `false` when nobody asked (e.g. the initial query).
    pub fn catalog_page(
        &mut self,
        device: &str,
        sn: u32,
        sum: Option<u32>,
        items: Vec<CatalogItem>,
    ) -> bool {
        self.catalogs.push(device, sn, sum, items)
    }

    /// Hand a report to whoever waits for it; `false` when nobody does.
    /// Answers are matched on the device that sent them, since the
    /// DeviceID inside is often the channel we asked about.
    pub fn deliver(&mut self, device: &str, report: Report) -> bool {
        let sn = match &report {
            Report::RecordInfo(p) => {
                let p = p.clone();
                return self.records.push(device, p.sn, p.sum_num, p.items);
            }
            Report::PresetList(p) => {
                let p = p.clone();
                return self.presets.push(device, p.sn, p.sum_num, p.items);
            }
            Report::DeviceStatus(s) => s.sn,
            Report::ConfigDownload(c) => c.sn,
            Report::Result { sn, .. } => *sn,
            Report::Alarm(_) | Report::MediaStatus { .. } | Report::SnapshotFinished { .. } => {
                return false;
            }
        };
        match self.single.remove(&(device.to_owned(), sn)) {
            Some(tx) => tx.send(report).is_ok(),
            None => false,
        }
    }

    pub fn expire(&mut self, now: Instant) {
        self.catalogs.expire(now);
        self.records.expire(now);
        self.presets.expire(now);
    }

    /// The caller gave up (timeout, send failure).
    pub fn cancel(&mut self, device: &str, sn: u32) {
        self.catalogs.cancel(device, sn);
        self.records.cancel(device, sn);
        self.presets.cancel(device, sn);
        self.single.remove(&(device.to_owned(), sn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb28181::reports::{DeviceStatus, RecordInfoPage};

    #[test]
    fn pages_and_single_answers_reach_their_waiters() {
        let t0 = Instant::now();
        let mut x = Exchanges::new();
        let mut rx = x
            .expect_records("dev", 4, t0, Duration::from_secs(5))
            .unwrap();
        let page = |n: usize| {
            Report::RecordInfo(RecordInfoPage {
                sn: 4,
                device_id: "chan".into(),
                sum_num: Some(3),
                items: vec![RecordItem::default(); n],
                ..Default::default()
            })
        };
        assert!(x.deliver("dev", page(2)));
        assert!(rx.try_recv().is_err(), "not complete yet");
        assert!(x.deliver("dev", page(1)));
        let done = rx.try_recv().unwrap();
        assert_eq!((done.items.len(), done.partial), (3, false));
        // Same SN from another device is not ours.
        assert!(!x.deliver("other", page(1)));

        let mut one = x.expect_one("dev", 9).unwrap();
        let status = Report::DeviceStatus(DeviceStatus {
            sn: 9,
            device_id: "dev".into(),
            online: Some("ONLINE".into()),
            ..Default::default()
        });
        assert!(x.deliver("dev", status.clone()));
        assert_eq!(one.try_recv().unwrap(), status);
    }

    #[test]
    fn lost_pages_end_partial_at_the_deadline() {
        let t0 = Instant::now();
        let mut x = Exchanges::new();
        let mut rx = x
            .expect_catalog("dev", 1, t0, Duration::from_secs(2))
            .unwrap();
        let item = CatalogItem {
            device_id: "c1".into(),
            ..Default::default()
        };
        assert!(x.catalog_page("dev", 1, Some(2), vec![item]));
        x.expire(t0 + Duration::from_secs(1));
        assert!(rx.try_recv().is_err());
        x.expire(t0 + Duration::from_secs(2));
        let done = rx.try_recv().unwrap();
        assert!(done.partial);
        assert_eq!(done.items.len(), 1);
    }
}
