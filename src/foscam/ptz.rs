//! PTZ actions to the camera's `decoder_control` codes (Decoder_Control,
//! operation opcode 14, one code byte).
//!
//! The codes are those of the camera's CGI `decoder_control.cgi`: 0 up,
//! 1 stop, 2 down, 4 and 6 horizontal (which is left depends on firmware,
//! hence `swap_pan`), 25 centre, 90–93 diagonals, preset n set 30+2n and
//! go 31+2n. The protocol has no speed: the camera moves at its own.

/// Presets the code space leaves room for (30..=61).
pub const MAX_PRESET: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PtzAction {
    Up,
    Down,
    Left,
    Right,
    UpLeft,
    UpRight,
    DownLeft,
    DownRight,
    Stop,
    Center,
    PresetSet,
    PresetGoto,
}

/// Why an action has no code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PtzError {
    #[error("preset actions need a preset number 0..={MAX_PRESET}")]
    BadPreset,
}

/// The `decoder_control` code for `action`.
pub fn decoder_code(action: PtzAction, preset: Option<u8>, swap_pan: bool) -> Result<u8, PtzError> {
    let (left, right) = if swap_pan { (6, 4) } else { (4, 6) };
    let (up_left, up_right, down_left, down_right) = if swap_pan {
        (91, 90, 93, 92)
    } else {
        (90, 91, 92, 93)
    };
    let preset = || {
        preset
            .filter(|n| *n <= MAX_PRESET)
            .ok_or(PtzError::BadPreset)
    };
    Ok(match action {
        PtzAction::Up => 0,
        PtzAction::Stop => 1,
        PtzAction::Down => 2,
        PtzAction::Left => left,
        PtzAction::Right => right,
        PtzAction::Center => 25,
        PtzAction::UpLeft => up_left,
        PtzAction::UpRight => up_right,
        PtzAction::DownLeft => down_left,
        PtzAction::DownRight => down_right,
        PtzAction::PresetSet => 30 + 2 * preset()?,
        PtzAction::PresetGoto => 31 + 2 * preset()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_decoder_control() {
        assert_eq!(decoder_code(PtzAction::Up, None, false), Ok(0));
        assert_eq!(decoder_code(PtzAction::Stop, None, false), Ok(1));
        assert_eq!(decoder_code(PtzAction::Left, None, false), Ok(4));
        assert_eq!(decoder_code(PtzAction::Left, None, true), Ok(6));
        assert_eq!(decoder_code(PtzAction::UpRight, None, true), Ok(90));
        assert_eq!(decoder_code(PtzAction::Center, None, false), Ok(25));
        assert_eq!(decoder_code(PtzAction::PresetSet, Some(3), false), Ok(36));
        assert_eq!(decoder_code(PtzAction::PresetGoto, Some(3), false), Ok(37));
        assert_eq!(
            decoder_code(PtzAction::PresetGoto, Some(16), false),
            Err(PtzError::BadPreset)
        );
        assert_eq!(
            decoder_code(PtzAction::PresetSet, None, false),
            Err(PtzError::BadPreset)
        );
    }
}
