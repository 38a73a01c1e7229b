//! One stream's incoming RTP packets, whatever the transport: datagrams of
//! its own UDP port, its share of the shared port, or RFC 4571 frames of a
//! TCP connection. The media session reads `Bytes` packets from here and
//! never knows which it is.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use super::port_pool::BoundPair;
use super::rfc4571::{FramingError, Rfc4571Decoder};
use super::shared_udp::SharedStream;
use super::udp::DatagramReader;
use crate::metrics::{self, label};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("device closed the TCP media connection")]
    Closed,
    #[error("RFC 4571 framing: {0}")]
    Framing(FramingError),
}

impl IngestError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Closed => "closed",
            Self::Framing(e) => e.kind(),
        }
    }
}

/// Where a stream's packets come from.
pub enum PacketSource {
    Udp {
        pair: BoundPair,
        reader: DatagramReader,
    },
    Shared(SharedStream),
    Tcp {
        stream: TcpStream,
        peer: SocketAddr,
        decoder: Rfc4571Decoder,
    },
}

impl PacketSource {
    pub fn udp(pair: BoundPair) -> Self {
        Self::Udp {
            pair,
            reader: DatagramReader::new(),
        }
    }

    pub fn tcp(stream: TcpStream) -> std::io::Result<Self> {
        let peer = stream.peer_addr()?;
        Ok(Self::Tcp {
            stream,
            peer,
            decoder: Rfc4571Decoder::default(),
        })
    }

    /// Whether packets may arrive reordered (UDP) and need the reorder
    /// buffer.
    pub fn unordered(&self) -> bool {
        !matches!(self, Self::Tcp { .. })
    }

    /// The socket receiver reports leave from (UDP only: RTCP on TCP would
    /// share the connection, which GB devices do not expect).
    pub fn rtcp_socket(&self) -> Option<&UdpSocket> {
        match self {
            Self::Udp { pair, .. } => Some(&pair.rtcp),
            Self::Shared(s) => Some(&s.rtcp),
            Self::Tcp { .. } => None,
        }
    }

    /// Payload bytes copied by the transport itself (TCP block changes).
    pub fn bytes_copied(&self) -> u64 {
        match self {
            Self::Tcp { decoder, .. } => decoder.stats().bytes_copied,
            _ => 0,
        }
    }

    /// The next packet and, for UDP, its sender. Cancel-safe.
    pub async fn recv(&mut self) -> Result<(Bytes, Option<SocketAddr>), IngestError> {
        match self {
            Self::Udp { pair, reader } => {
                let mut rtcp_buf = [0u8; 1500];
                loop {
                    tokio::select! {
                        r = reader.recv(&pair.rtp) => {
                            let (data, from) = r?;
                            let m = metrics::get();
                            m.rtp_packets_received.inc();
                            m.rtp_bytes_received.inc_by(data.len() as u64);
                            return Ok((data, Some(from)));
                        }
                        // The device's RTCP is drained so it cannot queue
                        // up; it never reaches the RTP path.
                        _ = pair.rtcp.recv_from(&mut rtcp_buf) => {}
                    }
                }
            }
            Self::Shared(s) => match s.rx.recv().await {
                Some((data, from)) => Ok((data, Some(from))),
                None => Err(IngestError::Closed),
            },
            Self::Tcp {
                stream,
                peer,
                decoder,
            } => loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        metrics::get().rtp_packets_received.inc();
                        return Ok((frame, Some(*peer)));
                    }
                    Ok(None) => {}
                    Err(e) if e.is_fatal() => return Err(IngestError::Framing(e)),
                    Err(e) => {
                        metrics::get()
                            .tcp_media_errors
                            .get_or_create(&label("kind", e.kind()))
                            .inc();
                        debug!(%peer, "TCP media: {e}");
                        continue;
                    }
                }
                let n = stream.read_buf(decoder.read_buf()).await?;
                if n == 0 {
                    return Err(IngestError::Closed);
                }
                decoder.filled(n);
                let m = metrics::get();
                m.rtp_bytes_received.inc_by(n as u64);
            },
        }
    }
}
