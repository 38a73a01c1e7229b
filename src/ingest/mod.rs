//! Media ingest: RTP receive sockets, port pool, SSRC routing.

pub mod packets;
pub mod port_pool;
pub mod rfc4571;
pub mod shared_udp;
pub mod source_pin;
pub mod ssrc_router;
pub mod tcp;
pub mod transport;
pub mod udp;
