//! AAC over RTP, RFC 3640 `mpeg4-generic` in AAC-hbr mode (§3.3.6):
//! sizeLength 13, indexLength 3, indexDeltaLength 3.
//!
//! Each access unit (one AAC frame, 1024 samples) goes in its own packet
//! behind a 16-bit AU-headers-length and one AU-header (size, index 0).
//! A frame larger than the packet is fragmented (§3.2.3): every fragment
//! repeats the AU-header with the whole AU's size, and only the last one
//! has the marker bit. ADTS headers, which sources often keep, are
//! stripped: the decoder gets its configuration from the SDP `config`.

use bytes::Bytes;

use super::Fragment;
use crate::media::frame::{Chunks, Frame};

/// Samples per AAC-LC access unit (ISO/IEC 14496-3 §4.5.1.1).
pub const SAMPLES_PER_AU: u32 = 1024;
/// Largest AU size an AAC-hbr AU-header can state (13 bits).
pub const MAX_AU: usize = (1 << 13) - 1;

/// ADTS header length if `unit` starts with one (ISO/IEC 14496-3
/// §1.A.2.2): 7 bytes, or 9 with a CRC.
fn adts_header_len(unit: &Chunks) -> usize {
    let mut h = [0u8; 2];
    if unit.copy_prefix(&mut h) == 2 && h[0] == 0xff && h[1] & 0xf6 == 0xf0 {
        if h[1] & 0x01 == 0 { 9 } else { 7 }
    } else {
        0
    }
}

fn au_header(size: usize) -> Bytes {
    // AU-headers-length in bits (one 16-bit header), then size<<3 | index 0.
    let v = ((size.min(MAX_AU) as u16) << 3).to_be_bytes();
    Bytes::copy_from_slice(&[0x00, 0x10, v[0], v[1]])
}

pub(super) fn packetize(frame: &Frame, mtu: usize, out: &mut Vec<Fragment>) {
    let room = mtu.saturating_sub(4).max(1);
    let mut delta = 0u32;
    for unit in frame.units.iter() {
        let au = unit.slice(adts_header_len(unit), unit.len());
        // An AU over 13 bits of size cannot be described; it is dropped
        // (no real encoder makes one: 6144 bits per channel at most).
        if au.is_empty() || au.len() > MAX_AU {
            continue;
        }
        let header = au_header(au.len());
        let mut offset = 0;
        while offset < au.len() {
            let end = (offset + room).min(au.len());
            let mut payload = Chunks::from(header.clone());
            for p in au.slice(offset, end).parts() {
                payload.push(p.clone());
            }
            let mut f = Fragment::new(&[], payload, end == au.len());
            f.ts_delta = delta;
            out.push(f);
            offset = end;
        }
        delta = delta.wrapping_add(SAMPLES_PER_AU);
    }
}

/// Sampling-frequency index of ISO/IEC 14496-3 §1.6.3.4.
fn frequency_index(rate: u32) -> u8 {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    RATES.iter().position(|&r| r == rate).map_or(4, |i| i as u8)
}

/// A 2-byte AudioSpecificConfig (AAC-LC) for when the source gave none.
pub fn default_config(sample_rate: u32, channels: u8) -> [u8; 2] {
    let object_type = 2u16; // AAC LC
    let v = (object_type << 11)
        | (u16::from(frequency_index(sample_rate)) << 7)
        | (u16::from(channels.clamp(1, 7)) << 3);
    v.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::Packetizer;
    use super::*;
    use crate::media::frame::Codec;

    fn frame(unit: Vec<u8>) -> Frame {
        Frame {
            codec: Codec::Aac,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: [Chunks::from(Bytes::from(unit))].into_iter().collect(),
        }
    }

    #[test]
    fn adts_stripped_and_au_header_written() {
        // ADTS, no CRC, then 5 payload bytes.
        let mut unit = vec![0xff, 0xf1, 0x50, 0x80, 0x01, 0x9f, 0xfc];
        unit.extend_from_slice(&[1, 2, 3, 4, 5]);
        let mut out = Vec::new();
        Packetizer::Aac.packetize(&frame(unit), 1400, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].payload.to_vec(),
            [0x00, 0x10, 0x00, 5 << 3, 1, 2, 3, 4, 5]
        );
        assert!(out[0].marker);
    }

    #[test]
    fn large_au_fragments_with_full_size_header() {
        let mut out = Vec::new();
        Packetizer::Aac.packetize(&frame(vec![7; 300]), 104, &mut out);
        assert_eq!(out.len(), 3);
        for f in &out {
            let head = f.payload.slice(0, 4).to_vec();
            assert_eq!(
                head,
                [0x00, 0x10, (300u16 << 3 >> 8) as u8, (300u16 << 3) as u8]
            );
        }
        let sizes: Vec<usize> = out.iter().map(|f| f.payload.len() - 4).collect();
        assert_eq!(sizes, [100, 100, 100]);
        let markers: Vec<bool> = out.iter().map(|f| f.marker).collect();
        assert_eq!(markers, [false, false, true]);
    }

    #[test]
    fn config_for_common_rates() {
        // 44.1 kHz stereo AAC-LC is the well-known 0x1210.
        assert_eq!(default_config(44100, 2), [0x12, 0x10]);
        assert_eq!(default_config(16000, 1), [0x14, 0x08]);
    }
}
