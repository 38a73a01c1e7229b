//! Cross-origin access to the API and WHEP from pages served elsewhere
//! (a dashboard on another host): CORS (WHATWG Fetch §3.2) and Private
//! Network Access preflights (WICG Private Network Access §3.3).
//!
//! - WHEP (`/whep/…`) is open to every origin ([`super::whep`] answers its
//!   own preflights).
//! - `/api/…` is open to the origins in `http.cors_origins` (`"*"` = any;
//!   empty, the default, = same-origin only): the API changes devices
//!   (PTZ, talk, reboot), so a page must be named to drive it.
//! - A preflight carrying `Access-Control-Request-Private-Network: true`
//!   whose CORS check passes is answered with
//!   `Access-Control-Allow-Private-Network: true` unless
//!   `http.private_network_access` is off. Chromium 104–141 sent these
//!   when a page on a less private network called the gateway; later
//!   Chromium asks the user instead (Local Network Access), which no
//!   header can answer.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::metrics;

const REQUEST_PRIVATE_NETWORK: &str = "access-control-request-private-network";
const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";
/// Longest `Origin` compared against the list; real ones are short.
const MAX_ORIGIN_LEN: usize = 256;

/// Who may call the API from a browser page of another origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Exact origins (`http://dash.example:8000`) or `*`.
    pub api_origins: Vec<String>,
    /// Answer Private Network Access preflights.
    pub private_network_access: bool,
}

impl CorsPolicy {
    /// Whether a page of `origin` may read `/api/…` answers.
    fn api_allows(&self, origin: &str) -> bool {
        origin.len() <= MAX_ORIGIN_LEN
            && self
                .api_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn asks_private_network(headers: &HeaderMap) -> bool {
    headers
        .get(REQUEST_PRIVATE_NETWORK)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// The answer to an allowed `/api/…` preflight.
fn api_preflight(origin: &HeaderValue) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type, Authorization"),
            ),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            ),
            (header::VARY, HeaderValue::from_static("Origin")),
        ],
    )
        .into_response()
}

/// Adds `Access-Control-Allow-Private-Network: true` to a preflight
/// answer that grants CORS, when the request asked and the policy allows.
fn grant_private_network(policy: &CorsPolicy, request: &HeaderMap, response: &mut Response) {
    if policy.private_network_access
        && asks_private_network(request)
        && response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        response
            .headers_mut()
            .insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        metrics::get().http_private_network_preflights.inc();
    }
}

/// The middleware over every route (see the module doc).
pub async fn cors(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let policy = &s.cors;
    let api = req.uri().path().starts_with("/api/");
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|o| o.to_str().is_ok_and(|o| policy.api_allows(o)))
        .cloned();
    let preflight = is_preflight(req.method(), req.headers());
    let request_headers = preflight.then(|| req.headers().clone());
    let mut response = match (&origin, api && preflight) {
        (Some(o), true) => api_preflight(o),
        _ => next.run(req).await,
    };
    if api
        && let Some(o) = origin
        && !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(request) = request_headers {
        grant_private_network(policy, &request, &mut response);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preflight_asking_pna() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://dash.example"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h.insert(REQUEST_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        h
    }

    fn granted(policy: &CorsPolicy, cors_passed: bool) -> bool {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if cors_passed {
            resp.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        grant_private_network(policy, &preflight_asking_pna(), &mut resp);
        resp.headers()
            .get(ALLOW_PRIVATE_NETWORK)
            .map(|v| v.as_bytes())
            == Some(b"true")
    }

    #[test]
    fn private_network_is_granted_only_when_on_and_cors_passes() {
        let on = CorsPolicy {
            api_origins: vec![],
            private_network_access: true,
        };
        let off = CorsPolicy {
            private_network_access: false,
            ..on.clone()
        };
        assert!(granted(&on, true));
        assert!(!granted(&on, false));
        assert!(!granted(&off, true));
    }

    #[test]
    fn api_origins_are_exact_or_star() {
        let p = CorsPolicy {
            api_origins: vec!["http://dash.example:8000".into()],
            private_network_access: true,
        };
        assert!(p.api_allows("http://dash.example:8000"));
        assert!(p.api_allows("HTTP://DASH.EXAMPLE:8000"));
        assert!(!p.api_allows("http://dash.example:8001"));
        assert!(!p.api_allows("http://evil.example"));
        assert!(!CorsPolicy::default().api_allows("http://dash.example:8000"));
        let any = CorsPolicy {
            api_origins: vec!["*".into()],
            private_network_access: false,
        };
        assert!(any.api_allows("http://anything"));
        assert!(is_preflight(&Method::OPTIONS, &preflight_asking_pna()));
        assert!(!is_preflight(&Method::POST, &preflight_asking_pna()));
    }
}
