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
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::gb_camera::{MediaSink, SimStats};

const RTP_HEADER: usize = 12;
/// Frame interval of the capture (25 fps) in 90 kHz ticks.
const FRAME_TICKS: u32 = 3_600;

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

/// Send the capture to `sink` with `ssrc`, looping until `stop`.
pub(crate) async fn stream(
    mut sink: MediaSink,
    ssrc: u32,
    capture: Arc<RtpCapture>,
    stop: CancellationToken,
    stats: Arc<SimStats>,
) {
    stats.active_streams.fetch_add(1, Ordering::Relaxed);
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut out = Vec::with_capacity(2048);
    let mut framed = Vec::with_capacity(2048);
    'outer: loop {
        for frame in &capture.frames {
            tokio::select! {
                _ = stop.cancelled() => break 'outer,
                _ = tick.tick() => {}
            }
            for pkt in frame {
                out.clear();
                out.extend_from_slice(pkt);
                out[2..4].copy_from_slice(&seq.to_be_bytes());
                out[4..8].copy_from_slice(&ts.to_be_bytes());
                out[8..12].copy_from_slice(&ssrc.to_be_bytes());
                seq = seq.wrapping_add(1);
                match sink.send(&out, &mut framed).await {
                    Ok(n) => {
                        stats.rtp_packets_sent.fetch_add(1, Ordering::Relaxed);
                        stats.rtp_bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if matches!(sink, MediaSink::Tcp(_)) => {
                        tracing::info!(error = %e, "TCP media connection lost");
                        break 'outer;
                    }
                    // UDP send errors are the receiver's problem; keep pace.
                    Err(_) => {}
                }
            }
            stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            ts = ts.wrapping_add(FRAME_TICKS);
        }
    }
    stats.active_streams.fetch_sub(1, Ordering::Relaxed);
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
