//! The `foscam` stream source: `foscam/{name}` starts the camera's video
//! (and audio) for the first viewer and ends it when the stream stops.
//!
//! Video_Start_Req and Audio_Start_Req go over the logged-in operation
//! connection; the media connection logs in with the id they return and
//! carries Video_Data (one JPEG each → one [`Codec::Mjpeg`] frame, the JPEG
//! a slice of the receive buffer) and Audio_Data (ADPCM → PCM → G.711
//! A-law frames). Cancelling the source sends Video_End / Audio_End.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use smallvec::smallvec;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::adpcm::AdpcmState;
use super::client::{self, CommandError, FoscamCamera, ONLINE_WAIT, StartKind};
use super::g711::linear_to_alaw;
use super::proto::{self, Channel, FrameDecoder, MediaMessage};
use crate::config::FoscamCameraConfig;
use crate::media::frame::{AudioParams, Chunks, Codec, Frame, StreamInfo, VideoParams};
use crate::media::hub::Hub;
use crate::media::jpeg;
use crate::metrics::{self, label};
use crate::streams::{
    SourceExit, SourceHandle, SourceProvider, StartError, StartFuture, StreamKey,
};

/// A media connection that delivers nothing for this long is dead.
const MEDIA_SILENCE: Duration = Duration::from_secs(10);
/// Read-buffer growth step: several JPEGs land in one allocation.
const READ_CHUNK: usize = 64 * 1024;

/// Every configured camera, by name; the `foscam` scheme's provider.
pub struct FoscamSources {
    cameras: BTreeMap<String, Arc<FoscamCamera>>,
}

impl FoscamSources {
    /// Log in to every camera of `configs` and keep them logged in until
    /// `cancel`.
    pub fn spawn(configs: &[FoscamCameraConfig], cancel: &CancellationToken) -> Self {
        let cameras = configs
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    FoscamCamera::spawn(c.clone(), cancel.child_token()),
                )
            })
            .collect();
        Self { cameras }
    }

    pub fn camera(&self, name: &str) -> Option<&Arc<FoscamCamera>> {
        self.cameras.get(name)
    }

    pub fn cameras(&self) -> impl Iterator<Item = &Arc<FoscamCamera>> {
        self.cameras.values()
    }
}

impl SourceProvider for FoscamSources {
    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        Box::pin(async move {
            let mut segments = key.segments();
            let (Some(name), None) = (segments.next(), segments.next()) else {
                return Err(StartError::NotFound(format!(
                    "{key}: expected foscam/{{name}}"
                )));
            };
            let camera = self
                .camera(name)
                .ok_or_else(|| StartError::NotFound(format!("no Foscam camera {name:?}")))?;
            start_media(camera.clone(), hub).await
        })
    }
}

async fn start_media(camera: Arc<FoscamCamera>, hub: Arc<Hub>) -> Result<SourceHandle, StartError> {
    let name = camera.name().to_owned();
    let session = camera.wait_online(ONLINE_WAIT).await.inspect_err(|e| {
        warn!(camera = %name, "cannot start: {e}");
    })?;
    let video_id = camera
        .start(StartKind::Video)
        .await
        .map_err(|e| e.into_start_error(&name, "video"))?;
    let audio_id = if camera.config.audio {
        match camera.start(StartKind::Audio).await {
            Ok(id) => Some(id),
            Err(CommandError::Refused(proto::START_UNSUPPORTED)) => {
                info!(camera = %name, "camera has no audio");
                None
            }
            Err(e) => {
                warn!(camera = %name, "no audio: {e}");
                None
            }
        }
    } else {
        None
    };
    let end_all = |camera: &FoscamCamera| {
        camera.end(StartKind::Video);
        if audio_id.is_some() {
            camera.end(StartKind::Audio);
        }
    };
    let video = match camera.connect_media(video_id).await {
        Ok(s) => s,
        Err(e) => {
            end_all(&camera);
            return Err(StartError::Failed(format!("{name}: {e}")));
        }
    };
    // Cameras normally send audio on the video's data connection (same
    // id); a different id gets a connection of its own.
    let audio = match audio_id {
        Some(id) if id != video_id => match camera.connect_media(id).await {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(camera = %name, "no audio: {e}");
                None
            }
        },
        _ => None,
    };
    info!(camera = %name, video_id, ?audio_id, "camera streaming");
    let cancel = CancellationToken::new();
    let pump = Pump {
        camera,
        hub,
        session,
        audio: audio_id.is_some(),
    };
    let task = tokio::spawn(
        pump.run(video, audio, cancel.clone())
            .instrument(tracing::Span::current()),
    );
    Ok(SourceHandle { cancel, task })
}

struct Pump {
    camera: Arc<FoscamCamera>,
    hub: Arc<Hub>,
    session: u64,
    audio: bool,
}

impl Pump {
    async fn run(
        self,
        video: TcpStream,
        audio: Option<TcpStream>,
        cancel: CancellationToken,
    ) -> SourceExit {
        let mut main = MediaReader::new(&self.hub, self.audio);
        let mut extra = MediaReader::new(&self.hub, self.audio);
        let extra_read = async {
            match audio {
                Some(s) => extra.run(s).await,
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            _ = cancel.cancelled() => None,
            r = self.camera.session_ended(self.session) => Some(SourceExit::Failed(r)),
            r = main.run(video) => Some(r),
            r = extra_read => Some(r),
        };
        // Harmless when the control link is gone: the command is dropped.
        self.camera.end(StartKind::Video);
        if self.audio {
            self.camera.end(StartKind::Audio);
        }
        match reason {
            None => {
                info!(camera = %self.camera.name(), "sent Video_End");
                SourceExit::Stopped
            }
            Some(r) => {
                metrics::get()
                    .foscam_errors
                    .get_or_create(&label("kind", "media_lost"))
                    .inc();
                warn!(camera = %self.camera.name(), %r, "media ended");
                r
            }
        }
    }
}

/// Turns one media connection's messages into hub frames.
struct MediaReader<'a> {
    hub: &'a Hub,
    audio: bool,
    described: bool,
    adpcm: AdpcmState,
    pcm: Vec<i16>,
    /// Audio clock anchor: (sequence, pts) of a packet. Camera timestamps
    /// are 10 ms ticks of a clock read per packet and jitter; the sequence
    /// number counts 320-sample packets exactly, so it makes the pts.
    audio_anchor: Option<(u32, i64)>,
}

impl<'a> MediaReader<'a> {
    fn new(hub: &'a Hub, audio: bool) -> Self {
        Self {
            hub,
            audio,
            described: false,
            adpcm: AdpcmState::new(),
            pcm: Vec::with_capacity(2 * proto::ADPCM_PACKET_LEN),
            audio_anchor: None,
        }
    }

    /// Read until the connection ends or no frame came for
    /// `MEDIA_SILENCE`: one deadline from the last frame published (bytes
    /// that make no frame do not keep a connection alive).
    async fn run(&mut self, mut stream: TcpStream) -> SourceExit {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut decoder = FrameDecoder::new(Channel::Media);
        let hub: &Hub = self.hub;
        let frames = move || {
            hub.stats
                .frames_in
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let mut last_media = tokio::time::Instant::now();
        let silence = tokio::time::sleep_until(last_media + MEDIA_SILENCE);
        tokio::pin!(silence);
        loop {
            let before = frames();
            while let Some(decoded) = decoder.decode(&mut buf) {
                match decoded.and_then(|raw| MediaMessage::parse(&raw)) {
                    Ok(msg) => self.handle(msg),
                    Err(e) => client::count_error(&e),
                }
            }
            if frames() != before {
                last_media = tokio::time::Instant::now();
            }
            buf.reserve(READ_CHUNK);
            tokio::select! {
                r = stream.read_buf(&mut buf) => match r {
                    Ok(0) => return SourceExit::Failed("camera closed the media connection".into()),
                    Err(e) => return SourceExit::Failed(format!("media read failed: {e}")),
                    Ok(_) => {}
                },
                _ = &mut silence => {
                    let due = last_media + MEDIA_SILENCE;
                    if due > tokio::time::Instant::now() {
                        silence.as_mut().reset(due);
                        continue;
                    }
                    return SourceExit::NoMedia(MEDIA_SILENCE);
                }
            }
        }
    }

    fn handle(&mut self, msg: MediaMessage) {
        let m = metrics::get();
        match msg {
            MediaMessage::VideoData {
                timestamp, jpeg, ..
            } => {
                if !self.described {
                    let Some((width, height)) = jpeg::dimensions(&jpeg) else {
                        m.foscam_errors
                            .get_or_create(&label("kind", "jpeg_header"))
                            .inc();
                        debug!(len = jpeg.len(), "unreadable JPEG skipped");
                        return;
                    };
                    self.described = true;
                    self.hub.set_info(describe(width, height, self.audio));
                }
                m.foscam_frames.get_or_create(&label("kind", "video")).inc();
                let pts = i64::from(timestamp) * 900;
                self.hub.publish(Frame {
                    codec: Codec::Mjpeg,
                    pts,
                    dts: pts,
                    keyframe: true,
                    units: smallvec![Chunks::from(jpeg)],
                });
            }
            MediaMessage::AudioData {
                timestamp,
                sequence,
                format,
                data,
                ..
            } => {
                if format != 0 || !self.audio {
                    m.foscam_errors
                        .get_or_create(&label("kind", "audio_format"))
                        .inc();
                    return;
                }
                m.foscam_frames.get_or_create(&label("kind", "audio")).inc();
                self.pcm.clear();
                self.adpcm.decode(&data, &mut self.pcm);
                let alaw: Vec<u8> = self.pcm.iter().map(|&s| linear_to_alaw(s)).collect();
                let pts = self.audio_pts(sequence, timestamp, self.pcm.len());
                self.hub.publish(Frame {
                    codec: Codec::Pcma,
                    pts,
                    dts: pts,
                    keyframe: true,
                    units: smallvec![Chunks::from(Bytes::from(alaw))],
                });
            }
            other => debug!(opcode = other.opcode(), "ignored media message"),
        }
    }
}

impl MediaReader<'_> {
    /// 8 kHz pts of an audio packet: counted from the anchor by sequence,
    /// re-anchored on the camera's timestamp after a gap or a restart
    /// (more than a second off).
    fn audio_pts(&mut self, sequence: u32, timestamp: u32, samples: usize) -> i64 {
        let by_clock = i64::from(timestamp) * 80;
        if let Some((seq0, pts0)) = self.audio_anchor {
            let by_sequence = pts0 + i64::from(sequence.wrapping_sub(seq0) as i32) * samples as i64;
            if (by_sequence - by_clock).abs() <= 8000 {
                return by_sequence;
            }
        }
        self.audio_anchor = Some((sequence, by_clock));
        by_clock
    }
}

fn describe(width: u16, height: u16, audio: bool) -> StreamInfo {
    StreamInfo {
        video: Some((
            Codec::Mjpeg,
            VideoParams {
                width: width.into(),
                height: height.into(),
                ..VideoParams::default()
            },
        )),
        audio: audio.then(|| {
            (
                Codec::Pcma,
                AudioParams {
                    sample_rate: 8000,
                    channels: 1,
                    config: None,
                },
            )
        }),
        audio_decided_by: None,
    }
}
