//! H.265 and Motion-JPEG sources made playable in browsers: transcoded to
//! H.264 Constrained Baseline, which every WebRTC browser decodes
//! (RFC 7742 §6.2 makes H.264 CB mandatory; browsers offer it as
//! `profile-level-id=42e01f`). RTSP viewers keep the camera's own codec;
//! only WebRTC viewers of such a stream see the transcode.
//!
//! One transcode per stream, shared by all its WebRTC viewers
//! ([`shared::Transcodes`]): the first browser starts it, the last one
//! leaving stops it. It subscribes to the stream's hub like any viewer and
//! publishes into a hub of its own, so browsers get the same fan-out, GOP
//! cache and lag handling as the camera's stream; audio is passed through.
//!
//! - [`mjpeg`]: JPEG → I420 in process with `zune-jpeg` (pure Rust, fast,
//!   and a bad JPEG costs one frame).
//! - [`pipeline`] with [`y4m`]: H.265 → I420 by an `ffmpeg` child process
//!   (libavcodec's HEVC decoder) writing YUV4MPEG2 to a pipe.
//! - [`h264_encoder`]: I420 → H.264 with OpenH264 (`openh264` crate,
//!   built from its bundled source; `nasm` speeds it up when present).
//!
//! ## Why H.265 is decoded by a child process
//!
//! Both serious options use the same decoder, Debian's libavcodec (FFmpeg
//! 5.1 on bookworm); they differ in how it is reached. Measured on the
//! 2-core development machine:
//!
//! | | `ffmpeg-next` 7.1 (in process) | `ffmpeg` child process |
//! | --- | --- | --- |
//! | build | +96 CPU-s (bindgen, clang-sys; 3 min 17 s wall under load) | nothing |
//! | build packages | libavcodec-dev, libavformat-dev, libclang (~300 MB) | none |
//! | runtime packages (Debian, installed size) | libavcodec59 and its codec libraries, ~245 MB | `ffmpeg`, ~780 MB (optional in the image) |
//! | 720p HEVC decode, one thread | ~330 fps | ~330 fps, +1 ms of pipe copy per picture |
//! | a decoder crash on a hostile bitstream | takes the gateway down | ends one transcode |
//!
//! Camera bitstreams are untrusted input and libavcodec's HEVC decoder has
//! a long CVE history, so process isolation decides it, together with a
//! build that stays free of bindgen and -dev packages. The costs: a pipe
//! copy the measurements show to be noise, and a bigger runtime install
//! (`ffmpeg` is what the MP4 download jobs run anyway; the container image
//! can leave it out, see `deploy/Dockerfile`). Without `ffmpeg` installed, H.265 sources
//! answer WHEP with 501 as before; MJPEG needs nothing external.
//!
//! Everything fed by a camera is bounded and fallible: picture sizes are
//! checked against [`PictureLimits`] before buffers are allocated, decode
//! and encode run under `catch_unwind` on threads of their own, and a
//! failure ends only the transcode's viewers, with a log line and
//! `camgate_transcode_errors_total{kind}`.

pub mod cpu;
pub mod error;
pub mod h264_encoder;
pub mod mjpeg;
pub mod picture;
pub mod pipeline;
pub mod shared;
pub mod y4m;

use std::path::PathBuf;

pub use error::TranscodeError;
pub use h264_encoder::EncoderSettings;
pub use pipeline::{Output, Pushed, Transcoder};
pub use shared::{SharedTranscode, Transcodes};

use crate::media::frame::Codec;

/// Source codecs transcoded, as metric label values.
pub const SOURCE_CODECS: &[&str] = &["h265", "mjpeg"];

/// The `codec` label of a transcoded source codec.
pub fn codec_label(codec: Codec) -> &'static str {
    match codec {
        Codec::H265 => "h265",
        Codec::Mjpeg => "mjpeg",
        _ => "other",
    }
}

/// Largest picture a transcode accepts from a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureLimits {
    pub max_width: usize,
    pub max_height: usize,
}

impl Default for PictureLimits {
    /// 4K UHD: the largest picture OpenH264 encodes.
    fn default() -> Self {
        Self {
            max_width: 3840,
            max_height: 2160,
        }
    }
}

impl PictureLimits {
    pub fn check(&self, width: usize, height: usize) -> Result<(), TranscodeError> {
        if width > self.max_width || height > self.max_height {
            return Err(TranscodeError::TooLarge {
                width,
                height,
                max_width: self.max_width,
                max_height: self.max_height,
            });
        }
        if width < 2 || height < 2 {
            return Err(TranscodeError::TooSmall(width, height));
        }
        Ok(())
    }
}

/// Transcoding settings (the `transcode` section of the configuration).
#[derive(Debug, Clone)]
pub struct TranscodeConfig {
    pub enabled: bool,
    /// The FFmpeg binary that decodes H.265.
    pub ffmpeg: PathBuf,
    /// Most streams transcoded at once; more are refused (503).
    pub max_streams: usize,
    pub limits: PictureLimits,
    pub encoder: EncoderSettings,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ffmpeg: PathBuf::from("ffmpeg"),
            max_streams: 4,
            limits: PictureLimits::default(),
            encoder: EncoderSettings::default(),
        }
    }
}

/// Whether `program` runs (`program -version` exits 0).
pub fn tool_available(program: impl AsRef<std::ffi::OsStr>) -> bool {
    std::process::Command::new(program)
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
