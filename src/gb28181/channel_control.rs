//! GB28181 channels acted on through the neutral
//! [`crate::streams::control`] commands: PTZ words and presets (A.3) and
//! the DeviceControl commands with a `Result` (GB/T 28181-2016 §9.3,
//! A.2.3.1) sent to the channel, and RecordInfo (A.2.4.5) asked of it.
//!
//! Stream keys are `gb/{device}/{channel}`.

use super::control::DeviceControl;
use super::exchanges::QueryError;
use super::platform::GbPlatform;
use super::ptz::{Direction, PtzCommand};
use super::reports::RecordItem;
use crate::media::datetime;
use crate::streams::StreamKey;
use crate::streams::control::{
    ChannelCommand, ChannelControl, ControlError, ControlFuture, PanTilt, RecordEntry,
};

/// The `(device, channel)` of a live GB28181 key.
fn device_channel(key: &StreamKey) -> Result<(&str, &str), ControlError> {
    let mut parts = key.segments();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(d), Some(c), None) if key.scheme() == "gb" => Ok((d, c)),
        _ => Err(ControlError::UnknownChannel(key.to_string())),
    }
}

fn direction(d: PanTilt) -> Direction {
    match d {
        PanTilt::Up => Direction::Up,
        PanTilt::Down => Direction::Down,
        PanTilt::Left => Direction::Left,
        PanTilt::Right => Direction::Right,
        PanTilt::UpLeft => Direction::UpLeft,
        PanTilt::UpRight => Direction::UpRight,
        PanTilt::DownLeft => Direction::DownLeft,
        PanTilt::DownRight => Direction::DownRight,
    }
}

/// The DeviceControl that carries `command`. The PTZ word's address is
/// 0, as the HTTP API sends it: the upper platform's address named our
/// channel, not the camera's own decoder.
pub fn device_control(command: ChannelCommand) -> DeviceControl {
    let ptz = |command| DeviceControl::Ptz {
        command,
        address: 0,
    };
    match command {
        ChannelCommand::Stop => ptz(PtzCommand::Stop),
        ChannelCommand::Move {
            direction: d,
            speed,
        } => ptz(PtzCommand::Move {
            direction: direction(d),
            speed,
        }),
        ChannelCommand::ZoomIn { speed } => ptz(PtzCommand::ZoomIn { speed }),
        ChannelCommand::ZoomOut { speed } => ptz(PtzCommand::ZoomOut { speed }),
        ChannelCommand::FocusNear { speed } => ptz(PtzCommand::FocusNear { speed }),
        ChannelCommand::FocusFar { speed } => ptz(PtzCommand::FocusFar { speed }),
        ChannelCommand::IrisOpen { speed } => ptz(PtzCommand::IrisOpen { speed }),
        ChannelCommand::IrisClose { speed } => ptz(PtzCommand::IrisClose { speed }),
        ChannelCommand::PresetSet(n) => ptz(PtzCommand::PresetSet(n)),
        ChannelCommand::PresetCall(n) => ptz(PtzCommand::PresetCall(n)),
        ChannelCommand::PresetDelete(n) => ptz(PtzCommand::PresetDelete(n)),
        ChannelCommand::TeleBoot => DeviceControl::TeleBoot,
        ChannelCommand::RecordStart => DeviceControl::RecordStart,
        ChannelCommand::RecordStop => DeviceControl::RecordStop,
        ChannelCommand::SetGuard => DeviceControl::SetGuard,
        ChannelCommand::ResetGuard => DeviceControl::ResetGuard,
        ChannelCommand::AlarmReset => DeviceControl::AlarmReset {
            method: None,
            alarm_type: None,
        },
    }
}

fn control_error(e: QueryError) -> ControlError {
    match e {
        QueryError::UnknownDevice(d) => ControlError::UnknownChannel(d),
        QueryError::Failed(r) => ControlError::Refused(r),
        QueryError::Refused(code) => ControlError::Refused(format!("SIP {code}")),
        other => ControlError::Unreachable(other.to_string()),
    }
}

fn entry(i: RecordItem) -> RecordEntry {
    RecordEntry {
        name: i.name,
        file_path: i.file_path,
        address: i.address,
        start_time: i.start_time,
        end_time: i.end_time,
        secrecy: i.secrecy,
        record_type: i.record_type,
        recorder_id: i.recorder_id,
        file_size: i.file_size,
    }
}

impl ChannelControl for GbPlatform {
    fn scheme(&self) -> &'static str {
        "gb"
    }

    fn command<'a>(&'a self, key: &'a StreamKey, command: ChannelCommand) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            let (device, channel) = device_channel(key)?;
            self.control(device, channel, &device_control(command))
                .await
                .map(|_| ())
                .map_err(control_error)
        })
    }

    fn records<'a>(
        &'a self,
        key: &'a StreamKey,
        start: u64,
        end: u64,
    ) -> ControlFuture<'a, Vec<RecordEntry>> {
        Box::pin(async move {
            let (device, channel) = device_channel(key)?;
            let done = self
                .query_records(
                    device,
                    channel,
                    &datetime::format(start),
                    &datetime::format(end),
                )
                .await
                .map_err(control_error)?;
            Ok(done.items.into_iter().map(entry).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_commands_map_to_the_device_words() {
        let key = StreamKey::from_path("gb/34020000001320000001/34020000001310000001").unwrap();
        assert_eq!(
            device_channel(&key),
            Ok(("34020000001320000001", "34020000001310000001"))
        );
        let playback = StreamKey::from_path("gb/d/c/playback/1-2").unwrap();
        assert!(device_channel(&playback).is_err());
        let foscam = StreamKey::from_path("foscam/demo").unwrap();
        assert!(device_channel(&foscam).is_err());
        // Left at speed 0x80 is the word the HTTP API sends for "left".
        let DeviceControl::Ptz { command, address } = device_control(ChannelCommand::Move {
            direction: PanTilt::Left,
            speed: 0x80,
        }) else {
            panic!("not PTZ");
        };
        assert_eq!(command.to_hex(address), "A50F000280000036");
        assert_eq!(
            device_control(ChannelCommand::RecordStop),
            DeviceControl::RecordStop
        );
        assert!(device_control(ChannelCommand::TeleBoot).expects_response());
        assert!(!device_control(ChannelCommand::PresetCall(3)).expects_response());
    }
}
