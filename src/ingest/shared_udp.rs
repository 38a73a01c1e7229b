//! The shared RTP port (`udp_shared` transport): one UDP socket (and its
//! RTCP neighbour) for every stream that uses it, demultiplexed by SSRC
//! through [`SsrcRouter`] before any parsing beyond the RTP header.
//!
//! One reader task owns the socket; each stream holds a [`SharedStream`]
//! whose bounded queue the reader fills. A stream that cannot keep up
//! loses its own packets (counted), never another stream's.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ssrc_router::{Route, RouteId, RouterError, SsrcRouter};
use super::udp::DatagramReader;
use crate::metrics::{self, label};

/// Datagrams queued per stream before its own packets are dropped: about
/// two seconds of a 4 Mbit/s stream.
const QUEUE_PACKETS: usize = 1024;

/// A datagram and the address it came from.
pub type Datagram = (Bytes, SocketAddr);

type Sink = mpsc::Sender<Datagram>;

/// The bound shared port and its routing table.
pub struct SharedUdpPort {
    pub port: u16,
    /// RTCP socket (port + 1): receiver reports leave from here.
    pub rtcp: Arc<UdpSocket>,
    router: Arc<Mutex<SsrcRouter<Sink>>>,
    stop: CancellationToken,
}

impl Drop for SharedUdpPort {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One stream's share of the port; unregisters on drop.
pub struct SharedStream {
    pub rx: mpsc::Receiver<Datagram>,
    id: RouteId,
    router: Arc<Mutex<SsrcRouter<Sink>>>,
    pub rtcp: Arc<UdpSocket>,
}

impl SharedStream {
    /// The SSRC this stream receives, once known (learned streams learn it
    /// from their first packet).
    pub fn ssrc(&self) -> Option<u32> {
        lock(&self.router).ssrc(self.id)
    }
}

impl Drop for SharedStream {
    fn drop(&mut self) {
        lock(&self.router).remove(self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SharedUdpPort {
    /// Bind `ip:port` and `ip:port+1` and start the reader.
    pub async fn bind(ip: IpAddr, port: u16) -> std::io::Result<Arc<Self>> {
        let rtp = UdpSocket::bind(SocketAddr::new(ip, port)).await?;
        let rtcp = UdpSocket::bind(SocketAddr::new(ip, port.wrapping_add(1))).await?;
        let _ = socket2::SockRef::from(&rtp).set_recv_buffer_size(16 << 20);
        let port = rtp.local_addr()?.port();
        let router = Arc::new(Mutex::new(SsrcRouter::new()));
        let stop = CancellationToken::new();
        let rtcp = Arc::new(rtcp);
        tokio::spawn(read_loop(rtp, rtcp.clone(), router.clone(), stop.clone()));
        Ok(Arc::new(Self {
            port,
            rtcp,
            router,
            stop,
        }))
    }

    /// Receive the packets of `ssrc`.
    pub fn subscribe(&self, ssrc: u32) -> Result<SharedStream, RouterError> {
        let (tx, rx) = mpsc::channel(QUEUE_PACKETS);
        let id = lock(&self.router).insert(ssrc, tx)?;
        Ok(self.stream(id, rx))
    }

    /// Receive the packets of the first unknown SSRC sent from `device_ip`.
    pub fn subscribe_learning(&self, device_ip: IpAddr) -> SharedStream {
        let (tx, rx) = mpsc::channel(QUEUE_PACKETS);
        let id = lock(&self.router).learn(device_ip, tx);
        self.stream(id, rx)
    }

    fn stream(&self, id: RouteId, rx: mpsc::Receiver<Datagram>) -> SharedStream {
        SharedStream {
            rx,
            id,
            router: self.router.clone(),
            rtcp: self.rtcp.clone(),
        }
    }

    /// Streams bound to an SSRC, and learners waiting for one.
    pub fn streams(&self) -> (usize, usize) {
        lock(&self.router).len()
    }
}

async fn read_loop(
    rtp: UdpSocket,
    rtcp: Arc<UdpSocket>,
    router: Arc<Mutex<SsrcRouter<Sink>>>,
    stop: CancellationToken,
) {
    let mut reader = DatagramReader::new();
    let mut rtcp_buf = [0u8; 1500];
    loop {
        let (data, from) = tokio::select! {
            _ = stop.cancelled() => return,
            // Devices' RTCP is drained so it cannot queue up; never parsed.
            _ = rtcp.recv_from(&mut rtcp_buf) => continue,
            r = reader.recv(&rtp) => match r {
                Ok(d) => d,
                Err(e) => {
                    debug!(error = %e, "shared RTP port receive error");
                    continue;
                }
            },
        };
        let m = metrics::get();
        m.rtp_packets_received.inc();
        m.rtp_bytes_received.inc_by(data.len() as u64);
        let mut table = lock(&router);
        let (sink, ssrc) = match table.route(&data, from.ip()) {
            Route::Stream(sink) => (sink.clone(), None),
            Route::Learned { sink, ssrc } => (sink.clone(), Some(ssrc)),
            Route::UnknownSsrc(ssrc) => {
                drop(table);
                m.shared_port_packets
                    .get_or_create(&label("outcome", "unknown_ssrc"))
                    .inc();
                debug!(%from, ssrc, "shared port: unknown SSRC dropped");
                continue;
            }
            Route::Rtcp => {
                drop(table);
                m.shared_port_packets
                    .get_or_create(&label("outcome", "rtcp"))
                    .inc();
                continue;
            }
            Route::NotRtp => {
                drop(table);
                m.shared_port_packets
                    .get_or_create(&label("outcome", "not_rtp"))
                    .inc();
                continue;
            }
        };
        drop(table);
        if let Some(ssrc) = ssrc {
            debug!(%from, ssrc, "shared port: SSRC learned");
            m.shared_port_packets
                .get_or_create(&label("outcome", "learned"))
                .inc();
        }
        let outcome = match sink.try_send((data, from)) {
            Ok(()) => "routed",
            Err(mpsc::error::TrySendError::Full(_)) => "queue_full",
            // The stream is going away; its registration follows.
            Err(mpsc::error::TrySendError::Closed(_)) => "closed",
        };
        m.shared_port_packets
            .get_or_create(&label("outcome", outcome))
            .inc();
    }
}
