//! The built-in web console at `/`: devices and channels, click to play
//! over WHEP, a PTZ pad, presets (PresetQuery; call/set/delete), recording
//! search on a timeline with playback over WHEP (speed, seek, pause through
//! `POST /api/v1/webrtc/sessions/{id}/playback`), talk from the browser's
//! microphone, live streams with their viewers, and the event feed.
//!
//! One HTML file and one script, no build step, embedded in the binary
//! (`web/`). Controls whose API is absent (PTZ, events) degrade to a note.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::ApiState;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const CONSOLE_JS: &str = include_str!("../../web/console.js");

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/console.js", get(script))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CONSOLE_JS,
    )
}
