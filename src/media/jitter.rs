//! Reorder (jitter) buffer for RTP over UDP, sans-IO: packets and `now`
//! in, packets in sequence-number order out (RFC 3550 §5.1 sequence
//! numbers, extended as in Appendix A.1).
//!
//! UDP may reorder, duplicate and drop datagrams. The buffer holds packets
//! that arrive ahead of a hole until either the hole fills, more than
//! `depth` packets wait behind it, or the hole is older than `max_delay`;
//! then it gives up on the missing packets and releases what it has, so the
//! receiver behind it sees a sequence gap (and resumes video at the next
//! keyframe) instead of a stall. Packets older than what was already
//! released are late and dropped: the frame they belonged to is gone.
//!
//! Storage is a ring indexed by sequence number. It starts small and
//! doubles (up to `depth` + 1 slots, rounded to a power of two) only when
//! more packets than it holds wait behind a hole, so a clean stream keeps
//! a few slots instead of `depth` (issue 17: a thousand streams each with
//! 128 idle slots cost 16 MB), and steady-state operation does not allocate.

use std::time::{Duration, Instant};

use super::rtp::RtpPacket;

/// Jumps larger than this (either way) are a source restart, not reordering
/// (RFC 3550 A.1's MAX_DROPOUT).
const MAX_DROPOUT: i64 = 3000;
/// Largest `depth` accepted; a deeper buffer only adds latency.
pub const MAX_DEPTH: usize = 4096;
/// Ring slots before any reordering was seen.
const FIRST_SLOTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Most packets held behind a hole before the hole is given up.
    pub depth: usize,
    /// Longest a hole is waited for.
    pub max_delay: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            depth: 64,
            max_delay: Duration::from_millis(50),
        }
    }
}

/// Counters; `lost` counts sequence numbers given up on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub released: u64,
    /// Arrived after a higher sequence number, still in time.
    pub reordered: u64,
    pub duplicates: u64,
    /// Arrived after its place was released or given up; dropped.
    pub late: u64,
    pub lost: u64,
    /// The source jumped (new sequence space); buffer flushed and restarted.
    pub restarts: u64,
    /// Times the ring doubled to hold packets behind a hole.
    pub ring_growths: u64,
}

struct Slot {
    seq: i64,
    packet: RtpPacket,
}

/// Sequence-ordering buffer for one SSRC.
pub struct JitterBuffer {
    config: JitterConfig,
    ring: Vec<Option<Slot>>,
    mask: usize,
    /// Slots the ring may grow to: `depth` + 1, rounded up to a power of 2.
    full: usize,
    /// Extended sequence number to release next.
    next: Option<i64>,
    /// Highest extended sequence number received.
    highest: i64,
    held: usize,
    /// When the packet at `next` was first found missing with others held.
    hole_since: Option<Instant>,
    /// Bit i set: `next - 1 - i` was released (not given up); tells a
    /// duplicate from a late packet.
    released_bits: u64,
    /// A packet far out of range; a second one right after it confirms a
    /// restart (RFC 3550 A.1 probation), a lone one is dropped as stray.
    probation: Option<u16>,
    /// Nothing released since the (re)start: the first packet to arrive
    /// need not be the lowest, so lower ones still move the start back.
    starting: bool,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("config", &self.config)
            .field("next", &self.next)
            .field("held", &self.held)
            .field("stats", &self.stats)
            .finish()
    }
}

impl JitterBuffer {
    pub fn new(config: JitterConfig) -> Self {
        let depth = config.depth.clamp(1, MAX_DEPTH);
        let full = (depth + 1).next_power_of_two();
        let size = FIRST_SLOTS.min(full);
        let mut ring = Vec::with_capacity(size);
        ring.resize_with(size, || None);
        Self {
            config: JitterConfig { depth, ..config },
            ring,
            mask: size - 1,
            full,
            next: None,
            highest: 0,
            held: 0,
            hole_since: None,
            released_bits: 0,
            probation: None,
            starting: false,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// Packets waiting behind a hole.
    pub fn held(&self) -> usize {
        self.held
    }

    /// When [`poll`](Self::poll) should next be called, if a hole is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.hole_since.map(|t| t + self.config.max_delay)
    }

    /// Take one packet; in-order packets come out at once into `out`.
    pub fn push(&mut self, packet: RtpPacket, now: Instant, out: &mut Vec<RtpPacket>) {
        self.stats.received += 1;
        let Some(mut next) = self.next else {
            self.restart_at(packet, now);
            return;
        };
        let delta = i64::from(packet.sequence.wrapping_sub(self.highest as u16) as i16);
        let seq = self.highest + delta;
        if seq - self.highest > MAX_DROPOUT || next - seq > MAX_DROPOUT {
            if self.probation == Some(packet.sequence) {
                self.flush(out);
                self.stats.restarts += 1;
                self.restart_at(packet, now);
            } else {
                self.probation = Some(packet.sequence.wrapping_add(1));
                self.stats.late += 1;
            }
            return;
        }
        self.probation = None;
        if self.starting && seq < next && self.highest - seq < self.config.depth as i64 {
            next = seq;
            self.next = Some(seq);
        }
        if seq < next {
            let behind = next - 1 - seq;
            if behind < 64 && self.released_bits & (1 << behind) != 0 {
                self.stats.duplicates += 1;
            } else {
                self.stats.late += 1;
            }
            return;
        }
        let idx = (seq as usize) & self.mask;
        if self.ring[idx].as_ref().is_some_and(|s| s.seq == seq) {
            self.stats.duplicates += 1;
            return;
        }
        if seq < self.highest {
            self.stats.reordered += 1;
        }
        // Make room: everything more than `depth` behind the newest packet
        // is released, holes given up.
        let depth = self.config.depth as i64;
        while seq - self.next_or(seq) > depth {
            self.advance(out);
        }
        self.make_room(seq);
        let idx = (seq as usize) & self.mask;
        self.ring[idx] = Some(Slot { seq, packet });
        self.held += 1;
        self.highest = self.highest.max(seq);
        if self.starting && self.highest - next < (self.config.depth as i64) / 2 {
            return;
        }
        self.starting = false;
        self.release_ready(out);
        if self.held > 0 && self.hole_since.is_none() {
            self.hole_since = Some(now);
        }
    }

    /// Give up on a hole older than `max_delay`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<RtpPacket>) {
        while let Some(since) = self.hole_since {
            if now.saturating_duration_since(since) < self.config.max_delay {
                return;
            }
            self.starting = false;
            // Skip to the next held packet, then release what follows it.
            while self.held > 0 && !self.slot_ready() {
                self.advance(out);
            }
            self.hole_since = None;
            self.release_ready(out);
            if self.held > 0 {
                // A further hole: its wait starts now.
                self.hole_since = Some(now);
            }
        }
    }

    /// Release everything held, giving up on the holes (end of stream).
    pub fn flush(&mut self, out: &mut Vec<RtpPacket>) {
        while self.held > 0 {
            self.advance(out);
        }
        self.hole_since = None;
        self.starting = false;
    }

    /// Grow the ring so every packet from `next` to the newest (`seq`
    /// included) has its own slot; held packets move to their new slots.
    fn make_room(&mut self, seq: i64) {
        let lowest = self.next_or(seq).min(seq);
        let span = usize::try_from(self.highest.max(seq) - lowest).unwrap_or(0) + 1;
        if span <= self.ring.len() || self.ring.len() >= self.full {
            return;
        }
        let size = span.next_power_of_two().min(self.full);
        let mut ring = Vec::with_capacity(size);
        ring.resize_with(size, || None);
        for slot in self.ring.drain(..).flatten() {
            let idx = (slot.seq as usize) & (size - 1);
            ring[idx] = Some(slot);
        }
        self.ring = ring;
        self.mask = size - 1;
        self.stats.ring_growths += 1;
    }

    fn next_or(&self, seq: i64) -> i64 {
        self.next.unwrap_or(seq)
    }

    /// Start a new sequence space at `packet`. It is held (as if behind a
    /// hole) for up to `max_delay` or `depth / 2` packets, since a packet
    /// reordered ahead of it may follow.
    fn restart_at(&mut self, packet: RtpPacket, now: Instant) {
        // Offset keeps extended numbers positive after a few wraps backwards.
        let seq = (1i64 << 32) + i64::from(packet.sequence);
        self.next = Some(seq);
        self.highest = seq;
        self.released_bits = 0;
        self.probation = None;
        self.starting = true;
        self.hole_since = Some(now);
        let idx = (seq as usize) & self.mask;
        self.ring[idx] = Some(Slot { seq, packet });
        self.held = 1;
    }

    fn slot_ready(&self) -> bool {
        let Some(next) = self.next else { return false };
        self.ring[(next as usize) & self.mask]
            .as_ref()
            .is_some_and(|s| s.seq == next)
    }

    /// Release or give up the packet at `next`, and move on.
    fn advance(&mut self, out: &mut Vec<RtpPacket>) {
        let Some(next) = self.next else { return };
        let idx = (next as usize) & self.mask;
        let released = match self.ring[idx].take() {
            Some(slot) if slot.seq == next => {
                self.held -= 1;
                self.stats.released += 1;
                out.push(slot.packet);
                true
            }
            other => {
                // A stale slot cannot exist (the ring is larger than
                // `depth`), but never lose track of one if it did.
                if other.is_some() {
                    self.held = self.held.saturating_sub(1);
                }
                self.stats.lost += 1;
                false
            }
        };
        self.released_bits = (self.released_bits << 1) | u64::from(released);
        self.next = Some(next + 1);
    }

    fn release_ready(&mut self, out: &mut Vec<RtpPacket>) {
        let mut moved = false;
        while self.slot_ready() {
            self.advance(out);
            moved = true;
        }
        if moved || self.held == 0 {
            self.hole_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pkt(seq: u16) -> RtpPacket {
        RtpPacket {
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: 0,
            ssrc: 1,
            csrc: Bytes::new(),
            extension: None,
            payload: Bytes::new(),
        }
    }

    fn seqs(out: &mut Vec<RtpPacket>) -> Vec<u16> {
        out.drain(..).map(|p| p.sequence).collect()
    }

    #[test]
    fn ring_stays_small_in_order_and_grows_behind_a_hole() {
        let t0 = Instant::now();
        let mut j = JitterBuffer::new(JitterConfig::default());
        let mut out = Vec::new();
        j.push(pkt(100), t0, &mut out);
        j.poll(t0 + Duration::from_millis(50), &mut out);
        for s in 101..1_000 {
            j.push(pkt(s), t0, &mut out);
        }
        assert_eq!(seqs(&mut out), (100..1_000).collect::<Vec<u16>>());
        assert_eq!(j.ring.len(), FIRST_SLOTS);
        // 1_000 is missing; 40 packets wait behind it in a grown ring, and
        // come out in order once it arrives.
        for s in 1_001..1_041 {
            j.push(pkt(s), t0, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(j.ring.len(), 64);
        assert_eq!(j.stats().ring_growths, 3);
        j.push(pkt(1_000), t0, &mut out);
        assert_eq!(seqs(&mut out), (1_000..1_041).collect::<Vec<u16>>());
        assert_eq!(j.stats().lost, 0);
    }

    #[test]
    fn reorders_within_window() {
        let t0 = Instant::now();
        let mut j = JitterBuffer::new(JitterConfig::default());
        let mut out = Vec::new();
        // The first packet to arrive is not the first sent: the start
        // waits, so 9 still comes out first.
        for s in [10, 12, 9, 11] {
            j.push(pkt(s), t0, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(j.deadline(), Some(t0 + Duration::from_millis(50)));
        j.poll(t0 + Duration::from_millis(50), &mut out);
        assert_eq!(seqs(&mut out), [9, 10, 11, 12]);
        for s in [14, 13, 15] {
            j.push(pkt(s), t0, &mut out);
        }
        assert_eq!(seqs(&mut out), [13, 14, 15]);
        assert_eq!(j.stats().reordered, 3);
        assert_eq!(j.stats().lost, 0);
        assert_eq!(j.held(), 0);
        assert_eq!(j.deadline(), None);
    }

    #[test]
    fn hole_given_up_after_delay_or_depth() {
        let t0 = Instant::now();
        let cfg = JitterConfig {
            depth: 4,
            max_delay: Duration::from_millis(50),
        };
        let mut j = JitterBuffer::new(cfg);
        let mut out = Vec::new();
        j.push(pkt(1), t0, &mut out);
        j.poll(t0, &mut out);
        assert!(out.is_empty(), "held while starting");
        j.push(pkt(3), t0 + Duration::from_millis(10), &mut out);
        // Depth 4: two packets end the start.
        assert_eq!(seqs(&mut out), [1]);
        assert_eq!(j.deadline(), Some(t0 + Duration::from_millis(60)));
        j.poll(t0 + Duration::from_millis(59), &mut out);
        assert!(out.is_empty());
        j.poll(t0 + Duration::from_millis(60), &mut out);
        assert_eq!(seqs(&mut out), [3]);
        assert_eq!(j.stats().lost, 1);
        // Late arrival of the given-up packet is dropped and counted.
        j.push(pkt(2), t0 + Duration::from_millis(70), &mut out);
        assert!(out.is_empty());
        assert_eq!(j.stats().late, 1);
        // A duplicate of a released packet is a duplicate, not late.
        j.push(pkt(3), t0 + Duration::from_millis(70), &mut out);
        assert_eq!(j.stats().duplicates, 1);
        // Depth: a hole at 4 with 4 packets behind it is given up at once.
        for s in 5..=8 {
            j.push(pkt(s), t0 + Duration::from_millis(71), &mut out);
        }
        assert!(out.is_empty());
        j.push(pkt(9), t0 + Duration::from_millis(71), &mut out);
        assert_eq!(seqs(&mut out), [5, 6, 7, 8, 9]);
        assert_eq!(j.stats().lost, 2);
    }

    #[test]
    fn wraps_and_restarts() {
        let t0 = Instant::now();
        let mut j = JitterBuffer::new(JitterConfig::default());
        let mut out = Vec::new();
        for s in [65534, 0, 65535, 1] {
            j.push(pkt(s), t0, &mut out);
        }
        j.poll(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(seqs(&mut out), [65534, 65535, 0, 1]);
        // One far packet is stray; two in a row are a restart.
        j.push(pkt(30000), t0, &mut out);
        assert!(out.is_empty());
        j.push(pkt(2), t0, &mut out);
        assert_eq!(seqs(&mut out), [2]);
        j.push(pkt(40000), t0, &mut out);
        j.push(pkt(40001), t0, &mut out);
        assert!(out.is_empty());
        assert_eq!(j.stats().restarts, 1);
        j.push(pkt(40002), t0, &mut out);
        j.flush(&mut out);
        assert_eq!(seqs(&mut out), [40001, 40002]);
    }

    #[test]
    fn flush_releases_in_order() {
        let t0 = Instant::now();
        let mut j = JitterBuffer::new(JitterConfig::default());
        let mut out = Vec::new();
        j.push(pkt(100), t0, &mut out);
        j.push(pkt(104), t0, &mut out);
        j.push(pkt(102), t0, &mut out);
        j.flush(&mut out);
        assert_eq!(seqs(&mut out), [100, 102, 104]);
        assert_eq!(j.stats().lost, 2);
    }
}
