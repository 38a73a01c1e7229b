//! The MANSCDP documents beyond keepalive, catalog and device info
//! (GB/T 28181-2016 Annex A; GB/T 28181-2022 A.2.4.9/A.2.5.10 for
//! snapshots): the queries we send — RecordInfo (A.2.4.5), ConfigDownload
//! (A.2.4.7), PresetQuery (A.2.4.8), Alarm (A.2.4.4) — and what devices
//! send back or on their own: DeviceStatus, RecordInfo, ConfigDownload and
//! PresetQuery responses (A.2.6), Alarm and MediaStatus notifications
//! (A.2.5.3, A.2.5.4), Broadcast answers, UploadSnapShotFinished.
//!
//! Sans-IO over [`manscdp::Element`]: bounded by the MANSCDP parser's
//! limits; optional fields that a device writes oddly become `None` rather
//! than costing the message.

use serde::Serialize;

use super::manscdp::{Element, ManscdpError, XmlWriter};

/// A device's report, by `CmdType` and root element.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    DeviceStatus(DeviceStatus),
    RecordInfo(RecordInfoPage),
    ConfigDownload(BasicParam),
    PresetList(PresetPage),
    Alarm(AlarmNotify),
    /// `NotifyType` 121: the file being played back or downloaded ended.
    MediaStatus {
        device_id: String,
        notify_type: String,
    },
    /// The answer to a Broadcast notify or a DeviceControl/DeviceConfig.
    Result {
        cmd_type: String,
        sn: u32,
        device_id: String,
        result: String,
    },
    /// 2022: the device finished uploading the snapshots of `session_id`.
    SnapshotFinished {
        device_id: String,
        session_id: String,
        files: Vec<String>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    pub sn: u32,
    pub device_id: String,
    pub result: Option<String>,
    /// `ONLINE` / `OFFLINE`.
    pub online: Option<String>,
    /// `OK` / `ERROR`.
    pub status: Option<String>,
    pub encode: Option<String>,
    pub record: Option<String>,
    pub device_time: Option<String>,
}

/// One page of a RecordInfo answer; pages share the SN and `sum_num` is
/// the total across them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordInfoPage {
    pub sn: u32,
    pub device_id: String,
    pub name: Option<String>,
    pub sum_num: Option<u32>,
    pub items: Vec<RecordItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordItem {
    pub device_id: String,
    pub name: Option<String>,
    pub file_path: Option<String>,
    pub address: Option<String>,
    pub start_time: String,
    pub end_time: String,
    pub secrecy: Option<u32>,
    /// `time`, `alarm`, `manual`, `all`.
    pub record_type: Option<String>,
    pub recorder_id: Option<String>,
    pub file_size: Option<u64>,
}

/// A ConfigDownload `BasicParam` answer (A.2.6.7).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BasicParam {
    pub sn: u32,
    pub device_id: String,
    pub name: Option<String>,
    pub expiration: Option<u32>,
    /// Seconds between keepalives.
    pub heartbeat_interval: Option<u32>,
    /// Missed keepalives before the device counts as offline.
    pub heartbeat_count: Option<u32>,
    pub sip_server_id: Option<String>,
    pub sip_server_ip: Option<String>,
    pub sip_server_port: Option<u16>,
    pub domain_name: Option<String>,
}

impl BasicParam {
    /// How long without a keepalive means offline, per the device's own
    /// settings (interval × count), when it gave both.
    pub fn offline_after(&self) -> Option<std::time::Duration> {
        let secs = self
            .heartbeat_interval?
            .checked_mul(self.heartbeat_count?)?;
        (secs > 0).then(|| std::time::Duration::from_secs(secs.into()))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PresetPage {
    pub sn: u32,
    pub device_id: String,
    pub sum_num: Option<u32>,
    pub items: Vec<Preset>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Preset {
    pub id: String,
    pub name: Option<String>,
}

/// A.2.5.3 alarm notification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlarmNotify {
    pub sn: u32,
    /// The alarming device or channel (`DeviceID` of the notification).
    /// In the event feed it is `channel`, beside the event's `device_id`
    /// (the registered device that sent it): one JSON key, not two.
    #[serde(rename = "channel")]
    pub device_id: String,
    /// 1 (highest) to 4.
    pub priority: Option<u32>,
    /// 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 fault, 7 other.
    pub method: Option<u32>,
    pub time: Option<String>,
    pub description: Option<String>,
    pub longitude: Option<String>,
    pub latitude: Option<String>,
    pub alarm_type: Option<u32>,
    pub event_type: Option<u32>,
}

/// Read a decoded element tree as one of the reports above; `Ok(None)` for
/// documents this module does not model.
pub fn classify(root: &Element) -> Result<Option<Report>, ManscdpError> {
    let cmd = root.required("CmdType")?;
    let is = |c: &str| cmd.eq_ignore_ascii_case(c);
    let kind = root.name().to_ascii_lowercase();
    let report = match kind.as_str() {
        "response" if is("DeviceStatus") => Report::DeviceStatus(DeviceStatus {
            sn: root.sn()?,
            device_id: root.required("DeviceID")?,
            result: root.string("Result"),
            online: root.string("Online"),
            status: root.string("Status"),
            encode: root.string("Encode"),
            record: root.string("Record"),
            device_time: root.string("DeviceTime"),
        }),
        "response" if is("RecordInfo") => Report::RecordInfo(record_page(root)?),
        "response" if is("ConfigDownload") => {
            let p = root.child("BasicParam");
            let get = |n: &str| p.and_then(|p| p.string(n));
            Report::ConfigDownload(BasicParam {
                sn: root.sn()?,
                device_id: root.required("DeviceID")?,
                name: get("Name"),
                expiration: p.and_then(|p| p.num("Expiration")),
                heartbeat_interval: p.and_then(|p| p.num("HeartBeatInterval")),
                heartbeat_count: p.and_then(|p| p.num("HeartBeatCount")),
                sip_server_id: get("SIPServerID"),
                sip_server_ip: get("SIPServerIP"),
                sip_server_port: p.and_then(|p| p.num("SIPServerPort")),
                domain_name: get("DomainName"),
            })
        }
        "response" if is("PresetQuery") => {
            let items: Vec<Preset> = root
                .child("PresetList")
                .into_iter()
                .flat_map(|l| l.children_named("Item"))
                .filter_map(|i| {
                    Some(Preset {
                        id: i.string("PresetID")?,
                        name: i.string("PresetName"),
                    })
                })
                .collect();
            // Most devices answer in one message without SumNum; the page
            // is then the whole list.
            Report::PresetList(PresetPage {
                sn: root.sn()?,
                device_id: root.required("DeviceID")?,
                sum_num: root.num("SumNum").or(u32::try_from(items.len()).ok()),
                items,
            })
        }
        "response"
            if is("Broadcast")
                || is("DeviceControl")
                || is("DeviceConfig")
                || is("Alarm")
                || is("Catalog") =>
        {
            Report::Result {
                cmd_type: cmd.clone(),
                sn: root.sn()?,
                device_id: root.required("DeviceID")?,
                result: root.string("Result").unwrap_or_default(),
            }
        }
        "notify" if is("Alarm") => {
            let info = root.child("Info");
            Report::Alarm(AlarmNotify {
                sn: root.sn()?,
                device_id: root.required("DeviceID")?,
                priority: root.num("AlarmPriority"),
                method: root.num("AlarmMethod"),
                time: root.string("AlarmTime"),
                description: root.string("AlarmDescription"),
                longitude: root.string("Longitude"),
                latitude: root.string("Latitude"),
                alarm_type: info
                    .and_then(|i| i.num("AlarmType"))
                    .or_else(|| root.num("AlarmType")),
                event_type: info
                    .and_then(|i| i.child("AlarmTypeParam"))
                    .and_then(|p| p.num("EventType")),
            })
        }
        "notify" if is("MediaStatus") => Report::MediaStatus {
            device_id: root.required("DeviceID")?,
            notify_type: root.string("NotifyType").unwrap_or_default(),
        },
        "notify" if is("UploadSnapShotFinished") => Report::SnapshotFinished {
            device_id: root.required("DeviceID")?,
            session_id: root.required("SessionID")?,
            files: root
                .child("SnapShotList")
                .into_iter()
                .flat_map(|l| l.children_named("SnapShotFileID"))
                .filter_map(|f| {
                    let t = f.own_text();
                    (!t.is_empty()).then(|| t.to_owned())
                })
                .collect(),
        },
        _ => return Ok(None),
    };
    Ok(Some(report))
}

fn record_page(root: &Element) -> Result<RecordInfoPage, ManscdpError> {
    let list = root.child("RecordList");
    let items = list
        .into_iter()
        .flat_map(|l| l.children_named("Item"))
        .filter_map(|i| {
            Some(RecordItem {
                device_id: i.string("DeviceID").or_else(|| root.string("DeviceID"))?,
                name: i.string("Name"),
                file_path: i.string("FilePath"),
                address: i.string("Address"),
                // An item without a time range cannot be played; skip it.
                start_time: i.string("StartTime")?,
                end_time: i.string("EndTime")?,
                secrecy: i.num("Secrecy"),
                record_type: i.string("Type"),
                recorder_id: i.string("RecorderID"),
                file_size: i.num("FileSize"),
            })
        })
        .collect();
    Ok(RecordInfoPage {
        sn: root.sn()?,
        device_id: root.required("DeviceID")?,
        name: root.string("Name"),
        sum_num: root.num("SumNum"),
        items,
    })
}

/// A.2.4.5: recordings of `channel` between two `gbtime` strings.
pub fn record_info_query(sn: u32, channel: &str, start: &str, end: &str) -> String {
    let mut w = query_head("RecordInfo", sn, channel);
    w.leaf("StartTime", start);
    w.leaf("EndTime", end);
    w.leaf("Secrecy", "0");
    w.leaf("Type", "all");
    w.close("Query");
    w.finish()
}

/// A.2.4.7 with `ConfigType` `BasicParam`.
pub fn config_download_query(sn: u32, device: &str) -> String {
    let mut w = query_head("ConfigDownload", sn, device);
    w.leaf("ConfigType", "BasicParam");
    w.close("Query");
    w.finish()
}

/// A.2.4.8.
pub fn preset_query(sn: u32, channel: &str) -> String {
    let mut w = query_head("PresetQuery", sn, channel);
    w.close("Query");
    w.finish()
}

/// A.2.4.4: alarms of every priority, method and type, optionally in a
/// time window — the body of the alarm SUBSCRIBE (§9.7.2).
pub fn alarm_query(sn: u32, device: &str, window: Option<(&str, &str)>) -> String {
    let mut w = query_head("Alarm", sn, device);
    w.leaf("StartAlarmPriority", "1");
    w.leaf("EndAlarmPriority", "4");
    w.leaf("AlarmMethod", "0");
    if let Some((start, end)) = window {
        w.leaf("StartAlarmTime", start);
        w.leaf("EndAlarmTime", end);
    }
    w.close("Query");
    w.finish()
}

fn query_head(cmd: &str, sn: u32, device: &str) -> XmlWriter {
    let mut w = XmlWriter::new();
    w.open("Query");
    w.header(cmd, Some(sn), Some(device));
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb28181::manscdp::{decode_tree, encode_body};

    fn report(xml: &str) -> Report {
        classify(&decode_tree(&encode_body(xml)).unwrap())
            .unwrap()
            .expect("modelled")
    }

    #[test]
    fn record_info_page() {
        let r = report(
            r#"<?xml version="1.0" encoding="GB2312"?><Response><CmdType>RecordInfo</CmdType><SN>17</SN><DeviceID>34020000001310000001</DeviceID><Name>Camera 1</Name><SumNum>3</SumNum><RecordList Num="2"><Item><DeviceID>34020000001310000001</DeviceID><Name>Camera 1</Name><FilePath>/rec/1.mp4</FilePath><StartTime>2024-05-01T08:00:00</StartTime><EndTime>2024-05-01T08:10:00</EndTime><Secrecy>0</Secrecy><Type>time</Type><FileSize>1234</FileSize></Item><Item><DeviceID>34020000001310000001</DeviceID><StartTime>2024-05-01T08:10:00</StartTime><EndTime>2024-05-01T08:20:00</EndTime><Type>alarm</Type></Item><Item><DeviceID>x</DeviceID></Item></RecordList></Response>"#,
        );
        let Report::RecordInfo(p) = r else {
            panic!("{r:?}")
        };
        assert_eq!((p.sn, p.sum_num, p.items.len()), (17, Some(3), 2));
        assert_eq!(p.items[0].file_size, Some(1234));
        assert_eq!(p.items[1].record_type.as_deref(), Some("alarm"));
        assert_eq!(p.items[1].end_time, "2024-05-01T08:20:00");
    }

    #[test]
    fn alarm_notify_with_info() {
        let r = report(
            r#"<?xml version="1.0" encoding="GB2312"?><Notify><CmdType>Alarm</CmdType><SN>5</SN><DeviceID>34020000001340000001</DeviceID><AlarmPriority>1</AlarmPriority><AlarmMethod>5</AlarmMethod><AlarmTime>2024-05-01T08:00:05</AlarmTime><AlarmDescription>移动侦测</AlarmDescription><Info><AlarmType>2</AlarmType><AlarmTypeParam><EventType>1</EventType></AlarmTypeParam></Info></Notify>"#,
        );
        assert_eq!(
            r,
            Report::Alarm(AlarmNotify {
                sn: 5,
                device_id: "34020000001340000001".into(),
                priority: Some(1),
                method: Some(5),
                time: Some("2024-05-01T08:00:05".into()),
                description: Some("移动侦测".into()),
                alarm_type: Some(2),
                event_type: Some(1),
                ..Default::default()
            })
        );
    }

    #[test]
    fn basic_param_gives_offline_window() {
        let r = report(
            r#"<?xml version="1.0"?><Response><CmdType>ConfigDownload</CmdType><SN>2</SN><DeviceID>34020000001320000001</DeviceID><Result>OK</Result><BasicParam><Name>IPC</Name><Expiration>3600</Expiration><HeartBeatInterval>60</HeartBeatInterval><HeartBeatCount>3</HeartBeatCount></BasicParam></Response>"#,
        );
        let Report::ConfigDownload(p) = r else {
            panic!("{r:?}")
        };
        assert_eq!(p.offline_after(), Some(std::time::Duration::from_secs(180)));
        assert_eq!(p.expiration, Some(3600));
    }

    #[test]
    fn presets_status_media_status_snapshot() {
        let Report::PresetList(p) = report(
            r#"<Response><CmdType>PresetQuery</CmdType><SN>3</SN><DeviceID>c</DeviceID><PresetList Num="2"><Item><PresetID>1</PresetID><PresetName>Gate</PresetName></Item><Item><PresetID>2</PresetID></Item></PresetList></Response>"#,
        ) else {
            panic!()
        };
        assert_eq!(p.sum_num, Some(2));
        assert_eq!(p.items[0].name.as_deref(), Some("Gate"));
        let Report::DeviceStatus(s) = report(
            r#"<Response><CmdType>DeviceStatus</CmdType><SN>4</SN><DeviceID>d</DeviceID><Result>OK</Result><Online>ONLINE</Online><Status>OK</Status></Response>"#,
        ) else {
            panic!()
        };
        assert_eq!(s.online.as_deref(), Some("ONLINE"));
        assert_eq!(
            report(
                r#"<Notify><CmdType>MediaStatus</CmdType><SN>8</SN><DeviceID>d</DeviceID><NotifyType>121</NotifyType></Notify>"#
            ),
            Report::MediaStatus {
                device_id: "d".into(),
                notify_type: "121".into()
            }
        );
        let Report::SnapshotFinished { files, .. } = report(
            r#"<Notify><CmdType>UploadSnapShotFinished</CmdType><SN>9</SN><DeviceID>d</DeviceID><SessionID>s1</SessionID><SnapShotList><SnapShotFileID>a</SnapShotFileID><SnapShotFileID>b</SnapShotFileID></SnapShotList></Notify>"#,
        ) else {
            panic!()
        };
        assert_eq!(files, ["a", "b"]);
    }

    #[test]
    fn queries_render() {
        let q = record_info_query(
            7,
            "34020000001310000001",
            "2024-05-01T08:00:00",
            "2024-05-01T09:00:00",
        );
        assert!(
            q.contains("<CmdType>RecordInfo</CmdType>\r\n<SN>7</SN>"),
            "{q}"
        );
        assert!(q.contains("<StartTime>2024-05-01T08:00:00</StartTime>"));
        assert!(config_download_query(1, "d").contains("<ConfigType>BasicParam</ConfigType>"));
        assert!(alarm_query(1, "d", None).contains("<EndAlarmPriority>4</EndAlarmPriority>"));
        assert!(preset_query(1, "d").contains("<CmdType>PresetQuery</CmdType>"));
    }
}
