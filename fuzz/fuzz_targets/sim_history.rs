#![no_main]
//! The simulated camera's record list and history pacing on arbitrary
//! query windows and MANSRTSP bodies: must never panic or loop unbounded.
use camgate::gb28181::mansrtsp::PlaybackCommand;
use camgate::sim::gb_device_extra::record_list_body;
use camgate::sim::history_stream::{Cursor, HistoryRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mid = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(text.len(), |(i, _)| i);
    let (a, b) = text.split_at(mid);
    let _ = record_list_body("1", "c", Some(a), Some(b));
    let mut nums = data.chunks(8).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    });
    let (start, end) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    let mut cursor = Cursor::new(&HistoryRequest { start, end, download: data.first() == Some(&1), speed: 4 });
    if let Ok((cmd, _)) = PlaybackCommand::parse(data) {
        cursor.apply(cmd);
    }
    let _ = (cursor.pts(), cursor.clip_index(150), cursor.frame_interval());
});
