//! "Who owns this stream?" — the question the stream table's users ask
//! before serving a viewer, answered by the cluster (`cluster/`) when one
//! is configured. Egress reads only this trait, never Redis.

use std::net::SocketAddr;

/// Another node that serves a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    pub node: String,
    /// Its RTSP listener as viewers reach it.
    pub rtsp: SocketAddr,
    /// Its HTTP listener (WHEP, API) as viewers reach it.
    pub http: SocketAddr,
}

pub trait StreamOwners: Send + Sync {
    /// The node serving `key` when it is not this one; `None` = serve here
    /// (ours, unknown, or viewers are not routed).
    fn remote_owner(&self, key: &str) -> Option<RemoteNode>;
}
