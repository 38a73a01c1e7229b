//! YUV4MPEG2, the raw-video stream the H.265 decoder process writes: one
//! text header line (`YUV4MPEG2 W1280 H720 F25:1 … C420mpeg2 …`), then per
//! picture a `FRAME` line and the planes (Y, then Cb and Cr at half size
//! rounded up). There is no formal spec; this follows the format as
//! mjpegtools and FFmpeg's yuv4mpegpipe muxer write it.
//!
//! Sans-IO: bytes go in as they arrive from the pipe, pictures come out.
//! The output of a child process fed camera bytes is untrusted too, so the
//! size is checked against the limits before a buffer is allocated, and
//! header lines are bounded.

use super::PictureLimits;
use super::picture::Picture;

/// Longest header or FRAME line accepted.
const MAX_LINE: usize = 1024;

/// Why the stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Y4mError {
    #[error("stream does not start with YUV4MPEG2")]
    Magic,
    #[error("header or FRAME line longer than {MAX_LINE} bytes")]
    LongLine,
    #[error("header lacks {0}")]
    Missing(&'static str),
    #[error("bad header parameter {0:?}")]
    BadParameter(String),
    #[error("colour space {0} is not 4:2:0 8-bit")]
    ColorSpace(String),
    #[error("picture {0}x{1} exceeds the limits")]
    TooLarge(usize, usize),
    #[error("picture {0}x{1} is too small")]
    TooSmall(usize, usize),
    #[error("expected a FRAME line")]
    NoFrame,
}

#[derive(Debug)]
enum State {
    Header,
    FrameLine,
    Planes,
}

/// Incremental reader of one YUV4MPEG2 stream.
#[derive(Debug)]
pub struct Y4mParser {
    limits: PictureLimits,
    state: State,
    line: Vec<u8>,
    size: Option<(usize, usize)>,
    frame_len: usize,
    buffer: Vec<u8>,
}

impl Y4mParser {
    pub fn new(limits: PictureLimits) -> Self {
        Self {
            limits,
            state: State::Header,
            line: Vec::new(),
            size: None,
            frame_len: 0,
            buffer: Vec::new(),
        }
    }

    /// The stream's picture size once the header has been read.
    pub fn size(&self) -> Option<(usize, usize)> {
        self.size
    }

    /// Feed bytes; complete pictures are appended to `out`. After an error
    /// the stream is unusable.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Picture>) -> Result<(), Y4mError> {
        while !data.is_empty() {
            match self.state {
                State::Header | State::FrameLine => {
                    let Some(end) = data.iter().position(|&b| b == b'\n') else {
                        self.take_line_part(data)?;
                        return Ok(());
                    };
                    self.take_line_part(&data[..end])?;
                    data = &data[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    if matches!(self.state, State::Header) {
                        self.read_header(&line)?;
                    } else if line.starts_with(b"FRAME") {
                        self.buffer = Vec::with_capacity(self.frame_len);
                        self.state = State::Planes;
                    } else {
                        return Err(Y4mError::NoFrame);
                    }
                    self.line = line;
                    self.line.clear();
                }
                State::Planes => {
                    let want = self.frame_len - self.buffer.len();
                    let take = want.min(data.len());
                    self.buffer.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buffer.len() == self.frame_len {
                        let (w, h) = self.size.unwrap_or_default();
                        let planes = std::mem::take(&mut self.buffer);
                        // The length was computed for this size, so this
                        // only fails on sizes the header check refused.
                        let picture = Picture::from_i420(w, h, planes)
                            .map_err(|_| Y4mError::TooSmall(w, h))?;
                        out.push(picture);
                        self.state = State::FrameLine;
                    }
                }
            }
        }
        Ok(())
    }

    fn take_line_part(&mut self, part: &[u8]) -> Result<(), Y4mError> {
        if self.line.len() + part.len() > MAX_LINE {
            return Err(Y4mError::LongLine);
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn read_header(&mut self, line: &[u8]) -> Result<(), Y4mError> {
        let text = std::str::from_utf8(line).map_err(|_| Y4mError::Magic)?;
        let mut fields = text.split(' ').filter(|f| !f.is_empty());
        if fields.next() != Some("YUV4MPEG2") {
            return Err(Y4mError::Magic);
        }
        let (mut width, mut height) = (None, None);
        for field in fields {
            let number = |digits: &str| -> Result<usize, Y4mError> {
                digits
                    .parse()
                    .map_err(|_| Y4mError::BadParameter(field.chars().take(32).collect()))
            };
            if let Some(digits) = field.strip_prefix('W') {
                width = Some(number(digits)?);
            } else if let Some(digits) = field.strip_prefix('H') {
                height = Some(number(digits)?);
            } else if field.starts_with('C') && !is_420_8bit(field) {
                return Err(Y4mError::ColorSpace(field.chars().take(32).collect()));
            }
        }
        let width = width.ok_or(Y4mError::Missing("W"))?;
        let height = height.ok_or(Y4mError::Missing("H"))?;
        if width > self.limits.max_width || height > self.limits.max_height {
            return Err(Y4mError::TooLarge(width, height));
        }
        if width < 2 || height < 2 {
            return Err(Y4mError::TooSmall(width, height));
        }
        self.frame_len =
            Picture::buffer_len(width, height).ok_or(Y4mError::TooLarge(width, height))?;
        self.size = Some((width, height));
        self.state = State::FrameLine;
        Ok(())
    }
}

/// 8-bit 4:2:0 in any chroma siting; a header without `C` means 420jpeg.
fn is_420_8bit(field: &str) -> bool {
    matches!(field, "C420" | "C420jpeg" | "C420mpeg2" | "C420paldv")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::formats::YUVSource;

    fn limits() -> PictureLimits {
        PictureLimits::default()
    }

    fn stream(header: &str, frames: &[&[u8]]) -> Vec<u8> {
        let mut s = header.as_bytes().to_vec();
        s.push(b'\n');
        for f in frames {
            s.extend_from_slice(b"FRAME\n");
            s.extend_from_slice(f);
        }
        s
    }

    #[test]
    fn pictures_come_out_however_the_bytes_are_split() {
        // 4x2: Y 8 bytes, Cb 2, Cr 2.
        let a: Vec<u8> = (0..12).collect();
        let b: Vec<u8> = (100..112).collect();
        let s = stream(
            "YUV4MPEG2 W4 H2 F25:1 Ip A1:1 C420mpeg2 XYSCSS=420MPEG2 XCOLORRANGE=LIMITED",
            &[&a, &b],
        );
        for step in [1, 5, 13, s.len()] {
            let mut p = Y4mParser::new(limits());
            let mut out = Vec::new();
            for chunk in s.chunks(step) {
                p.push(chunk, &mut out).unwrap();
            }
            assert_eq!(out.len(), 2, "step {step}");
            assert_eq!(p.size(), Some((4, 2)));
            assert_eq!(out[0].dimensions(), (4, 2));
            assert_eq!(out[0].luma(3, 1), Some(7));
            assert_eq!(out[0].chroma(2, 0), Some((9, 11)));
            assert_eq!(out[1].luma(0, 0), Some(100));
        }
    }

    #[test]
    fn odd_sizes_use_rounded_up_chroma() {
        // 3x3: Y 9, chroma 2x2 = 4 each → 17 bytes.
        let f: Vec<u8> = (0..17).collect();
        let s = stream("YUV4MPEG2 W3 H3 C420jpeg", &[&f, &f]);
        let mut p = Y4mParser::new(limits());
        let mut out = Vec::new();
        p.push(&s, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].dimensions(), (2, 2));
        assert_eq!(out[1].chroma(1, 1), Some((9, 13)));
    }

    #[test]
    fn bad_streams_are_refused_before_allocating() {
        let cases: &[(&[u8], Y4mError)] = &[
            (b"RIFF....\n", Y4mError::Magic),
            (b"YUV4MPEG2 H2\n", Y4mError::Missing("W")),
            (b"YUV4MPEG2 W4 Hx\n", Y4mError::BadParameter("Hx".into())),
            (
                b"YUV4MPEG2 W4 H2 C444\n",
                Y4mError::ColorSpace("C444".into()),
            ),
            (
                b"YUV4MPEG2 W4 H2 C420p10\n",
                Y4mError::ColorSpace("C420p10".into()),
            ),
            (
                b"YUV4MPEG2 W100000 H100000\n",
                Y4mError::TooLarge(100_000, 100_000),
            ),
            (b"YUV4MPEG2 W1 H1\n", Y4mError::TooSmall(1, 1)),
            (b"YUV4MPEG2 W4 H2\nFRAMX\n", Y4mError::NoFrame),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            let got = Y4mParser::new(limits()).push(input, &mut out);
            assert_eq!(
                got.as_ref(),
                Err(want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let endless = vec![b'Y'; 5000];
        assert_eq!(
            Y4mParser::new(limits()).push(&endless, &mut Vec::new()),
            Err(Y4mError::LongLine)
        );
    }
}
