//! An upper platform's catalog subscription (GB/T 28181-2016 §9.7.1): what
//! it last knew of each exposed channel, and the changes since, which go
//! up as NOTIFY items (ON, OFF, ADD, DEL).
//!
//! Sans-IO: channel lists and `now` in, changes out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::answers::ExposedChannel;

/// Longest lifetime granted to a subscription.
pub const MAX_EXPIRES: Duration = Duration::from_secs(86_400);
/// Subscriptions one upstream may hold (one per SUBSCRIBE dialog).
pub const MAX_SUBSCRIPTIONS: usize = 8;

/// One catalog subscription dialog.
#[derive(Debug, Clone)]
pub struct CatalogSubscription {
    pub call_id: String,
    /// Their From (URI and tag), our NOTIFY's To.
    pub their_uri: String,
    pub their_tag: String,
    /// Where NOTIFY goes.
    pub target: SocketAddr,
    pub expires_at: Instant,
    pub cseq: u32,
    /// Channel id → (channel, online) as last told.
    known: BTreeMap<String, (ExposedChannel, bool)>,
}

impl CatalogSubscription {
    pub fn new(
        call_id: String,
        their_uri: String,
        their_tag: String,
        target: SocketAddr,
        expires_at: Instant,
        now: &[ExposedChannel],
    ) -> Self {
        Self {
            call_id,
            their_uri,
            their_tag,
            target,
            expires_at,
            cseq: 0,
            known: now
                .iter()
                .map(|c| (c.id.clone(), (c.clone(), c.online)))
                .collect(),
        }
    }

    /// What changed since the last call, in channel-id order; the new list
    /// becomes what the subscriber knows.
    pub fn changes(&mut self, now: &[ExposedChannel]) -> Vec<(ExposedChannel, &'static str)> {
        let mut out = Vec::new();
        let current: BTreeMap<&str, &ExposedChannel> =
            now.iter().map(|c| (c.id.as_str(), c)).collect();
        for (id, (old, _)) in &self.known {
            if !current.contains_key(id.as_str()) {
                out.push((old.clone(), "DEL"));
            }
        }
        for (id, c) in &current {
            match self.known.get(*id) {
                None => out.push(((*c).clone(), "ADD")),
                Some((_, was_online)) if *was_online != c.online => {
                    out.push(((*c).clone(), if c.online { "ON" } else { "OFF" }));
                }
                Some(_) => {}
            }
        }
        self.known = now
            .iter()
            .map(|c| (c.id.clone(), (c.clone(), c.online)))
            .collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(id: &str, online: bool) -> ExposedChannel {
        ExposedChannel {
            id: id.into(),
            name: id.into(),
            manufacturer: String::new(),
            model: String::new(),
            online,
            stream: format!("foscam/{id}"),
            ptz: false,
        }
    }

    #[test]
    fn changes_are_told_once_each() {
        let now = Instant::now();
        let mut sub = CatalogSubscription::new(
            "c".into(),
            "sip:1@2".into(),
            "t".into(),
            "127.0.0.1:5060".parse().unwrap(),
            now,
            &[ch("a", true), ch("b", true), ch("c", false)],
        );
        assert!(
            sub.changes(&[ch("a", true), ch("b", true), ch("c", false)])
                .is_empty()
        );
        let got: Vec<(String, &str)> = sub
            .changes(&[ch("a", false), ch("c", true), ch("d", true)])
            .into_iter()
            .map(|(c, e)| (c.id, e))
            .collect();
        assert_eq!(
            got,
            [
                ("b".to_owned(), "DEL"),
                ("a".to_owned(), "OFF"),
                ("c".to_owned(), "ON"),
                ("d".to_owned(), "ADD")
            ]
        );
        assert!(
            sub.changes(&[ch("a", false), ch("c", true), ch("d", true)])
                .is_empty()
        );
    }
}
