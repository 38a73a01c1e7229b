//! WHEP (draft-ietf-wish-whep): `POST /whep/{stream path}` with an SDP
//! offer creates a viewer (201, SDP answer, `Location` of the session
//! resource); `DELETE` on the resource ends it. The server is ICE-lite with
//! every candidate in the answer, so trickle ICE is not offered: PATCH on a
//! resource answers 405 (§4.3 allows that). CORS is open so the console —
//! or any page — can play from another origin.
//!
//! The POST obeys `rtsp.auth` (see [`crate::webrtc::whep_auth`]): a
//! protected path wants `Authorization: Bearer <one-time token>` and
//! answers 401 with `WWW-Authenticate` without it. The resource URL holds
//! the session's unguessable id, which is what authorises DELETE.
//! `?start=…&end=…` on the path plays a recording, as on RTSP.
//!
//! Also `GET /api/v1/webrtc/sessions`: the live WHEP sessions.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{ApiState, error};
use crate::metrics::{self, label};
use crate::streams::{StartError, StreamKey};
use crate::transcode::TranscodeError;
use crate::webrtc::WhepError;
use crate::webrtc::peer::PeerError;

/// SDP offers from browsers are a few kilobytes.
const MAX_OFFER_BYTES: usize = 64 * 1024;

const RESOURCE_PREFIX: &str = "/whep/resource/";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/whep/{*path}", post(offer).options(preflight))
        .route(
            "/whep/resource/{id}",
            axum::routing::delete(delete_session)
                .patch(no_trickle)
                .options(preflight),
        )
        .route("/api/v1/webrtc/sessions", get(list_sessions))
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(axum::middleware::from_fn(cors))
}

/// Browsers may call WHEP from any page; the headers WHEP clients read
/// must be exposed to scripts.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, WWW-Authenticate"),
    );
    resp
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "POST, DELETE, PATCH, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Content-Type, Authorization, If-Match",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
            (
                header::HeaderName::from_static("accept-post"),
                "application/sdp",
            ),
        ],
    )
        .into_response()
}

fn status_of(e: &WhepError) -> StatusCode {
    match e {
        WhepError::Start(StartError::NotFound(_)) => StatusCode::NOT_FOUND,
        WhepError::Start(StartError::Offline(_) | StartError::NoPort) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        WhepError::Start(StartError::Timeout(_)) | WhepError::NotDescribed => {
            StatusCode::GATEWAY_TIMEOUT
        }
        // The camera refused the gateway's own credentials: not the
        // browser's to fix, so not a 401.
        WhepError::Start(
            StartError::Rejected { .. } | StartError::Failed(_) | StartError::Unauthorized(_),
        ) => StatusCode::BAD_GATEWAY,
        WhepError::Peer(PeerError::BadOffer(_) | PeerError::Refused(_)) => StatusCode::BAD_REQUEST,
        WhepError::Peer(PeerError::NoCodec) => StatusCode::NOT_ACCEPTABLE,
        WhepError::Peer(PeerError::SourceCodec(_)) => StatusCode::NOT_IMPLEMENTED,
        WhepError::Peer(_) => StatusCode::INTERNAL_SERVER_ERROR,
        WhepError::TooMany(_) => StatusCode::SERVICE_UNAVAILABLE,
        WhepError::Transcode(e) => transcode_status(e),
    }
}

/// A transcode that cannot run here (disabled, no ffmpeg) is 501 like any
/// codec the gateway cannot serve; one the camera's stream broke is the
/// upstream's fault.
fn transcode_status(e: &TranscodeError) -> StatusCode {
    match e {
        TranscodeError::Disabled
        | TranscodeError::Unsupported(_)
        | TranscodeError::DecoderStart { .. } => StatusCode::NOT_IMPLEMENTED,
        TranscodeError::TooMany(_) | TranscodeError::Thread(_) => StatusCode::SERVICE_UNAVAILABLE,
        TranscodeError::NoOutput(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

async fn offer(
    State(s): State<ApiState>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !is_sdp {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHEP offer must be Content-Type: application/sdp",
        );
    }
    let Some(key) = StreamKey::from_path_and_query(&path, query.as_deref()) else {
        return error(StatusCode::NOT_FOUND, format!("no stream at /whep/{path}"));
    };
    // Cluster: another node holds the device. 307 keeps the method and
    // the SDP body (RFC 9110 §15.4.8); the owner applies its own access
    // rules, since tokens are minted per node.
    if let Some(owner) = s.streams.remote_owner(&key) {
        crate::metrics::get()
            .cluster_redirects
            .get_or_create(&crate::metrics::label("kind", "whep"))
            .inc();
        let mut location = format!("http://{}/whep/{path}", owner.http);
        if let Some(q) = &query {
            location.push('?');
            location.push_str(q);
        }
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    if let Some(refused) = refuse(&s, &key, &headers, query.as_deref()) {
        return refused;
    }
    match s.webrtc.play(&s.streams, key, &body).await {
        Ok(session) => Response::builder()
            .status(StatusCode::CREATED)
            .header(header::CONTENT_TYPE, "application/sdp")
            .header(header::LOCATION, format!("{RESOURCE_PREFIX}{}", session.id))
            .header(header::ETAG, format!("\"{}\"", session.id))
            .body(Body::from(session.answer))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => error(status_of(&e), e.to_string()),
    }
}

/// Apply the RTSP path rules to a WHEP offer (see
/// [`super::stream_access`]): the 401/403 to send, if refused.
fn refuse(
    s: &ApiState,
    key: &StreamKey,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Response> {
    let resp = super::stream_access::refuse(s, key, headers, query, "whep")?;
    let outcome = if resp.status() == StatusCode::FORBIDDEN {
        "forbidden"
    } else {
        "unauthorized"
    };
    metrics::get()
        .webrtc_sessions
        .get_or_create(&label("outcome", outcome))
        .inc();
    tracing::warn!(stream = %key, outcome, "WHEP offer refused");
    Some(resp)
}

async fn delete_session(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    if s.webrtc.stop(&id) {
        StatusCode::OK.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no WHEP session {id}"))
    }
}

async fn no_trickle(method: Method) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "DELETE, OPTIONS")],
        format!("{method} not supported: the server is ICE-lite and lists every candidate in the answer\n"),
    )
        .into_response()
}

async fn list_sessions(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.webrtc.sessions())
}
