//! An RTP capture (RFC 4571 length-prefixed, as a TCP capture holds it)
//! replayed by the simulated camera (`sim-camera --rtp-file`), for the
//! RTP cases of the quirk corpus: padding, header extensions, missing
//! markers, sequence wraps and timestamp jumps go out exactly as captured.
//! Sans-IO: the file is cut here and each packet rewritten for the call
//! (SSRC) and the lap (sequence numbers run on); the driver sleeps and
//! sends.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::replay::ReplaySource;

/// One JUMP_TICKS-long pause stands for any timestamp jump.
use super::ps_file::JUMP_TICKS;

/// The packets of the capture, in order.
#[derive(Debug, Clone, Default)]
pub struct RtpFile {
    pub packets: Vec<Bytes>,
}

impl RtpFile {
    /// Cut RFC 4571 framing; stops at the first length that runs past the
    /// end or frames something shorter than an RTP header.
    pub fn new(data: &[u8]) -> Self {
        let mut packets = Vec::new();
        let mut at = 0;
        while let (Some(&hi), Some(&lo)) = (data.get(at), data.get(at + 1)) {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            let Some(pkt) = data.get(at + 2..at + 2 + len).filter(|p| p.len() >= 12) else {
                break;
            };
            packets.push(Bytes::copy_from_slice(pkt));
            at += 2 + len;
        }
        Self { packets }
    }

    /// RTP timestamp of packet `i`.
    pub fn timestamp(&self, i: usize) -> u32 {
        self.packets
            .get(i)
            .map_or(0, |p| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
    }

    /// 90 kHz ticks to wait between two packets' timestamps: the forward
    /// step, nothing for a step back, one frame for a jump.
    pub fn step(prev: u32, next: u32) -> u64 {
        let delta = next.wrapping_sub(prev);
        if delta <= 90_000 {
            u64::from(delta)
        } else if delta >= u32::MAX - 90_000 {
            0
        } else {
            JUMP_TICKS
        }
    }

    /// Packet `i` as sent on lap `lap`: our SSRC, and sequence numbers
    /// moved on by a whole capture per lap so they keep increasing.
    pub fn packet(&self, i: usize, lap: u64, ssrc: u32) -> Option<Bytes> {
        let p = self.packets.get(i)?;
        let mut out = BytesMut::from(&p[..]);
        let seq = u16::from_be_bytes([p[2], p[3]])
            .wrapping_add((lap.wrapping_mul(self.packets.len() as u64)) as u16);
        out[2..4].copy_from_slice(&seq.to_be_bytes());
        out[8..12].copy_from_slice(&ssrc.to_be_bytes());
        Some(out.freeze())
    }
}

/// An [`RtpFile`] as a call's stream: packets paced by their timestamps,
/// with a one-frame pause between laps.
pub(crate) struct RtpFileReplay {
    file: Arc<RtpFile>,
    ssrc: u32,
}

impl RtpFileReplay {
    pub(crate) fn new(file: Arc<RtpFile>, ssrc: u32) -> Self {
        Self { file, ssrc }
    }
}

impl ReplaySource for RtpFileReplay {
    fn items(&self) -> usize {
        self.file.packets.len()
    }

    fn advance(&mut self, i: usize) -> u64 {
        match i.checked_sub(1) {
            Some(prev) => RtpFile::step(self.file.timestamp(prev), self.file.timestamp(i)),
            None => 0,
        }
    }

    fn lap_gap(&self) -> u64 {
        JUMP_TICKS
    }

    fn packets(&mut self, i: usize, lap: u64, _ticks: u64, out: &mut Vec<Bytes>) {
        out.extend(self.file.packet(i, lap, self.ssrc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_framing_and_rewrites_for_the_call() {
        let mut data = Vec::new();
        for (seq, ts) in [(65535u16, 1000u32), (0, 4600)] {
            let mut p = vec![0xa0, 96];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&[1, 2, 3, 4, 9, 9, 0, 3]);
            data.extend_from_slice(&(p.len() as u16).to_be_bytes());
            data.extend_from_slice(&p);
        }
        data.extend_from_slice(&[0, 200, 1]);
        let f = RtpFile::new(&data);
        assert_eq!(f.packets.len(), 2);
        assert_eq!(RtpFile::step(f.timestamp(0), f.timestamp(1)), 3600);
        assert_eq!(RtpFile::step(4600, 1000), 0);
        assert_eq!(RtpFile::step(0, 900_000), JUMP_TICKS);
        let p = f.packet(1, 1, 0xAABB_CCDD).unwrap();
        assert_eq!(&p[2..4], &2u16.to_be_bytes(), "seq moved on by one lap");
        assert_eq!(&p[8..12], &[0xAA, 0xBB, 0xCC, 0xDD]);
        assert_eq!(p[0], 0xa0, "padding bit kept");
        assert_eq!(&p[12..], &[9, 9, 0, 3]);
    }
}
