//! The Redis side of the cluster: every command camgate sends, each timed
//! into `camgate_cluster_redis_command_seconds` and each bounded by
//! `cluster.command_timeout` (set on the connection, so the deadline is
//! the command's own). The `redis` crate's `ConnectionManager` reconnects
//! by itself after a failure; the first command after Redis returns
//! succeeds or fails on its own.
//!
//! Conditional writes are Lua scripts (`EVAL`), atomic on the server: a
//! lease is renewed only by its holder, a device record is written only
//! under a live lease and never over a newer registration by a live owner.

use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::ConnectionManager;

use super::changes::{Change, parse_entries};
use super::records::{DeviceRecord, Keys, NodeRecord};
use crate::metrics;

/// The `command` label values of `camgate_cluster_redis_command_seconds`.
pub const COMMANDS: [&str; 14] = [
    "incr",
    "eval_lease",
    "smembers",
    "mget",
    "srem",
    "eval_put_device",
    "eval_delete_device",
    "eval_touch_device",
    "get",
    "ping",
    "xadd",
    "xread",
    "xrevrange",
    "xread_changes",
];

/// Keys per MGET: bounded replies even with tens of thousands of devices.
const MGET_CHUNK: usize = 500;
/// Entries the device change stream keeps (about: `MAXLEN ~`). A node
/// that falls further behind re-reads the whole table.
const CHANGES_MAX_LEN: usize = 50_000;

/// Renew (or take, if lapsed) our lease and node record, unless another
/// incarnation holds the lease. 1 = held, 0 = someone else holds it.
const RENEW_LEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
return 1
";

/// Write a device record under the writer's live lease, bump the table
/// version and append the change to the change stream (super::changes). -1 = the writer
/// holds no lease with this epoch (a dead or partitioned node's late
/// write); 0 = a live owner holds a newer registration; 1 = written.
/// It reads the previous owner's lease by name (a key not in KEYS): fine
/// on one Redis or Sentinel, not on Redis Cluster.
const PUT_DEVICE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local old = redis.call('GET', KEYS[2])
if old then
  local ok, rec = pcall(cjson.decode, old)
  if ok and type(rec) == 'table' and rec.owner ~= ARGV[5] then
    local live = redis.call('GET', ARGV[7] .. ':lease:' .. tostring(rec.owner))
    if live and live == tostring(rec.epoch)
       and tonumber(rec.registered_at_ms or 0) > tonumber(ARGV[6]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
local v = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'v', v, 'id', ARGV[4])
return 1
";

/// Extend a device record's life if we are still its owner, without
/// touching the table version (nothing changed for readers). 1 = done.
const TOUCH_DEVICE: &str = r"
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local ok, rec = pcall(cjson.decode, old)
if ok and type(rec) == 'table' and rec.owner == ARGV[1] and tostring(rec.epoch) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// Delete a device record if we are still its owner.
const DELETE_DEVICE: &str = r"
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local ok, rec = pcall(cjson.decode, old)
if ok and type(rec) == 'table' and rec.owner == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  local v = redis.call('INCR', KEYS[3])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'v', v, 'id', ARGV[2])
  return 1
end
return 0
";

/// A Redis failure, as one line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis answered {0:?} where a {1} was expected")]
    Unexpected(String, &'static str),
}

/// What a device write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// A live owner holds a newer registration.
    Superseded,
    /// Our lease lapsed: we may not write.
    NoLease,
}

pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
}

impl Store {
    /// A store that connects on first use and reconnects after failures.
    pub fn new(
        url: &str,
        password: &str,
        prefix: &str,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        use redis::IntoConnectionInfo as _;
        let mut info = url.into_connection_info()?;
        if !password.is_empty() {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            keys: Keys::new(prefix),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Run one command, timed and labelled by its verb.
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        verb: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let mut conn = self.conn.clone();
        let result = cmd.query_async::<T>(&mut conn).await;
        metrics::get()
            .cluster_redis_command_seconds
            .get_or_create(&metrics::label("command", verb))
            .observe(started.elapsed().as_secs_f64());
        Ok(result?)
    }

    /// A new fencing token for this incarnation.
    pub async fn next_epoch(&self) -> Result<String, StoreError> {
        let n: i64 = self
            .run("incr", redis::cmd("INCR").arg(self.keys.epoch()))
            .await?;
        Ok(n.to_string())
    }

    /// Renew our lease; `false` when another incarnation holds our id.
    pub async fn renew_lease(&self, me: &NodeRecord, ttl: Duration) -> Result<bool, StoreError> {
        let json = serde_json::to_string(me)
            .map_err(|e| StoreError::Unexpected(e.to_string(), "node record"))?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RENEW_LEASE)
            .arg(3)
            .arg(self.keys.lease(&me.id))
            .arg(self.keys.node(&me.id))
            .arg(self.keys.nodes())
            .arg(&me.epoch)
            .arg(ttl.as_millis() as u64)
            .arg(json)
            .arg(&me.id);
        let n: i64 = self.run("eval_lease", &cmd).await?;
        Ok(n == 1)
    }

    /// Every live node (its record exists). Ids whose record lapsed are
    /// pruned from the set.
    pub async fn live_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let ids: Vec<String> = self
            .run("smembers", redis::cmd("SMEMBERS").arg(self.keys.nodes()))
            .await?;
        let keys: Vec<String> = ids.iter().map(|id| self.keys.node(id)).collect();
        let values = self.mget(&keys).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, v) in ids.into_iter().zip(values) {
            match v.and_then(|json| serde_json::from_str::<NodeRecord>(&json).ok()) {
                Some(rec) => live.push(rec),
                None => dead.push(id),
            }
        }
        if !dead.is_empty() {
            let _: i64 = self
                .run("srem", redis::cmd("SREM").arg(self.keys.nodes()).arg(&dead))
                .await?;
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }

    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MGET_CHUNK) {
            let part: Vec<Option<String>> = self.run("mget", redis::cmd("MGET").arg(chunk)).await?;
            out.extend(part);
        }
        Ok(out)
    }

    pub async fn put_device(
        &self,
        rec: &DeviceRecord,
        ttl: Duration,
    ) -> Result<PutOutcome, StoreError> {
        let json = serde_json::to_string(rec)
            .map_err(|e| StoreError::Unexpected(e.to_string(), "device record"))?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUT_DEVICE)
            .arg(5)
            .arg(self.keys.lease(&rec.owner))
            .arg(self.keys.device(&rec.entry.id))
            .arg(self.keys.devices())
            .arg(self.keys.device_version())
            .arg(self.keys.device_changes())
            .arg(&rec.epoch)
            .arg(json)
            .arg(ttl.as_millis() as u64)
            .arg(&rec.entry.id)
            .arg(&rec.owner)
            .arg(rec.registered_at_ms)
            .arg(self.keys.prefix())
            .arg(CHANGES_MAX_LEN);
        let n: i64 = self.run("eval_put_device", &cmd).await?;
        Ok(match n {
            1 => PutOutcome::Written,
            0 => PutOutcome::Superseded,
            _ => PutOutcome::NoLease,
        })
    }

    /// Extend the life of `device`'s unchanged record; `false` when it is
    /// gone or no longer ours (then it must be written again).
    pub async fn touch_device(
        &self,
        owner: &str,
        epoch: &str,
        device: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(TOUCH_DEVICE)
            .arg(1)
            .arg(self.keys.device(device))
            .arg(owner)
            .arg(epoch)
            .arg(ttl.as_millis() as u64);
        let n: i64 = self.run("eval_touch_device", &cmd).await?;
        Ok(n == 1)
    }

    /// Remove `device`'s record if `owner` still owns it.
    pub async fn delete_device(&self, owner: &str, device: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(DELETE_DEVICE)
            .arg(4)
            .arg(self.keys.device(device))
            .arg(self.keys.devices())
            .arg(self.keys.device_version())
            .arg(self.keys.device_changes())
            .arg(owner)
            .arg(device)
            .arg(CHANGES_MAX_LEN);
        let n: i64 = self.run("eval_delete_device", &cmd).await?;
        Ok(n == 1)
    }

    /// The device-table version: changes on every write or delete.
    pub async fn device_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = self
            .run("get", redis::cmd("GET").arg(self.keys.device_version()))
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// The change stream's newest entry (None while it is empty).
    pub async fn last_change(&self) -> Result<Option<Change>, StoreError> {
        let v: Value = self
            .run(
                "xrevrange",
                redis::cmd("XREVRANGE")
                    .arg(self.keys.device_changes())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        Ok(parse_entries(&v).pop())
    }

    /// Up to `count` changes after entry `after`, oldest first.
    pub async fn changes_after(
        &self,
        after: &str,
        count: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let v: Value = self
            .run(
                "xread_changes",
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(self.keys.device_changes())
                    .arg(after),
            )
            .await?;
        Ok(parse_entries(&v))
    }

    /// The records of `ids`, None where there is none (deleted, expired).
    pub async fn devices(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Option<DeviceRecord>)>, StoreError> {
        let keys: Vec<String> = ids.iter().map(|id| self.keys.device(id)).collect();
        let values = self.mget(&keys).await?;
        Ok(ids
            .iter()
            .cloned()
            .zip(values)
            .map(|(id, v)| {
                let rec = v.and_then(|json| serde_json::from_str::<DeviceRecord>(&json).ok());
                (id, rec)
            })
            .collect())
    }

    /// Every device record; ids whose record expired are pruned.
    pub async fn all_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let ids: Vec<String> = self
            .run("smembers", redis::cmd("SMEMBERS").arg(self.keys.devices()))
            .await?;
        let keys: Vec<String> = ids.iter().map(|id| self.keys.device(id)).collect();
        let values = self.mget(&keys).await?;
        let mut out = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, v) in ids.into_iter().zip(values) {
            match v.and_then(|json| serde_json::from_str::<DeviceRecord>(&json).ok()) {
                Some(rec) => out.push(rec),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: i64 = self
                .run(
                    "srem",
                    redis::cmd("SREM").arg(self.keys.devices()).arg(&gone),
                )
                .await?;
        }
        Ok(out)
    }

    /// PING: whether Redis answers at all.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let v: Value = self.run("ping", &redis::cmd("PING")).await?;
        match v {
            Value::SimpleString(_) | Value::Okay | Value::BulkString(_) => Ok(()),
            other => Err(StoreError::Unexpected(format!("{other:?}"), "PONG")),
        }
    }
}
