//! DeviceControl from an upper platform (GB/T 28181-2016 §9.3, A.2.3.1):
//! the `<Control>` document read into a neutral
//! [`ChannelCommand`](crate::streams::control::ChannelCommand) for the
//! channel it names, and the `Result` answer (A.2.6.1) for the commands
//! that have one.
//!
//! The PTZ word (Annex A.3) is decoded here rather than with the GB28181
//! adapter's parser because the cascade may not import an adapter: the
//! same word reaches Foscam and telecom cameras too. Byte 4 is the
//! command: `0x0X`–`0x3X` pan/tilt (bits 0–3: right, left, down, up, data
//! 1 and 2 the pan and tilt speeds) and zoom (bits 4–5: in, out, speed in
//! the high nibble of byte 7); `0x4X` focus and iris; `0x81`–`0x83`
//! preset set, call, delete with the preset in data 2. Cruise, scan and
//! auxiliary switches are refused as unsupported.
//!
//! Sans-IO: bytes in, values and bodies out; nothing panics.

use super::answers::{DECLARATION, element, gb2312};
use crate::streams::control::{ChannelCommand, PanTilt};

/// Why a `<Control>` was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlParseError {
    /// Not a DeviceControl (other documents are served elsewhere).
    #[error("not a DeviceControl")]
    NotAControl,
    #[error("DeviceControl without {0}")]
    Missing(&'static str),
    #[error("bad PTZCmd: {0}")]
    BadWord(&'static str),
    #[error("PTZ command {0:#04x} not supported")]
    UnsupportedPtz(u8),
    #[error("no command this gateway forwards")]
    Unsupported,
}

impl ControlParseError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotAControl => "not_a_control",
            Self::Missing(_) => "control_incomplete",
            Self::BadWord(_) => "ptz_word_invalid",
            Self::UnsupportedPtz(_) | Self::Unsupported => "control_unsupported",
        }
    }
}

/// One DeviceControl for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    pub sn: u32,
    /// The channel's id as the upper platform knows it.
    pub device_id: String,
    pub command: ChannelCommand,
}

/// Read a `<Control><CmdType>DeviceControl</CmdType>…` document.
pub fn parse_control(body: &[u8]) -> Result<ControlRequest, ControlParseError> {
    let text = String::from_utf8_lossy(body);
    if !text.contains("<Control>") || element(&text, "CmdType") != Some("DeviceControl") {
        return Err(ControlParseError::NotAControl);
    }
    let sn = element(&text, "SN")
        .and_then(|s| s.parse().ok())
        .ok_or(ControlParseError::Missing("SN"))?;
    let device_id = element(&text, "DeviceID")
        .filter(|d| !d.is_empty())
        .ok_or(ControlParseError::Missing("DeviceID"))?
        .to_owned();
    let command = if let Some(word) = element(&text, "PTZCmd") {
        ptz_word(word)?
    } else if element(&text, "TeleBoot").is_some() {
        ChannelCommand::TeleBoot
    } else if let Some(r) = element(&text, "RecordCmd") {
        match r {
            "Record" => ChannelCommand::RecordStart,
            "StopRecord" => ChannelCommand::RecordStop,
            _ => return Err(ControlParseError::Unsupported),
        }
    } else if let Some(g) = element(&text, "GuardCmd") {
        match g {
            "SetGuard" => ChannelCommand::SetGuard,
            "ResetGuard" => ChannelCommand::ResetGuard,
            _ => return Err(ControlParseError::Unsupported),
        }
    } else if element(&text, "AlarmCmd") == Some("ResetAlarm") {
        ChannelCommand::AlarmReset
    } else {
        return Err(ControlParseError::Unsupported);
    };
    Ok(ControlRequest {
        sn,
        device_id,
        command,
    })
}

/// Decode a sixteen-hex-digit PTZ word (A.3).
pub fn ptz_word(hex: &str) -> Result<ChannelCommand, ControlParseError> {
    let hex = hex.trim();
    if hex.len() != 16 {
        return Err(ControlParseError::BadWord("length"));
    }
    let mut b = [0u8; 8];
    for (i, out) in b.iter_mut().enumerate() {
        let pair = hex
            .get(i * 2..i * 2 + 2)
            .ok_or(ControlParseError::BadWord("digit"))?;
        *out = u8::from_str_radix(pair, 16).map_err(|_| ControlParseError::BadWord("digit"))?;
    }
    if b[0] != 0xA5 {
        return Err(ControlParseError::BadWord("lead"));
    }
    let sum = b[..7].iter().fold(0u8, |a, x| a.wrapping_add(*x));
    if sum != b[7] {
        return Err(ControlParseError::BadWord("checksum"));
    }
    let (cmd, d1, d2, d3) = (b[3], b[4], b[5], b[6] >> 4);
    let bad = ControlParseError::UnsupportedPtz(cmd);
    Ok(match cmd {
        0x00..=0x3F => {
            let right = cmd & 0x01 != 0;
            let left = cmd & 0x02 != 0;
            let down = cmd & 0x04 != 0;
            let up = cmd & 0x08 != 0;
            let zoom_in = cmd & 0x10 != 0;
            let zoom_out = cmd & 0x20 != 0;
            if (left && right) || (up && down) || (zoom_in && zoom_out) {
                return Err(bad);
            }
            let direction = match (up, down, left, right) {
                (true, _, true, _) => Some(PanTilt::UpLeft),
                (true, _, _, true) => Some(PanTilt::UpRight),
                (_, true, true, _) => Some(PanTilt::DownLeft),
                (_, true, _, true) => Some(PanTilt::DownRight),
                (true, ..) => Some(PanTilt::Up),
                (_, true, ..) => Some(PanTilt::Down),
                (_, _, true, _) => Some(PanTilt::Left),
                (_, _, _, true) => Some(PanTilt::Right),
                _ => None,
            };
            // A pan/tilt combined with zoom moves; the zoom part is
            // dropped (no adapter here does both in one command).
            match direction {
                Some(direction) => ChannelCommand::Move {
                    direction,
                    speed: match (left || right, up || down) {
                        (true, true) => d1.max(d2),
                        (true, false) => d1,
                        _ => d2,
                    },
                },
                None if zoom_in => ChannelCommand::ZoomIn { speed: d3 },
                None if zoom_out => ChannelCommand::ZoomOut { speed: d3 },
                None => ChannelCommand::Stop,
            }
        }
        // FI: the speeds as the GB28181 adapter writes them (focus in data
        // 2, iris in data 1).
        0x40 => ChannelCommand::Stop,
        0x41 => ChannelCommand::FocusNear { speed: d2 },
        0x42 => ChannelCommand::FocusFar { speed: d2 },
        0x44 => ChannelCommand::IrisOpen { speed: d1 },
        0x48 => ChannelCommand::IrisClose { speed: d1 },
        0x81 if d2 > 0 => ChannelCommand::PresetSet(d2),
        0x82 if d2 > 0 => ChannelCommand::PresetCall(d2),
        0x83 if d2 > 0 => ChannelCommand::PresetDelete(d2),
        _ => return Err(bad),
    })
}

/// The `Response` with `Result` (A.2.6.1) to a DeviceControl that has one.
pub fn control_response(sn: u32, device_id: &str, ok: bool) -> Vec<u8> {
    gb2312(&format!(
        "{DECLARATION}<Response>\r\n<CmdType>DeviceControl</CmdType>\r\n<SN>{sn}</SN>\r\n\
         <DeviceID>{device_id}</DeviceID>\r\n<Result>{}</Result>\r\n</Response>\r\n",
        if ok { "OK" } else { "ERROR" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(inner: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Control>\r\n<CmdType>DeviceControl</CmdType>\r\n\
             <SN>11</SN>\r\n<DeviceID>34020000001310000001</DeviceID>\r\n{inner}\r\n</Control>\r\n"
        )
        .into_bytes()
    }

    /// Words as camgate's own HTTP API and common platforms write them.
    #[test]
    fn ptz_words_decode_to_commands() {
        let table: &[(&str, ChannelCommand)] = &[
            (
                "A50F000280000036",
                ChannelCommand::Move {
                    direction: PanTilt::Left,
                    speed: 0x80,
                },
            ),
            (
                "A50F000180000035",
                ChannelCommand::Move {
                    direction: PanTilt::Right,
                    speed: 0x80,
                },
            ),
            (
                "A50F00080080003C",
                ChannelCommand::Move {
                    direction: PanTilt::Up,
                    speed: 0x80,
                },
            ),
            (
                "A50F000A4080007E",
                ChannelCommand::Move {
                    direction: PanTilt::UpLeft,
                    speed: 0x80,
                },
            ),
            ("A50F0000000000B4", ChannelCommand::Stop),
            ("A50F001000008044", ChannelCommand::ZoomIn { speed: 8 }),
            ("A50F008100030038", ChannelCommand::PresetSet(3)),
            ("A50F00820005003B", ChannelCommand::PresetCall(5)),
            ("A50F008300010038", ChannelCommand::PresetDelete(1)),
            (
                "A50F004100640059",
                ChannelCommand::FocusNear { speed: 0x64 },
            ),
        ];
        for (word, want) in table {
            assert_eq!(ptz_word(word).as_ref(), Ok(want), "{word}");
            // Lower case digits are the same word.
            assert_eq!(ptz_word(&word.to_lowercase()).as_ref(), Ok(want), "{word}");
        }
    }

    #[test]
    fn bad_words_are_refused_with_a_kind() {
        assert_eq!(
            ptz_word("A50F00028000003"),
            Err(ControlParseError::BadWord("length"))
        );
        assert_eq!(
            ptz_word("A50F000280000037"),
            Err(ControlParseError::BadWord("checksum"))
        );
        assert_eq!(
            ptz_word("B50F000280000046"),
            Err(ControlParseError::BadWord("lead"))
        );
        assert_eq!(
            ptz_word("A50F00ZZ80000036"),
            Err(ControlParseError::BadWord("digit"))
        );
        // Left and right at once; cruise (0x88).
        assert_eq!(
            ptz_word("A50F000380000037"),
            Err(ControlParseError::UnsupportedPtz(0x03))
        );
        assert_eq!(
            ptz_word("A50F00880100003D"),
            Err(ControlParseError::UnsupportedPtz(0x88))
        );
        // A preset numbered 0 does not exist.
        assert_eq!(
            ptz_word("A50F008200000036"),
            Err(ControlParseError::UnsupportedPtz(0x82))
        );
    }

    #[test]
    fn control_documents_are_read() {
        let r = parse_control(&control("<PTZCmd>A50F000280000036</PTZCmd>")).unwrap();
        assert_eq!(r.sn, 11);
        assert_eq!(r.device_id, "34020000001310000001");
        assert!(r.command.is_ptz());
        let r = parse_control(&control("<RecordCmd>StopRecord</RecordCmd>")).unwrap();
        assert_eq!(r.command, ChannelCommand::RecordStop);
        assert!(!r.command.is_ptz());
        let r = parse_control(&control("<TeleBoot>Boot</TeleBoot>")).unwrap();
        assert_eq!(r.command, ChannelCommand::TeleBoot);
        let r = parse_control(&control("<GuardCmd>SetGuard</GuardCmd>")).unwrap();
        assert_eq!(r.command, ChannelCommand::SetGuard);
        assert_eq!(
            parse_control(&control("<DragZoomIn><Length>1</Length></DragZoomIn>")),
            Err(ControlParseError::Unsupported)
        );
        assert_eq!(
            parse_control(b"<Query><CmdType>Catalog</CmdType></Query>"),
            Err(ControlParseError::NotAControl)
        );
        assert_eq!(
            parse_control(
                b"<Control><CmdType>DeviceControl</CmdType><DeviceID>1</DeviceID></Control>"
            ),
            Err(ControlParseError::Missing("SN"))
        );
    }

    #[test]
    fn response_carries_the_result() {
        let ok = String::from_utf8(control_response(11, "34020000001310000001", true)).unwrap();
        assert!(ok.contains("<CmdType>DeviceControl</CmdType>") && ok.contains("<SN>11</SN>"));
        assert!(ok.contains("<DeviceID>34020000001310000001</DeviceID>"));
        assert!(ok.contains("<Result>OK</Result>"));
        let err = String::from_utf8(control_response(11, "x", false)).unwrap();
        assert!(err.contains("<Result>ERROR</Result>"));
    }
}
