//! Answers that arrive over several MESSAGEs (GB/T 28181-2016 A.2.6.4
//! Catalog, A.2.6.6 RecordInfo, and PresetQuery): devices split long lists
//! into pages that share the query's `SN`, each carrying `SumNum`, the
//! total. A query is complete when `SumNum` items have arrived; if pages
//! are lost it ends at its deadline with what did arrive, marked partial.
//!
//! Sans-IO: [`Aggregator::start`] when the query is sent, [`Aggregator::push`]
//! per page, [`Aggregator::expire`] with `now` on a timer. Bounded: at most
//! [`MAX_PENDING`] queries and [`MAX_ITEMS`] items per query.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most queries waiting for pages at once.
pub const MAX_PENDING: usize = 1024;
/// Most items kept per query, whatever `SumNum` claims.
pub const MAX_ITEMS: usize = 10_000;

/// A finished query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed<T> {
    pub device_id: String,
    pub sn: u32,
    pub items: Vec<T>,
    /// The total the device announced (0 when it never said).
    pub sum_num: u32,
    /// Fewer than `sum_num` items arrived before the deadline.
    pub partial: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("too many queries waiting for answers ({MAX_PENDING})")]
    Full,
}

impl AggregateError {
    pub fn kind(&self) -> &'static str {
        "aggregate_full"
    }
}

struct Pending<T> {
    items: Vec<T>,
    sum_num: Option<u32>,
    deadline: Instant,
}

/// Pending multi-page queries keyed by (device, SN).
pub struct Aggregator<T> {
    pending: HashMap<(String, u32), Pending<T>>,
}

impl<T> Default for Aggregator<T> {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
        }
    }
}

impl<T> Aggregator<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Expect pages for (`device_id`, `sn`) until `now + timeout`.
    pub fn start(
        &mut self,
        device_id: &str,
        sn: u32,
        now: Instant,
        timeout: Duration,
    ) -> Result<(), AggregateError> {
        if self.pending.len() >= MAX_PENDING {
            return Err(AggregateError::Full);
        }
        self.pending.insert(
            (device_id.to_owned(), sn),
            Pending {
                items: Vec::new(),
                sum_num: None,
                deadline: now + timeout,
            },
        );
        Ok(())
    }

    /// Whether a page for (`device_id`, `sn`) would be taken.
    pub fn is_pending(&self, device_id: &str, sn: u32) -> bool {
        self.pending.contains_key(&(device_id.to_owned(), sn))
    }

    /// Add one page. Returns the completed query when this page brought
    /// the count to `sum_num`; `None` while more are due or when nobody
    /// asked (an unsolicited page is the caller's to handle).
    pub fn push(
        &mut self,
        device_id: &str,
        sn: u32,
        sum_num: Option<u32>,
        items: Vec<T>,
    ) -> Option<Completed<T>> {
        let key = (device_id.to_owned(), sn);
        let p = self.pending.get_mut(&key)?;
        if sum_num.is_some() {
            p.sum_num = sum_num;
        }
        let room = MAX_ITEMS.saturating_sub(p.items.len());
        p.items.extend(items.into_iter().take(room));
        let want = p.sum_num.unwrap_or(0) as usize;
        // SumNum 0 (or absent) means the first page is the whole answer.
        if p.items.len() >= want.min(MAX_ITEMS) {
            let done = self.pending.remove(&key)?;
            return Some(Completed {
                device_id: key.0,
                sn,
                sum_num: done.sum_num.unwrap_or(0),
                partial: false,
                items: done.items,
            });
        }
        None
    }

    /// End the queries whose deadline passed, with what they have.
    pub fn expire(&mut self, now: Instant) -> Vec<Completed<T>> {
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| {
                let p = self.pending.remove(&k)?;
                Some(Completed {
                    sum_num: p.sum_num.unwrap_or(0),
                    partial: true,
                    items: p.items,
                    device_id: k.0,
                    sn: k.1,
                })
            })
            .collect()
    }

    /// Forget a query (its caller gave up).
    pub fn cancel(&mut self, device_id: &str, sn: u32) {
        self.pending.remove(&(device_id.to_owned(), sn));
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb28181::manscdp::{Message, Response, decode_body};
    use crate::gb28181::reports::{Report, classify};

    fn catalog_page(sn: u32, sum: u32, ids: &[&str]) -> String {
        let items: String = ids
            .iter()
            .map(|id| format!("<Item><DeviceID>{id}</DeviceID><Status>ON</Status></Item>"))
            .collect();
        format!(
            r#"<?xml version="1.0" encoding="GB2312"?><Response><CmdType>Catalog</CmdType><SN>{sn}</SN><DeviceID>34020000001320000001</DeviceID><SumNum>{sum}</SumNum><DeviceList Num="{n}">{items}</DeviceList></Response>"#,
            n = ids.len()
        )
    }

    #[test]
    fn catalog_in_three_messages() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new();
        let dev = "34020000001320000001";
        agg.start(dev, 11, t0, Duration::from_secs(5)).unwrap();
        let pages = [
            catalog_page(11, 5, &["c1", "c2"]),
            catalog_page(11, 5, &["c3", "c4"]),
            catalog_page(11, 5, &["c5"]),
        ];
        let mut done = None;
        for (i, page) in pages.iter().enumerate() {
            let Message::Response(Response::Catalog(c)) = decode_body(page.as_bytes()).unwrap()
            else {
                panic!()
            };
            let ids = c.items.into_iter().map(|i| i.device_id).collect();
            let r = agg.push(&c.device_id, c.sn, c.sum_num, ids);
            if i < 2 {
                assert!(r.is_none(), "page {i} completed early");
            } else {
                done = r;
            }
        }
        let done = done.expect("complete after the third page");
        assert_eq!(done.items, ["c1", "c2", "c3", "c4", "c5"]);
        assert!(!done.partial);
        assert!(agg.is_empty());
        // A late duplicate page is not taken by anyone.
        assert!(agg.push(dev, 11, Some(5), vec!["c5".to_owned()]).is_none());
    }

    #[test]
    fn record_info_over_two_pages_and_a_lost_page_times_out() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new();
        agg.start("c", 1, t0, Duration::from_secs(5)).unwrap();
        agg.start("c", 2, t0, Duration::from_secs(5)).unwrap();
        let page = |sn: u32, n: u32| {
            let items: String = (0..n)
                .map(|i| {
                    format!(
                        "<Item><StartTime>2024-05-01T0{i}:00:00</StartTime><EndTime>2024-05-01T0{i}:30:00</EndTime></Item>"
                    )
                })
                .collect();
            let xml = format!(
                "<Response><CmdType>RecordInfo</CmdType><SN>{sn}</SN><DeviceID>c</DeviceID><SumNum>3</SumNum><RecordList Num=\"{n}\">{items}</RecordList></Response>"
            );
            let el = crate::gb28181::manscdp::decode_tree(xml.as_bytes()).unwrap();
            match classify(&el).unwrap() {
                Some(Report::RecordInfo(p)) => p,
                other => panic!("{other:?}"),
            }
        };
        let a = page(1, 2);
        assert!(agg.push(&a.device_id, a.sn, a.sum_num, a.items).is_none());
        let b = page(1, 1);
        let done = agg.push(&b.device_id, b.sn, b.sum_num, b.items).unwrap();
        assert_eq!(done.items.len(), 3);
        assert_eq!(done.items[2].start_time, "2024-05-01T00:00:00");
        // SN 2 got one page of three items' worth, then nothing.
        let c = page(2, 1);
        assert!(agg.push(&c.device_id, c.sn, c.sum_num, c.items).is_none());
        assert!(agg.expire(t0 + Duration::from_secs(4)).is_empty());
        let expired = agg.expire(t0 + Duration::from_secs(5));
        assert_eq!(expired.len(), 1);
        assert!(expired[0].partial);
        assert_eq!((expired[0].sn, expired[0].sum_num), (2, 3));
        assert_eq!(expired[0].items.len(), 1);
    }

    #[test]
    fn empty_answer_completes_and_capacity_is_bounded() {
        let t0 = Instant::now();
        let mut agg: Aggregator<u8> = Aggregator::new();
        agg.start("d", 1, t0, Duration::from_secs(1)).unwrap();
        let done = agg.push("d", 1, Some(0), vec![]).unwrap();
        assert!(done.items.is_empty() && !done.partial);
        for sn in 0..MAX_PENDING as u32 {
            agg.start("d", sn, t0, Duration::from_secs(1)).unwrap();
        }
        assert_eq!(
            agg.start("d", u32::MAX, t0, Duration::from_secs(1)),
            Err(AggregateError::Full)
        );
    }
}
