//! UDP datagram intake into small pooled blocks.
//!
//! Datagrams are read into the spare capacity of a `BytesMut` block and
//! split off as `Bytes`, so every RTP payload, PES payload and NAL unit
//! downstream is a slice of the block it arrived in. When all slices of a
//! block are dropped (viewers done, GOP cache moved on) `BytesMut::reserve`
//! reclaims the same allocation; otherwise it takes a fresh block. Either
//! way the cost is one allocation per block, never one per packet.
//!
//! Blocks are small (16 KiB, about a quarter of a second of a 0.5 Mbit/s
//! stream) because a block stays resident while any slice of it lives: the
//! GOP cache holds the last keyframe onward, so it pins the block its
//! keyframe starts in, every block since and the one being filled. With
//! 1 MiB blocks that was one to two MiB per stream; with 16 KiB it is the
//! GOP's own bytes plus about 24 KiB (issue 17). Small blocks need the
//! datagram's true size: reads use `MSG_TRUNC` (recv(2), Linux), which
//! reports the full length of a datagram larger than the room given. Such
//! a datagram is dropped and counted, and the room kept free before each
//! read grows to its size, so a source sending datagrams larger than an
//! Ethernet MTU loses one packet once.

use std::mem::MaybeUninit;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Largest datagram we accept (the UDP maximum payload).
const MAX_DATAGRAM: usize = 65_536;
/// Block size: room for about ten packets, small enough that a block
/// pinned by one cached frame costs little, large enough that a 0.5 Mbit/s
/// stream takes four allocations a second.
const BLOCK: usize = 16 * 1024;
/// Room kept free before each read until a larger datagram is seen: an
/// Ethernet MTU with room to spare (RTP senders packetize to the path
/// MTU). The tail of a block left unused is at most this.
const FIRST_ROOM: usize = 2_048;

/// Reads datagrams as `Bytes` slices of pooled blocks.
pub struct DatagramReader {
    buf: BytesMut,
    /// Free bytes wanted before each read: the largest datagram seen.
    room: usize,
    /// Datagrams larger than the room at the time, dropped.
    truncated: u64,
}

impl Default for DatagramReader {
    fn default() -> Self {
        Self::new()
    }
}

impl DatagramReader {
    pub fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            room: FIRST_ROOM,
            truncated: 0,
        }
    }

    /// Datagrams dropped for being larger than any seen before them.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The next datagram and its sender. Cancel-safe: nothing is consumed
    /// from the socket until a read completes.
    pub async fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<(Bytes, SocketAddr)> {
        loop {
            if self.buf.capacity() - self.buf.len() < self.room {
                // Reclaims the block in place when nothing references it.
                self.buf.reserve(BLOCK.max(2 * self.room));
            }
            socket.readable().await?;
            let spare = self.buf.spare_capacity_mut();
            let room = spare.len();
            let read = socket.try_io(Interest::READABLE, || recv_trunc(socket, spare));
            let (len, from) = match read {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if len > room {
                self.truncated += 1;
                self.room = len.min(MAX_DATAGRAM);
                tracing::debug!(len, room, "datagram larger than the read room; dropped");
                continue;
            }
            // SAFETY: the kernel wrote `len` (<= room) bytes into the spare
            // capacity starting at the current length.
            unsafe { self.buf.set_len(self.buf.len() + len) };
            return Ok((self.buf.split().freeze(), from));
        }
    }
}

/// recvfrom(2) with `MSG_TRUNC`: returns the datagram's real length even
/// when only part of it fit.
fn recv_trunc(
    socket: &UdpSocket,
    buf: &mut [MaybeUninit<u8>],
) -> std::io::Result<(usize, SocketAddr)> {
    let (len, addr) = socket2::SockRef::from(socket).recv_from_with_flags(buf, libc::MSG_TRUNC)?;
    let from = addr
        .as_socket()
        .ok_or_else(|| std::io::Error::other("datagram from a non-IP address"))?;
    Ok((len, from))
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

    #[tokio::test]
    async fn a_datagram_above_the_room_is_dropped_once_then_fits() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let big = vec![7u8; 40_000];
        tx.send_to(&big, to).await.unwrap();
        tx.send_to(&big, to).await.unwrap();
        tx.send_to(b"after", to).await.unwrap();
        let mut reader = DatagramReader::new();
        let (a, _) = reader.recv(&rx).await.unwrap();
        assert_eq!(reader.truncated(), 1);
        assert_eq!(a.len(), 40_000);
        assert!(a.iter().all(|&b| b == 7));
        let (b, _) = reader.recv(&rx).await.unwrap();
        assert_eq!(&b[..], b"after");
        assert_eq!(reader.truncated(), 1);
    }

    #[tokio::test]
    async fn blocks_are_small_and_reclaimed_when_released() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let pkt = vec![1u8; 1400];
        let mut reader = DatagramReader::new();
        let mut first = None;
        // Three blocks' worth, each datagram dropped at once: one block
        // serves them all.
        for _ in 0..3 * BLOCK / 1400 {
            tx.send_to(&pkt, to).await.unwrap();
            let (d, _) = reader.recv(&rx).await.unwrap();
            let start = d.as_ptr() as usize;
            let base = *first.get_or_insert(start);
            assert!(
                start >= base && start < base + BLOCK,
                "a fresh block was taken"
            );
        }
        assert!(reader.buf.capacity() <= BLOCK);
    }
}
