//! RTP receive port pool: even RTP port + odd RTCP port (RFC 3550 §11),
//! bound before they are offered, so an offered port is always ours.
//!
//! Ports are handed out round-robin rather than lowest-first: a port that was
//! just released may still receive stray packets from the device of the
//! previous stream, and reusing it at once invites cross-talk.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no free RTP port in {min}-{max}")]
    Exhausted { min: u16, max: u16 },
}

struct PoolState {
    next: u16,
    in_use: HashSet<u16>,
}

/// Shared pool of RTP/RTCP port pairs.
#[derive(Clone)]
pub struct PortPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    state: Arc<Mutex<PoolState>>,
}

/// A bound RTP/RTCP socket pair; the port returns to the pool on drop.
pub struct BoundPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
    _lease: PortLease,
}

struct PortLease {
    port: u16,
    state: Arc<Mutex<PoolState>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.in_use.remove(&self.port) {
            metrics::get().rtp_ports_in_use.dec();
        }
    }
}

impl PortPool {
    /// `min..=max`; only even ports carry RTP, each with the next odd port.
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        let first = min + (min % 2);
        let capacity = if max <= first {
            0
        } else {
            i64::from((max - first).div_ceil(2))
        };
        metrics::get().rtp_ports_capacity.set(capacity);
        Self {
            ip,
            min: first,
            max,
            state: Arc::new(Mutex::new(PoolState {
                next: first,
                in_use: HashSet::new(),
            })),
        }
    }

    /// Number of RTP ports the pool can hand out.
    pub fn capacity(&self) -> usize {
        if self.max <= self.min {
            return 0;
        }
        usize::from((self.max - self.min).div_ceil(2))
    }

    /// Reserve a port number not in use by this pool, round-robin.
    fn reserve(&self, skip: &HashSet<u16>) -> Option<u16> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slots = self.capacity();
        for _ in 0..slots {
            let port = st.next;
            st.next = if port.saturating_add(3) > self.max {
                self.min
            } else {
                port + 2
            };
            if !st.in_use.contains(&port) && !skip.contains(&port) {
                st.in_use.insert(port);
                metrics::get().rtp_ports_in_use.inc();
                return Some(port);
            }
        }
        None
    }

    fn release(&self, port: u16) {
        drop(PortLease {
            port,
            state: self.state.clone(),
        });
    }

    /// Bind an RTP/RTCP pair. Ports another process holds are skipped.
    pub async fn bind_pair(&self) -> Result<BoundPair, PortError> {
        let mut busy = HashSet::new();
        while let Some(port) = self.reserve(&busy) {
            let rtp = UdpSocket::bind(SocketAddr::new(self.ip, port)).await;
            let rtcp = UdpSocket::bind(SocketAddr::new(self.ip, port + 1)).await;
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => {
                    enlarge_receive_buffer(&rtp);
                    return Ok(BoundPair {
                        rtp,
                        rtcp,
                        port,
                        _lease: PortLease {
                            port,
                            state: self.state.clone(),
                        },
                    });
                }
                _ => {
                    tracing::debug!(port, "RTP port busy elsewhere, skipping");
                    self.release(port);
                    busy.insert(port);
                }
            }
        }
        metrics::get().rtp_port_exhausted.inc();
        Err(PortError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }
}

/// A TCP socket on a pool port (TCP media, GB/T 28181-2016 Annex F.2);
/// the port returns to the pool on drop.
pub struct BoundTcp<T> {
    pub socket: T,
    pub port: u16,
    _lease: PortLease,
}

/// Keeps a pool port leased after its socket has been taken apart (a
/// [`BoundTcp`] socket turned into a connected stream).
pub struct PortHold {
    _lease: PortLease,
}

impl<T> BoundTcp<T> {
    /// The socket, and the lease that keeps its port out of the pool.
    pub fn split(self) -> (T, PortHold) {
        (
            self.socket,
            PortHold {
                _lease: self._lease,
            },
        )
    }
}

impl PortPool {
    /// Bind `f(addr)` on the next pool port it succeeds on.
    fn bind_tcp_with<T>(
        &self,
        f: impl Fn(SocketAddr) -> std::io::Result<T>,
    ) -> Result<BoundTcp<T>, PortError> {
        let mut busy = HashSet::new();
        while let Some(port) = self.reserve(&busy) {
            match f(SocketAddr::new(self.ip, port)) {
                Ok(socket) => {
                    return Ok(BoundTcp {
                        socket,
                        port,
                        _lease: PortLease {
                            port,
                            state: self.state.clone(),
                        },
                    });
                }
                Err(e) => {
                    tracing::debug!(port, error = %e, "TCP media port busy, skipping");
                    self.release(port);
                    busy.insert(port);
                }
            }
        }
        metrics::get().rtp_port_exhausted.inc();
        Err(PortError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }

    /// A listener for `tcp_passive`: the device connects to it.
    pub fn bind_tcp_listener(&self) -> Result<BoundTcp<TcpListener>, PortError> {
        self.bind_tcp_with(|addr| {
            let s = tcp_socket(addr)?;
            s.bind(addr)?;
            s.listen(4)
        })
    }

    /// A bound, unconnected socket for `tcp_active`: we offer its port and
    /// later connect from it, since some devices check the source port.
    pub fn bind_tcp_socket(&self) -> Result<BoundTcp<TcpSocket>, PortError> {
        self.bind_tcp_with(|addr| {
            let s = tcp_socket(addr)?;
            s.bind(addr)?;
            Ok(s)
        })
    }
}

fn tcp_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A previous stream's connection on this port may sit in TIME_WAIT.
    s.set_reuseaddr(true)?;
    Ok(s)
}

/// A burst of a keyframe at several Mbit/s overflows the default socket
/// buffer; ask for more (the kernel caps it at rmem_max).
fn enlarge_receive_buffer(socket: &UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(4 << 20);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn pairs_are_even_distinct_and_recycled() {
        // Find a free 8-port window so the test does not collide with others.
        let base = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = s.local_addr().unwrap().port();
            (p.min(60000) & !1).max(20000)
        };
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), base, base + 3);
        assert_eq!(pool.capacity(), 2);
        let a = pool.bind_pair().await.unwrap();
        let b = pool.bind_pair().await.unwrap();
        assert_eq!(a.port % 2, 0);
        assert_ne!(a.port, b.port);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.port + 1);
        assert!(matches!(
            pool.bind_pair().await,
            Err(PortError::Exhausted { .. })
        ));
        let freed = a.port;
        drop(a);
        let c = pool.bind_pair().await.unwrap();
        assert_eq!(c.port, freed);
    }

    #[tokio::test]
    async fn busy_ports_are_skipped() {
        let base = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = s.local_addr().unwrap().port();
            (p.min(60000) & !1).max(20000)
        };
        let squatter = match std::net::UdpSocket::bind(("127.0.0.1", base)) {
            Ok(s) => s,
            Err(_) => return, // someone else holds it; nothing to prove here
        };
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), base, base + 3);
        let pair = pool.bind_pair().await.unwrap();
        assert_eq!(pair.port, base + 2);
        drop(squatter);
    }
}
