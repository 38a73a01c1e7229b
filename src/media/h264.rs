//! H.264 helpers: NAL unit header (ITU-T H.264 §7.3.1), Annex B byte-stream
//! splitting (Annex B.1/B.2), sequence parameter set summary (§7.3.2.1.1,
//! parsed by `h264-reader`), and RFC 6184 depacketization (§5.6 single NAL,
//! §5.7.1 STAP-A, §5.8 FU-A).
//!
//! The splitter is streaming and zero-copy: input arrives as arbitrary
//! `Bytes` pieces (PES payloads, RTP payloads), start codes may straddle
//! pieces, and each NAL unit comes out as a [`Chunks`] of slices of them.

use bytes::Bytes;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitReader, decode_nal};

use super::frame::Chunks;

pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;
/// RFC 6184 aggregation and fragmentation types.
pub const NAL_STAP_A: u8 = 24;
pub const NAL_FU_A: u8 = 28;

/// `nal_unit_type` from the first header byte.
pub fn nal_type(header: u8) -> u8 {
    header & 0x1f
}

/// Whether a NAL unit (as its first byte) is an IDR slice.
pub fn is_idr(header: u8) -> bool {
    nal_type(header) == NAL_IDR
}

/// Whether a NAL unit (as its first byte) is an SPS or PPS.
pub fn is_parameter_set(header: u8) -> bool {
    matches!(nal_type(header), NAL_SPS | NAL_PPS)
}

/// Whether a VCL (slice) unit, given its first bytes.
pub fn is_vcl(header: u8) -> bool {
    matches!(nal_type(header), 1..=5)
}

/// Whether this unit opens a new access unit when the one being assembled
/// already holds a slice (§7.4.1.2.3): AUD, SPS, PPS, SEI and types 14–18
/// always do; a slice does when `first_mb_in_slice` is 0, i.e. when the
/// first bit after the header (its ue(v) code) is 1. `head` is the unit's
/// first two bytes or more.
pub fn first_in_access_unit(head: &[u8]) -> bool {
    let Some(&h) = head.first() else { return false };
    match nal_type(h) {
        NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD | 14..=18 => true,
        1..=5 => head.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// Streaming Annex B splitter: pieces in, NAL units (without start codes
/// and without the zero bytes that precede a start code) out.
///
/// Bytes before the first start code are discarded: they are the tail of a
/// unit whose beginning was never seen. Each unit can carry a tag (a PES
/// timestamp, say) given with [`AnnexBSplitter::set_tag`] before the start
/// code that opens it: MPEG systems attach a timestamp to the first unit
/// that *starts* after it, wherever the previous one ends.
#[derive(Debug)]
pub struct AnnexBSplitter<T: Copy = ()> {
    cur: Chunks,
    in_nal: bool,
    /// Zero bytes at the very end of what was pushed so far; they may be the
    /// first bytes of a start code continuing in the next piece.
    zeros: usize,
    /// Start codes seen; the unit in progress has index `started - 1`.
    started: u64,
    next_tag: Option<T>,
    cur_tag: Option<T>,
}

impl<T: Copy> Default for AnnexBSplitter<T> {
    fn default() -> Self {
        Self {
            cur: Chunks::new(),
            in_nal: false,
            zeros: 0,
            started: 0,
            next_tag: None,
            cur_tag: None,
        }
    }
}

/// A NAL unit out of [`AnnexBSplitter`]: its bytes, its index in the
/// stream (count of start codes before it), and its tag.
#[derive(Debug, Clone)]
pub struct SplitNal<T> {
    pub data: Chunks,
    pub index: u64,
    pub tag: Option<T>,
}

impl<T: Copy> AnnexBSplitter<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tag the next unit to start.
    pub fn set_tag(&mut self, tag: T) {
        self.next_tag = Some(tag);
    }

    /// Feed one piece; every NAL unit completed by it goes to `emit`.
    ///
    /// Start codes inside the piece are found with a SIMD substring search
    /// (in coded slice data `00 00 01` never occurs, and the search skips
    /// over it at memory speed); only one that begins in the zeros that
    /// ended the previous piece needs a look of its own.
    pub fn push(&mut self, data: &Bytes, mut emit: impl FnMut(SplitNal<T>)) {
        let bytes: &[u8] = data;
        let mut nal_start = 0usize;
        let mut from = 0usize;
        // The `01` of a start code whose zeros began in the previous piece.
        let mut straddling = match bytes {
            [1, ..] if self.zeros >= 2 => Some(0),
            [0, 1, ..] if self.zeros >= 1 => Some(1),
            _ => None,
        };
        loop {
            let one = match straddling.take() {
                Some(one) => one,
                None => match bytes.get(from..).and_then(|rest| START_CODE.find(rest)) {
                    Some(at) => from + at + 2,
                    None => break,
                },
            };
            from = one + 1;
            // Two or more: a zero_byte before a start code belongs to it.
            let zeros = zero_run_before(bytes, one, self.zeros);
            if self.in_nal {
                let here = one - nal_start;
                let in_piece = zeros.min(here);
                self.cur.push(data.slice(nal_start..one - in_piece));
                let carried = zeros - in_piece;
                let keep = self.cur.len().saturating_sub(carried);
                self.cur.truncate(keep);
                self.emit_current(&mut emit);
            }
            self.in_nal = true;
            self.started += 1;
            self.cur_tag = self.next_tag.take();
            nal_start = one + 1;
        }
        if self.in_nal && nal_start < bytes.len() {
            self.cur.push(data.slice(nal_start..));
        }
        // Zeros at the end may open a start code finishing in the next
        // piece; only those after the last start code count.
        let tail = bytes
            .get(nal_start..)
            .unwrap_or_default()
            .iter()
            .rev()
            .take_while(|b| **b == 0)
            .count();
        self.zeros = if nal_start == 0 && tail == bytes.len() {
            self.zeros + tail
        } else {
            tail
        };
    }

    fn emit_current(&mut self, emit: &mut impl FnMut(SplitNal<T>)) {
        let data = std::mem::take(&mut self.cur);
        if !data.is_empty() {
            emit(SplitNal {
                data,
                index: self.started.wrapping_sub(1),
                tag: self.cur_tag,
            });
        }
    }

    /// The stream (or the access unit) ended: the unit in progress is
    /// complete. Trailing zero bytes are `trailing_zero_8bits`, not data.
    pub fn finish(&mut self, mut emit: impl FnMut(SplitNal<T>)) {
        if self.in_nal {
            let keep = self.cur.len().saturating_sub(self.zeros);
            self.cur.truncate(keep);
            self.emit_current(&mut emit);
        }
        self.in_nal = false;
        self.zeros = 0;
        self.cur_tag = None;
    }

    /// Forget everything (after loss): the next unit starts at a start code.
    pub fn reset(&mut self) {
        self.cur.clear();
        self.in_nal = false;
        self.zeros = 0;
        self.next_tag = None;
        self.cur_tag = None;
    }

    /// Bytes of the unit in progress.
    pub fn pending_len(&self) -> usize {
        self.cur.len()
    }

    /// The unit in progress, if any: its index, first bytes (copied into
    /// `head`, count returned) and tag. Lets a caller see where an access
    /// unit begins without waiting for the unit to end.
    pub fn in_progress(&self, head: &mut [u8]) -> Option<(u64, usize, Option<T>)> {
        if !self.in_nal {
            return None;
        }
        let n = self.cur.copy_prefix(head);
        Some((self.started.wrapping_sub(1), n, self.cur_tag))
    }
}

/// The three-byte start code prefix (H.264 §B.1.1), searched for with a
/// vectorised finder built once.
static START_CODE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(&[0, 0, 1]));

/// Zero bytes immediately before `bytes[at]`; when the run reaches the
/// start of the piece, the `carried` zeros that ended the previous piece
/// continue it.
fn zero_run_before(bytes: &[u8], at: usize, carried: usize) -> usize {
    let before = bytes.get(..at).unwrap_or_default();
    let run = before.iter().rev().take_while(|b| **b == 0).count();
    if run == before.len() {
        run + carried
    } else {
        run
    }
}

/// Split an Annex B byte stream held in `data` into NAL units.
pub fn split_annex_b(data: &Chunks, out: &mut Vec<Chunks>) {
    let mut s = AnnexBSplitter::<()>::new();
    for part in data.parts() {
        s.push(part, |n| out.push(n.data));
    }
    s.finish(|n| out.push(n.data));
}

/// Why an SPS could not be summarised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    #[error("NAL unit is not an SPS")]
    NotSps,
    #[error("SPS does not parse: {0}")]
    BadSps(String),
    #[error("SPS dimensions out of range")]
    BadDimensions,
    #[error("FU-A fragment without a start")]
    FuWithoutStart,
    #[error("truncated RTP H.264 payload")]
    TruncatedPayload,
    #[error("unsupported RTP H.264 packet type {0}")]
    UnsupportedPacket(u8),
}

impl H264Error {
    pub fn kind(&self) -> &'static str {
        match self {
            H264Error::NotSps => "not_sps",
            H264Error::BadSps(_) => "bad_sps",
            H264Error::BadDimensions => "bad_sps_dimensions",
            H264Error::FuWithoutStart => "fu_without_start",
            H264Error::TruncatedPayload => "truncated_payload",
            H264Error::UnsupportedPacket(_) => "unsupported_packet",
        }
    }
}

/// What an egress needs to know from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    /// Display size, cropping applied.
    pub width: u32,
    pub height: u32,
    pub profile_idc: u8,
    /// constraint_set0..5 flags and the two reserved bits, as in the SPS.
    pub constraint_flags: u8,
    pub level_idc: u8,
}

impl SpsInfo {
    /// RFC 6184 §8.1 `profile-level-id`: six hex digits.
    pub fn profile_level_id(&self) -> String {
        format!(
            "{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// Largest coded size in macroblocks either way accepted; far beyond any
/// level limit (Table A-1 tops out near 8192 px), small enough that the size
/// arithmetic inside the SPS reader cannot overflow.
const MAX_MBS: u32 = 1 << 12;

/// Summarise an SPS NAL unit (header byte included, emulation prevention
/// bytes still in place).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, H264Error> {
    match nal.first() {
        Some(&h) if nal_type(h) == NAL_SPS => {}
        _ => return Err(H264Error::NotSps),
    }
    let rbsp = decode_nal(nal).map_err(|e| H264Error::BadSps(e.to_string()))?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
        .map_err(|e| H264Error::BadSps(format!("{e:?}")))?;
    if sps.pic_width_in_mbs_minus1 >= MAX_MBS || sps.pic_height_in_map_units_minus1 >= MAX_MBS {
        return Err(H264Error::BadDimensions);
    }
    let (width, height) = sps
        .pixel_dimensions()
        .map_err(|_| H264Error::BadDimensions)?;
    Ok(SpsInfo {
        width,
        height,
        profile_idc: sps.profile_idc.into(),
        constraint_flags: sps.constraint_flags.into(),
        level_idc: sps.level_idc,
    })
}

/// Every byte value, so that a one-byte `Bytes` is a static slice.
static BYTE_VALUES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// A one-byte `Bytes` holding `b`, without allocating.
fn one_byte(b: u8) -> Bytes {
    let i = usize::from(b);
    Bytes::from_static(BYTE_VALUES.get(i..=i).unwrap_or_default())
}

/// RFC 6184 depacketizer (packetization-mode 0 and 1): RTP payloads in,
/// NAL units out. FU-A fragments become one [`Chunks`] of the fragments'
/// payload slices; only the reconstructed one-byte NAL header is new (a
/// static byte, not an allocation), counted by the caller as copied.
#[derive(Debug, Default)]
pub struct H264Depacketizer {
    fu: Option<Chunks>,
}

impl H264Depacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drop a fragmented unit in progress (after loss).
    pub fn reset(&mut self) {
        self.fu = None;
    }

    /// One RTP payload; complete NAL units go to `emit`.
    pub fn push(&mut self, payload: &Bytes, mut emit: impl FnMut(Chunks)) -> Result<(), H264Error> {
        let Some(&h) = payload.first() else {
            return Err(H264Error::TruncatedPayload);
        };
        match nal_type(h) {
            1..=23 => {
                self.fu = None;
                emit(Chunks::from(payload.clone()));
            }
            NAL_STAP_A => {
                self.fu = None;
                let mut at = 1usize;
                while at < payload.len() {
                    let (Some(&hi), Some(&lo)) = (payload.get(at), payload.get(at + 1)) else {
                        return Err(H264Error::TruncatedPayload);
                    };
                    let size = usize::from(u16::from_be_bytes([hi, lo]));
                    let start = at + 2;
                    let end = start + size;
                    if end > payload.len() {
                        return Err(H264Error::TruncatedPayload);
                    }
                    if size > 0 {
                        emit(Chunks::from(payload.slice(start..end)));
                    }
                    at = end;
                }
            }
            NAL_FU_A => {
                let Some(&fu_header) = payload.get(1) else {
                    return Err(H264Error::TruncatedPayload);
                };
                let start = fu_header & 0x80 != 0;
                let end = fu_header & 0x40 != 0;
                let body = payload.slice(2..);
                if start {
                    let mut c = Chunks::new();
                    c.push(one_byte((h & 0xe0) | (fu_header & 0x1f)));
                    c.push(body);
                    self.fu = Some(c);
                } else if let Some(c) = self.fu.as_mut() {
                    c.push(body);
                } else {
                    return Err(H264Error::FuWithoutStart);
                }
                if end && let Some(c) = self.fu.take() {
                    emit(c);
                }
            }
            t => {
                self.fu = None;
                return Err(H264Error::UnsupportedPacket(t));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_pieces(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = AnnexBSplitter::<()>::new();
        let mut out = Vec::new();
        for p in pieces {
            s.push(&Bytes::copy_from_slice(p), |n| out.push(n.data.to_vec()));
        }
        s.finish(|n| out.push(n.data.to_vec()));
        out
    }

    #[test]
    fn splits_with_three_and_four_byte_start_codes() {
        let stream: &[u8] = &[
            9, 9, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 0, 0, 3, 0, 7, 0, 0,
        ];
        let want = vec![vec![0x67, 1, 2], vec![0x68, 3], vec![0x65, 0, 0, 3, 0, 7]];
        assert_eq!(split_pieces(&[stream]), want);
        // Every possible cut, including inside start codes.
        for a in 0..stream.len() {
            for b in a..stream.len() {
                let got = split_pieces(&[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(got, want, "cut at {a},{b}");
            }
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split_pieces(&bytes), want);
    }

    /// Whole-buffer reference: units between start codes, zeros before a
    /// start code (and at the end) trimmed, empty ones and the bytes before
    /// the first start code dropped.
    fn reference_split(data: &[u8]) -> Vec<Vec<u8>> {
        let ones: Vec<usize> = (2..data.len())
            .filter(|&i| data[i] == 1 && data[i - 1] == 0 && data[i - 2] == 0)
            .collect();
        let mut out = Vec::new();
        for (k, &one) in ones.iter().enumerate() {
            let end = ones.get(k + 1).copied().unwrap_or(data.len());
            let mut unit = &data[one + 1..end];
            while let [rest @ .., 0] = unit {
                unit = rest;
            }
            if !unit.is_empty() {
                out.push(unit.to_vec());
            }
        }
        out
    }

    #[test]
    fn streaming_split_matches_whole_buffer_split_on_noisy_input() {
        // Streams dense in zeros and ones, so start codes of every length,
        // runs of zeros and near misses are common; cut at random places.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let len = (next() % 200) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    0..=3 => 0,
                    4 | 5 => 1,
                    _ => (next() % 256) as u8,
                })
                .collect();
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let end = (at + 1 + (next() % 9) as usize).min(data.len());
                pieces.push(&data[at..end]);
                at = end;
            }
            assert_eq!(
                split_pieces(&pieces),
                reference_split(&data),
                "round {round}: {data:?}"
            );
        }
    }

    #[test]
    fn split_annex_b_on_chunks_is_zero_copy() {
        let buf = Bytes::from_static(&[0, 0, 1, 0x41, 5, 6, 7, 0, 0, 1, 0x41, 8]);
        let mut c = Chunks::new();
        c.push(buf.slice(..5));
        c.push(buf.slice(5..));
        let mut out = Vec::new();
        split_annex_b(&c, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].to_vec(), [0x41, 5, 6, 7]);
        assert_eq!(out[0].parts().len(), 2);
        assert_eq!(out[0].parts()[0].as_ptr(), buf[3..].as_ptr());
        assert_eq!(out[1].to_vec(), [0x41, 8]);
    }

    #[test]
    fn sps_summary() {
        // Hikvision 704x576 Main@3.0 SPS from the shared capture.
        let sps = [
            0x67, 0x4d, 0x00, 0x1e, 0x9d, 0xa8, 0x2c, 0x04, 0x9a, 0x6e, 0x02, 0x02, 0x02, 0x80,
            0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x19, 0x42,
        ];
        let info = parse_sps(&sps).unwrap();
        assert_eq!((info.width, info.height), (704, 576));
        assert_eq!(info.profile_level_id(), "4d001e");
        assert_eq!(parse_sps(&[0x68, 1]).unwrap_err().kind(), "not_sps");
        assert!(parse_sps(&[0x67]).is_err());
        assert!(parse_sps(&[0x67, 0x4d, 0, 0x1e, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn rfc6184_depacketization() {
        let mut d = H264Depacketizer::new();
        let mut out = Vec::new();
        d.push(&Bytes::from_static(&[0x67, 1, 2]), |n| out.push(n.to_vec()))
            .unwrap();
        d.push(
            &Bytes::from_static(&[0x18, 0, 2, 0x68, 9, 0, 1, 0x06]),
            |n| out.push(n.to_vec()),
        )
        .unwrap();
        d.push(&Bytes::from_static(&[0x7c, 0x85, 1, 2]), |n| {
            out.push(n.to_vec())
        })
        .unwrap();
        d.push(&Bytes::from_static(&[0x7c, 0x05, 3]), |n| {
            out.push(n.to_vec())
        })
        .unwrap();
        d.push(&Bytes::from_static(&[0x7c, 0x45, 4]), |n| {
            out.push(n.to_vec())
        })
        .unwrap();
        assert_eq!(
            out,
            vec![
                vec![0x67, 1, 2],
                vec![0x68, 9],
                vec![0x06],
                vec![0x65, 1, 2, 3, 4]
            ]
        );
        let e = d.push(&Bytes::from_static(&[0x7c, 0x05, 3]), |_| {});
        assert_eq!(e.unwrap_err().kind(), "fu_without_start");
        let e = d.push(&Bytes::from_static(&[0x18, 0, 9, 1]), |_| {});
        assert_eq!(e.unwrap_err().kind(), "truncated_payload");
    }
}
