//! The one frame type every source emits and every egress consumes.
//!
//! Payload bytes are never gathered into a fresh buffer here: a unit (one NAL
//! unit, one audio frame, one JPEG) is a [`Chunks`] list of `Bytes` slices
//! that point into the receive buffers the ingest path filled.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

/// Elementary-stream codec of a frame or track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    H264,
    H265,
    Mpeg4,
    Svac,
    Mjpeg,
    /// G.711 A-law.
    Pcma,
    /// G.711 µ-law.
    Pcmu,
    G722,
    G723,
    G729,
    Aac,
    /// MPEG-1/2 audio layer I/II/III (MP2, MP3).
    Mpa,
}

/// Which kind of track a codec belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Video,
    Audio,
}

impl Codec {
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::H264 | Codec::H265 | Codec::Mpeg4 | Codec::Svac | Codec::Mjpeg => {
                MediaKind::Video
            }
            _ => MediaKind::Audio,
        }
    }

    /// RTP clock rate for this codec's timestamps (RFC 3551, RFC 6184).
    /// AAC has none of its own: its clock is the sample rate in
    /// [`AudioParams`], so `None`.
    pub fn clock_rate(self) -> Option<u32> {
        match self {
            // Like AAC, timestamps run at the sample rate in AudioParams.
            Codec::Aac | Codec::Mpa => None,
            // RFC 3551 §4.5.2: G.722's RTP clock is 8 kHz though it samples at 16.
            _ if self.kind() == MediaKind::Audio => Some(8_000),
            _ => Some(90_000),
        }
    }
}

/// A payload made of one or more `Bytes` slices, logically contiguous.
///
/// Two inline slots cover the common case (a unit inside one packet, or split
/// across two) without a heap allocation. A unit spanning more packets (an
/// IDR slice over dozens of RTP packets) needs a heap list; those lists are
/// recycled through a pool shared by all threads when a `Chunks` is
/// dropped, so a stream in steady state does not allocate for them.
#[derive(Default, PartialEq, Eq)]
pub struct Chunks {
    parts: SmallVec<[Bytes; 2]>,
    len: usize,
}

/// Emptied heap part lists of dropped [`Chunks`], shared by all threads
/// (frames are assembled on a receive task and dropped by viewers' tasks).
/// Only `try_lock`ed: under contention a list is allocated or freed as
/// usual rather than waited for.
static SPARE_PART_LISTS: Mutex<Vec<Vec<Bytes>>> = Mutex::new(Vec::new());
/// Lists kept; beyond that, dropped lists are freed.
const MAX_SPARE_LISTS: usize = 256;
/// Capacity (in parts) above which a list is freed rather than kept: 1024
/// packets is a 1.4 MB NAL unit.
const MAX_SPARE_CAPACITY: usize = 1024;
/// Capacity of a list allocated when no spare is available; enough for an
/// IDR slice of ~20 KB in 1400-byte packets without regrowing.
const FRESH_CAPACITY: usize = 16;

/// An empty heap list for at least `min` parts: a recycled one if any.
fn spare_part_list(min: usize) -> Vec<Bytes> {
    let spare = SPARE_PART_LISTS
        .try_lock()
        .ok()
        .and_then(|mut lists| lists.pop());
    match spare {
        Some(mut v) => {
            v.reserve(min);
            v
        }
        None => Vec::with_capacity(min.max(FRESH_CAPACITY)),
    }
}

fn recycle_part_list(mut v: Vec<Bytes>) {
    if v.capacity() > MAX_SPARE_CAPACITY {
        return;
    }
    // Release the slices (and so the receive buffers) before parking it.
    v.clear();
    if let Ok(mut lists) = SPARE_PART_LISTS.try_lock()
        && lists.len() < MAX_SPARE_LISTS
    {
        lists.push(v);
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        if self.parts.spilled() {
            recycle_part_list(std::mem::take(&mut self.parts).into_vec());
        }
    }
}

impl Clone for Chunks {
    fn clone(&self) -> Self {
        let parts = if self.parts.spilled() {
            let mut v = spare_part_list(self.parts.len());
            v.extend(self.parts.iter().cloned());
            SmallVec::from_vec(v)
        } else {
            self.parts.clone()
        };
        Self {
            parts,
            len: self.len,
        }
    }
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks")
            .field("parts", &self.parts.len())
            .field("len", &self.len)
            .finish()
    }
}

impl Chunks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, part: Bytes) {
        if part.is_empty() {
            return;
        }
        if !self.parts.spilled() && self.parts.len() == self.parts.inline_size() {
            let mut v = spare_part_list(self.parts.len() + 1);
            v.extend(self.parts.drain(..));
            self.parts = SmallVec::from_vec(v);
        }
        self.len += part.len();
        self.parts.push(part);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Byte at `index`, if any.
    pub fn get(&self, mut index: usize) -> Option<u8> {
        for part in &self.parts {
            if index < part.len() {
                return Some(part[index]);
            }
            index -= part.len();
        }
        None
    }

    /// The slices covering `start..end` (clamped), without copying.
    pub fn slice(&self, start: usize, end: usize) -> Chunks {
        let end = end.min(self.len);
        let mut out = Chunks::new();
        if start >= end {
            return out;
        }
        let mut offset = 0;
        for part in &self.parts {
            let part_end = offset + part.len();
            if part_end > start && offset < end {
                let from = start.saturating_sub(offset);
                let to = (end - offset).min(part.len());
                out.push(part.slice(from..to));
            }
            if part_end >= end {
                break;
            }
            offset = part_end;
        }
        out
    }

    /// Drop bytes past `len` (no-op when already shorter), keeping the
    /// remaining slices shared with the original buffers.
    pub fn truncate(&mut self, len: usize) {
        while self.len > len {
            let Some(last) = self.parts.last_mut() else {
                break;
            };
            let excess = self.len - len;
            if excess >= last.len() {
                self.len -= last.len();
                self.parts.pop();
            } else {
                last.truncate(last.len() - excess);
                self.len = len;
            }
        }
    }

    /// Empty the list, keeping any heap storage for reuse.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.len = 0;
    }

    /// Copy up to `out.len()` leading bytes into `out` (for peeking at unit
    /// headers that may straddle parts); returns how many were copied.
    pub fn copy_prefix(&self, out: &mut [u8]) -> usize {
        let mut n = 0;
        for part in &self.parts {
            let Some(dst) = out.get_mut(n..) else { break };
            let take = dst.len().min(part.len());
            dst[..take].copy_from_slice(&part[..take]);
            n += take;
            if n == out.len() {
                break;
            }
        }
        n
    }

    /// Contiguous copy; for parsers of small units (parameter sets) and tests.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for part in &self.parts {
            v.extend_from_slice(part);
        }
        v
    }

    /// Contiguous `Bytes`: free when there is one part, a copy otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut b = BytesMut::with_capacity(self.len);
                for part in many {
                    b.extend_from_slice(part);
                }
                b.freeze()
            }
        }
    }
}

impl From<Bytes> for Chunks {
    fn from(b: Bytes) -> Self {
        let mut c = Chunks::new();
        c.push(b);
        c
    }
}

/// One access unit (video) or one audio frame.
///
/// Timestamps are in the codec's clock ([`Codec::clock_rate`]): 90 kHz for
/// video, the sample rate for audio. They are unwrapped (monotonic, 64-bit).
#[derive(Clone, Debug)]
pub struct Frame {
    pub codec: Codec,
    pub pts: i64,
    pub dts: i64,
    /// IDR (H.264), IRAP (H.265), every JPEG and every audio frame.
    pub keyframe: bool,
    /// For H.264/H.265: NAL units without start codes, parameter sets first on
    /// keyframes. For other codecs: a single unit holding the frame.
    pub units: SmallVec<[Chunks; 4]>,
}

impl Frame {
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }

    /// Payload size in bytes, all units together.
    pub fn len(&self) -> usize {
        self.units.iter().map(Chunks::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Codec parameters of a video track, learnt from the stream itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoParams {
    pub width: u32,
    pub height: u32,
    /// H.265 only.
    pub vps: Option<Bytes>,
    pub sps: Option<Bytes>,
    pub pps: Option<Bytes>,
}

/// Codec parameters of an audio track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioParams {
    pub sample_rate: u32,
    pub channels: u8,
    /// AAC AudioSpecificConfig, when known.
    pub config: Option<Bytes>,
}

/// What a stream carries, as far as the source has learnt it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    pub video: Option<(Codec, VideoParams)>,
    pub audio: Option<(Codec, AudioParams)>,
    /// How the audio codec was decided, when the source had to guess.
    pub audio_decided_by: Option<AudioEvidence>,
}

/// Why a program stream's audio is taken to be the codec it is. Without a
/// PSM, stream ids 0xC0–0xDF are ambiguous: ISO/IEC 13818-1 reserves them
/// for MPEG audio, GB/T 28181 devices put G.711 there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioEvidence {
    /// The program stream map declared the stream type.
    Psm,
    /// No PSM; the payload starts with a valid MPEG audio frame header.
    MpegAudioHeader,
    /// No PSM; the payload starts with an ADTS header.
    AdtsHeader,
    /// No PSM and neither header: G.711 as `media.default_g711` says.
    DefaultG711,
}

impl std::fmt::Display for AudioEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Psm => "declared by the PSM",
            Self::MpegAudioHeader => "no PSM: MPEG audio frame header in the payload",
            Self::AdtsHeader => "no PSM: ADTS header in the payload",
            Self::DefaultG711 => "no PSM and no MPEG/ADTS header: G.711 per media.default_g711",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        let mut c = Chunks::new();
        for p in parts {
            c.push(Bytes::from_static(p));
        }
        c
    }

    #[test]
    fn slice_spans_parts_without_copy() {
        let c = chunks(&[b"abc", b"defg", b"hi"]);
        assert_eq!(c.len(), 9);
        let s = c.slice(2, 7);
        assert_eq!(s.to_vec(), b"cdefg");
        assert_eq!(s.parts().len(), 2);
        assert_eq!(c.slice(3, 7).parts().len(), 1);
        assert_eq!(c.slice(7, 100).to_vec(), b"hi");
        assert!(c.slice(5, 5).is_empty());
        assert_eq!(c.get(4), Some(b'e'));
        assert_eq!(c.get(9), None);
        let mut t = c.clone();
        t.truncate(5);
        assert_eq!(t.to_vec(), b"abcde");
        t.truncate(3);
        assert_eq!((t.parts().len(), t.len()), (1, 3));
        let mut head = [0u8; 4];
        assert_eq!(c.copy_prefix(&mut head), 4);
        assert_eq!(&head, b"abcd");
    }

    #[test]
    fn long_part_lists_survive_recycling() {
        let buf = Bytes::from((0..=255u8).collect::<Vec<u8>>());
        for round in 0..3 {
            let mut c = Chunks::new();
            for i in 0..40 {
                c.push(buf.slice(i * 5..i * 5 + 5));
            }
            assert_eq!(c.parts().len(), 40, "round {round}");
            let copy = c.clone();
            drop(c);
            assert_eq!(copy.len(), 200);
            assert_eq!(copy.to_vec(), buf[..200]);
            assert_eq!(copy.slice(3, 13).to_vec(), buf[3..13]);
        }
        // A recycled list starts empty: nothing of an earlier unit leaks in.
        let mut c = Chunks::new();
        for i in 0..3 {
            c.push(buf.slice(i..i + 1));
        }
        assert_eq!(c.to_vec(), [0, 1, 2]);
    }

    #[test]
    fn to_bytes_single_part_is_same_buffer() {
        let b = Bytes::from_static(b"xyz");
        let c = Chunks::from(b.clone());
        assert_eq!(c.to_bytes().as_ptr(), b.as_ptr());
        assert_eq!(
            chunks(&[b"ab", b"c"]).to_bytes(),
            Bytes::from_static(b"abc")
        );
    }
}
