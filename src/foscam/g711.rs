//! G.711 (ITU-T G.711, 1988) A-law and µ-law companding: linear PCM
//! decoded from the camera's ADPCM becomes PCMA/PCMU for RTSP (RFC 3551
//! §4.5.14), and G.711 from the API becomes PCM for talk.
//!
//! Segment search over the 13-bit (A-law) or 14-bit (µ-law) magnitude, as
//! in the recommendation's tables; no lookup tables, the loops are short.

/// Upper ends of the eight A-law segments, 13-bit magnitude.
const ALAW_SEGMENT_END: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];
/// Upper ends of the eight µ-law segments, biased 14-bit magnitude.
const ULAW_SEGMENT_END: [i32; 8] = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;

fn segment(value: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&end| value <= end).unwrap_or(8)
}

pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut v = (sample as i32) >> 3;
    // Even bits are inverted on the line (G.711 Table 1a); the sign bit is
    // set for positive values.
    let mask = if v >= 0 {
        0xd5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &ALAW_SEGMENT_END);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let mantissa = if seg < 2 { v >> 1 } else { v >> seg } & 0x0f;
    (((seg as i32) << 4) | mantissa) as u8 ^ mask
}

pub fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut v = (sample as i32) >> 2;
    let mask = if v < 0 {
        v = -v;
        0x7f
    } else {
        0xff
    };
    v = v.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(v, &ULAW_SEGMENT_END);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let code = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0x0f);
    code as u8 ^ mask
}

pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0f) as i32) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foscam::adpcm::tests::{peak_frequency, rms_db, tone};

    #[test]
    fn known_code_points() {
        // Silence and full scale, from G.711 Tables 1a/2a.
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2a);
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    #[test]
    fn tone_survives_both_laws() {
        let pcm = tone(1000.0, 8000.0, 4000);
        for (enc, dec) in [
            (
                linear_to_alaw as fn(i16) -> u8,
                alaw_to_linear as fn(u8) -> i16,
            ),
            (linear_to_ulaw, ulaw_to_linear),
        ] {
            let back: Vec<i16> = pcm.iter().map(|&s| dec(enc(s))).collect();
            assert_eq!(peak_frequency(&back), 1000.0);
            assert!((rms_db(&back) - rms_db(&pcm)).abs() < 0.2);
        }
    }

    #[test]
    fn every_code_is_a_fixed_point() {
        for code in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "A-law {code:#x}"
            );
            // µ-law has two zeros (0x7f and 0xff); both decode to 0.
            if code != 0x7f {
                assert_eq!(
                    linear_to_ulaw(ulaw_to_linear(code)),
                    code,
                    "µ-law {code:#x}"
                );
            }
        }
    }
}
