//! RTP packetization of a program stream (RFC 3550 §5.1; PS over RTP as in
//! GB/T 28181-2016 Annex C / RFC 2250-style byte-stream splitting).
//!
//! The PS bytes of one frame are cut into payloads of at most
//! [`MAX_RTP_PAYLOAD`] bytes; every packet of the frame carries the frame's
//! 90 kHz timestamp and the last one has the marker bit, which is how
//! receivers find frame ends without parsing the PS.

use bytes::{BufMut, Bytes, BytesMut};

/// Payload limit that keeps packets under a 1500-byte Ethernet MTU with IP,
/// UDP and RTP headers.
pub const MAX_RTP_PAYLOAD: usize = 1400;
/// Dynamic payload type GB28181 SDP maps to `PS/90000`.
pub const PAYLOAD_TYPE_PS: u8 = 96;
const RTP_HEADER_LEN: usize = 12;

/// Per-stream RTP sender state: SSRC and the running sequence number.
#[derive(Clone, Debug)]
pub struct RtpPacketizer {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
}

impl RtpPacketizer {
    /// `first_seq` should be random (RFC 3550 §5.1) so that restarts are
    /// not mistaken for old packets.
    pub fn new(ssrc: u32, payload_type: u8, first_seq: u16) -> Self {
        Self {
            ssrc,
            payload_type: payload_type & 0x7F,
            seq: first_seq,
        }
    }

    /// The sequence number the next packet will carry.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// Cut one frame's bytes into RTP packets. Each packet is a fresh
    /// `Bytes` (header + payload), ready for `send_to`. An empty frame gives
    /// no packets.
    pub fn packetize(&mut self, frame: &[u8], timestamp: u32) -> Vec<Bytes> {
        self.packetize_marked(frame, timestamp, true)
    }

    /// [`packetize`](Self::packetize), with the marker on the last packet
    /// only if `mark_last` (bytes that may end inside a frame must not
    /// claim to end one).
    pub fn packetize_marked(
        &mut self,
        frame: &[u8],
        timestamp: u32,
        mark_last: bool,
    ) -> Vec<Bytes> {
        let count = frame.len().div_ceil(MAX_RTP_PAYLOAD);
        let mut out = Vec::with_capacity(count);
        let mut buf = BytesMut::with_capacity(frame.len() + count * RTP_HEADER_LEN);
        for (i, chunk) in frame.chunks(MAX_RTP_PAYLOAD).enumerate() {
            let marker = mark_last && i + 1 == count;
            buf.put_u8(0x80); // V=2, no padding, no extension, CC=0
            buf.put_u8(if marker { 0x80 } else { 0 } | self.payload_type);
            buf.put_u16(self.seq);
            buf.put_u32(timestamp);
            buf.put_u32(self.ssrc);
            buf.put_slice(chunk);
            // split() hands out the filled part and keeps the rest of the
            // allocation for the next packet: one allocation per frame.
            out.push(buf.split().freeze());
            self.seq = self.seq.wrapping_add(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_marks_last_and_counts_seq() {
        let mut p = RtpPacketizer::new(0x0102_0304, PAYLOAD_TYPE_PS, 0xFFFF);
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let pkts = p.packetize(&frame, 7200);
        assert_eq!(pkts.len(), 3);
        let mut joined = Vec::new();
        for (i, pkt) in pkts.iter().enumerate() {
            assert_eq!(pkt[0], 0x80);
            assert_eq!(pkt[1] & 0x7F, 96);
            assert_eq!(pkt[1] & 0x80 != 0, i == 2);
            assert_eq!(
                u16::from_be_bytes([pkt[2], pkt[3]]),
                0xFFFFu16.wrapping_add(i as u16)
            );
            assert_eq!(u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]), 7200);
            assert_eq!(
                u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
                0x0102_0304
            );
            assert!(pkt.len() - 12 <= MAX_RTP_PAYLOAD);
            joined.extend_from_slice(&pkt[12..]);
        }
        assert_eq!(joined, frame);
        assert_eq!(p.next_seq(), 2);
        assert!(p.packetize(&[], 0).is_empty());
    }
}
