//! Why a transcode could not start, lost a frame, or ended.

use crate::media::frame::Codec;

/// A transcode failure. Per-frame kinds (`Jpeg`, `Encode`, `TooLarge` on
/// one JPEG) cost one frame; the others end the transcode and with it its
/// viewers, never the source or other streams.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    #[error("transcoding for browsers is disabled (transcode.enabled)")]
    Disabled,
    #[error("{0:?} video cannot be transcoded")]
    Unsupported(Codec),
    #[error("too many transcodes running (transcode.max_streams = {0})")]
    TooMany(usize),
    #[error("JPEG not decodable: {0}")]
    Jpeg(String),
    #[error("JPEG colour space {0} is not supported (only YCbCr and greyscale)")]
    JpegColorSpace(String),
    #[error("picture {width}x{height} exceeds the {max_width}x{max_height} limit")]
    TooLarge {
        width: usize,
        height: usize,
        max_width: usize,
        max_height: usize,
    },
    #[error("picture {0}x{1} is too small to encode")]
    TooSmall(usize, usize),
    #[error("cannot start the H.265 decoder `{program}`: {reason}")]
    DecoderStart { program: String, reason: String },
    #[error("the H.265 decoder ended: {0}")]
    DecoderExit(String),
    #[error("the H.265 decoder's output is not YUV4MPEG2 4:2:0: {0}")]
    DecoderOutput(String),
    #[error("H.264 encoder: {0}")]
    Encode(String),
    #[error("{0} frames in a row failed; giving up")]
    Persistent(u32),
    #[error("transcoder thread panicked: {0}")]
    Panic(String),
    #[error("cannot start a transcoder thread: {0}")]
    Thread(String),
    #[error("the transcode produced no picture within {0:?}")]
    NoOutput(std::time::Duration),
}

impl TranscodeError {
    /// Metric label (`camgate_transcode_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            TranscodeError::Disabled => "disabled",
            TranscodeError::Unsupported(_) => "unsupported",
            TranscodeError::TooMany(_) => "too_many",
            TranscodeError::Jpeg(_) => "jpeg_decode",
            TranscodeError::JpegColorSpace(_) => "jpeg_colorspace",
            TranscodeError::TooLarge { .. } => "too_large",
            TranscodeError::TooSmall(..) => "too_small",
            TranscodeError::DecoderStart { .. } => "decoder_start",
            TranscodeError::DecoderExit(_) => "decoder_exit",
            TranscodeError::DecoderOutput(_) => "decoder_output",
            TranscodeError::Encode(_) => "encode",
            TranscodeError::Persistent(_) => "persistent",
            TranscodeError::Panic(_) => "panic",
            TranscodeError::Thread(_) => "thread",
            TranscodeError::NoOutput(_) => "no_output",
        }
    }

    /// Every kind, for zero-valued metric series.
    pub const KINDS: &'static [&'static str] = &[
        "disabled",
        "unsupported",
        "too_many",
        "jpeg_decode",
        "jpeg_colorspace",
        "too_large",
        "too_small",
        "decoder_start",
        "decoder_exit",
        "decoder_output",
        "hevc_decode",
        "encode",
        "persistent",
        "panic",
        "thread",
        "no_output",
    ];
}

/// Text of a caught panic payload.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_for_zero_series() {
        let samples = [
            TranscodeError::Disabled,
            TranscodeError::Unsupported(Codec::Mpeg4),
            TranscodeError::TooMany(1),
            TranscodeError::Jpeg(String::new()),
            TranscodeError::JpegColorSpace(String::new()),
            TranscodeError::TooLarge {
                width: 1,
                height: 1,
                max_width: 0,
                max_height: 0,
            },
            TranscodeError::TooSmall(1, 1),
            TranscodeError::DecoderStart {
                program: String::new(),
                reason: String::new(),
            },
            TranscodeError::DecoderExit(String::new()),
            TranscodeError::DecoderOutput(String::new()),
            TranscodeError::Encode(String::new()),
            TranscodeError::Persistent(1),
            TranscodeError::Panic(String::new()),
            TranscodeError::Thread(String::new()),
            TranscodeError::NoOutput(std::time::Duration::ZERO),
        ];
        for e in samples {
            assert!(TranscodeError::KINDS.contains(&e.kind()), "{}", e.kind());
        }
    }
}
