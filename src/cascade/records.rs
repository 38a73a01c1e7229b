//! RecordInfo from an upper platform (GB/T 28181-2016 §9.7.1): the query
//! (A.2.4.5) read, and the answer (A.2.6.6) written as pages like the
//! Catalog's — each page holds as many items as fit
//! [`CATALOG_BODY_BUDGET`](super::answers::CATALOG_BODY_BUDGET), states the
//! total in `SumNum` and is GB2312-encoded, so every MESSAGE fits one
//! datagram. `DeviceID` is the channel id the upper platform asked about,
//! in the document and in each item.
//!
//! Sans-IO: bytes in, bodies out.

use std::fmt::Write as _;

use super::answers::{element, escape, paged};
use crate::media::datetime;
use crate::streams::control::RecordEntry;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordQueryError {
    #[error("not a RecordInfo query")]
    NotRecordInfo,
    #[error("RecordInfo without {0}")]
    Missing(&'static str),
    #[error("RecordInfo with EndTime not after StartTime")]
    EmptyRange,
}

impl RecordQueryError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotRecordInfo => "not_record_info",
            Self::Missing(_) => "query_incomplete",
            Self::EmptyRange => "record_range_empty",
        }
    }
}

/// A RecordInfo query: which channel, which range (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordQuery {
    pub sn: u32,
    pub device_id: String,
    pub start: u64,
    pub end: u64,
}

/// Read a `<Query><CmdType>RecordInfo</CmdType>…` document.
pub fn parse_record_query(body: &[u8]) -> Result<RecordQuery, RecordQueryError> {
    let text = String::from_utf8_lossy(body);
    if !text.contains("<Query>") || element(&text, "CmdType") != Some("RecordInfo") {
        return Err(RecordQueryError::NotRecordInfo);
    }
    let sn = element(&text, "SN")
        .and_then(|s| s.parse().ok())
        .ok_or(RecordQueryError::Missing("SN"))?;
    let device_id = element(&text, "DeviceID")
        .filter(|d| !d.is_empty())
        .ok_or(RecordQueryError::Missing("DeviceID"))?
        .to_owned();
    let start = element(&text, "StartTime")
        .and_then(datetime::parse)
        .ok_or(RecordQueryError::Missing("StartTime"))?;
    let end = element(&text, "EndTime")
        .and_then(datetime::parse)
        .ok_or(RecordQueryError::Missing("EndTime"))?;
    if end <= start {
        return Err(RecordQueryError::EmptyRange);
    }
    Ok(RecordQuery {
        sn,
        device_id,
        start,
        end,
    })
}

fn item(channel_id: &str, r: &RecordEntry) -> String {
    let mut s = String::with_capacity(300);
    let _ = write!(s, "<Item>\r\n<DeviceID>{channel_id}</DeviceID>\r\n");
    let mut opt = |tag: &str, v: Option<&str>| {
        if let Some(v) = v {
            let _ = write!(s, "<{tag}>{}</{tag}>\r\n", escape(v));
        }
    };
    opt("Name", r.name.as_deref());
    opt("FilePath", r.file_path.as_deref());
    opt("Address", r.address.as_deref());
    opt("StartTime", Some(&r.start_time));
    opt("EndTime", Some(&r.end_time));
    let secrecy = r.secrecy.unwrap_or(0).to_string();
    opt("Secrecy", Some(&secrecy));
    // A.2.6.6: Type is required; a search that did not say is `time`.
    opt("Type", Some(r.record_type.as_deref().unwrap_or("time")));
    opt("RecorderID", r.recorder_id.as_deref());
    let size = r.file_size.map(|n| n.to_string());
    opt("FileSize", size.as_deref());
    s.push_str("</Item>\r\n");
    s
}

/// The RecordInfo answer pages for `channel_id` (named `name`): every
/// entry once, in order; one page with `SumNum` 0 when there are none.
pub fn record_pages(
    sn: u32,
    channel_id: &str,
    name: &str,
    entries: &[RecordEntry],
) -> Vec<Vec<u8>> {
    let items = entries.iter().map(|r| item(channel_id, r)).collect();
    let extra = format!("<Name>{}</Name>\r\n", escape(name));
    paged(
        "Response",
        "RecordInfo",
        sn,
        channel_id,
        &extra,
        "RecordList",
        items,
    )
}

#[cfg(test)]
mod tests {
    use super::super::answers::CATALOG_BODY_BUDGET;
    use super::*;

    const CH: &str = "34020000001310000001";

    #[test]
    fn query_is_read() {
        let xml = format!(
            "<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>42</SN>\r\n\
             <DeviceID>{CH}</DeviceID>\r\n<StartTime>2026-12-05T00:00:00</StartTime>\r\n\
             <EndTime>2026-12-05T01:00:00</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>all</Type>\r\n</Query>\r\n"
        );
        let q = parse_record_query(xml.as_bytes()).unwrap();
        assert_eq!(q.sn, 42);
        assert_eq!(q.device_id, CH);
        assert_eq!(q.end - q.start, 3600);
        assert_eq!(datetime::format(q.start), "2026-12-05T00:00:00");
        let swapped = xml.replace("T01:00:00", "T00:00:00");
        assert_eq!(
            parse_record_query(swapped.as_bytes()),
            Err(RecordQueryError::EmptyRange)
        );
        let no_end = xml.replace("<EndTime>", "<End>");
        assert_eq!(
            parse_record_query(no_end.as_bytes()),
            Err(RecordQueryError::Missing("EndTime"))
        );
        assert_eq!(
            parse_record_query(b"<Query><CmdType>Catalog</CmdType></Query>"),
            Err(RecordQueryError::NotRecordInfo)
        );
    }

    fn entry(i: u64) -> RecordEntry {
        RecordEntry {
            name: Some("大门 <东>".into()),
            file_path: Some(format!("/rec/{i}.mp4")),
            start_time: datetime::format(1_700_000_000 + i * 600),
            end_time: datetime::format(1_700_000_600 + i * 600),
            record_type: Some("alarm".into()),
            file_size: Some(1 << 33),
            ..RecordEntry::default()
        }
    }

    #[test]
    fn pages_fit_the_budget_and_carry_every_entry_once() {
        let entries: Vec<RecordEntry> = (0..9).map(entry).collect();
        let pages = record_pages(42, CH, "Camera 1", &entries);
        assert!(pages.len() >= 3, "{} pages", pages.len());
        let mut paths = Vec::new();
        for p in &pages {
            assert!(p.len() <= CATALOG_BODY_BUDGET, "{} bytes", p.len());
            let (text, _, bad) = encoding_rs::GBK.decode(p);
            assert!(!bad);
            assert!(text.contains("<CmdType>RecordInfo</CmdType>"), "{text}");
            assert!(text.contains("<SN>42</SN>") && text.contains("<SumNum>9</SumNum>"));
            assert!(text.contains(&format!(
                "<DeviceID>{CH}</DeviceID>\r\n<Name>Camera 1</Name>"
            )));
            let n = text.matches("<Item>").count();
            assert!(text.contains(&format!("<RecordList Num=\"{n}\">")));
            for part in text.split("<Item>").skip(1) {
                assert_eq!(element(part, "DeviceID"), Some(CH));
                assert_eq!(element(part, "Name"), Some("大门 &lt;东&gt;"));
                assert_eq!(element(part, "Type"), Some("alarm"));
                assert_eq!(element(part, "FileSize"), Some("8589934592"));
                paths.push(element(part, "FilePath").unwrap().to_owned());
            }
        }
        let want: Vec<String> = (0..9).map(|i| format!("/rec/{i}.mp4")).collect();
        assert_eq!(paths, want);
    }

    #[test]
    fn no_records_is_one_page_with_sum_zero() {
        let pages = record_pages(7, CH, "x", &[]);
        assert_eq!(pages.len(), 1);
        let text = String::from_utf8(pages[0].clone()).unwrap();
        assert!(text.contains("<SumNum>0</SumNum>") && text.contains("<RecordList Num=\"0\">"));
        assert!(text.contains("</RecordList>\r\n</Response>"));
    }
}
