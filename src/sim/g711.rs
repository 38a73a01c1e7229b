//! A test tone in G.711 A-law (ITU-T G.711 §A), for the simulated camera's
//! audio track: 1 kHz at 8 kHz sampling, 20 ms (160-sample) frames.

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// Upper bounds of the eight A-law segments on 13-bit magnitudes.
const SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// One 16-bit linear sample to A-law (even bits inverted, §A.2).
pub fn alaw_encode(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let Some(segment) = SEGMENT_END.iter().position(|end| v <= *end) else {
        return 0x7F ^ mask;
    };
    let mantissa = if segment < 2 {
        (v >> 1) & 0x0F
    } else {
        (v >> segment) & 0x0F
    };
    ((segment as u8) << 4 | mantissa as u8) ^ mask
}

/// An endless 1 kHz tone, one A-law frame at a time.
#[derive(Debug, Default, Clone)]
pub struct ToneSource {
    phase: usize,
}

impl ToneSource {
    /// The next 20 ms of tone.
    pub fn next_frame(&mut self) -> [u8; FRAME_SAMPLES] {
        // 1 kHz at 8 kHz: eight samples per period.
        const PERIOD: [i16; 8] = [0, 5792, 8191, 5792, 0, -5792, -8191, -5792];
        let mut out = [0u8; FRAME_SAMPLES];
        for b in out.iter_mut() {
            *b = alaw_encode(PERIOD[self.phase % 8]);
            self.phase = (self.phase + 1) % 8;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codewords() {
        // G.711 A-law: silence is 0xD5 (positive zero) / 0x55 (negative).
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        let f = ToneSource::default().next_frame();
        assert_eq!(f[0], 0xD5);
        assert_eq!(f[4], 0xD5);
        // Mirror samples differ only in the sign bit.
        assert_eq!(f[2] ^ f[6], 0x80);
        assert_eq!(&f[..8], &f[8..16]);
    }
}
