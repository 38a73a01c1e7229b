//! The `ctel` section of the configuration: the platform side of the
//! 手机看店 spec (HTTP registration, the 8588 link, tokens).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::config_secs as secs;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CtelConfig {
    /// Off by default so a gateway without telecom devices opens no 8588.
    pub enabled: bool,
    /// The FA F5 link listener (spec default port 8588).
    pub listen: SocketAddr,
    /// NatIP given to devices in REGISTER_RES; default: the advertised IP.
    pub external_ip: Option<IpAddr>,
    /// Allow-list: devices that may register and log in, with their keys.
    pub devices: Vec<CtelDeviceEntry>,
    /// A link silent this long is closed and its device marked offline.
    #[serde(with = "secs")]
    pub heartbeat_timeout: Duration,
    /// How long a minted HashToken stays valid (it is also single-use).
    #[serde(with = "secs")]
    pub token_ttl: Duration,
    /// Account and password mixed into every HashToken.
    pub token_account: String,
    pub token_password: String,
    /// How long a device has to answer a platform command (PTZ, search…).
    #[serde(with = "secs")]
    pub command_timeout: Duration,
    /// Per-address budget when pulling a device's RTSP (connect + DESCRIBE).
    #[serde(with = "secs")]
    pub rtsp_connect_timeout: Duration,
    /// Largest FA F5 body accepted (the wire maximum is 65,535).
    pub max_body: usize,
    /// Exceptions kept for `GET /api/v1/ctel/events`.
    pub event_log_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtelDeviceEntry {
    pub dev_id: String,
    pub dev_key: String,
}

impl Default for CtelConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8588),
            external_ip: None,
            devices: Vec::new(),
            heartbeat_timeout: Duration::from_secs(360),
            token_ttl: Duration::from_secs(60),
            token_account: "camgate".into(),
            token_password: String::new(),
            command_timeout: Duration::from_secs(5),
            rtsp_connect_timeout: Duration::from_secs(3),
            max_body: crate::ctel::frame::MAX_BODY,
            event_log_size: 256,
        }
    }
}

impl CtelConfig {
    /// Returns the offending key and why.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        for d in &self.devices {
            // The PUID is 11 digits, the first three the manufacturer (§7.2.1).
            if d.dev_id.len() != 11 || !d.dev_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err((
                    "ctel.devices.dev_id",
                    format!("must be the 11-digit PUID, got {:?}", d.dev_id),
                ));
            }
        }
        if self.heartbeat_timeout.is_zero() {
            return Err(("ctel.heartbeat_timeout", "must be above 0".into()));
        }
        if self.max_body == 0 || self.max_body > crate::ctel::frame::MAX_BODY {
            return Err((
                "ctel.max_body",
                format!("must be 1 to 65535, got {}", self.max_body),
            ));
        }
        Ok(())
    }

    pub fn key_for(&self, dev_id: &str) -> Option<&str> {
        self.devices
            .iter()
            .find(|d| d.dev_id == dev_id)
            .map(|d| d.dev_key.as_str())
    }
}
