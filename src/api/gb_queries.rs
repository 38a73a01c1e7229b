//! `/api/v1/devices/{id}/…` queries: status, configuration, catalog
//! refresh, recordings (GB/T 28181-2016 §9.5, A.2.4), and removing a device.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::{ApiState, error, query_error};
use crate::media::datetime as gbtime;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/devices/{id}/status", get(status))
        .route("/api/v1/devices/{id}/config", get(config))
        .route("/api/v1/devices/{id}/catalog", post(refresh_catalog))
        .route("/api/v1/devices/{id}/channels/{ch}/records", get(records))
        .route("/api/v1/devices/{id}", delete(remove))
}

async fn status(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.gb.query_status(&id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => query_error(e),
    }
}

async fn config(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.gb.query_config(&id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => query_error(e),
    }
}

async fn refresh_catalog(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.gb.query_catalog(&id).await {
        Ok(done) => Json(serde_json::json!({
            "sum_num": done.sum_num,
            "received": done.items.len(),
            "partial": done.partial,
            "channels": done.items.iter().map(|i| &i.device_id).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => query_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct Range {
    start: String,
    end: String,
}

async fn records(
    State(s): State<ApiState>,
    Path((id, ch)): Path<(String, String)>,
    Query(range): Query<Range>,
) -> Response {
    let (Some(start), Some(end)) = (gbtime::parse(&range.start), gbtime::parse(&range.end)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "start and end must be YYYY-MM-DDTHH:MM:SS",
        );
    };
    if end <= start {
        return error(StatusCode::BAD_REQUEST, "end must be after start");
    }
    match s
        .gb
        .query_records(&id, &ch, &gbtime::format(start), &gbtime::format(end))
        .await
    {
        Ok(done) => Json(serde_json::json!({
            "sum_num": done.sum_num,
            "partial": done.partial,
            "records": done.items,
        }))
        .into_response(),
        Err(e) => query_error(e),
    }
}

async fn remove(State(s): State<ApiState>, Path(id): Path<String>) -> impl IntoResponse {
    if s.gb.remove_device(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no device {id}"))
    }
}
