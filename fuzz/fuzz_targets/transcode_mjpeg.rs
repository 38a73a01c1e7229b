//! JPEG frames from a Foscam camera into the browser transcode's decoder
//! (zune-jpeg + the I420 conversion): arbitrary bytes give a picture or a
//! typed error, never a panic, and a picture is even-sized within limits.
#![no_main]

use camgate::transcode::PictureLimits;
use camgate::transcode::mjpeg::MjpegDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = MjpegDecoder::new(PictureLimits {
        max_width: 256,
        max_height: 256,
    });
    match decoder.decode(data) {
        Ok(p) => {
            assert!(p.width() <= 256 && p.height() <= 256);
            assert!(p.width() % 2 == 0 && p.height() % 2 == 0 && p.width() >= 2);
        }
        // A caught panic is still a bug in the decoder path.
        Err(e) => assert_ne!(e.kind(), "panic", "{e}"),
    }
});
