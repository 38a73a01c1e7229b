//! HTTP API (`/api/v1/…`), Prometheus `/metrics`, `/healthz` (liveness)
//! and `/readyz` (readiness, see [`crate::health`]).
//!
//! One file per resource; each exposes `routes()` and this module merges
//! them, so adding an area never touches another's file.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::gb28181::platform::GbPlatform;
use crate::health::Health;
use crate::metrics;
use crate::streams::Streams;
use crate::streams::directory::DeviceDirectory;

pub mod access;
mod cascade;
mod cluster_forward;
mod console;
pub mod cors;
mod ctel;
mod devices;
mod events;
mod foscam;
mod gb_control;
mod gb_devices;
mod gb_downloads;
mod gb_queries;
mod gb_snapshots;
mod gb_talk;
mod gb_talk_webrtc;
pub mod http_errors;
mod limited_listener;
mod openapi;
mod serve;
pub mod stream_access;
mod streams;
mod tokens;
mod webrtc_playback;
mod whep;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub streams: Streams,
    pub gb: Arc<GbPlatform>,
    pub health: Health,
    /// One-time RTSP tokens, shared with the RTSP server.
    pub tokens: Arc<crate::rtsp::tokens::TokenStore>,
    /// Telecom devices; `None` when the `ctel` section is disabled.
    pub ctel: Option<Arc<crate::ctel::platform::CtelPlatform>>,
    pub foscam: Arc<crate::foscam::FoscamSources>,
    pub webrtc: crate::webrtc::WebRtc,
    /// WHEP access control: the RTSP path rules and token store.
    pub whep_auth: Arc<crate::webrtc::whep_auth::WhepAuth>,
    /// Every adapter's device list, for `GET /api/v1/devices`.
    pub directories: Arc<[Arc<dyn DeviceDirectory>]>,
    /// The ports viewers reach, for the play URLs the API hands out.
    pub ports: Ports,
    /// Cross-origin and private-network access.
    pub cors: Arc<cors::CorsPolicy>,
    /// `http.auth`: who may use the API ([`access`]).
    pub access: Arc<access::ApiAccess>,
    /// Cluster: device requests for another node's devices are forwarded.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Upper platforms registered to (`cascade.upstreams`).
    pub cascade: crate::cascade::status::StatusBoard,
}

/// The listening ports as bound (a configured 0 becomes the real port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub http: u16,
    pub rtsp: u16,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(devices::routes())
        .merge(gb_devices::routes())
        .merge(streams::routes())
        .merge(gb_control::routes())
        .merge(gb_queries::routes())
        .merge(events::routes())
        .merge(gb_downloads::routes())
        .merge(gb_snapshots::routes())
        .merge(gb_talk::routes())
        .merge(gb_talk_webrtc::routes())
        .merge(openapi::routes())
        .merge(tokens::routes())
        .merge(ctel::routes())
        .merge(cascade::routes())
        .merge(foscam::routes())
        .merge(whep::routes())
        .merge(webrtc_playback::routes())
        .merge(console::routes())
        // Inside `authorize`: the entry node checks the client first.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster_forward::forward,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .layer(axum::middleware::from_fn(count_requests))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::cors,
        ))
        .with_state(state)
}

/// `http.auth` in front of every route ([`access::door`] decides which
/// rule applies), so no handler can forget it.
async fn authorize(
    State(s): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    // A request another node forwarded with the cluster secret was
    // authorized there.
    if let Some(cluster) = &s.cluster
        && req
            .headers()
            .get(crate::cluster::forward::SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| cluster.is_secret(v))
    {
        return next.run(req).await;
    }
    let door = access::door(req.method().as_str(), path);
    let presented = access::Presented {
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        access_token: (path == access::EVENT_STREAM_PATH)
            .then(|| access::access_token(req.uri().query()))
            .flatten(),
    };
    let error = match s.access.check(door, presented) {
        Ok(_) => return next.run(req).await,
        Err(e) => e,
    };
    metrics::get()
        .http_auth_failures
        .get_or_create(&metrics::label("reason", error.reason()))
        .inc();
    // Counted above; debug only, as anyone can send these.
    tracing::debug!(method = %req.method(), path, reason = error.reason(), "API request refused");
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut resp = self::error(status, error.to_string());
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = header::HeaderValue::from_str(&s.access.challenge(error))
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

async fn count_requests(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    metrics::get().http_requests.inc();
    let response = next.run(req).await;
    if let Some(kind) = http_errors::kind(response.status()) {
        metrics::get()
            .http_errors
            .get_or_create(&metrics::label("kind", kind))
            .inc();
    }
    response
}

async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    refresh_device_series(&s);
    // Leak gauges, read at scrape time (scripts/soak compares them).
    let m = metrics::get();
    m.sip_dialogs.set(s.gb.sip.dialog_count() as i64);
    m.tokio_tasks.set(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as i64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::get().encode(),
    )
}

/// 200 `ready`, or 503 with the reasons, one per line.
async fn readyz(State(s): State<ApiState>) -> Response {
    match s.health.readiness() {
        // Cluster: Redis down still serves what this node owns, so the
        // pod stays in its Services; the text tells operators why the
        // shared view may be stale.
        Ok(()) if !s.health.degraded().is_empty() => (
            StatusCode::OK,
            format!("degraded: {}\n", s.health.degraded().join(", ")),
        )
            .into_response(),
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join(", ")),
        )
            .into_response(),
    }
}

/// Per-device series are rebuilt from the registry at scrape time, so a
/// device that went away leaves no stale series behind.
fn refresh_device_series(s: &ApiState) {
    let family = &metrics::get().device_online;
    family.clear();
    if !s.gb.config().metrics.per_device_labels {
        return;
    }
    for device in s.gb.devices() {
        family
            .get_or_create(&[("device", device.id)])
            .set(i64::from(device.online));
    }
}

/// A JSON error body with a status.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// A failed device query as an HTTP answer.
pub(crate) fn query_error(e: crate::gb28181::exchanges::QueryError) -> Response {
    use crate::gb28181::exchanges::QueryError as Q;
    let status = match &e {
        Q::UnknownDevice(_) => StatusCode::NOT_FOUND,
        Q::Offline(_) | Q::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Q::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Q::Send(_) | Q::Refused(_) | Q::Failed(_) => StatusCode::BAD_GATEWAY,
        Q::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

/// Serve the API until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.gb.config().limits.clone();
    let listener = limited_listener::LimitedListener::new(listener, limits.max_connections_per_ip);
    serve::serve_http(listener, router(state), limits.request_timeout, shutdown).await
}
