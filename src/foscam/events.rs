//! Alarm events a camera reported, kept per camera for the API.
//!
//! A bounded list for now; a shared event feed (API, SSE, webhook) can
//! subscribe here by turning [`EventLog::push`] into a publish as well.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::proto::AlarmKind;

/// Events kept per camera; older ones are dropped.
pub const MAX_EVENTS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlarmEvent {
    /// Unix seconds when the gateway received it.
    pub time: u64,
    pub kind: AlarmKind,
    /// The motion rectangle some firmware reports; zeros otherwise.
    pub area: [i16; 4],
}

#[derive(Debug)]
pub struct EventLog {
    events: Mutex<VecDeque<AlarmEvent>>,
    /// Live copy of every alarm, for the gateway-wide event feed; this
    /// module does not know who listens.
    live: tokio::sync::broadcast::Sender<AlarmEvent>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            events: Mutex::default(),
            live: tokio::sync::broadcast::channel(64).0,
        }
    }
}

impl EventLog {
    pub fn push(&self, event: AlarmEvent) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(event.clone());
        // No listener is fine: the list above still has it.
        let _ = self.live.send(event);
    }

    /// Alarms as they arrive.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AlarmEvent> {
        self.live.subscribe()
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<AlarmEvent> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events() {
        let log = EventLog::default();
        for t in 0..(MAX_EVENTS as u64 + 5) {
            log.push(AlarmEvent {
                time: t,
                kind: AlarmKind::Motion,
                area: [0; 4],
            });
        }
        let list = log.list();
        assert_eq!(list.len(), MAX_EVENTS);
        assert_eq!(list[0].time, 5);
        assert_eq!(list.last().unwrap().time, MAX_EVENTS as u64 + 4);
    }
}
