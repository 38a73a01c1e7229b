//! RFC 4571 §2 framing of RTP over a TCP byte stream — a 16-bit big-endian
//! length before each packet — as GB/T 28181-2016 Annex F requires for
//! `TCP/RTP/AVP`, sans-IO.
//!
//! The driver reads straight into [`Rfc4571Decoder::read_buf`]; frames come
//! out as `Bytes` slices of that buffer, so the only copy is the tail of a
//! partial frame when a fresh block is started (counted in
//! [`FramingStats::bytes_copied`]).
//!
//! A frame whose body is not RTP/RTCP version 2 means the stream is out of
//! step (a device that sends unframed RTP, or a corrupted stream): the
//! decoder skips a byte at a time until a plausible frame starts again,
//! and gives up after [`MAX_RESYNC`] bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Smallest frame that can be RTP (its fixed header).
pub const MIN_FRAME: usize = 12;
/// Bytes skipped looking for a frame boundary before the stream is
/// declared unusable.
pub const MAX_RESYNC: usize = 64 * 1024;
/// Read block: a few dozen frames per allocation. Small, because a block
/// stays resident while any frame sliced from it lives (the GOP cache pins
/// the block its keyframe starts in and every one since; with 1 MiB blocks
/// that was one to two MiB per stream, issue 17).
const BLOCK: usize = 32 * 1024;
/// Room wanted before each read. Below it a fresh block is started and the
/// partial frame at the end moves there: at most this much copied per
/// block (~2 % of the bytes for 1,400-byte frames), and at most this much
/// left unused at the end of a block.
const READ_ROOM: usize = 4 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("frame of {len} bytes is shorter than an RTP header")]
    TooShort { len: usize },
    #[error("frame of {len} bytes is above the {max} byte limit")]
    TooLong { len: usize, max: usize },
    #[error("frame body is not RTP version 2 (first byte {first:#04x})")]
    NotRtp { first: u8 },
    #[error("no frame boundary within {MAX_RESYNC} bytes")]
    Desynchronized,
}

impl FramingError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "frame_too_short",
            Self::TooLong { .. } => "frame_too_long",
            Self::NotRtp { .. } => "frame_not_rtp",
            Self::Desynchronized => "desynchronized",
        }
    }

    /// Whether the connection is beyond repair.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Desynchronized)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramingStats {
    pub frames: u64,
    pub bytes_in: u64,
    pub bytes_copied: u64,
    pub bytes_skipped: u64,
    pub errors: u64,
}

/// Splits a TCP byte stream into RTP packets.
#[derive(Debug)]
pub struct Rfc4571Decoder {
    buf: BytesMut,
    max_frame: usize,
    skipping: usize,
    stats: FramingStats,
}

impl Default for Rfc4571Decoder {
    fn default() -> Self {
        Self::new(usize::from(u16::MAX))
    }
}

impl Rfc4571Decoder {
    /// Frames longer than `max_frame` (at most 65,535) are errors.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame: max_frame.clamp(MIN_FRAME, usize::from(u16::MAX)),
            skipping: 0,
            stats: FramingStats::default(),
        }
    }

    pub fn stats(&self) -> FramingStats {
        self.stats
    }

    /// The buffer to read into (`AsyncReadExt::read_buf`); there is room
    /// for at least [`READ_ROOM`] bytes (a larger frame arrives over
    /// several reads).
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_ROOM {
            // A block nobody references any more is reclaimed in place;
            // otherwise the partial frame at the end moves to a new one.
            let pending = self.buf.len() as u64;
            let before = self.buf.as_ptr();
            self.buf.reserve(BLOCK);
            if self.buf.as_ptr() != before {
                self.stats.bytes_copied += pending;
            }
        }
        &mut self.buf
    }

    /// Account for `n` bytes just read into [`read_buf`](Self::read_buf).
    pub fn filled(&mut self, n: usize) {
        self.stats.bytes_in += n as u64;
    }

    /// Feed bytes from elsewhere (tests, fuzzing, files): copied in.
    pub fn push(&mut self, data: &[u8]) {
        self.read_buf().extend_from_slice(data);
        self.stats.bytes_in += data.len() as u64;
    }

    /// The next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FramingError> {
        loop {
            let Some(head) = self.buf.get(..2) else {
                return Ok(None);
            };
            let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
            let problem = if len == 0 {
                // Allowed by §2 but carries nothing: skip the prefix.
                self.buf.advance(2);
                continue;
            } else if len < MIN_FRAME {
                Some(FramingError::TooShort { len })
            } else if len > self.max_frame {
                Some(FramingError::TooLong {
                    len,
                    max: self.max_frame,
                })
            } else {
                match self.buf.get(2) {
                    None => return Ok(None),
                    Some(b) if b >> 6 != 2 => Some(FramingError::NotRtp { first: *b }),
                    Some(_) => None,
                }
            };
            if let Some(e) = problem {
                return Err(self.skip_byte(e));
            }
            if self.buf.len() < 2 + len {
                return Ok(None);
            }
            self.buf.advance(2);
            self.skipping = 0;
            self.stats.frames += 1;
            return Ok(Some(self.buf.split_to(len).freeze()));
        }
    }

    fn skip_byte(&mut self, e: FramingError) -> FramingError {
        self.buf.advance(1);
        self.skipping += 1;
        self.stats.bytes_skipped += 1;
        if self.skipping > MAX_RESYNC {
            self.stats.errors += 1;
            return FramingError::Desynchronized;
        }
        // One error per desync episode is counted, not one per byte.
        if self.skipping == 1 {
            self.stats.errors += 1;
        }
        e
    }

    /// Bytes buffered that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Prefix `packet` with its RFC 4571 length; `None` if it cannot be framed.
pub fn frame(packet: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let len = u16::try_from(packet.len()).ok()?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(n: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0x80, 96, 0, n];
        v.resize(len, n);
        v
    }

    #[test]
    fn splits_any_chunking() {
        let mut stream = Vec::new();
        for (i, len) in [12usize, 1400, 300, 65_535].iter().enumerate() {
            frame(&rtp(i as u8, *len), &mut stream).unwrap();
        }
        for chunk in [1, 7, 1500, stream.len()] {
            let mut d = Rfc4571Decoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            let lens: Vec<usize> = got.iter().map(|f| f.len()).collect();
            assert_eq!(lens, [12, 1400, 300, 65_535], "chunk {chunk}");
            assert_eq!(got[1][3], 1);
            assert_eq!(d.pending(), 0);
            assert_eq!(d.stats().frames, 4);
        }
    }

    #[test]
    fn frames_are_slices_of_the_read_buffer() {
        let mut d = Rfc4571Decoder::default();
        let mut s = Vec::new();
        frame(&rtp(1, 100), &mut s).unwrap();
        frame(&rtp(2, 100), &mut s).unwrap();
        d.read_buf().extend_from_slice(&s);
        d.filled(s.len());
        let a = d.next_frame().unwrap().unwrap();
        let b = d.next_frame().unwrap().unwrap();
        assert_eq!(a.as_ptr() as usize + a.len() + 2, b.as_ptr() as usize);
        assert_eq!(d.stats().bytes_copied, 0);
    }

    #[test]
    fn resyncs_after_garbage_and_gives_up_eventually() {
        let mut d = Rfc4571Decoder::default();
        let mut s = vec![0x00, 0x05, 1, 2, 3, 4, 5];
        frame(&rtp(9, 20), &mut s).unwrap();
        d.push(&s);
        let mut errors = Vec::new();
        let good = loop {
            match d.next_frame() {
                Ok(Some(f)) => break f,
                Ok(None) => panic!("frame lost"),
                Err(e) => errors.push(e.kind()),
            }
        };
        assert_eq!(good.len(), 20);
        assert_eq!(errors[0], "frame_too_short");
        assert_eq!(d.stats().errors, 1);
        assert_eq!(d.stats().bytes_skipped, 7);

        let mut d = Rfc4571Decoder::default();
        d.push(&vec![0x01; MAX_RESYNC + 10]);
        let mut fatal = false;
        for _ in 0..MAX_RESYNC + 10 {
            if let Err(e) = d.next_frame()
                && e.is_fatal()
            {
                fatal = true;
                break;
            }
        }
        assert!(fatal);
    }
}
