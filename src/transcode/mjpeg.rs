//! Motion-JPEG frames (ITU-T T.81 baseline, as Foscam cameras send them)
//! decoded to I420 with `zune-jpeg`.
//!
//! zune-jpeg hands out YCbCr interleaved at full resolution (chroma
//! upsampled whatever the file's sampling, 4:2:0 or 4:2:2 or 4:4:4); the
//! chroma is averaged back down over 2x2 blocks here, so every sampling
//! arrives at the encoder the same way. JFIF samples are full range
//! (T.871 §7), which the picture says so the encoder can signal it. A
//! greyscale JPEG gets neutral chroma; Adobe RGB/CMYK JPEGs are refused.
//!
//! The decoder is given the size limits before it allocates, so a header
//! that claims 65535x65535 costs nothing, and it runs under
//! `catch_unwind`: a JPEG comes off the network, and a decoder bug must
//! cost one frame, not the process.

use std::panic::{AssertUnwindSafe, catch_unwind};

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::PictureLimits;
use super::error::{TranscodeError, panic_message};
use super::picture::Picture;

/// A JPEG decoder that keeps its scratch buffer between frames.
pub struct MjpegDecoder {
    limits: PictureLimits,
    scratch: Vec<u8>,
}

impl MjpegDecoder {
    pub fn new(limits: PictureLimits) -> Self {
        Self {
            limits,
            scratch: Vec::new(),
        }
    }

    /// Decode one JPEG to an I420 picture (odd sizes cropped to even).
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<Picture, TranscodeError> {
        let limits = self.limits;
        let scratch = &mut self.scratch;
        catch_unwind(AssertUnwindSafe(|| decode_into(jpeg, limits, scratch)))
            .unwrap_or_else(|p| Err(TranscodeError::Panic(panic_message(p.as_ref()))))
    }
}

fn decode_into(
    jpeg: &[u8],
    limits: PictureLimits,
    scratch: &mut Vec<u8>,
) -> Result<Picture, TranscodeError> {
    // The frame header's size, checked before the decoder sees the data.
    if let Some((w, h)) = crate::media::jpeg::dimensions(jpeg) {
        limits.check(usize::from(w), usize::from(h))?;
    }
    let options = DecoderOptions::default()
        .set_max_width(limits.max_width)
        .set_max_height(limits.max_height);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    decoder
        .decode_headers()
        .map_err(|e| jpeg_error(e, limits))?;
    let input = decoder
        .input_colorspace()
        .ok_or_else(|| TranscodeError::Jpeg("no frame header".into()))?;
    let out_space = match input {
        ColorSpace::YCbCr => ColorSpace::YCbCr,
        ColorSpace::Luma => ColorSpace::Luma,
        other => return Err(TranscodeError::JpegColorSpace(format!("{other:?}"))),
    };
    decoder.set_options(options.jpeg_set_out_colorspace(out_space));
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| TranscodeError::Jpeg("no frame header".into()))?;
    limits.check(width, height)?;
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| TranscodeError::Jpeg("size overflows".into()))?;
    scratch.resize(size, 0);
    decoder
        .decode_into(scratch)
        .map_err(|e| jpeg_error(e, limits))?;
    let mut picture = match out_space {
        ColorSpace::YCbCr => ycbcr_to_i420(scratch, width, height),
        _ => luma_to_i420(scratch, width, height),
    }?;
    picture.full_range = true;
    Ok(picture)
}

fn jpeg_error(e: zune_jpeg::errors::DecodeErrors, limits: PictureLimits) -> TranscodeError {
    match e {
        zune_jpeg::errors::DecodeErrors::LargeDimensions(n) => TranscodeError::TooLarge {
            width: n,
            height: n,
            max_width: limits.max_width,
            max_height: limits.max_height,
        },
        other => TranscodeError::Jpeg(other.to_string()),
    }
}

/// Even-cropped size and an I420 buffer for it, split into its planes.
fn i420_buffer(width: usize, height: usize) -> Result<(usize, usize, Vec<u8>), TranscodeError> {
    let (w, h) = (width & !1, height & !1);
    if w < 2 || h < 2 {
        return Err(TranscodeError::TooSmall(width, height));
    }
    let len = Picture::buffer_len(w, h).ok_or(TranscodeError::TooSmall(width, height))?;
    Ok((w, h, vec![0; len]))
}

fn short() -> TranscodeError {
    TranscodeError::Jpeg("decoder output shorter than its size".into())
}

/// Interleaved full-resolution Y Cb Cr to I420, chroma averaged over 2x2.
fn ycbcr_to_i420(src: &[u8], width: usize, height: usize) -> Result<Picture, TranscodeError> {
    let (w, h, mut out) = i420_buffer(width, height)?;
    let row_bytes = width * 3;
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut((w / 2) * (h / 2));
    for (row, dst) in y_plane.chunks_exact_mut(w).enumerate() {
        let start = row * row_bytes;
        let src_row = src.get(start..start + w * 3).ok_or_else(short)?;
        for (d, px) in dst.iter_mut().zip(src_row.chunks_exact(3)) {
            *d = px[0];
        }
    }
    let pairs = u_plane
        .chunks_exact_mut(w / 2)
        .zip(v_plane.chunks_exact_mut(w / 2));
    for (crow, (u_row, v_row)) in pairs.enumerate() {
        let top = 2 * crow * row_bytes;
        let upper = src.get(top..top + w * 3).ok_or_else(short)?;
        let lower = src
            .get(top + row_bytes..top + row_bytes + w * 3)
            .ok_or_else(short)?;
        let blocks = upper.chunks_exact(6).zip(lower.chunks_exact(6));
        for ((u, v), (a, b)) in u_row.iter_mut().zip(v_row.iter_mut()).zip(blocks) {
            *u = average4(a[1], a[4], b[1], b[4]);
            *v = average4(a[2], a[5], b[2], b[5]);
        }
    }
    Picture::from_i420(w, h, out).map_err(|e| TranscodeError::Jpeg(e.to_string()))
}

fn luma_to_i420(src: &[u8], width: usize, height: usize) -> Result<Picture, TranscodeError> {
    let (w, h, mut out) = i420_buffer(width, height)?;
    let (y_plane, chroma) = out.split_at_mut(w * h);
    for (row, dst) in y_plane.chunks_exact_mut(w).enumerate() {
        let start = row * width;
        dst.copy_from_slice(src.get(start..start + w).ok_or_else(short)?);
    }
    chroma.fill(128);
    Picture::from_i420(w, h, out).map_err(|e| TranscodeError::Jpeg(e.to_string()))
}

fn average4(a: u8, b: u8, c: u8, d: u8) -> u8 {
    ((u16::from(a) + u16::from(b) + u16::from(c) + u16::from(d) + 2) / 4) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::foscam_camera::{DEMO_MJPEG, split_jpegs};

    fn decoder() -> MjpegDecoder {
        MjpegDecoder::new(PictureLimits::default())
    }

    #[test]
    fn demo_clip_decodes_to_640x360_full_range() {
        let jpegs = split_jpegs(DEMO_MJPEG);
        let mut d = decoder();
        let p = d.decode(&jpegs[0]).unwrap();
        assert_eq!((p.width(), p.height()), (640, 360));
        assert!(p.full_range);
        // testsrc2 is colourful: the chroma planes are not flat.
        let samples: std::collections::BTreeSet<_> = (0..640)
            .step_by(40)
            .filter_map(|x| p.chroma(x, 180))
            .collect();
        assert!(samples.len() > 4, "{samples:?}");
    }

    /// A 4:2:2 JPEG (what many Foscam firmwares send), made by ffmpeg
    /// from a flat colour so the expected samples are known: 0x3060a0 is
    /// Y≈92 Cb≈167 Cr≈97 in JFIF full range.
    #[test]
    fn sampling_422_arrives_as_i420() {
        if !crate::transcode::tool_available("ffmpeg") {
            eprintln!("SKIPPED: ffmpeg not installed");
            return;
        }
        let out = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "color=c=0x3060a0:s=66x34",
            ])
            .args(["-frames:v", "1", "-pix_fmt", "yuvj422p", "-f", "mjpeg", "-"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let p = decoder().decode(&out.stdout).unwrap();
        assert_eq!((p.width(), p.height()), (66, 34));
        let y = p.luma(33, 17).unwrap();
        let (u, v) = p.chroma(33, 17).unwrap();
        assert!((88..=96).contains(&y), "Y {y}");
        assert!((162..=172).contains(&u), "Cb {u}");
        assert!((92..=102).contains(&v), "Cr {v}");
    }

    /// A one-component 8x8 baseline JPEG written by hand (ffmpeg's MJPEG
    /// encoder has no greyscale): one Huffman code, `0`, for DC category 0
    /// and for EOB, so the block is flat at the level shift, 128.
    #[test]
    fn greyscale_gets_neutral_chroma() {
        let mut j = vec![0xff, 0xd8];
        j.extend_from_slice(&[0xff, 0xdb, 0x00, 67, 0x00]);
        j.extend([1u8; 64]);
        j.extend_from_slice(&[
            0xff, 0xc0, 0x00, 11, 8, 0x00, 0x08, 0x00, 0x08, 1, 1, 0x11, 0,
        ]);
        for class in [0x00, 0x10] {
            let mut counts = [0u8; 16];
            counts[0] = 1;
            j.extend_from_slice(&[0xff, 0xc4, 0x00, 20, class]);
            j.extend_from_slice(&counts);
            j.push(0x00);
        }
        j.extend_from_slice(&[0xff, 0xda, 0x00, 8, 1, 1, 0x00, 0, 63, 0]);
        j.push(0x3f); // DC "0", EOB "0", padded with ones
        j.extend_from_slice(&[0xff, 0xd9]);
        let p = decoder().decode(&j).unwrap();
        assert_eq!((p.width(), p.height()), (8, 8));
        assert_eq!(p.luma(3, 3), Some(128));
        assert_eq!(p.chroma(3, 3), Some((128, 128)));
    }

    #[test]
    fn odd_size_is_cropped_to_even() {
        // 3x3 luma, 1 row of padding handled by the crop.
        let src: Vec<u8> = (0..27).collect();
        let p = ycbcr_to_i420(&src, 3, 3).unwrap();
        assert_eq!((p.width(), p.height()), (2, 2));
        assert_eq!(p.luma(1, 1), Some(12));
        // Cb of pixels (0,0),(1,0),(0,1),(1,1) = 1, 4, 10, 13.
        assert_eq!(p.chroma(0, 0), Some((7, 8)));
    }

    #[test]
    fn garbage_and_oversized_jpegs_are_typed_errors() {
        let mut d = decoder();
        assert_eq!(d.decode(b"not a jpeg").unwrap_err().kind(), "jpeg_decode");
        assert_eq!(d.decode(&[]).unwrap_err().kind(), "jpeg_decode");
        let jpegs = split_jpegs(DEMO_MJPEG);
        let truncated = &jpegs[0][..jpegs[0].len() / 3];
        // zune-jpeg may conceal a truncated scan; it must not panic, and a
        // picture it returns has the declared size.
        if let Ok(p) = d.decode(truncated) {
            assert_eq!(p.width(), 640);
        }
        let mut small = MjpegDecoder::new(PictureLimits {
            max_width: 320,
            max_height: 240,
        });
        assert_eq!(small.decode(&jpegs[0]).unwrap_err().kind(), "too_large");
    }
}
