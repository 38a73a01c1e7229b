//! Packetize each frame once for all of its viewers.
//!
//! Every viewer of a stream receives the same `Arc<Frame>`s from the hub,
//! and how a frame splits into RTP payloads (RFC 6184 FU-A, RFC 7798 FU,
//! RFC 2435 fragments, …) depends only on the frame, the payload format and
//! the MTU, never on the viewer. So the first viewer to reach a frame
//! packetizes it and the others reuse the fragment list; each still writes
//! its own RTP headers (SSRC, sequence number, timestamp), which are 12
//! bytes per packet.
//!
//! This is a memo of a pure function: a miss (a viewer far behind the
//! others, many streams evicting each other) only costs packetizing again,
//! never a wrong packet. Entries hold their frame, so a frame's address is
//! never reused while it is a key.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::packetize::{Fragment, Packetizer};
use crate::media::frame::Frame;

/// Frames remembered; enough for every live frame of a few busy streams
/// (viewers of one stream are rarely more than a few frames apart).
pub const DEFAULT_CAPACITY: usize = 256;

struct Entry {
    frame: Arc<Frame>,
    packetizer: Packetizer,
    mtu: usize,
    fragments: Arc<[Fragment]>,
}

/// The shared memo; one per server.
pub struct FragmentCache {
    entries: Mutex<VecDeque<Entry>>,
    capacity: usize,
}

impl Default for FragmentCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl FragmentCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    fn lookup(
        &self,
        frame: &Arc<Frame>,
        packetizer: Packetizer,
        mtu: usize,
    ) -> Option<Arc<[Fragment]>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Newest first: viewers mostly ask for the frame just published.
        entries
            .iter()
            .rev()
            .find(|e| Arc::ptr_eq(&e.frame, frame) && e.packetizer == packetizer && e.mtu == mtu)
            .map(|e| e.fragments.clone())
    }

    /// The fragments of `frame` in `packetizer`'s format within `mtu`.
    pub fn fragments(
        &self,
        frame: &Arc<Frame>,
        packetizer: Packetizer,
        mtu: usize,
    ) -> Arc<[Fragment]> {
        if let Some(hit) = self.lookup(frame, packetizer, mtu) {
            return hit;
        }
        // Packetized outside the lock; two viewers racing on one frame
        // both do the work once, which is harmless.
        let mut out = Vec::new();
        packetizer.packetize(frame, mtu, &mut out);
        let fragments: Arc<[Fragment]> = out.into();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(Entry {
            frame: frame.clone(),
            packetizer,
            mtu,
            fragments: fragments.clone(),
        });
        fragments
    }

    /// Frames remembered now.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{Chunks, Codec};
    use bytes::Bytes;

    fn frame(size: usize) -> Arc<Frame> {
        Arc::new(Frame {
            codec: Codec::H264,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: [Chunks::from(Bytes::from(vec![0x65; size]))]
                .into_iter()
                .collect(),
        })
    }

    #[test]
    fn one_packetization_per_frame_format_and_mtu() {
        let cache = FragmentCache::new(2);
        let (a, b) = (frame(3000), frame(3000));
        let first = cache.fragments(&a, Packetizer::H264, 1400);
        assert_eq!(first.len(), 3, "FU-A in three");
        assert!(Arc::ptr_eq(
            &first,
            &cache.fragments(&a, Packetizer::H264, 1400)
        ));
        // Another MTU is another packetization.
        let small = cache.fragments(&a, Packetizer::H264, 500);
        assert!(small.len() > 3);
        // The oldest entry goes when the cache is full; a miss packetizes
        // again, to the same result.
        cache.fragments(&b, Packetizer::H264, 1400);
        assert_eq!(cache.len(), 2);
        let again = cache.fragments(&a, Packetizer::H264, 1400);
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(again.len(), first.len());
        for (x, y) in again.iter().zip(first.iter()) {
            assert_eq!(x.prefix(), y.prefix());
            assert_eq!(x.payload, y.payload);
        }
    }
}
