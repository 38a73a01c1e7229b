//! The HTTP/1.1 connection loop (issue 13, scope 6: every wait has an end).
//!
//! `axum::serve` gives hyper no timer, so hyper's header-read timeout never
//! runs there and a client that opens a connection and sends nothing — or
//! dribbles a request head byte by byte — holds it forever. Here each
//! connection is served by hyper with a timer and
//! `header_read_timeout = limits.request_timeout`: hyper arms that deadline
//! once when it starts waiting for a request head (also between keep-alive
//! requests) and closes the connection when it passes. A response being
//! written (SSE, MJPEG) is not a head being read, so long responses are
//! unaffected.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::limited_listener::LimitedListener;
use crate::log_limit::LogGate;
use crate::metrics::{self, label};
use crate::warn_limited;

/// Serve `router` on `listener` until `shutdown`; then stop accepting, let
/// each connection finish its response in flight, and return when all have
/// closed (the caller bounds that wait with `shutdown_grace`).
pub async fn serve_http(
    mut listener: LimitedListener,
    router: Router,
    request_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    let log = Arc::new(LogGate::default());
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        let log = log.clone();
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(request_timeout);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                connection_error(&log, peer, &e);
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

fn connection_error(log: &LogGate, peer: SocketAddr, e: &hyper::Error) {
    if e.is_timeout() {
        metrics::get()
            .request_timeouts
            .get_or_create(&label("listener", "http"))
            .inc();
        warn_limited!(log, peer.ip(), %peer, "HTTP connection closed: no complete request in time");
    } else {
        // Resets and malformed heads: hyper already answered or the peer left.
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
