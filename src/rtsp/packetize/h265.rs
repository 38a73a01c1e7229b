//! H.265 over RTP, RFC 7798.
//!
//! Single NAL unit packets (§4.4.1) when a unit fits, otherwise
//! fragmentation units (§4.4.3): a two-byte payload header of type 49 that
//! keeps F, LayerId and TID of the original, then an FU header with S/E
//! flags and the original type, then slices of the unit after its two-byte
//! NAL header.

use super::{Fragment, packetize_units};
use crate::media::frame::{Chunks, Frame};

/// Payload header type of a fragmentation unit (RFC 7798 §4.4.3).
pub const FU: u8 = 49;

pub(super) fn packetize(frame: &Frame, mtu: usize, out: &mut Vec<Fragment>) {
    packetize_units(frame, mtu, out, fragment);
}

fn fragment(unit: &Chunks, mtu: usize, out: &mut Vec<Fragment>) {
    let (Some(h0), Some(h1)) = (unit.get(0), unit.get(1)) else {
        return;
    };
    let payload_header = [(h0 & 0x81) | (FU << 1), h1];
    let nal_type = (h0 >> 1) & 0x3f;
    let room = mtu - 3;
    let mut offset = 2;
    while offset < unit.len() {
        let end = (offset + room).min(unit.len());
        let mut fu_header = nal_type;
        if offset == 2 {
            fu_header |= 0x80;
        }
        if end == unit.len() {
            fu_header |= 0x40;
        }
        out.push(Fragment::new(
            &[payload_header[0], payload_header[1], fu_header],
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

    #[test]
    fn fu_reassembles() {
        // IDR_W_RADL (type 19), layer 0, TID 1.
        let idr: Vec<u8> = [0x26, 0x01]
            .into_iter()
            .chain((0..4000u32).map(|i| i as u8))
            .collect();
        let vps = vec![0x40, 0x01, 0x0c];
        let f = Frame {
            codec: Codec::H265,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: [
                Bytes::from(vps.clone()).into(),
                Bytes::from(idr.clone()).into(),
            ]
            .into_iter()
            .collect(),
        };
        let mut out = Vec::new();
        Packetizer::H265.packetize(&f, 1400, &mut out);
        assert_eq!(out[0].payload.to_vec(), vps);
        let mut rebuilt = Vec::new();
        for (i, p) in out[1..].iter().enumerate() {
            let pre = p.prefix();
            assert_eq!(pre[0] >> 1 & 0x3f, FU);
            assert_eq!(pre[2] & 0x3f, 19);
            assert_eq!(pre[2] & 0x80 != 0, i == 0);
            assert_eq!(pre[2] & 0x40 != 0, i == out.len() - 2);
            if i == 0 {
                rebuilt.push((pre[0] & 0x81) | (19 << 1));
                rebuilt.push(pre[1]);
            }
            rebuilt.extend(p.payload.to_vec());
            assert!(p.len() <= 1400);
        }
        assert_eq!(rebuilt, idr);
        assert!(out.last().unwrap().marker);
        assert_eq!(out.iter().filter(|p| p.marker).count(), 1);
    }
}
