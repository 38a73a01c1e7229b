//! IMA ADPCM as Foscam cameras send it (Audio_Data) and expect it
//! (Talk_Data): 4 bits per sample, 8 kHz mono, 160 bytes = 320 samples.
//!
//! The step and index tables are those of the IMA Digital Audio Focus and
//! Technical Working Groups' recommended practice (IMA ADPCM, 1992). Foscam
//! differs from the WAV flavour in two ways public clients agree on: the
//! high nibble of each byte is the earlier sample, and there is no block
//! header, so the predictor and step index carry over from one packet to
//! the next — [`AdpcmState`] is kept for the life of a connection.

/// Step sizes, indexed by the step index (0..=88).
const STEPS: [i32; 89] = [
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60, 66,
    73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371, 408, 449,
    494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066, 2272,
    2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630, 9493,
    10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623, 27086, 29794, 32767,
];

/// Step index change for the three magnitude bits of a code.
const INDEX_DELTA: [i32; 8] = [-1, -1, -1, -1, 2, 4, 6, 8];

/// Predictor state of one direction of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdpcmState {
    predictor: i32,
    index: i32,
}

impl AdpcmState {
    pub fn new() -> Self {
        Self::default()
    }

    fn step(&self) -> i32 {
        // `index` is kept within 0..=88 by `advance`.
        STEPS[self.index.clamp(0, 88) as usize]
    }

    /// Apply one 4-bit code; returns the reconstructed sample.
    fn advance(&mut self, code: u8) -> i16 {
        let step = self.step();
        let mut diff = step >> 3;
        if code & 4 != 0 {
            diff += step;
        }
        if code & 2 != 0 {
            diff += step >> 1;
        }
        if code & 1 != 0 {
            diff += step >> 2;
        }
        if code & 8 != 0 {
            self.predictor -= diff;
        } else {
            self.predictor += diff;
        }
        self.predictor = self.predictor.clamp(i16::MIN as i32, i16::MAX as i32);
        self.index = (self.index + INDEX_DELTA[(code & 7) as usize]).clamp(0, 88);
        self.predictor as i16
    }

    /// Decode `adpcm` (two samples per byte, high nibble first), appending
    /// the samples to `out`.
    pub fn decode(&mut self, adpcm: &[u8], out: &mut Vec<i16>) {
        out.reserve(adpcm.len() * 2);
        for &b in adpcm {
            out.push(self.advance(b >> 4));
            out.push(self.advance(b & 0x0f));
        }
    }

    /// The code that best moves the predictor toward `sample`.
    fn code_for(&self, sample: i16) -> u8 {
        let step = self.step();
        let mut delta = sample as i32 - self.predictor;
        let mut code = 0u8;
        if delta < 0 {
            code = 8;
            delta = -delta;
        }
        // Successive approximation over step, step/2, step/4, matching
        // the decoder's reconstruction so both stay in lock-step.
        let mut threshold = step;
        for bit in [4u8, 2, 1] {
            if delta >= threshold {
                code |= bit;
                delta -= threshold;
            }
            threshold >>= 1;
        }
        code
    }

    /// Encode `pcm` (an even number of samples makes whole bytes; an odd
    /// last sample is padded with a repeat of itself), appending to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        out.reserve(pcm.len().div_ceil(2));
        for pair in pcm.chunks(2) {
            let first = pair[0];
            let second = pair.get(1).copied().unwrap_or(first);
            let hi = self.code_for(first);
            self.advance(hi);
            let lo = self.code_for(second);
            self.advance(lo);
            out.push((hi << 4) | lo);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sine of `freq` Hz at 8 kHz, `amplitude` peak.
    pub(crate) fn tone(freq: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / 8000.0).sin()) as i16
            })
            .collect()
    }

    /// Magnitude of the DFT of `x` at `freq` Hz (one bin, 8 kHz rate).
    pub(crate) fn dft_magnitude(x: &[i16], freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &s) in x.iter().enumerate() {
            re += s as f64 * (w * n as f64).cos();
            im -= s as f64 * (w * n as f64).sin();
        }
        (re * re + im * im).sqrt()
    }

    pub(crate) fn rms_db(x: &[i16]) -> f64 {
        let p = x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64;
        10.0 * p.log10()
    }

    /// The frequency (50 Hz grid, 50..=3950 Hz) with the most energy.
    pub(crate) fn peak_frequency(x: &[i16]) -> f64 {
        (1..80)
            .map(|k| k as f64 * 50.0)
            .max_by(|a, b| dft_magnitude(x, *a).total_cmp(&dft_magnitude(x, *b)))
            .unwrap_or(0.0)
    }

    #[test]
    fn one_khz_tone_round_trips_in_packets() {
        let pcm = tone(1000.0, 8000.0, 8000);
        // Encode and decode packet by packet with state carried across,
        // as the camera and our client each do.
        let (mut enc, mut dec) = (AdpcmState::new(), AdpcmState::new());
        let mut decoded = Vec::new();
        for packet_pcm in pcm.chunks(320) {
            let mut adpcm = Vec::new();
            enc.encode(packet_pcm, &mut adpcm);
            assert_eq!(adpcm.len(), 160);
            dec.decode(&adpcm, &mut decoded);
        }
        assert_eq!(decoded.len(), pcm.len());
        assert_eq!(peak_frequency(&decoded), 1000.0);
        // Skip the first 20 ms while the step size adapts up from 7.
        let level = rms_db(&decoded[160..]) - rms_db(&pcm[160..]);
        assert!(level.abs() < 1.0, "level differs by {level:.2} dB");
        // Not merely the right energy: the waveform follows the input.
        let err: f64 = decoded[160..]
            .iter()
            .zip(&pcm[160..])
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            / (pcm.len() - 160) as f64;
        let snr = rms_db(&pcm[160..]) - 10.0 * err.log10();
        assert!(snr > 15.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn high_nibble_is_the_first_sample() {
        // From rest (predictor 0, step 7): code 0x7 is +7/8*… the largest
        // positive step, code 0x0 the smallest; order must follow nibbles.
        let mut s = AdpcmState::new();
        let mut out = Vec::new();
        s.decode(&[0x70], &mut out);
        // 7 → diff = 0 + 7 + 3 + 1 = 11 (step 7: 7>>3=0, 7, 7>>1=3, 7>>2=1).
        assert_eq!(out[0], 11);
        // Index rose by 8 to step 16: code 0 adds 16>>3 = 2.
        assert_eq!(out[1], 13);
    }

    #[test]
    fn extremes_clamp_without_overflow() {
        let mut s = AdpcmState::new();
        let mut out = Vec::new();
        s.decode(&[0x77; 200], &mut out);
        assert_eq!(*out.last().unwrap(), i16::MAX);
        s.decode(&[0xff; 400], &mut out);
        assert_eq!(*out.last().unwrap(), i16::MIN);
    }
}
