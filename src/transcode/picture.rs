//! A decoded picture in I420 (planar Y, then U and V at half width and
//! half height; ITU-T H.264 §6.2 4:2:0 sampling), the one format both
//! decoders hand to the H.264 encoder.
//!
//! The three planes live in one buffer. Strides may exceed the width, which
//! is how a source with odd dimensions is cropped to the even size an
//! encoder needs without copying: the last column and row are just not
//! read.

use openh264::formats::YUVSource;

/// An I420 picture with even width and height.
#[derive(Clone, PartialEq, Eq)]
pub struct Picture {
    width: usize,
    height: usize,
    y_stride: usize,
    c_stride: usize,
    data: Vec<u8>,
    u_offset: usize,
    v_offset: usize,
    /// Sample values span 0–255 (JPEG/JFIF) rather than 16–235 (video).
    pub full_range: bool,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picture")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("full_range", &self.full_range)
            .finish()
    }
}

/// Why a buffer cannot be read as a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PictureError {
    #[error("picture {0}x{1} is smaller than 2x2")]
    TooSmall(usize, usize),
    #[error("buffer of {have} bytes is too short for the planes ({need} needed)")]
    ShortBuffer { have: usize, need: usize },
}

impl Picture {
    /// Bytes of an I420 buffer for a `width` x `height` source (chroma
    /// rounded up, as YUV4MPEG2 and libavcodec lay out odd sizes).
    pub fn buffer_len(width: usize, height: usize) -> Option<usize> {
        let chroma = width.div_ceil(2).checked_mul(height.div_ceil(2))?;
        width
            .checked_mul(height)?
            .checked_add(chroma.checked_mul(2)?)
    }

    /// Wrap a contiguous I420 buffer of a `source_width` x `source_height`
    /// image (Y rows of `source_width`, chroma rows of half that rounded
    /// up). Odd dimensions are cropped to even.
    pub fn from_i420(
        source_width: usize,
        source_height: usize,
        data: Vec<u8>,
    ) -> Result<Self, PictureError> {
        let (width, height) = (source_width & !1, source_height & !1);
        if width < 2 || height < 2 {
            return Err(PictureError::TooSmall(source_width, source_height));
        }
        let need = Self::buffer_len(source_width, source_height).unwrap_or(usize::MAX);
        if data.len() < need {
            return Err(PictureError::ShortBuffer {
                have: data.len(),
                need,
            });
        }
        let c_stride = source_width.div_ceil(2);
        let u_offset = source_width * source_height;
        let v_offset = u_offset + c_stride * source_height.div_ceil(2);
        Ok(Self {
            width,
            height,
            y_stride: source_width,
            c_stride,
            data,
            u_offset,
            v_offset,
            full_range: false,
        })
    }

    /// A mid-grey picture, for tests and benchmarks.
    pub fn grey(width: usize, height: usize) -> Result<Self, PictureError> {
        let len = Self::buffer_len(width, height).unwrap_or(0);
        Self::from_i420(width, height, vec![128; len])
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The luma sample at (`x`, `y`), if inside the picture.
    pub fn luma(&self, x: usize, y: usize) -> Option<u8> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.data.get(y * self.y_stride + x).copied()
    }

    /// The (U, V) samples covering pixel (`x`, `y`).
    pub fn chroma(&self, x: usize, y: usize) -> Option<(u8, u8)> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y / 2) * self.c_stride + x / 2;
        Some((
            *self.data.get(self.u_offset + i)?,
            *self.data.get(self.v_offset + i)?,
        ))
    }

    /// Give the buffer back for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.data
    }
}

impl YUVSource for Picture {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.y_stride, self.c_stride, self.c_stride)
    }

    // The constructor checked the buffer holds every plane in full, so
    // these ranges are in bounds; `get` keeps that a non-panicking fact.
    fn y(&self) -> &[u8] {
        self.data.get(..self.u_offset).unwrap_or_default()
    }

    fn u(&self) -> &[u8] {
        self.data
            .get(self.u_offset..self.v_offset)
            .unwrap_or_default()
    }

    fn v(&self) -> &[u8] {
        let len = self.v_offset - self.u_offset;
        self.data
            .get(self.v_offset..self.v_offset + len)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_sizes_are_cropped_through_the_stride() {
        // 5x3: Y 15 bytes, chroma 3x2 = 6 bytes each.
        let mut data: Vec<u8> = (0..15).collect();
        data.extend([100; 6]);
        data.extend([200; 6]);
        let p = Picture::from_i420(5, 3, data).unwrap();
        assert_eq!(p.dimensions(), (4, 2));
        assert_eq!(p.strides(), (5, 3, 3));
        assert_eq!(p.luma(0, 1), Some(5), "second row starts at the stride");
        assert_eq!(p.luma(4, 0), None, "cropped column");
        assert_eq!(p.chroma(3, 1), Some((100, 200)));
        assert_eq!((p.y().len(), p.u().len(), p.v().len()), (15, 6, 6));
    }

    #[test]
    fn short_or_tiny_buffers_are_refused() {
        assert_eq!(
            Picture::from_i420(4, 4, vec![0; 23]),
            Err(PictureError::ShortBuffer { have: 23, need: 24 })
        );
        assert_eq!(
            Picture::from_i420(1, 8, vec![0; 100]),
            Err(PictureError::TooSmall(1, 8))
        );
        assert_eq!(Picture::buffer_len(usize::MAX, 2), None);
    }
}
