//! Cluster: `/api/v1/devices/{id}/…` for a device another node owns
//! (PTZ, presets, queries, records, talk, snapshots, downloads) is
//! forwarded to the owner's HTTP listener and its answer relayed, so the
//! API works the same on every node. Runs after `http.auth`: the entry
//! node checks the client; the owner trusts the cluster secret.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiState, error};
use crate::cluster::forward::{self, FORWARDED_HEADER, Outgoing};
use crate::metrics;

/// Largest request body forwarded (device commands are small JSON).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The device a per-device API path names: `/api/v1/devices/{id}/…` with
/// something after the id (the bare `/api/v1/devices/{id}` is the shared
/// listing, answered by every node).
fn device_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/v1/devices/")?;
    let (id, more) = rest.split_once('/')?;
    (!id.is_empty() && !more.is_empty()).then_some(id)
}

fn count(outcome: &'static str) {
    metrics::get()
        .cluster_forwarded_requests
        .get_or_create(&metrics::label("outcome", outcome))
        .inc();
}

pub async fn forward(
    State(s): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(cluster) = &s.cluster else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED_HEADER) {
        return next.run(req).await;
    }
    let Some(owner) = device_in_path(req.uri().path()).and_then(|d| cluster.remote_device_owner(d))
    else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = text(header::CONTENT_TYPE);
    let authorization = text(header::AUTHORIZATION);
    let out = Outgoing {
        method: parts.method.as_str(),
        target,
        content_type: content_type.as_deref(),
        authorization: authorization.as_deref(),
        secret: &cluster.config().secret,
        from_node: cluster.node_id(),
        body: &body,
    };
    match forward::send(owner.http, &out, cluster.config().forward_timeout).await {
        Ok(reply) => {
            count("ok");
            tracing::debug!(node = %owner.node, target, status = reply.status, "API request forwarded to the owner");
            let mut b = Response::builder()
                .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY));
            if let Some(ct) = reply.content_type {
                b = b.header(header::CONTENT_TYPE, ct);
            }
            b.body(Body::from(reply.body))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => {
            count(e.outcome());
            tracing::warn!(node = %owner.node, target, error = %e, "API request for another node's device failed");
            let status = match e {
                forward::ForwardError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            error(status, format!("owner {}: {e}", owner.node))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_per_device_paths_are_forwarded() {
        assert_eq!(
            device_in_path("/api/v1/devices/34020000001320000001/channels/x/ptz"),
            Some("34020000001320000001")
        );
        assert_eq!(device_in_path("/api/v1/devices/d/status"), Some("d"));
        assert_eq!(device_in_path("/api/v1/devices/d"), None);
        assert_eq!(device_in_path("/api/v1/devices/d/"), None);
        assert_eq!(device_in_path("/api/v1/devices"), None);
        assert_eq!(device_in_path("/whep/gb/d/c"), None);
    }
}
