//! Recorded media as the stream table names it: a range of wall-clock
//! time asked for with `?start=…&end=…` (ISO 8601 without zone, see
//! [`crate::media::datetime`]) on any stream path, and the speeds a viewer
//! may ask a recording to play at.
//!
//! The RTSP path `gb/{dev}/{ch}?start=…&end=…` is named internally
//! `gb/{dev}/{ch}/playback/{start}-{end}` with both times as Unix seconds
//! ([`playback_key`]), so two viewers of the same range share one session
//! and a live viewer of the channel never does.
//!
//! These live in the stream table, below both egress (which parses viewer
//! URLs) and the adapters (which fetch the recording), so neither has to
//! import the other.

use crate::media::datetime;

/// Playback speeds a viewer may ask for. They are the GB/T 28181-2016
/// §9.8 MANSRTSP `Scale` values, the strictest set of any adapter.
pub const SCALES: [f32; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// A requested recording range, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackRange {
    pub start: u64,
    pub end: u64,
}

/// Read `start=…&end=…` (ISO 8601 without zone, `:` possibly
/// percent-encoded) from a stream URL's query string.
pub fn parse_range(query: &str) -> Option<PlaybackRange> {
    let mut start = None;
    let mut end = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=')?;
        let v = v.replace("%3A", ":").replace("%3a", ":");
        match k {
            "start" => start = datetime::parse(&v),
            "end" => end = datetime::parse(&v),
            _ => {}
        }
    }
    let (start, end) = (start?, end?);
    (end > start).then_some(PlaybackRange { start, end })
}

/// The internal stream key of a playback: `gb/{dev}/{ch}/playback/{start}-{end}`.
pub fn playback_key(device: &str, channel: &str, range: PlaybackRange) -> String {
    format!(
        "gb/{device}/{channel}/playback/{}-{}",
        range.start, range.end
    )
}

/// The range back out of a key's last segment.
pub fn range_of_key_segment(segment: &str) -> Option<PlaybackRange> {
    let (a, b) = segment.split_once('-')?;
    let range = PlaybackRange {
        start: a.parse().ok()?,
        end: b.parse().ok()?,
    };
    (range.end > range.start).then_some(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_query_to_canonical_key_and_back() {
        let r = parse_range("start=2024-05-01T08:00:00&end=2024-05-01T08%3A10%3A00").unwrap();
        assert_eq!(r.end - r.start, 600);
        let key = playback_key("d", "c", r);
        assert_eq!(key, format!("gb/d/c/playback/{}-{}", r.start, r.end));
        assert_eq!(
            range_of_key_segment(key.rsplit('/').next().unwrap()),
            Some(r)
        );
        assert_eq!(
            parse_range("start=2024-05-01T08:10:00&end=2024-05-01T08:00:00"),
            None
        );
        assert_eq!(parse_range("start=x&end=y"), None);
        assert_eq!(range_of_key_segment("5-5"), None);
    }
}
