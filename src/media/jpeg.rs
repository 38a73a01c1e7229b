//! Baseline JPEG (ITU-T T.81) header reading: just enough of the marker
//! segments (§B.2) to describe a frame and to send it as RFC 2435 RTP —
//! size and sampling from SOF0/SOF1 (§B.2.2), quantization tables from DQT
//! (§B.2.4.1), the restart interval from DRI (§B.2.4.4), and where the
//! entropy-coded scan after SOS (§B.2.3) starts and ends.

use std::ops::Range;

/// Why a JPEG could not be described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("no SOI marker")]
    NoSoi,
    #[error("marker segment at {0} runs past the end")]
    Truncated(usize),
    #[error("expected a marker at {0}")]
    NotAMarker(usize),
    #[error("SOF{0} (not baseline/extended sequential DCT) is not supported")]
    UnsupportedProcess(u8),
    #[error("no SOF before SOS")]
    NoFrameHeader,
    #[error("{0} components (1 or 3 supported)")]
    Components(u8),
    #[error("quantization table {0} is used but not defined")]
    MissingTable(u8),
}

impl JpegError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoSoi => "no_soi",
            Self::Truncated(_) => "truncated",
            Self::NotAMarker(_) => "not_a_marker",
            Self::UnsupportedProcess(_) => "unsupported_process",
            Self::NoFrameHeader => "no_frame_header",
            Self::Components(_) => "components",
            Self::MissingTable(_) => "missing_table",
        }
    }
}

/// One image component of the frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Component {
    pub id: u8,
    pub h: u8,
    pub v: u8,
    /// Quantization table selector.
    pub tq: u8,
}

/// What a JPEG carries, with byte ranges into the image it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u16,
    pub height: u16,
    pub components: Vec<Component>,
    /// Table data (zig-zag order, as stored) by selector 0..=3, and whether
    /// each entry is 16-bit.
    pub qtables: [Option<(Range<usize>, bool)>; 4],
    /// Restart interval in MCUs, 0 = none.
    pub restart_interval: u16,
    /// The entropy-coded data: after the SOS header, before EOI.
    pub scan: Range<usize>,
}

impl JpegHeader {
    pub fn parse(data: &[u8]) -> Result<Self, JpegError> {
        if !data.starts_with(&[0xff, 0xd8]) {
            return Err(JpegError::NoSoi);
        }
        let mut at = 2;
        let mut frame: Option<(u16, u16, Vec<Component>)> = None;
        let mut qtables: [Option<(Range<usize>, bool)>; 4] = Default::default();
        let mut restart_interval = 0;
        loop {
            if data.get(at) != Some(&0xff) {
                return Err(JpegError::NotAMarker(at));
            }
            // Any number of 0xFF fill bytes may precede a marker (§B.1.1.2).
            while data.get(at + 1) == Some(&0xff) {
                at += 1;
            }
            let marker = *data.get(at + 1).ok_or(JpegError::Truncated(at))?;
            if matches!(marker, 0x01 | 0xd0..=0xd7) {
                at += 2;
                continue;
            }
            let len_bytes = data.get(at + 2..at + 4).ok_or(JpegError::Truncated(at))?;
            let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
            let body = data
                .get(at + 4..at + 2 + len.max(2))
                .ok_or(JpegError::Truncated(at))?;
            let body_start = at + 4;
            match marker {
                0xc0 | 0xc1 => {
                    let n = *body.get(5).ok_or(JpegError::Truncated(at))?;
                    if n != 1 && n != 3 {
                        return Err(JpegError::Components(n));
                    }
                    let comps = body
                        .get(6..6 + 3 * n as usize)
                        .ok_or(JpegError::Truncated(at))?
                        .chunks_exact(3)
                        .map(|c| Component {
                            id: c[0],
                            h: c[1] >> 4,
                            v: c[1] & 0x0f,
                            tq: c[2] & 0x03,
                        })
                        .collect();
                    frame = Some((
                        u16::from_be_bytes([body[3], body[4]]),
                        u16::from_be_bytes([body[1], body[2]]),
                        comps,
                    ));
                }
                0xc2..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                    return Err(JpegError::UnsupportedProcess(marker - 0xc0));
                }
                0xdb => {
                    let mut i = 0;
                    while let Some(&pq_tq) = body.get(i) {
                        let wide = pq_tq >> 4 != 0;
                        let size = if wide { 128 } else { 64 };
                        let start = body_start + i + 1;
                        if body.len() < i + 1 + size {
                            return Err(JpegError::Truncated(at));
                        }
                        qtables[(pq_tq & 0x03) as usize] = Some((start..start + size, wide));
                        i += 1 + size;
                    }
                }
                0xdd => {
                    let b = body.get(..2).ok_or(JpegError::Truncated(at))?;
                    restart_interval = u16::from_be_bytes([b[0], b[1]]);
                }
                0xda => {
                    let (width, height, components) = frame.ok_or(JpegError::NoFrameHeader)?;
                    for c in &components {
                        if qtables[c.tq as usize].is_none() {
                            return Err(JpegError::MissingTable(c.tq));
                        }
                    }
                    let start = at + 2 + len;
                    let end = if data.ends_with(&[0xff, 0xd9]) {
                        data.len() - 2
                    } else {
                        data.len()
                    };
                    return Ok(Self {
                        width,
                        height,
                        components,
                        qtables,
                        restart_interval,
                        scan: start..end.max(start),
                    });
                }
                _ => {}
            }
            at += 2 + len;
        }
    }
}

/// Width and height from a JPEG's frame header, for `StreamInfo`.
pub fn dimensions(data: &[u8]) -> Option<(u16, u16)> {
    JpegHeader::parse(data).ok().map(|h| (h.width, h.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 4:2:0 baseline JPEG header: SOI, DQT (two 8-bit tables),
    /// SOF0 16x8, DRI 4, SOS, 3 bytes of scan, EOI.
    pub(crate) fn tiny_jpeg() -> Vec<u8> {
        let mut j = vec![0xff, 0xd8];
        j.extend_from_slice(&[0xff, 0xdb, 0x00, 2 + 2 * 65]);
        j.push(0x00);
        j.extend(1..=64u8);
        j.push(0x01);
        j.extend(101..=164u8);
        j.extend_from_slice(&[
            0xff, 0xc0, 0x00, 17, 8, 0x00, 0x08, 0x00, 0x10, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1,
        ]);
        j.extend_from_slice(&[0xff, 0xdd, 0x00, 0x04, 0x00, 0x04]);
        j.extend_from_slice(&[0xff, 0xda, 0x00, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
        j.extend_from_slice(&[0xaa, 0xbb, 0xcc]);
        j.extend_from_slice(&[0xff, 0xd9]);
        j
    }

    #[test]
    fn reads_frame_tables_restart_and_scan() {
        let j = tiny_jpeg();
        let h = JpegHeader::parse(&j).unwrap();
        assert_eq!((h.width, h.height), (16, 8));
        assert_eq!(h.components.len(), 3);
        assert_eq!((h.components[0].h, h.components[0].v), (2, 2));
        assert_eq!(h.components[1].tq, 1);
        assert_eq!(h.restart_interval, 4);
        assert_eq!(&j[h.scan.clone()], &[0xaa, 0xbb, 0xcc]);
        let (t1, wide) = h.qtables[1].clone().unwrap();
        assert!(!wide);
        assert_eq!(j[t1.start], 101);
        assert_eq!(j[t1.end - 1], 164);
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        assert_eq!(JpegHeader::parse(b"nope"), Err(JpegError::NoSoi));
        let j = tiny_jpeg();
        for cut in 2..40 {
            assert!(JpegHeader::parse(&j[..cut]).is_err(), "cut at {cut}");
        }
        let mut progressive = j.clone();
        let sof = progressive
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .unwrap();
        progressive[sof + 1] = 0xc2;
        assert_eq!(
            JpegHeader::parse(&progressive),
            Err(JpegError::UnsupportedProcess(2))
        );
    }
}
