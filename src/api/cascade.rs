//! `GET /api/v1/cascade`: each upper platform camgate registers to, its
//! registration state, last error and counters.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::ApiState;
use crate::cascade::status::UpstreamStatus;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/cascade", get(list))
}

#[derive(serde::Serialize)]
struct CascadeView {
    upstreams: Vec<UpstreamStatus>,
}

async fn list(State(s): State<ApiState>) -> Json<CascadeView> {
    Json(CascadeView {
        upstreams: s.cascade.snapshot(Instant::now()),
    })
}
