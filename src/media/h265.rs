//! H.265 helpers: NAL unit header (ITU-T H.265 §7.3.1.2), IRAP and
//! parameter-set recognition (Table 7-1), and the picture size from a
//! sequence parameter set (§7.3.2.2.1, with profile_tier_level §7.3.3).
//!
//! Annex B splitting is shared with H.264 ([`super::h264::AnnexBSplitter`]):
//! the byte-stream format is the same.

use super::frame::Chunks;

pub const NAL_IDR_W_RADL: u8 = 19;
pub const NAL_IDR_N_LP: u8 = 20;
pub const NAL_CRA: u8 = 21;
pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;
pub const NAL_AUD: u8 = 35;
pub const NAL_SEI_PREFIX: u8 = 39;

/// `nal_unit_type` from the first header byte.
pub fn nal_type(header0: u8) -> u8 {
    (header0 >> 1) & 0x3f
}

/// Intra random access point (BLA, IDR, CRA and reserved IRAP types 16–23):
/// a decoder can start here.
pub fn is_irap(header0: u8) -> bool {
    (16..=23).contains(&nal_type(header0))
}

/// VPS, SPS or PPS.
pub fn is_parameter_set(header0: u8) -> bool {
    matches!(nal_type(header0), NAL_VPS | NAL_SPS | NAL_PPS)
}

/// Whether a VCL (slice segment) unit.
pub fn is_vcl(header0: u8) -> bool {
    nal_type(header0) < 32
}

/// Whether this unit opens a new access unit when the one being assembled
/// already holds a slice segment (§7.4.2.4.4): VPS, SPS, PPS, AUD, prefix
/// SEI and reserved types 41–44 and 48–55 do; a slice segment does when
/// `first_slice_segment_in_pic_flag` (first bit after the two-byte header)
/// is set. `head` is the unit's first three bytes or more.
pub fn first_in_access_unit(head: &[u8]) -> bool {
    let Some(&h) = head.first() else { return false };
    match nal_type(h) {
        32..=35 | NAL_SEI_PREFIX | 41..=44 | 48..=55 => true,
        0..=31 => head.get(2).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// Whether a two-byte header is well formed: forbidden bit clear and
/// `nuh_temporal_id_plus1` non-zero. H.264 headers often fail the second
/// test, which helps tell the codecs apart when nothing declares them.
pub fn header_plausible(header0: u8, header1: u8) -> bool {
    header0 & 0x80 == 0 && header1 & 0x07 != 0
}

/// Why an SPS could not be summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H265Error {
    #[error("NAL unit is not an SPS")]
    NotSps,
    #[error("SPS ends early")]
    Truncated,
    #[error("SPS field out of range")]
    OutOfRange,
}

impl H265Error {
    pub fn kind(&self) -> &'static str {
        match self {
            H265Error::NotSps => "not_sps",
            H265Error::Truncated => "truncated_sps",
            H265Error::OutOfRange => "bad_sps",
        }
    }
}

/// What an egress needs to know from an H.265 SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    /// Display size: conformance window applied.
    pub width: u32,
    pub height: u32,
    pub general_profile_idc: u8,
    pub general_tier_flag: bool,
    pub general_level_idc: u8,
}

/// MSB-first bit reader over an RBSP (emulation prevention already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, H265Error> {
        let byte = self.data.get(self.pos / 8).ok_or(H265Error::Truncated)?;
        let v = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u32::from(v))
    }

    fn bits(&mut self, n: u32) -> Result<u32, H265Error> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), H265Error> {
        self.pos = self.pos.checked_add(n).ok_or(H265Error::Truncated)?;
        if self.pos > self.data.len() * 8 {
            return Err(H265Error::Truncated);
        }
        Ok(())
    }

    /// Exp-Golomb ue(v), limited to 32-bit results.
    fn ue(&mut self) -> Result<u32, H265Error> {
        let mut zeros = 0u32;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(H265Error::OutOfRange);
            }
        }
        let rest = self.bits(zeros)?;
        let v = (1u64 << zeros) - 1 + u64::from(rest);
        u32::try_from(v).map_err(|_| H265Error::OutOfRange)
    }
}

/// Remove emulation prevention bytes (§7.4.2): 00 00 03 → 00 00.
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Summarise an SPS NAL unit (two-byte header included, still escaped).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, H265Error> {
    match nal.first() {
        Some(&h) if nal_type(h) == NAL_SPS => {}
        _ => return Err(H265Error::NotSps),
    }
    let rbsp = unescape(nal.get(2..).ok_or(H265Error::Truncated)?);
    let mut r = Bits {
        data: &rbsp,
        pos: 0,
    };
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    r.skip(1)?; // sps_temporal_id_nesting_flag
    // profile_tier_level(1, max_sub_layers_minus1)
    r.skip(2)?; // general_profile_space
    let general_tier_flag = r.bit()? == 1;
    let general_profile_idc = r.bits(5)? as u8;
    r.skip(32 + 4 + 43 + 1)?; // compatibility flags, source/constraint flags
    let general_level_idc = r.bits(8)? as u8;
    let mut sub_profile = [false; 8];
    let mut sub_level = [false; 8];
    for i in 0..max_sub_layers_minus1 as usize {
        sub_profile[i] = r.bit()? == 1;
        sub_level[i] = r.bit()? == 1;
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1 as usize))?;
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if sub_profile[i] {
            r.skip(88)?;
        }
        if sub_level[i] {
            r.skip(8)?;
        }
    }
    let _sps_id = r.ue()?;
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Err(H265Error::OutOfRange);
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.bit()? == 1;
    let width = r.ue()?;
    let height = r.ue()?;
    let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        left = r.ue()?;
        right = r.ue()?;
        top = r.ue()?;
        bottom = r.ue()?;
    }
    let crop = |size: u32, a: u32, b: u32, sub: u32| -> Result<u32, H265Error> {
        let c = a
            .checked_add(b)
            .and_then(|s| s.checked_mul(sub))
            .ok_or(H265Error::OutOfRange)?;
        size.checked_sub(c).ok_or(H265Error::OutOfRange)
    };
    let width = crop(width, left, right, sub_w)?;
    let height = crop(height, top, bottom, sub_h)?;
    if width == 0 || height == 0 || width > 16_888 || height > 16_888 {
        return Err(H265Error::OutOfRange);
    }
    Ok(SpsInfo {
        width,
        height,
        general_profile_idc,
        general_tier_flag,
        general_level_idc,
    })
}

/// Summarise an SPS held in [`Chunks`] (copies it; parameter sets are tiny).
pub fn parse_sps_chunks(nal: &Chunks) -> Result<SpsInfo, H265Error> {
    parse_sps(&nal.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_helpers() {
        assert_eq!(nal_type(0x40), NAL_VPS);
        assert_eq!(nal_type(0x42), NAL_SPS);
        assert_eq!(nal_type(0x44), NAL_PPS);
        assert!(is_irap(0x26)); // IDR_W_RADL
        assert!(is_irap(0x2a)); // CRA
        assert!(!is_irap(0x02)); // TRAIL_R
        assert!(is_parameter_set(0x40));
        assert!(header_plausible(0x40, 0x01));
        assert!(!header_plausible(0x67, 0x4d & 0xf8));
    }

    #[test]
    fn sps_size() {
        // x265 320x240 Main SPS (ffmpeg testsrc2).
        let sps = [
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x59, 0x59, 0xa4, 0x93, 0x2b,
            0xc0, 0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32, 0x10,
        ];
        let info = parse_sps(&sps).unwrap();
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(info.general_profile_idc, 1);
        assert_eq!(info.general_level_idc, 60);
        assert!(parse_sps(&sps[..10]).is_err());
        assert_eq!(parse_sps(&[0x40, 1]).unwrap_err().kind(), "not_sps");
    }
}
