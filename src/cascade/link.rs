//! The path one upstream's SIP messages take to the upper platform
//! (GB/T 28181-2016 §4.3: SIP over UDP or TCP; RFC 3261 §18).
//!
//! Everything the request-serving code sends goes through a [`Link`], so
//! it does not care how the bytes travel:
//!
//! - UDP: one socket per upstream, one datagram per message. Our
//!   requests sent with [`Link::send_request`] are tracked for
//!   retransmission until answered ([`super::retransmit`], RFC 3261
//!   §17.1.2.2); the upstream's driver resends what is due.
//! - TCP: one connection per upstream, made by us to the upper platform.
//!   Our requests, our answers to its requests and its requests all share
//!   it (RFC 3261 §18.2.2: a response goes back on the connection its
//!   request came on). The reader frames messages by headers and
//!   Content-Length ([`stream_message_len`]), at most [`wire::MAX_MESSAGE`]
//!   bytes; a writer task owns the write half, so a peer that stops
//!   reading (zero window) costs a sender at most [`WRITE_TIMEOUT`] and
//!   then closes the connection instead of hanging anyone.
//!
//! [`wire::MAX_MESSAGE`]: super::wire::MAX_MESSAGE

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::retransmit::Retransmissions;
use super::wire::{self, Transport};
use crate::sip::screen::{Rejection, stream_message_len};

/// How long connecting to the upper platform may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one message may take to be queued and written.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages waiting for the writer; a sender beyond it waits (bounded).
const WRITE_QUEUE: usize = 64;
/// Bytes read from the connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A cheap handle for sending to the upper platform, cloned into tasks.
#[derive(Clone)]
pub enum Link {
    /// One UDP socket per upstream; each message is one datagram.
    Udp(Arc<UdpLink>),
    /// The upstream's TCP connection, whichever is current: tasks holding
    /// the handle use the new connection after a reconnect.
    Tcp(Arc<Mutex<Option<mpsc::Sender<Vec<u8>>>>>),
}

/// The UDP socket of an upstream and our requests on it awaiting a
/// response.
pub struct UdpLink {
    pub socket: Arc<UdpSocket>,
    pub pending: Mutex<Retransmissions>,
    /// Woken when a request is tracked, so the driver re-reads
    /// [`Retransmissions::poll_timeout`].
    pub tracked: tokio::sync::Notify,
}

impl Link {
    /// A UDP link over `socket`, tracking nothing yet.
    pub fn udp(socket: Arc<UdpSocket>) -> Self {
        Link::Udp(Arc::new(UdpLink {
            socket,
            pending: Mutex::new(Retransmissions::default()),
            tracked: tokio::sync::Notify::new(),
        }))
    }

    /// Send a request of ours (not a response) to `to`; over UDP it is
    /// resent until answered (RFC 3261 §17.1.2.2). Its Call-ID and CSeq,
    /// which the answer carries, are read from the bytes; a request
    /// without them is sent once.
    pub async fn send_request(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        let sent = self.send(bytes, to).await;
        if let Link::Udp(udp) = self
            && let Ok(m) = wire::Message::parse(bytes)
            && let (Ok(call_id), Ok((cseq, _))) = (m.call_id(), m.cseq())
        {
            // Tracked even when the send failed: a transient error is
            // one more lost datagram.
            udp.pending.lock().unwrap_or_else(|e| e.into_inner()).track(
                (call_id.to_owned(), cseq),
                bytes.to_vec(),
                to,
                std::time::Instant::now(),
            );
            udp.tracked.notify_one();
        }
        sent
    }

    /// A TCP link with no connection yet.
    pub fn tcp() -> Self {
        Link::Tcp(Arc::new(Mutex::new(None)))
    }

    /// Send one whole SIP message to `to` (over TCP: to the peer of the
    /// connection, which is the upper platform).
    pub async fn send(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Link::Udp(udp) => udp.socket.send_to(bytes, to).await.map(|_| ()),
            Link::Tcp(current) => {
                let tx = current
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
                tx.send_timeout(bytes.to_vec(), WRITE_TIMEOUT)
                    .await
                    .map_err(|e| match e {
                        mpsc::error::SendTimeoutError::Timeout(_) => {
                            std::io::Error::from(std::io::ErrorKind::TimedOut)
                        }
                        mpsc::error::SendTimeoutError::Closed(_) => {
                            std::io::Error::from(std::io::ErrorKind::NotConnected)
                        }
                    })
            }
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            Link::Udp(_) => Transport::Udp,
            Link::Tcp(_) => Transport::Tcp,
        }
    }

    /// Whether the transport delivers by itself, so no SIP retransmission
    /// is due (RFC 3261 §17.1.2.2, §13.3.1.4).
    pub fn reliable(&self) -> bool {
        self.transport().is_reliable()
    }

    /// Make `conn` the connection this TCP link sends over.
    fn attach(&self, tx: mpsc::Sender<Vec<u8>>) {
        if let Link::Tcp(current) = self {
            *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        }
    }

    /// Forget the current TCP connection (its writer ends once idle).
    pub fn detach(&self) {
        if let Link::Tcp(current) = self {
            *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// Why a TCP connection to the upper platform ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connecting to {0}: timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout(SocketAddr),
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("closed by the upper platform")]
    Closed,
    #[error("reading: {0}")]
    Read(std::io::Error),
    #[error("writing failed or timed out")]
    Write,
    #[error("unframable SIP on the connection ({0:?})")]
    Framing(Rejection),
}

impl ConnectionError {
    /// Label for `camgate_cascade_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ConnectTimeout(_) | Self::Connect(..) => "tcp_connect",
            Self::Closed | Self::Read(_) | Self::Write => "tcp_connection_lost",
            Self::Framing(_) => "tcp_framing",
        }
    }
}

/// The receiving side of one TCP connection to the upper platform.
pub struct Connection {
    reader: OwnedReadHalf,
    buf: Vec<u8>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Cancelled by the writer when a write fails or times out.
    write_failed: CancellationToken,
}

impl Connection {
    /// Connect from `local` (port 0: any) to `target` within
    /// [`CONNECT_TIMEOUT`] and attach the connection to `link`.
    pub async fn open(
        link: &Link,
        local: SocketAddr,
        target: SocketAddr,
    ) -> Result<Self, ConnectionError> {
        let connect = async {
            let socket = if target.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            // A fixed local port is reused across reconnects.
            socket.set_reuseaddr(true)?;
            socket.bind(local)?;
            socket.connect(target).await
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ConnectionError::ConnectTimeout(target))?
            .map_err(|e| ConnectionError::Connect(target, e))?;
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_err(|e| ConnectionError::Connect(target, e))?;
        let (reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let write_failed = CancellationToken::new();
        let failed = write_failed.clone();
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                let wrote = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&bytes)).await;
                if !matches!(wrote, Ok(Ok(()))) {
                    // A partial write leaves the stream unframable.
                    failed.cancel();
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        link.attach(tx);
        Ok(Self {
            reader,
            buf: Vec::with_capacity(READ_CHUNK),
            peer: target,
            local,
            write_failed,
        })
    }

    /// The next whole message. CRLF keepalives (RFC 5626 §3.5.1) are
    /// skipped. Cancel-safe: bytes read stay in the buffer.
    pub async fn recv(&mut self) -> Result<Vec<u8>, ConnectionError> {
        loop {
            if let Some(n) = stream_message_len(&self.buf).map_err(ConnectionError::Framing)? {
                let message: Vec<u8> = self.buf.drain(..n).collect();
                if message.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    continue;
                }
                return Ok(message);
            }
            self.buf.reserve(READ_CHUNK);
            let n = tokio::select! {
                _ = self.write_failed.cancelled() => return Err(ConnectionError::Write),
                r = self.reader.read_buf(&mut self.buf) => r.map_err(ConnectionError::Read)?,
            };
            if n == 0 {
                return Err(ConnectionError::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK1\r\nContent-Length: 4\r\n\r\nbody";

    /// A connection to a loopback listener, and the listener's side.
    async fn pair() -> (Link, Connection, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let link = Link::tcp();
        let (conn, accepted) = tokio::join!(
            Connection::open(&link, "127.0.0.1:0".parse().unwrap(), target),
            listener.accept()
        );
        (link, conn.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn messages_are_framed_across_reads_and_keepalives_skipped() {
        let (link, mut conn, mut peer) = pair().await;
        // A CRLF keepalive, then one message split in two writes, then
        // two messages in one write.
        peer.write_all(b"\r\n\r\n").await.unwrap();
        peer.write_all(&OPTIONS[..30]).await.unwrap();
        peer.flush().await.unwrap();
        let rest = [&OPTIONS[30..], OPTIONS, OPTIONS].concat();
        let writer = tokio::spawn(async move {
            peer.write_all(&rest).await.unwrap();
            peer
        });
        for _ in 0..3 {
            assert_eq!(conn.recv().await.unwrap(), OPTIONS);
        }
        // What we send arrives whole at the peer.
        let mut peer = writer.await.unwrap();
        link.send(b"ours", conn.peer).await.unwrap();
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ours");
        drop(peer);
        assert!(matches!(conn.recv().await, Err(ConnectionError::Closed)));
    }

    #[tokio::test]
    async fn unframable_input_ends_the_connection() {
        let (_link, mut conn, mut peer) = pair().await;
        peer.write_all(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n")
            .await
            .unwrap();
        let err = conn.recv().await.unwrap_err();
        assert_eq!(err.kind(), "tcp_framing", "{err}");
        // Headers that never end, past the cap.
        let (_link, mut conn, mut peer) = pair().await;
        let junk = vec![b'a'; super::super::wire::MAX_MESSAGE + 10];
        tokio::spawn(async move { peer.write_all(&junk).await });
        let err = conn.recv().await.unwrap_err();
        assert_eq!(err.kind(), "tcp_framing", "{err}");
    }

    #[tokio::test]
    async fn udp_requests_are_tracked_until_answered_and_responses_are_not() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = peer.local_addr().unwrap();
        let link = Link::udp(Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()));
        let request = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1\r\nCall-ID: c1@x\r\nCSeq: 7 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK2\r\nCall-ID: c2@x\r\nCSeq: 3 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        link.send_request(request, to).await.unwrap();
        link.send(response, to).await.unwrap();
        let Link::Udp(udp) = &link else {
            unreachable!()
        };
        let mut pending = udp.pending.lock().unwrap();
        assert_eq!(pending.len(), 1);
        assert!(!pending.answered(&("c2@x".to_owned(), 3)));
        assert!(pending.answered(&("c1@x".to_owned(), 7)));
        assert!(!link.reliable());
    }

    #[tokio::test]
    async fn sending_without_a_connection_says_so() {
        let link = Link::tcp();
        let err = link
            .send(b"x", "127.0.0.1:9".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
        assert!(link.reliable());
    }
}
