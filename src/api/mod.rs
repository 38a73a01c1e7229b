//! HTTP API (`/api/v1/…`), Prometheus `/metrics`, and `/healthz`.
//!
//! One file per resource; each exposes `routes()` and this module merges
//! them, so adding an area never touches another's file.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::gb28181::platform::GbPlatform;
use crate::metrics;
use crate::streams::Streams;

mod console;
mod devices;
mod streams;
mod whep;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub streams: Streams,
    pub gb: Arc<GbPlatform>,
    pub webrtc: crate::webrtc::WebRtc,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .merge(devices::routes())
        .merge(streams::routes())
        .merge(whep::routes())
        .merge(console::routes())
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

async fn count_requests(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    metrics::get().http_requests.inc();
    next.run(req).await
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::get().encode(),
    )
}

/// A JSON error body with a status.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// Serve the API until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
