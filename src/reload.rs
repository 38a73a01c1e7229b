//! The live configuration and its reload on SIGHUP.
//!
//! Readers take a snapshot (`LiveConfig::get`, an `Arc<Config>`) per
//! decision, so a reload never tears a half-read config. A reload re-reads
//! the file (and `sip.password_file`) and applies only the keys that are
//! read per decision: credentials, the device allow-list and per-request
//! time limits. Keys baked into running parts (listen addresses, port
//! ranges, registrar and hub tuning) keep their running values; their
//! changes are logged as "needs restart" and counted in
//! `camgate_config_restart_pending`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::metrics::{self, label};

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys whose new values are now in effect.
    pub applied: Vec<&'static str>,
    /// Keys that changed in the file but keep their running values.
    pub needs_restart: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to reload (running on the embedded default)")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl ReloadError {
    pub fn kind(&self) -> &'static str {
        match self {
            ReloadError::NoFile => "no_file",
            ReloadError::Config(_) => "invalid",
        }
    }
}

/// The configuration in effect, swappable at run time; cheap to clone.
#[derive(Clone)]
pub struct LiveConfig {
    shared: Arc<Shared>,
}

struct Shared {
    current: RwLock<Arc<Config>>,
    path: Option<PathBuf>,
}

/// Keys applied on reload: each is read afresh for every decision.
macro_rules! for_safe_keys {
    ($m:ident) => {
        $m!("sip.password", sip.password);
        $m!("sip.password_file", sip.password_file);
        $m!("sip.device_passwords", sip.device_passwords);
        $m!("sip.allowed_devices", sip.allowed_devices);
        $m!("sip.device_usernames", sip.device_usernames);
        $m!("sip.invite_timeout", sip.invite_timeout);
        $m!("media.rtp_timeout", media.rtp_timeout);
        $m!("metrics.per_device_labels", metrics.per_device_labels);
        $m!("shutdown_grace", shutdown_grace);
    };
}

/// Keys read once at start-up.
macro_rules! for_restart_keys {
    ($m:ident) => {
        $m!("sip.listen", sip.listen);
        $m!("sip.external_ip", sip.external_ip);
        $m!("sip.server_id", sip.server_id);
        $m!("sip.realm", sip.realm);
        $m!("sip.max_expires", sip.max_expires);
        $m!("sip.keepalive_timeout", sip.keepalive_timeout);
        $m!("media.rtp_bind", media.rtp_bind);
        $m!("media.rtp_port_min", media.rtp_port_min);
        $m!("media.rtp_port_max", media.rtp_port_max);
        $m!("media.viewer_queue_frames", media.viewer_queue_frames);
        $m!("media.viewer_queue_seconds", media.viewer_queue_seconds);
        $m!("media.gop_cache", media.gop_cache);
        $m!("streams.idle_timeout", streams.idle_timeout);
        $m!("streams.reconnect_window", streams.reconnect_window);
        $m!("rtsp.listen", rtsp.listen);
        $m!("rtsp.session_timeout", rtsp.session_timeout);
        $m!("http.listen", http.listen);
        $m!("http.auth", http.auth);
        $m!("http.api_keys", http.api_keys);
        $m!("metrics.auth", metrics.auth);
        $m!("sip.digest_sha256", sip.digest_sha256);
        $m!("demo.device_id", demo.device_id);
        $m!("demo.channel_id", demo.channel_id);
        $m!("demo.sip_port", demo.sip_port);
        $m!(
            "limits.max_connections_per_ip",
            limits.max_connections_per_ip
        );
        $m!("limits.request_timeout", limits.request_timeout);
    };
}

/// Merge `new` into a copy of `running`: safe keys from `new`, the rest
/// kept. Pure, so the key policy is testable without signals or files.
pub fn merge(running: &Config, new: &Config) -> (Config, ReloadReport) {
    let mut merged = running.clone();
    let mut report = ReloadReport::default();
    macro_rules! apply {
        ($key:literal, $($field:ident).+) => {
            if running.$($field).+ != new.$($field).+ {
                merged.$($field).+ = new.$($field).+.clone();
                report.applied.push($key);
            }
        };
    }
    for_safe_keys!(apply);
    macro_rules! restart {
        ($key:literal, $($field:ident).+) => {
            if running.$($field).+ != new.$($field).+ {
                report.needs_restart.push($key);
            }
        };
    }
    for_restart_keys!(restart);
    // Keys added to Config after this list was written are caught here, so
    // a change is never silently dropped.
    if report.needs_restart.is_empty() && format!("{merged:?}") != format!("{new:?}") {
        report.needs_restart.push("(keys not reloadable)");
    }
    (merged, report)
}

impl LiveConfig {
    /// `path` is where reloads read from; `None` for the embedded default.
    pub fn new(config: Config, path: Option<PathBuf>) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: RwLock::new(Arc::new(config)),
                path,
            }),
        }
    }

    /// The configuration in effect now.
    pub fn get(&self) -> Arc<Config> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Apply the safe keys of `new`; see [`merge`].
    pub fn apply(&self, new: &Config) -> ReloadReport {
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let (merged, report) = merge(&current, new);
        if !report.applied.is_empty() {
            *current = Arc::new(merged);
        }
        report
    }

    /// Re-read the file and apply it. An invalid file changes nothing.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.shared.path.as_ref().ok_or(ReloadError::NoFile)?;
        let new = Config::from_file(path)?;
        Ok(self.apply(&new))
    }

    /// Reload, log what changed by key (never values: they hold passwords),
    /// and count it.
    pub fn reload_and_log(&self) {
        let m = metrics::get();
        match self.reload() {
            Ok(report) => {
                let outcome = if report.applied.is_empty() {
                    "unchanged"
                } else {
                    "applied"
                };
                m.config_reloads
                    .get_or_create(&label("outcome", outcome))
                    .inc();
                if !report.needs_restart.is_empty() {
                    m.config_restart_pending.set(1);
                    warn!(
                        keys = %report.needs_restart.join(","),
                        "configuration changed: needs restart to take effect"
                    );
                }
                info!(
                    applied = %report.applied.join(","),
                    "configuration reloaded"
                );
            }
            Err(e) => {
                m.config_reloads
                    .get_or_create(&label("outcome", "failed"))
                    .inc();
                error!(
                    kind = e.kind(),
                    "configuration reload failed, keeping the running one: {e}"
                );
            }
        }
    }
}

/// Reload on every SIGHUP until `cancel`.
pub async fn reload_on_sighup(live: LiveConfig, cancel: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            error!("cannot install the SIGHUP handler; reload is unavailable");
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    info!("SIGHUP: reloading configuration");
                    live.reload_and_log();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (live, cancel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Config {
        Config::from_yaml(s, "t").unwrap()
    }

    #[test]
    fn safe_keys_apply_and_restart_keys_keep_running_values() {
        let running = yaml("sip:\n  password: old\n  listen: \"127.0.0.1:5060\"\n");
        let new = yaml(
            "sip:\n  password: new\n  listen: \"127.0.0.1:5070\"\n  allowed_devices: [\"34020000001320000001\"]\n",
        );
        let (merged, report) = merge(&running, &new);
        assert_eq!(report.applied, vec!["sip.password", "sip.allowed_devices"]);
        assert_eq!(report.needs_restart, vec!["sip.listen"]);
        assert_eq!(merged.sip.password, "new");
        assert_eq!(merged.sip.listen.port(), 5060);
        assert!(!merged.device_allowed("34020000001320000002"));
    }

    #[test]
    fn identical_config_reports_nothing() {
        let c = yaml("sip:\n  password: a\n");
        assert_eq!(merge(&c, &c).1, ReloadReport::default());
    }

    #[test]
    fn live_config_swaps_snapshot_only_when_something_applied() {
        let dir = std::env::temp_dir().join(format!("camgate-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, "sip:\n  password: one\n").unwrap();
        let live = LiveConfig::new(Config::from_file(&path).unwrap(), Some(path.clone()));
        let before = live.get();
        std::fs::write(&path, "sip:\n  password: two\n  realm: \"3402000001\"\n").unwrap();
        let report = live.reload().unwrap();
        assert_eq!(report.applied, vec!["sip.password"]);
        assert_eq!(report.needs_restart, vec!["sip.realm"]);
        assert_eq!(live.get().password_for("x"), Some("two"));
        assert_eq!(live.get().sip.realm, "3402000000");
        assert_eq!(before.password_for("x"), Some("one"));
        // A broken file keeps the running configuration.
        std::fs::write(&path, "sip:\n  pasword: three\n").unwrap();
        assert!(matches!(live.reload(), Err(ReloadError::Config(_))));
        assert_eq!(live.get().password_for("x"), Some("two"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn password_file_is_read_and_reread() {
        let dir = std::env::temp_dir().join(format!("camgate-pwfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            format!(
                "sip:\n  password: ignored\n  password_file: \"{}\"\n",
                secret.display()
            ),
        )
        .unwrap();
        let live = LiveConfig::new(Config::from_file(&path).unwrap(), Some(path.clone()));
        assert_eq!(live.get().password_for("x"), Some("s3cret"));
        std::fs::write(&secret, "rotated").unwrap();
        assert_eq!(live.reload().unwrap().applied, vec!["sip.password"]);
        assert_eq!(live.get().password_for("x"), Some("rotated"));
        std::fs::write(&secret, "\n").unwrap();
        let err = live.reload().unwrap_err().to_string();
        assert!(
            err.contains("sip.password_file") && err.contains("empty"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
