//! The event log behind `GET /api/v1/events`: device alarms (GB/T
//! 28181-2016 §9.4, A.2.5.3) and other notable device happenings, kept in a
//! bounded ring so memory stays flat however chatty a device is; the oldest
//! events fall off first and are counted.
//!
//! Sans-IO: the caller stamps events with wall-clock seconds.

use std::collections::VecDeque;

use serde::Serialize;

use super::reports::AlarmNotify;

/// Default ring size.
pub const DEFAULT_CAPACITY: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Monotonic across the process; clients resume with `?since=`.
    pub seq: u64,
    /// Unix seconds when we received it.
    pub received: u64,
    pub device_id: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Alarm(AlarmNotify),
    /// A playback or download reached the end of the file (NotifyType 121).
    MediaEnd {
        channel: String,
    },
    /// An alarm from a camera of another protocol (e.g. Foscam), so one
    /// feed carries every camera's alarms.
    CameraAlarm {
        /// The protocol: `foscam`.
        source: &'static str,
        /// What the camera reported (`motion`, `stop`, `external_input`, …).
        alarm: String,
        /// Motion rectangle, when the camera reports one.
        area: Option<[i16; 4]>,
    },
    /// An event of a device another cluster node holds, as that node
    /// recorded it (read from the cluster's Redis Stream).
    Cluster {
        node: String,
        event: serde_json::Value,
    },
}

pub struct EventRing {
    events: VecDeque<Event>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
}

impl EventRing {
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY)),
            capacity: capacity.max(1),
            next_seq: 1,
            dropped: 0,
        }
    }

    /// Record an event and return it with its sequence number.
    pub fn push(&mut self, device_id: &str, kind: EventKind, received: u64) -> Event {
        if self.events.len() == self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        let e = Event {
            seq: self.next_seq,
            received,
            device_id: device_id.to_owned(),
            kind,
        };
        self.next_seq += 1;
        self.events.push_back(e.clone());
        e
    }

    /// Events with `seq > since`, oldest first, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.seq > since)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Events pushed out of the ring so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(sn: u32) -> EventKind {
        EventKind::Alarm(AlarmNotify {
            sn,
            ..Default::default()
        })
    }

    #[test]
    fn ring_keeps_the_newest_and_resumes_by_seq() {
        let mut r = EventRing::new(3);
        for sn in 1..=5 {
            r.push("d", alarm(sn), 100 + u64::from(sn));
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.dropped(), 2);
        let all = r.since(0, 10);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(r.since(4, 10).len(), 1);
        assert_eq!(r.since(0, 2).len(), 2);
        let json = serde_json::to_value(&all[2]).unwrap();
        assert_eq!(json["type"], "alarm");
        assert_eq!(json["sn"], 5);
        assert_eq!(json["received"], 105);
    }

    #[test]
    fn an_alarm_event_names_the_sender_and_the_alarming_channel_under_distinct_keys() {
        let mut r = EventRing::new(3);
        let kind = EventKind::Alarm(AlarmNotify {
            sn: 7,
            device_id: "34020000001310000001".into(),
            ..Default::default()
        });
        let event = r.push("34020000001320000001", kind, 100);
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(text.matches("\"device_id\"").count(), 1, "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["device_id"], "34020000001320000001");
        assert_eq!(json["channel"], "34020000001310000001");
    }
}
