//! The one UDP port every WebRTC peer shares, and the routing of each
//! datagram to its peer.
//!
//! ICE (RFC 8445 §7.2.2) makes the browser's first packet a STUN Binding
//! request whose USERNAME is `our-ufrag:their-ufrag`, and every peer has
//! its own ufrag: that names the peer. The remote address it came from is
//! then remembered, so DTLS, SRTCP and later STUN from that address go to
//! the same peer without parsing (RFC 7983 demultiplexing happens inside
//! str0m). Datagrams from an address nobody claimed are dropped and
//! counted.
//!
//! One socket is bound per local IP, all on the same port, so the local
//! address a datagram arrived at is simply its socket's address.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use str0m::ice::StunMessage;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::metrics::{self, label};

/// Largest datagram we accept; WebRTC keeps below ~1200 bytes.
const MAX_DATAGRAM: usize = 2048;

/// A datagram for a peer.
#[derive(Debug)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Bytes,
}

pub type Inbox = mpsc::Sender<Datagram>;

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, Inbox>,
    /// (local socket address, remote address) → peer.
    by_addr: HashMap<(SocketAddr, SocketAddr), Inbox>,
    /// Addresses each ufrag claimed, to forget them when the peer leaves.
    addrs_of: HashMap<String, Vec<(SocketAddr, SocketAddr)>>,
}

/// The sockets and the routing table.
pub struct UdpMux {
    sockets: Vec<Arc<UdpSocket>>,
    routes: Mutex<Routes>,
}

impl UdpMux {
    /// Bind `port` on each of `ips` (port 0: the first socket picks one and
    /// the others use the same).
    pub async fn bind(ips: &[IpAddr], port: u16) -> io::Result<Arc<Self>> {
        let mut sockets = Vec::with_capacity(ips.len());
        let mut port = port;
        for ip in ips {
            let socket = UdpSocket::bind((*ip, port)).await?;
            port = socket.local_addr()?.port();
            sockets.push(Arc::new(socket));
        }
        Ok(Arc::new(Self {
            sockets,
            routes: Mutex::new(Routes::default()),
        }))
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Route datagrams whose STUN USERNAME starts with `ufrag` to `inbox`.
    pub fn register(&self, ufrag: &str, inbox: Inbox) {
        self.routes().by_ufrag.insert(ufrag.to_owned(), inbox);
    }

    /// Forget a peer and every address it was reached from.
    pub fn unregister(&self, ufrag: &str) {
        let mut routes = self.routes();
        routes.by_ufrag.remove(ufrag);
        for key in routes.addrs_of.remove(ufrag).unwrap_or_default() {
            routes.by_addr.remove(&key);
        }
    }

    /// The socket bound at `local`, for sending.
    pub fn socket_for(&self, local: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.sockets
            .iter()
            .find(|s| s.local_addr().is_ok_and(|a| a == local))
            .or_else(|| self.sockets.first())
    }

    /// Receive on every socket until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for socket in &self.sockets {
            let mux = self.clone();
            let socket = socket.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = mux.receive_loop(socket) => {}
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn receive_loop(&self, socket: Arc<UdpSocket>) {
        let Ok(local) = socket.local_addr() else {
            return;
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                // ICMP port unreachable from a browser that went away shows
                // up here on some systems; it concerns one peer, not the port.
                Err(e) => {
                    debug!(error = %e, "WebRTC UDP receive error");
                    continue;
                }
            };
            let Some(data) = buf.get(..n) else { continue };
            self.route(local, from, data);
        }
    }

    /// Hand one datagram to its peer, or drop it with a counted reason.
    pub fn route(&self, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        let inbox = {
            let mut routes = self.routes();
            match routes.by_addr.get(&(local, from)) {
                Some(inbox) => Some(inbox.clone()),
                None => match stun_ufrag(data) {
                    Some(ufrag) => match routes.by_ufrag.get(ufrag).cloned() {
                        Some(inbox) => {
                            routes.by_addr.insert((local, from), inbox.clone());
                            routes
                                .addrs_of
                                .entry(ufrag.to_owned())
                                .or_default()
                                .push((local, from));
                            Some(inbox)
                        }
                        None => {
                            drop_datagram("unknown_ufrag", from);
                            None
                        }
                    },
                    None => {
                        drop_datagram("unknown_address", from);
                        None
                    }
                },
            }
        };
        let Some(inbox) = inbox else { return };
        let datagram = Datagram {
            source: from,
            destination: local,
            data: Bytes::copy_from_slice(data),
        };
        match inbox.try_send(datagram) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => drop_datagram("peer_busy", from),
            // The peer ended between lookup and send; it unregisters itself.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn drop_datagram(reason: &'static str, from: SocketAddr) {
    debug!(%from, reason, "WebRTC datagram dropped");
    metrics::get()
        .webrtc_datagrams_dropped
        .get_or_create(&label("reason", reason))
        .inc();
}

/// Our ufrag from a STUN Binding request (`USERNAME = ours:theirs`), or
/// `None` for anything else.
pub fn stun_ufrag(data: &[u8]) -> Option<&str> {
    // RFC 7983 §7: STUN starts with 0 or 1; cheap check before parsing.
    if !matches!(data.first(), Some(0..=3)) {
        return None;
    }
    let message = match StunMessage::parse(data) {
        Ok(m) => m,
        Err(e) => {
            warn_bad_stun(&e);
            return None;
        }
    };
    if !message.is_binding_request() {
        return None;
    }
    // `username()` borrows from `data`, so the ufrag can too.
    let name: &str = message.username()?;
    name.split_once(':').map(|(ours, _theirs)| ours)
}

fn warn_bad_stun(e: &impl std::fmt::Display) {
    metrics::get()
        .webrtc_errors
        .get_or_create(&label("kind", "bad_stun"))
        .inc();
    // debug, not warn: anyone can send these, and the metric counts them.
    debug!(error = %e, "malformed STUN on the WebRTC port");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with USERNAME "abcd:wxyz" (RFC 5389 §6, §15.3),
    /// built by hand rather than by the library under test.
    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06, 0x00, username.len() as u8];
        attr.extend_from_slice(username);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        // PRIORITY and a MESSAGE-INTEGRITY (not verified when routing).
        m.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x7f, 0x1e, 0xff]);
        m.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        m.extend_from_slice(&[0xaa; 20]);
        let body_len = (m.len() - 20) as u16;
        m[2..4].copy_from_slice(&body_len.to_be_bytes());
        m
    }

    #[test]
    fn ufrag_from_binding_request() {
        let m = binding_request(b"abcd:wxyz");
        assert_eq!(stun_ufrag(&m), Some("abcd"));
    }

    #[test]
    fn non_stun_and_broken_stun_have_no_ufrag() {
        // DTLS record (content type 22) and an RTP packet.
        assert_eq!(stun_ufrag(&[22, 0xfe, 0xfd, 0, 0]), None);
        assert_eq!(stun_ufrag(&[0x80, 0x60, 0, 1]), None);
        let mut m = binding_request(b"abcd:wxyz");
        m.truncate(m.len() - 6);
        assert_eq!(stun_ufrag(&m), None);
        assert_eq!(stun_ufrag(&[]), None);
    }

    #[tokio::test]
    async fn routes_by_ufrag_then_by_address() {
        let mux = UdpMux::bind(&[IpAddr::from([127, 0, 0, 1])], 0)
            .await
            .unwrap();
        let local = mux.local_addrs()[0];
        let (tx, mut rx) = mpsc::channel(4);
        mux.register("abcd", tx);
        let browser: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        // Non-STUN from an unknown address goes nowhere.
        mux.route(local, browser, &[22, 0xfe, 0xfd]);
        assert!(rx.try_recv().is_err());
        mux.route(local, browser, &binding_request(b"abcd:wxyz"));
        assert_eq!(rx.try_recv().unwrap().source, browser);
        // Now the address alone is enough.
        mux.route(local, browser, &[22, 0xfe, 0xfd]);
        assert_eq!(&rx.try_recv().unwrap().data[..], &[22, 0xfe, 0xfd]);
        mux.route(local, stranger, &binding_request(b"zzzz:wxyz"));
        assert!(rx.try_recv().is_err());
        mux.unregister("abcd");
        mux.route(local, browser, &[22, 0xfe, 0xfd]);
        assert!(rx.try_recv().is_err());
    }
}
