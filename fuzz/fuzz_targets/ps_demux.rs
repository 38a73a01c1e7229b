#![no_main]
//! The PS demuxer on arbitrary bytes, cut into pushes of varying sizes, with
//! frame hints and discontinuities driven by the input.
use bytes::Bytes;
use camgate::media::ps::PsDemuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let mut d = PsDemuxer::new();
    let mut out = Vec::new();
    let whole = Bytes::copy_from_slice(body);
    let mut at = 0;
    let mut n = 0u32;
    while at < whole.len() {
        let end = (at + chunk).min(whole.len());
        d.push(whole.slice(at..end), &mut out);
        n += 1;
        if control & 0x40 != 0 && n % 3 == 0 {
            d.end_of_frame(&mut out);
        }
        if control & 0x80 != 0 && n % 17 == 0 {
            d.discontinuity();
        }
        out.clear();
        at = end;
    }
    d.flush(&mut out);
});
