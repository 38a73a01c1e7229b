//! Durations written as whole (or fractional) seconds in the YAML
//! configuration (`#[serde(with = "crate::config_secs")]`).
//!
//! A leaf module so the root configuration and each adapter's own section
//! (e.g. `ctel`) share it without the adapter importing the root config.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Longest duration any setting takes: one year.
const MAX_SECS: f64 = 86_400.0 * 365.0;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = f64::deserialize(d)?;
    if !(0.0..=MAX_SECS).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "{v} is not a duration in seconds (0 to one year)"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}
