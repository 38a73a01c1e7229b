//! The device-table change feed: every device write or delete appends
//! `(v, id)` to a Redis Stream in the same Lua script that bumps the table
//! version `v`, so the stream holds consecutive versions. A node reads the
//! entries after the last one it applied and re-fetches only those
//! devices; it re-reads the whole table only when it starts, when Redis
//! lost or trimmed entries it had not read (a gap in the versions), and
//! rarely for records that expired on their own (no entry for those).
//! Without the feed every node re-read every record whenever any device
//! changed: quadratic in the number of devices while they register.

use std::collections::BTreeSet;

use redis::Value;

/// One entry of the change stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Stream entry id (`ms-seq`).
    pub id: String,
    /// The table version this change made.
    pub version: i64,
    /// The device written or deleted.
    pub device: String,
}

/// Where a node's view of the table stands in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Last entry applied; "0-0" before the stream's first entry.
    pub id: String,
    pub version: i64,
}

/// What to do with the entries read after our position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// Re-fetch these devices, then stand at `to`.
    Apply {
        devices: BTreeSet<String>,
        to: Position,
    },
    /// Entries are missing (trimmed, or Redis restarted and counts anew):
    /// only a whole re-read is right.
    Gap,
}

/// Decide from the entries after `at` (in stream order, as XREAD gives
/// them) whether they continue our view without a hole.
pub fn catch_up(at: &Position, entries: &[Change]) -> CatchUp {
    let Some(last) = entries.last() else {
        // The head moved but nothing follows our id: the stream was
        // replaced (Redis restart) or trimmed past us.
        return CatchUp::Gap;
    };
    let consecutive = (at.version + 1..)
        .zip(entries)
        .all(|(expected, c)| c.version == expected);
    if !consecutive {
        return CatchUp::Gap;
    }
    CatchUp::Apply {
        devices: entries.iter().map(|c| c.device.clone()).collect(),
        to: Position {
            id: last.id.clone(),
            version: last.version,
        },
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an `XRANGE` / `XREVRANGE` reply (an array of entries)
/// or an `XREAD` reply (entries per stream, RESP2 arrays or a RESP3 map).
/// Malformed entries are skipped; nil is none.
pub fn parse_entries(reply: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    collect(reply, &mut out);
    out
}

fn collect(v: &Value, out: &mut Vec<Change>) {
    match v {
        Value::Array(items) => {
            for item in items {
                match entry(item) {
                    Some(c) => out.push(c),
                    // An XREAD `[key, entries]` pair: read its entries.
                    None => {
                        if let Value::Array(kv) = item
                            && kv.len() == 2
                            && matches!(kv[1], Value::Array(_))
                        {
                            collect(&kv[1], out);
                        }
                    }
                }
            }
        }
        Value::Map(pairs) => {
            for (_, entries) in pairs {
                collect(entries, out);
            }
        }
        _ => {}
    }
}

fn entry(v: &Value) -> Option<Change> {
    let Value::Array(parts) = v else { return None };
    let (Some(id), Some(Value::Array(fields))) = (parts.first().and_then(text), parts.get(1))
    else {
        return None;
    };
    let mut version = None;
    let mut device = None;
    for pair in fields.chunks(2) {
        match (pair.first().and_then(text).as_deref(), pair.get(1)) {
            (Some("v"), Some(v)) => version = text(v).and_then(|t| t.parse().ok()),
            (Some("id"), Some(v)) => device = text(v),
            _ => {}
        }
    }
    Some(Change {
        id,
        version: version?,
        device: device?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, version: i64, device: &str) -> Change {
        Change {
            id: id.into(),
            version,
            device: device.into(),
        }
    }

    fn at(id: &str, version: i64) -> Position {
        Position {
            id: id.into(),
            version,
        }
    }

    #[test]
    fn consecutive_entries_are_applied_once_per_device() {
        let plan = catch_up(
            &at("5-0", 7),
            &[
                change("6-0", 8, "a"),
                change("6-1", 9, "b"),
                change("7-0", 10, "a"),
            ],
        );
        assert_eq!(
            plan,
            CatchUp::Apply {
                devices: ["a".to_string(), "b".to_string()].into(),
                to: at("7-0", 10),
            }
        );
    }

    #[test]
    fn a_missing_version_or_no_entries_means_a_full_read() {
        // Trimmed: the first entry after us is not our version + 1.
        assert_eq!(
            catch_up(&at("5-0", 7), &[change("9-0", 12, "a")]),
            CatchUp::Gap
        );
        // A hole in the middle.
        assert_eq!(
            catch_up(
                &at("5-0", 7),
                &[change("6-0", 8, "a"), change("6-1", 10, "b")]
            ),
            CatchUp::Gap
        );
        // Redis restarted: counting starts again at 1.
        assert_eq!(
            catch_up(&at("5-0", 7), &[change("9-0", 1, "a")]),
            CatchUp::Gap
        );
        assert_eq!(catch_up(&at("5-0", 7), &[]), CatchUp::Gap);
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn raw(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn xrange_and_xread_replies_give_their_entries_and_skip_garbage() {
        let entries = Value::Array(vec![
            raw("1-0", &["v", "1", "id", "dev-a"]),
            raw("1-1", &["v", "x", "id", "dev-b"]),
            raw("1-2", &["id", "dev-c"]),
            Value::Int(3),
            raw("2-0", &["id", "dev-d", "v", "2"]),
        ]);
        let want = vec![change("1-0", 1, "dev-a"), change("2-0", 2, "dev-d")];
        assert_eq!(parse_entries(&entries), want);
        let xread = Value::Array(vec![Value::Array(vec![
            bulk("cg:devchanges"),
            entries.clone(),
        ])]);
        assert_eq!(parse_entries(&xread), want);
        let resp3 = Value::Map(vec![(bulk("cg:devchanges"), entries)]);
        assert_eq!(parse_entries(&resp3), want);
        assert_eq!(parse_entries(&Value::Nil), Vec::new());
    }
}
