//! A camera's recorded RTP session replayed as the simulated camera's live
//! stream, for load tests with real encoder output (RFC 3550 §5.1 header).
//!
//! The capture is a dump of RTP packets stored back to back with no length
//! prefix (the Hikvision file of `../shared/testdata`). Packets are found by
//! their header (version 2, the first packet's payload type and SSRC), grouped
//! into frames by the marker bit, and sent one frame per 40 ms. On the way out
//! each packet gets the session's SSRC and a sequence number and timestamp
//! that continue across laps, so a receiver sees one endless stream.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::replay::ReplaySource;

const RTP_HEADER: usize = 12;
/// Frame interval of the capture (25 fps) in 90 kHz ticks.
const FRAME_TICKS: u64 = 3_600;

/// The frames of a capture, each a list of whole RTP packets.
#[derive(Debug)]
pub struct RtpCapture {
    frames: Vec<Vec<Bytes>>,
}

impl RtpCapture {
    /// Split a back-to-back dump into packets and frames.
    pub fn parse(data: Bytes) -> anyhow::Result<Self> {
        anyhow::ensure!(
            data.len() > RTP_HEADER && data[0] >> 6 == 2,
            "not an RTP dump"
        );
        let pt = data[1] & 0x7f;
        let ssrc = &data[8..12];
        let is_header = |at: usize| {
            data.len() >= at + RTP_HEADER
                && data[at] >> 6 == 2
                && data[at + 1] & 0x7f == pt
                && &data[at + 8..at + 12] == ssrc
        };
        let mut starts = vec![0];
        let mut at = RTP_HEADER;
        while at + RTP_HEADER <= data.len() {
            if is_header(at) {
                starts.push(at);
                at += RTP_HEADER;
            } else {
                at += 1;
            }
        }
        starts.push(data.len());
        let mut frames = Vec::new();
        let mut frame = Vec::new();
        for w in starts.windows(2) {
            let pkt = data.slice(w[0]..w[1]);
            let marker = pkt[1] & 0x80 != 0;
            frame.push(pkt);
            if marker {
                frames.push(std::mem::take(&mut frame));
            }
        }
        if !frame.is_empty() {
            frames.push(frame);
        }
        Ok(Self { frames })
    }

    pub fn packets(&self) -> usize {
        self.frames.iter().map(Vec::len).sum()
    }
}

/// An [`RtpCapture`] as a call's stream: one frame per 40 ms, each packet
/// with the call's SSRC and a sequence number and timestamp that run on
/// across laps.
pub(crate) struct CaptureReplay {
    capture: Arc<RtpCapture>,
    ssrc: u32,
    seq: u16,
    /// RTP timestamp of media time 0.
    ts_base: u32,
}

impl CaptureReplay {
    pub(crate) fn new(capture: Arc<RtpCapture>, ssrc: u32) -> Self {
        Self {
            capture,
            ssrc,
            seq: rand::random(),
            ts_base: rand::random(),
        }
    }
}

impl ReplaySource for CaptureReplay {
    fn items(&self) -> usize {
        self.capture.frames.len()
    }

    fn advance(&mut self, i: usize) -> u64 {
        if i == 0 { 0 } else { FRAME_TICKS }
    }

    fn lap_gap(&self) -> u64 {
        FRAME_TICKS
    }

    fn packets(&mut self, i: usize, _lap: u64, ticks: u64, out: &mut Vec<Bytes>) {
        let ts = self.ts_base.wrapping_add(ticks as u32);
        for pkt in self.capture.frames.get(i).into_iter().flatten() {
            let mut p = BytesMut::from(&pkt[..]);
            p[2..4].copy_from_slice(&self.seq.to_be_bytes());
            p[4..8].copy_from_slice(&ts.to_be_bytes());
            p[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            self.seq = self.seq.wrapping_add(1);
            out.push(p.freeze());
        }
    }

    fn items_are_frames(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hikvision_dump_splits_into_its_packets_and_frames() {
        let Some(path) = crate::testdata::file("hik_h264_704x576.rtp") else {
            return;
        };
        let data = std::fs::read(path).unwrap();
        let capture = RtpCapture::parse(data.into()).unwrap();
        // MANIFEST.md: 3,096 packets, 1,400 with the marker bit.
        assert_eq!(capture.packets(), 3_096);
        assert_eq!(capture.frames.len(), 1_400);
    }
}
