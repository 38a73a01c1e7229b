//! TCP media connections (GB/T 28181-2016 Annex F.2, RFC 4145 roles,
//! RFC 4571 framing): accepting the device's connection in `tcp_passive`
//! mode and connecting to it in `tcp_active` mode.
//!
//! One connection per stream (`a=connection:new`). The framing itself is
//! the sans-IO [`Rfc4571Decoder`](super::rfc4571::Rfc4571Decoder); this
//! file only makes the connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{debug, warn};

use crate::metrics::{self, label};

#[derive(Debug, thiserror::Error)]
pub enum TcpMediaError {
    #[error("device did not connect within {0:?}")]
    AcceptTimeout(Duration),
    #[error("could not connect to the device at {addr} within {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("connecting to the device at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("accepting the device's connection: {0}")]
    Accept(std::io::Error),
}

impl TcpMediaError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AcceptTimeout(_) => "accept_timeout",
            Self::ConnectTimeout { .. } => "connect_timeout",
            Self::Connect { .. } => "connect_failed",
            Self::Accept(_) => "accept_failed",
        }
    }
}

fn count(kind: &'static str) {
    metrics::get()
        .tcp_media_errors
        .get_or_create(&label("kind", kind))
        .inc();
}

/// `tcp_passive`: wait for the device (from `device_ip`) to connect.
/// Connections from other addresses are closed and counted; they do not
/// end the wait.
pub async fn accept_device(
    listener: &TcpListener,
    device_ip: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, TcpMediaError> {
    let wait = async {
        loop {
            let (stream, peer) = listener.accept().await.map_err(TcpMediaError::Accept)?;
            if device_ip.is_some_and(|ip| ip != peer.ip()) {
                count("unexpected_peer");
                warn!(%peer, expected = ?device_ip, "TCP media connection from another host refused");
                continue;
            }
            debug!(%peer, "device connected for TCP media");
            tune(&stream);
            return Ok(stream);
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r.inspect_err(|e: &TcpMediaError| count(e.kind())),
        Err(_) => {
            count("accept_timeout");
            Err(TcpMediaError::AcceptTimeout(timeout))
        }
    }
}

/// `tcp_active`: connect from our already-bound socket (the port we
/// offered) to the port in the device's answer.
pub async fn connect_device(
    socket: TcpSocket,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, TcpMediaError> {
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(stream)) => {
            debug!(%addr, "connected to device for TCP media");
            tune(&stream);
            Ok(stream)
        }
        Ok(Err(source)) => {
            count("connect_failed");
            Err(TcpMediaError::Connect { addr, source })
        }
        Err(_) => {
            count("connect_timeout");
            Err(TcpMediaError::ConnectTimeout { addr, timeout })
        }
    }
}

fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(stream).set_recv_buffer_size(4 << 20);
}
