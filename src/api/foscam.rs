//! Foscam cameras over HTTP: status, alarm events, PTZ, talk, and the
//! browser-friendly egress — an MJPEG stream (`multipart/x-mixed-replace`,
//! one JPEG per part, as browsers render in an `<img>`) and snapshots.
//!
//! The stream and snapshot open a viewer through [`crate::streams`], so
//! the camera's video starts on demand and stops after `idle_timeout`
//! exactly as for RTSP viewers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{ApiState, error};
use crate::foscam::FoscamCamera;
use crate::foscam::ptz::{PtzAction, decoder_code};
use crate::media::frame::{Codec, Frame};
use crate::media::hub::Subscription;
use crate::metrics::{self, label};
use crate::streams::{StartError, StreamKey};

const BOUNDARY: &str = "camgateframe";
/// How long a snapshot waits for the first JPEG.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// Longest talk body: 60 s of 8 kHz s16le.
const MAX_TALK_BYTES: usize = 60 * 8000 * 2;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/foscam", get(list))
        .route("/api/v1/foscam/{name}", get(show))
        .route("/api/v1/foscam/{name}/events", get(events))
        .route("/api/v1/foscam/{name}/ptz", post(ptz))
        .route("/api/v1/foscam/{name}/talk", post(talk))
        .route("/mjpeg/foscam/{name}", get(mjpeg))
        .route("/snapshot/foscam/{file}", get(snapshot))
}

#[derive(serde::Serialize)]
struct CameraView {
    name: String,
    host: String,
    port: u16,
    status: crate::foscam::CameraStatus,
    rtsp_path: String,
}

fn view(c: &FoscamCamera) -> CameraView {
    CameraView {
        name: c.name().to_owned(),
        host: c.config.host.clone(),
        port: c.config.port,
        status: c.status(),
        rtsp_path: format!("/foscam/{}", c.name()),
    }
}

/// No camera of that name; answers 404.
struct UnknownCamera(String);

impl IntoResponse for UnknownCamera {
    fn into_response(self) -> Response {
        error(
            StatusCode::NOT_FOUND,
            format!("no Foscam camera {:?}", self.0),
        )
    }
}

fn camera(s: &ApiState, name: &str) -> Result<Arc<FoscamCamera>, UnknownCamera> {
    s.foscam
        .camera(name)
        .cloned()
        .ok_or_else(|| UnknownCamera(name.to_owned()))
}

async fn list(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.foscam.cameras().map(|c| view(c)).collect::<Vec<_>>())
}

async fn show(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match camera(&s, &name) {
        Ok(c) => axum::Json(view(&c)).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn events(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match camera(&s, &name) {
        Ok(c) => axum::Json(c.events.list()).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct PtzRequest {
    action: PtzAction,
    /// Accepted for the shape shared with GB28181 PTZ; the Foscam
    /// protocol has no speed, so it is ignored.
    #[serde(default)]
    #[allow(dead_code)]
    speed: Option<u8>,
    #[serde(default)]
    preset: Option<u8>,
}

async fn ptz(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    axum::Json(req): axum::Json<PtzRequest>,
) -> Response {
    let c = match camera(&s, &name) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let code = match decoder_code(req.action, req.preset, c.config.swap_pan) {
        Ok(code) => code,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match c.decoder_control(code).await {
        Ok(()) => {
            info!(camera = %name, action = ?req.action, code, "PTZ");
            axum::Json(serde_json::json!({ "code": code })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Body: raw PCM, signed 16-bit little-endian, 8 kHz mono.
async fn talk(State(s): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Response {
    let c = match camera(&s, &name) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if body.len() > MAX_TALK_BYTES || !body.len().is_multiple_of(2) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("body must be s16le 8 kHz PCM, an even length up to {MAX_TALK_BYTES} bytes"),
        );
    }
    let pcm: Vec<i16> = body
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    match c.talk(&pcm).await {
        Ok(packets) => {
            info!(camera = %name, packets, "talk sent");
            axum::Json(serde_json::json!({ "packets": packets, "samples": pcm.len() }))
                .into_response()
        }
        Err(e) => start_error(&e),
    }
}

fn start_error(e: &StartError) -> Response {
    let status = match e {
        StartError::NotFound(_) => StatusCode::NOT_FOUND,
        StartError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        // The camera refused the gateway's own credentials: a gateway
        // problem for the client, not a challenge to answer.
        StartError::Unauthorized(_) | StartError::Rejected { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

fn key(name: &str) -> Option<StreamKey> {
    StreamKey::from_path(&format!("foscam/{name}"))
}

/// `GET /mjpeg/foscam/{name}`: every JPEG of the stream as one part.
/// The stream's `rtsp.auth` path rule applies ([`super::stream_access`]).
async fn mjpeg(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(key) = key(&name) else {
        return error(StatusCode::NOT_FOUND, "bad camera name");
    };
    if let Some(refused) =
        super::stream_access::refuse(&s, &key, &headers, query.as_deref(), "mjpeg")
    {
        return refused;
    }
    let viewer = match s.streams.open(&key).await {
        Ok(v) => v,
        Err(e) => {
            warn!(stream = %key, "MJPEG viewer refused: {e}");
            return start_error(&e);
        }
    };
    let silence_limit = s.gb.config().media.rtp_timeout;
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        // The viewer lives as long as the HTTP client reads and the
        // camera keeps sending pictures.
        if mjpeg_parts(viewer.subscribe(), tx, silence_limit).await == MjpegEnd::NoMedia {
            metrics::get()
                .foscam_errors
                .get_or_create(&label("kind", "viewer_no_media"))
                .inc();
            info!(stream = %key, ?silence_limit, "MJPEG viewer ended: no picture from the camera");
        }
        drop(viewer);
    });
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(ChannelStream(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Why an MJPEG response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MjpegEnd {
    /// The client went, or the stream ended.
    Closed,
    /// No JPEG for `media.rtp_timeout`.
    NoMedia,
}

/// Send each JPEG of `sub` as a multipart part until the stream ends, the
/// client goes, or no JPEG came for `silence_limit`. The client's
/// departure (the body, and with it the receiver, dropped) is noticed at
/// once, not at the next frame: a camera that stalls must not keep a
/// departed viewer — and so its stream — alive. The silence deadline is
/// one timer, set from the last JPEG (issue 13: a timeout re-created on
/// each loop turn never fires while anything else wakes the loop), so a
/// stalled camera does not hold the response open forever either.
async fn mjpeg_parts(
    mut sub: Subscription,
    tx: mpsc::Sender<Bytes>,
    silence_limit: Duration,
) -> MjpegEnd {
    let silence = tokio::time::sleep(silence_limit);
    tokio::pin!(silence);
    loop {
        let frame = tokio::select! {
            _ = tx.closed() => return MjpegEnd::Closed,
            () = &mut silence => return MjpegEnd::NoMedia,
            f = sub.recv() => match f {
                Ok(f) => f,
                Err(_) => return MjpegEnd::Closed,
            },
        };
        // Audio frames and anything else are not a picture.
        let Some(jpeg) = jpeg_of(&frame) else {
            continue;
        };
        silence
            .as_mut()
            .reset(tokio::time::Instant::now() + silence_limit);
        let head = format!(
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        for part in [Bytes::from(head), jpeg, Bytes::from_static(b"\r\n")] {
            if tx.send(part).await.is_err() {
                return MjpegEnd::Closed;
            }
        }
    }
}

fn jpeg_of(frame: &Frame) -> Option<Bytes> {
    (frame.codec == Codec::Mjpeg)
        .then(|| frame.units.first().map(|u| u.to_bytes()))
        .flatten()
}

/// `GET /snapshot/foscam/{name}.jpg`: the latest JPEG, under the same
/// path rule as the stream.
async fn snapshot(
    State(s): State<ApiState>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(key) = file.strip_suffix(".jpg").and_then(key) else {
        return error(
            StatusCode::NOT_FOUND,
            "expected /snapshot/foscam/{name}.jpg",
        );
    };
    if let Some(refused) =
        super::stream_access::refuse(&s, &key, &headers, query.as_deref(), "snapshot")
    {
        return refused;
    }
    let viewer = match s.streams.open(&key).await {
        Ok(v) => v,
        Err(e) => return start_error(&e),
    };
    let mut sub = viewer.subscribe();
    let first = tokio::time::timeout(SNAPSHOT_WAIT, async {
        while let Ok(frame) = sub.recv().await {
            if let Some(jpeg) = jpeg_of(&frame) {
                return Some(jpeg);
            }
        }
        None
    })
    .await;
    match first {
        Ok(Some(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            jpeg,
        )
            .into_response(),
        _ => error(StatusCode::GATEWAY_TIMEOUT, "no image from the camera"),
    }
}

/// A receiver as a body stream, so a slow client backs up the channel and
/// never the hub (the hub's own lag handling drops frames for it).
struct ChannelStream(mpsc::Receiver<Bytes>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|b| b.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::hub::{Hub, HubConfig};

    /// Issue 13: with the camera stalled (no frame ever published), a
    /// client that goes away must still end the viewer's task.
    #[tokio::test(start_paused = true)]
    async fn a_departed_client_ends_the_viewer_while_the_camera_is_silent() {
        let hub = Hub::new(HubConfig::default());
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let task = tokio::spawn(mjpeg_parts(hub.subscribe(), tx, Duration::from_secs(600)));
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        drop(rx);
        // Paused time: were the task stuck, the clock would jump to the
        // timeout at once and this would fail.
        let end = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the viewer task ends when its client goes")
            .unwrap();
        assert_eq!(end, MjpegEnd::Closed);
    }

    fn jpeg(pts: i64) -> Frame {
        Frame {
            codec: Codec::Mjpeg,
            pts,
            dts: pts,
            keyframe: true,
            units: [crate::media::frame::Chunks::from(Bytes::from_static(
                b"\xff\xd8jpeg\xff\xd9",
            ))]
            .into_iter()
            .collect(),
        }
    }

    /// Issue 13: a camera that stops sending pictures ends the response
    /// `silence_limit` after its last JPEG — measured from that JPEG, not
    /// from the response's start, and not postponed by non-picture frames.
    #[tokio::test(start_paused = true)]
    async fn a_silent_camera_ends_the_response_after_the_limit_from_its_last_jpeg() {
        let limit = Duration::from_secs(5);
        let hub = Hub::new(HubConfig::default());
        let (tx, mut rx) = mpsc::channel::<Bytes>(64);
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(mjpeg_parts(hub.subscribe(), tx, limit));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        hub.publish(jpeg(0));
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Audio after the last picture does not keep the response alive.
        hub.publish(Frame {
            codec: Codec::Pcma,
            ..jpeg(1)
        });
        let end = task.await.unwrap();
        assert_eq!(end, MjpegEnd::NoMedia);
        assert_eq!(start.elapsed(), Duration::from_secs(3) + limit);
        let mut parts = 0;
        while rx.try_recv().is_ok() {
            parts += 1;
        }
        assert_eq!(parts, 3, "one JPEG sent as head, image, tail");
    }
}
