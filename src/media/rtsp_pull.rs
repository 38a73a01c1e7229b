//! Pull a live H.264 stream from an RTSP server with retina (TCP
//! interleaved) and publish its access units into a hub: the telecom
//! cameras' own RTSP servers (`ctel/`) and, in a cluster, the node that
//! owns a device (`cluster/` relay). RFC 2326; H.264 payload RFC 6184 as
//! retina depacketizes it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use retina::client::{
    PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, VideoFrame};
use smallvec::SmallVec;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::media::frame::{Chunks, Codec, Frame, StreamInfo, VideoParams};
use crate::media::h264::{self, parse_sps};
use crate::media::hub::Hub;
use crate::metrics;
use crate::streams::{SourceExit, StartError};

/// Largest access unit accepted from a server.
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

pub async fn open(url: url::Url) -> Result<retina::client::Demuxed, StartError> {
    let rejected = |e: retina::Error| {
        let text = e.to_string();
        // retina reports the status only in its message.
        for code in [401u16, 403, 404, 453] {
            if text.contains(&format!("{code} ")) {
                return StartError::Rejected { code, reason: text };
            }
        }
        StartError::Failed(text)
    };
    let mut session = Session::describe(url, SessionOptions::default())
        .await
        .map_err(rejected)?;
    let video = session
        .streams()
        .iter()
        .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"))
        .ok_or_else(|| StartError::Failed("the server offers no H.264 video".into()))?;
    session
        .setup(
            video,
            SetupOptions::default().transport(Transport::Tcp(TcpTransportOptions::default())),
        )
        .await
        .map_err(rejected)?;
    let playing = session
        .play(PlayOptions::default())
        .await
        .map_err(rejected)?;
    playing.demuxed().map_err(rejected)
}

/// Moves one pulled session's H.264 access units into a hub.
pub struct Pump {
    pub hub: Arc<Hub>,
    /// Cancelled when what the stream comes from is gone (the device's
    /// link, the owning node): the stream then ends `DeviceGone`.
    pub gone: CancellationToken,
    /// Counts one bad-input kind (`oversize_frame`, `bad_length_prefix`)
    /// in the caller's metric family.
    pub on_error: fn(&'static str),
    /// Names the source in logs ("telecom pull", "cluster relay").
    pub what: &'static str,
}

/// A pull that delivers no frame for this long is dead.
const MEDIA_SILENCE: Duration = Duration::from_secs(10);

impl Pump {
    /// Pull until cancelled, the device's link or stream ends, or no frame
    /// came for [`MEDIA_SILENCE`] (one deadline from the last frame).
    pub async fn run(
        self,
        mut session: retina::client::Demuxed,
        cancel: CancellationToken,
    ) -> SourceExit {
        let mut params = VideoParams::default();
        let mut frames = 0u64;
        let mut last_frame = tokio::time::Instant::now();
        let silence = tokio::time::sleep_until(last_frame + MEDIA_SILENCE);
        tokio::pin!(silence);
        let reason = loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => break SourceExit::Stopped,
                _ = self.gone.cancelled() => break SourceExit::DeviceGone(format!("{} source gone", self.what)),
                item = next_item(&mut session) => item,
                _ = &mut silence => {
                    let due = last_frame + MEDIA_SILENCE;
                    if due > tokio::time::Instant::now() {
                        silence.as_mut().reset(due);
                        continue;
                    }
                    break SourceExit::NoMedia(MEDIA_SILENCE);
                }
            };
            match item {
                None => {
                    break SourceExit::Failed(format!(
                        "{}: the server ended the stream",
                        self.what
                    ));
                }
                Some(Err(e)) => {
                    break SourceExit::Failed(format!("{}: RTSP failed: {e}", self.what));
                }
                Some(Ok(CodecItem::VideoFrame(f))) => {
                    if let Some(frame) = to_frame(f, &mut params, &self.hub, self.on_error) {
                        last_frame = tokio::time::Instant::now();
                        frames += 1;
                        metrics::get().frames_demuxed.inc();
                        self.hub.publish(frame);
                    }
                }
                Some(Ok(_)) => {}
            }
        };
        debug!(frames, %reason, what = self.what, "RTSP pull ended");
        // Dropping the session sends TEARDOWN on its connection.
        drop(session);
        reason
    }
}

async fn next_item(
    session: &mut retina::client::Demuxed,
) -> Option<Result<CodecItem, retina::Error>> {
    use futures_core::Stream;
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *session).poll_next(cx)).await
}

/// retina's default frame format is 4-byte length-prefixed NAL units with
/// SPS/PPS inserted before each keyframe; split that into units sharing
/// one buffer, and learn the parameter sets as they pass.
fn to_frame(
    f: VideoFrame,
    params: &mut VideoParams,
    hub: &Hub,
    pull_error: fn(&'static str),
) -> Option<Frame> {
    let pts = f.timestamp().elapsed();
    let keyframe = f.is_random_access_point();
    let data = Bytes::from(f.into_data());
    if data.len() > MAX_FRAME_BYTES {
        pull_error("oversize_frame");
        return None;
    }
    let mut units: SmallVec<[Chunks; 4]> = SmallVec::new();
    let mut at = 0usize;
    while let Some(len) = data.get(at..at + 4) {
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(nal) = data.get(at + 4..at + 4 + n) else {
            pull_error("bad_length_prefix");
            return None;
        };
        let nal = data.slice_ref(nal);
        if let Some(&head) = nal.first() {
            match h264::nal_type(head) {
                7 if params.sps.as_ref() != Some(&nal) => {
                    if let Ok(sps) = parse_sps(&nal) {
                        params.width = sps.width;
                        params.height = sps.height;
                    }
                    params.sps = Some(nal.clone());
                    publish_info(hub, params);
                }
                8 if params.pps.as_ref() != Some(&nal) => {
                    params.pps = Some(nal.clone());
                    publish_info(hub, params);
                }
                _ => {}
            }
            units.push(Chunks::from(nal));
        }
        at += 4 + n;
    }
    (!units.is_empty()).then_some(Frame {
        codec: Codec::H264,
        pts,
        dts: pts,
        keyframe,
        units,
    })
}

fn publish_info(hub: &Hub, params: &VideoParams) {
    if params.sps.is_some() && params.pps.is_some() {
        hub.set_info(StreamInfo {
            video: Some((Codec::H264, params.clone())),
            audio: None,
            audio_decided_by: None,
        });
    }
}
