//! The FA F5 framing of the platform link (手机看店 spec V1.3 §7.3, §7.4).
//!
//! Every message on the device ↔ platform TCP link is
//!
//! ```text
//! FA F5 | CMD u8 | SEQ u16 BE | Remark u8 (0) | LEN u16 BE | DATA (LEN bytes, UTF-8 XML) | MD5(header ‖ DATA), 16 bytes
//! ```
//!
//! This module is sans-IO: [`encode`] turns a message into bytes and
//! [`FrameDecoder`] turns received bytes into [`Packet`]s.
//!
//! Resync policy: none. The framing has no escape or marker that could be
//! trusted after a bad header or digest (`FA F5` may appear inside XML), so
//! any decode error is fatal to the link: the driver counts it, logs it and
//! closes the connection; the device reconnects and logs in again (§7.4).

use bytes::{Buf, Bytes, BytesMut};
use md5::{Digest, Md5};

pub const HEAD: [u8; 2] = [0xFA, 0xF5];
/// HEAD, CMD, SEQ, Remark, LEN.
pub const HEADER_LEN: usize = 8;
pub const DIGEST_LEN: usize = 16;
/// LEN is a u16, so no body can exceed this.
pub const MAX_BODY: usize = u16::MAX as usize;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub cmd: u8,
    pub seq: u16,
    /// The XML body, checked to be UTF-8.
    pub body: Bytes,
}

impl Packet {
    pub fn body_str(&self) -> &str {
        // Checked in the decoder; an empty string is the safe fallback.
        std::str::from_utf8(&self.body).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad head {0:02X?}, expected FA F5")]
    BadHead([u8; 2]),
    #[error("body of {len} bytes exceeds the limit of {max}")]
    Oversize { len: usize, max: usize },
    #[error("MD5 digest mismatch (cmd {cmd:#04x}, seq {seq})")]
    BadDigest { cmd: u8, seq: u16 },
    #[error("body is not UTF-8 (cmd {cmd:#04x}, seq {seq})")]
    NotUtf8 { cmd: u8, seq: u16 },
}

impl FrameError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::BadHead(_) => "bad_head",
            FrameError::Oversize { .. } => "oversize",
            FrameError::BadDigest { .. } => "bad_digest",
            FrameError::NotUtf8 { .. } => "not_utf8",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("body of {0} bytes does not fit the 16-bit LEN")]
pub struct BodyTooLong(pub usize);

/// Serialize one message, digest included.
pub fn encode(cmd: u8, seq: u16, body: &[u8]) -> Result<Bytes, BodyTooLong> {
    let len = u16::try_from(body.len()).map_err(|_| BodyTooLong(body.len()))?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len() + DIGEST_LEN);
    out.extend_from_slice(&HEAD);
    out.extend_from_slice(&[cmd]);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    let digest = Md5::digest(&out[..]);
    out.extend_from_slice(&digest);
    Ok(out.freeze())
}

/// Accumulates stream bytes and yields whole, verified packets.
pub struct FrameDecoder {
    buf: BytesMut,
    max_body: usize,
    failed: bool,
}

impl FrameDecoder {
    /// `max_body` caps LEN below the wire maximum; bodies longer than this
    /// are refused before they are buffered.
    pub fn new(max_body: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_body: max_body.min(MAX_BODY),
            failed: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes received but not yet part of a whole packet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet, `None` when more bytes are needed. After an
    /// error the decoder stays failed (see the module's resync policy).
    pub fn next_packet(&mut self) -> Result<Option<Packet>, FrameError> {
        if self.failed {
            return Ok(None);
        }
        let result = self.decode();
        if result.is_err() {
            self.failed = true;
            self.buf.clear();
        }
        result
    }

    fn decode(&mut self) -> Result<Option<Packet>, FrameError> {
        let head = match self.buf.get(..2) {
            Some(h) => [h[0], h[1]],
            None => return Ok(None),
        };
        if head != HEAD {
            return Err(FrameError::BadHead(head));
        }
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let cmd = header[2];
        let seq = u16::from_be_bytes([header[3], header[4]]);
        let len = usize::from(u16::from_be_bytes([header[6], header[7]]));
        if len > self.max_body {
            return Err(FrameError::Oversize {
                len,
                max: self.max_body,
            });
        }
        let total = HEADER_LEN + len + DIGEST_LEN;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let signed = HEADER_LEN + len;
        let digest = Md5::digest(&self.buf[..signed]);
        if digest[..] != self.buf[signed..total] {
            return Err(FrameError::BadDigest { cmd, seq });
        }
        let mut frame = self.buf.split_to(total).freeze();
        frame.advance(HEADER_LEN);
        let body = frame.slice(..len);
        if std::str::from_utf8(&body).is_err() {
            return Err(FrameError::NotUtf8 { cmd, seq });
        }
        Ok(Some(Packet { cmd, seq, body }))
    }
}

/// A sender's SEQ: 0…65535 then 0 again, advanced only by requests
/// (responses echo the request's SEQ and leave the counter alone).
#[derive(Debug, Default, Clone)]
pub struct SeqCounter {
    next: u16,
}

impl SeqCounter {
    pub fn starting_at(next: u16) -> Self {
        Self { next }
    }

    /// The SEQ for a new request.
    pub fn next_request(&mut self) -> u16 {
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_header_body_and_digest() {
        let body = b"<HEARTBEAT_RES/>";
        let bytes = encode(0x33, 0x0102, body).unwrap();
        assert_eq!(&bytes[..8], &[0xFA, 0xF5, 0x33, 0x01, 0x02, 0x00, 0x00, 16]);
        assert_eq!(&bytes[8..24], body);
        let digest = Md5::digest(&bytes[..24]);
        assert_eq!(&bytes[24..], &digest[..]);
        assert_eq!(bytes.len(), HEADER_LEN + body.len() + DIGEST_LEN);
    }

    #[test]
    fn decodes_byte_by_byte_and_back_to_back() {
        let a = encode(0x31, 7, "<LOGIN_REQ>设备</LOGIN_REQ>".as_bytes()).unwrap();
        let b = encode(0x33, 65535, b"").unwrap();
        let mut wire = a.to_vec();
        wire.extend_from_slice(&b);
        let mut d = FrameDecoder::new(MAX_BODY);
        let mut got = Vec::new();
        for byte in &wire {
            d.push(std::slice::from_ref(byte));
            while let Some(p) = d.next_packet().unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].cmd, got[0].seq), (0x31, 7));
        assert_eq!(got[0].body_str(), "<LOGIN_REQ>设备</LOGIN_REQ>");
        assert_eq!(
            (got[1].cmd, got[1].seq, got[1].body.len()),
            (0x33, 65535, 0)
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn wrong_digest_is_rejected_and_decoder_stays_closed() {
        let mut bytes = encode(0x35, 1, b"<VIDEO_PLAY_REQ/>").unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let mut d = FrameDecoder::new(MAX_BODY);
        d.push(&bytes);
        assert_eq!(
            d.next_packet(),
            Err(FrameError::BadDigest { cmd: 0x35, seq: 1 })
        );
        d.push(&encode(0x33, 2, b"").unwrap());
        assert_eq!(d.next_packet(), Ok(None));
    }

    #[test]
    fn tampered_body_fails_digest() {
        let mut bytes = encode(0x64, 3, b"<PtzDirection>1</PtzDirection>")
            .unwrap()
            .to_vec();
        bytes[HEADER_LEN + 15] = b'2';
        let mut d = FrameDecoder::new(MAX_BODY);
        d.push(&bytes);
        assert_eq!(d.next_packet().unwrap_err().kind(), "bad_digest");
    }

    #[test]
    fn bad_head_and_oversize_are_typed() {
        let mut d = FrameDecoder::new(MAX_BODY);
        d.push(&[0x47, 0x45, 0x54]);
        assert_eq!(d.next_packet(), Err(FrameError::BadHead([0x47, 0x45])));

        let mut d = FrameDecoder::new(1024);
        d.push(&[0xFA, 0xF5, 0x31, 0, 0, 0, 0x04, 0x01]);
        assert_eq!(
            d.next_packet(),
            Err(FrameError::Oversize {
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn non_utf8_body_is_refused() {
        let mut d = FrameDecoder::new(MAX_BODY);
        d.push(&encode(0x31, 0, &[0xC3, 0x28]).unwrap());
        assert_eq!(d.next_packet().unwrap_err().kind(), "not_utf8");
    }

    #[test]
    fn seq_wraps_and_only_requests_advance_it() {
        let mut s = SeqCounter::starting_at(65534);
        assert_eq!(s.next_request(), 65534);
        assert_eq!(s.next_request(), 65535);
        assert_eq!(s.next_request(), 0);
        assert_eq!(s.next_request(), 1);
        let mut fresh = SeqCounter::default();
        assert_eq!(fresh.next_request(), 0);
    }

    #[test]
    fn body_longer_than_len_field_is_refused() {
        assert_eq!(
            encode(0x31, 0, &vec![b'a'; MAX_BODY + 1]),
            Err(BodyTooLong(MAX_BODY + 1))
        );
        assert!(encode(0x31, 0, &vec![b'a'; MAX_BODY]).is_ok());
    }
}
