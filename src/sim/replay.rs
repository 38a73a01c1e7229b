//! The one send loop behind every recorded-media replay of the simulated
//! GB28181 camera (`--ps-file`, `--rtp-file`, `--rtp-dump`): items of a lap
//! go out at the pace of their media time (90 kHz, RFC 3550 §5.1), laps
//! repeat until the call is stopped. Sources differ only in how they cut
//! their recording into items, how far apart those are, and how each
//! item's packets are rewritten for the call; they stay sans-IO here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gb_camera::{MediaSink, SimStats};

/// A recording cut into items (pieces, packets or frames) sent in laps.
pub(crate) trait ReplaySource {
    /// Items per lap; a source with none sends nothing until stopped.
    fn items(&self) -> usize;
    /// 90 kHz ticks from the previous item to item `i` of the same lap
    /// (called in order, `i` from 0 on every lap).
    fn advance(&mut self, i: usize) -> u64;
    /// Ticks from the last item of a lap to the first of the next.
    fn lap_gap(&self) -> u64;
    /// Push the RTP packets of item `i`, as sent on lap `lap` at media
    /// time `ticks` (from the stream's start), to `out`.
    fn packets(&mut self, i: usize, lap: u64, ticks: u64, out: &mut Vec<Bytes>);
    /// Whether each item is a whole frame (counted in `frames_sent`).
    fn items_are_frames(&self) -> bool {
        false
    }
}

/// A media connection that counts what it sends.
pub(crate) struct MediaOut {
    sink: MediaSink,
    framed: Vec<u8>,
    stats: Arc<SimStats>,
    send_errors: u64,
}

impl MediaOut {
    pub(crate) fn new(sink: MediaSink, stats: Arc<SimStats>) -> Self {
        Self {
            sink,
            framed: Vec::with_capacity(2048),
            stats,
            send_errors: 0,
        }
    }

    /// Send one RTP packet. False once a TCP connection is lost; UDP send
    /// errors are the receiver's problem, so the stream keeps its pace.
    pub(crate) async fn send(&mut self, packet: &[u8]) -> bool {
        match self.sink.send(packet, &mut self.framed).await {
            Ok(n) => {
                self.stats.rtp_packets_sent.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .rtp_bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                true
            }
            Err(e) if matches!(self.sink, MediaSink::Tcp(_)) => {
                tracing::info!(error = %e, "TCP media connection lost");
                false
            }
            Err(e) => {
                self.send_errors += 1;
                // One line per burst of failures, not per packet.
                if self.send_errors.is_power_of_two() {
                    tracing::debug!(error = %e, send_errors = self.send_errors, "RTP send failed");
                }
                true
            }
        }
    }
}

/// 90 kHz media ticks as wall-clock time.
fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_micros(ticks * 100 / 9)
}

/// Send `source` to `sink` in laps, each item when its media time is due
/// (a deadline from the stream's start, so a slow send does not drift the
/// pace), until `stop` or a lost TCP connection.
pub(crate) async fn replay(
    mut source: impl ReplaySource,
    sink: MediaSink,
    stop: CancellationToken,
    stats: Arc<SimStats>,
) {
    stats.active_streams.fetch_add(1, Ordering::Relaxed);
    let mut out = MediaOut::new(sink, stats.clone());
    let start = Instant::now();
    // Media time sent so far over all laps, 90 kHz.
    let mut ticks: u64 = 0;
    let mut packets = Vec::new();
    let mut lap = 0u64;
    'outer: loop {
        if source.items() == 0 {
            stop.cancelled().await;
            break;
        }
        for i in 0..source.items() {
            ticks += source.advance(i);
            tokio::select! {
                _ = stop.cancelled() => break 'outer,
                _ = tokio::time::sleep_until(start + ticks_to_duration(ticks)) => {}
            }
            packets.clear();
            source.packets(i, lap, ticks, &mut packets);
            for pkt in &packets {
                if !out.send(pkt).await {
                    break 'outer;
                }
            }
            if source.items_are_frames() {
                stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        lap += 1;
        ticks += source.lap_gap();
    }
    stats.active_streams.fetch_sub(1, Ordering::Relaxed);
    tracing::info!("stream stopped");
}
