//! The one task that talks to Redis: every `sync_interval` it renews the
//! lease (every `lease_refresh`), reads the live nodes, publishes what
//! changed of this node's devices and follows the device change stream
//! (super::changes): only devices that changed are re-fetched; the whole
//! table is re-read on start, after a gap and every `FULL_READ_EVERY`. Any failure marks Redis down (metric, `/readyz`
//! "degraded: redis") and the next turn simply tries again; when Redis is
//! back every record of ours is published afresh on that turn.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::changes::{CatchUp, Change, Position, catch_up};
use super::records::{DeviceRecord, Load, NodeRecord};
use super::store::{PutOutcome, Store, StoreError};
use super::view::registered_at_ms;
use super::{Advertised, Cluster};
use crate::health::Health;
use crate::metrics;
use crate::streams::directory::{DeviceDirectory, DeviceEntry, Protocol};

/// Device records live this long unless their owner refreshes them (at a
/// third of it): a dead owner's records go away on their own. Until then
/// readers show them offline, since the owner's lease lapsed; a device
/// that registers elsewhere overwrites its record at once. Long, so the
/// steady state costs one small command per device every few minutes.
const RECORD_TTL: Duration = Duration::from_secs(600);
/// Re-read the whole device table at least this often: records that
/// expire on their own (a dead owner's) leave no entry in the change
/// stream. Readers show those offline meanwhile (the owner's lease lapsed).
const FULL_READ_EVERY: Duration = Duration::from_secs(300);
/// Change entries taken per turn; more wait for the next turn.
const CHANGES_PER_TURN: usize = 5_000;
/// Redis trouble is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Details that change by themselves every second: not a reason to write.
const VOLATILE_DETAILS: [&str; 1] = ["last_keepalive_secs_ago"];

pub(super) struct Driver {
    cluster: Cluster,
    store: Store,
    advertised: Advertised,
    local: Arc<dyn DeviceDirectory>,
    load: Box<dyn Fn() -> Load + Send + Sync>,
    health: Health,
    epoch: Option<String>,
    lease_held: bool,
    next_renew: Instant,
    /// What we last wrote per device: its fingerprint and when.
    published: HashMap<String, (String, Instant)>,
    /// Where our device view stands in the change stream; None = re-read all.
    position: Option<Position>,
    last_full_read: Option<Instant>,
    /// When Redis trouble was last logged: one line per minute at most.
    last_warned: Option<Instant>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What of an entry is worth a write when it changes.
fn fingerprint(entry: &DeviceEntry) -> String {
    let mut e = entry.clone();
    for k in VOLATILE_DETAILS {
        e.details.remove(k);
    }
    serde_json::to_string(&e).unwrap_or_default()
}

impl Driver {
    pub(super) fn new(
        cluster: Cluster,
        store: Store,
        advertised: Advertised,
        local: Arc<dyn DeviceDirectory>,
        load: Box<dyn Fn() -> Load + Send + Sync>,
        health: Health,
    ) -> Self {
        Self {
            cluster,
            store,
            advertised,
            local,
            load,
            health,
            epoch: None,
            lease_held: false,
            next_renew: Instant::now(),
            published: HashMap::new(),
            position: None,
            last_full_read: None,
            last_warned: None,
        }
    }

    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let every = self.cluster.config().sync_interval;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(node = %self.cluster.node_id(), redis = %self.cluster.config().redis_url, "cluster: joining");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let result = self.turn().await;
            self.set_up(result.is_ok());
            if let Err(e) = result {
                if self.last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    self.last_warned = Some(Instant::now());
                    warn!(error = %e, "cluster: Redis unreachable; serving what this node owns");
                }
                // Start over when it returns: renew at once, publish all.
                self.next_renew = Instant::now();
                self.published.clear();
                self.position = None;
            }
        }
    }

    fn set_up(&self, up: bool) {
        let was = {
            let mut v = self.cluster.view_mut();
            std::mem::replace(&mut v.redis_up, up)
        };
        if up && !was {
            info!("cluster: Redis reachable");
        }
        metrics::get().cluster_redis_up.set(i64::from(up));
        self.health.set_degraded_redis(!up);
    }

    fn me(&self, epoch: &str) -> NodeRecord {
        let c = self.cluster.config();
        NodeRecord {
            id: self.cluster.node_id().to_owned(),
            epoch: epoch.to_owned(),
            sip: self.advertised.sip,
            rtsp: self.advertised.rtsp,
            http: self.advertised.http,
            capacity: c.capacity,
            load: (self.load)(),
        }
    }

    async fn turn(&mut self) -> Result<(), StoreError> {
        let c = self.cluster.config().clone();
        let epoch = match &self.epoch {
            Some(e) => e.clone(),
            None => {
                let e = self.store.next_epoch().await?;
                info!(epoch = %e, "cluster: new incarnation");
                self.epoch = Some(e.clone());
                e
            }
        };
        let now = Instant::now();
        if now >= self.next_renew {
            let held = self
                .store
                .renew_lease(&self.me(&epoch), c.lease_ttl)
                .await?;
            if held != self.lease_held {
                if held {
                    info!(node = %self.cluster.node_id(), "cluster: lease held");
                } else {
                    warn!(node = %self.cluster.node_id(), "cluster: another process holds this node id's lease; waiting for it to lapse");
                }
            }
            self.lease_held = held;
            self.next_renew = now + c.lease_refresh;
        }
        let nodes = self.store.live_nodes().await?;
        metrics::get().cluster_nodes.set(nodes.len() as i64);
        self.cluster.view_mut().nodes = nodes;
        if self.lease_held {
            self.publish(&epoch, RECORD_TTL).await?;
        }
        self.follow_devices().await
    }

    /// Bring the device view up to date: apply the change stream's new
    /// entries, or re-read the whole table when that is the only way.
    async fn follow_devices(&mut self) -> Result<(), StoreError> {
        let head = self.store.last_change().await?;
        let stale = self
            .last_full_read
            .is_none_or(|t| t.elapsed() >= FULL_READ_EVERY);
        let Some(at) = self.position.clone().filter(|_| !stale) else {
            return self.read_all_devices(head).await;
        };
        if head.as_ref().is_none_or(|h| h.id == at.id) {
            if head.is_none() && at.id != "0-0" {
                // The stream vanished (Redis restarted empty).
                return self.read_all_devices(None).await;
            }
            return Ok(());
        }
        let entries = self.store.changes_after(&at.id, CHANGES_PER_TURN).await?;
        match catch_up(&at, &entries) {
            CatchUp::Gap => self.read_all_devices(head).await,
            CatchUp::Apply { devices, to } => {
                let ids: Vec<String> = devices.into_iter().collect();
                let records = self.store.devices(&ids).await?;
                let mut view = self.cluster.view_mut();
                for (id, rec) in records {
                    match rec {
                        Some(rec) => view.devices.insert(id, rec),
                        None => view.devices.remove(&id),
                    };
                }
                drop(view);
                self.position = Some(to);
                Ok(())
            }
        }
    }

    /// Re-read every record; `head` (the stream's newest entry, read
    /// before) is where the change stream takes over: later changes are
    /// applied again on the next turn, harmlessly.
    async fn read_all_devices(&mut self, head: Option<Change>) -> Result<(), StoreError> {
        let position = match head {
            Some(c) => Position {
                id: c.id,
                version: c.version,
            },
            None => Position {
                id: "0-0".into(),
                version: self.store.device_version().await?,
            },
        };
        let all = self.store.all_devices().await?;
        self.position = Some(position);
        self.last_full_read = Some(Instant::now());
        self.cluster.view_mut().devices =
            all.into_iter().map(|r| (r.entry.id.clone(), r)).collect();
        Ok(())
    }

    /// Write our GB28181 devices that changed (or whose record is a third
    /// of its TTL old); delete the records of devices that left us.
    async fn publish(&mut self, epoch: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let entries: Vec<DeviceEntry> = self
            .local
            .devices()
            .into_iter()
            .filter(|e| e.protocol == Protocol::Gb28181)
            .collect();
        let mut current = std::collections::HashSet::new();
        for entry in entries {
            current.insert(entry.id.clone());
            let print = fingerprint(&entry);
            let unchanged = match self.published.get(&entry.id) {
                Some((p, at)) if *p == print => Some(now.duration_since(*at) < ttl / 3),
                _ => None,
            };
            match unchanged {
                Some(true) => continue,
                // Unchanged but a third of its life gone: extend it.
                Some(false) => {
                    let mine = self
                        .store
                        .touch_device(self.cluster.node_id(), epoch, &entry.id, ttl)
                        .await?;
                    if mine {
                        self.published.insert(entry.id.clone(), (print, now));
                        continue;
                    }
                }
                None => {}
            }
            let rec = DeviceRecord {
                owner: self.cluster.node_id().to_owned(),
                epoch: epoch.to_owned(),
                registered_at_ms: registered_at_ms(&entry),
                written_at_ms: unix_ms(),
                entry,
            };
            let outcome = self.store.put_device(&rec, ttl).await?;
            match outcome {
                PutOutcome::Written | PutOutcome::Superseded => {
                    self.published.insert(rec.entry.id.clone(), (print, now));
                }
                PutOutcome::NoLease => {
                    self.lease_held = false;
                    self.next_renew = now;
                    return Ok(());
                }
            }
        }
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|id| !current.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.store
                .delete_device(self.cluster.node_id(), &id)
                .await?;
            self.published.remove(&id);
        }
        Ok(())
    }
}
