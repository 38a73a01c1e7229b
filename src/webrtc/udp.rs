//! The one UDP port every WebRTC peer shares, and the routing of each
//! datagram to its peer.
//!
//! ICE (RFC 8445 §7.2.2) makes the browser's first packet a STUN Binding
//! request whose USERNAME is `our-ufrag:their-ufrag`, and every peer has
//! its own ufrag: that names the peer. The ufrag travels in clear in every
//! Binding request, so it proves nothing: the request must also carry a
//! MESSAGE-INTEGRITY made with the peer's ICE password (RFC 8445 §7.2.2,
//! RFC 5389 §15.4), which only the browser that got our SDP answer knows.
//! Only then is the remote address remembered, so DTLS, SRTCP and later
//! STUN from that address go to the same peer without parsing (RFC 7983
//! demultiplexing happens inside str0m); and at most
//! [`MAX_ROUTES_PER_PEER`] addresses per peer. Datagrams from an address
//! nobody claimed are dropped and counted.
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
/// Remote addresses one peer may be reached from: a browser tries a few
/// candidate pairs (host, reflexive, per interface), never dozens.
pub const MAX_ROUTES_PER_PEER: usize = 8;

/// A datagram for a peer.
#[derive(Debug)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Bytes,
}

pub type Inbox = mpsc::Sender<Datagram>;

/// A peer as the mux knows it.
#[derive(Clone)]
struct PeerEntry {
    inbox: Inbox,
    /// Our ICE password for it: the MESSAGE-INTEGRITY key of its requests.
    ice_pwd: String,
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, PeerEntry>,
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

    /// Route datagrams whose STUN USERNAME starts with `ufrag`, and whose
    /// MESSAGE-INTEGRITY verifies with `ice_pwd`, to `inbox`.
    pub fn register(&self, ufrag: &str, ice_pwd: &str, inbox: Inbox) {
        self.routes().by_ufrag.insert(
            ufrag.to_owned(),
            PeerEntry {
                inbox,
                ice_pwd: ice_pwd.to_owned(),
            },
        );
    }

    /// Forget a peer and every address it was reached from.
    pub fn unregister(&self, ufrag: &str) {
        let mut routes = self.routes();
        routes.by_ufrag.remove(ufrag);
        for key in routes.addrs_of.remove(ufrag).unwrap_or_default() {
            routes.by_addr.remove(&key);
        }
        metrics::get()
            .webrtc_routes
            .set(routes.by_addr.len() as i64);
    }

    /// Remote addresses routed now.
    pub fn route_count(&self) -> usize {
        self.routes().by_addr.len()
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
                None => match verified_ufrag(data, &routes.by_ufrag) {
                    Ok(ufrag) => {
                        let Some(peer) = routes.by_ufrag.get(&ufrag).cloned() else {
                            return;
                        };
                        let claimed = routes.addrs_of.entry(ufrag).or_default();
                        if claimed.len() >= MAX_ROUTES_PER_PEER {
                            drop_datagram("route_cap", from);
                            None
                        } else {
                            claimed.push((local, from));
                            routes.by_addr.insert((local, from), peer.inbox.clone());
                            metrics::get()
                                .webrtc_routes
                                .set(routes.by_addr.len() as i64);
                            Some(peer.inbox)
                        }
                    }
                    Err(reason) => {
                        drop_datagram(reason, from);
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

/// The ufrag of a Binding request for a known peer whose integrity checks
/// out, or the drop reason.
fn verified_ufrag(data: &[u8], peers: &HashMap<String, PeerEntry>) -> Result<String, &'static str> {
    let Some(message) = binding_request(data) else {
        return Err("unknown_address");
    };
    let Some((ours, _theirs)) = message.username().and_then(|n| n.split_once(':')) else {
        return Err("unknown_address");
    };
    let Some(peer) = peers.get(ours) else {
        return Err("unknown_ufrag");
    };
    if !message.verify(peer.ice_pwd.as_bytes(), sha1_hmac) {
        return Err("bad_integrity");
    }
    Ok(ours.to_owned())
}

/// HMAC-SHA1 (RFC 2104) from the crypto provider str0m itself uses.
fn sha1_hmac(key: &[u8], payloads: &[&[u8]]) -> [u8; 20] {
    static PROVIDER: std::sync::OnceLock<str0m::crypto::CryptoProvider> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(str0m::crypto::from_feature_flags)
        .sha1_hmac_provider
        .sha1_hmac(key, payloads)
}

fn drop_datagram(reason: &'static str, from: SocketAddr) {
    debug!(%from, reason, "WebRTC datagram dropped");
    metrics::get()
        .webrtc_datagrams_dropped
        .get_or_create(&label("reason", reason))
        .inc();
}

/// A STUN Binding request, or `None` for anything else.
fn binding_request(data: &[u8]) -> Option<StunMessage<'_>> {
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
    message.is_binding_request().then_some(message)
}

/// Our ufrag from a STUN Binding request (`USERNAME = ours:theirs`), or
/// `None` for anything else. Unverified: routing uses [`UdpMux::route`].
pub fn stun_ufrag(data: &[u8]) -> Option<&str> {
    let message = binding_request(data)?;
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

    /// A Binding request signed with `pwd` (or not signed).
    fn signed_request(username: &str, pwd: Option<&str>) -> Vec<u8> {
        use str0m::ice::TransId;
        let msg = StunMessage::binding_request(username, TransId::new(), true, 7, 100, false);
        let mut buf = vec![0u8; 512];
        let n = msg
            .to_bytes(pwd.map(str::as_bytes), &mut buf, sha1_hmac)
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn routes_by_verified_ufrag_then_by_address() {
        let mux = UdpMux::bind(&[IpAddr::from([127, 0, 0, 1])], 0)
            .await
            .unwrap();
        let local = mux.local_addrs()[0];
        let (tx, mut rx) = mpsc::channel(4);
        mux.register("abcd", "the-ice-password-of-abcd", tx);
        let browser: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        // Non-STUN from an unknown address goes nowhere.
        mux.route(local, browser, &[22, 0xfe, 0xfd]);
        assert!(rx.try_recv().is_err());
        // The right ufrag without the password: no route.
        mux.route(local, stranger, &binding_request(b"abcd:wxyz"));
        mux.route(local, stranger, &signed_request("abcd:wxyz", Some("guess")));
        mux.route(local, stranger, &signed_request("abcd:wxyz", None));
        assert!(rx.try_recv().is_err());
        assert_eq!(mux.route_count(), 0);
        mux.route(
            local,
            browser,
            &signed_request("abcd:wxyz", Some("the-ice-password-of-abcd")),
        );
        assert_eq!(rx.try_recv().unwrap().source, browser);
        assert_eq!(mux.route_count(), 1);
        // Now the address alone is enough.
        mux.route(local, browser, &[22, 0xfe, 0xfd]);
        assert_eq!(&rx.try_recv().unwrap().data[..], &[22, 0xfe, 0xfd]);
        mux.route(local, stranger, &binding_request(b"zzzz:wxyz"));
        assert!(rx.try_recv().is_err());
        mux.unregister("abcd");
        mux.route(local, browser, &[22, 0xfe, 0xfd]);
        assert!(rx.try_recv().is_err());
        assert_eq!(mux.route_count(), 0);
    }

    #[tokio::test]
    async fn routes_per_peer_are_capped() {
        let mux = UdpMux::bind(&[IpAddr::from([127, 0, 0, 1])], 0)
            .await
            .unwrap();
        let local = mux.local_addrs()[0];
        let (tx, _rx) = mpsc::channel(64);
        mux.register("abcd", "pw", tx);
        for port in 0..20u16 {
            let from = SocketAddr::from(([127, 0, 0, 1], 6000 + port));
            mux.route(local, from, &signed_request("abcd:x", Some("pw")));
        }
        assert_eq!(mux.route_count(), MAX_ROUTES_PER_PEER);
    }
}
