//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 description of every
//! `/api/v1` route, built from the table [`OPERATIONS`].
//!
//! Adding a route: append one [`Op`] row to `OPERATIONS` (method, path as
//! written in `.route(…)`, summary, request body type, success status).
//! The unit test below reads every `src/api/*.rs`, finds each `.route("…",
//! get(…).post(…))` under `/api/v1`, and fails naming any method and path
//! missing from the table (or listed but no longer routed) — so parallel
//! branches each add their own rows and merges stay line-local.
//!
//! Hand-written rather than derived (utoipa): it costs no build time on a
//! 2-core machine and the API is small.

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::ApiState;

/// One operation of the API.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Request body media type, if the operation takes one.
    pub body: Option<&'static str>,
    /// The success status.
    pub ok: u16,
}

const JSON: Option<&str> = Some("application/json");

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    ok: u16,
) -> Op {
    Op {
        method,
        path,
        summary,
        body,
        ok,
    }
}

/// Every `/api/v1` operation, one row each (kept unformatted so rows
/// added on different branches merge line by line).
#[rustfmt::skip]
pub const OPERATIONS: &[Op] = &[
    op("get", "/api/v1/openapi.json", "This document", None, 200),
    op("get", "/api/v1/devices", "Every camera of every protocol (gb28181, foscam, ctel) with its channels, play URLs and capabilities", None, 200),
    op("get", "/api/v1/devices/{id}", "One device of any protocol, as in the list", None, 200),
    op("delete", "/api/v1/devices/{id}", "Forget a device until it registers again", None, 204),
    op("get", "/api/v1/devices/{id}/channels", "A device's channels (catalog)", None, 200),
    op("get", "/api/v1/devices/{id}/status", "DeviceStatus query", None, 200),
    op("get", "/api/v1/devices/{id}/config", "ConfigDownload BasicParam query", None, 200),
    op("post", "/api/v1/devices/{id}/catalog", "Query the catalog again (every page)", None, 200),
    op("post", "/api/v1/devices/{id}/control", "DeviceControl: {action: tele_boot|record_start|record_stop|guard_set|guard_reset|alarm_reset|home_position, …}", JSON, 200),
    op("post", "/api/v1/devices/{id}/channels/{ch}/ptz", "PTZ: {action, speed, address}", JSON, 200),
    op("post", "/api/v1/devices/{id}/channels/{ch}/presets", "Preset set/call/delete: {action, preset, address}", JSON, 200),
    op("get", "/api/v1/devices/{id}/channels/{ch}/presets", "PresetQuery", None, 200),
    op("get", "/api/v1/devices/{id}/channels/{ch}/records", "RecordInfo between ?start= and ?end= (YYYY-MM-DDTHH:MM:SS)", None, 200),
    op("get", "/api/v1/devices/{id}/channels/{ch}/downloads", "Download jobs of the channel", None, 200),
    op("post", "/api/v1/devices/{id}/channels/{ch}/downloads", "Start a download: {start, end, speed, format: ps|mp4}", JSON, 201),
    op("get", "/api/v1/devices/{id}/channels/{ch}/downloads/{job}", "A download's state and progress", None, 200),
    op("delete", "/api/v1/devices/{id}/channels/{ch}/downloads/{job}", "Cancel a download", None, 204),
    op("post", "/api/v1/devices/{id}/channels/{ch}/snapshot", "Ask for snapshots (2022): {count ≤ 10, interval}", JSON, 202),
    op("post", "/api/v1/snapshots/upload/{session}", "Device upload of one snapshot (JPEG body)", Some("image/jpeg"), 200),
    op("get", "/api/v1/snapshots/{session}", "A snapshot session: images received, finished", None, 200),
    op("get", "/api/v1/snapshots/{session}/{file}", "One image, {file} = N.jpg", None, 200),
    op("post", "/api/v1/devices/{id}/channels/{ch}/talk", "Voice broadcast of a WAV (PCM 16-bit mono 8 kHz) or raw s16le body", Some("audio/wav"), 202),
    op("get", "/api/v1/streams", "Running streams", None, 200),
    op("get", "/api/v1/events", "Recent device events (alarms, end of recording)", None, 200),
    op("get", "/api/v1/events/stream", "Device events as Server-Sent Events", None, 200),
    op("post", "/api/v1/tokens", "Mint a one-time RTSP token", JSON, 200),
    op("get", "/api/v1/foscam", "Foscam cameras and their link state", None, 200),
    op("get", "/api/v1/foscam/{name}", "One Foscam camera", None, 200),
    op("get", "/api/v1/foscam/{name}/events", "A Foscam camera's recent alarms", None, 200),
    op("post", "/api/v1/foscam/{name}/ptz", "Foscam PTZ: {action, speed, preset}", JSON, 200),
    op("post", "/api/v1/foscam/{name}/talk", "Talk: raw s16le 8 kHz mono PCM body", Some("application/octet-stream"), 200),
    op("get", "/api/v1/webrtc/sessions", "Live WebRTC (WHEP) sessions", None, 200),
    op("get", "/api/v1/cascade", "Upper GB28181 platforms camgate registers to (cascade.upstreams): {upstreams: [{name, server_id, platform_id, address, transport: udp|tcp, target, local, state: idle|registering|registered|backoff|unregistering|stopped, last_error, expires_in, registered_at, stats}]}", None, 200),
    op("get", "/api/v1/ctel/devices", "China Telecom devices", None, 200),
    op("get", "/api/v1/ctel/devices/{id}", "One China Telecom device", None, 200),
    op("post", "/api/v1/ctel/devices/{id}/ptz", "China Telecom PTZ: {channel, direction: stop|up|down|left|right}", JSON, 200),
    op("post", "/api/v1/ctel/devices/{id}/reboot", "China Telecom reboot", None, 200),
    op("get", "/api/v1/ctel/devices/{id}/video", "China Telecom video settings (?channel=&stream_type=)", None, 200),
    op("put", "/api/v1/ctel/devices/{id}/video", "Set China Telecom video settings (SET_CHANNEL_REQ-shaped)", JSON, 200),
    op("get", "/api/v1/ctel/devices/{id}/records", "China Telecom recordings (?channel=&start=YYYYMMDDHHMM&end=&page=)", None, 200),
    op("get", "/api/v1/ctel/events", "Exceptions China Telecom devices reported", None, 200),
    op("post", "/api/v1/devices/{id}/channels/{ch}/talk/webrtc", "Talk from a browser: SDP offer sending Opus → 201, SDP answer, Location of the session", Some("application/sdp"), 201),
    op("delete", "/api/v1/talk/webrtc/{session}", "End a browser talk session", None, 200),
    op("post", "/api/v1/webrtc/sessions/{id}/playback", "Trick play of a WebRTC viewer's recording: {action: pause|resume|scale|seek, scale: 0.25–8, seconds}", JSON, 200),
];

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "schema": { "type": "string" },
                })
            })
            .collect();
        let mut operation = json!({
            "summary": op.summary,
            "parameters": params,
            "responses": {
                op.ok.to_string(): { "description": "success" },
                "default": {
                    "description": "error",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "properties": { "error": { "type": "string" } },
                    }}},
                },
            },
        });
        if let Some(media) = op.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": { media: { "schema": {} } },
            });
        }
        let entry = paths
            .entry(op.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = operation;
    }
    for (path, schema) in [
        (
            "/api/v1/devices",
            json!({ "type": "array", "items": { "$ref": "#/components/schemas/Device" } }),
        ),
        (
            "/api/v1/devices/{id}",
            json!({ "$ref": "#/components/schemas/Device" }),
        ),
    ] {
        if let Some(ok) = paths.get_mut(path) {
            ok["get"]["responses"]["200"]["content"] =
                json!({ "application/json": { "schema": schema } });
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "camgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Media gateway API: devices, control, recordings, talk, snapshots, streams, events.",
        },
        "paths": paths,
        // http.auth: bearer API keys or basic users, or nothing (`none`,
        // the loopback default). GET needs the read scope, every other
        // method admin.
        "components": {
            "schemas": device_schemas(),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "http.auth: bearer. A key from http.api_keys (scope read or admin).",
                },
                "user": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "http.auth: basic. One of rtsp.auth.users (admin).",
                },
            },
        },
        "security": [{ "apiKey": [] }, { "user": [] }, {}],
    })
}

/// The shape of `GET /api/v1/devices` (see `api/devices.rs` and
/// `streams/directory.rs`).
fn device_schemas() -> Value {
    let flag = json!({ "type": "boolean" });
    let text = json!({ "type": "string" });
    let maybe_text = json!({ "type": ["string", "null"] });
    json!({
        "Device": {
            "type": "object",
            "description": "A camera or recorder. Protocol-specific fields (gb28181: transport, registered_at, firmware …; foscam: status; ctel: firmware, last_heartbeat …) appear beside these.",
            "required": ["protocol", "id", "online", "channels"],
            "properties": {
                "protocol": { "type": "string", "enum": ["gb28181", "foscam", "ctel"] },
                "id": text,
                "name": maybe_text,
                "manufacturer": maybe_text,
                "model": maybe_text,
                "online": flag,
                "address": maybe_text,
                "channels": { "type": "array", "items": { "$ref": "#/components/schemas/Channel" } },
            },
        },
        "Channel": {
            "type": "object",
            "required": ["id", "online", "stream", "play", "capabilities"],
            "properties": {
                "id": text,
                "name": maybe_text,
                "online": flag,
                "stream": { "type": "string", "description": "Stream key: the path of the RTSP and WHEP URLs" },
                "play": {
                    "type": "object",
                    "properties": { "rtsp": text, "whep": text, "console": text },
                },
                "capabilities": {
                    "type": "object",
                    "properties": {
                        "ptz": flag, "presets": flag, "talk": flag,
                        "playback": flag, "snapshot": flag, "audio": flag,
                    },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// (method, path) of every `.route(…)` under `/api/v1` in `src`.
    fn routed(src: &str) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for call in src.split(".route(").skip(1) {
            // The route call ends where its parentheses balance.
            let mut depth = 1;
            let end = call
                .char_indices()
                .find_map(|(i, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(i)
                })
                .unwrap_or(call.len());
            let call = &call[..end];
            let Some(path) = call.split('"').nth(1) else {
                continue;
            };
            if !path.starts_with("/api/v1") {
                continue;
            }
            for method in ["get", "post", "put", "patch", "delete"] {
                let handler = format!("{method}(");
                let called = call.match_indices(&handler).any(|(i, _)| {
                    i == 0 || !call[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    out.insert((method.to_owned(), path.to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn every_routed_operation_is_documented_and_nothing_else() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut found = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Test code (like the scanner's own fixture) routes nothing.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                found.extend(routed(code));
            }
        }
        assert!(found.len() >= 20, "route scan found only {found:?}");
        let documented: BTreeSet<(String, String)> = OPERATIONS
            .iter()
            .map(|o| (o.method.to_owned(), o.path.to_owned()))
            .collect();
        let missing: Vec<_> = found.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes missing from OPERATIONS in src/api/openapi.rs: {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&found).collect();
        assert!(stale.is_empty(), "documented but not routed: {stale:?}");
    }

    #[test]
    fn document_shape() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let talk = &doc["paths"]["/api/v1/devices/{id}/channels/{ch}/talk"]["post"];
        assert_eq!(talk["parameters"][1]["name"], "ch");
        assert!(talk["requestBody"]["content"]["audio/wav"].is_object());
        assert!(talk["responses"]["202"].is_object());
        let downloads = &doc["paths"]["/api/v1/devices/{id}/channels/{ch}/downloads/{job}"];
        assert!(downloads["get"].is_object() && downloads["delete"].is_object());
        assert_eq!(
            doc["components"]["securitySchemes"]["apiKey"]["scheme"],
            "bearer"
        );
        assert_eq!(doc["security"][0]["apiKey"], serde_json::json!([]));
    }

    #[test]
    fn scanner_reads_chained_methods() {
        let src = r#"Router::new()
            .route("/api/v1/a/{x}", get(list).post(start))
            .route(
                "/api/v1/b",
                post(upload).layer(DefaultBodyLimit::max(9)),
            )
            .route("/healthz", get(h))"#;
        let r = routed(src);
        let want: BTreeSet<(String, String)> = [
            ("get", "/api/v1/a/{x}"),
            ("post", "/api/v1/a/{x}"),
            ("post", "/api/v1/b"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
        assert_eq!(r, want);
    }
}
