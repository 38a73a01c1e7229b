//! The YUV4MPEG2 stream the H.265 decoder process writes (untrusted: it is
//! derived from camera bytes): arbitrary bytes, split at an arbitrary
//! point, give pictures or a typed error without panics, never a picture
//! over the limits, and every picture has the header's size cropped to
//! even.
#![no_main]

use camgate::transcode::PictureLimits;
use camgate::transcode::y4m::Y4mParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize * rest.len()) / 255;
    let limits = PictureLimits {
        max_width: 64,
        max_height: 64,
    };
    let mut parser = Y4mParser::new(limits);
    let mut pictures = Vec::new();
    let _ = parser
        .push(&rest[..cut], &mut pictures)
        .and_then(|()| parser.push(&rest[cut..], &mut pictures));
    if let Some((w, h)) = parser.size() {
        assert!(w <= 64 && h <= 64);
        for p in &pictures {
            assert_eq!((p.width(), p.height()), (w & !1, h & !1));
        }
    } else {
        assert!(pictures.is_empty());
    }
});
