//! Frames in the form str0m's frame API takes: one contiguous buffer.
//!
//! str0m packetizes H.264 itself from Annex B (ITU-T H.264 Annex B.1: each
//! NAL unit behind a 00 00 00 01 start code), and takes the buffer as an
//! `Arc<[u8]>`. Gathering a frame's slices into that buffer is the one
//! payload copy on the WebRTC path, so it is done once per frame per
//! stream and shared by every peer of the stream through [`FrameCache`].

use std::sync::{Arc, Mutex};

use crate::media::frame::{Codec, Frame};
use crate::metrics;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The frame as one buffer: Annex B for H.264/H.265, the bare payload for
/// anything else (an audio frame).
pub fn gather(frame: &Frame) -> Arc<[u8]> {
    let start_codes = matches!(frame.codec, Codec::H264 | Codec::H265);
    let len = frame.len()
        + if start_codes {
            4 * frame.units.len()
        } else {
            0
        };
    let mut out = Vec::with_capacity(len);
    for unit in &frame.units {
        if start_codes {
            out.extend_from_slice(&START_CODE);
        }
        for part in unit.parts() {
            out.extend_from_slice(part);
        }
    }
    metrics::get()
        .payload_bytes_copied
        .inc_by(frame.len() as u64);
    out.into()
}

/// The last gathered frame of one stream, shared by its peers: peers read
/// the same `Arc<Frame>`s from the hub, so all but the first reuse it.
#[derive(Default)]
pub struct FrameCache {
    last: Mutex<Option<Gathered>>,
}

/// A frame and its gathered buffer.
type Gathered = (Arc<Frame>, Arc<[u8]>);

impl FrameCache {
    pub fn get(&self, frame: &Arc<Frame>) -> Arc<[u8]> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, data)) = last.as_ref()
            && Arc::ptr_eq(f, frame)
        {
            return data.clone();
        }
        let data = gather(frame);
        *last = Some((frame.clone(), data.clone()));
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::Chunks;
    use bytes::Bytes;

    fn frame(codec: Codec, units: &[&[&'static [u8]]]) -> Arc<Frame> {
        Arc::new(Frame {
            codec,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: units
                .iter()
                .map(|parts| {
                    let mut c = Chunks::new();
                    for p in *parts {
                        c.push(Bytes::from_static(p));
                    }
                    c
                })
                .collect(),
        })
    }

    #[test]
    fn units_get_start_codes_and_split_units_are_joined() {
        let f = frame(Codec::H264, &[&[b"\x67\x4d"], &[b"\x65\x88", b"\x84"]]);
        assert_eq!(
            &*gather(&f),
            b"\0\0\0\x01\x67\x4d\0\0\0\x01\x65\x88\x84".as_slice()
        );
        let audio = frame(Codec::Pcma, &[&[b"\xd5\xd5", b"\x55"]]);
        assert_eq!(&*gather(&audio), b"\xd5\xd5\x55".as_slice());
    }

    #[test]
    fn cache_shares_one_buffer_per_frame() {
        let cache = FrameCache::default();
        let a = frame(Codec::H264, &[&[b"\x65\x01"]]);
        let b = frame(Codec::H264, &[&[b"\x41\x02"]]);
        let first = cache.get(&a);
        assert!(Arc::ptr_eq(&first, &cache.get(&a)));
        let other = cache.get(&b);
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(&*other, b"\0\0\0\x01\x41\x02".as_slice());
    }
}
