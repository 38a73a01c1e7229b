//! The `cascade` section: the upper platforms camgate registers to as a
//! lower platform (GB/T 28181-2016 §5 networking, §9.1 registration).

use std::time::Duration;

use serde::Deserialize;

use crate::config_secs as secs;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CascadeConfig {
    /// Upper platforms to register to; empty = no cascade.
    pub upstreams: Vec<UpstreamConfig>,
    /// Where ids derived for non-GB28181 channels are remembered, so they
    /// never change across restarts.
    pub id_file: std::path::PathBuf,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            id_file: "cascade-channel-ids.json".into(),
        }
    }
}

/// SIP transport toward an upper platform (GB/T 28181-2016 §4.3): UDP,
/// or one TCP connection we make and keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTransport {
    #[default]
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A name for logs, the API and metrics; default: the server id.
    pub name: String,
    /// The upper platform's 20-digit SIP server id.
    pub server_id: String,
    /// Its SIP domain (the first 10 digits of `server_id` by convention).
    pub realm: String,
    /// Where its SIP server listens, `host:port`.
    pub address: String,
    pub transport: UpstreamTransport,
    /// Our id toward it: 20 digits, type code 200 (digits 11–13).
    pub platform_id: String,
    /// Digest password the upper platform gave us.
    pub password: String,
    /// Local port (UDP socket, or TCP connection's source) for this
    /// upstream's SIP; 0 = any free port.
    pub local_port: u16,
    /// Registration lifetime asked for, seconds; refreshed at half of what
    /// the upper platform grants.
    #[serde(with = "secs")]
    pub expires: Duration,
    /// Keepalive MESSAGE interval, seconds.
    #[serde(with = "secs")]
    pub keepalive_interval: Duration,
    /// Unanswered keepalives in a row after which we register again.
    pub keepalive_misses: u32,
    /// Which channels this platform sees: `all`, or stream keys / key
    /// prefixes (`gb/34020000001320000001/`, `foscam/`, `ctel/81200000001/0`).
    pub channels: Vec<String>,
    /// GB28181 id per stream key for non-GB sources (else derived).
    pub channel_ids: std::collections::BTreeMap<String, String>,
    /// Civil code (8 digits) for derived channel ids and `CivilCode`;
    /// default: the first 8 digits of `platform_id`.
    pub civil_code: String,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            server_id: String::new(),
            realm: String::new(),
            address: String::new(),
            transport: UpstreamTransport::Udp,
            platform_id: String::new(),
            password: String::new(),
            local_port: 0,
            expires: Duration::from_secs(3600),
            keepalive_interval: Duration::from_secs(60),
            keepalive_misses: 3,
            channels: vec!["all".into()],
            channel_ids: Default::default(),
            civil_code: String::new(),
        }
    }
}

fn is_gb_id(id: &str) -> bool {
    id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit())
}

impl UpstreamConfig {
    /// Whether the channel playing `stream` is shown to this platform.
    pub fn exposes(&self, stream: &str) -> bool {
        self.channels
            .iter()
            .any(|c| c == "all" || stream.starts_with(c.as_str()))
    }

    /// The civil code of derived ids.
    pub fn civil_code(&self) -> &str {
        if self.civil_code.is_empty() {
            self.platform_id.get(..8).unwrap_or("00000000")
        } else {
            &self.civil_code
        }
    }

    /// The name shown in logs, the API and metrics.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.server_id
        } else {
            &self.name
        }
    }
}

impl CascadeConfig {
    /// Returns the offending key and why.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let mut names = std::collections::BTreeSet::new();
        for u in &self.upstreams {
            if !is_gb_id(&u.server_id) {
                return Err((
                    "cascade.upstreams.server_id",
                    format!("must be a 20-digit GB28181 id, got {:?}", u.server_id),
                ));
            }
            if !is_gb_id(&u.platform_id) || &u.platform_id[10..13] != "200" {
                return Err((
                    "cascade.upstreams.platform_id",
                    format!(
                        "must be a 20-digit id with type code 200 (digits 11-13), got {:?}",
                        u.platform_id
                    ),
                ));
            }
            if u.realm.is_empty() {
                return Err(("cascade.upstreams.realm", "must not be empty".into()));
            }
            if u.address
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err((
                    "cascade.upstreams.address",
                    format!("must be host:port, got {:?}", u.address),
                ));
            }
            if u.expires < Duration::from_secs(2) {
                return Err(("cascade.upstreams.expires", "must be at least 2 s".into()));
            }
            if u.keepalive_interval.is_zero() {
                return Err((
                    "cascade.upstreams.keepalive_interval",
                    "must be above 0".into(),
                ));
            }
            if u.keepalive_misses == 0 {
                return Err((
                    "cascade.upstreams.keepalive_misses",
                    "must be at least 1".into(),
                ));
            }
            if !u.civil_code.is_empty()
                && (u.civil_code.len() != 8 || !u.civil_code.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err((
                    "cascade.upstreams.civil_code",
                    format!("must be 8 digits, got {:?}", u.civil_code),
                ));
            }
            if let Some(bad) = u.channel_ids.values().find(|id| !is_gb_id(id)) {
                return Err((
                    "cascade.upstreams.channel_ids",
                    format!("must be 20-digit ids, got {bad:?}"),
                ));
            }
            if !names.insert(u.display_name().to_owned()) {
                return Err((
                    "cascade.upstreams.name",
                    format!("{:?} is used twice", u.display_name()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const UPSTREAM: &str = "cascade:\n  upstreams:\n    - server_id: \"44010000002000000001\"\n      realm: \"4401000000\"\n      address: \"127.0.0.1:5060\"\n      platform_id: \"34020000002000000002\"\n      password: pw\n";

    #[test]
    fn upstream_parses_with_defaults() {
        let c = Config::from_yaml(UPSTREAM, "test").unwrap();
        let u = &c.cascade.upstreams[0];
        assert_eq!(u.display_name(), "44010000002000000001");
        assert_eq!(u.expires.as_secs(), 3600);
        assert_eq!(u.keepalive_interval.as_secs(), 60);
        assert_eq!(u.keepalive_misses, 3);
        assert_eq!(u.civil_code(), "34020000");
        assert!(u.exposes("ctel/81200000001/0"));
        assert_eq!(c.cascade.id_file.to_str(), Some("cascade-channel-ids.json"));
        let embedded = Config::from_yaml(crate::config::DEFAULT_YAML, "embedded").unwrap();
        assert!(embedded.cascade.upstreams.is_empty());
    }

    #[test]
    fn channel_filter_takes_prefixes() {
        let yaml = format!("{UPSTREAM}      channels: [\"foscam/\", \"gb/3402\"]\n");
        let c = Config::from_yaml(&yaml, "test").unwrap();
        let u = &c.cascade.upstreams[0];
        assert!(u.exposes("foscam/demo"));
        assert!(u.exposes("gb/34020000001320000001/34020000001310000001"));
        assert!(!u.exposes("ctel/81200000001/0"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (from, to, key) in [
            (
                "34020000002000000002",
                "34020000001320000002",
                "platform_id",
            ),
            ("44010000002000000001", "4401", "server_id"),
            ("127.0.0.1:5060", "nowhere", "address"),
            (
                "password: pw",
                "password: pw\n      keepalive_misses: 0",
                "keepalive_misses",
            ),
            (
                "password: pw",
                "password: pw\n      civil_code: \"12\"",
                "civil_code",
            ),
        ] {
            let err = Config::from_yaml(&UPSTREAM.replace(from, to), "test")
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("cascade.upstreams.{key}")), "{err}");
        }
    }
}
