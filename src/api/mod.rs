//! HTTP API (`/api/v1/…`), Prometheus `/metrics`, and `/healthz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::gb28181::platform::GbPlatform;
use crate::metrics;
use crate::streams::Streams;

#[derive(Clone)]
pub struct ApiState {
    pub streams: Streams,
    pub gb: Arc<GbPlatform>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/streams", get(list_streams))
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/channels", get(list_channels))
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

async fn list_streams(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.streams.list())
}

async fn list_devices(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.gb.devices())
}

async fn get_device(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.gb.device(&id) {
        Some(d) => axum::Json(d).into_response(),
        None => not_found(&id),
    }
}

async fn list_channels(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.gb.channels(&id) {
        Some(c) => axum::Json(c).into_response(),
        None => not_found(&id),
    }
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "error": format!("no device {id}") })),
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
