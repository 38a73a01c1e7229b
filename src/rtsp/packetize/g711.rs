//! G.711 (PCMA/PCMU) over RTP, RFC 3551 §4.5.14.
//!
//! One byte per sample at 8 kHz, so a frame too long for one packet is cut
//! anywhere and each piece's timestamp advances by its byte offset. The
//! marker bit stays clear: §4.1 reserves it for the first packet after
//! silence, and the source does not signal silence.

use super::Fragment;
use crate::media::frame::Frame;

pub(super) fn packetize(frame: &Frame, mtu: usize, out: &mut Vec<Fragment>) {
    let mut delta = 0usize;
    for unit in frame.units.iter() {
        let mut offset = 0;
        while offset < unit.len() {
            let end = (offset + mtu).min(unit.len());
            let mut f = Fragment::new(&[], unit.slice(offset, end), false);
            f.ts_delta = (delta + offset) as u32;
            out.push(f);
            offset = end;
        }
        delta += unit.len();
    }
}

#[cfg(test)]
mod tests {
    use super::super::Packetizer;
    use crate::media::frame::{Codec, Frame};
    use bytes::Bytes;

    #[test]
    fn long_frame_splits_with_timestamp_steps() {
        let f = Frame {
            codec: Codec::Pcma,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: [Bytes::from(vec![0xd5; 2500]).into()].into_iter().collect(),
        };
        let mut out = Vec::new();
        Packetizer::G711.packetize(&f, 1000, &mut out);
        let deltas: Vec<u32> = out.iter().map(|p| p.ts_delta).collect();
        assert_eq!(deltas, [0, 1000, 2000]);
        assert_eq!(out[2].payload.len(), 500);
        assert!(out.iter().all(|p| !p.marker));
    }
}
