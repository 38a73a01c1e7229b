//! Media ingest: RTP receive sockets, port pool, SSRC routing.

pub mod port_pool;
pub mod udp;
pub mod transport;
pub mod ssrc_router;
pub mod shared_udp;
pub mod rfc4571;
pub mod tcp;
pub mod packets;
