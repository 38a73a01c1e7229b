//! One hub per live stream: fans frames out to every viewer.
//!
//! The source publishes each frame once; viewers read from a shared ring
//! (`tokio::sync::broadcast`), so publishing never waits for a viewer and
//! costs the same for one viewer as for a thousand. A viewer that falls
//! behind skips to the next keyframe so its decoder restarts cleanly; the
//! skip is counted. "Behind" is bounded twice: a whole ring of frames, and
//! a number of bytes sized by the stream's bit rate (`queue_duration` of
//! media). The byte bound is what keeps memory small: every frame a viewer
//! has not read yet stays in the ring and pins the receive blocks it
//! points into (issue 17), and a frame count says nothing about bytes.
//!
//! The GOP cache keeps the last keyframe (with its parameter sets) and every
//! frame since, so a new viewer starts decoding at once instead of waiting
//! for the next keyframe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use super::frame::{Frame, MediaKind, StreamInfo};

/// `media.audio_only_after` when nobody set it.
pub const DEFAULT_AUDIO_ONLY_AFTER: Duration = Duration::from_secs(2);

/// Lag bound of a stream whose bit rate is not known yet (its first
/// second) or low: room for a large keyframe.
pub const MIN_QUEUE_BYTES: u64 = 256 * 1024;

/// Hub tuning, from the `media` section of the config.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Frames a viewer may fall behind before it skips to the next keyframe
    /// (the ring's size; its slots are allocated up front).
    pub queue_frames: usize,
    /// Media a viewer may fall behind, as a duration at the stream's bit
    /// rate (at least [`MIN_QUEUE_BYTES`]), before it skips to the next
    /// keyframe.
    pub queue_duration: Duration,
    /// Start new viewers at the last keyframe instead of the next one.
    pub gop_cache: bool,
    /// Upper bound on cached frames, for sources that never send a keyframe.
    pub gop_cache_max_frames: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            queue_frames: 128,
            queue_duration: Duration::from_secs(2),
            gop_cache: true,
            gop_cache_max_frames: 1024,
        }
    }
}

/// Counters the API and metrics read; updated by the publisher only.
#[derive(Debug, Default)]
pub struct HubStats {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    bitrate_bps: AtomicU64,
}

impl HubStats {
    /// Payload bit rate over the last complete one-second window.
    pub fn bitrate_bps(&self) -> u64 {
        self.bitrate_bps.load(Ordering::Relaxed)
    }
}

/// Bytes published so far and how far behind them a viewer may be;
/// shared by the hub and its subscriptions.
#[derive(Debug)]
struct LagBound {
    published_bytes: AtomicU64,
    max_behind_bytes: AtomicU64,
}

/// A frame in the ring, with the stream's byte count before it.
type Published = (Arc<Frame>, u64);

struct State {
    sender: Option<broadcast::Sender<Published>>,
    gop: Vec<Arc<Frame>>,
    has_video: bool,
    window_start: Instant,
    window_bytes: u64,
    first_frame_at: Option<Instant>,
    /// On the tokio clock: the stream table compares it with its own
    /// (paused in tests) timers.
    last_frame_at: Option<tokio::time::Instant>,
    /// Presentation time of the first video frame, for egress that maps
    /// a recording's timestamps to positions in it.
    first_video_pts: Option<i64>,
}

pub struct Hub {
    config: HubConfig,
    /// While the stream is being restarted: how long its new source waits
    /// for first media before giving up (milliseconds, 0 = not set).
    restart_patience_ms: AtomicU64,
    state: Mutex<State>,
    info: watch::Sender<StreamInfo>,
    lag: Arc<LagBound>,
    pub stats: HubStats,
}

/// The hub was closed: the source ended and no more frames will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream ended")]
pub struct StreamEnded;

impl Hub {
    pub fn new(config: HubConfig) -> Arc<Self> {
        let (sender, _) = broadcast::channel(config.queue_frames.max(2));
        let (info, _) = watch::channel(StreamInfo::default());
        Arc::new(Self {
            config,
            restart_patience_ms: AtomicU64::new(0),
            state: Mutex::new(State {
                sender: Some(sender),
                gop: Vec::new(),
                has_video: false,
                window_start: Instant::now(),
                window_bytes: 0,
                first_frame_at: None,
                last_frame_at: None,
                first_video_pts: None,
            }),
            info,
            lag: Arc::new(LagBound {
                published_bytes: AtomicU64::new(0),
                max_behind_bytes: AtomicU64::new(MIN_QUEUE_BYTES),
            }),
            stats: HubStats::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent
        // in a way that matters more than losing the stream, so recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hand a frame to every viewer. Never blocks on a viewer.
    pub fn publish(&self, frame: Frame) {
        let frame = Arc::new(frame);
        let len = frame.len() as u64;
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(len, Ordering::Relaxed);
        let mut st = self.lock();
        if st.first_frame_at.is_none() {
            st.first_frame_at = Some(Instant::now());
        }
        let now = Instant::now();
        st.last_frame_at = Some(tokio::time::Instant::now());
        st.window_bytes += len;
        let elapsed = now.duration_since(st.window_start);
        if elapsed >= Duration::from_secs(1) {
            let bps = st.window_bytes * 8 * 1000 / (elapsed.as_millis() as u64).max(1);
            self.stats.bitrate_bps.store(bps, Ordering::Relaxed);
            let queue_ms = self.config.queue_duration.as_millis() as u64;
            let bound = (bps / 8).saturating_mul(queue_ms) / 1000;
            self.lag
                .max_behind_bytes
                .store(bound.max(MIN_QUEUE_BYTES), Ordering::Relaxed);
            st.window_start = now;
            st.window_bytes = 0;
        }
        if st.first_video_pts.is_none() && frame.kind() == MediaKind::Video {
            st.first_video_pts = Some(frame.pts);
        }
        if self.config.gop_cache {
            let is_video = frame.kind() == MediaKind::Video;
            st.has_video |= is_video;
            let starts_gop = frame.keyframe && (is_video || !st.has_video);
            if starts_gop {
                st.gop.clear();
            }
            // Frames before the first keyframe are useless to a new decoder.
            if (starts_gop || !st.gop.is_empty()) && st.gop.len() < self.config.gop_cache_max_frames
            {
                st.gop.push(frame.clone());
            }
        }
        // Under the lock, so the ring's order and the byte counts agree.
        let before = self.lag.published_bytes.fetch_add(len, Ordering::Relaxed);
        if let Some(sender) = &st.sender {
            // An error only means nobody is subscribed right now.
            let _ = sender.send((frame, before));
        }
    }

    /// Record what the stream carries (codecs, parameter sets, size).
    pub fn set_info(&self, info: StreamInfo) {
        self.info.send_if_modified(|cur| {
            if *cur != info {
                *cur = info;
                true
            } else {
                false
            }
        });
    }

    pub fn info(&self) -> StreamInfo {
        self.info.borrow().clone()
    }

    /// Wait until the source has described its media well enough to offer
    /// it (a video track with its parameter sets, or an audio-only stream),
    /// or until `timeout`. Returns the info as it stands either way.
    pub async fn wait_described(&self, timeout: Duration) -> StreamInfo {
        self.wait_described_or_audio_only(timeout, DEFAULT_AUDIO_ONLY_AFTER)
            .await
    }

    /// As [`Hub::wait_described`], with audio but no video taken as an
    /// audio-only stream once `audio_only_after` has passed since the
    /// stream's first frame (`media.audio_only_after`): audio usually
    /// leads the first keyframe, but intercoms and audio channels never
    /// send one. Both waits end at one deadline computed here.
    pub async fn wait_described_or_audio_only(
        &self,
        timeout: Duration,
        audio_only_after: Duration,
    ) -> StreamInfo {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.info.subscribe();
        let video_ready = |info: &StreamInfo| {
            info.video
                .as_ref()
                .is_some_and(|(_, v)| v.sps.is_some() || v.width > 0)
        };
        let _ = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|i| video_ready(i) || (i.video.is_none() && i.audio.is_some())),
        )
        .await;
        let info = rx.borrow().clone();
        if video_ready(&info) || info.audio.is_none() {
            return info;
        }
        let waited = self
            .first_frame_at()
            .map_or(Duration::ZERO, |t| t.elapsed());
        let audio_only_at =
            (tokio::time::Instant::now() + audio_only_after.saturating_sub(waited)).min(deadline);
        let _ = tokio::time::timeout_at(audio_only_at, rx.wait_for(video_ready)).await;
        rx.borrow().clone()
    }

    /// When the first frame arrived, if one has.
    pub fn first_frame_at(&self) -> Option<Instant> {
        self.lock().first_frame_at
    }

    /// Set by the stream table while it restarts the stream: a source
    /// should wait at least this long for its first media (the restart
    /// schedule's next step), so media returning between calls is taken.
    pub fn set_restart_patience(&self, patience: Option<Duration>) {
        let ms = patience.map_or(0, |p| p.as_millis().clamp(1, u128::from(u64::MAX)) as u64);
        self.restart_patience_ms.store(ms, Ordering::Relaxed);
    }

    pub fn restart_patience(&self) -> Option<Duration> {
        match self.restart_patience_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// When the latest frame arrived, if one has.
    pub fn last_frame_at(&self) -> Option<tokio::time::Instant> {
        self.lock().last_frame_at
    }

    /// The bit rate as it is at `now`: that of the last one-second window,
    /// or 0 once no frame came for a second (the windows close only on
    /// frames, so a silent source would otherwise keep its last figure).
    pub fn bitrate_bps_at(&self, now: tokio::time::Instant) -> u64 {
        match self.last_frame_at() {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                self.stats.bitrate_bps()
            }
            _ => 0,
        }
    }

    /// A new viewer: it gets the GOP cache first, then live frames.
    pub fn subscribe(&self) -> Subscription {
        let st = self.lock();
        let receiver = st.sender.as_ref().map(|s| s.subscribe());
        Subscription {
            backlog: st.gop.clone().into(),
            receiver,
            lag: self.lag.clone(),
            awaiting_keyframe: st.gop.is_empty(),
            has_video: st.has_video,
            skipped: 0,
        }
    }

    /// The pts of the first video frame published, if one was.
    pub fn first_video_pts(&self) -> Option<i64> {
        self.lock().first_video_pts
    }

    /// A viewer that skips the GOP cache and whatever is already queued:
    /// it starts at the next keyframe published from now on. For a jump in
    /// a recording, where everything published before it is stale.
    pub fn subscribe_from_next_keyframe(&self) -> Subscription {
        let st = self.lock();
        Subscription {
            backlog: Default::default(),
            receiver: st.sender.as_ref().map(|s| s.subscribe()),
            lag: self.lag.clone(),
            awaiting_keyframe: true,
            has_video: st.has_video,
            skipped: 0,
        }
    }

    /// The source has ended: viewers drain what they have, then see
    /// [`StreamEnded`].
    pub fn close(&self) {
        let mut st = self.lock();
        st.sender = None;
        st.gop.clear();
    }

    pub fn viewers(&self) -> usize {
        self.lock()
            .sender
            .as_ref()
            .map_or(0, |s| s.receiver_count())
    }
}

/// One viewer's read side of a hub.
pub struct Subscription {
    backlog: std::collections::VecDeque<Arc<Frame>>,
    receiver: Option<broadcast::Receiver<Published>>,
    lag: Arc<LagBound>,
    /// After a lag (or when joining with an empty cache) frames are dropped
    /// until a keyframe, so the decoder never sees a broken reference chain.
    awaiting_keyframe: bool,
    has_video: bool,
    skipped: u64,
}

impl Subscription {
    /// Frames this viewer skipped because it fell behind.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next frame for this viewer, or [`StreamEnded`].
    pub async fn recv(&mut self) -> Result<Arc<Frame>, StreamEnded> {
        loop {
            let frame = match self.backlog.pop_front() {
                Some(f) => f,
                None => {
                    let rx = self.receiver.as_mut().ok_or(StreamEnded)?;
                    match rx.recv().await {
                        Ok((f, before)) => {
                            // Media published after this frame.
                            let published = self.lag.published_bytes.load(Ordering::Relaxed);
                            let behind = published.saturating_sub(before + f.len() as u64);
                            if behind > self.lag.max_behind_bytes.load(Ordering::Relaxed) {
                                // Too much media queued for this viewer: drop
                                // through to a keyframe near the head, which
                                // also releases what the ring holds for it.
                                if !self.awaiting_keyframe {
                                    crate::metrics::get().viewer_queue_overflows.inc();
                                    self.awaiting_keyframe = true;
                                }
                                self.skipped += 1;
                                crate::metrics::get().viewer_frames_skipped.inc();
                                continue;
                            }
                            f
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            self.skipped += n;
                            crate::metrics::get().viewer_frames_skipped.inc_by(n);
                            self.awaiting_keyframe = true;
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Err(StreamEnded),
                    }
                }
            };
            self.has_video |= frame.kind() == MediaKind::Video;
            if self.awaiting_keyframe {
                let resumes =
                    frame.keyframe && (frame.kind() == MediaKind::Video || !self.has_video);
                if !resumes {
                    self.skipped += 1;
                    crate::metrics::get().viewer_frames_skipped.inc();
                    continue;
                }
                self.awaiting_keyframe = false;
            }
            return Ok(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{Chunks, Codec};
    use bytes::Bytes;

    fn video(pts: i64, keyframe: bool) -> Frame {
        Frame {
            codec: Codec::H264,
            pts,
            dts: pts,
            keyframe,
            units: [Chunks::from(Bytes::from(vec![0x65; 10]))]
                .into_iter()
                .collect(),
        }
    }

    #[tokio::test]
    async fn late_viewer_starts_at_last_keyframe() {
        let hub = Hub::new(HubConfig::default());
        hub.publish(video(0, false)); // before any keyframe: not cached
        hub.publish(video(3600, true));
        hub.publish(video(7200, false));
        let mut sub = hub.subscribe();
        hub.publish(video(10800, false));
        let pts: Vec<i64> = [
            sub.recv().await.unwrap(),
            sub.recv().await.unwrap(),
            sub.recv().await.unwrap(),
        ]
        .iter()
        .map(|f| f.pts)
        .collect();
        assert_eq!(pts, [3600, 7200, 10800]);
    }

    #[tokio::test]
    async fn lagging_viewer_skips_to_next_keyframe_and_counts() {
        let hub = Hub::new(HubConfig {
            queue_frames: 4,
            gop_cache: false,
            gop_cache_max_frames: 0,
            ..HubConfig::default()
        });
        let mut sub = hub.subscribe();
        // Nothing cached, so the viewer waits for a keyframe first.
        hub.publish(video(0, true));
        for i in 1..10 {
            hub.publish(video(i * 3600, false));
        }
        hub.publish(video(36000, true));
        hub.publish(video(39600, false));
        let first = sub.recv().await.unwrap();
        assert_eq!(first.pts, 36000, "skips the lost GOP");
        assert!(sub.skipped() >= 7, "skipped {}", sub.skipped());
        assert_eq!(sub.recv().await.unwrap().pts, 39600);
    }

    fn sized(pts: i64, keyframe: bool, len: usize) -> Frame {
        Frame {
            units: [Chunks::from(Bytes::from(vec![0x65; len]))]
                .into_iter()
                .collect(),
            ..video(pts, keyframe)
        }
    }

    #[tokio::test]
    async fn viewer_more_than_the_byte_bound_behind_skips_to_a_recent_keyframe() {
        // A ring far larger than the frames published: only the byte bound
        // (MIN_QUEUE_BYTES while the bit rate is unknown) can make it skip.
        let hub = Hub::new(HubConfig {
            queue_frames: 1024,
            gop_cache: false,
            ..HubConfig::default()
        });
        let mut sub = hub.subscribe();
        let frame = 10_000;
        // GOPs of 10 frames (100 KB); 5 of them = 500 KB queued unread.
        for i in 0..50 {
            hub.publish(sized(i * 3600, i % 10 == 0, frame));
        }
        let first = sub.recv().await.unwrap();
        // Behind by at most the bound: the first keyframe with at most
        // 256 KiB published after it is frame 30 (190 KB after it).
        assert_eq!(first.pts, 30 * 3600);
        assert!(first.keyframe);
        assert_eq!(sub.skipped(), 30);
        for i in 31..50 {
            assert_eq!(sub.recv().await.unwrap().pts, i * 3600);
        }
        assert_eq!(sub.skipped(), 30);
    }

    #[tokio::test]
    async fn fresh_viewer_skips_the_cache_and_waits_for_a_keyframe() {
        let hub = Hub::new(HubConfig::default());
        hub.publish(video(3600, true));
        hub.publish(video(7200, false));
        let mut sub = hub.subscribe_from_next_keyframe();
        hub.publish(video(10800, false));
        hub.publish(video(14400, true));
        assert_eq!(sub.recv().await.unwrap().pts, 14400);
        assert_eq!(hub.first_video_pts(), Some(3600));
    }

    #[tokio::test]
    async fn close_ends_viewers() {
        let hub = Hub::new(HubConfig::default());
        let mut sub = hub.subscribe();
        hub.publish(video(0, true));
        hub.close();
        assert_eq!(sub.recv().await.unwrap().pts, 0);
        assert_eq!(sub.recv().await.unwrap_err(), StreamEnded);
    }
}
