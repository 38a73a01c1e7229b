//! The Hikvision capture as an in-process source: demuxed once, replayed
//! at 25 fps in a loop as a camera would send it, for tests that drive the
//! WebRTC engine without a gateway process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use camgate::media::frame::{Frame, StreamInfo};
use camgate::media::hub::Hub;
use camgate::media::ps::{PsDemuxer, PsEvent};
use camgate::streams::{SourceHandle, SourceProvider, StartError, StartFuture, StreamKey};
use tokio_util::sync::CancellationToken;

/// The one stream key the replay answers.
pub const CAPTURE_KEY: &str = "gb/34020000001320000001/34020000001310000001";

/// Every frame of a PS file, and what the demuxer learnt about it.
pub fn demux(path: &std::path::Path) -> (Vec<Frame>, StreamInfo) {
    let data = Bytes::from(std::fs::read(path).expect("read capture"));
    let mut demuxer = PsDemuxer::new();
    let mut events = Vec::new();
    for chunk in data.chunks(1400) {
        demuxer.push(data.slice_ref(chunk), &mut events);
    }
    demuxer.flush(&mut events);
    let frames = events
        .into_iter()
        .filter_map(|e| match e {
            PsEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    (frames, demuxer.info().clone())
}

/// Publishes `frames` at 25 fps, looping, with timestamps carried on
/// across laps.
pub struct CaptureReplay {
    pub frames: Arc<Vec<Frame>>,
    pub info: StreamInfo,
}

impl SourceProvider for CaptureReplay {
    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        Box::pin(async move {
            if key.as_str() != CAPTURE_KEY {
                return Err(StartError::NotFound(key.to_string()));
            }
            hub.set_info(self.info.clone());
            let frames = self.frames.clone();
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            let task = tokio::spawn(async move {
                let lap_ticks =
                    frames.last().map_or(0, |f| f.pts) - frames.first().map_or(0, |f| f.pts) + 3600;
                let mut tick = tokio::time::interval(Duration::from_millis(40));
                let mut lap = 0;
                loop {
                    for f in frames.iter() {
                        tokio::select! {
                            _ = stop.cancelled() => return camgate::streams::SourceExit::Stopped,
                            _ = tick.tick() => {}
                        }
                        let mut f = f.clone();
                        f.pts += lap * lap_ticks;
                        f.dts += lap * lap_ticks;
                        hub.publish(f);
                    }
                    lap += 1;
                }
            });
            Ok(SourceHandle { cancel, task })
        })
    }
}
