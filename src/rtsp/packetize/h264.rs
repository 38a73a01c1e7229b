//! H.264 over RTP, RFC 6184 non-interleaved mode (packetization-mode=1).
//!
//! A NAL unit that fits the MTU goes as a single NAL unit packet (§5.6);
//! a larger one is cut into FU-A fragments (§5.8) whose payloads are slices
//! of the unit after its one-byte NAL header. STAP-A is not used: parameter
//! sets are small and sent once per GOP, so aggregation saves little.

use super::{Fragment, packetize_units};
use crate::media::frame::{Chunks, Frame};

/// NAL unit type of an FU-A packet (RFC 6184 §5.8).
pub const FU_A: u8 = 28;

pub(super) fn packetize(frame: &Frame, mtu: usize, out: &mut Vec<Fragment>) {
    packetize_units(frame, mtu, out, fragment);
}

/// FU-A: indicator keeps F and NRI of the original header with type 28;
/// the FU header carries S/E flags and the original type.
fn fragment(unit: &Chunks, mtu: usize, out: &mut Vec<Fragment>) {
    let Some(nal_header) = unit.get(0) else {
        return;
    };
    let indicator = (nal_header & 0xe0) | FU_A;
    let nal_type = nal_header & 0x1f;
    let room = mtu - 2;
    let mut offset = 1;
    while offset < unit.len() {
        let end = (offset + room).min(unit.len());
        let mut fu_header = nal_type;
        if offset == 1 {
            fu_header |= 0x80;
        }
        if end == unit.len() {
            fu_header |= 0x40;
        }
        out.push(Fragment::new(
            &[indicator, fu_header],
            unit.slice(offset, end),
            false,
        ));
        offset = end;
    }
}

#[cfg(test)]
mod tests {
    use super::super::Packetizer;
    use super::*;
    use crate::media::frame::Codec;
    use bytes::Bytes;

    fn frame(units: Vec<Chunks>) -> Frame {
        Frame {
            codec: Codec::H264,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: units.into_iter().collect(),
        }
    }

    /// Receiver side of RFC 6184 written independently of the sender, to
    /// check that what goes out reassembles to what came in.
    fn depacketize(frags: &[Fragment]) -> Vec<Vec<u8>> {
        let mut units = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        for f in frags {
            let mut payload = f.prefix().to_vec();
            payload.extend(f.payload.to_vec());
            let t = payload[0] & 0x1f;
            if t == FU_A {
                let (ind, fu) = (payload[0], payload[1]);
                if fu & 0x80 != 0 {
                    assert!(current.is_none(), "start inside a fragmented unit");
                    current = Some(vec![(ind & 0xe0) | (fu & 0x1f)]);
                }
                let cur = current.as_mut().expect("FU-A without start");
                cur.extend_from_slice(&payload[2..]);
                if fu & 0x40 != 0 {
                    units.push(current.take().unwrap());
                }
            } else {
                assert!(current.is_none(), "single NAL inside a fragmented unit");
                units.push(payload);
            }
        }
        assert!(current.is_none(), "unterminated FU-A");
        units
    }

    #[test]
    fn fu_a_reassembles_and_marks_last() {
        let sps = Bytes::from_static(&[0x67, 0x4d, 0x40, 0x1e, 0x9a]);
        let pps = Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]);
        let idr: Vec<u8> = std::iter::once(0x65)
            .chain((0..5000u32).map(|i| (i * 7) as u8))
            .collect();
        // The IDR spans two buffers, as it would straight off the ingest path.
        let mut idr_chunks = Chunks::new();
        idr_chunks.push(Bytes::copy_from_slice(&idr[..2100]));
        idr_chunks.push(Bytes::copy_from_slice(&idr[2100..]));
        let f = frame(vec![sps.clone().into(), pps.clone().into(), idr_chunks]);

        for mtu in [100, 1400, 4999, 5001] {
            let mut out = Vec::new();
            Packetizer::H264.packetize(&f, mtu, &mut out);
            assert!(out.iter().all(|p| p.len() <= mtu), "mtu {mtu}");
            assert_eq!(
                out.iter().filter(|p| p.marker).count(),
                1,
                "one marker per access unit"
            );
            assert!(out.last().unwrap().marker);
            let units = depacketize(&out);
            assert_eq!(
                units,
                vec![sps.to_vec(), pps.to_vec(), idr.clone()],
                "mtu {mtu}"
            );
        }

        let mut out = Vec::new();
        Packetizer::H264.packetize(&f, 1400, &mut out);
        // 5000 payload bytes after the header in 1398-byte pieces.
        assert_eq!(out.len(), 2 + 4);
        assert_eq!(
            out[2].prefix(),
            [0x7c, 0x85],
            "FU indicator NRI=3, start bit"
        );
        assert_eq!(out[5].prefix(), [0x7c, 0x45], "end bit");
    }

    #[test]
    fn payload_slices_share_the_frame_buffers() {
        let big = Bytes::from(vec![0x41u8; 3000]);
        let f = frame(vec![big.clone().into()]);
        let mut out = Vec::new();
        Packetizer::H264.packetize(&f, 1400, &mut out);
        let base = big.as_ptr() as usize;
        for p in &out {
            for part in p.payload.parts() {
                let at = part.as_ptr() as usize;
                assert!(at >= base && at < base + big.len(), "payload was copied");
            }
        }
    }

    #[test]
    fn empty_units_are_skipped() {
        let f = frame(vec![Chunks::new(), Bytes::from_static(&[0x41, 1]).into()]);
        let mut out = Vec::new();
        Packetizer::H264.packetize(&f, 1400, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].marker);
        let mut none = Vec::new();
        Packetizer::H264.packetize(&frame(vec![]), 1400, &mut none);
        assert!(none.is_empty());
    }
}
