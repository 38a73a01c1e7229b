//! `/api/v1/devices/{id}/channels/{ch}/downloads`: recording download
//! jobs (GB/T 28181-2016 §9.9) — start, progress, cancel.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{ApiState, error};
use crate::gb28181::download::{DownloadError, DownloadFormat, JobInfo};
use crate::media::datetime as gbtime;
use crate::streams::recording::PlaybackRange;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/v1/devices/{id}/channels/{ch}/downloads",
            get(list).post(start),
        )
        .route(
            "/api/v1/devices/{id}/channels/{ch}/downloads/{job}",
            get(progress).delete(cancel),
        )
}

#[derive(Debug, Deserialize)]
struct DownloadRequest {
    /// GB time `YYYY-MM-DDTHH:MM:SS`.
    start: String,
    end: String,
    /// `a=downloadspeed` factor, 1–32; default 4.
    #[serde(default = "default_speed")]
    speed: u32,
    #[serde(default)]
    format: DownloadFormat,
}

fn default_speed() -> u32 {
    4
}

async fn start(
    State(s): State<ApiState>,
    Path((id, ch)): Path<(String, String)>,
    Json(req): Json<DownloadRequest>,
) -> Response {
    let (Some(start), Some(end)) = (gbtime::parse(&req.start), gbtime::parse(&req.end)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "start and end must be YYYY-MM-DDTHH:MM:SS",
        );
    };
    if end <= start {
        return error(StatusCode::BAD_REQUEST, "end must be after start");
    }
    if s.gb.device(&id).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no device {id}"));
    }
    let config = s.gb.config();
    match s
        .gb
        .downloads
        .start(
            s.gb.clone(),
            &config.gb,
            &id,
            &ch,
            PlaybackRange { start, end },
            req.speed,
            req.format,
        )
        .await
    {
        Ok(job) => (StatusCode::CREATED, Json(job)).into_response(),
        Err(e) => {
            let status = match e {
                DownloadError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
                DownloadError::NoFfmpeg => StatusCode::NOT_IMPLEMENTED,
                DownloadError::Directory { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
}

fn of_channel(job: &JobInfo, id: &str, ch: &str) -> bool {
    job.device == id && job.channel == ch
}

async fn list(State(s): State<ApiState>, Path((id, ch)): Path<(String, String)>) -> Response {
    let jobs: Vec<JobInfo> =
        s.gb.downloads
            .list()
            .into_iter()
            .filter(|j| of_channel(j, &id, &ch))
            .collect();
    Json(serde_json::json!({ "downloads": jobs })).into_response()
}

async fn progress(
    State(s): State<ApiState>,
    Path((id, ch, job)): Path<(String, String, String)>,
) -> Response {
    match s.gb.downloads.get(&job).filter(|j| of_channel(j, &id, &ch)) {
        Some(j) => Json(j).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no download {job}")),
    }
}

async fn cancel(
    State(s): State<ApiState>,
    Path((id, ch, job)): Path<(String, String, String)>,
) -> Response {
    let known =
        s.gb.downloads
            .get(&job)
            .is_some_and(|j| of_channel(&j, &id, &ch));
    if known && s.gb.downloads.cancel(&job) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no download {job}"))
    }
}
