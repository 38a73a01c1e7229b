//! `POST /api/v1/tokens`: mint a one-time RTSP hash token for one stream
//! path (China Telecom 手机看店 V1.3 §10.2 style). The answer carries the
//! token and a ready-made query suffix; the RTSP server accepts it once,
//! within `rtsp.auth.token_ttl` seconds, on a path whose mode is `token`.

use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use super::{ApiState, error};
use crate::metrics;
use crate::rtsp::tokens::random_token;
use crate::streams::StreamKey;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/tokens", post(mint))
}

#[derive(Deserialize)]
struct MintRequest {
    /// Stream path, e.g. `/gb/{device}/{channel}` or `gb/{device}/{channel}`.
    path: String,
}

async fn mint(
    State(s): State<ApiState>,
    body: Result<axum::Json<MintRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(axum::Json(req)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"path\": \"/gb/…\"}",
        );
    };
    let path = req.path.split('?').next().unwrap_or_default();
    let Some(key) = StreamKey::from_path(path) else {
        return error(StatusCode::BAD_REQUEST, "path is not a stream path");
    };
    match s.tokens.mint(key.clone(), random_token(), Instant::now()) {
        Ok(token) => {
            metrics::get().rtsp_tokens_minted.inc();
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({
                    "token": token,
                    "path": format!("/{key}"),
                    "query": format!("hashtoken={token}"),
                    "expires_in": s.tokens.ttl().as_secs_f64(),
                })),
            )
                .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
