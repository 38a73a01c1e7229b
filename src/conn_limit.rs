//! At most `limits.max_connections_per_ip` TCP connections per peer IP on
//! one listener (issue 13, scope 6).
//!
//! One host opening thousands of idle connections would otherwise use up
//! the process's file descriptors and every listener with it. Each listener
//! (SIP TCP, RTSP, HTTP, telecom link) owns a [`ConnLimiter`]; an accepted
//! connection holds a [`ConnPermit`] for as long as it lives, and dropping
//! the permit frees the slot, so no path can forget to give it back.
//!
//! The map holds only peers with a connection open now: its size is bounded
//! by the open connections, which the per-IP cap and the OS bound in turn.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::metrics::{self, label};

/// Connection counts per peer on one listener.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Listener name, the `listener` label of the refusal metric.
    listener: &'static str,
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; its slot is freed on drop.
#[derive(Debug)]
pub struct ConnPermit {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// `max_per_ip == 0` admits everyone (the limit is off).
    pub fn new(listener: &'static str, max_per_ip: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                listener,
                max_per_ip,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Admit one more connection from `ip`, or refuse it (counted in
    /// `camgate_connections_refused_total{listener}`).
    pub fn admit(&self, ip: IpAddr) -> Option<ConnPermit> {
        let mut open = self.inner.lock();
        let n = open.entry(ip).or_insert(0);
        if self.inner.max_per_ip != 0 && *n >= self.inner.max_per_ip {
            drop(open);
            metrics::get()
                .connections_refused
                .get_or_create(&label("listener", self.inner.listener))
                .inc();
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// Connections `ip` holds now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.inner.lock().get(&ip).copied().unwrap_or(0)
    }

    /// Peers holding at least one connection.
    pub fn peers(&self) -> usize {
        self.inner.lock().len()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.inner.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn the_cap_is_per_peer_and_a_dropped_permit_frees_its_slot() {
        let limiter = ConnLimiter::new("rtsp", 3);
        let mut held: Vec<_> = (0..3).map(|_| limiter.admit(ip(1)).unwrap()).collect();
        assert!(limiter.admit(ip(1)).is_none(), "the fourth from one peer");
        // Another peer is not affected by the first one's connections.
        let other = limiter.admit(ip(2)).expect("another peer");
        assert_eq!(limiter.open_from(ip(1)), 3);
        held.pop();
        assert_eq!(limiter.open_from(ip(1)), 2);
        let again = limiter.admit(ip(1));
        assert!(again.is_some(), "a freed slot is usable again");
        drop(other);
        assert_eq!(limiter.open_from(ip(2)), 0);
    }

    #[test]
    fn peers_without_connections_leave_the_map() {
        let limiter = ConnLimiter::new("http", 2);
        for i in 0..100u8 {
            let p = limiter.admit(ip(i)).unwrap();
            drop(p);
        }
        assert_eq!(limiter.peers(), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = ConnLimiter::new("sip", 0);
        let held: Vec<_> = (0..1000).filter_map(|_| limiter.admit(ip(1))).collect();
        assert_eq!(held.len(), 1000);
    }
}
