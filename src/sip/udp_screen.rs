//! The SIP UDP socket as rsipstack sees it, with [`super::screen`] in
//! front: datagrams the stack would drop unseen are counted in
//! `camgate_sip_errors_total{kind}` and logged at most once per source per
//! minute, and never reach the stack (RFC 3261 §18.3).
//!
//! rsipstack reads its UDP socket through its platform `UdpSocket` trait;
//! implementing that trait is the one hook it offers before its own parse.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::sip::Transport;

use super::screen::{Verdict, screen};
use crate::log_limit::LogGate;
use crate::metrics::{self, label};
use crate::warn_limited;

/// A bound UDP socket whose receive side drops what [`screen`] rejects.
pub struct ScreenedUdpSocket {
    socket: tokio::net::UdpSocket,
    gate: Arc<LogGate>,
}

impl ScreenedUdpSocket {
    pub fn new(socket: tokio::net::UdpSocket, gate: Arc<LogGate>) -> Self {
        Self { socket, gate }
    }
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for ScreenedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            let (len, from) = self.socket.recv_from(buf).await?;
            let Some(datagram) = buf.get(..len) else {
                continue;
            };
            match screen(datagram, from, Transport::Udp) {
                Verdict::Pass | Verdict::Keepalive => return Ok((len, from)),
                Verdict::Reject(why) => {
                    metrics::get()
                        .sip_errors
                        .get_or_create(&label("kind", why.kind()))
                        .inc();
                    warn_limited!(
                        self.gate,
                        from.ip(),
                        peer = %from,
                        kind = why.kind(),
                        len,
                        "SIP datagram dropped: {why}"
                    );
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}
