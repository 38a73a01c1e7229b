#![no_main]
//! The PS muxer on frames built from arbitrary bytes (codecs, timestamps,
//! keyframes, NAL sizes and contents all input-driven). Whatever goes in,
//! what comes out must be well-formed program stream: packets that walk by
//! their own lengths to the exact end, and no structural error from our
//! demuxer (content errors such as an unparsable SPS the input put there
//! are allowed).
use bytes::{Bytes, BytesMut};
use camgate::media::frame::{AudioParams, Chunks, Codec, Frame};
use camgate::media::ps::{PsDemuxer, PsError};
use camgate::media::ps_mux::PsMuxer;
use libfuzzer_sys::fuzz_target;
use smallvec::SmallVec;

const VIDEO: [Option<Codec>; 3] = [Some(Codec::H264), Some(Codec::H265), None];
const AUDIO: [Option<Codec>; 4] = [None, Some(Codec::Pcma), Some(Codec::Pcmu), Some(Codec::Aac)];

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let video = VIDEO[usize::from(control & 0x03) % 3];
    let audio = AUDIO[usize::from(control >> 2) & 0x03];
    let Ok(mut mux) = PsMuxer::for_codecs(video, audio) else {
        return;
    };
    let params = AudioParams {
        sample_rate: 8_000,
        channels: 1,
        config: Some(Bytes::from_static(&[0x15, 0x88])),
    };
    let whole = Bytes::copy_from_slice(body);
    let mut out = BytesMut::new();
    let mut at = 0;
    let mut pts: i64 = i64::from(control) << 26;
    // Each frame: [flags, len_hi, len_lo, bytes...]; flags pick kind,
    // keyframe, timestamp step and how the payload is sliced.
    while at + 3 <= whole.len() {
        let flags = whole[at];
        let len = usize::from(u16::from_be_bytes([whole[at + 1], whole[at + 2]])) * 4;
        at += 3;
        let end = (at + len).min(whole.len());
        let payload = whole.slice(at..end);
        at = end;
        pts += i64::from(flags >> 4) * 900;
        let codec = if flags & 0x01 == 0 { video } else { audio };
        let Some(codec) = codec else { continue };
        let mut units: SmallVec<[Chunks; 4]> = SmallVec::new();
        let step = usize::from(flags >> 5) * 97 + 1;
        let mut unit = Chunks::new();
        let mut i = 0;
        while i < payload.len() {
            let j = (i + step).min(payload.len());
            unit.push(payload.slice(i..j));
            if flags & 0x08 != 0 && j % 3 == 0 {
                units.push(std::mem::take(&mut unit));
            }
            i = j;
        }
        units.push(unit);
        let frame = Frame {
            codec,
            pts,
            dts: pts - i64::from(flags & 0x04) * 900,
            keyframe: flags & 0x02 != 0,
            units,
        };
        let _ = mux.write_frame(&frame, Some(&params), &mut out);
    }

    // Walk the packets by their lengths.
    let ps = out.freeze();
    let mut i = 0;
    while i < ps.len() {
        assert!(i + 6 <= ps.len(), "short packet at {i}");
        assert_eq!(&ps[i..i + 3], &[0, 0, 1], "no start code at {i}");
        let len = if ps[i + 3] == 0xBA {
            assert!(i + 14 <= ps.len());
            14 + usize::from(ps[i + 13] & 0x07)
        } else {
            6 + usize::from(u16::from_be_bytes([ps[i + 4], ps[i + 5]]))
        };
        i += len;
    }
    assert_eq!(i, ps.len(), "packets overrun the output");

    let mut demux = PsDemuxer::new();
    let mut events = Vec::new();
    demux.push(ps, &mut events);
    demux.flush(&mut events);
    for kind in [
        PsError::LostSync,
        PsError::BadPackHeader,
        PsError::BadSystemHeader,
        PsError::MalformedPsm,
        PsError::BadPesHeader,
        PsError::Truncated,
    ] {
        assert_eq!(demux.stats().error_count(kind), 0, "{kind:?}");
    }
});
