//! `POST /api/v1/devices/{id}/channels/{ch}/talk`: play an upload through
//! the channel's speaker (GB/T 28181-2016 §9.12 voice broadcast). The body
//! is a WAV file (PCM 16-bit mono 8 kHz) or raw s16le at 8 kHz; it is
//! encoded to G.711 A-law and streamed once the device calls back.
//! Answers 202 when the device has accepted, 409 while the channel is busy.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{ApiState, error, query_error};
use crate::gb28181::talk::TalkError;
use crate::media::audio::{g711, wav};
use crate::metrics::{self, label};

pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/api/v1/devices/{id}/channels/{ch}/talk",
        post(talk).layer(DefaultBodyLimit::max(wav::MAX_BYTES)),
    )
}

async fn talk(
    State(s): State<ApiState>,
    Path((id, ch)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let pcm = match wav::read_pcm(&body) {
        Ok(p) => p,
        Err(e) => {
            metrics::get()
                .gb_talk_sessions
                .get_or_create(&label("outcome", e.kind()))
                .inc();
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
        }
    };
    let alaw = g711::encode(&pcm);
    match s.gb.talk(&id, &ch, alaw).await {
        Ok(started) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        Err(TalkError::Notify(e)) => query_error(e),
        Err(e @ TalkError::Busy(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ TalkError::NoCallback(_)) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
