//! The HTTP listener with `limits.max_connections_per_ip` (issue 13,
//! scope 6): a peer past its share is closed at accept, counted in
//! `camgate_connections_refused_total{listener="http"}`; each admitted
//! connection carries its slot until hyper drops it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::conn_limit::{ConnLimiter, ConnPermit};
use crate::log_limit::LogGate;
use crate::warn_limited;

/// A [`TcpListener`] that refuses peers over their connection limit.
pub struct LimitedListener {
    listener: TcpListener,
    limiter: ConnLimiter,
    log: Arc<LogGate>,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, max_per_ip: usize) -> Self {
        Self {
            listener,
            limiter: ConnLimiter::new("http", max_per_ip),
            log: Arc::new(LogGate::default()),
        }
    }
}

/// An admitted connection; its slot is freed when it is dropped.
pub struct LimitedStream {
    stream: TcpStream,
    _permit: ConnPermit,
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, typically: back off, do not spin.
                    debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.limiter.admit(peer.ip()) {
                Some(permit) => {
                    return (
                        LimitedStream {
                            stream,
                            _permit: permit,
                        },
                        peer,
                    );
                }
                None => {
                    warn_limited!(self.log, peer.ip(), %peer, "HTTP connection refused: too many from this address");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
