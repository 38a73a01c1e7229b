//! The SIP TCP listener (RFC 3261 §18.3) with per-source limits in front of
//! rsipstack (issue 13, scope 6).
//!
//! rsipstack's own listener takes every connection and waits up to its idle
//! timeout (five minutes) for bytes. Here a peer IP holds at most
//! `limits.max_connections_per_ip` connections, and a connection must
//! deliver its first complete message within `limits.request_timeout`;
//! that message is screened like a datagram. Only then is the socket handed
//! to the stack, which frames and serves it from there (the bytes are
//! inspected with `MSG_PEEK`, so the stack reads them itself).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::Transport;
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::screen::{Rejection, Verdict, screen, stream_message_len};
use crate::conn_limit::{ConnLimiter, ConnPermit};
use crate::log_limit::LogGate;
use crate::metrics::{self, label};
use crate::warn_limited;

/// How often a connection with a partial first message is looked at again
/// (peeking does not wait for *more* bytes, only for some).
const PARTIAL_POLL: Duration = Duration::from_millis(25);

/// Settings of the gate.
#[derive(Clone)]
pub struct TcpGate {
    pub limiter: ConnLimiter,
    pub request_timeout: Duration,
    pub gate: Arc<LogGate>,
    /// Our address as the stack names its TCP side (Via, connection key).
    pub local: SipAddr,
}

/// Why a connection was closed before the stack saw it.
#[derive(Debug)]
enum Refused {
    Closed,
    Timeout,
    Bad(Rejection),
}

/// Accept SIP TCP connections until `cancel`, handing screened ones to
/// `endpoint`'s transport layer.
pub async fn serve(
    listener: TcpListener,
    gate: TcpGate,
    endpoint: EndpointInnerRef,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, typically: back off, do not spin.
                    debug!(error = %e, "SIP TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(permit) = gate.limiter.admit(peer.ip()) else {
            warn_limited!(gate.gate, peer.ip(), %peer, "SIP TCP connection refused: too many from this address");
            continue;
        };
        let gate = gate.clone();
        let endpoint = endpoint.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            admit(stream, peer, permit, gate, endpoint, cancel).await;
        });
    }
}

async fn admit(
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    gate: TcpGate,
    endpoint: EndpointInnerRef,
    cancel: CancellationToken,
) {
    // One deadline from the accept: dribbling bytes does not extend it.
    let deadline = Instant::now() + gate.request_timeout;
    let first = tokio::select! {
        _ = cancel.cancelled() => return,
        r = first_message(&mut stream, peer, deadline) => r,
    };
    match first {
        Ok(()) => {}
        Err(Refused::Closed) => return,
        Err(Refused::Timeout) => {
            metrics::get()
                .request_timeouts
                .get_or_create(&label("listener", "sip"))
                .inc();
            warn_limited!(gate.gate, peer.ip(), %peer, "SIP TCP connection closed: no complete request in time");
            return;
        }
        Err(Refused::Bad(why)) => {
            metrics::get()
                .sip_errors
                .get_or_create(&label("kind", why.kind()))
                .inc();
            warn_limited!(gate.gate, peer.ip(), %peer, kind = why.kind(), "SIP TCP connection closed: {why}");
            return;
        }
    }
    let token = cancel.child_token();
    let connection =
        match TcpConnection::from_stream(stream, gate.local.clone(), Some(token.clone())) {
            Ok(c) => c,
            Err(e) => {
                debug!(%peer, error = %e, "SIP TCP connection lost before hand-over");
                return;
            }
        };
    endpoint
        .transport_layer
        .add_connection(SipConnection::Tcp(connection));
    // The stack cancels the connection's token when its serve loop ends:
    // that is when this peer's slot is free again.
    token.cancelled().await;
    drop(permit);
}

/// Wait for the first complete message without consuming it; consume
/// leading CRLF keepalives.
async fn first_message(
    stream: &mut TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<(), Refused> {
    // Most first messages (REGISTER) fit in the first size; grow only
    // for a peer that really sends a big one.
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Err(Refused::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(Refused::Closed),
            Ok(Ok(n)) => n,
        };
        let seen = &buf[..n];
        match stream_message_len(seen).map_err(Refused::Bad)? {
            Some(len) => match screen(&seen[..len], peer, Transport::Tcp) {
                Verdict::Pass => return Ok(()),
                Verdict::Reject(why) => return Err(Refused::Bad(why)),
                Verdict::Keepalive => {
                    let mut skip = vec![0u8; len];
                    if stream.read_exact(&mut skip).await.is_err() {
                        return Err(Refused::Closed);
                    }
                }
            },
            None if n == buf.len() => {
                let bigger = (buf.len() * 2).min(super::screen::MAX_MESSAGE + 1);
                buf.resize(bigger, 0);
            }
            None => {
                if Instant::now() + PARTIAL_POLL >= deadline {
                    return Err(Refused::Timeout);
                }
                tokio::time::sleep(PARTIAL_POLL).await;
            }
        }
    }
}
