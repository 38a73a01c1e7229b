//! The PTZ command word of a `DeviceControl` (GB/T 28181-2016 Annex A.3,
//! "前端设备控制协议"): eight bytes written as sixteen hex digits in
//! `<PTZCmd>`.
//!
//! Layout: byte 1 `A5`; byte 2 version in the high nibble and
//! `(0xA + 0x5 + version) & 0xF` in the low one; byte 3 the low byte of the
//! 12-bit address; byte 4 the command; bytes 5–6 data 1 and 2; byte 7 data 3
//! in the high nibble and the address's high nibble in the low one; byte 8
//! the sum of bytes 1–7 modulo 256.
//!
//! Sans-IO and total: every [`PtzCommand`] encodes; [`PtzFrame::parse`]
//! reads a hex word back (the simulated camera acknowledges with it) and
//! refuses bad lengths, digits and checksums with a typed error.

use std::fmt::Write as _;

/// Protocol version written in byte 2 (every device in the field uses 0).
pub const VERSION: u8 = 0;

/// Pan/tilt directions (A.3.2, bits 0–3 of the command byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    Left,
    Right,
    UpLeft,
    UpRight,
    DownLeft,
    DownRight,
}

impl Direction {
    fn bits(self) -> u8 {
        const RIGHT: u8 = 0x01;
        const LEFT: u8 = 0x02;
        const DOWN: u8 = 0x04;
        const UP: u8 = 0x08;
        match self {
            Self::Up => UP,
            Self::Down => DOWN,
            Self::Left => LEFT,
            Self::Right => RIGHT,
            Self::UpLeft => UP | LEFT,
            Self::UpRight => UP | RIGHT,
            Self::DownLeft => DOWN | LEFT,
            Self::DownRight => DOWN | RIGHT,
        }
    }

    fn pans(self) -> bool {
        !matches!(self, Self::Up | Self::Down)
    }

    fn tilts(self) -> bool {
        !matches!(self, Self::Left | Self::Right)
    }
}

/// One front-end command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtzCommand {
    /// Stop every motion (command byte 0).
    Stop,
    /// Pan/tilt at `speed` (0–255) on each moving axis.
    Move {
        direction: Direction,
        speed: u8,
    },
    /// Zoom; the zoom speed has only four bits (0–15).
    ZoomIn {
        speed: u8,
    },
    ZoomOut {
        speed: u8,
    },
    /// Focus and iris (A.3.3, command `0x4X`).
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
    /// Presets (A.3.4): set, call, delete preset `1..=255`.
    PresetSet(u8),
    PresetCall(u8),
    PresetDelete(u8),
    /// Cruise (A.3.5): start cruise group `group`.
    CruiseStart {
        group: u8,
    },
    /// Scan (A.3.6): start auto-scan `group`.
    ScanStart {
        group: u8,
    },
}

impl PtzCommand {
    /// Command byte, data 1, data 2, data 3 (4 bits).
    fn fields(self) -> (u8, u8, u8, u8) {
        match self {
            Self::Stop => (0x00, 0, 0, 0),
            Self::Move { direction, speed } => (
                direction.bits(),
                if direction.pans() { speed } else { 0 },
                if direction.tilts() { speed } else { 0 },
                0,
            ),
            Self::ZoomIn { speed } => (0x10, 0, 0, speed.min(0x0F)),
            Self::ZoomOut { speed } => (0x20, 0, 0, speed.min(0x0F)),
            // Real devices take the focus speed in data 2 and the iris
            // speed in data 1 (the captured focus-near word has 00 64).
            Self::FocusNear { speed } => (0x41, 0, speed, 0),
            Self::FocusFar { speed } => (0x42, 0, speed, 0),
            Self::IrisOpen { speed } => (0x44, speed, 0, 0),
            Self::IrisClose { speed } => (0x48, speed, 0, 0),
            Self::PresetSet(n) => (0x81, 0, n, 0),
            Self::PresetCall(n) => (0x82, 0, n, 0),
            Self::PresetDelete(n) => (0x83, 0, n, 0),
            Self::CruiseStart { group } => (0x88, group, 0, 0),
            Self::ScanStart { group } => (0x89, group, 0, 0),
        }
    }

    /// The eight bytes for a device at `address` (12 bits; higher bits are
    /// dropped, as the word has no room for them).
    pub fn encode(self, address: u16) -> [u8; 8] {
        let (cmd, d1, d2, d3) = self.fields();
        let mut b = [
            0xA5,
            (VERSION << 4) | ((0xA + 0x5 + VERSION) & 0x0F),
            (address & 0xFF) as u8,
            cmd,
            d1,
            d2,
            ((d3 & 0x0F) << 4) | ((address >> 8) & 0x0F) as u8,
            0,
        ];
        b[7] = checksum(&b[..7]);
        b
    }

    /// The `<PTZCmd>` text: sixteen upper-case hex digits.
    pub fn to_hex(self, address: u16) -> String {
        to_hex(&self.encode(address))
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Why a `<PTZCmd>` word was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PtzError {
    #[error("PTZCmd must be 16 hex digits, got {0} characters")]
    Length(usize),
    #[error("PTZCmd has a non-hex digit")]
    Hex,
    #[error("PTZCmd does not start with A5")]
    Lead,
    #[error("PTZCmd checksum {got:02X}, expected {want:02X}")]
    Checksum { got: u8, want: u8 },
}

impl PtzError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Length(_) => "ptz_length",
            Self::Hex => "ptz_hex",
            Self::Lead => "ptz_lead",
            Self::Checksum { .. } => "ptz_checksum",
        }
    }
}

/// A decoded word, for the device side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtzFrame {
    pub address: u16,
    pub command: u8,
    pub data1: u8,
    pub data2: u8,
    pub data3: u8,
}

impl PtzFrame {
    pub fn parse(hex: &str) -> Result<Self, PtzError> {
        let hex = hex.trim();
        if hex.len() != 16 {
            return Err(PtzError::Length(hex.len()));
        }
        let mut b = [0u8; 8];
        for (i, out) in b.iter_mut().enumerate() {
            let pair = hex.get(i * 2..i * 2 + 2).ok_or(PtzError::Hex)?;
            *out = u8::from_str_radix(pair, 16).map_err(|_| PtzError::Hex)?;
        }
        if b[0] != 0xA5 {
            return Err(PtzError::Lead);
        }
        let want = checksum(&b[..7]);
        if b[7] != want {
            return Err(PtzError::Checksum { got: b[7], want });
        }
        Ok(Self {
            address: u16::from(b[2]) | (u16::from(b[6] & 0x0F) << 8),
            command: b[3],
            data1: b[4],
            data2: b[5],
            data3: b[6] >> 4,
        })
    }

    pub fn is_stop(&self) -> bool {
        self.command == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words captured from real platform/device exchanges, quoted in
    /// issue 4; they must match byte for byte.
    #[test]
    fn captured_vectors() {
        let cases = [
            (
                PtzCommand::Move {
                    direction: Direction::Up,
                    speed: 0x64,
                },
                0,
                "A50F000800640020",
            ),
            (PtzCommand::Stop, 0, "A50F0000000000B4"),
            (PtzCommand::Stop, 1, "A50F0100000000B5"),
            (PtzCommand::FocusNear { speed: 0x64 }, 0, "A50F004100640059"),
            (
                PtzCommand::Move {
                    direction: Direction::Left,
                    speed: 0x96,
                },
                1,
                "A50F01029600004D",
            ),
            (PtzCommand::PresetSet(2), 1, "A50F018100020038"),
            (PtzCommand::PresetCall(2), 1, "A50F018200020039"),
            (PtzCommand::PresetDelete(2), 1, "A50F01830002003A"),
        ];
        for (cmd, addr, want) in cases {
            assert_eq!(cmd.to_hex(addr), want, "{cmd:?} @ {addr}");
            let f = PtzFrame::parse(want).unwrap();
            assert_eq!(f.address, addr);
        }
    }

    #[test]
    fn diagonals_set_both_axes_and_zoom_uses_the_high_nibble() {
        let f = PtzFrame::parse(
            &PtzCommand::Move {
                direction: Direction::DownRight,
                speed: 0x30,
            }
            .to_hex(0x123),
        )
        .unwrap();
        assert_eq!((f.command, f.data1, f.data2), (0x05, 0x30, 0x30));
        assert_eq!(f.address, 0x123);
        let z = PtzFrame::parse(&PtzCommand::ZoomOut { speed: 0xFF }.to_hex(0)).unwrap();
        assert_eq!((z.command, z.data3), (0x20, 0x0F));
        let i = PtzFrame::parse(&PtzCommand::IrisClose { speed: 9 }.to_hex(0)).unwrap();
        assert_eq!((i.command, i.data1), (0x48, 9));
    }

    #[test]
    fn bad_words_are_refused() {
        assert_eq!(PtzFrame::parse("A50F"), Err(PtzError::Length(4)));
        assert_eq!(PtzFrame::parse("A50F00000000zzB4"), Err(PtzError::Hex));
        assert_eq!(PtzFrame::parse("B50F0000000000B4"), Err(PtzError::Lead));
        assert!(matches!(
            PtzFrame::parse("A50F0000000000B5"),
            Err(PtzError::Checksum { .. })
        ));
        // Multi-byte UTF-8 must not panic on slicing.
        assert!(PtzFrame::parse("A50F00000000中B4").is_err());
    }
}
