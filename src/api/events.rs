//! `GET /api/v1/events` (the ring, `?since=SEQ&limit=N`) and
//! `GET /api/v1/events/stream` (Server-Sent Events, one `event: alarm` …
//! per device event; `Last-Event-ID` resumes from the ring).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::ApiState;
use crate::gb28181::events::{Event, EventKind};
use crate::gb28181::platform::lock;

/// Most events returned by one `GET /api/v1/events`.
const MAX_LIMIT: usize = 1000;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/events", get(list))
        .route("/api/v1/events/stream", get(stream_events))
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

async fn list(State(s): State<ApiState>, Query(p): Query<Page>) -> Response {
    let limit = p.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
    let events = lock(&s.gb.events).since(p.since, limit);
    Json(events).into_response()
}

fn to_sse(e: &Event) -> SseEvent {
    let name = match e.kind {
        EventKind::Alarm(_) => "alarm",
        EventKind::MediaEnd { .. } => "media_end",
        EventKind::CameraAlarm { .. } => "camera_alarm",
        EventKind::Cluster { .. } => "cluster",
    };
    SseEvent::default()
        .id(e.seq.to_string())
        .event(name)
        .data(serde_json::to_string(e).unwrap_or_default())
}

async fn stream_events(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before reading the ring so nothing falls between them.
    let rx = s.gb.event_tx.subscribe();
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let backlog = since
        .map(|since| lock(&s.gb.events).since(since, MAX_LIMIT))
        .unwrap_or_default();
    let last = backlog.last().map_or(since.unwrap_or(0), |e| e.seq);
    let live = stream::unfold((rx, last), |(mut rx, last)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if e.seq <= last => continue,
                Ok(e) => {
                    let seq = e.seq;
                    return Some((Ok(to_sse(&e)), (rx, seq)));
                }
                // A slow client missed some; it can fetch them from the
                // ring by seq, so carry on with the newest.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let backlog = stream::iter(backlog.into_iter().map(|e| Ok(to_sse(&e))));
    Sse::new(backlog.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
