//! What nodes keep in Redis, and the keys they keep it under.
//!
//! ```text
//! {prefix}:epoch            INCR: a fencing token per node incarnation
//! {prefix}:lease:{node}     the holder's epoch, PX lease_ttl
//! {prefix}:node:{node}      NodeRecord JSON, PX lease_ttl (same refresh)
//! {prefix}:nodes            SET of node ids ever seen (pruned when the record lapsed)
//! {prefix}:dev:{device}     DeviceRecord JSON, PX record_ttl
//! {prefix}:devices          SET of device ids with a record
//! {prefix}:devver           INCR on each device write or delete: the table version
//! {prefix}:devchanges       Stream of (v, id) per device write or delete (XADD MAXLEN ~)
//! {prefix}:events           Stream of every node's events (XADD MAXLEN ~)
//! ```
//!
//! A node is alive exactly while its `node:` key exists: the lease lapsing
//! is the death certificate, the same for every reader.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::streams::directory::DeviceEntry;

/// One node as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// The epoch its lease holds (its incarnation).
    pub epoch: String,
    pub sip: SocketAddr,
    pub rtsp: SocketAddr,
    pub http: SocketAddr,
    pub capacity: u32,
    #[serde(default)]
    pub load: Load,
}

/// What a node carries, published with its lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub devices: u64,
    pub streams: u64,
    pub viewers: u64,
}

/// One device's shared record, written by its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The node holding its registration.
    pub owner: String,
    /// The owner's epoch when it wrote: a record whose owner no longer
    /// holds this epoch is stale.
    pub epoch: String,
    /// Unix milliseconds of the registration this record describes: the
    /// newer registration wins among live owners.
    pub registered_at_ms: u64,
    /// Unix milliseconds of this write.
    pub written_at_ms: u64,
    /// The device as its owner's adapter describes it (transport, contact
    /// address, online, catalog channels …).
    pub entry: DeviceEntry,
}

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    pub fn lease(&self, node: &str) -> String {
        format!("{}:lease:{node}", self.prefix)
    }

    pub fn node(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub fn device(&self, device: &str) -> String {
        format!("{}:dev:{device}", self.prefix)
    }

    pub fn devices(&self) -> String {
        format!("{}:devices", self.prefix)
    }

    pub fn device_version(&self) -> String {
        format!("{}:devver", self.prefix)
    }

    pub fn device_changes(&self) -> String {
        format!("{}:devchanges", self.prefix)
    }

    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::directory::Protocol;

    #[test]
    fn records_round_trip_through_json() {
        let n = NodeRecord {
            id: "node-1".into(),
            epoch: "7".into(),
            sip: "10.0.0.1:5060".parse().unwrap(),
            rtsp: "10.0.0.1:8554".parse().unwrap(),
            http: "10.0.0.1:8080".parse().unwrap(),
            capacity: 100,
            load: Load {
                devices: 3,
                streams: 1,
                viewers: 2,
            },
        };
        let back: NodeRecord = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        let d = DeviceRecord {
            owner: "node-1".into(),
            epoch: "7".into(),
            registered_at_ms: 1_700_000_000_000,
            written_at_ms: 1_700_000_001_000,
            entry: DeviceEntry {
                protocol: Protocol::Gb28181,
                id: "34020000001320000001".into(),
                name: Some("cam".into()),
                manufacturer: None,
                model: None,
                online: true,
                address: Some("127.0.0.1:5070".into()),
                details: Default::default(),
                channels: Vec::new(),
            },
        };
        let back: DeviceRecord = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        assert_eq!(Keys::new("cg").lease("n"), "cg:lease:n");
    }
}
