//! The XML bodies of the FA F5 link (手机看店 spec V1.3 §7.4, §7.5, §10):
//! one typed struct per request and response, (de)serialized with
//! quick-xml + serde. The CMD byte of each pair is [`Message::CMD`].
//!
//! Element names follow the spec's spelling (`DevID`, `UpnpIP`, `PTZFlag`),
//! hence the many explicit renames. The 0x36 FTP picture notification is
//! not detailed in the issue's excerpt of the spec; its field names here are
//! our reading and are accepted leniently (unknown elements are ignored).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Device → platform commands.
pub mod cmd {
    pub const LOGIN: u8 = 0x31;
    pub const ABILITY_UP: u8 = 0x32;
    pub const HEARTBEAT: u8 = 0x33;
    pub const EXCEPTION: u8 = 0x34;
    pub const VIDEO_PLAY: u8 = 0x35;
    pub const FTP_PICTURE: u8 = 0x36;
    pub const RECORD_PLAY: u8 = 0x74;
    // Platform → device.
    pub const SET_CHANNEL: u8 = 0x60;
    pub const GET_CHANNEL: u8 = 0x61;
    pub const VIDEO_PTZ: u8 = 0x64;
    pub const REBOOT: u8 = 0x6C;
    pub const FILE_QUERY: u8 = 0x72;

    /// Commands the device originates (so a packet with one of these CMDs
    /// arriving at the platform is a request, any other a response).
    pub fn from_device(cmd: u8) -> bool {
        matches!(
            cmd,
            LOGIN | ABILITY_UP | HEARTBEAT | EXCEPTION | VIDEO_PLAY | FTP_PICTURE | RECORD_PLAY
        )
    }
}

/// A body that travels under one CMD.
pub trait Message: Serialize + DeserializeOwned {
    const CMD: u8;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("unreadable XML body: {0}")]
    Decode(String),
    #[error("cannot write XML body: {0}")]
    Encode(String),
}

impl XmlError {
    pub fn kind(&self) -> &'static str {
        match self {
            XmlError::Decode(_) => "xml_decode",
            XmlError::Encode(_) => "xml_encode",
        }
    }
}

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

pub fn to_xml<T: Message>(msg: &T) -> Result<String, XmlError> {
    let body = quick_xml::se::to_string(msg).map_err(|e| XmlError::Encode(e.to_string()))?;
    Ok(format!("{DECLARATION}{body}"))
}

pub fn from_xml<T: Message>(text: &str) -> Result<T, XmlError> {
    quick_xml::de::from_str(text).map_err(|e| XmlError::Decode(e.to_string()))
}

/// Result codes shared by the responses (§7.4): 0 success, 255 other.
pub const RESULT_OK: u8 = 0;
pub const RESULT_OTHER: u8 = 255;

macro_rules! message {
    ($ty:ty, $cmd:expr) => {
        impl Message for $ty {
            const CMD: u8 = $cmd;
        }
    };
}

// --- 0x31 login -----------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "LOGIN_REQ")]
pub struct LoginReq {
    #[serde(rename = "DevVer", default)]
    pub dev_ver: String,
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "DevKey")]
    pub dev_key: String,
    #[serde(rename = "UpnpIP", default)]
    pub upnp_ip: String,
    #[serde(rename = "RtspUpnpPort", default)]
    pub rtsp_upnp_port: u16,
    #[serde(rename = "LocalIP", default)]
    pub local_ip: String,
    #[serde(rename = "RtspLocalPort", default)]
    pub rtsp_local_port: u16,
    #[serde(rename = "TurnRelayIP", default)]
    pub turn_relay_ip: String,
    #[serde(rename = "RtspTurnRelayPort", default)]
    pub rtsp_turn_relay_port: u16,
    /// 0 wired, 1 WiFi, 2 3G.
    #[serde(rename = "NetType", default)]
    pub net_type: u8,
}
message!(LoginReq, cmd::LOGIN);

/// LOGIN_RES Result: 0 ok, 1 unknown device, 2 wrong key, 3 version not
/// supported, 255 other.
pub const LOGIN_UNKNOWN_DEVICE: u8 = 1;
pub const LOGIN_WRONG_KEY: u8 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "LOGIN_RES")]
pub struct LoginRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "EURL", default)]
    pub e_url: String,
    #[serde(rename = "EAccount", default)]
    pub e_account: String,
    #[serde(rename = "EPassword", default)]
    pub e_password: String,
    /// `YYYYMMDDHHMMSS`.
    #[serde(rename = "Time", default)]
    pub time: String,
}
message!(LoginRes, cmd::LOGIN);

// --- 0x32 abilities -------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoAbility {
    /// 1 main, 2 sub.
    #[serde(rename = "StreamType")]
    pub stream_type: u8,
    /// 1 720P, 2 D1, 3 CIF.
    #[serde(rename = "FrameSize")]
    pub frame_size: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onvif {
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Account", default)]
    pub account: String,
    #[serde(rename = "Password", default)]
    pub password: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "ABILITYUP_REQ")]
pub struct AbilityUpReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNum")]
    pub channel_num: u16,
    #[serde(rename = "PTZFlag", default)]
    pub ptz_flag: u8,
    #[serde(rename = "EStoreFlag", default)]
    pub e_store_flag: u8,
    #[serde(rename = "LocalStoreFlag", default)]
    pub local_store_flag: u8,
    #[serde(rename = "Video", default)]
    pub video: Vec<VideoAbility>,
    #[serde(rename = "Onvif", default, skip_serializing_if = "Option::is_none")]
    pub onvif: Option<Onvif>,
}
message!(AbilityUpReq, cmd::ABILITY_UP);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "ABILITYUP_RES")]
pub struct AbilityUpRes {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "Time", default)]
    pub time: String,
}
message!(AbilityUpRes, cmd::ABILITY_UP);

// --- 0x33 heartbeat -------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "HEARTBEAT_REQ")]
pub struct HeartbeatReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "CurVideoNum", default)]
    pub cur_video_num: u16,
    #[serde(rename = "UpnpIP", default)]
    pub upnp_ip: String,
    #[serde(rename = "RtspUpnpPort", default)]
    pub rtsp_upnp_port: u16,
    #[serde(rename = "LocalIP", default)]
    pub local_ip: String,
    #[serde(rename = "RtspLocalPort", default)]
    pub rtsp_local_port: u16,
    #[serde(rename = "TurnRelayIP", default)]
    pub turn_relay_ip: String,
    #[serde(rename = "RtspTurnRelayPort", default)]
    pub rtsp_turn_relay_port: u16,
}
message!(HeartbeatReq, cmd::HEARTBEAT);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "HEARTBEAT_RES")]
pub struct HeartbeatRes {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "Time", default)]
    pub time: String,
}
message!(HeartbeatRes, cmd::HEARTBEAT);

// --- 0x34 exception -------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "EXCEPTION_NOTIFY_REQ")]
pub struct ExceptionNotifyReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo", default)]
    pub channel_no: u16,
    /// 1–12 (§7.5.4).
    #[serde(rename = "ExceptionType")]
    pub exception_type: u8,
    #[serde(rename = "ExceptionDesc", default)]
    pub exception_desc: String,
}
message!(ExceptionNotifyReq, cmd::EXCEPTION);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "EXCEPTION_NOTIFY_RES")]
pub struct ExceptionNotifyRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
}
message!(ExceptionNotifyRes, cmd::EXCEPTION);

// --- 0x35 live token check ------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "VIDEO_PLAY_REQ")]
pub struct VideoPlayReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo")]
    pub channel_no: u16,
    #[serde(rename = "StreamType")]
    pub stream_type: u8,
    #[serde(rename = "HashToken")]
    pub hash_token: String,
}
message!(VideoPlayReq, cmd::VIDEO_PLAY);

/// Token check results: 0 valid, anything else refused.
pub const TOKEN_INVALID: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "VIDEO_PLAY_RES")]
pub struct VideoPlayRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
}
message!(VideoPlayRes, cmd::VIDEO_PLAY);

// --- 0x74 recording token check -------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "RECORD_PLAY_REQ")]
pub struct RecordPlayReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo")]
    pub channel_no: u16,
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "HashToken")]
    pub hash_token: String,
}
message!(RecordPlayReq, cmd::RECORD_PLAY);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "RECORD_PLAY_RES")]
pub struct RecordPlayRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
}
message!(RecordPlayRes, cmd::RECORD_PLAY);

// --- 0x36 FTP picture notify ----------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "FTP_PICTURE_NOTIFY_REQ")]
pub struct FtpPictureNotifyReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo", default)]
    pub channel_no: u16,
    #[serde(rename = "FileName", default)]
    pub file_name: String,
    #[serde(rename = "Time", default)]
    pub time: String,
}
message!(FtpPictureNotifyReq, cmd::FTP_PICTURE);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "FTP_PICTURE_NOTIFY_RES")]
pub struct FtpPictureNotifyRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
}
message!(FtpPictureNotifyRes, cmd::FTP_PICTURE);

// --- 0x60 / 0x61 video parameters -----------------------------------------

/// Encoder settings of one channel's stream (§10: FrameSize 1 720P, 2 D1,
/// 3 CIF; RateType 0 CBR / 1 VBR; BitRate a code 1–13; AudioInput 0/1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "SET_CHANNEL_REQ")]
pub struct SetChannelReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo")]
    pub channel_no: u16,
    #[serde(rename = "StreamType")]
    pub stream_type: u8,
    #[serde(rename = "FrameSize")]
    pub frame_size: u8,
    #[serde(rename = "FrameRate")]
    pub frame_rate: u8,
    #[serde(rename = "RateType")]
    pub rate_type: u8,
    #[serde(rename = "BitRate")]
    pub bit_rate: u8,
    #[serde(rename = "AudioInput")]
    pub audio_input: u8,
}
message!(SetChannelReq, cmd::SET_CHANNEL);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "SET_CHANNEL_RES")]
pub struct SetChannelRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
}
message!(SetChannelRes, cmd::SET_CHANNEL);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "GET_CHANNEL_REQ")]
pub struct GetChannelReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo")]
    pub channel_no: u16,
    #[serde(rename = "StreamType")]
    pub stream_type: u8,
}
message!(GetChannelReq, cmd::GET_CHANNEL);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "GET_CHANNEL_RES")]
pub struct GetChannelRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo", default)]
    pub channel_no: u16,
    #[serde(rename = "StreamType", default)]
    pub stream_type: u8,
    #[serde(rename = "FrameSize", default)]
    pub frame_size: u8,
    #[serde(rename = "FrameRate", default)]
    pub frame_rate: u8,
    #[serde(rename = "RateType", default)]
    pub rate_type: u8,
    #[serde(rename = "BitRate", default)]
    pub bit_rate: u8,
    #[serde(rename = "AudioInput", default)]
    pub audio_input: u8,
}
message!(GetChannelRes, cmd::GET_CHANNEL);

// --- 0x64 PTZ -------------------------------------------------------------

/// PtzDirection: 0 stop, 1 up, 2 down, 3 left, 4 right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PtzDirection {
    Stop,
    Up,
    Down,
    Left,
    Right,
}

impl PtzDirection {
    pub fn code(self) -> u8 {
        match self {
            PtzDirection::Stop => 0,
            PtzDirection::Up => 1,
            PtzDirection::Down => 2,
            PtzDirection::Left => 3,
            PtzDirection::Right => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => PtzDirection::Stop,
            1 => PtzDirection::Up,
            2 => PtzDirection::Down,
            3 => PtzDirection::Left,
            4 => PtzDirection::Right,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "VIDEO_PTZ_REQ")]
pub struct VideoPtzReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo")]
    pub channel_no: u16,
    /// See [`PtzDirection`].
    #[serde(rename = "PtzDirection")]
    pub ptz_direction: u8,
}
message!(VideoPtzReq, cmd::VIDEO_PTZ);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "VIDEO_PTZ_RES")]
pub struct VideoPtzRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
}
message!(VideoPtzRes, cmd::VIDEO_PTZ);

// --- 0x6C reboot ----------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "REBOOT_REQ")]
pub struct RebootReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
}
message!(RebootReq, cmd::REBOOT);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "REBOOT_RES")]
pub struct RebootRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
}
message!(RebootRes, cmd::REBOOT);

// --- 0x72 recording search ------------------------------------------------

/// Files per FILE_QUERY_RES page (§10).
pub const FILES_PER_PAGE: usize = 10;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "FILE_QUERY_REQ")]
pub struct FileQueryReq {
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "ChannelNo")]
    pub channel_no: u16,
    /// `YYYYMMDDHHMM`.
    #[serde(rename = "StartTime")]
    pub start_time: String,
    #[serde(rename = "EndTime")]
    pub end_time: String,
    /// From 1.
    #[serde(rename = "PageNo")]
    pub page_no: u32,
}
message!(FileQueryReq, cmd::FILE_QUERY);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFile {
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "FileSize", default)]
    pub file_size: u64,
    #[serde(rename = "StartTime", default)]
    pub start_time: String,
    #[serde(rename = "EndTime", default)]
    pub end_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "FILE_QUERY_RES")]
pub struct FileQueryRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "TotalRecordNum", default)]
    pub total_record_num: u32,
    #[serde(rename = "File", default)]
    pub file: Vec<RecordFile>,
}
message!(FileQueryRes, cmd::FILE_QUERY);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Message + PartialEq + std::fmt::Debug>(msg: T, root: &str) {
        let xml = to_xml(&msg).unwrap();
        assert!(xml.contains(&format!("<{root}>")), "{xml}");
        let back: T = from_xml(&xml).unwrap();
        assert_eq!(back, msg, "{xml}");
    }

    const DEV: &str = "81200000001";

    #[test]
    fn every_body_round_trips() {
        round_trip(
            LoginReq {
                dev_ver: "V1.3".into(),
                dev_id: DEV.into(),
                dev_key: "k&<y>".into(),
                upnp_ip: "10.0.0.2".into(),
                rtsp_upnp_port: 10554,
                local_ip: "192.168.1.20".into(),
                rtsp_local_port: 554,
                turn_relay_ip: "1.2.3.4".into(),
                rtsp_turn_relay_port: 8000,
                net_type: 1,
            },
            "LOGIN_REQ",
        );
        round_trip(
            LoginRes {
                result: 2,
                dev_id: DEV.into(),
                e_url: "http://e".into(),
                e_account: "a".into(),
                e_password: "p".into(),
                time: "20260102030405".into(),
            },
            "LOGIN_RES",
        );
        round_trip(
            AbilityUpReq {
                dev_id: DEV.into(),
                channel_num: 4,
                ptz_flag: 1,
                e_store_flag: 0,
                local_store_flag: 1,
                video: vec![
                    VideoAbility {
                        stream_type: 1,
                        frame_size: 1,
                    },
                    VideoAbility {
                        stream_type: 2,
                        frame_size: 3,
                    },
                ],
                onvif: Some(Onvif {
                    port: 8080,
                    account: "admin".into(),
                    password: "x".into(),
                }),
            },
            "ABILITYUP_REQ",
        );
        round_trip(
            AbilityUpReq {
                dev_id: DEV.into(),
                channel_num: 1,
                ..Default::default()
            },
            "ABILITYUP_REQ",
        );
        round_trip(
            AbilityUpRes {
                dev_id: DEV.into(),
                time: "20260102030405".into(),
            },
            "ABILITYUP_RES",
        );
        round_trip(
            HeartbeatReq {
                dev_id: DEV.into(),
                cur_video_num: 2,
                upnp_ip: "10.0.0.2".into(),
                rtsp_upnp_port: 1,
                local_ip: "192.168.1.20".into(),
                rtsp_local_port: 2,
                turn_relay_ip: "1.1.1.1".into(),
                rtsp_turn_relay_port: 3,
            },
            "HEARTBEAT_REQ",
        );
        round_trip(
            HeartbeatRes {
                dev_id: DEV.into(),
                time: "20260102030405".into(),
            },
            "HEARTBEAT_RES",
        );
        round_trip(
            ExceptionNotifyReq {
                dev_id: DEV.into(),
                channel_no: 1,
                exception_type: 12,
                exception_desc: "硬盘错误".into(),
            },
            "EXCEPTION_NOTIFY_REQ",
        );
        round_trip(
            ExceptionNotifyRes {
                result: 0,
                dev_id: DEV.into(),
            },
            "EXCEPTION_NOTIFY_RES",
        );
        round_trip(
            VideoPlayReq {
                dev_id: DEV.into(),
                channel_no: 0,
                stream_type: 2,
                hash_token: "0123456789abcdef0123456789abcdef".into(),
            },
            "VIDEO_PLAY_REQ",
        );
        round_trip(
            VideoPlayRes {
                result: TOKEN_INVALID,
                dev_id: DEV.into(),
            },
            "VIDEO_PLAY_RES",
        );
        round_trip(
            RecordPlayReq {
                dev_id: DEV.into(),
                channel_no: 0,
                file_name: "ch0_20260101.mp4".into(),
                hash_token: "ff".into(),
            },
            "RECORD_PLAY_REQ",
        );
        round_trip(
            RecordPlayRes {
                result: 0,
                dev_id: DEV.into(),
            },
            "RECORD_PLAY_RES",
        );
        round_trip(
            FtpPictureNotifyReq {
                dev_id: DEV.into(),
                channel_no: 0,
                file_name: "p.jpg".into(),
                time: "20260102030405".into(),
            },
            "FTP_PICTURE_NOTIFY_REQ",
        );
        round_trip(
            FtpPictureNotifyRes {
                result: 0,
                dev_id: DEV.into(),
            },
            "FTP_PICTURE_NOTIFY_RES",
        );
        round_trip(
            SetChannelReq {
                dev_id: DEV.into(),
                channel_no: 0,
                stream_type: 1,
                frame_size: 1,
                frame_rate: 25,
                rate_type: 1,
                bit_rate: 13,
                audio_input: 1,
            },
            "SET_CHANNEL_REQ",
        );
        round_trip(
            SetChannelRes {
                result: 0,
                dev_id: DEV.into(),
            },
            "SET_CHANNEL_RES",
        );
        round_trip(
            GetChannelReq {
                dev_id: DEV.into(),
                channel_no: 3,
                stream_type: 2,
            },
            "GET_CHANNEL_REQ",
        );
        round_trip(
            GetChannelRes {
                result: 0,
                dev_id: DEV.into(),
                channel_no: 3,
                stream_type: 2,
                frame_size: 3,
                frame_rate: 15,
                rate_type: 0,
                bit_rate: 5,
                audio_input: 0,
            },
            "GET_CHANNEL_RES",
        );
        round_trip(
            VideoPtzReq {
                dev_id: DEV.into(),
                channel_no: 0,
                ptz_direction: PtzDirection::Left.code(),
            },
            "VIDEO_PTZ_REQ",
        );
        round_trip(
            VideoPtzRes {
                result: 0,
                dev_id: DEV.into(),
            },
            "VIDEO_PTZ_RES",
        );
        round_trip(RebootReq { dev_id: DEV.into() }, "REBOOT_REQ");
        round_trip(
            RebootRes {
                result: 0,
                dev_id: DEV.into(),
            },
            "REBOOT_RES",
        );
        round_trip(
            FileQueryReq {
                dev_id: DEV.into(),
                channel_no: 0,
                start_time: "202601010000".into(),
                end_time: "202601012359".into(),
                page_no: 1,
            },
            "FILE_QUERY_REQ",
        );
        round_trip(
            FileQueryRes {
                result: 0,
                dev_id: DEV.into(),
                total_record_num: 2,
                file: vec![
                    RecordFile {
                        file_name: "a.mp4".into(),
                        file_size: 1 << 33,
                        start_time: "202601010000".into(),
                        end_time: "202601010100".into(),
                    },
                    RecordFile {
                        file_name: "b.mp4".into(),
                        file_size: 7,
                        start_time: "202601010100".into(),
                        end_time: "202601010200".into(),
                    },
                ],
            },
            "FILE_QUERY_RES",
        );
        round_trip(
            FileQueryRes {
                result: 0,
                dev_id: DEV.into(),
                total_record_num: 0,
                file: vec![],
            },
            "FILE_QUERY_RES",
        );
    }

    #[test]
    fn reads_a_device_style_body_with_whitespace_and_extra_elements() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<HEARTBEAT_REQ>\r\n  <DevID>81300000002</DevID>\r\n  <CurVideoNum>1</CurVideoNum>\r\n  <Vendor>x</Vendor>\r\n</HEARTBEAT_REQ>";
        let hb: HeartbeatReq = from_xml(xml).unwrap();
        assert_eq!(hb.dev_id, "81300000002");
        assert_eq!(hb.cur_video_num, 1);
        assert_eq!(hb.rtsp_local_port, 0);
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        assert_eq!(
            from_xml::<LoginReq>("<LOGIN_REQ><DevID>1</DevID>")
                .unwrap_err()
                .kind(),
            "xml_decode"
        );
        assert!(
            from_xml::<VideoPtzReq>(
                "<VIDEO_PTZ_REQ><DevID>1</DevID><ChannelNo>x</ChannelNo><PtzDirection>1</PtzDirection></VIDEO_PTZ_REQ>"
            )
            .is_err()
        );
    }

    #[test]
    fn ptz_codes() {
        for code in 0..=4 {
            assert_eq!(PtzDirection::from_code(code).unwrap().code(), code);
        }
        assert_eq!(PtzDirection::from_code(5), None);
        assert!(cmd::from_device(cmd::VIDEO_PLAY));
        assert!(!cmd::from_device(cmd::VIDEO_PTZ));
    }
}
