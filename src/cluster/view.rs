//! What a node knows of the cluster at one moment, and the decisions it
//! takes from it alone (sans-IO): who owns a new device, which node serves
//! a viewer's device, the merged device list.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::config::{OnRedisDown, RedirectPolicy};
use super::placement::{self, Candidate};
use super::records::{DeviceRecord, NodeRecord};
use crate::streams::directory::{DeviceEntry, Protocol};

/// Where a REGISTER goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterRoute {
    /// This node takes it.
    Local,
    /// 302 to the owner's SIP address.
    Redirect { node: String, sip: SocketAddr },
    /// 503: Redis is down and `on_redis_down: refuse`.
    Refuse,
}

/// The last state read from Redis.
#[derive(Debug, Clone)]
pub struct View {
    pub me: String,
    pub my_capacity: u32,
    /// Live nodes (their lease holds), sorted by id.
    pub nodes: Vec<NodeRecord>,
    /// Every device record, by device id.
    pub devices: HashMap<String, DeviceRecord>,
    pub redis_up: bool,
}

impl View {
    pub fn new(me: String, my_capacity: u32) -> Self {
        Self {
            me,
            my_capacity,
            nodes: Vec::new(),
            devices: HashMap::new(),
            redis_up: false,
        }
    }

    /// Placement of a REGISTER from `device`; `known_here` when this node
    /// already holds its registration.
    pub fn register_route(
        &self,
        device: &str,
        policy: RedirectPolicy,
        on_down: OnRedisDown,
        known_here: bool,
    ) -> RegisterRoute {
        if policy == RedirectPolicy::Never {
            return RegisterRoute::Local;
        }
        if !self.redis_up {
            return match on_down {
                OnRedisDown::Local => RegisterRoute::Local,
                OnRedisDown::Refuse if known_here => RegisterRoute::Local,
                OnRedisDown::Refuse => RegisterRoute::Refuse,
            };
        }
        let mut candidates: Vec<Candidate<'_>> = self
            .nodes
            .iter()
            .map(|n| Candidate {
                id: &n.id,
                capacity: n.capacity,
            })
            .collect();
        // Our own lease may not be visible yet (first seconds): we are
        // alive all the same.
        if !candidates.iter().any(|c| c.id == self.me) {
            candidates.push(Candidate {
                id: &self.me,
                capacity: self.my_capacity,
            });
        }
        match placement::owner(device, &candidates) {
            Some(owner) if owner.id != self.me => {
                match self.nodes.iter().find(|n| n.id == owner.id) {
                    Some(n) => RegisterRoute::Redirect {
                        node: n.id.clone(),
                        sip: n.sip,
                    },
                    None => RegisterRoute::Local,
                }
            }
            _ => RegisterRoute::Local,
        }
    }

    /// The live node other than us that holds `device`, if any.
    pub fn remote_owner(&self, device: &str) -> Option<&NodeRecord> {
        let rec = self.devices.get(device)?;
        if rec.owner == self.me {
            return None;
        }
        self.nodes
            .iter()
            .find(|n| n.id == rec.owner && n.epoch == rec.epoch)
    }

    fn is_live(&self, rec: &DeviceRecord) -> bool {
        self.nodes
            .iter()
            .any(|n| n.id == rec.owner && n.epoch == rec.epoch)
    }

    /// Every device: ours as our adapter sees them now, the others' as
    /// their owners published them, each with its `node`. A record whose
    /// owner's lease lapsed shows the device offline. Where both exist
    /// the newer registration wins (a device that moved away from us is
    /// shown at its new owner until our stale entry expires).
    pub fn merge(&self, local: Vec<DeviceEntry>) -> Vec<DeviceEntry> {
        let mut out = Vec::with_capacity(local.len() + self.devices.len());
        let mut seen = std::collections::HashSet::new();
        for mut entry in local {
            if entry.protocol == Protocol::Gb28181
                && let Some(rec) = self.devices.get(&entry.id)
                && rec.owner != self.me
                && self.is_live(rec)
                && rec.registered_at_ms >= registered_at_ms(&entry)
            {
                continue;
            }
            seen.insert(entry.id.clone());
            entry
                .details
                .insert("node".into(), serde_json::Value::String(self.me.clone()));
            out.push(entry);
        }
        let mut remote: Vec<&DeviceRecord> = self
            .devices
            .values()
            .filter(|r| !seen.contains(&r.entry.id))
            .collect();
        remote.sort_by(|a, b| a.entry.id.cmp(&b.entry.id));
        for rec in remote {
            let mut entry = rec.entry.clone();
            if !self.is_live(rec) {
                entry.online = false;
                for c in &mut entry.channels {
                    c.online = false;
                }
            }
            entry
                .details
                .insert("node".into(), serde_json::Value::String(rec.owner.clone()));
            out.push(entry);
        }
        out
    }
}

/// Unix milliseconds of a GB28181 entry's registration (`registered_at`
/// seconds in its details), 0 when absent.
pub fn registered_at_ms(entry: &DeviceEntry) -> u64 {
    entry
        .details
        .get("registered_at")
        .and_then(serde_json::Value::as_u64)
        .map_or(0, |s| s.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, port: u16) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            epoch: "1".into(),
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
            rtsp: SocketAddr::from(([127, 0, 0, 1], port + 1)),
            http: SocketAddr::from(([127, 0, 0, 1], port + 2)),
            capacity: 100,
            load: Default::default(),
        }
    }

    fn entry(id: &str, registered_at: u64) -> DeviceEntry {
        let mut details = serde_json::Map::new();
        details.insert("registered_at".into(), registered_at.into());
        DeviceEntry {
            protocol: Protocol::Gb28181,
            id: id.into(),
            name: None,
            manufacturer: None,
            model: None,
            online: true,
            address: None,
            details,
            channels: Vec::new(),
        }
    }

    fn record(owner: &str, epoch: &str, id: &str, registered_at: u64) -> DeviceRecord {
        DeviceRecord {
            owner: owner.into(),
            epoch: epoch.into(),
            registered_at_ms: registered_at * 1000,
            written_at_ms: 0,
            entry: entry(id, registered_at),
        }
    }

    fn view() -> View {
        let mut v = View::new("a".into(), 100);
        v.nodes = vec![node("a", 5000), node("b", 6000), node("c", 7000)];
        v.redis_up = true;
        v
    }

    #[test]
    fn register_goes_to_the_hash_owner_or_stays_by_policy() {
        let v = view();
        let mut counts = HashMap::new();
        for i in 0..300u32 {
            let dev = format!("340200000013200{i:05}");
            let route = v.register_route(&dev, RedirectPolicy::Always, OnRedisDown::Local, false);
            let who = match route {
                RegisterRoute::Local => "a".to_owned(),
                RegisterRoute::Redirect { node, sip } => {
                    assert_eq!(sip.port(), if node == "b" { 6000 } else { 7000 });
                    node
                }
                RegisterRoute::Refuse => panic!(),
            };
            *counts.entry(who).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&c| c > 60), "{counts:?}");
        let dev = "34020000001320000001";
        assert_eq!(
            v.register_route(dev, RedirectPolicy::Never, OnRedisDown::Local, false),
            RegisterRoute::Local
        );
        let mut down = v.clone();
        down.redis_up = false;
        assert_eq!(
            down.register_route(dev, RedirectPolicy::Always, OnRedisDown::Local, false),
            RegisterRoute::Local
        );
        assert_eq!(
            down.register_route(dev, RedirectPolicy::Always, OnRedisDown::Refuse, false),
            RegisterRoute::Refuse
        );
        assert_eq!(
            down.register_route(dev, RedirectPolicy::Always, OnRedisDown::Refuse, true),
            RegisterRoute::Local
        );
        // Alone (no other lease visible): everything is ours.
        let mut alone = View::new("a".into(), 100);
        alone.redis_up = true;
        assert_eq!(
            alone.register_route(dev, RedirectPolicy::Always, OnRedisDown::Local, false),
            RegisterRoute::Local
        );
    }

    #[test]
    fn viewers_go_to_a_live_owner_only() {
        let mut v = view();
        v.devices.insert("d1".into(), record("b", "1", "d1", 10));
        v.devices.insert("d2".into(), record("a", "1", "d2", 10));
        // Owner c restarted since (epoch 2 now): the record is stale.
        v.devices.insert("d3".into(), record("c", "0", "d3", 10));
        assert_eq!(v.remote_owner("d1").map(|n| n.id.as_str()), Some("b"));
        assert_eq!(v.remote_owner("d2"), None);
        assert_eq!(v.remote_owner("d3"), None);
        assert_eq!(v.remote_owner("nope"), None);
    }

    #[test]
    fn merged_list_names_each_owner_and_prefers_newer_registrations() {
        let mut v = view();
        v.devices.insert("d1".into(), record("b", "1", "d1", 20));
        v.devices.insert("d2".into(), record("a", "1", "d2", 10));
        v.devices.insert("d4".into(), record("dead", "1", "d4", 10));
        // d1: we hold an older registration (it moved to b): b's wins.
        // d2: ours, published; d3: ours, not yet published.
        let all = v.merge(vec![entry("d1", 10), entry("d2", 10), entry("d3", 30)]);
        let got: Vec<(String, String, bool)> = all
            .iter()
            .map(|e| {
                (
                    e.id.clone(),
                    e.details["node"].as_str().unwrap().to_owned(),
                    e.online,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("d2".into(), "a".into(), true),
                ("d3".into(), "a".into(), true),
                ("d1".into(), "b".into(), true),
                ("d4".into(), "dead".into(), false),
            ]
        );
    }
}
