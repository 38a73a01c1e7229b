//! G.711 A-law encoding (ITU-T G.711 §A, Table 1a/2a): 16-bit linear PCM
//! to 8-bit A-law, the codec GB28181 voice broadcast uses (`PCMA/8000`,
//! RTP payload type 8, RFC 3551 §4.5.14).

/// Samples in one G.711 RTP packet: 20 ms at 8 kHz, the packet time
/// GB/T 28181 voice broadcast uses and the WebRTC talk path produces.
pub const SAMPLES_PER_PACKET: usize = 160;

/// One 16-bit sample to A-law: the 13-bit magnitude's segment and four
/// mantissa bits, sign in bit 7, even bits inverted (XOR 0x55).
pub fn encode_sample(pcm: i16) -> u8 {
    // G.711 works on 13-bit samples; the 3 low bits carry no information.
    let (sign, magnitude) = if pcm >= 0 {
        (0x80u8, (pcm >> 3) as i32)
    } else {
        // -1 - x avoids overflow for i16::MIN and matches the table's
        // one's-complement treatment of negative values.
        (0x00u8, ((-1 - i32::from(pcm)) >> 3))
    };
    let magnitude = magnitude.min(0x0FFF);
    let code = if magnitude < 0x20 {
        (magnitude >> 1) as u8
    } else {
        // Segment: position of the highest set bit above bit 4.
        let segment = (31 - (magnitude as u32).leading_zeros()) as i32 - 4;
        ((segment as u8) << 4) | (((magnitude >> segment) & 0x0F) as u8)
    };
    (code | sign) ^ 0x55
}

/// A-law bytes of a block of samples.
pub fn encode(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|s| encode_sample(*s)).collect()
}

/// A-law back to linear (the decoder's reconstruction value), for tests
/// and for checking what a device will hear.
pub fn decode_sample(alaw: u8) -> i16 {
    let a = alaw ^ 0x55;
    let segment = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // Silence codes as 0xD5 (positive zero) in every G.711 A-law coder.
        assert_eq!(encode_sample(0), 0xD5);
        assert_eq!(encode_sample(-1), 0x55);
        // Full scale: top segment, top mantissa.
        assert_eq!(encode_sample(i16::MAX), 0xAA);
        assert_eq!(encode_sample(i16::MIN), 0x2A);
        assert_eq!(decode_sample(0xD5), 8);
        assert_eq!(decode_sample(0xAA), 32_256);
        assert_eq!(decode_sample(0x2A), -32_256);
    }

    #[test]
    fn round_trip_error_is_within_the_segment_step() {
        for pcm in (i16::MIN..=i16::MAX).step_by(7) {
            let back = i32::from(decode_sample(encode_sample(pcm)));
            let step = (i32::from(pcm).abs() / 16).max(16);
            assert!(
                (back - i32::from(pcm)).abs() <= step,
                "{pcm} came back as {back}"
            );
        }
    }
}
