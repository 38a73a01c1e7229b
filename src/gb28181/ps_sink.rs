//! The raw PS bytes of a download on their way to the file writer: a
//! bounded queue between a device sending at up to 32× and a disk that may
//! be slow (issue 13). The media task never waits on the disk — it cannot
//! block without also stopping its socket reads — so a chunk that finds the
//! queue full is dropped and counted (`camgate_gb_download_chunks_dropped_total`),
//! and the job reports the loss instead of a silently damaged file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Chunks (RTP payloads, ~1.4 kB each) queued at most: about 1.4 MB, a
/// few seconds of a 32× download.
pub const CAPACITY: usize = 1024;

/// The sending side, held by the media session.
#[derive(Debug, Clone)]
pub struct PsSink {
    tx: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

impl PsSink {
    /// A sink and the receiver the writer drains.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    /// Queue one chunk without waiting; a full queue drops it (counted).
    pub fn push(&self, chunk: Bytes) {
        match self.tx.try_send(chunk) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::get().gb_download_chunks_dropped.inc();
            }
            // The writer failed and is gone; the job reports that.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Chunks dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The drop count, readable after every sender is gone (holding a
    /// sender would keep the writer waiting for more).
    pub fn drop_count(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_growing() {
        let (sink, mut rx) = PsSink::channel(4);
        for i in 0..10u8 {
            sink.push(Bytes::from(vec![i]));
        }
        assert_eq!(sink.dropped(), 6);
        let got: Vec<u8> = std::iter::from_fn(|| rx.try_recv().ok().map(|b| b[0])).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        // Room again once the writer caught up.
        sink.push(Bytes::from_static(&[9]));
        assert_eq!(rx.try_recv().unwrap()[0], 9);
        assert_eq!(sink.dropped(), 6);
    }
}
