//! The path one upstream's SIP messages take to the upper platform
//! (GB/T 28181-2016 §4.3: SIP over UDP, RFC 3261 §18).
//!
//! Everything the request-serving code sends goes through a [`Link`], so
//! it does not care how the bytes travel.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

/// A cheap handle for sending to the upper platform, cloned into tasks.
#[derive(Clone)]
pub enum Link {
    /// One UDP socket per upstream; each message is one datagram.
    Udp(Arc<UdpSocket>),
}

impl Link {
    /// Send one whole SIP message to `to`.
    pub async fn send(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Link::Udp(socket) => socket.send_to(bytes, to).await.map(|_| ()),
        }
    }

    /// Whether the transport delivers by itself, so no SIP retransmission
    /// is due (RFC 3261 §17.1.2.2, §13.3.1.4).
    pub fn reliable(&self) -> bool {
        match self {
            Link::Udp(_) => false,
        }
    }
}
