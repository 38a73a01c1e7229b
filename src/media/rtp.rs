//! RTP fixed header parsing (RFC 3550 §5.1) and sequence tracking
//! (RFC 3550 §6.4.1, Appendix A.1), sans-IO.
//!
//! The payload of a parsed packet is a slice of the datagram's `Bytes`, so
//! nothing is copied on the way to the demuxer. [`peek_ssrc`] and
//! [`is_rtcp`] look at a few header bytes only, so a shared receive port can
//! route a datagram to its stream (and keep RTCP away from the RTP parser,
//! RFC 5761 §4) before any real parsing.

use bytes::Bytes;

/// Why a datagram is not a usable RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet of {0} bytes is shorter than the 12-byte RTP header")]
    TooShort(usize),
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("{count} CSRC entries overrun a {len}-byte packet")]
    CsrcOverrun { count: u8, len: usize },
    #[error("header extension overruns the packet")]
    ExtensionOverrun,
    #[error("padding length {padding} invalid for {available} payload bytes")]
    BadPadding { padding: u8, available: usize },
    #[error("packet is RTCP (packet type {0}), not RTP")]
    Rtcp(u8),
}

impl RtpError {
    /// Short static label for metrics (`camgate_rtp_errors{kind=…}`).
    pub fn kind(&self) -> &'static str {
        match self {
            RtpError::TooShort(_) => "too_short",
            RtpError::BadVersion(_) => "bad_version",
            RtpError::CsrcOverrun { .. } => "csrc_overrun",
            RtpError::ExtensionOverrun => "extension_overrun",
            RtpError::BadPadding { .. } => "bad_padding",
            RtpError::Rtcp(_) => "rtcp",
        }
    }
}

/// One RTP packet; `payload` and `extension` share the datagram's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpPacket {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The raw CSRC list (4 bytes per entry); see [`RtpPacket::csrcs`].
    pub csrc: Bytes,
    /// Header extension: the 16-bit profile-defined value and its data.
    pub extension: Option<(u16, Bytes)>,
    pub payload: Bytes,
}

const HEADER_LEN: usize = 12;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl RtpPacket {
    /// Parse a datagram (or an RFC 4571 frame body) as RTP.
    pub fn parse(data: Bytes) -> Result<RtpPacket, RtpError> {
        let len = data.len();
        if len < HEADER_LEN {
            return Err(RtpError::TooShort(len));
        }
        let b0 = data[0];
        let b1 = data[1];
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        if is_rtcp(&data) {
            return Err(RtpError::Rtcp(b1));
        }
        let padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = b0 & 0x0f;
        let sequence = be16(&data, 2).ok_or(RtpError::TooShort(len))?;
        let timestamp = be32(&data, 4).ok_or(RtpError::TooShort(len))?;
        let ssrc = be32(&data, 8).ok_or(RtpError::TooShort(len))?;

        let csrc_end = HEADER_LEN + 4 * usize::from(csrc_count);
        if csrc_end > len {
            return Err(RtpError::CsrcOverrun {
                count: csrc_count,
                len,
            });
        }
        let csrc = data.slice(HEADER_LEN..csrc_end);
        let mut offset = csrc_end;

        let extension = if has_extension {
            let profile = be16(&data, offset).ok_or(RtpError::ExtensionOverrun)?;
            let words = be16(&data, offset + 2).ok_or(RtpError::ExtensionOverrun)?;
            let start = offset + 4;
            let end = start + 4 * usize::from(words);
            if end > len {
                return Err(RtpError::ExtensionOverrun);
            }
            offset = end;
            Some((profile, data.slice(start..end)))
        } else {
            None
        };

        let mut end = len;
        if padding {
            // §5.1: the last octet counts the padding, itself included, so 0
            // is as invalid as a count reaching into the header.
            let pad = data[len - 1];
            let available = len - offset;
            if pad == 0 || usize::from(pad) > available {
                return Err(RtpError::BadPadding {
                    padding: pad,
                    available,
                });
            }
            end = len - usize::from(pad);
        }

        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            sequence,
            timestamp,
            ssrc,
            csrc,
            extension,
            payload: data.slice(offset..end),
        })
    }

    /// The contributing sources, in header order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.csrc
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// The SSRC of a datagram that looks like RTP, without parsing further; for
/// routing on a shared port. `None` for RTCP, other versions, short data.
pub fn peek_ssrc(data: &[u8]) -> Option<u32> {
    if data.len() < HEADER_LEN || data[0] >> 6 != 2 || is_rtcp(data) {
        return None;
    }
    be32(data, 8)
}

/// Whether a version-2 datagram is RTCP rather than RTP.
///
/// RFC 5761 §4: RTCP packet types 192–223 (SR 200 … PSFB 206 and their
/// neighbours) occupy the byte where RTP has marker + payload type, which is
/// why RTP payload types 64–95 are never used on a muxed port.
pub fn is_rtcp(data: &[u8]) -> bool {
    match data {
        [b0, b1, ..] => b0 >> 6 == 2 && (192..=223).contains(b1),
        _ => false,
    }
}

/// What one packet's sequence number means relative to the stream so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// The first packet, or the next one expected.
    InOrder,
    /// Packets were skipped: `lost` numbers between the previous highest and
    /// this one never arrived (yet).
    Gap { lost: u16 },
    /// Already seen; drop it.
    Duplicate,
    /// Older than the highest seen, within the misorder window; arrives after
    /// its gap was declared, so a receiver without a jitter buffer drops it.
    Late,
    /// A jump too large to be loss or misorder (RFC 3550 A.1): the first such
    /// packet is held on probation and reported as this.
    Probation,
    /// Two consecutive packets confirmed a new sequence space (source
    /// restarted); the stream is discontinuous here.
    Restart,
}

impl SeqEvent {
    /// Whether the packet should be processed at all.
    pub fn accept(self) -> bool {
        matches!(
            self,
            SeqEvent::InOrder | SeqEvent::Gap { .. } | SeqEvent::Restart
        )
    }

    /// Whether data before this packet may be missing.
    pub fn discontinuity(self) -> bool {
        matches!(self, SeqEvent::Gap { .. } | SeqEvent::Restart)
    }
}

/// Extended sequence numbers, loss and duplicate counting (RFC 3550 A.1).
///
/// A 64-bit window of recently received numbers tells a duplicate from a
/// late packet, so retransmissions or UDP duplicates are not counted as
/// recovered losses.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    started: bool,
    max_seq: u16,
    cycles: u64,
    /// Bit i set: `max_seq - i` was received.
    window: u64,
    probation_next: Option<u16>,
    /// Packets accepted (in order or after a gap).
    pub received: u64,
    /// Sum of all gaps.
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
    pub restarts: u64,
}

/// RFC 3550 A.1 defaults: beyond these, a jump is a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

impl SeqTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest sequence number seen, extended with the wrap count.
    pub fn extended_max(&self) -> u64 {
        (self.cycles << 16) | u64::from(self.max_seq)
    }

    fn restart_at(&mut self, seq: u16) {
        self.started = true;
        self.max_seq = seq;
        self.window = 1;
        self.probation_next = None;
        self.received += 1;
    }

    /// Account for one packet's sequence number.
    pub fn update(&mut self, seq: u16) -> SeqEvent {
        if !self.started {
            self.restart_at(seq);
            return SeqEvent::InOrder;
        }
        let ahead = seq.wrapping_sub(self.max_seq);
        if ahead == 0 {
            self.duplicates += 1;
            return SeqEvent::Duplicate;
        }
        if ahead < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += 1;
            }
            self.window = if ahead >= 64 {
                1
            } else {
                (self.window << ahead) | 1
            };
            self.max_seq = seq;
            self.received += 1;
            self.probation_next = None;
            if ahead == 1 {
                return SeqEvent::InOrder;
            }
            self.lost += u64::from(ahead - 1);
            return SeqEvent::Gap { lost: ahead - 1 };
        }
        let behind = self.max_seq.wrapping_sub(seq);
        if behind <= MAX_MISORDER {
            if behind < 64 && self.window & (1u64 << behind) != 0 {
                self.duplicates += 1;
                return SeqEvent::Duplicate;
            }
            if behind < 64 {
                self.window |= 1u64 << behind;
            }
            self.late += 1;
            return SeqEvent::Late;
        }
        if self.probation_next == Some(seq) {
            self.restarts += 1;
            self.cycles = 0;
            self.restart_at(seq);
            return SeqEvent::Restart;
        }
        self.probation_next = Some(seq.wrapping_add(1));
        SeqEvent::Probation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(extra_b0: u8, b1: u8, tail: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | extra_b0, b1, 0x12, 0x34, 0, 0, 0x0e, 0x10];
        v.extend_from_slice(&0x05F5_ED76u32.to_be_bytes());
        v.extend_from_slice(tail);
        v
    }

    #[test]
    fn parses_fixed_header_and_payload_slice() {
        let buf = Bytes::from(packet(0, 0x80 | 96, b"hello"));
        let p = RtpPacket::parse(buf.clone()).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 96);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.timestamp, 3600);
        assert_eq!(p.ssrc, 0x05F5_ED76);
        assert_eq!(&p.payload[..], b"hello");
        assert_eq!(p.payload.as_ptr(), buf[12..].as_ptr(), "payload is a slice");
        assert_eq!(peek_ssrc(&buf), Some(0x05F5_ED76));
    }

    #[test]
    fn csrc_extension_padding() {
        let mut tail = Vec::new();
        tail.extend_from_slice(&1u32.to_be_bytes());
        tail.extend_from_slice(&2u32.to_be_bytes());
        tail.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        tail.extend_from_slice(b"pay");
        tail.extend_from_slice(&[0, 0, 3]);
        let p = RtpPacket::parse(Bytes::from(packet(0x30 | 2, 96, &tail))).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            p.extension,
            Some((0xbede, Bytes::from_static(&[9, 9, 9, 9])))
        );
        assert_eq!(&p.payload[..], b"pay");
    }

    #[test]
    fn rejects_bad_input() {
        let e = |v: Vec<u8>| RtpPacket::parse(Bytes::from(v)).unwrap_err().kind();
        assert_eq!(e(vec![0x80; 5]), "too_short");
        assert_eq!(
            e(packet(0, 96, b"")[..].iter().map(|b| b & 0x3f).collect()),
            "bad_version"
        );
        assert_eq!(e(packet(0x03, 96, b"")), "csrc_overrun");
        assert_eq!(e(packet(0x10, 96, &[0, 0, 0, 5])), "extension_overrun");
        assert_eq!(e(packet(0x10, 96, &[0, 0])), "extension_overrun");
        assert_eq!(e(packet(0x20, 96, &[1, 2, 9])), "bad_padding");
        assert_eq!(e(packet(0x20, 96, &[0])), "bad_padding");
        assert_eq!(e(packet(0, 200, &[0; 16])), "rtcp");
        assert!(is_rtcp(&[0x81, 201, 0, 7]));
        assert!(!is_rtcp(&[0x80, 0x80 | 96]));
        assert_eq!(peek_ssrc(&packet(0, 200, &[])), None);
        // Padding may consume the whole payload.
        let p = RtpPacket::parse(Bytes::from(packet(0x20, 96, &[0, 2]))).unwrap();
        assert!(p.payload.is_empty());
    }

    #[test]
    fn seq_tracking() {
        let mut t = SeqTracker::new();
        assert_eq!(t.update(65534), SeqEvent::InOrder);
        assert_eq!(t.update(65535), SeqEvent::InOrder);
        assert_eq!(t.update(1), SeqEvent::Gap { lost: 1 });
        assert_eq!(t.extended_max(), (1 << 16) | 1);
        assert_eq!(t.update(0), SeqEvent::Late);
        assert_eq!(t.update(0), SeqEvent::Duplicate);
        assert_eq!(t.update(1), SeqEvent::Duplicate);
        assert_eq!(t.update(2), SeqEvent::InOrder);
        assert_eq!(t.update(30000), SeqEvent::Probation);
        assert_eq!(t.update(3), SeqEvent::InOrder);
        assert_eq!(t.update(40000), SeqEvent::Probation);
        assert_eq!(t.update(40001), SeqEvent::Restart);
        assert_eq!(t.update(40002), SeqEvent::InOrder);
        assert_eq!((t.lost, t.late, t.duplicates, t.restarts), (1, 1, 2, 1));
    }
}
