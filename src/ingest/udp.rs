//! UDP datagram intake into pooled buffers.
//!
//! Datagrams are read into the spare capacity of one large `BytesMut` and
//! split off as `Bytes`, so every RTP payload, PES payload and NAL unit
//! downstream is a slice of the block it arrived in. When all slices of a
//! block are dropped (viewers done, GOP cache moved on) `BytesMut::reserve`
//! reclaims the same allocation; otherwise it takes a fresh block. Either
//! way the cost is one allocation per block, never one per packet.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;

/// Largest datagram we accept; anything larger is truncated by the kernel
/// and then rejected by the RTP parser.
const MAX_DATAGRAM: usize = 65_536;
/// Block size: room for many packets so reclaiming pays off.
const BLOCK: usize = 1 << 20;

/// Reads datagrams as `Bytes` slices of pooled blocks.
pub struct DatagramReader {
    buf: BytesMut,
}

impl Default for DatagramReader {
    fn default() -> Self {
        Self::new()
    }
}

impl DatagramReader {
    pub fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(BLOCK),
        }
    }

    /// The next datagram and its sender.
    pub async fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<(Bytes, SocketAddr)> {
        if self.buf.capacity() - self.buf.len() < MAX_DATAGRAM {
            // Reclaims the block in place when nothing references it.
            self.buf.reserve(BLOCK);
        }
        let (_, from) = socket.recv_buf_from(&mut self.buf).await?;
        Ok((self.buf.split().freeze(), from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_share_one_block() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        tx.send_to(b"first", to).await.unwrap();
        tx.send_to(b"second", to).await.unwrap();
        let mut reader = DatagramReader::new();
        let (a, from) = reader.recv(&rx).await.unwrap();
        let (b, _) = reader.recv(&rx).await.unwrap();
        assert_eq!(&a[..], b"first");
        assert_eq!(&b[..], b"second");
        assert_eq!(from, tx.local_addr().unwrap());
        // Adjacent in the same allocation: no per-packet buffer.
        assert_eq!(a.as_ptr() as usize + a.len(), b.as_ptr() as usize);
    }
}
