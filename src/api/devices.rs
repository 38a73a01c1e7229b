//! `/api/v1/devices`: registered GB28181 devices and their channels.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiState, error};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/channels", get(list_channels))
}

async fn list_devices(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.gb.devices())
}

async fn get_device(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.gb.device(&id) {
        Some(d) => axum::Json(d).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no device {id}")),
    }
}

async fn list_channels(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.gb.channels(&id) {
        Some(c) => axum::Json(c).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no device {id}")),
    }
}
