//! `/api/v1/streams`: running streams with their viewers and bit rate.

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/streams", get(list_streams))
}

async fn list_streams(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.streams.list())
}
