//! The `cluster:` section: off by default, so a single node needs no Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config_secs as secs;

/// A password file larger than this is not a password file.
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

/// Where a REGISTER for a device another node owns goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectPolicy {
    /// 302 to the owner (GB/T 28181-2022 §9.1.2.3).
    #[default]
    Always,
    /// Accept locally: for 2016-only devices that do not follow 302. The
    /// node that accepts becomes the owner.
    Never,
}

/// How a viewer on a node that does not own the device is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewerRouting {
    /// RTSP 302 / WHEP 307 to the owner's URL.
    #[default]
    Redirect,
    /// Pull the stream once from the owner over RTSP and serve it here
    /// (origin/edge).
    Relay,
    /// Try locally (the device is not here: 404), for set-ups where a
    /// load balancer already routes viewers by device.
    Local,
}

/// What a node does with a REGISTER while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisDown {
    /// Accept locally: cameras keep working; the shared view catches up
    /// when Redis is back (the node re-publishes its records).
    #[default]
    Local,
    /// Answer 503 to devices this node does not already own.
    Refuse,
}

/// Addresses other nodes, devices and viewers use to reach this node.
/// Unset: the advertised IP (`sip.external_ip` …) with the bound port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvertiseConfig {
    pub sip: Option<SocketAddr>,
    pub rtsp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub enabled: bool,
    /// `redis://[user[:password]@]host:port[/db]`. `rediss://` (TLS) needs
    /// a build with the redis crate's TLS feature, which this one lacks.
    pub redis_url: String,
    /// Redis password, when not in the URL (`${ENV}` works as elsewhere).
    pub redis_password: String,
    /// File holding the Redis password (a mounted Secret); replaces
    /// `redis_password`.
    pub redis_password_file: Option<PathBuf>,
    /// This node's id, unique in the cluster; empty = the host name (a
    /// StatefulSet pod name is stable across restarts).
    pub node_id: String,
    /// Relative weight in device placement; 0 = take no new devices.
    pub capacity: u32,
    pub advertise: AdvertiseConfig,
    pub redirect: RedirectPolicy,
    pub viewer_routing: ViewerRouting,
    pub on_redis_down: OnRedisDown,
    /// Prefix of every Redis key, so clusters can share one Redis.
    pub key_prefix: String,
    /// Shared by the nodes: API requests one node forwards to a device's
    /// owner carry it, and the owner accepts it in place of an API
    /// credential. Empty: forwarded requests carry only the client's own
    /// `Authorization`.
    pub secret: String,
    /// File holding `secret` (a mounted Secret); replaces it.
    pub secret_file: Option<PathBuf>,
    /// Entries kept in the cluster's event stream (approximately).
    pub event_stream_max: usize,
    /// How long a forwarded API request may take, answer included.
    #[serde(with = "secs")]
    pub forward_timeout: Duration,
    /// A node whose lease is not refreshed for this long is dead.
    #[serde(with = "secs")]
    pub lease_ttl: Duration,
    /// How often the lease is refreshed (well under `lease_ttl`).
    #[serde(with = "secs")]
    pub lease_refresh: Duration,
    /// How often the node reads the cluster (nodes, devices) and publishes
    /// what changed of its own devices.
    #[serde(with = "secs")]
    pub sync_interval: Duration,
    /// A Redis command that takes longer than this fails (Redis is then
    /// taken as down until a command succeeds).
    #[serde(with = "secs")]
    pub command_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_password: String::new(),
            redis_password_file: None,
            node_id: String::new(),
            capacity: 100,
            advertise: AdvertiseConfig::default(),
            redirect: RedirectPolicy::Always,
            viewer_routing: ViewerRouting::Redirect,
            on_redis_down: OnRedisDown::Local,
            key_prefix: "camgate".into(),
            secret: String::new(),
            secret_file: None,
            forward_timeout: Duration::from_secs(15),
            event_stream_max: 10_000,
            lease_ttl: Duration::from_secs(10),
            lease_refresh: Duration::from_secs(3),
            sync_interval: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
        }
    }
}

impl ClusterConfig {
    /// Checks that need no I/O; `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if self.redis_url.starts_with("rediss://") {
            return Err((
                "cluster.redis_url",
                "rediss:// (TLS) needs camgate built with the redis crate's TLS feature; \
                 use redis:// inside the cluster network or a TLS sidecar"
                    .into(),
            ));
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("unix://") {
            return Err((
                "cluster.redis_url",
                format!("must start with redis://, got {:?}", self.redis_url),
            ));
        }
        let id_ok = |s: &str| {
            s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !id_ok(&self.node_id) {
            return Err((
                "cluster.node_id",
                format!("{:?} must be 1-64 of A-Z a-z 0-9 - _ .", self.node_id),
            ));
        }
        if self.key_prefix.is_empty() || !id_ok(&self.key_prefix) {
            return Err((
                "cluster.key_prefix",
                format!("{:?} must be 1-64 of A-Z a-z 0-9 - _ .", self.key_prefix),
            ));
        }
        if self.lease_ttl < Duration::from_secs(2) || self.lease_refresh * 2 > self.lease_ttl {
            return Err((
                "cluster.lease_ttl",
                format!(
                    "lease_ttl ({:?}) must be at least 2 s and twice lease_refresh ({:?})",
                    self.lease_ttl, self.lease_refresh
                ),
            ));
        }
        if self.sync_interval.is_zero() || self.command_timeout.is_zero() {
            return Err((
                "cluster.sync_interval",
                "sync_interval and command_timeout must be above 0".into(),
            ));
        }
        Ok(())
    }

    /// Replace `redis_password` and `secret` with the contents of their
    /// files (one trailing line break dropped, as for `sip.password_file`).
    pub fn read_password_file(&mut self) -> Result<(), (&'static str, String)> {
        if let Some(path) = &self.redis_password_file {
            self.redis_password = read_secret(path, "cluster.redis_password_file")?;
        }
        if let Some(path) = &self.secret_file {
            self.secret = read_secret(path, "cluster.secret_file")?;
        }
        Ok(())
    }
}

/// A secret file's contents, one trailing line break dropped; empty or
/// oversized files are refused.
fn read_secret(
    path: &std::path::Path,
    key: &'static str,
) -> Result<String, (&'static str, String)> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            f.take(MAX_PASSWORD_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| (key, format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_PASSWORD_FILE_BYTES {
        return Err((key, format!("{} is too large", path.display())));
    }
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err((key, format!("{} is empty", path.display())));
    }
    Ok(password.to_owned())
}

impl ClusterConfig {
    /// `node_id`, or the host name when it is empty.
    pub fn effective_node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        hostname().unwrap_or_else(|| "camgate".into())
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_validated_when_on() {
        let c = ClusterConfig::default();
        assert!(!c.enabled);
        assert!(c.validate().is_ok());
        let on = |f: fn(&mut ClusterConfig)| {
            let mut c = ClusterConfig {
                enabled: true,
                ..ClusterConfig::default()
            };
            f(&mut c);
            c.validate().map_err(|(k, _)| k)
        };
        assert_eq!(on(|_| {}), Ok(()));
        assert_eq!(
            on(|c| c.redis_url = "rediss://r:6380".into()),
            Err("cluster.redis_url")
        );
        assert_eq!(
            on(|c| c.redis_url = "http://r".into()),
            Err("cluster.redis_url")
        );
        assert_eq!(on(|c| c.node_id = "a b".into()), Err("cluster.node_id"));
        assert_eq!(
            on(|c| c.lease_refresh = Duration::from_secs(6)),
            Err("cluster.lease_ttl")
        );
        assert!(!ClusterConfig::default().effective_node_id().is_empty());
    }

    #[test]
    fn password_file_replaces_password() {
        let dir = std::env::temp_dir().join(format!("camgate-redis-pw-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let mut c = ClusterConfig {
            redis_password_file: Some(dir.clone()),
            ..ClusterConfig::default()
        };
        c.read_password_file().unwrap();
        assert_eq!(c.redis_password, "s3cret");
        std::fs::write(&dir, "").unwrap();
        assert_eq!(
            c.read_password_file().map_err(|(k, _)| k),
            Err("cluster.redis_password_file")
        );
        let _ = std::fs::remove_file(dir);
    }
}
