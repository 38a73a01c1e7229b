//! MPEG-1/2 audio (MP2, MP3) over RTP, RFC 2250 §3.5.
//!
//! Every packet opens with the 4-byte MPEG audio-specific header: 16 bits
//! that must be zero, then the fragment's byte offset into the frame. A
//! frame larger than a packet is cut anywhere; whole frames start at
//! offset 0. The timestamp is the frame's, in the track clock the SDP
//! states (the sample rate), so fragments share it.

use bytes::Bytes;

use super::Fragment;
use crate::media::frame::{Chunks, Frame};

const HEADER_LEN: usize = 4;

fn header(offset: usize) -> Bytes {
    let o = (offset.min(usize::from(u16::MAX)) as u16).to_be_bytes();
    Bytes::copy_from_slice(&[0, 0, o[0], o[1]])
}

pub(super) fn packetize(frame: &Frame, mtu: usize, out: &mut Vec<Fragment>) {
    let room = mtu.saturating_sub(HEADER_LEN).max(1);
    for unit in frame.units.iter() {
        let mut offset = 0;
        while offset < unit.len() {
            let end = (offset + room).min(unit.len());
            let mut payload = Chunks::from(header(offset));
            for p in unit.slice(offset, end).parts() {
                payload.push(p.clone());
            }
            out.push(Fragment::new(&[], payload, end == unit.len()));
            offset = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Packetizer;
    use crate::media::frame::{Codec, Frame};
    use bytes::Bytes;

    #[test]
    fn frames_carry_the_rfc2250_header_with_fragment_offsets() {
        let f = Frame {
            codec: Codec::Mpa,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: [Bytes::from(vec![0x55; 1000]).into()].into_iter().collect(),
        };
        let mut out = Vec::new();
        Packetizer::for_codec(Codec::Mpa)
            .unwrap()
            .packetize(&f, 404, &mut out);
        let offsets: Vec<(Vec<u8>, usize)> = out
            .iter()
            .map(|fr| (fr.payload.to_vec()[..4].to_vec(), fr.payload.len()))
            .collect();
        assert_eq!(
            offsets,
            [
                (vec![0, 0, 0, 0], 404),
                (vec![0, 0, 1, 144], 404),
                (vec![0, 0, 3, 32], 204)
            ]
        );
        assert!(out[2].marker && !out[0].marker);
    }
}
