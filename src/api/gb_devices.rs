//! `GET /api/v1/devices/{id}/channels`: a GB28181 device's catalog as the
//! device reported it (status, parent, civil code, PTZ type). The list of
//! every device of every protocol is [`super::devices`].

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiState, error};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/devices/{id}/channels", get(list_channels))
}

async fn list_channels(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.gb.channels(&id) {
        Some(c) => axum::Json(c).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no device {id}")),
    }
}
