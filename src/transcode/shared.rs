//! One transcode per stream, shared by every WebRTC viewer of it.
//!
//! [`Transcodes`] maps a stream key to its running [`SharedTranscode`];
//! viewers hold it by `Arc`, so the transcode lives exactly as long as
//! someone watches it: the last viewer's drop cancels the feed task, which
//! stops the transcoder threads and the decoder process. A transcode that
//! failed is replaced for the next viewer that asks.
//!
//! The feed task reads the source hub like a viewer. Frames it receives
//! faster than real time (the GOP cache, a burst after a network stall)
//! wait for the transcoder, because an H.265 decoder needs them all; once
//! a frame is more than [`MAX_LAG`] behind the most timely frame seen, the
//! transcoder is behind for real and frames are dropped up to the next
//! key frame instead (see [`LagMeter`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use super::pipeline::{KeyframeRequester, Output, Pushed, Transcoder};
use super::{TranscodeConfig, TranscodeError, codec_label};
use crate::media::frame::{Codec, Frame, MediaKind, StreamInfo, VideoParams};
use crate::media::hub::{Hub, HubConfig, Subscription};
use crate::metrics::{self, label};
use crate::streams::StreamKey;

/// How far behind the source a transcode may fall before it skips ahead,
/// 90 kHz ticks.
pub const MAX_LAG: i64 = 90_000;
/// A jump in timestamps bigger than this is a discontinuity (a restarted
/// source), not lag.
const DISCONTINUITY: i64 = 10 * 90_000;
/// How often a feed waiting for the transcoder looks again.
const RETRY: Duration = Duration::from_millis(2);

/// How far behind live a reader of a stream is, from the timestamps of the
/// frames it reads and the times it reads them: frames read as they are
/// made show a constant `arrival - pts`; frames read late show a larger
/// one. The smallest difference seen is the live reference.
#[derive(Debug, Default)]
pub struct LagMeter {
    best: Option<i64>,
}

impl LagMeter {
    /// Note a frame with `pts` read at `now` (both 90 kHz); returns its lag.
    pub fn observe(&mut self, now: i64, pts: i64) -> i64 {
        let delay = now.saturating_sub(pts);
        let best = self.best.get_or_insert(delay);
        if delay < *best || delay - *best > DISCONTINUITY {
            *best = delay;
        }
        delay - *best
    }

    /// The lag of a frame with `pts` still unhandled at `now`.
    pub fn lag(&self, now: i64, pts: i64) -> i64 {
        self.best
            .map_or(0, |best| now.saturating_sub(pts).saturating_sub(best))
    }
}

/// The transcodes running, by stream.
pub struct Transcodes {
    config: TranscodeConfig,
    table: Mutex<HashMap<StreamKey, Weak<SharedTranscode>>>,
}

impl Transcodes {
    pub fn new(config: TranscodeConfig) -> Self {
        Self {
            config,
            table: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &TranscodeConfig {
        &self.config
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, Weak<SharedTranscode>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Streams being transcoded now.
    pub fn running(&self) -> usize {
        self.table()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// The transcode a WebRTC viewer of `key` needs, started if it is the
    /// first; `None` when the source's video goes to browsers as it is.
    /// Must be called within a tokio runtime.
    pub fn join(
        &self,
        key: &StreamKey,
        source: &Arc<Hub>,
        info: &StreamInfo,
    ) -> Result<Option<Arc<SharedTranscode>>, TranscodeError> {
        let joined = self.try_join(key, source, info);
        if let Err(e) = &joined {
            metrics::get()
                .transcode_errors
                .get_or_create(&label("kind", e.kind()))
                .inc();
        }
        joined
    }

    fn try_join(
        &self,
        key: &StreamKey,
        source: &Arc<Hub>,
        info: &StreamInfo,
    ) -> Result<Option<Arc<SharedTranscode>>, TranscodeError> {
        let codec = match &info.video {
            Some((c @ (Codec::H265 | Codec::Mjpeg), _)) => *c,
            _ => return Ok(None),
        };
        if !self.config.enabled {
            return Err(TranscodeError::Disabled);
        }
        let mut table = self.table();
        table.retain(|_, w| w.strong_count() > 0);
        if let Some(running) = table.get(key).and_then(Weak::upgrade) {
            if !running.has_failed() {
                return Ok(Some(running));
            }
            table.remove(key);
        }
        if table.len() >= self.config.max_streams {
            return Err(TranscodeError::TooMany(self.config.max_streams));
        }
        let transcode = SharedTranscode::start(key, codec, source, &self.config)?;
        table.insert(key.clone(), Arc::downgrade(&transcode));
        Ok(Some(transcode))
    }
}

/// A running transcode of one stream; dropping the last `Arc` stops it.
pub struct SharedTranscode {
    key: StreamKey,
    codec: Codec,
    hub: Arc<Hub>,
    keyframes: KeyframeRequester,
    failure: watch::Receiver<Option<TranscodeError>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for SharedTranscode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTranscode")
            .field("key", &self.key)
            .field("codec", &self.codec)
            .finish()
    }
}

impl SharedTranscode {
    fn start(
        key: &StreamKey,
        codec: Codec,
        source: &Arc<Hub>,
        config: &TranscodeConfig,
    ) -> Result<Arc<Self>, TranscodeError> {
        let hub = Hub::new(HubConfig::default());
        let (failure_tx, failure) = watch::channel(None);
        let output = HubOutput {
            hub: hub.clone(),
            source: source.clone(),
            failure: failure_tx,
        };
        let transcoder = Transcoder::start(codec, config, output)?;
        let keyframes = transcoder.keyframes();
        let cancel = CancellationToken::new();
        info!(stream = %key, codec = codec_label(codec), "transcode for browsers started");
        let span = info_span!("transcode", stream = %key, codec = codec_label(codec));
        tokio::spawn(
            feed(source.subscribe(), transcoder, hub.clone(), cancel.clone()).instrument(span),
        );
        Ok(Arc::new(Self {
            key: key.clone(),
            codec,
            hub,
            keyframes,
            failure,
            cancel,
        }))
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The H.264 stream (and the source's audio), for a viewer to read.
    pub fn subscribe(&self) -> Subscription {
        self.hub.subscribe()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// A browser lost packets: make the next frame an IDR.
    pub fn request_keyframe(&self) {
        self.keyframes.request();
    }

    pub fn has_failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// Wait until the first H.264 frame has been made and return what the
    /// output carries, or why it will not come.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<StreamInfo, TranscodeError> {
        let mut failure = self.failure.clone();
        tokio::select! {
            info = self.hub.wait_described(timeout) => match info.video {
                Some(_) => Ok(info),
                None => Err(self
                    .failure
                    .borrow()
                    .clone()
                    .unwrap_or(TranscodeError::NoOutput(timeout))),
            },
            failed = failure.wait_for(Option::is_some) => Err(match failed {
                Ok(e) => e.clone().unwrap_or(TranscodeError::NoOutput(timeout)),
                Err(_) => TranscodeError::NoOutput(timeout),
            }),
        }
    }
}

impl Drop for SharedTranscode {
    fn drop(&mut self) {
        info!(stream = %self.key, "transcode for browsers stopped: no viewer left");
        self.cancel.cancel();
    }
}

/// Delivers transcoded frames into the transcode's hub.
struct HubOutput {
    hub: Arc<Hub>,
    source: Arc<Hub>,
    failure: watch::Sender<Option<TranscodeError>>,
}

impl Output for HubOutput {
    fn frame(&mut self, frame: Frame, params: &VideoParams) {
        if frame.keyframe {
            // Before the frame, so a viewer that sees the description
            // finds the key frame in the GOP cache.
            self.hub.set_info(StreamInfo {
                video: Some((Codec::H264, params.clone())),
                audio: self.source.info().audio,
                audio_decided_by: self.source.info().audio_decided_by,
            });
        }
        self.hub.publish(frame);
    }

    fn failed(&mut self, error: TranscodeError) {
        self.failure.send_replace(Some(error));
        self.hub.close();
    }
}

fn ticks(epoch: Instant) -> i64 {
    i64::try_from(epoch.elapsed().as_micros() * 9 / 100).unwrap_or(i64::MAX)
}

async fn feed(
    mut source: Subscription,
    mut transcoder: Transcoder,
    hub: Arc<Hub>,
    cancel: CancellationToken,
) {
    let epoch = Instant::now();
    let mut lag = LagMeter::default();
    'frames: loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            f = source.recv() => match f {
                Ok(f) => f,
                Err(_) => break,
            },
        };
        if frame.kind() == MediaKind::Audio {
            hub.publish(Frame::clone(&frame));
            continue;
        }
        lag.observe(ticks(epoch), frame.pts);
        let mut frame = frame;
        loop {
            match transcoder.push(frame) {
                Pushed::Queued | Pushed::Skipped => break,
                Pushed::Ended => break 'frames,
                Pushed::Full(back) => {
                    if lag.lag(ticks(epoch), back.pts) > MAX_LAG {
                        transcoder.drop_frame();
                        break;
                    }
                    frame = back;
                    tokio::select! {
                        _ = cancel.cancelled() => break 'frames,
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    }
    drop(transcoder);
    hub.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_measured_against_the_most_timely_frame() {
        let mut m = LagMeter::default();
        // A GOP cache burst: three frames 40 ms apart read at once.
        assert_eq!(m.observe(1_000_000, 0), 0);
        assert_eq!(m.observe(1_000_000, 3600), 0);
        assert_eq!(m.observe(1_000_100, 7200), 0);
        // Live frames keep pace: no lag.
        assert_eq!(m.observe(1_003_700, 10_800), 0);
        // A frame read 0.5 s later than its pace.
        assert_eq!(m.observe(1_052_300, 14_400), 45_000);
        // Waiting for the transcoder makes it later still.
        assert_eq!(m.lag(1_100_000, 14_400), 92_700);
        // A source restarting at pts 0 is a discontinuity, not 11 s of lag.
        assert_eq!(m.observe(2_100_000, 0), 0);
        assert_eq!(m.observe(2_103_600, 3600), 0);
    }
}
