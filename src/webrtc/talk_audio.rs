//! A browser's microphone for GB28181 talk: Opus packets (RFC 6716, in
//! RTP per RFC 7587) in, G.711 A-law packets of 20 ms at 8 kHz out — what
//! the device's `a=rtpmap:8 PCMA/8000` asks for.
//!
//! Opus decodes at any of its output rates (RFC 6716 §4.3.7: the decoder
//! resamples internally), so packets are decoded straight to 8 kHz mono
//! by the reference decoder: libopus translated to Rust (`unsafe-libopus`),
//! so the build needs no system library and no CMake. Packets
//! of 10–120 ms regroup into 160-sample packets; a lost packet is
//! concealed (RFC 6716 §4.4) so the device hears no gap.
//!
//! Sans-IO: packets in, A-law packets out.

use crate::gb28181::talk::SAMPLES_PER_PACKET;
use crate::media::audio::g711;

/// Output rate: G.711's.
pub const RATE: u32 = 8000;
/// The largest Opus packet (RFC 6716 §3.4 R5: 1275 bytes per frame, up to
/// 48 frames of which only 120 ms fit; WebRTC sends one frame of ≤ 60 ms).
pub const MAX_PACKET: usize = 1500;
/// Samples of the longest packet, 120 ms at 8 kHz.
const MAX_SAMPLES: usize = 960;
/// Samples concealed at most for one gap (a longer gap is silence anyway).
const MAX_CONCEALED: usize = 8 * SAMPLES_PER_PACKET;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TalkAudioError {
    #[error("Opus packet of {0} bytes is above {MAX_PACKET}")]
    TooLarge(usize),
    #[error("Opus packet not decodable: {0}")]
    Decode(&'static str),
}

impl TalkAudioError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        "opus_decode"
    }
}

/// Opus → A-law, one talk session's worth of state.
pub struct TalkAudio {
    decoder: OpusDecoder,
    pcm: Vec<i16>,
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

impl Default for TalkAudio {
    fn default() -> Self {
        Self {
            // 8 kHz mono is a rate and layout every decoder supports
            // (§4.3.7); failing here is a broken libopus, not bad input.
            decoder: OpusDecoder::new_8khz_mono(),
            pcm: vec![0; MAX_SAMPLES],
            pending: Vec::with_capacity(MAX_SAMPLES + SAMPLES_PER_PACKET),
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
            return Err(TalkAudioError::Decode("empty packet"));
        }
        let n = self.decode(opus)?;
        self.emit(n, out);
        Ok(())
    }

    /// Conceal `samples` lost samples after a gap in the RTP sequence,
    /// appending the packets that completes.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<Vec<u8>>) {
        let mut left = samples.min(MAX_CONCEALED);
        while left > 0 {
            let Ok(n) = self.decode(&[]) else { return };
            let n = n.min(left);
            if n == 0 {
                return;
            }
            self.emit(n, out);
            left -= n;
        }
    }

    fn decode(&mut self, opus: &[u8]) -> Result<usize, TalkAudioError> {
        // libopus checks the packet against its own framing rules
        // (RFC 6716 §3.4) and answers OPUS_INVALID_PACKET otherwise.
        self.decoder
            .decode(opus, &mut self.pcm)
            .map(|n| n.min(MAX_SAMPLES))
            .map_err(TalkAudioError::Decode)
    }

    fn emit(&mut self, decoded: usize, out: &mut Vec<Vec<u8>>) {
        self.pending
            .extend_from_slice(self.pcm.get(..decoded).unwrap_or_default());
        let whole = self.pending.len() / SAMPLES_PER_PACKET * SAMPLES_PER_PACKET;
        for packet in self.pending[..whole].chunks_exact(SAMPLES_PER_PACKET) {
            out.push(g711::encode(packet));
        }
        self.pending.drain(..whole);
    }
}

/// The reference decoder's state, owned. The translated C keeps its state
/// behind a raw pointer; this is the one place that touches it.
struct OpusDecoder(std::ptr::NonNull<unsafe_libopus::OpusDecoder>);

// SAFETY: the decoder state is plain memory owned by this value alone; the
// library keeps no thread-local or global state for it.
unsafe impl Send for OpusDecoder {}

impl OpusDecoder {
    fn new_8khz_mono() -> Self {
        let mut error = 0;
        // SAFETY: valid rate and channel count; `error` outlives the call.
        let state = unsafe { unsafe_libopus::opus_decoder_create(RATE as i32, 1, &mut error) };
        // 8 kHz mono is a rate and layout every decoder supports (§4.3.7);
        // a failure here is an allocation failure, not bad input.
        Self(std::ptr::NonNull::new(state).expect("Opus decoder at 8 kHz mono"))
    }

    /// Decode one packet into `pcm` (an empty packet asks for concealment
    /// of one frame, RFC 6716 §4.4). Returns the samples written.
    fn decode(&mut self, packet: &[u8], pcm: &mut [i16]) -> Result<usize, &'static str> {
        let data = if packet.is_empty() {
            std::ptr::null()
        } else {
            packet.as_ptr()
        };
        let len = i32::try_from(packet.len()).map_err(|_| "packet too large")?;
        let frame_size = i32::try_from(pcm.len()).map_err(|_| "buffer too large")?;
        // SAFETY: the state is live and exclusively borrowed; `data` points
        // at `len` readable bytes (or is null with len 0); `pcm` has room
        // for `frame_size` mono samples, the most the decoder writes.
        let n = unsafe {
            unsafe_libopus::opus_decode(self.0.as_ptr(), data, len, pcm.as_mut_ptr(), frame_size, 0)
        };
        usize::try_from(n).map_err(|_| unsafe_libopus::opus_strerror(n))
    }
}

impl Drop for OpusDecoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create and destroyed once.
        unsafe { unsafe_libopus::opus_decoder_destroy(self.0.as_ptr()) }
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
        // Whatever the bytes, an error at worst, and the decoder goes on.
        for seed in 0u8..=255 {
            let junk: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(seed) ^ seed).collect();
            let _ = audio.push(&junk, &mut out);
        }
        let before = out.len();
        audio.push(packets[1], &mut out).unwrap();
        assert!(out.len() >= before, "still decoding");
    }
}
