//! Talk from a browser: `POST /api/v1/devices/{id}/channels/{ch}/talk/webrtc`
//! with an `application/sdp` offer that sends the microphone (Opus) →
//! `201 Created`, the SDP answer, and `Location:
//! /api/v1/talk/webrtc/{session}`; `DELETE` there ends the talk. WHEP-like
//! (draft-ietf-wish-whep §4.2), in the receiving direction.
//!
//! The device is asked first (GB/T 28181-2016 §9.12 voice broadcast:
//! Broadcast notify, its INVITE, our answer), so a busy or absent device
//! refuses the offer rather than a silent session; then the peer runs
//! and its audio goes to the device as PCMA until either side leaves.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use tokio::sync::mpsc;

use super::{ApiState, error, query_error};
use crate::gb28181::talk::{TalkError, TalkFeed};
use crate::metrics::{self, label};
use crate::webrtc::WhepError;
use crate::webrtc::peer::PeerError;
use crate::webrtc::talk::FEED_PACKETS;

/// SDP offers from browsers are a few kilobytes.
const MAX_OFFER_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/v1/devices/{id}/channels/{ch}/talk/webrtc",
            post(offer).layer(DefaultBodyLimit::max(MAX_OFFER_BYTES)),
        )
        .route("/api/v1/talk/webrtc/{session}", delete(hang_up))
}

fn count(outcome: &'static str) {
    metrics::get()
        .webrtc_talk_sessions
        .get_or_create(&label("outcome", outcome))
        .inc();
}

async fn offer(
    State(s): State<ApiState>,
    Path((id, ch)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !is_sdp {
        count("bad_offer");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a talk offer must be Content-Type: application/sdp",
        );
    }
    let prepared = match s.webrtc.talk_offer(&body) {
        Ok(p) => p,
        Err(e) => {
            let (outcome, status) = match &e {
                WhepError::TooMany(_) => ("too_many", StatusCode::SERVICE_UNAVAILABLE),
                WhepError::Peer(PeerError::Refused(_)) => ("no_opus", StatusCode::NOT_ACCEPTABLE),
                _ => ("bad_offer", StatusCode::BAD_REQUEST),
            };
            count(outcome);
            tracing::warn!(device = %id, channel = %ch, "talk offer refused: {e}");
            return error(status, e.to_string());
        }
    };
    let (feed, audio) = mpsc::channel(FEED_PACKETS);
    if let Err(e) = s.gb.talk_feed(&id, &ch, TalkFeed::Live(audio)).await {
        let busy = matches!(e, TalkError::Busy(_));
        count(if busy { "busy" } else { "device_error" });
        return match e {
            TalkError::Notify(e) => query_error(e),
            e @ TalkError::Busy(_) => error(StatusCode::CONFLICT, e.to_string()),
            e @ TalkError::NoCallback(_) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
            e => error(StatusCode::BAD_GATEWAY, e.to_string()),
        };
    }
    let answer = prepared.answer.clone();
    let session = s.webrtc.talk_start(prepared, feed, format!("{id}/{ch}"));
    count("ok");
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::CONTENT_TYPE, "application/sdp")
        .header(header::LOCATION, format!("/api/v1/talk/webrtc/{session}"))
        .body(Body::from(answer))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn hang_up(State(s): State<ApiState>, Path(session): Path<String>) -> Response {
    if s.webrtc.talk_stop(&session) {
        StatusCode::OK.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no talk session {session}"))
    }
}
