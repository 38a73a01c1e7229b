//! Answers of the simulated device to the queries that arrived with GB28181
//! control (GB/T 28181-2016 A.2.6.7 ConfigDownload `BasicParam`, A.2.6.8
//! PresetQuery): fixed content, so tests can assert it through the API.

use crate::gb28181::manscdp::{XmlWriter, encode_body};

/// Presets the simulated camera reports: (id, name).
pub const PRESETS: [(&str, &str); 2] = [("1", "Gate"), ("2", "Yard")];
/// Missed keepalives before the simulated camera counts as offline.
pub const HEARTBEAT_COUNT: u32 = 3;

pub fn preset_body(sn: &str, target: &str) -> Vec<u8> {
    let mut w = XmlWriter::new();
    w.open("Response");
    w.leaf("CmdType", "PresetQuery");
    w.leaf("SN", sn);
    w.leaf("DeviceID", target);
    w.raw(&format!("<PresetList Num=\"{}\">\r\n", PRESETS.len()));
    for (id, name) in PRESETS {
        w.open("Item");
        w.leaf("PresetID", id);
        w.leaf("PresetName", name);
        w.close("Item");
    }
    w.close("PresetList");
    w.close("Response");
    encode_body(&w.finish())
}

pub fn basic_param_body(sn: &str, device_id: &str, heartbeat_secs: u64) -> Vec<u8> {
    let mut w = XmlWriter::new();
    w.open("Response");
    w.leaf("CmdType", "ConfigDownload");
    w.leaf("SN", sn);
    w.leaf("DeviceID", device_id);
    w.leaf("Result", "OK");
    w.open("BasicParam");
    w.leaf("Name", "camgate simulated camera");
    w.leaf("Expiration", "3600");
    w.leaf("HeartBeatInterval", &heartbeat_secs.max(1).to_string());
    w.leaf("HeartBeatCount", &HEARTBEAT_COUNT.to_string());
    w.close("BasicParam");
    w.close("Response");
    encode_body(&w.finish())
}

/// Longest record list the simulated camera answers with (one per hour).
pub const MAX_RECORDS: u64 = 48;

/// A.2.6.6 RecordInfo answer: the simulated camera "recorded" every whole
/// hour, so the list has one file per hour overlapping `[start, end)`
/// (GB times), each named by its hour; a query without a window gets none.
pub fn record_list_body(sn: &str, target: &str, start: Option<&str>, end: Option<&str>) -> Vec<u8> {
    use crate::media::datetime as gbtime;
    let window = start
        .and_then(gbtime::parse)
        .zip(end.and_then(gbtime::parse))
        .filter(|(s, e)| e > s);
    let hours: Vec<u64> = match window {
        Some((s, e)) => (s / 3600..e.div_ceil(3600))
            .take(MAX_RECORDS as usize)
            .collect(),
        None => Vec::new(),
    };
    let mut w = XmlWriter::new();
    w.open("Response");
    w.leaf("CmdType", "RecordInfo");
    w.leaf("SN", sn);
    w.leaf("DeviceID", target);
    w.leaf("Name", "camgate simulated camera");
    w.leaf("SumNum", &hours.len().to_string());
    w.raw(&format!("<RecordList Num=\"{}\">\r\n", hours.len()));
    for h in hours {
        let (from, to) = (h * 3600, (h + 1) * 3600);
        w.open("Item");
        w.leaf("DeviceID", target);
        w.leaf("Name", &format!("record-{h}"));
        w.leaf("FilePath", &format!("/sim/{h}.ps"));
        w.leaf("Address", "loopback");
        w.leaf("StartTime", &gbtime::format(from));
        w.leaf("EndTime", &gbtime::format(to));
        w.leaf("Secrecy", "0");
        w.leaf("Type", "time");
        w.close("Item");
    }
    w.close("RecordList");
    w.close("Response");
    encode_body(&w.finish())
}

/// A.2.5 MediaStatus notify: the file being played back or downloaded on
/// `channel` ended (NotifyType 121).
pub fn media_status_body(sn: u32, channel: &str) -> Vec<u8> {
    let mut w = XmlWriter::new();
    w.open("Notify");
    w.leaf("CmdType", "MediaStatus");
    w.leaf("SN", &sn.to_string());
    w.leaf("DeviceID", channel);
    w.leaf("NotifyType", "121");
    w.close("Notify");
    encode_body(&w.finish())
}

/// Description of the simulated camera's alarms.
pub const ALARM_DESCRIPTION: &str = "motion detected (simulated)";

pub fn alarm_body(sn: u32, channel: &str, time: &str) -> Vec<u8> {
    let mut w = XmlWriter::new();
    w.open("Notify");
    w.leaf("CmdType", "Alarm");
    w.leaf("SN", &sn.to_string());
    w.leaf("DeviceID", channel);
    w.leaf("AlarmPriority", "1");
    w.leaf("AlarmMethod", "5");
    w.leaf("AlarmTime", time);
    w.leaf("AlarmDescription", ALARM_DESCRIPTION);
    w.open("Info");
    w.leaf("AlarmType", "2");
    w.close("Info");
    w.close("Notify");
    encode_body(&w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb28181::manscdp::decode_tree;
    use crate::gb28181::reports::{Report, classify};

    #[test]
    fn alarm_body_reads_back_as_an_alarm() {
        let body = alarm_body(4, "34020000001310000001", "2024-05-01T08:00:05");
        let Ok(Some(Report::Alarm(a))) = classify(&decode_tree(&body).unwrap()) else {
            panic!()
        };
        assert_eq!(
            (
                a.sn,
                a.device_id.as_str(),
                a.priority,
                a.method,
                a.alarm_type
            ),
            (4, "34020000001310000001", Some(1), Some(5), Some(2))
        );
        assert_eq!(a.time.as_deref(), Some("2024-05-01T08:00:05"));
        assert_eq!(a.description.as_deref(), Some(ALARM_DESCRIPTION));
    }

    #[test]
    fn one_record_per_hour_of_the_window() {
        let body = record_list_body(
            "7",
            "34020000001310000001",
            Some("2024-05-01T08:30:00"),
            Some("2024-05-01T11:00:00"),
        );
        let Ok(Some(Report::RecordInfo(page))) = classify(&decode_tree(&body).unwrap()) else {
            panic!("{}", String::from_utf8_lossy(&body))
        };
        let times: Vec<_> = page
            .items
            .iter()
            .map(|i| (i.start_time.as_str(), i.end_time.as_str()))
            .collect();
        assert_eq!(
            times,
            [
                ("2024-05-01T08:00:00", "2024-05-01T09:00:00"),
                ("2024-05-01T09:00:00", "2024-05-01T10:00:00"),
                ("2024-05-01T10:00:00", "2024-05-01T11:00:00"),
            ]
        );
        let none = record_list_body("8", "c", None, Some("2024-05-01T11:00:00"));
        assert!(String::from_utf8_lossy(&none).contains("<SumNum>0</SumNum>"));
    }

    #[test]
    fn media_status_is_end_of_file() {
        let body = media_status_body(3, "34020000001310000001");
        let Ok(Some(Report::MediaStatus {
            device_id,
            notify_type,
        })) = classify(&decode_tree(&body).unwrap())
        else {
            panic!()
        };
        assert_eq!(
            (device_id.as_str(), notify_type.as_str()),
            ("34020000001310000001", "121")
        );
    }
}
