//! RTP packetization for the RTSP egress (RFC 3550 §5.1 fixed header).
//!
//! A packetizer turns one [`Frame`] into [`Fragment`]s: a small payload
//! prefix (the FU indicator and header of RFC 6184 §5.8 / RFC 7798 §4.4.3)
//! plus payload slices that still point into the ingest buffers. The RTP
//! header and, for TCP, the RFC 2326 §10.12 interleaved framing are written
//! by [`RtpHeader::write`] into a few bytes of [`Head`], so the only bytes
//! created per packet are headers; payload bytes go to the socket by
//! vectored I/O straight from the frame.

pub mod aac;
pub mod g711;
pub mod h264;
pub mod h265;
pub mod jpeg;
pub mod mpa;

use std::sync::Arc;

use bytes::Bytes;

use crate::media::frame::{Chunks, Codec, Frame};

/// Default RTP payload budget per packet: fits a 1500-byte Ethernet MTU
/// with IP, UDP/TCP, RTP and interleaved headers to spare.
pub const DEFAULT_MTU: usize = 1400;

/// One RTP payload before the RTP header is put in front of it.
#[derive(Clone, Debug, Default)]
pub struct Fragment {
    prefix: [u8; 3],
    prefix_len: u8,
    /// Slices of the frame's units; never copied.
    pub payload: Chunks,
    /// RTP marker bit (RFC 6184 §5.1: last packet of an access unit).
    pub marker: bool,
    /// Added to the frame's RTP timestamp (audio frames split over packets).
    pub ts_delta: u32,
}

impl Fragment {
    pub fn new(prefix: &[u8], payload: Chunks, marker: bool) -> Self {
        let mut p = [0u8; 3];
        let n = prefix.len().min(3);
        p[..n].copy_from_slice(&prefix[..n]);
        Self {
            prefix: p,
            prefix_len: n as u8,
            payload,
            marker,
            ts_delta: 0,
        }
    }

    /// Payload-format header bytes that precede the payload slices.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix[..self.prefix_len as usize]
    }

    /// RTP payload length: prefix plus slices.
    pub fn len(&self) -> usize {
        self.prefix_len as usize + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The payload slices of one packet to send: owned, or fragment `index`
/// of a frame's fragments that every viewer of the frame shares (see
/// [`crate::rtsp::fragment_cache`]), so a viewer's packet costs a
/// reference count, not a copy of the slice list.
#[derive(Clone, Debug)]
pub enum Payload {
    Chunks(Chunks),
    Shared(Arc<[Fragment]>, usize),
}

impl Payload {
    pub fn parts(&self) -> &[Bytes] {
        match self {
            Self::Chunks(c) => c.parts(),
            Self::Shared(f, i) => f.get(*i).map_or(&[], |f| f.payload.parts()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Chunks(c) => c.len(),
            Self::Shared(f, i) => f.get(*i).map_or(0, |f| f.payload.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes gathered (tests and diagnostics only).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts()
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect()
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self::Chunks(b.into())
    }
}

impl From<Chunks> for Payload {
    fn from(c: Chunks) -> Self {
        Self::Chunks(c)
    }
}

/// Codec-specific payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Packetizer {
    H264,
    H265,
    /// G.711 A-law or µ-law: one byte per sample (RFC 3551 §4.5.14).
    G711,
    /// AAC, RFC 3640 AAC-hbr.
    Aac,
    /// JPEG (RFC 2435), one image per frame.
    Jpeg,
    /// MPEG-1/2 audio, RFC 2250 §3.5.
    Mpa,
}

impl Packetizer {
    /// The payload format for a codec, if the RTSP egress supports it.
    pub fn for_codec(codec: Codec) -> Option<Self> {
        match codec {
            Codec::H264 => Some(Self::H264),
            Codec::H265 => Some(Self::H265),
            Codec::Pcma | Codec::Pcmu => Some(Self::G711),
            Codec::Aac => Some(Self::Aac),
            Codec::Mjpeg => Some(Self::Jpeg),
            Codec::Mpa => Some(Self::Mpa),
            _ => None,
        }
    }

    /// Append the fragments of `frame` to `out`; `mtu` bounds each RTP
    /// payload (prefix included).
    pub fn packetize(self, frame: &Frame, mtu: usize, out: &mut Vec<Fragment>) {
        // Below this no FU could carry a payload byte; refuse silly values
        // rather than loop forever.
        let mtu = mtu.max(16);
        match self {
            Self::H264 => h264::packetize(frame, mtu, out),
            Self::H265 => h265::packetize(frame, mtu, out),
            Self::G711 => g711::packetize(frame, mtu, out),
            Self::Aac => aac::packetize(frame, mtu, out),
            Self::Jpeg => jpeg::packetize(frame, mtu, out),
            Self::Mpa => mpa::packetize(frame, mtu, out),
        }
    }
}

/// Split the NAL units of a video frame: units that fit go whole, larger
/// ones are fragmented by `fragment`. Sets the marker on the very last
/// fragment of the access unit.
pub(crate) fn packetize_units(
    frame: &Frame,
    mtu: usize,
    out: &mut Vec<Fragment>,
    fragment: impl Fn(&Chunks, usize, &mut Vec<Fragment>),
) {
    let start = out.len();
    for unit in frame.units.iter().filter(|u| !u.is_empty()) {
        if unit.len() <= mtu {
            out.push(Fragment::new(&[], unit.clone(), false));
        } else {
            fragment(unit, mtu, out);
        }
    }
    if out.len() > start
        && let Some(last) = out.last_mut()
    {
        last.marker = true;
    }
}

/// Per-track RTP sender state: SSRC, sequence number, payload type.
#[derive(Clone, Debug)]
pub struct RtpHeader {
    pub payload_type: u8,
    pub ssrc: u32,
    /// Sequence number of the next packet.
    pub seq: u16,
}

/// Header bytes of one packet: optional interleaved framing, the 12-byte
/// RTP header, and the payload-format prefix. At most 4 + 12 + 3 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Head {
    buf: [u8; 20],
    len: u8,
}

impl Head {
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = self.len as usize;
        // Callers never exceed 20 bytes (4 + 12 + 3); clamp anyway so a
        // logic slip truncates a header instead of panicking.
        let n = bytes.len().min(self.buf.len() - at);
        self.buf[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n as u8;
    }

    /// The interleaved framing of RFC 2326 §10.12: `$`, channel, length.
    pub fn interleaved(channel: u8, len: u16) -> Self {
        let mut h = Self::default();
        let l = len.to_be_bytes();
        h.push(&[b'$', channel, l[0], l[1]]);
        h
    }
}

impl RtpHeader {
    /// Write the fixed header (RFC 3550 §5.1) for the next packet and its
    /// payload-format prefix into `head`; advances the sequence number.
    pub fn write(&mut self, head: &mut Head, marker: bool, timestamp: u32, prefix: &[u8]) {
        let seq = self.seq.to_be_bytes();
        let ts = timestamp.to_be_bytes();
        let ssrc = self.ssrc.to_be_bytes();
        head.push(&[
            0x80, // V=2, no padding, no extension, no CSRC
            (u8::from(marker) << 7) | (self.payload_type & 0x7f),
            seq[0],
            seq[1],
            ts[0],
            ts[1],
            ts[2],
            ts[3],
            ssrc[0],
            ssrc[1],
            ssrc[2],
            ssrc[3],
        ]);
        head.push(prefix);
        self.seq = self.seq.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_header_layout() {
        let mut h = RtpHeader {
            payload_type: 96,
            ssrc: 0x0102_0304,
            seq: 0xffff,
        };
        let mut head = Head::interleaved(2, 300);
        h.write(&mut head, true, 0xa0b0_c0d0, &[0x7c, 0x85]);
        assert_eq!(
            head.as_slice(),
            [
                b'$', 2, 0x01, 0x2c, 0x80, 0xe0, 0xff, 0xff, 0xa0, 0xb0, 0xc0, 0xd0, 1, 2, 3, 4,
                0x7c, 0x85
            ]
        );
        assert_eq!(h.seq, 0, "sequence wraps");
    }
}
