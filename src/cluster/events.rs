//! Events (alarms, end of recording …) cluster-wide through one Redis
//! Stream: each node appends the events it records (`XADD … MAXLEN ~ N`,
//! with its node id) and reads the stream from where it was (`XREAD
//! BLOCK`), taking the other nodes' entries into its own feed, so SSE and
//! webhooks on every node see every event, each node's consumers once.
//! A node's own entries are skipped: it recorded them already.
//!
//! Each direction has its own connection: a blocking read would otherwise
//! hold up the appends queued behind it on a multiplexed connection.

use std::time::Duration;

use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::store::Store;
use crate::metrics;

/// How long one XREAD waits for new entries (under the command timeout).
const BLOCK: Duration = Duration::from_millis(500);
/// Entries taken per read.
const COUNT: usize = 200;
/// Pause after a failed read or append (Redis down).
const RETRY: Duration = Duration::from_secs(1);
/// Largest event accepted from the stream.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Takes another node's event: (origin node, event JSON).
pub type Deliver = Box<dyn Fn(&str, serde_json::Value) + Send + Sync>;

/// One entry of an XREAD reply: id, origin node, event JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub node: String,
    pub event: serde_json::Value,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an `XREAD … STREAMS key id` reply (RESP2 arrays or a
/// RESP3 map); malformed entries are skipped, a nil reply is none.
pub fn parse_xread(reply: &Value) -> Vec<Entry> {
    let streams: Vec<&Value> = match reply {
        Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => Some(&kv[1]),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let (Some(id), Some(Value::Array(fields))) =
                (parts.first().and_then(text), parts.get(1))
            else {
                continue;
            };
            let mut node = None;
            let mut event = None;
            for pair in fields.chunks(2) {
                match (pair.first().and_then(text).as_deref(), pair.get(1)) {
                    (Some("node"), Some(v)) => node = text(v),
                    (Some("event"), Some(v)) => {
                        event = text(v)
                            .filter(|t| t.len() <= MAX_EVENT_BYTES)
                            .and_then(|t| serde_json::from_str(&t).ok())
                    }
                    _ => {}
                }
            }
            if let (Some(node), Some(event)) = (node, event) {
                out.push(Entry { id, node, event });
            }
        }
    }
    out
}

/// Append this node's events (from `local`) to the stream until shutdown.
pub(super) async fn publish(
    store: Store,
    node: String,
    max_len: usize,
    mut local: mpsc::Receiver<serde_json::Value>,
    shutdown: CancellationToken,
) {
    let key = store.keys().events();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = local.recv() => match e { Some(e) => e, None => break },
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(max_len)
            .arg("*")
            .arg("node")
            .arg(&node)
            .arg("event")
            .arg(event.to_string());
        if let Err(e) = store.run::<Value>("xadd", &cmd).await {
            metrics::get()
                .cluster_events
                .get_or_create(&metrics::label("outcome", "publish_failed"))
                .inc();
            debug!(error = %e, "cluster: event not published");
        } else {
            metrics::get()
                .cluster_events
                .get_or_create(&metrics::label("outcome", "published"))
                .inc();
        }
    }
}

/// Read the stream from now on; hand other nodes' events to `deliver`.
pub(super) async fn subscribe(
    store: Store,
    node: String,
    deliver: Deliver,
    shutdown: CancellationToken,
) {
    let key = store.keys().events();
    // "$": only entries added after the first read starts.
    let mut last = "$".to_owned();
    loop {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last);
        let reply = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = store.run::<Value>("xread", &cmd) => r,
        };
        match reply {
            Ok(v) => {
                for entry in parse_xread(&v) {
                    last = entry.id.clone();
                    if entry.node == node {
                        continue;
                    }
                    metrics::get()
                        .cluster_events
                        .get_or_create(&metrics::label("outcome", "received"))
                        .inc();
                    deliver(&entry.node, entry.event);
                }
            }
            Err(e) => {
                // The stream may be gone with Redis: read from the new end.
                last = "$".to_owned();
                warn!(error = %e, "cluster: event stream read failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_replies_give_their_entries_and_skip_garbage() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("cg:events"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("node"),
                        bulk("node-2"),
                        bulk("event"),
                        bulk(r#"{"device_id":"d","type":"camera_alarm"}"#),
                    ]),
                ]),
                // Not JSON: skipped.
                Value::Array(vec![
                    bulk("2-0"),
                    Value::Array(vec![bulk("node"), bulk("n"), bulk("event"), bulk("{")]),
                ]),
                Value::Int(7),
            ]),
        ])]);
        let got = parse_xread(&reply);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "1-0");
        assert_eq!(got[0].node, "node-2");
        assert_eq!(got[0].event["type"], "camera_alarm");
        assert!(parse_xread(&Value::Nil).is_empty());
    }
}
