//! Reading a voice upload: a RIFF/WAVE file (the canonical PCM `fmt `
//! chunk, format 1) that must be 16-bit mono at 8000 Hz, or headerless
//! s16le at 8000 Hz. Bounded and panic-free: the API hands it whatever a
//! client posted.

/// Largest upload accepted: ten minutes of 8 kHz 16-bit mono.
pub const MAX_BYTES: usize = 10 * 60 * 8000 * 2 + 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("audio of {0} bytes is above the {MAX_BYTES} byte limit")]
    TooLarge(usize),
    #[error("WAV without a {0} chunk")]
    MissingChunk(&'static str),
    #[error("WAV chunk {0:?} runs past the end of the file")]
    Truncated(String),
    #[error(
        "WAV format {format}, {channels} channel(s), {rate} Hz, {bits} bit: need PCM mono 8000 Hz 16 bit"
    )]
    Unsupported {
        format: u16,
        channels: u16,
        rate: u32,
        bits: u16,
    },
    #[error("no audio samples")]
    Empty,
}

impl WavError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::MissingChunk(_) => "missing_chunk",
            Self::Truncated(_) => "truncated",
            Self::Unsupported { .. } => "unsupported",
            Self::Empty => "empty",
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Samples of a WAV file, or of raw s16le when there is no RIFF header.
pub fn read_pcm(data: &[u8]) -> Result<Vec<i16>, WavError> {
    if data.len() > MAX_BYTES {
        return Err(WavError::TooLarge(data.len()));
    }
    let samples = if data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WAVE") {
        wav_samples(data)?
    } else {
        data
    };
    let pcm: Vec<i16> = samples
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    if pcm.is_empty() {
        return Err(WavError::Empty);
    }
    Ok(pcm)
}

fn wav_samples(data: &[u8]) -> Result<&[u8], WavError> {
    let mut at = 12;
    let mut format_ok = false;
    // Chunks: 4-byte id, 4-byte little-endian size, body padded to even.
    for _ in 0..64 {
        let (Some(id), Some(size)) = (data.get(at..at + 4), u32_at(data, at + 4)) else {
            break;
        };
        let body_start = at + 8;
        let name = String::from_utf8_lossy(id).into_owned();
        let body = data
            .get(body_start..body_start.saturating_add(size as usize))
            .ok_or_else(|| WavError::Truncated(name.clone()))?;
        match id {
            b"fmt " => {
                let field = |o| u16_at(body, o).unwrap_or(0);
                let (format, channels, bits) = (field(0), field(2), field(14));
                let rate = u32_at(body, 4).unwrap_or(0);
                if (format, channels, rate, bits) != (1, 1, 8000, 16) {
                    return Err(WavError::Unsupported {
                        format,
                        channels,
                        rate,
                        bits,
                    });
                }
                format_ok = true;
            }
            b"data" if format_ok => return Ok(body),
            b"data" => return Err(WavError::MissingChunk("fmt ")),
            _ => {}
        }
        at = body_start + size as usize + (size as usize & 1);
    }
    Err(WavError::MissingChunk(if format_ok {
        "data"
    } else {
        "fmt "
    }))
}

/// A canonical 16-bit mono 8 kHz WAV of `pcm` (tests and tools).
pub fn write_wav(pcm: &[i16]) -> Vec<u8> {
    let data_len = (pcm.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + pcm.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_and_raw_uploads() {
        let pcm: Vec<i16> = (0..800).map(|i| (i * 40 - 16_000) as i16).collect();
        assert_eq!(read_pcm(&write_wav(&pcm)).unwrap(), pcm);
        let raw: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(read_pcm(&raw).unwrap(), pcm);

        let mut stereo = write_wav(&pcm);
        stereo[22] = 2;
        assert!(matches!(
            read_pcm(&stereo),
            Err(WavError::Unsupported { channels: 2, .. })
        ));
        let mut cut = write_wav(&pcm);
        cut.truncate(100);
        assert_eq!(read_pcm(&cut), Err(WavError::Truncated("data".into())));
        assert_eq!(
            read_pcm(b"RIFF\0\0\0\0WAVE"),
            Err(WavError::MissingChunk("fmt "))
        );
        assert_eq!(read_pcm(b""), Err(WavError::Empty));
        assert!(read_pcm(&vec![0; MAX_BYTES + 1]).is_err());
    }
}
