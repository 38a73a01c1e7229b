//! MANSRTSP: playback control carried in SIP INFO with
//! `Content-Type: application/MANSRTSP` (GB/T 28181-2016 §9.8 and Annex B).
//! The body is an RTSP-style request without a URL:
//!
//! ```text
//! PAUSE RTSP/1.0          PLAY RTSP/1.0           PLAY RTSP/1.0
//! CSeq: 3                 CSeq: 4                 CSeq: 5
//! PauseTime: now          Range: npt=now-         Scale: 2.0
//! ```
//!
//! Sans-IO: [`PlaybackCommand::body`] renders, [`PlaybackCommand::parse`]
//! reads (the simulated camera's side, and the cascade's, which takes it
//! from upper platforms), bounded and panic-free.

use std::fmt::Write as _;

/// The content type of an INFO that carries a playback command.
pub const CONTENT_TYPE: &str = "application/MANSRTSP";
/// Longest body we parse; real ones are under 100 bytes.
pub const MAX_BODY_LEN: usize = 1024;
/// Speeds GB28181 devices accept (the stream table's viewer speeds are
/// this same set).
pub use crate::streams::recording::SCALES;

/// One playback control request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlaybackCommand {
    Pause,
    /// Continue from where the pause left off.
    Resume,
    /// Play at this speed (one of [`SCALES`]).
    Scale(f32),
    /// Jump to this many seconds from the start of the requested range.
    Seek(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MansrtspError {
    #[error("body is {0} bytes, above the {MAX_BODY_LEN} byte limit")]
    TooLarge(usize),
    #[error("body is not UTF-8")]
    Encoding,
    #[error("request line {0:?} is not PLAY or PAUSE RTSP/1.0")]
    RequestLine(String),
    #[error("CSeq missing or not a number")]
    CSeq,
    #[error("PLAY has neither a usable Range nor Scale")]
    NoAction,
    #[error("scale {0:?} is not one of 0.25, 0.5, 1, 2, 4, 8")]
    Scale(String),
}

impl MansrtspError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "mansrtsp_too_large",
            Self::Encoding => "mansrtsp_encoding",
            Self::RequestLine(_) => "mansrtsp_request_line",
            Self::CSeq => "mansrtsp_cseq",
            Self::NoAction => "mansrtsp_no_action",
            Self::Scale(_) => "mansrtsp_scale",
        }
    }
}

/// Whether `scale` is a speed devices accept.
pub fn valid_scale(scale: f32) -> bool {
    SCALES.iter().any(|s| (s - scale).abs() < 1e-6)
}

impl PlaybackCommand {
    /// The INFO body with CRLF line ends.
    pub fn body(self, cseq: u32) -> String {
        let mut s = String::new();
        match self {
            Self::Pause => {
                let _ = write!(s, "PAUSE RTSP/1.0\r\nCSeq: {cseq}\r\nPauseTime: now\r\n");
            }
            Self::Resume => {
                let _ = write!(s, "PLAY RTSP/1.0\r\nCSeq: {cseq}\r\nRange: npt=now-\r\n");
            }
            Self::Scale(scale) => {
                let _ = write!(
                    s,
                    "PLAY RTSP/1.0\r\nCSeq: {cseq}\r\nScale: {}\r\n",
                    format_scale(scale)
                );
            }
            Self::Seek(secs) => {
                let _ = write!(s, "PLAY RTSP/1.0\r\nCSeq: {cseq}\r\nRange: npt={secs}-\r\n");
            }
        }
        s
    }

    /// Read a body; returns the command and its CSeq.
    pub fn parse(body: &[u8]) -> Result<(Self, u32), MansrtspError> {
        if body.len() > MAX_BODY_LEN {
            return Err(MansrtspError::TooLarge(body.len()));
        }
        let text = std::str::from_utf8(body).map_err(|_| MansrtspError::Encoding)?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default();
        let method = match first.split_whitespace().collect::<Vec<_>>().as_slice() {
            [m, v] if v.eq_ignore_ascii_case("RTSP/1.0") => m.to_ascii_uppercase(),
            _ => return Err(MansrtspError::RequestLine(first.chars().take(64).collect())),
        };
        let mut cseq = None;
        let mut range = None;
        let mut scale = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "cseq" => cseq = value.parse::<u32>().ok(),
                "range" => range = Some(value),
                "scale" => scale = Some(value),
                _ => {}
            }
        }
        let cseq = cseq.ok_or(MansrtspError::CSeq)?;
        let cmd = match method.as_str() {
            "PAUSE" => Self::Pause,
            "PLAY" => {
                if let Some(s) = scale {
                    let v: f32 = s.parse().map_err(|_| MansrtspError::Scale(s.into()))?;
                    if !valid_scale(v) {
                        return Err(MansrtspError::Scale(s.into()));
                    }
                    Self::Scale(v)
                } else if let Some(r) = range {
                    let start = r
                        .strip_prefix("npt=")
                        .and_then(|r| r.split('-').next())
                        .map(str::trim)
                        .ok_or(MansrtspError::NoAction)?;
                    if start.eq_ignore_ascii_case("now") {
                        Self::Resume
                    } else {
                        // Devices and platforms write whole or fractional
                        // seconds; we keep whole ones.
                        let secs: f64 = start.parse().map_err(|_| MansrtspError::NoAction)?;
                        if !(0.0..=f64::from(u32::MAX)).contains(&secs) {
                            return Err(MansrtspError::NoAction);
                        }
                        Self::Seek(secs as u32)
                    }
                } else {
                    return Err(MansrtspError::NoAction);
                }
            }
            _ => return Err(MansrtspError::RequestLine(first.chars().take(64).collect())),
        };
        Ok((cmd, cseq))
    }
}

/// `0.25`, `0.5`, `1`, `2`… — the shortest form, as devices print it.
fn format_scale(scale: f32) -> String {
    let s = format!("{scale}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_the_standard_forms() {
        assert_eq!(
            PlaybackCommand::Pause.body(3),
            "PAUSE RTSP/1.0\r\nCSeq: 3\r\nPauseTime: now\r\n"
        );
        assert_eq!(
            PlaybackCommand::Resume.body(4),
            "PLAY RTSP/1.0\r\nCSeq: 4\r\nRange: npt=now-\r\n"
        );
        assert_eq!(
            PlaybackCommand::Scale(2.0).body(5),
            "PLAY RTSP/1.0\r\nCSeq: 5\r\nScale: 2\r\n"
        );
        assert_eq!(
            PlaybackCommand::Scale(0.25).body(6),
            "PLAY RTSP/1.0\r\nCSeq: 6\r\nScale: 0.25\r\n"
        );
        assert_eq!(
            PlaybackCommand::Seek(30).body(7),
            "PLAY RTSP/1.0\r\nCSeq: 7\r\nRange: npt=30-\r\n"
        );
    }

    #[test]
    fn every_body_parses_back() {
        for (i, cmd) in [
            PlaybackCommand::Pause,
            PlaybackCommand::Resume,
            PlaybackCommand::Seek(90),
        ]
        .into_iter()
        .chain(SCALES.iter().map(|s| PlaybackCommand::Scale(*s)))
        .enumerate()
        {
            let body = cmd.body(i as u32 + 1);
            assert_eq!(
                PlaybackCommand::parse(body.as_bytes()),
                Ok((cmd, i as u32 + 1))
            );
        }
    }

    #[test]
    fn device_variants_and_garbage() {
        // LF line ends and "Scale: 2.0" as some platforms write them.
        assert_eq!(
            PlaybackCommand::parse(b"PLAY RTSP/1.0\nCSeq: 9\nScale: 2.0\n"),
            Ok((PlaybackCommand::Scale(2.0), 9))
        );
        assert_eq!(
            PlaybackCommand::parse(b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=12.5-\r\n"),
            Ok((PlaybackCommand::Seek(12), 1))
        );
        assert_eq!(
            PlaybackCommand::parse(b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: 3\r\n"),
            Err(MansrtspError::Scale("3".into()))
        );
        assert_eq!(
            PlaybackCommand::parse(b"PLAY RTSP/1.0\r\nScale: 2\r\n"),
            Err(MansrtspError::CSeq)
        );
        assert!(matches!(
            PlaybackCommand::parse(b"TEARDOWN RTSP/1.0\r\nCSeq: 1\r\n"),
            Err(MansrtspError::RequestLine(_))
        ));
        assert_eq!(
            PlaybackCommand::parse(&[0xff; 4]),
            Err(MansrtspError::Encoding)
        );
        assert_eq!(
            PlaybackCommand::parse(b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=-5-\r\n"),
            Err(MansrtspError::NoAction)
        );
    }
}
