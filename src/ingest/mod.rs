//! Media ingest: RTP receive sockets, port pool, SSRC routing.

pub mod port_pool;
pub mod udp;
