//! A browser's microphone for GB28181 talk: Opus packets (RFC 6716, in
//! RTP per RFC 7587) in, G.711 A-law packets of 20 ms at 8 kHz out — what
//! the device's `a=rtpmap:8 PCMA/8000` asks for.
//!
//! Packets are decoded at 48 kHz mono and brought to 8 kHz here by a
//! low-pass FIR and 6:1 decimation ([`Decimator`]). Opus may decode at
//! 8 kHz itself (RFC 6716 §4.3.7), but the decoder used plays hybrid-mode
//! packets — Chromium's usual voice mode — at half pitch when asked for
//! 8, 12 or 24 kHz (measured: a 1 kHz tone comes out at 500 Hz), while
//! its 48 kHz output is right in every mode. Packets of 10–120 ms regroup
//! into 160-sample packets; a lost packet is concealed (RFC 6716 §4.4)
//! so the device hears no gap.
//!
//! The decoder is the pure-Rust `opus-decoder` (no FFI, no unsafe); it is
//! still third-party code on network input, so a panic inside it is
//! caught, counted, and costs only the packet (the decoder is rebuilt).
//!
//! Sans-IO: packets in, A-law packets out.

use std::panic::{AssertUnwindSafe, catch_unwind};

use opus_decoder::OpusDecoder;

use crate::gb28181::talk::SAMPLES_PER_PACKET;
use crate::media::audio::g711;

/// Output rate: G.711's.
pub const RATE: u32 = 8000;
/// The decoder's rate, Opus's native one.
const DECODE_RATE: u32 = 48_000;
const FACTOR: usize = (DECODE_RATE / RATE) as usize;
/// The largest Opus packet (RFC 6716 §3.4 R5: 1275 bytes per frame, up to
/// 48 frames of which only 120 ms fit; WebRTC sends one frame of ≤ 60 ms).
pub const MAX_PACKET: usize = 1500;
/// Samples of the longest packet, 120 ms at 48 kHz.
const MAX_SAMPLES: usize = 5760;
/// Samples (8 kHz) concealed at most for one gap (a longer gap is
/// silence anyway).
const MAX_CONCEALED: usize = 8 * SAMPLES_PER_PACKET;

/// FIR length: 8 taps per output phase.
const TAPS: usize = 8 * FACTOR;
/// Pass band edge: G.711's 3.4 kHz voice band, below the 4 kHz Nyquist.
const CUTOFF_HZ: f32 = 3600.0;

/// 48 kHz → 8 kHz: a Hamming-windowed sinc low-pass (so nothing above
/// 4 kHz folds into the voice band) keeping every sixth sample.
#[derive(Debug, Clone)]
pub struct Decimator {
    taps: [f32; TAPS],
    /// Input not yet consumed, oldest first (starts with `TAPS - FACTOR`
    /// zeros so every `FACTOR` inputs give one output).
    buf: Vec<i16>,
}

impl Default for Decimator {
    fn default() -> Self {
        let fc = CUTOFF_HZ / DECODE_RATE as f32;
        let mid = (TAPS - 1) as f32 / 2.0;
        let mut taps = [0f32; TAPS];
        for (n, tap) in taps.iter_mut().enumerate() {
            let x = n as f32 - mid;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f32::consts::PI * fc * x).sin() / (std::f32::consts::PI * x)
            };
            let window =
                0.54 - 0.46 * (2.0 * std::f32::consts::PI * n as f32 / (TAPS - 1) as f32).cos();
            *tap = sinc * window;
        }
        // Unity gain at DC.
        let sum: f32 = taps.iter().sum();
        taps.iter_mut().for_each(|t| *t /= sum);
        Self {
            taps,
            buf: vec![0; TAPS - FACTOR],
        }
    }
}

impl Decimator {
    /// Filter `input` (48 kHz) and append the 8 kHz samples to `out`.
    pub fn push(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.buf.extend_from_slice(input);
        let mut start = 0;
        while let Some(window) = self.buf.get(start..start + TAPS) {
            let y: f32 = window
                .iter()
                .zip(&self.taps)
                .map(|(x, t)| f32::from(*x) * t)
                .sum();
            out.push(y.round().clamp(-32768.0, 32767.0) as i16);
            start += FACTOR;
        }
        self.buf.drain(..start);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TalkAudioError {
    #[error("Opus packet of {0} bytes is above {MAX_PACKET}")]
    TooLarge(usize),
    #[error("Opus packet not decodable: {0}")]
    Decode(String),
    #[error("the Opus decoder panicked; packet dropped and decoder reset")]
    Panic,
}

impl TalkAudioError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) | Self::Decode(_) => "opus_decode",
            Self::Panic => "decoder_panic",
        }
    }
}

/// Opus → A-law, one talk session's worth of state.
pub struct TalkAudio {
    decoder: OpusDecoder,
    /// One decoded packet at 48 kHz.
    pcm: Vec<i16>,
    decimator: Decimator,
    /// Decoded samples not yet a whole packet.
    pending: Vec<i16>,
}

impl std::fmt::Debug for TalkAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalkAudio")
            .field("pending", &self.pending.len())
            .finish()
    }
}

fn new_decoder() -> OpusDecoder {
    // 48 kHz mono is a rate and layout every decoder supports (§4.3.7);
    // failing here is a bug in the decoder, not an input error.
    OpusDecoder::new(DECODE_RATE, 1).expect("Opus decoder at 48 kHz mono")
}

impl Default for TalkAudio {
    fn default() -> Self {
        Self {
            decoder: new_decoder(),
            pcm: vec![0; MAX_SAMPLES],
            decimator: Decimator::default(),
            pending: Vec::with_capacity(MAX_SAMPLES / FACTOR + SAMPLES_PER_PACKET),
        }
    }
}

impl TalkAudio {
    /// Decode one Opus packet and append the whole A-law packets it
    /// completes to `out`.
    pub fn push(&mut self, opus: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), TalkAudioError> {
        if opus.len() > MAX_PACKET {
            return Err(TalkAudioError::TooLarge(opus.len()));
        }
        // An empty packet would ask for concealment; that is `conceal`'s.
        if opus.is_empty() {
            return Err(TalkAudioError::Decode("empty packet".into()));
        }
        let n = self.decode(opus)?;
        self.emit(n, out);
        Ok(())
    }

    /// Conceal `samples` lost samples (8 kHz) after a gap in the RTP
    /// sequence, appending the packets that completes.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<Vec<u8>>) {
        let mut left = samples.min(MAX_CONCEALED);
        while left > 0 {
            let Ok(n) = self.decode(&[]) else { return };
            let n = (n / FACTOR).min(left) * FACTOR;
            if n == 0 {
                return;
            }
            self.emit(n, out);
            left -= n / FACTOR;
        }
    }

    fn decode(&mut self, opus: &[u8]) -> Result<usize, TalkAudioError> {
        let decoder = &mut self.decoder;
        let pcm = &mut self.pcm;
        match catch_unwind(AssertUnwindSafe(|| decoder.decode(opus, pcm, false))) {
            Ok(Ok(n)) => Ok(n.min(MAX_SAMPLES)),
            Ok(Err(e)) => Err(TalkAudioError::Decode(e.to_string())),
            Err(_) => {
                self.decoder = new_decoder();
                Err(TalkAudioError::Panic)
            }
        }
    }

    /// Decimate `decoded` samples of `pcm` and packetize what is whole.
    fn emit(&mut self, decoded: usize, out: &mut Vec<Vec<u8>>) {
        self.decimator.push(
            self.pcm.get(..decoded).unwrap_or_default(),
            &mut self.pending,
        );
        let whole = self.pending.len() / SAMPLES_PER_PACKET * SAMPLES_PER_PACKET;
        for packet in self.pending[..whole].chunks_exact(SAMPLES_PER_PACKET) {
            out.push(g711::encode(packet));
        }
        self.pending.drain(..whole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 ms of a 1 kHz sine, encoded by libopus (ffmpeg) at 48 kHz mono,
    /// 20 ms frames: `[u16 BE length][packet]` repeated.
    const SINE: &[u8] = include_bytes!("testdata/sine-1khz-20ms.opus-packets");

    fn packets() -> Vec<&'static [u8]> {
        let mut out = Vec::new();
        let mut rest = SINE;
        while let [a, b, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*a, *b]));
            out.push(&tail[..len]);
            rest = &tail[len..];
        }
        out
    }

    fn mean_abs(alaw: &[u8]) -> u32 {
        let sum: u32 = alaw
            .iter()
            .map(|b| u32::from(g711::decode_sample(*b).unsigned_abs()))
            .sum();
        sum / alaw.len() as u32
    }

    #[test]
    fn a_sine_comes_out_as_loud_20ms_alaw_packets() {
        let packets = packets();
        assert_eq!(packets.len(), 11);
        let mut audio = TalkAudio::default();
        let mut out = Vec::new();
        for p in &packets {
            audio.push(p, &mut out).unwrap();
        }
        assert_eq!(out.len(), packets.len(), "one 20 ms packet per 20 ms frame");
        assert!(out.iter().all(|p| p.len() == SAMPLES_PER_PACKET));
        // Past the encoder's start-up, the tone is there at full level:
        // ffmpeg's sine is 1/8 of full scale (mean |x| ≈ 2600).
        for p in &out[3..out.len() - 1] {
            let level = mean_abs(p);
            assert!((1500..4000).contains(&level), "level {level}");
        }
        // 1 kHz at 8 kHz: the waveform repeats every 8 samples.
        let pcm: Vec<i16> = out[5].iter().map(|b| g711::decode_sample(*b)).collect();
        let period_error: i32 = (0..152)
            .map(|i| (i32::from(pcm[i]) - i32::from(pcm[i + 8])).abs())
            .sum::<i32>()
            / 152;
        assert!(
            period_error < 300,
            "not a 1 kHz tone: error {period_error} {pcm:?}"
        );
    }

    #[test]
    fn decimator_keeps_the_voice_band_and_drops_what_would_alias() {
        let tone = |hz: f32| -> Vec<i16> {
            (0..4800)
                .map(|i| ((i as f32 * hz * std::f32::consts::TAU / 48_000.0).sin() * 8000.0) as i16)
                .collect()
        };
        let level = |hz: f32| {
            let mut d = Decimator::default();
            let mut out = Vec::new();
            // In odd-sized pieces, as packets of any length would come.
            for piece in tone(hz).chunks(966) {
                d.push(piece, &mut out);
            }
            assert_eq!(out.len(), 800, "100 ms at 8 kHz");
            out[100..].iter().map(|s| i32::from(*s).abs()).sum::<i32>() / 700
        };
        // A full-scale sine's mean |x| is 2/π of its peak: 5093.
        let pass = level(1000.0);
        assert!((4800..5400).contains(&pass), "1 kHz kept: {pass}");
        // 7 kHz would fold onto 1 kHz at 8 kHz.
        let stop = level(7000.0);
        assert!(stop < 100, "7 kHz must not alias: {stop}");
    }

    #[test]
    fn loss_is_concealed_and_garbage_is_an_error() {
        let packets = packets();
        let mut audio = TalkAudio::default();
        let mut out = Vec::new();
        audio.push(packets[0], &mut out).unwrap();
        audio.conceal(2 * SAMPLES_PER_PACKET, &mut out);
        assert_eq!(out.len(), 3, "the gap is filled");
        assert_eq!(audio.push(&[], &mut out).unwrap_err().kind(), "opus_decode");
        let big = vec![0u8; MAX_PACKET + 1];
        assert_eq!(
            audio.push(&big, &mut out).unwrap_err().kind(),
            "opus_decode"
        );
        // Whatever the bytes, no panic escapes and the decoder goes on.
        for seed in 0u8..=255 {
            let junk: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(seed) ^ seed).collect();
            let _ = audio.push(&junk, &mut out);
        }
        let before = out.len();
        audio.push(packets[1], &mut out).unwrap();
        assert!(out.len() >= before, "still decoding");
    }
}
