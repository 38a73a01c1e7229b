//! The demo clip: an H.264 Annex B byte stream (ITU-T H.264 Annex B) embedded
//! in the binary and cut into access units.
//!
//! The clip carries an access unit delimiter (NAL type 9, H.264 §7.3.2.4) at
//! the head of every access unit, so cutting it is a scan for start codes and
//! a look at the NAL type; no slice-header parsing is needed. NAL units are
//! `Bytes::from_static` slices of the embedded file: nothing is copied.

use bytes::Bytes;

/// `assets/demo.h264`; see `assets/README.md` for how it was made.
pub static DEMO_H264: &[u8] = include_bytes!("../../assets/demo.h264");

/// `assets/demo.h265`: the same pattern in H.265 (see `assets/README.md`).
pub static DEMO_H265: &[u8] = include_bytes!("../../assets/demo.h265");

/// Frame rate of the demo clip; the muxer stamps frames at 90 kHz / this.
pub const DEMO_FPS: u32 = 25;

/// H.264 NAL unit types this module looks at (H.264 Table 7-1).
const NAL_IDR: u8 = 5;
const NAL_AUD: u8 = 9;
/// H.265 NAL unit types (H.265 Table 7-1): access unit delimiter, and the
/// IRAP range (BLA, IDR, CRA and reserved IRAP types).
const NAL_H265_AUD: u8 = 35;
const NAL_H265_IRAP: std::ops::RangeInclusive<u8> = 16..=23;

/// One access unit: its NAL units without start codes, in stream order.
#[derive(Clone, Debug)]
pub struct AccessUnit {
    pub nals: Vec<Bytes>,
    /// Holds an IDR slice (and, in this clip, the SPS/PPS before it).
    pub keyframe: bool,
}

/// A clip cut into access units, ready to loop.
#[derive(Clone, Debug)]
pub struct Clip {
    units: Vec<AccessUnit>,
    h265: bool,
}

impl Clip {
    /// The embedded demo clip.
    pub fn demo() -> Self {
        Self::from_static(DEMO_H264)
    }

    /// Cut an Annex B stream into access units at AUD NAL units. Data before
    /// the first AUD (if any) forms an access unit of its own. Never fails:
    /// an input with no start code is one NAL unit.
    pub fn from_static(stream: &'static [u8]) -> Self {
        Self::cut(stream, false)
    }

    /// The embedded H.265 demo clip.
    pub fn demo_h265() -> Self {
        Self::cut(DEMO_H265, true)
    }

    /// [`from_static`](Self::from_static) for an H.265 stream (cut at
    /// type-35 AUDs).
    pub fn from_static_h265(stream: &'static [u8]) -> Self {
        Self::cut(stream, true)
    }

    /// Whether the clip is H.265 (else H.264).
    pub fn is_h265(&self) -> bool {
        self.h265
    }

    /// Cut at AUD NAL units: H.264 type 9, or H.265 type 35 (H.265 §7.4.2.4.4).
    fn cut(stream: &'static [u8], h265: bool) -> Self {
        let whole = Bytes::from_static(stream);
        let nal_type = |b: u8| if h265 { (b >> 1) & 0x3f } else { b & 0x1f };
        let aud = if h265 { NAL_H265_AUD } else { NAL_AUD };
        let mut units: Vec<AccessUnit> = Vec::new();
        let mut current: Vec<Bytes> = Vec::new();
        for (start, end) in nal_ranges(stream) {
            let nal = whole.slice(start..end);
            if nal.first().map(|b| nal_type(*b)) == Some(aud) && !current.is_empty() {
                units.push(AccessUnit::new(std::mem::take(&mut current), h265));
            }
            current.push(nal);
        }
        if !current.is_empty() {
            units.push(AccessUnit::new(current, h265));
        }
        Self { units, h265 }
    }

    /// The same clip with `nal` (an SEI, say) in every access unit, after
    /// the access unit delimiter if there is one: H.264 §7.4.1.2.3 wants
    /// SEI before the first slice.
    pub fn with_unit_in_every_frame(&self, nal: &Bytes) -> Self {
        let aud = if self.h265 { NAL_H265_AUD } else { NAL_AUD };
        let nal_type = |b: u8| if self.h265 { (b >> 1) & 0x3f } else { b & 0x1f };
        let units = self
            .units
            .iter()
            .map(|u| {
                let mut nals = u.nals.clone();
                let at = usize::from(
                    nals.first().and_then(|n| n.first()).map(|b| nal_type(*b)) == Some(aud),
                );
                nals.insert(at, nal.clone());
                AccessUnit {
                    nals,
                    keyframe: u.keyframe,
                }
            })
            .collect();
        Self {
            units,
            h265: self.h265,
        }
    }

    pub fn units(&self) -> &[AccessUnit] {
        &self.units
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

impl AccessUnit {
    fn new(nals: Vec<Bytes>, h265: bool) -> Self {
        let keyframe = nals.iter().any(|n| match n.first() {
            Some(b) if h265 => NAL_H265_IRAP.contains(&((b >> 1) & 0x3f)),
            Some(b) => b & 0x1f == NAL_IDR,
            None => false,
        });
        Self { nals, keyframe }
    }
}

/// Byte ranges of the NAL units in an Annex B stream, start codes excluded.
///
/// A start code is `00 00 01`; the extra zero of a four-byte start code is a
/// `trailing_zero_8bits` of the previous NAL (H.264 §B.1), so trailing zeros
/// are trimmed from each NAL. Empty NALs are skipped.
fn nal_ranges(data: &[u8]) -> Vec<(usize, usize)> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    if starts.is_empty() {
        return if data.is_empty() {
            Vec::new()
        } else {
            vec![(0, data.len())]
        };
    }
    let mut ranges = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        // The next NAL's payload begins 3 bytes after its start code begins.
        let mut end = starts.get(k + 1).map_or(data.len(), |&next| next - 3);
        while end > start && data[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            ranges.push((start, end));
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h265_clip_cuts_into_frames_with_irap_every_second() {
        let clip = Clip::demo_h265();
        assert!(clip.is_h265());
        assert_eq!(clip.len(), 100);
        let keys: Vec<usize> = (0..clip.len())
            .filter(|i| clip.units()[*i].keyframe)
            .collect();
        assert_eq!(keys, [0, 25, 50, 75]);
        // VPS, SPS, PPS open each keyframe after its AUD.
        let types: Vec<u8> = clip.units()[25].nals[..4]
            .iter()
            .map(|n| (n[0] >> 1) & 0x3f)
            .collect();
        assert_eq!(types, [35, 32, 33, 34]);
    }

    #[test]
    fn demo_clip_is_150_frames_with_idr_every_25() {
        let clip = Clip::demo();
        assert_eq!(clip.len(), 150);
        let keys: Vec<usize> = clip
            .units()
            .iter()
            .enumerate()
            .filter(|(_, u)| u.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, vec![0, 25, 50, 75, 100, 125]);
        for unit in clip.units() {
            assert_eq!(unit.nals[0][0] & 0x1f, NAL_AUD);
            if unit.keyframe {
                // SPS and PPS travel with every IDR so any GOP decodes alone.
                let types: Vec<u8> = unit.nals.iter().map(|n| n[0] & 0x1f).collect();
                assert!(types.contains(&7) && types.contains(&8), "{types:?}");
            }
        }
    }

    #[test]
    fn a_unit_goes_into_every_frame_after_the_delimiter() {
        let clip = Clip::demo();
        let sei = Bytes::from_static(&[6, 5, 1, 0xaa, 0x80]);
        let marked = clip.with_unit_in_every_frame(&sei);
        assert_eq!(marked.len(), clip.len());
        for (m, u) in marked.units().iter().zip(clip.units()) {
            assert_eq!(m.nals.len(), u.nals.len() + 1);
            assert_eq!(m.nals[0], u.nals[0], "the AUD stays first");
            assert_eq!(m.nals[1], sei);
            assert_eq!(m.nals[2..], u.nals[1..]);
            assert_eq!(m.keyframe, u.keyframe);
        }
    }

    #[test]
    fn nals_are_slices_of_the_embedded_clip() {
        let clip = Clip::demo();
        let range = DEMO_H264.as_ptr_range();
        for nal in clip.units().iter().flat_map(|u| &u.nals) {
            assert!(range.contains(&nal.as_ptr()));
        }
    }

    #[test]
    fn cuts_mixed_start_codes() {
        static S: &[u8] = &[
            0, 0, 0, 1, 9, 0x10, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 7, 0, 0, 1, 9, 0x30, 0, 0,
            1, 0x41, 8,
        ];
        let clip = Clip::from_static(S);
        assert_eq!(clip.len(), 2);
        let u0: Vec<&[u8]> = clip.units()[0].nals.iter().map(|n| &n[..]).collect();
        assert_eq!(u0, vec![&[9, 0x10][..], &[0x67, 1, 2], &[0x65, 7]]);
        assert!(clip.units()[0].keyframe);
        assert!(!clip.units()[1].keyframe);
        assert_eq!(&clip.units()[1].nals[1][..], &[0x41, 8]);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        static EMPTY: &[u8] = &[];
        static NOSTART: &[u8] = &[1, 2, 3];
        static ONLY: &[u8] = &[0, 0, 1];
        static ZEROS: &[u8] = &[0, 0, 0, 0, 0];
        assert!(Clip::from_static(EMPTY).is_empty());
        assert_eq!(Clip::from_static(NOSTART).len(), 1);
        assert!(Clip::from_static(ONLY).is_empty());
        assert_eq!(Clip::from_static(ZEROS).len(), 1);
    }
}
