//! `/api/v1/devices/{id}/…` control: PTZ, presets and other DeviceControl
//! commands (GB/T 28181-2016 §9.3, A.2.3).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use super::{ApiState, error, query_error};
use crate::gb28181::control::DeviceControl;
use crate::gb28181::ptz::{Direction, PtzCommand};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/devices/{id}/channels/{ch}/ptz", post(ptz))
        .route(
            "/api/v1/devices/{id}/channels/{ch}/presets",
            post(preset).get(list_presets),
        )
        .route("/api/v1/devices/{id}/control", post(device_control))
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum PtzAction {
    Up,
    Down,
    Left,
    Right,
    UpLeft,
    UpRight,
    DownLeft,
    DownRight,
    ZoomIn,
    ZoomOut,
    FocusNear,
    FocusFar,
    IrisOpen,
    IrisClose,
    Stop,
}

#[derive(Debug, Deserialize)]
pub struct PtzRequest {
    pub action: PtzAction,
    /// 0–255 (zoom: 0–15); default 128.
    #[serde(default = "default_speed")]
    pub speed: u8,
    /// The PTZ word's address; default 0.
    #[serde(default)]
    pub address: u16,
}

fn default_speed() -> u8 {
    0x80
}

impl PtzRequest {
    pub fn command(&self) -> PtzCommand {
        let speed = self.speed;
        let mv = |direction| PtzCommand::Move { direction, speed };
        match self.action {
            PtzAction::Up => mv(Direction::Up),
            PtzAction::Down => mv(Direction::Down),
            PtzAction::Left => mv(Direction::Left),
            PtzAction::Right => mv(Direction::Right),
            PtzAction::UpLeft => mv(Direction::UpLeft),
            PtzAction::UpRight => mv(Direction::UpRight),
            PtzAction::DownLeft => mv(Direction::DownLeft),
            PtzAction::DownRight => mv(Direction::DownRight),
            // The zoom speed has four bits; scale 0–255 down to 0–15.
            PtzAction::ZoomIn => PtzCommand::ZoomIn { speed: speed >> 4 },
            PtzAction::ZoomOut => PtzCommand::ZoomOut { speed: speed >> 4 },
            PtzAction::FocusNear => PtzCommand::FocusNear { speed },
            PtzAction::FocusFar => PtzCommand::FocusFar { speed },
            PtzAction::IrisOpen => PtzCommand::IrisOpen { speed },
            PtzAction::IrisClose => PtzCommand::IrisClose { speed },
            PtzAction::Stop => PtzCommand::Stop,
        }
    }
}

async fn ptz(
    State(s): State<ApiState>,
    Path((id, ch)): Path<(String, String)>,
    Json(req): Json<PtzRequest>,
) -> Response {
    let command = req.command();
    let control = DeviceControl::Ptz {
        command,
        address: req.address,
    };
    match s.gb.control(&id, &ch, &control).await {
        Ok(_) => Json(serde_json::json!({
            "ptz_cmd": command.to_hex(req.address),
        }))
        .into_response(),
        Err(e) => query_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PresetAction {
    Set,
    Call,
    Delete,
}

#[derive(Debug, Deserialize)]
struct PresetRequest {
    action: PresetAction,
    /// 1–255.
    preset: u8,
    #[serde(default)]
    address: u16,
}

async fn preset(
    State(s): State<ApiState>,
    Path((id, ch)): Path<(String, String)>,
    Json(req): Json<PresetRequest>,
) -> Response {
    if req.preset == 0 {
        return error(StatusCode::BAD_REQUEST, "preset numbers start at 1");
    }
    let command = match req.action {
        PresetAction::Set => PtzCommand::PresetSet(req.preset),
        PresetAction::Call => PtzCommand::PresetCall(req.preset),
        PresetAction::Delete => PtzCommand::PresetDelete(req.preset),
    };
    let control = DeviceControl::Ptz {
        command,
        address: req.address,
    };
    match s.gb.control(&id, &ch, &control).await {
        Ok(_) => {
            Json(serde_json::json!({ "ptz_cmd": command.to_hex(req.address) })).into_response()
        }
        Err(e) => query_error(e),
    }
}

async fn list_presets(
    State(s): State<ApiState>,
    Path((id, ch)): Path<(String, String)>,
) -> Response {
    match s.gb.query_presets(&id, &ch).await {
        Ok(done) => Json(serde_json::json!({
            "presets": done.items,
            "partial": done.partial,
        }))
        .into_response(),
        Err(e) => query_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum ControlRequest {
    TeleBoot,
    RecordStart {
        channel: String,
    },
    RecordStop {
        channel: String,
    },
    GuardSet,
    GuardReset,
    AlarmReset {
        #[serde(default)]
        method: Option<u32>,
        #[serde(default)]
        alarm_type: Option<u32>,
    },
    HomePosition {
        channel: String,
        /// `None` disables the home position.
        #[serde(default)]
        preset: Option<u8>,
        #[serde(default)]
        reset_time: u32,
    },
}

async fn device_control(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Json(req): Json<ControlRequest>,
) -> impl IntoResponse {
    let (target, control) = match req {
        ControlRequest::TeleBoot => (id.clone(), DeviceControl::TeleBoot),
        ControlRequest::RecordStart { channel } => (channel, DeviceControl::RecordStart),
        ControlRequest::RecordStop { channel } => (channel, DeviceControl::RecordStop),
        ControlRequest::GuardSet => (id.clone(), DeviceControl::SetGuard),
        ControlRequest::GuardReset => (id.clone(), DeviceControl::ResetGuard),
        ControlRequest::AlarmReset { method, alarm_type } => {
            (id.clone(), DeviceControl::AlarmReset { method, alarm_type })
        }
        ControlRequest::HomePosition {
            channel,
            preset,
            reset_time,
        } => (channel, DeviceControl::HomePosition { preset, reset_time }),
    };
    match s.gb.control(&id, &target, &control).await {
        Ok(result) => Json(serde_json::json!({ "result": result })).into_response(),
        Err(e) => query_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_speeds_map_to_the_captured_words() {
        let req: PtzRequest = serde_json::from_str(r#"{"action":"up","speed":100}"#).unwrap();
        assert_eq!(req.command().to_hex(req.address), "A50F000800640020");
        let req: PtzRequest =
            serde_json::from_str(r#"{"action":"left","speed":150,"address":1}"#).unwrap();
        assert_eq!(req.command().to_hex(req.address), "A50F01029600004D");
        let req: PtzRequest = serde_json::from_str(r#"{"action":"stop"}"#).unwrap();
        assert_eq!(req.command().to_hex(0), "A50F0000000000B4");
        assert!(serde_json::from_str::<PtzRequest>(r#"{"action":"spin"}"#).is_err());
    }
}
