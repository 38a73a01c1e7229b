//! Many camgate nodes as one gateway, with Redis as the shared state
//! (issue 18). Off by default (`cluster.enabled`): a single node needs no
//! Redis and behaves as before.
//!
//! - **Membership** ([`records`], [`store`]): each node holds a lease in
//!   Redis (`lease_ttl`, renewed every `lease_refresh`); a lapsed lease is
//!   a dead node for every reader.
//! - **Placement** ([`placement`]): a device's owner is chosen by
//!   capacity-weighted rendezvous hashing over live nodes; a REGISTER that
//!   reaches another node is answered 302 with the owner's Contact
//!   (GB/T 28181-2022 §9.1.2.3, [`view::RegisterRoute`]).
//! - **Device records**: each owner publishes its devices (owner, contact
//!   address, transport, online, catalog), fenced by its lease epoch, so
//!   `GET /api/v1/devices` on any node lists them all ([`ClusterDirectory`]).
//!   Readers follow a change stream ([`changes`]) and re-fetch only the
//!   devices that changed.
//! - **Viewers on any node**: the stream table asks [`Cluster`] (as a
//!   [`StreamOwners`]) which node serves a key; RTSP answers 302, WHEP 307;
//!   or, in relay mode, [`relay::RelaySources`] pulls it from the owner.
//!
//! The driver ([`sync`]) is the only code that talks to Redis; everyone
//! else reads the last [`view::View`] it built.

pub mod changes;
pub mod config;
pub mod events;
pub mod forward;
pub mod placement;
pub mod records;
pub mod relay;
pub mod store;
mod sync;
pub mod view;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use self::config::{ClusterConfig, ViewerRouting};
use self::records::Load;
use self::view::{RegisterRoute, View};
use crate::health::Health;
use crate::metrics;
use crate::streams::directory::{DeviceDirectory, DeviceEntry, Protocol};
use crate::streams::owners::{RemoteNode, StreamOwners};

/// Addresses this node publishes for others to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertised {
    pub sip: SocketAddr,
    pub rtsp: SocketAddr,
    pub http: SocketAddr,
}

/// The cluster handle: cheap to clone, shared by the SIP registrar, the
/// stream table and the API.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    node_id: String,
    view: RwLock<View>,
}

impl Cluster {
    /// A handle with an empty view (Redis not yet read); [`Cluster::start`]
    /// begins talking to Redis.
    pub fn new(config: ClusterConfig) -> Self {
        let node_id = config.effective_node_id();
        Self {
            inner: Arc::new(Inner {
                view: RwLock::new(View::new(node_id.clone(), config.capacity)),
                node_id,
                config,
            }),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.inner.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.inner.view.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a REGISTER from `device` goes; `known_here` when this node
    /// already holds its registration. Counts redirects.
    pub fn route_register(&self, device: &str, known_here: bool) -> RegisterRoute {
        let c = &self.inner.config;
        let route = self
            .view()
            .register_route(device, c.redirect, c.on_redis_down, known_here);
        if matches!(route, RegisterRoute::Redirect { .. }) {
            count_redirect("register");
        }
        route
    }

    /// The live node other than this one holding `device`, whatever the
    /// viewer routing (for API forwarding).
    pub fn remote_device_owner(&self, device: &str) -> Option<RemoteNode> {
        let view = self.view();
        let n = view.remote_owner(device)?;
        Some(RemoteNode {
            node: n.id.clone(),
            rtsp: n.rtsp,
            http: n.http,
        })
    }

    /// The node to relay `key` from (`viewer_routing: relay`): a live
    /// GB28181 key whose device another live node owns.
    pub fn relay_origin(&self, key: &str) -> Option<RemoteNode> {
        if self.inner.config.viewer_routing != ViewerRouting::Relay {
            return None;
        }
        self.remote_device_owner(device_of(key)?)
    }

    /// Whether `presented` is the cluster secret (never, when none is set).
    pub fn is_secret(&self, presented: &str) -> bool {
        let secret = &self.inner.config.secret;
        !secret.is_empty() && crate::secret::ct_eq(secret.as_bytes(), presented.as_bytes())
    }

    /// Whether Redis answered the last sync.
    pub fn redis_up(&self) -> bool {
        self.view().redis_up
    }

    /// Ids of the live nodes in the last view.
    pub fn live_nodes(&self) -> Vec<String> {
        self.view().nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// Wrap the GB28181 directory so listings show every node's devices.
    pub fn directory(&self, local: Arc<dyn DeviceDirectory>) -> Arc<dyn DeviceDirectory> {
        Arc::new(ClusterDirectory {
            cluster: self.clone(),
            local,
        })
    }

    /// Start the Redis driver: lease, node table, device records. It runs
    /// until `shutdown`; Redis being down is a state, never an exit.
    pub fn start(
        &self,
        advertised: Advertised,
        local: Arc<dyn DeviceDirectory>,
        load: Box<dyn Fn() -> Load + Send + Sync>,
        health: Health,
        shutdown: CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let c = &self.inner.config;
        let store = store::Store::new(
            &c.redis_url,
            &c.redis_password,
            &c.key_prefix,
            c.command_timeout,
        )?;
        let driver = sync::Driver::new(self.clone(), store, advertised, local, load, health);
        Ok(tokio::spawn(driver.run(shutdown)))
    }
}

impl Cluster {
    /// Share events through the cluster's Redis Stream: `local` carries
    /// this node's events (as JSON) out, `deliver` takes the other nodes'
    /// in (origin node, event JSON).
    pub fn start_events(
        &self,
        local: tokio::sync::mpsc::Receiver<serde_json::Value>,
        deliver: events::Deliver,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let c = &self.inner.config;
        let open = || {
            store::Store::new(
                &c.redis_url,
                &c.redis_password,
                &c.key_prefix,
                c.command_timeout,
            )
        };
        tokio::spawn(events::publish(
            open()?,
            self.node_id().to_owned(),
            c.event_stream_max,
            local,
            shutdown.clone(),
        ));
        tokio::spawn(events::subscribe(
            open()?,
            self.node_id().to_owned(),
            deliver,
            shutdown,
        ));
        Ok(())
    }
}

/// `camgate_cluster_redirects_total{kind}`.
pub fn count_redirect(kind: &'static str) {
    metrics::get()
        .cluster_redirects
        .get_or_create(&metrics::label("kind", kind))
        .inc();
}

/// The device id a stream key names, for the kinds of source the cluster
/// places (GB28181: `gb/{device}/{channel}[/…]`).
fn device_of(key: &str) -> Option<&str> {
    let mut parts = key.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        // Live keys only: a recording's key carries its range, which the
        // viewer's URL (not this key) must keep.
        (Some("gb"), Some(device), Some(channel), None)
            if !device.is_empty() && !channel.is_empty() =>
        {
            Some(device)
        }
        _ => None,
    }
}

impl StreamOwners for Cluster {
    fn remote_owner(&self, key: &str) -> Option<RemoteNode> {
        if self.inner.config.viewer_routing != ViewerRouting::Redirect {
            return None;
        }
        let device = device_of(key)?;
        let view = self.view();
        let n = view.remote_owner(device)?;
        Some(RemoteNode {
            node: n.id.clone(),
            rtsp: n.rtsp,
            http: n.http,
        })
    }
}

/// The GB28181 directory seen cluster-wide.
struct ClusterDirectory {
    cluster: Cluster,
    local: Arc<dyn DeviceDirectory>,
}

impl DeviceDirectory for ClusterDirectory {
    fn protocol(&self) -> Protocol {
        self.local.protocol()
    }

    fn devices(&self) -> Vec<DeviceEntry> {
        let local = self.local.devices();
        self.cluster.view().merge(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_must_be_set_and_match() {
        let mut c = ClusterConfig::default();
        assert!(!Cluster::new(c.clone()).is_secret(""));
        c.secret = "s3".into();
        let cluster = Cluster::new(c);
        assert!(cluster.is_secret("s3"));
        assert!(!cluster.is_secret("s4"));
        assert!(!cluster.is_secret(""));
    }

    #[test]
    fn only_gb_keys_name_a_placed_device() {
        assert_eq!(
            device_of("gb/34020000001320000001/34020000001310000001"),
            Some("34020000001320000001")
        );
        assert_eq!(device_of("foscam/door"), None);
        assert_eq!(device_of("gb/d/c/playback/1-2"), None);
        assert_eq!(device_of("gb//x"), None);
        assert_eq!(device_of("gb"), None);
    }
}
