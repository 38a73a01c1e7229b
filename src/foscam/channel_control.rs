//! Foscam cameras acted on through the neutral
//! [`crate::streams::control`] commands: pan/tilt, stop and presets as
//! `decoder_control` codes (see [`super::ptz`]); the protocol has no
//! speed, zoom, focus or recordings.
//!
//! Stream keys are `foscam/{name}`.

use super::FoscamSources;
use super::ptz::{PtzAction, decoder_code};
use crate::streams::StreamKey;
use crate::streams::control::{
    ChannelCommand, ChannelControl, ControlError, ControlFuture, PanTilt, RecordEntry,
};

/// The `decoder_control` action and preset for `command`.
pub fn action(command: ChannelCommand) -> Result<(PtzAction, Option<u8>), ControlError> {
    Ok(match command {
        ChannelCommand::Stop => (PtzAction::Stop, None),
        ChannelCommand::Move { direction, .. } => (
            match direction {
                PanTilt::Up => PtzAction::Up,
                PanTilt::Down => PtzAction::Down,
                PanTilt::Left => PtzAction::Left,
                PanTilt::Right => PtzAction::Right,
                PanTilt::UpLeft => PtzAction::UpLeft,
                PanTilt::UpRight => PtzAction::UpRight,
                PanTilt::DownLeft => PtzAction::DownLeft,
                PanTilt::DownRight => PtzAction::DownRight,
            },
            None,
        ),
        ChannelCommand::PresetSet(n) => (PtzAction::PresetSet, Some(n)),
        ChannelCommand::PresetCall(n) => (PtzAction::PresetGoto, Some(n)),
        other => return Err(ControlError::Unsupported(other.name())),
    })
}

impl ChannelControl for FoscamSources {
    fn scheme(&self) -> &'static str {
        "foscam"
    }

    fn command<'a>(&'a self, key: &'a StreamKey, command: ChannelCommand) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            let mut parts = key.segments();
            let camera = match (parts.next(), parts.next()) {
                (Some(name), None) if key.scheme() == "foscam" => {
                    self.cameras().find(|c| c.name() == name)
                }
                _ => None,
            }
            .ok_or_else(|| ControlError::UnknownChannel(key.to_string()))?;
            let (action, preset) = action(command)?;
            let code = decoder_code(action, preset, camera.config.swap_pan)
                .map_err(|_| ControlError::Unsupported("use this preset number"))?;
            camera
                .decoder_control(code)
                .await
                .map_err(|e| ControlError::Unreachable(e.to_string()))
        })
    }

    /// The camera keeps no recordings: always none.
    fn records<'a>(
        &'a self,
        _key: &'a StreamKey,
        _start: u64,
        _end: u64,
    ) -> ControlFuture<'a, Vec<RecordEntry>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_decoder_codes() {
        let left = ChannelCommand::Move {
            direction: PanTilt::Left,
            speed: 200,
        };
        let (a, p) = action(left).unwrap();
        assert_eq!(decoder_code(a, p, false), Ok(4));
        let (a, p) = action(ChannelCommand::PresetCall(3)).unwrap();
        assert_eq!(decoder_code(a, p, false), Ok(37));
        assert!(action(ChannelCommand::ZoomIn { speed: 1 }).is_err());
        assert!(action(ChannelCommand::PresetDelete(1)).is_err());
    }
}
