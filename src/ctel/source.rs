//! The `ctel` stream scheme (手机看店 spec V1.3 §15): a first viewer of
//! `ctel/{devId}/{channel}` (main stream, StreamType 1) or
//! `ctel/{devId}/{channel}/sub` (sub stream, StreamType 2) leads here. We
//! mint a one-time token and pull
//! `rtsp://{ip}:{port}/realplay?devid=…&channelno=…&streamtype=…&hashtoken=…`
//! from the device with retina over TCP interleaved, trying its LocalIP,
//! then UpnpIP, then TurnRelayIP address, and publish the H.264 access
//! units into the stream's hub.
//!
//! The sub stream is a path segment rather than `?streamtype=2` because a
//! [`StreamKey`] is the URL path only: the query never reaches providers,
//! and keying on the path keeps main and sub as two distinct hubs.
//!
//! Each address attempt gets its own token, so a device that consumed a
//! token and then failed cannot make the next attempt look like a replay.
//! The stream ends when the viewers go (cancel → retina sends TEARDOWN as
//! it drops the session) or when the device's link goes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use retina::client::{
    PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, VideoFrame};
use smallvec::SmallVec;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::platform::{CommandError, CtelPlatform};
use crate::media::frame::{Chunks, Codec, Frame, StreamInfo, VideoParams};
use crate::media::h264::{self, parse_sps};
use crate::media::hub::Hub;
use crate::metrics::{self, label};
use crate::streams::{
    SourceExit, SourceHandle, SourceProvider, StartError, StartFuture, StreamKey,
};

/// Largest access unit accepted from a device.
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

pub struct CtelSources {
    platform: Arc<CtelPlatform>,
}

impl CtelSources {
    pub fn new(platform: Arc<CtelPlatform>) -> Self {
        Self { platform }
    }
}

impl SourceProvider for CtelSources {
    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        Box::pin(start_live(self.platform.clone(), key, hub))
    }
}

/// `ctel/{devId}/{channel}[/sub]` → (device, channel, StreamType).
pub fn parse_key(key: &StreamKey) -> Option<(&str, u16, u8)> {
    let mut seg = key.segments();
    let dev = seg.next()?;
    let channel: u16 = seg.next()?.parse().ok()?;
    let stream_type = match seg.next() {
        None => 1,
        Some("sub") => 2,
        Some("main") => 1,
        Some(_) => return None,
    };
    if seg.next().is_some() || dev.is_empty() || !dev.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((dev, channel, stream_type))
}

fn pull_error(kind: &'static str) {
    metrics::get()
        .ctel_pull_errors
        .get_or_create(&label("kind", kind))
        .inc();
}

async fn start_live(
    platform: Arc<CtelPlatform>,
    key: &StreamKey,
    hub: Arc<Hub>,
) -> Result<SourceHandle, StartError> {
    let Some((dev_id, channel, stream_type)) = parse_key(key) else {
        return Err(StartError::NotFound(format!(
            "{key}: expected ctel/{{devId}}/{{channel}} or ctel/{{devId}}/{{channel}}/sub"
        )));
    };
    let budget = platform.config.rtsp_connect_timeout;
    let mut last_error = StartError::Offline(dev_id.to_owned());
    let mut tried = 0;
    loop {
        let ticket = platform
            .ticket_live(
                dev_id,
                channel,
                stream_type,
                Instant::now(),
                SystemTime::now(),
                rand::random(),
            )
            .map_err(|e| match e {
                CommandError::UnknownDevice(d) => StartError::NotFound(d),
                _ => {
                    pull_error("offline");
                    StartError::Offline(dev_id.to_owned())
                }
            })?;
        let Some(&addr) = ticket.addresses.get(tried) else {
            if tried == 0 {
                pull_error("no_address");
                return Err(StartError::Failed(format!(
                    "device {dev_id} gave no RTSP address"
                )));
            }
            return Err(last_error);
        };
        tried += 1;
        let url = format!(
            "rtsp://{addr}/realplay?devid={dev_id}&channelno={channel}&streamtype={stream_type}&hashtoken={}",
            ticket.token
        );
        let Ok(url) = url::Url::parse(&url) else {
            return Err(StartError::Failed(format!("bad device address {addr}")));
        };
        debug!(%addr, "pulling device RTSP");
        match tokio::time::timeout(budget, open(url)).await {
            Ok(Ok(session)) => {
                info!(%addr, "device RTSP playing");
                let cancel = CancellationToken::new();
                let pump = Pump {
                    hub,
                    gone: ticket.gone,
                };
                let span = tracing::Span::current();
                let task = tokio::spawn(pump.run(session, cancel.clone()).instrument(span));
                return Ok(SourceHandle { cancel, task });
            }
            Ok(Err(e)) => {
                pull_error("rtsp");
                warn!(%addr, error = %e, "device RTSP refused");
                last_error = e;
            }
            Err(_) => {
                pull_error("connect");
                warn!(%addr, "device RTSP did not answer within {budget:?}");
                last_error = StartError::Timeout(budget);
            }
        }
    }
}

/// DESCRIBE, SETUP (TCP interleaved) and PLAY the device's first video stream.
async fn open(url: url::Url) -> Result<retina::client::Demuxed, StartError> {
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
        .ok_or_else(|| StartError::Failed("device offers no H.264 video".into()))?;
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

struct Pump {
    hub: Arc<Hub>,
    gone: CancellationToken,
}

/// A pull that delivers no frame for this long is dead.
const MEDIA_SILENCE: Duration = Duration::from_secs(10);

impl Pump {
    /// Pull until cancelled, the device's link or stream ends, or no frame
    /// came for [`MEDIA_SILENCE`] (one deadline from the last frame).
    async fn run(
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
                _ = self.gone.cancelled() => break SourceExit::DeviceGone("device link ended".to_owned()),
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
                None => break SourceExit::Failed("device ended the stream".to_owned()),
                Some(Err(e)) => break SourceExit::Failed(format!("device RTSP failed: {e}")),
                Some(Ok(CodecItem::VideoFrame(f))) => {
                    if let Some(frame) = to_frame(f, &mut params, &self.hub) {
                        last_frame = tokio::time::Instant::now();
                        frames += 1;
                        metrics::get().frames_demuxed.inc();
                        self.hub.publish(frame);
                    }
                }
                Some(Ok(_)) => {}
            }
        };
        debug!(frames, %reason, "telecom pull ended");
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
fn to_frame(f: VideoFrame, params: &mut VideoParams, hub: &Hub) -> Option<Frame> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = |s| StreamKey::from_path(s).unwrap();
        assert_eq!(
            parse_key(&k("ctel/81200000001/0")),
            Some(("81200000001", 0, 1))
        );
        assert_eq!(
            parse_key(&k("ctel/81200000001/3/sub")),
            Some(("81200000001", 3, 2))
        );
        assert_eq!(parse_key(&k("ctel/81200000001/x")), None);
        assert_eq!(parse_key(&k("ctel/81200000001/0/hd")), None);
        assert_eq!(parse_key(&k("ctel/abc/0")), None);
        assert_eq!(parse_key(&k("ctel/81200000001/0/sub/x")), None);
    }
}
