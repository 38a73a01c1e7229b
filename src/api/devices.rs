//! `GET /api/v1/devices`: every camera of every protocol (GB28181,
//! Foscam, telecom) in one shape, each channel with the URLs that play it
//! and what it can do; `GET /api/v1/devices/{id}`: one of them.
//!
//! The adapters describe their devices ([`crate::streams::directory`]);
//! this module only adds the play URLs, which depend on the address the
//! client used to reach the gateway (its `Host` header), so a URL copied
//! from the answer works from where the client stands.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::{ApiState, error};
use crate::streams::directory::{ChannelEntry, DeviceEntry, all_devices};

/// Longest `Host` header used to build URLs (RFC 1035 names are ≤ 253).
const MAX_HOST_LEN: usize = 260;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
}

/// The URLs that play one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlayUrls {
    pub rtsp: String,
    pub whep: String,
    /// The web console, opened on this channel.
    pub console: String,
}

#[derive(Serialize)]
struct ChannelView {
    #[serde(flatten)]
    channel: ChannelEntry,
    play: PlayUrls,
}

#[derive(Serialize)]
struct DeviceView {
    protocol: crate::streams::directory::Protocol,
    id: String,
    name: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    online: bool,
    address: Option<String>,
    /// Protocol-specific facts (GB28181 `transport`, `registered_at` …)
    /// beside the common ones, as the protocol's own endpoints show them.
    #[serde(flatten)]
    details: serde_json::Map<String, serde_json::Value>,
    channels: Vec<ChannelView>,
}

/// Where the client reached us: `host[:port]` from `Host`, when it is a
/// plain authority; else the loopback address and our port.
fn authority(headers: &HeaderMap, http_port: u16) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= MAX_HOST_LEN
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("127.0.0.1:{http_port}"))
}

/// The host of an authority without its port (`[::1]:8080` → `[::1]`).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// The play URLs of a stream key as seen from `authority`.
pub fn play_urls(authority: &str, rtsp_port: u16, stream: &str) -> PlayUrls {
    PlayUrls {
        rtsp: format!("rtsp://{}:{rtsp_port}/{stream}", host_of(authority)),
        whep: format!("http://{authority}/whep/{stream}"),
        console: format!("http://{authority}/#play={stream}"),
    }
}

fn view(d: DeviceEntry, authority: &str, rtsp_port: u16) -> DeviceView {
    DeviceView {
        channels: d
            .channels
            .into_iter()
            .map(|c| ChannelView {
                play: play_urls(authority, rtsp_port, &c.stream),
                channel: c,
            })
            .collect(),
        protocol: d.protocol,
        id: d.id,
        name: d.name,
        manufacturer: d.manufacturer,
        model: d.model,
        online: d.online,
        address: d.address,
        details: d.details,
    }
}

async fn list_devices(State(s): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    let at = authority(&headers, s.ports.http);
    let all: Vec<DeviceView> = all_devices(&s.directories)
        .into_iter()
        .map(|d| view(d, &at, s.ports.rtsp))
        .collect();
    axum::Json(all)
}

async fn get_device(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let at = authority(&headers, s.ports.http);
    match all_devices(&s.directories).into_iter().find(|d| d.id == id) {
        Some(d) => axum::Json(view(d, &at, s.ports.rtsp)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no device {id}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_address_the_client_used() {
        let u = play_urls("192.168.1.5:8080", 8554, "foscam/demo");
        assert_eq!(u.rtsp, "rtsp://192.168.1.5:8554/foscam/demo");
        assert_eq!(u.whep, "http://192.168.1.5:8080/whep/foscam/demo");
        assert_eq!(u.console, "http://192.168.1.5:8080/#play=foscam/demo");
        assert_eq!(
            play_urls("[::1]:8080", 554, "gb/a/b").rtsp,
            "rtsp://[::1]:554/gb/a/b"
        );
        assert_eq!(
            play_urls("cam.local", 554, "x").rtsp,
            "rtsp://cam.local:554/x"
        );
    }

    #[test]
    fn a_strange_host_header_is_not_echoed() {
        let mut h = HeaderMap::new();
        assert_eq!(authority(&h, 8080), "127.0.0.1:8080");
        h.insert(header::HOST, "evil/<script>".parse().unwrap());
        assert_eq!(authority(&h, 8080), "127.0.0.1:8080");
        h.insert(header::HOST, "gw.example:9000".parse().unwrap());
        assert_eq!(authority(&h, 8080), "gw.example:9000");
    }
}
