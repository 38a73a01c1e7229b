//! An AAC audio track for the simulated camera: ADTS frames (ISO/IEC
//! 14496-3 §1.A.2) read from a file and looped, muxed into the PS with
//! stream_type 0x0F (ISO/IEC 13818-1 Table 2-34), the type GB/T 28181-2016
//! Annex C gives AAC.
//!
//! The camera embeds no AAC encoder, so the frames come from a file the
//! caller made (tests let ffmpeg encode a tone).

use bytes::Bytes;

/// Samples per AAC-LC frame (ISO/IEC 14496-3 §4.5.1.1).
pub const SAMPLES_PER_FRAME: u64 = 1024;

/// Sampling-frequency index table of ISO/IEC 14496-3 §1.6.3.4.
const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// ADTS frames, each with its header, ready to loop.
#[derive(Debug, Clone)]
pub struct AacTrack {
    pub frames: Vec<Bytes>,
    pub sample_rate: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AacTrackError {
    #[error("no ADTS frame at the start of the file")]
    NoFrames,
    #[error("sampling frequency index {0} is reserved")]
    BadRate(u8),
}

impl AacTrack {
    /// Cut an ADTS stream into frames by their 13-bit frame_length. Stops
    /// at the first byte that is not a frame (trailing junk is ignored).
    pub fn from_adts(data: Bytes) -> Result<Self, AacTrackError> {
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some(h) = data.get(at..at + 7) {
            if h[0] != 0xff || h[1] & 0xf6 != 0xf0 {
                break;
            }
            let len = (usize::from(h[3] & 0x03) << 11)
                | (usize::from(h[4]) << 3)
                | usize::from(h[5] >> 5);
            if len < 7 || at + len > data.len() {
                break;
            }
            frames.push(data.slice(at..at + len));
            at += len;
        }
        let first = frames.first().ok_or(AacTrackError::NoFrames)?;
        let index = (first[2] >> 2) & 0x0f;
        let sample_rate = *RATES
            .get(usize::from(index))
            .ok_or(AacTrackError::BadRate(index))?;
        Ok(Self {
            frames,
            sample_rate,
        })
    }

    /// 90 kHz duration of `n` frames.
    pub fn ticks(&self, n: u64) -> u64 {
        n * SAMPLES_PER_FRAME * 90_000 / u64::from(self.sample_rate.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adts(len: usize, rate_index: u8) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0] = 0xff;
        f[1] = 0xf1;
        f[2] = 0x40 | (rate_index << 2);
        f[3] = 0x80 | ((len >> 11) as u8 & 0x03);
        f[4] = (len >> 3) as u8;
        f[5] = ((len & 7) as u8) << 5 | 0x1f;
        f[6] = 0xfc;
        f
    }

    #[test]
    fn cuts_frames_and_reads_the_rate() {
        let mut data = adts(20, 8);
        data.extend(adts(33, 8));
        data.extend([1, 2, 3]);
        let t = AacTrack::from_adts(Bytes::from(data)).unwrap();
        assert_eq!(
            t.frames.iter().map(Bytes::len).collect::<Vec<_>>(),
            [20, 33]
        );
        assert_eq!(t.sample_rate, 16_000);
        assert_eq!(t.ticks(1), 5760);
        assert_eq!(
            AacTrack::from_adts(Bytes::from_static(b"junk")).unwrap_err(),
            AacTrackError::NoFrames
        );
        assert_eq!(
            AacTrack::from_adts(Bytes::from(adts(9, 13))).unwrap_err(),
            AacTrackError::BadRate(13)
        );
    }
}
