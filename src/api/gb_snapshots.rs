//! Snapshots (GB/T 28181-2022 §9.14): request them of a channel, receive
//! the device's uploads, fetch the images.
//!
//! - `POST /api/v1/devices/{id}/channels/{ch}/snapshot` `{count, interval}`
//! - `POST /api/v1/snapshots/upload/{session}` — the device's upload (JPEG)
//! - `GET /api/v1/snapshots/{session}` — status and image URLs
//! - `GET /api/v1/snapshots/{session}/{n}.jpg`

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ApiState, error, query_error};
use crate::gb28181::snapshot::{MAX_IMAGE_BYTES, SnapshotError, SnapshotSession};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/devices/{id}/channels/{ch}/snapshot", post(request))
        .route(
            "/api/v1/snapshots/upload/{session}",
            post(upload).layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES)),
        )
        .route("/api/v1/snapshots/{session}", get(status))
        .route("/api/v1/snapshots/{session}/{file}", get(image))
}

#[derive(Debug, Deserialize)]
struct SnapshotRequest {
    /// 1–10; default 1.
    #[serde(default = "one")]
    count: u32,
    /// Seconds between images; default 1.
    #[serde(default = "one")]
    interval: u32,
}

fn one() -> u32 {
    1
}

fn describe(s: &SnapshotSession) -> serde_json::Value {
    let images: Vec<String> = (1..=s.images.len())
        .map(|n| format!("/api/v1/snapshots/{}/{n}.jpg", s.session))
        .collect();
    serde_json::json!({
        "session": s.session,
        "device": s.device,
        "channel": s.channel,
        "requested": s.requested,
        "interval": s.interval,
        "received": s.images.len(),
        "finished": s.finished,
        "device_files": s.device_files,
        "images": images,
    })
}

async fn request(
    State(s): State<ApiState>,
    Path((id, ch)): Path<(String, String)>,
    Json(req): Json<SnapshotRequest>,
) -> Response {
    match s
        .gb
        .request_snapshot(&id, &ch, req.count, req.interval)
        .await
    {
        Ok(session) => (StatusCode::ACCEPTED, Json(describe(&session))).into_response(),
        Err(e) => query_error(e),
    }
}

async fn upload(State(s): State<ApiState>, Path(session): Path<String>, body: Bytes) -> Response {
    match s.gb.snapshots.store(&session, body) {
        Ok(n) => Json(serde_json::json!({ "image": n })).into_response(),
        Err(e) => {
            let status = match e {
                SnapshotError::UnknownSession(_) => StatusCode::NOT_FOUND,
                SnapshotError::Full { .. } => StatusCode::CONFLICT,
                SnapshotError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                SnapshotError::NotJpeg => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            };
            error(status, e.to_string())
        }
    }
}

async fn status(State(s): State<ApiState>, Path(session): Path<String>) -> Response {
    match s.gb.snapshots.get(&session) {
        Some(snap) => Json(describe(&snap)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no snapshot session {session}"),
        ),
    }
}

async fn image(
    State(s): State<ApiState>,
    Path((session, file)): Path<(String, String)>,
) -> Response {
    let n = file
        .strip_suffix(".jpg")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1);
    let found = n.and_then(|n| {
        s.gb.snapshots
            .get(&session)
            .and_then(|snap| snap.images.get(n - 1).cloned())
    });
    match found {
        Some(jpeg) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no image {file} in {session}"),
        ),
    }
}
