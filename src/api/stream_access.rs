//! The one check every HTTP route that opens a stream goes through: the
//! `rtsp.auth` path rules (longest prefix wins) applied with HTTP's
//! credentials — a one-time token as `Authorization: Bearer` or
//! `?hashtoken=`, or Basic on `basic` paths (see
//! [`crate::webrtc::whep_auth`]). WHEP offers (live and the console's
//! playback), MJPEG and snapshots call it; RTSP applies the same rules
//! through the same [`crate::rtsp::auth::Authenticator`].
//!
//! [`STREAM_ROUTES`] lists those routes so a test can try each one.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{ApiState, error};
use crate::rtsp::auth::hashtoken;
use crate::streams::StreamKey;
use crate::webrtc::whep_auth::WhepCredentials;

/// Every HTTP route that opens a stream, as `(method, path pattern)`.
pub const STREAM_ROUTES: &[(&str, &str)] = &[
    ("POST", "/whep/{*path}"),
    ("GET", "/mjpeg/foscam/{name}"),
    ("GET", "/snapshot/foscam/{file}"),
];

/// `None` when `key` may be opened with what the request carries; else the
/// 401 (with challenges) or 403 to answer. A presented token is used up.
pub(crate) fn refuse(
    s: &ApiState,
    key: &StreamKey,
    headers: &HeaderMap,
    query: Option<&str>,
    route: &'static str,
) -> Option<Response> {
    let creds = WhepCredentials {
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        query_token: hashtoken(query),
    };
    let Err(e) = s.whep_auth.check(key, creds, std::time::Instant::now()) else {
        return None;
    };
    tracing::debug!(stream = %key, route, kind = e.kind(), "stream access refused: {e}");
    if e.is_forbidden() {
        return Some(error(StatusCode::FORBIDDEN, e.to_string()));
    }
    let mut resp = error(StatusCode::UNAUTHORIZED, e.to_string());
    for challenge in s.whep_auth.challenges(key, &e) {
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access::{Door, door};

    /// Every route outside `/api/` (the API door guards those), found by
    /// reading the sources, must be one this list knows: a new route that
    /// opens a stream cannot slip past the path rules unnoticed.
    #[test]
    fn every_route_outside_the_api_is_classified() {
        let known_open = [
            "/",
            "/console.js",
            "/healthz",
            "/readyz",
            "/metrics",
            // Telecom devices register here with their DevKey.
            "/ctel/register",
            "/ctel/redirect",
            // A WHEP session, reached by its unguessable id.
            "/whep/resource/{id}",
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for call in code.split(".route(").skip(1) {
                // Only literal paths (prose mentioning `.route(…)` is not one).
                let Some(route) = call.split('"').nth(1).filter(|r| r.starts_with('/')) else {
                    continue;
                };
                seen.push(route.to_owned());
                if route.starts_with("/api/") {
                    assert!(
                        matches!(door("GET", route), Door::Api(_))
                            || route == "/api/v1/openapi.json",
                        "{route}"
                    );
                    continue;
                }
                let streams = STREAM_ROUTES.iter().any(|(_, p)| *p == route);
                assert!(
                    streams || known_open.contains(&route),
                    "{route} in {} is neither a stream route (STREAM_ROUTES, checked by \
                     stream_access::refuse) nor a known open one",
                    path.display()
                );
                if streams {
                    assert!(
                        code.contains("stream_access::refuse(") || code.contains("fn refuse("),
                        "{} serves {route} without stream_access::refuse",
                        path.display()
                    );
                }
            }
        }
        for (_, route) in STREAM_ROUTES {
            assert!(
                seen.iter().any(|r| r == route),
                "{route} is no longer routed"
            );
            assert_eq!(door("GET", route), Door::Open);
        }
    }
}
