//! `Control` documents (GB/T 28181-2016 A.2.3): DeviceControl — PTZ
//! (`PTZCmd`, see [`super::ptz`]), TeleBoot, record start/stop, guard,
//! alarm reset, home position — and DeviceConfig, including the 2022
//! edition's `SnapShotConfig` (GB/T 28181-2022 A.2.3.2.4). Also the
//! `Broadcast` notify that starts a voice session (§9.12).
//!
//! Sans-IO: values in, XML out (pass through `manscdp::encode_body`).

use serde::{Deserialize, Serialize};

use super::manscdp::XmlWriter;
use super::ptz::PtzCommand;

/// Snapshots per request at most (A.2.3.2.4: `SnapNum` 1–10).
pub const MAX_SNAP_NUM: u32 = 10;

/// One DeviceControl action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceControl {
    /// `address` is the PTZ word's device address (usually 0 or 1).
    Ptz {
        command: PtzCommand,
        address: u16,
    },
    TeleBoot,
    RecordStart,
    RecordStop,
    SetGuard,
    ResetGuard,
    /// Clear an alarm; `method`/`alarm_type` narrow it (A.2.3.1.5).
    AlarmReset {
        method: Option<u32>,
        alarm_type: Option<u32>,
    },
    /// Return to `preset` after `reset_time` seconds idle; `None` disables.
    HomePosition {
        preset: Option<u8>,
        reset_time: u32,
    },
}

/// A `SnapShotConfig` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotConfig {
    /// 1–10.
    pub snap_num: u32,
    /// Seconds between snapshots (at least 1).
    pub interval: u32,
    /// Where the device POSTs the images.
    pub upload_url: String,
    pub session_id: String,
}

impl DeviceControl {
    pub fn to_xml(&self, sn: u32, target: &str) -> String {
        let mut w = XmlWriter::new();
        w.open("Control");
        w.header("DeviceControl", Some(sn), Some(target));
        match self {
            Self::Ptz { command, address } => {
                w.leaf("PTZCmd", &command.to_hex(*address));
                w.open("Info");
                w.leaf("ControlPriority", "5");
                w.close("Info");
            }
            Self::TeleBoot => w.leaf("TeleBoot", "Boot"),
            Self::RecordStart => w.leaf("RecordCmd", "Record"),
            Self::RecordStop => w.leaf("RecordCmd", "StopRecord"),
            Self::SetGuard => w.leaf("GuardCmd", "SetGuard"),
            Self::ResetGuard => w.leaf("GuardCmd", "ResetGuard"),
            Self::AlarmReset { method, alarm_type } => {
                w.leaf("AlarmCmd", "ResetAlarm");
                if method.is_some() || alarm_type.is_some() {
                    w.open("Info");
                    w.opt_num("AlarmMethod", *method);
                    w.opt_num("AlarmType", *alarm_type);
                    w.close("Info");
                }
            }
            Self::HomePosition { preset, reset_time } => {
                w.open("HomePosition");
                w.leaf("Enabled", if preset.is_some() { "1" } else { "0" });
                if let Some(p) = preset {
                    w.opt_num("ResetTime", Some(*reset_time));
                    w.opt_num("PresetIndex", Some(*p));
                }
                w.close("HomePosition");
            }
        }
        w.close("Control");
        w.finish()
    }

    /// Whether the device is expected to send a `Response` with `Result`
    /// (A.2.6.1); PTZ commands get only the 200 OK.
    pub fn expects_response(&self) -> bool {
        !matches!(self, Self::Ptz { .. })
    }
}

impl SnapshotConfig {
    pub fn to_xml(&self, sn: u32, target: &str) -> String {
        let mut w = XmlWriter::new();
        w.open("Control");
        w.header("DeviceConfig", Some(sn), Some(target));
        w.open("SnapShotConfig");
        w.opt_num("SnapNum", Some(self.snap_num.clamp(1, MAX_SNAP_NUM)));
        w.opt_num("Interval", Some(self.interval.max(1)));
        w.leaf("UploadURL", &self.upload_url);
        w.leaf("SessionID", &self.session_id);
        w.close("SnapShotConfig");
        w.close("Control");
        w.finish()
    }
}

/// §9.12.1: ask `target` (an audio output channel) to call us back for a
/// voice session from `source` (our id).
pub fn broadcast_notify(sn: u32, source: &str, target: &str) -> String {
    let mut w = XmlWriter::new();
    w.open("Notify");
    w.leaf("CmdType", "Broadcast");
    w.opt_num("SN", Some(sn));
    w.leaf("SourceID", source);
    w.leaf("TargetID", target);
    w.close("Notify");
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb28181::manscdp::{decode_tree, encode_body};
    use crate::gb28181::ptz::Direction;

    #[test]
    fn ptz_document_carries_the_word() {
        let xml = DeviceControl::Ptz {
            command: PtzCommand::Move {
                direction: Direction::Up,
                speed: 0x64,
            },
            address: 0,
        }
        .to_xml(12, "34020000001310000001");
        let el = decode_tree(&encode_body(&xml)).unwrap();
        assert_eq!(el.name(), "Control");
        assert_eq!(el.text("CmdType"), Some("DeviceControl"));
        assert_eq!(el.text("SN"), Some("12"));
        assert_eq!(el.text("DeviceID"), Some("34020000001310000001"));
        assert_eq!(el.text("PTZCmd"), Some("A50F000800640020"));
    }

    #[test]
    fn other_controls_and_config() {
        let one = |c: DeviceControl, name: &str| {
            let el = decode_tree(c.to_xml(1, "d").as_bytes()).unwrap();
            el.string(name)
        };
        assert_eq!(
            one(DeviceControl::TeleBoot, "TeleBoot").as_deref(),
            Some("Boot")
        );
        assert_eq!(
            one(DeviceControl::RecordStop, "RecordCmd").as_deref(),
            Some("StopRecord")
        );
        assert_eq!(
            one(DeviceControl::SetGuard, "GuardCmd").as_deref(),
            Some("SetGuard")
        );
        assert_eq!(
            one(
                DeviceControl::AlarmReset {
                    method: Some(2),
                    alarm_type: None
                },
                "AlarmCmd"
            )
            .as_deref(),
            Some("ResetAlarm")
        );
        let home = DeviceControl::HomePosition {
            preset: Some(3),
            reset_time: 30,
        }
        .to_xml(1, "d");
        let el = decode_tree(home.as_bytes()).unwrap();
        let hp = el.child("HomePosition").unwrap();
        assert_eq!(hp.text("PresetIndex"), Some("3"));
        assert_eq!(hp.text("Enabled"), Some("1"));

        let snap = SnapshotConfig {
            snap_num: 40,
            interval: 0,
            upload_url: "http://127.0.0.1:8080/api/v1/snapshots/upload/s1".into(),
            session_id: "s1".into(),
        }
        .to_xml(2, "c");
        let el = decode_tree(snap.as_bytes()).unwrap();
        assert_eq!(el.text("CmdType"), Some("DeviceConfig"));
        let s = el.child("SnapShotConfig").unwrap();
        assert_eq!(s.text("SnapNum"), Some("10"));
        assert_eq!(s.text("Interval"), Some("1"));
        assert_eq!(s.text("SessionID"), Some("s1"));

        let b = decode_tree(broadcast_notify(3, "srv", "ch").as_bytes()).unwrap();
        assert_eq!(
            (b.text("CmdType"), b.text("SourceID"), b.text("TargetID")),
            (Some("Broadcast"), Some("srv"), Some("ch"))
        );
    }
}
