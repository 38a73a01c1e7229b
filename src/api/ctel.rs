//! Telecom 手机看店 devices: their HTTP registration endpoints and the
//! management API.
//!
//! Device-facing (the URL configured on the device as its platform):
//! - `POST /ctel/register`: §7.2.1 `REGISTER_REQ` → `REGISTER_RES` (text/xml)
//! - `POST /ctel/redirect`: §5 `REDIRECT_REQ` → `REDIRECT_RES`, whose
//!   `LcmsUrl` points back at `/ctel/register` on this server
//!
//! Management (JSON):
//! - `GET  /api/v1/ctel/devices`, `GET /api/v1/ctel/devices/{id}`
//! - `POST /api/v1/ctel/devices/{id}/ptz` `{"channel":0,"direction":"up"}`
//!   (stop, up, down, left, right) → 0x64
//! - `POST /api/v1/ctel/devices/{id}/reboot` → 0x6C
//! - `GET  /api/v1/ctel/devices/{id}/video?channel=0&stream_type=1` → 0x61;
//!   `PUT` the same path with a `SET_CHANNEL_REQ`-shaped JSON body → 0x60
//! - `GET  /api/v1/ctel/devices/{id}/records?channel=0&start=YYYYMMDDHHMM&end=YYYYMMDDHHMM&page=1`
//!   → 0x72 (10 files per page)
//! - `GET  /api/v1/ctel/events`: exceptions devices reported (0x34)
//!
//! Every route answers 404 when the `ctel` section is disabled.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ApiState, error};
use crate::ctel::messages as m;
use crate::ctel::platform::{CommandError, CtelPlatform};
use crate::ctel::register::{self, RedirectReq, RedirectRes, RegisterReq};
use crate::metrics::{self, label};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ctel/register", post(register_device))
        .route("/ctel/redirect", post(redirect_device))
        .route("/api/v1/ctel/devices", get(list_devices))
        .route("/api/v1/ctel/devices/{id}", get(get_device))
        .route("/api/v1/ctel/devices/{id}/ptz", post(ptz))
        .route("/api/v1/ctel/devices/{id}/reboot", post(reboot))
        .route(
            "/api/v1/ctel/devices/{id}/video",
            get(get_video).put(set_video),
        )
        .route("/api/v1/ctel/devices/{id}/records", get(records))
        .route("/api/v1/ctel/events", get(events))
}

fn platform(s: &ApiState) -> Option<&Arc<CtelPlatform>> {
    s.ctel.as_ref()
}

fn disabled() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "telecom devices are disabled (ctel.enabled)",
    )
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}

fn bad_registration(e: register::RegisterError) -> Response {
    metrics::get()
        .ctel_registrations
        .get_or_create(&label("outcome", "bad_request"))
        .inc();
    tracing::warn!(kind = e.kind(), "bad telecom registration: {e}");
    error(StatusCode::BAD_REQUEST, e.to_string())
}

async fn register_device(State(s): State<ApiState>, body: Bytes) -> Response {
    let Some(p) = platform(&s) else {
        return disabled();
    };
    match register::parse::<RegisterReq>(&body) {
        Ok(req) => xml(register::to_xml(&p.on_register(&req, SystemTime::now()))),
        Err(e) => bad_registration(e),
    }
}

async fn redirect_device(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if platform(&s).is_none() {
        return disabled();
    }
    let req = match register::parse::<RedirectReq>(&body) {
        Ok(r) => r,
        Err(e) => return bad_registration(e),
    };
    metrics::get()
        .ctel_registrations
        .get_or_create(&label("outcome", "redirect"))
        .inc();
    // Send the device back to this very server, as it reached us.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.len() < 256)
        .unwrap_or("127.0.0.1");
    xml(register::to_xml(&RedirectRes {
        result: 0,
        dev_id: req.dev_id,
        lcms_url: format!("http://{host}/ctel/register"),
    }))
}

async fn list_devices(State(s): State<ApiState>) -> Response {
    platform(&s).map_or_else(disabled, |p| axum::Json(p.devices()).into_response())
}

async fn get_device(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(p) = platform(&s) else {
        return disabled();
    };
    match p.device(&id) {
        Some(d) => axum::Json(d).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no telecom device {id}")),
    }
}

async fn events(State(s): State<ApiState>) -> Response {
    platform(&s).map_or_else(disabled, |p| axum::Json(p.events()).into_response())
}

fn command_error(e: CommandError) -> Response {
    let status = match e {
        CommandError::UnknownDevice(_) => StatusCode::NOT_FOUND,
        CommandError::Offline(_) => StatusCode::SERVICE_UNAVAILABLE,
        CommandError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        CommandError::Refused(_) | CommandError::Xml(_) => StatusCode::BAD_GATEWAY,
    };
    error(status, e.to_string())
}

fn check_result(result: u8) -> Result<(), CommandError> {
    if result == m::RESULT_OK {
        Ok(())
    } else {
        Err(CommandError::Refused(result))
    }
}

#[derive(Deserialize)]
struct PtzBody {
    #[serde(default)]
    channel: u16,
    direction: m::PtzDirection,
}

async fn ptz(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<PtzBody>,
) -> Response {
    let Some(p) = platform(&s) else {
        return disabled();
    };
    let req = m::VideoPtzReq {
        dev_id: id.clone(),
        channel_no: body.channel,
        ptz_direction: body.direction.code(),
    };
    let res = p
        .command::<_, m::VideoPtzRes>(&id, &req)
        .await
        .and_then(|r| check_result(r.result));
    match res {
        Ok(()) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => command_error(e),
    }
}

async fn reboot(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(p) = platform(&s) else {
        return disabled();
    };
    let req = m::RebootReq { dev_id: id.clone() };
    match p
        .command::<_, m::RebootRes>(&id, &req)
        .await
        .and_then(|r| check_result(r.result))
    {
        Ok(()) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => command_error(e),
    }
}

#[derive(Deserialize)]
struct VideoQuery {
    #[serde(default)]
    channel: u16,
    #[serde(default = "main_stream")]
    stream_type: u8,
}

fn main_stream() -> u8 {
    1
}

async fn get_video(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<VideoQuery>,
) -> Response {
    let Some(p) = platform(&s) else {
        return disabled();
    };
    let req = m::GetChannelReq {
        dev_id: id.clone(),
        channel_no: q.channel,
        stream_type: q.stream_type,
    };
    match p.command::<_, m::GetChannelRes>(&id, &req).await {
        Ok(r) if r.result == m::RESULT_OK => axum::Json(serde_json::json!({
            "channel": r.channel_no,
            "stream_type": r.stream_type,
            "frame_size": r.frame_size,
            "frame_rate": r.frame_rate,
            "rate_type": r.rate_type,
            "bit_rate": r.bit_rate,
            "audio_input": r.audio_input,
        }))
        .into_response(),
        Ok(r) => command_error(CommandError::Refused(r.result)),
        Err(e) => command_error(e),
    }
}

#[derive(Deserialize)]
struct SetVideoBody {
    #[serde(default)]
    channel: u16,
    #[serde(default = "main_stream")]
    stream_type: u8,
    frame_size: u8,
    frame_rate: u8,
    rate_type: u8,
    bit_rate: u8,
    #[serde(default)]
    audio_input: u8,
}

async fn set_video(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    axum::Json(b): axum::Json<SetVideoBody>,
) -> Response {
    let Some(p) = platform(&s) else {
        return disabled();
    };
    if !(1..=13).contains(&b.bit_rate) || !(1..=3).contains(&b.frame_size) {
        return error(
            StatusCode::BAD_REQUEST,
            "bit_rate is a code 1-13 and frame_size 1 (720P), 2 (D1) or 3 (CIF)",
        );
    }
    let req = m::SetChannelReq {
        dev_id: id.clone(),
        channel_no: b.channel,
        stream_type: b.stream_type,
        frame_size: b.frame_size,
        frame_rate: b.frame_rate,
        rate_type: b.rate_type,
        bit_rate: b.bit_rate,
        audio_input: b.audio_input,
    };
    match p
        .command::<_, m::SetChannelRes>(&id, &req)
        .await
        .and_then(|r| check_result(r.result))
    {
        Ok(()) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => command_error(e),
    }
}

#[derive(Deserialize)]
struct RecordsQuery {
    #[serde(default)]
    channel: u16,
    start: String,
    end: String,
    #[serde(default = "first_page")]
    page: u32,
}

fn first_page() -> u32 {
    1
}

fn is_minute_stamp(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

async fn records(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<RecordsQuery>,
) -> Response {
    let Some(p) = platform(&s) else {
        return disabled();
    };
    if !is_minute_stamp(&q.start) || !is_minute_stamp(&q.end) || q.page == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "start and end are YYYYMMDDHHMM; page counts from 1",
        );
    }
    let req = m::FileQueryReq {
        dev_id: id.clone(),
        channel_no: q.channel,
        start_time: q.start,
        end_time: q.end,
        page_no: q.page,
    };
    match p.command::<_, m::FileQueryRes>(&id, &req).await {
        Ok(r) if r.result == m::RESULT_OK => axum::Json(serde_json::json!({
            "total": r.total_record_num,
            "page": req.page_no,
            "files": r.file.iter().map(|f| serde_json::json!({
                "file_name": f.file_name,
                "file_size": f.file_size,
                "start_time": f.start_time,
                "end_time": f.end_time,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(r) => command_error(CommandError::Refused(r.result)),
        Err(e) => command_error(e),
    }
}
