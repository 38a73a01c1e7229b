//! The Foscam MJPEG camera protocol ("MO_O" / "MO_V"), sans-IO.
//!
//! Implements the vendor's IP camera CGI/TCP protocol document as public
//! clients use it: two TCP connections to the camera's web port, each a
//! stream of commands with a 23-byte header —
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `MO_O` (operation) or `MO_V` (audio/video) |
//! | 4 | 2 | opcode, little-endian |
//! | 6 | 1 | reserved, 0 |
//! | 7 | 8 | reserved |
//! | 15 | 4 | body length, little-endian |
//! | 19 | 4 | reserved (some clients repeat the length) |
//!
//! [`FrameDecoder`] splits a byte stream into [`RawFrame`]s (resyncing on
//! garbage by scanning for the magic, refusing oversized bodies), and
//! [`OpMessage`] / [`MediaMessage`] give every opcode of the document a
//! typed form with an encoder. Bodies are `Bytes` slices of the receive
//! buffer, so a JPEG reaches the hub without a copy.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of every command header.
pub const HEADER_LEN: usize = 23;
/// Longest body accepted on the operation connection: its messages are tiny.
pub const MAX_OP_BODY: usize = 4 * 1024;
/// Longest body accepted on the media connection: one JPEG (a 1280x960
/// frame at high quality stays well below this).
pub const MAX_MEDIA_BODY: usize = 2 * 1024 * 1024;
/// User and password fields of Verify_Req are fixed 13-byte, NUL-padded.
pub const CREDENTIAL_LEN: usize = 13;
/// Bytes of ADPCM in one Audio_Data / Talk_Data packet (320 samples).
pub const ADPCM_PACKET_LEN: usize = 160;

/// Which of the two connections a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `MO_O`: login, verify, start/stop, PTZ, alarms, keepalive.
    Operation,
    /// `MO_V`: video, audio and talk data.
    Media,
}

impl Channel {
    pub fn magic(self) -> &'static [u8; 4] {
        match self {
            Channel::Operation => b"MO_O",
            Channel::Media => b"MO_V",
        }
    }
}

/// Why bytes from a camera could not be used. Each variant names one
/// failure so metrics can count them apart ([`ProtoError::kind`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("{skipped} bytes of garbage before the next header")]
    Garbage { skipped: usize },
    #[error("opcode {opcode}: body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { opcode: u16, len: u32, max: usize },
    #[error("opcode {opcode}: body of {len} bytes is too short for its fields")]
    Truncated { opcode: u16, len: usize },
    #[error("opcode {opcode}: inner length {inner} exceeds the {available} bytes left")]
    BadInnerLength {
        opcode: u16,
        inner: u32,
        available: usize,
    },
}

impl ProtoError {
    /// Label value for `camgate_foscam_errors{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Garbage { .. } => "garbage",
            Self::TooLarge { .. } => "too_large",
            Self::Truncated { .. } => "truncated",
            Self::BadInnerLength { .. } => "bad_inner_length",
        }
    }
}

/// One command as framed on the wire, body not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub channel: Channel,
    pub opcode: u16,
    pub body: Bytes,
}

/// Splits one connection's byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    channel: Channel,
    max_body: usize,
}

impl FrameDecoder {
    pub fn new(channel: Channel) -> Self {
        let max_body = match channel {
            Channel::Operation => MAX_OP_BODY,
            Channel::Media => MAX_MEDIA_BODY,
        };
        Self { channel, max_body }
    }

    pub fn with_max_body(channel: Channel, max_body: usize) -> Self {
        Self { channel, max_body }
    }

    /// Take the next frame from the front of `buf`. `None` means more bytes
    /// are needed. An error consumed the offending bytes; call again to go
    /// on with the rest of the buffer.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Result<RawFrame, ProtoError>> {
        let magic = self.channel.magic();
        if buf.len() >= magic.len() && !buf.starts_with(magic) {
            let skipped = match find(buf, magic) {
                Some(at) => at,
                // Keep a tail that could be the start of a split magic.
                None => buf.len() - (magic.len() - 1),
            };
            buf.advance(skipped);
            return Some(Err(ProtoError::Garbage { skipped }));
        }
        if buf.len() < HEADER_LEN {
            return None;
        }
        let opcode = u16::from_le_bytes([buf[4], buf[5]]);
        let len = u32::from_le_bytes([buf[15], buf[16], buf[17], buf[18]]);
        if len as usize > self.max_body {
            // Skip this magic only: the next header is found by resync.
            buf.advance(magic.len());
            return Some(Err(ProtoError::TooLarge {
                opcode,
                len,
                max: self.max_body,
            }));
        }
        let total = HEADER_LEN + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return None;
        }
        let mut frame = buf.split_to(total);
        frame.advance(HEADER_LEN);
        Some(Ok(RawFrame {
            channel: self.channel,
            opcode,
            body: frame.freeze(),
        }))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Write a header for `opcode` with a body of `body_len` bytes.
pub fn put_header(out: &mut BytesMut, channel: Channel, opcode: u16, body_len: usize) {
    out.reserve(HEADER_LEN + body_len);
    out.put_slice(channel.magic());
    out.put_u16_le(opcode);
    out.put_u8(0);
    out.put_bytes(0, 8);
    out.put_u32_le(body_len as u32);
    // Some firmware reads the length here instead; repeating it costs
    // nothing and keeps those cameras happy.
    out.put_u32_le(body_len as u32);
}

/// Body reader that turns a short body into [`ProtoError::Truncated`].
struct Fields<'a> {
    opcode: u16,
    body: &'a Bytes,
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(opcode: u16, body: &'a Bytes) -> Self {
        Self {
            opcode,
            body,
            at: 0,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let body: &'a [u8] = self.body;
        let end = self.at.checked_add(n).filter(|&e| e <= body.len());
        match end.and_then(|e| body.get(self.at..e)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => Err(ProtoError::Truncated {
                opcode: self.opcode,
                len: body.len(),
            }),
        }
    }

    fn remaining(&self) -> usize {
        self.body.len().saturating_sub(self.at)
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, ProtoError> {
        let b = self.take(2)?;
        Ok(i16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ProtoError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed payload: the slice is shared with the body.
    fn payload(&mut self, inner: u32) -> Result<Bytes, ProtoError> {
        let available = self.remaining();
        if inner as usize > available {
            return Err(ProtoError::BadInnerLength {
                opcode: self.opcode,
                inner,
                available,
            });
        }
        let start = self.at;
        self.at += inner as usize;
        Ok(self.body.slice(start..self.at))
    }
}

/// A NUL-padded fixed-width text field, up to its first NUL.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn put_text(out: &mut BytesMut, s: &str, width: usize) {
    let b = s.as_bytes();
    let n = b.len().min(width);
    out.put_slice(&b[..n]);
    out.put_bytes(0, width - n);
}

/// Operation opcodes of the protocol document.
pub mod op {
    pub const LOGIN_REQ: u16 = 0;
    pub const LOGIN_RESP: u16 = 1;
    pub const VERIFY_REQ: u16 = 2;
    pub const VERIFY_RESP: u16 = 3;
    pub const VIDEO_START_REQ: u16 = 4;
    pub const VIDEO_START_RESP: u16 = 5;
    pub const VIDEO_END: u16 = 6;
    pub const AUDIO_START_REQ: u16 = 8;
    pub const AUDIO_START_RESP: u16 = 9;
    pub const AUDIO_END: u16 = 10;
    pub const TALK_START_REQ: u16 = 11;
    pub const TALK_START_RESP: u16 = 12;
    pub const TALK_END: u16 = 13;
    pub const DECODER_CONTROL: u16 = 14;
    pub const ALARM_NOTIFY: u16 = 25;
    pub const KEEP_ALIVE: u16 = 255;
}

/// Media opcodes.
pub mod av {
    pub const LOGIN_REQ: u16 = 0;
    pub const VIDEO_DATA: u16 = 1;
    pub const AUDIO_DATA: u16 = 2;
    pub const TALK_DATA: u16 = 3;
}

/// Login_Resp result codes.
pub const LOGIN_OK: i16 = 0;
pub const LOGIN_TOO_MANY: i16 = 2;
/// Verify_Resp result codes.
pub const VERIFY_OK: i16 = 0;
pub const VERIFY_WRONG_USER: i16 = 1;
pub const VERIFY_WRONG_PASSWORD: i16 = 5;
/// Start responses: 0 agree, 2 too many connections, 7 not supported.
pub const START_OK: i16 = 0;
pub const START_TOO_MANY: i16 = 2;
pub const START_UNSUPPORTED: i16 = 7;

/// What Login_Resp tells about the camera when it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraIdent {
    pub camera_id: String,
    /// Four version bytes, e.g. `[11, 37, 2, 49]` for firmware 11.37.2.49.
    pub firmware: [u8; 4],
}

/// Alarm_Notify type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    Stop,
    Motion,
    ExternalInput,
    Other(u8),
}

impl AlarmKind {
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => Self::Stop,
            1 => Self::Motion,
            2 => Self::ExternalInput,
            n => Self::Other(n),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Self::Stop => 0,
            Self::Motion => 1,
            Self::ExternalInput => 2,
            Self::Other(n) => n,
        }
    }
}

/// Every message of the operation connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpMessage {
    LoginReq,
    /// `ident` is present when `result` is [`LOGIN_OK`].
    LoginResp {
        result: i16,
        ident: Option<CameraIdent>,
    },
    VerifyReq {
        user: String,
        password: String,
    },
    VerifyResp {
        result: i16,
    },
    KeepAlive,
    /// The document says 1; public clients send 2. Cameras accept both.
    VideoStartReq {
        mode: u8,
    },
    /// `connection_id` is what the media connection logs in with.
    VideoStartResp {
        result: i16,
        connection_id: Option<u32>,
    },
    VideoEnd,
    AudioStartReq {
        mode: u8,
    },
    AudioStartResp {
        result: i16,
        connection_id: Option<u32>,
    },
    AudioEnd,
    TalkStartReq {
        buffer_seconds: u8,
    },
    TalkStartResp {
        result: i16,
        connection_id: Option<u32>,
    },
    TalkEnd,
    /// One of the camera's `decoder_control` codes.
    DecoderControl {
        command: u8,
    },
    AlarmNotify {
        kind: AlarmKind,
        /// A motion rectangle on some firmware, zero on others.
        area: [i16; 4],
    },
    /// An opcode the document lists but we do not act on, or a newer one.
    Unknown {
        opcode: u16,
        body: Bytes,
    },
}

impl OpMessage {
    pub fn parse(frame: &RawFrame) -> Result<Self, ProtoError> {
        let mut f = Fields::new(frame.opcode, &frame.body);
        Ok(match frame.opcode {
            op::LOGIN_REQ => Self::LoginReq,
            op::LOGIN_RESP => {
                let result = f.i16()?;
                let ident = if result == LOGIN_OK {
                    let camera_id = text(f.take(13)?);
                    f.take(8)?;
                    let v = f.take(4)?;
                    Some(CameraIdent {
                        camera_id,
                        firmware: [v[0], v[1], v[2], v[3]],
                    })
                } else {
                    None
                };
                Self::LoginResp { result, ident }
            }
            op::VERIFY_REQ => Self::VerifyReq {
                user: text(f.take(CREDENTIAL_LEN)?),
                password: text(f.take(CREDENTIAL_LEN)?),
            },
            op::VERIFY_RESP => Self::VerifyResp { result: f.i16()? },
            op::KEEP_ALIVE => Self::KeepAlive,
            op::VIDEO_START_REQ => Self::VideoStartReq {
                mode: f.u8().unwrap_or(1),
            },
            op::VIDEO_START_RESP => {
                let (result, connection_id) = start_resp(&mut f)?;
                Self::VideoStartResp {
                    result,
                    connection_id,
                }
            }
            op::VIDEO_END => Self::VideoEnd,
            op::AUDIO_START_REQ => Self::AudioStartReq {
                mode: f.u8().unwrap_or(1),
            },
            op::AUDIO_START_RESP => {
                let (result, connection_id) = start_resp(&mut f)?;
                Self::AudioStartResp {
                    result,
                    connection_id,
                }
            }
            op::AUDIO_END => Self::AudioEnd,
            op::TALK_START_REQ => Self::TalkStartReq {
                buffer_seconds: f.u8()?,
            },
            op::TALK_START_RESP => {
                let (result, connection_id) = start_resp(&mut f)?;
                Self::TalkStartResp {
                    result,
                    connection_id,
                }
            }
            op::TALK_END => Self::TalkEnd,
            op::DECODER_CONTROL => Self::DecoderControl { command: f.u8()? },
            op::ALARM_NOTIFY => {
                let kind = AlarmKind::from_byte(f.u8()?);
                // Older firmware sends the type byte alone.
                let mut area = [0i16; 4];
                if f.remaining() >= 8 {
                    for a in &mut area {
                        *a = f.i16()?;
                    }
                }
                Self::AlarmNotify { kind, area }
            }
            opcode => Self::Unknown {
                opcode,
                body: frame.body.clone(),
            },
        })
    }

    pub fn opcode(&self) -> u16 {
        match self {
            Self::LoginReq => op::LOGIN_REQ,
            Self::LoginResp { .. } => op::LOGIN_RESP,
            Self::VerifyReq { .. } => op::VERIFY_REQ,
            Self::VerifyResp { .. } => op::VERIFY_RESP,
            Self::KeepAlive => op::KEEP_ALIVE,
            Self::VideoStartReq { .. } => op::VIDEO_START_REQ,
            Self::VideoStartResp { .. } => op::VIDEO_START_RESP,
            Self::VideoEnd => op::VIDEO_END,
            Self::AudioStartReq { .. } => op::AUDIO_START_REQ,
            Self::AudioStartResp { .. } => op::AUDIO_START_RESP,
            Self::AudioEnd => op::AUDIO_END,
            Self::TalkStartReq { .. } => op::TALK_START_REQ,
            Self::TalkStartResp { .. } => op::TALK_START_RESP,
            Self::TalkEnd => op::TALK_END,
            Self::DecoderControl { .. } => op::DECODER_CONTROL,
            Self::AlarmNotify { .. } => op::ALARM_NOTIFY,
            Self::Unknown { opcode, .. } => *opcode,
        }
    }

    /// Append the framed message (header and body) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut body = BytesMut::new();
        match self {
            Self::LoginReq | Self::KeepAlive | Self::VideoEnd | Self::AudioEnd | Self::TalkEnd => {}
            Self::LoginResp { result, ident } => {
                body.put_i16_le(*result);
                if let Some(id) = ident {
                    put_text(&mut body, &id.camera_id, 13);
                    body.put_bytes(0, 8);
                    body.put_slice(&id.firmware);
                }
            }
            Self::VerifyReq { user, password } => {
                put_text(&mut body, user, CREDENTIAL_LEN);
                put_text(&mut body, password, CREDENTIAL_LEN);
            }
            Self::VerifyResp { result } => {
                body.put_i16_le(*result);
                body.put_u8(0);
            }
            Self::VideoStartReq { mode } | Self::AudioStartReq { mode } => body.put_u8(*mode),
            Self::VideoStartResp {
                result,
                connection_id,
            }
            | Self::AudioStartResp {
                result,
                connection_id,
            }
            | Self::TalkStartResp {
                result,
                connection_id,
            } => {
                body.put_i16_le(*result);
                if let Some(id) = connection_id {
                    body.put_u32_le(*id);
                }
            }
            Self::TalkStartReq { buffer_seconds } => body.put_u8(*buffer_seconds),
            Self::DecoderControl { command } => body.put_u8(*command),
            Self::AlarmNotify { kind, area } => {
                body.put_u8(kind.to_byte());
                for a in area {
                    body.put_i16_le(*a);
                }
            }
            Self::Unknown { body: b, .. } => body.put_slice(b),
        }
        put_header(out, Channel::Operation, self.opcode(), body.len());
        out.put_slice(&body);
    }
}

fn start_resp(f: &mut Fields<'_>) -> Result<(i16, Option<u32>), ProtoError> {
    let result = f.i16()?;
    let id = if f.remaining() >= 4 {
        Some(f.u32()?)
    } else {
        None
    };
    Ok((result, id))
}

/// Every message of the media connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaMessage {
    /// First message on the media connection: the id from a start response.
    LoginReq {
        connection_id: u32,
    },
    VideoData {
        /// 10 ms units.
        timestamp: u32,
        /// Unix seconds when the camera captured the frame.
        capture_time: u32,
        jpeg: Bytes,
    },
    AudioData {
        /// 10 ms units.
        timestamp: u32,
        sequence: u32,
        capture_time: u32,
        /// 0 = ADPCM.
        format: u8,
        data: Bytes,
    },
    TalkData {
        /// 1 ms units.
        timestamp: u32,
        sequence: u32,
        time: u32,
        format: u8,
        data: Bytes,
    },
    Unknown {
        opcode: u16,
        body: Bytes,
    },
}

impl MediaMessage {
    pub fn parse(frame: &RawFrame) -> Result<Self, ProtoError> {
        let mut f = Fields::new(frame.opcode, &frame.body);
        Ok(match frame.opcode {
            av::LOGIN_REQ => Self::LoginReq {
                connection_id: f.u32()?,
            },
            av::VIDEO_DATA => {
                let timestamp = f.u32()?;
                let capture_time = f.u32()?;
                f.u8()?;
                let len = f.u32()?;
                Self::VideoData {
                    timestamp,
                    capture_time,
                    jpeg: f.payload(len)?,
                }
            }
            av::AUDIO_DATA | av::TALK_DATA => {
                let timestamp = f.u32()?;
                let sequence = f.u32()?;
                let time = f.u32()?;
                let format = f.u8()?;
                let len = f.u32()?;
                let data = f.payload(len)?;
                if frame.opcode == av::AUDIO_DATA {
                    Self::AudioData {
                        timestamp,
                        sequence,
                        capture_time: time,
                        format,
                        data,
                    }
                } else {
                    Self::TalkData {
                        timestamp,
                        sequence,
                        time,
                        format,
                        data,
                    }
                }
            }
            opcode => Self::Unknown {
                opcode,
                body: frame.body.clone(),
            },
        })
    }

    pub fn opcode(&self) -> u16 {
        match self {
            Self::LoginReq { .. } => av::LOGIN_REQ,
            Self::VideoData { .. } => av::VIDEO_DATA,
            Self::AudioData { .. } => av::AUDIO_DATA,
            Self::TalkData { .. } => av::TALK_DATA,
            Self::Unknown { opcode, .. } => *opcode,
        }
    }

    /// Append the framed message to `out`. The payload is copied once,
    /// into the send buffer.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::LoginReq { connection_id } => {
                put_header(out, Channel::Media, av::LOGIN_REQ, 4);
                out.put_u32_le(*connection_id);
            }
            Self::VideoData {
                timestamp,
                capture_time,
                jpeg,
            } => {
                put_header(out, Channel::Media, av::VIDEO_DATA, 13 + jpeg.len());
                out.put_u32_le(*timestamp);
                out.put_u32_le(*capture_time);
                out.put_u8(0);
                out.put_u32_le(jpeg.len() as u32);
                out.put_slice(jpeg);
            }
            Self::AudioData {
                timestamp,
                sequence,
                capture_time: time,
                format,
                data,
            }
            | Self::TalkData {
                timestamp,
                sequence,
                time,
                format,
                data,
            } => {
                put_header(out, Channel::Media, self.opcode(), 17 + data.len());
                out.put_u32_le(*timestamp);
                out.put_u32_le(*sequence);
                out.put_u32_le(*time);
                out.put_u8(*format);
                out.put_u32_le(data.len() as u32);
                out.put_slice(data);
            }
            Self::Unknown { opcode, body } => {
                put_header(out, Channel::Media, *opcode, body.len());
                out.put_slice(body);
            }
        }
    }
}

#[cfg(test)]
mod tests;
