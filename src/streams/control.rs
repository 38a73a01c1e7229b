//! Acting on a channel whatever protocol brought it: pan/tilt/zoom,
//! presets and the few device commands an upper platform may send, and
//! searching its recordings.
//!
//! The cascade (GB/T 28181-2016 §9.3 DeviceControl and §9.5 RecordInfo
//! from an upper platform) must reach GB28181, Foscam and telecom cameras
//! alike without importing an adapter (the import rule of `lib.rs`). So
//! the commands are named here in a neutral shape; each adapter
//! implements [`ChannelControl`] for its stream keys and translates, and
//! `app.rs` hands the list to the cascade, as with
//! [`super::directory::DeviceDirectory`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::StreamKey;

/// Pan/tilt directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanTilt {
    Up,
    Down,
    Left,
    Right,
    UpLeft,
    UpRight,
    DownLeft,
    DownRight,
}

/// One command to a channel. Speeds are 0–255 (zoom 0–15), the scale of
/// the GB28181 PTZ word; adapters without speeds ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelCommand {
    /// Stop every motion.
    Stop,
    Move {
        direction: PanTilt,
        speed: u8,
    },
    ZoomIn {
        speed: u8,
    },
    ZoomOut {
        speed: u8,
    },
    FocusNear {
        speed: u8,
    },
    FocusFar {
        speed: u8,
    },
    IrisOpen {
        speed: u8,
    },
    IrisClose {
        speed: u8,
    },
    /// Presets 1–255.
    PresetSet(u8),
    PresetCall(u8),
    PresetDelete(u8),
    /// Device commands that the standard answers with a `Result`.
    TeleBoot,
    RecordStart,
    RecordStop,
    SetGuard,
    ResetGuard,
    AlarmReset,
}

impl ChannelCommand {
    /// Whether it is a front-end (PTZ word) command, which GB28181
    /// acknowledges with the 200 alone; the others expect a `Result`.
    pub fn is_ptz(self) -> bool {
        !matches!(
            self,
            Self::TeleBoot
                | Self::RecordStart
                | Self::RecordStop
                | Self::SetGuard
                | Self::ResetGuard
                | Self::AlarmReset
        )
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Move { .. } => "move",
            Self::ZoomIn { .. } => "zoom_in",
            Self::ZoomOut { .. } => "zoom_out",
            Self::FocusNear { .. } => "focus_near",
            Self::FocusFar { .. } => "focus_far",
            Self::IrisOpen { .. } => "iris_open",
            Self::IrisClose { .. } => "iris_close",
            Self::PresetSet(_) => "preset_set",
            Self::PresetCall(_) => "preset_call",
            Self::PresetDelete(_) => "preset_delete",
            Self::TeleBoot => "tele_boot",
            Self::RecordStart => "record_start",
            Self::RecordStop => "record_stop",
            Self::SetGuard => "set_guard",
            Self::ResetGuard => "reset_guard",
            Self::AlarmReset => "alarm_reset",
        }
    }
}

/// One recording found, in the shape of a GB28181 RecordInfo item
/// (A.2.6.6); times are [`crate::media::datetime`] strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordEntry {
    pub name: Option<String>,
    pub file_path: Option<String>,
    pub address: Option<String>,
    pub start_time: String,
    pub end_time: String,
    pub secrecy: Option<u32>,
    /// `time`, `alarm`, `manual`.
    pub record_type: Option<String>,
    pub recorder_id: Option<String>,
    pub file_size: Option<u64>,
}

/// Why a command or search did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no channel {0}")]
    UnknownChannel(String),
    #[error("the channel cannot {0}")]
    Unsupported(&'static str),
    #[error("the device refused: {0}")]
    Refused(String),
    #[error("the device did not answer: {0}")]
    Unreachable(String),
}

impl ControlError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownChannel(_) => "unknown_channel",
            Self::Unsupported(_) => "unsupported",
            Self::Refused(_) => "refused",
            Self::Unreachable(_) => "unreachable",
        }
    }
}

pub type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ControlError>> + Send + 'a>>;

/// An adapter's way to act on its channels.
pub trait ChannelControl: Send + Sync {
    /// The stream key scheme it serves (`gb`, `foscam`, `ctel`).
    fn scheme(&self) -> &'static str;

    /// Carry out `command` on the channel `key` plays. Resolves when the
    /// device took it (or refused it).
    fn command<'a>(&'a self, key: &'a StreamKey, command: ChannelCommand) -> ControlFuture<'a, ()>;

    /// Recordings of `key` overlapping `start..end` (Unix seconds).
    fn records<'a>(
        &'a self,
        key: &'a StreamKey,
        start: u64,
        end: u64,
    ) -> ControlFuture<'a, Vec<RecordEntry>>;
}

/// The control serving `key`'s scheme.
pub fn for_key<'a>(
    controls: &'a [Arc<dyn ChannelControl>],
    key: &StreamKey,
) -> Option<&'a Arc<dyn ChannelControl>> {
    controls.iter().find(|c| c.scheme() == key.scheme())
}
