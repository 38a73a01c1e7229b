//! `POST /api/v1/webrtc/sessions/{id}/playback`: trick play for a WebRTC
//! viewer of a recording — `{"action":"pause"}`, `{"action":"resume"}`,
//! `{"action":"scale","scale":2}`, `{"action":"seek","seconds":30}` (from
//! the start of the played range). The same [`PlaybackControl`] the RTSP
//! server drives with PAUSE and PLAY `Scale:`/`Range:`; for GB28181 it
//! becomes a MANSRTSP INFO (GB/T 28181-2016 §9.8).
//!
//! Scoped to the WHEP session rather than the stream key: its id is
//! unguessable, like the WHEP resource URL, so whoever may DELETE a
//! session may also steer it, and no one else. Viewers of one range share
//! one device session, so a command moves every viewer of that range.
//!
//! [`PlaybackControl`]: crate::streams::PlaybackControl

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use super::{ApiState, error};
use crate::metrics::{self, label};
use crate::streams::recording::SCALES;
use crate::streams::{PlaybackCommand, StartError};

/// Furthest seek accepted: a day, the longest range a device is asked for.
const MAX_SEEK_SECONDS: f64 = 86_400.0;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/webrtc/sessions/{id}/playback", post(control))
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
enum ControlRequest {
    Pause,
    Resume,
    Scale { scale: f32 },
    Seek { seconds: f64 },
}

/// Why a control request was refused before reaching the device.
#[derive(Debug, PartialEq, thiserror::Error)]
enum ControlError {
    #[error("scale {0} is not one of 0.25, 0.5, 1, 2, 4, 8")]
    Scale(f32),
    #[error("seek to {0} s is outside 0–86400 s")]
    Seek(f64),
}

impl ControlRequest {
    fn command(&self) -> Result<PlaybackCommand, ControlError> {
        Ok(match *self {
            Self::Pause => PlaybackCommand::Pause,
            Self::Resume => PlaybackCommand::Resume,
            Self::Scale { scale } if SCALES.contains(&scale) => PlaybackCommand::Scale(scale),
            Self::Scale { scale } => return Err(ControlError::Scale(scale)),
            Self::Seek { seconds } if (0.0..=MAX_SEEK_SECONDS).contains(&seconds) => {
                PlaybackCommand::Seek(seconds)
            }
            Self::Seek { seconds } => return Err(ControlError::Seek(seconds)),
        })
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Scale { .. } => "scale",
            Self::Seek { .. } => "seek",
        }
    }
}

fn count(outcome: &'static str) {
    metrics::get()
        .webrtc_playback_commands
        .get_or_create(&label("outcome", outcome))
        .inc();
}

async fn control(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<ControlRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        count("bad_request");
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"action\": \"pause\"|\"resume\"|\"scale\"|\"seek\", \"scale\": 2, \"seconds\": 30}",
        );
    };
    let command = match req.command() {
        Ok(c) => c,
        Err(e) => {
            count("bad_request");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let Some(key) = s.webrtc.stream_of(&id) else {
        count("no_session");
        return error(StatusCode::NOT_FOUND, format!("no WebRTC session {id}"));
    };
    let Some(control) = s.streams.playback(&key) else {
        count("live");
        return error(
            StatusCode::CONFLICT,
            format!("{key} is not a recording being played back"),
        );
    };
    match control.command(command).await {
        Ok(()) => {
            count("ok");
            tracing::info!(%id, stream = %key, action = req.label(), "WebRTC playback control");
            Json(serde_json::json!({ "stream": key, "action": req.label() })).into_response()
        }
        Err(e) => {
            count("device_error");
            tracing::warn!(%id, stream = %key, action = req.label(), "playback control failed: {e}");
            let status = match e {
                StartError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                StartError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            };
            error(status, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PlaybackCommand, String> {
        serde_json::from_str::<ControlRequest>(s)
            .map_err(|e| e.to_string())?
            .command()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn requests_become_commands() {
        assert_eq!(parse(r#"{"action":"pause"}"#), Ok(PlaybackCommand::Pause));
        assert_eq!(parse(r#"{"action":"resume"}"#), Ok(PlaybackCommand::Resume));
        assert_eq!(
            parse(r#"{"action":"scale","scale":0.5}"#),
            Ok(PlaybackCommand::Scale(0.5))
        );
        assert_eq!(
            parse(r#"{"action":"seek","seconds":90}"#),
            Ok(PlaybackCommand::Seek(90.0))
        );
        assert!(parse(r#"{"action":"scale","scale":3}"#).is_err());
        assert!(parse(r#"{"action":"scale","scale":-1}"#).is_err());
        assert!(parse(r#"{"action":"seek","seconds":-1}"#).is_err());
        assert!(parse(r#"{"action":"seek","seconds":1e9}"#).is_err());
        assert!(parse(r#"{"action":"rewind"}"#).is_err());
        assert!(parse(r#"{"action":"scale"}"#).is_err());
    }
}
