#![no_main]
//! The streaming Annex B splitter against a whole-buffer reference: the
//! same NAL units whatever the cuts between pushes (the first byte picks
//! the piece size).
use bytes::Bytes;
use camgate::media::h264::AnnexBSplitter;
use libfuzzer_sys::fuzz_target;

fn reference(data: &[u8]) -> Vec<Vec<u8>> {
    let ones: Vec<usize> = (2..data.len())
        .filter(|&i| data[i] == 1 && data[i - 1] == 0 && data[i - 2] == 0)
        .collect();
    let mut out = Vec::new();
    for (k, &one) in ones.iter().enumerate() {
        let end = ones.get(k + 1).copied().unwrap_or(data.len());
        let mut unit = &data[one + 1..end];
        while let [rest @ .., 0] = unit {
            unit = rest;
        }
        if !unit.is_empty() {
            out.push(unit.to_vec());
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control) + 1;
    let whole = Bytes::copy_from_slice(body);
    let mut s = AnnexBSplitter::<()>::new();
    let mut got = Vec::new();
    let mut at = 0;
    while at < whole.len() {
        let end = (at + chunk).min(whole.len());
        s.push(&whole.slice(at..end), |n| got.push(n.data.to_vec()));
        at = end;
    }
    s.finish(|n| got.push(n.data.to_vec()));
    assert_eq!(got, reference(body));
});
