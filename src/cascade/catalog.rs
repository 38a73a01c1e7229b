//! The channels an upper platform is shown (GB/T 28181-2016 §9.5.3
//! Catalog), with the ids they keep across restarts, and the shared state
//! serving one upstream needs.

use std::sync::{Arc, Mutex};

use tracing::warn;

use super::answers::ExposedChannel;
use super::channel_ids::{ChannelIds, is_gb_id};
use super::config::UpstreamConfig;
use super::invite::Sessions;
use super::session::MediaServices;
use super::subscription::CatalogSubscription;
use crate::streams::control::ChannelControl;
use crate::streams::directory::{DeviceDirectory, all_devices};

/// Channels every upstream may be shown, their remembered ids, and what
/// upward streams need.
#[derive(Clone)]
pub(super) struct Catalog {
    pub directories: Arc<[Arc<dyn DeviceDirectory>]>,
    /// Each adapter's way to act on its channels (PTZ, records).
    pub controls: Arc<[Arc<dyn ChannelControl>]>,
    /// Forwarded DeviceControl and RecordInfo requests running now.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub ids: Arc<IdStore>,
    pub media: MediaServices,
    pub sessions: Sessions,
    /// Catalog subscriptions of the upper platform (§9.7.1).
    pub subscriptions: Arc<Mutex<Vec<CatalogSubscription>>>,
    /// Camera alarms, and the upper platform's alarm subscriptions (§9.4).
    pub alarm_feed: crate::streams::alarms::AlarmFeed,
    pub alarm_subscriptions: Arc<Mutex<super::alarms::AlarmSubscriptions>>,
}

/// [`ChannelIds`] kept in a file.
pub(super) struct IdStore {
    path: std::path::PathBuf,
    ids: Mutex<ChannelIds>,
}

impl IdStore {
    /// Read the remembered ids; a missing file is an empty map, a broken
    /// one is logged and set aside (ids are derived again from 1).
    pub fn open(path: std::path::PathBuf) -> Self {
        let ids = match std::fs::read_to_string(&path) {
            Ok(text) => ChannelIds::load(&text).unwrap_or_else(|e| {
                warn!(path = %path.display(), "cascade: channel id file unusable ({e}); starting afresh");
                ChannelIds::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ChannelIds::default(),
            Err(e) => {
                warn!(path = %path.display(), "cascade: reading channel ids: {e}");
                ChannelIds::default()
            }
        };
        Self {
            path,
            ids: Mutex::new(ids),
        }
    }

    /// Save when new ids were derived: write a temporary file and rename
    /// it over the old one, so a crash never leaves half a file.
    fn save_if_changed(&self) {
        let text = {
            let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            if !ids.is_dirty() {
                return;
            }
            ids.saved();
            ids.to_text()
        };
        let tmp = self.path.with_extension("tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            warn!(path = %self.path.display(), "cascade: saving channel ids: {e}");
        }
    }
}

impl Catalog {
    /// The channels `up` sees, in directory order, with their ids.
    pub fn exposed(&self, up: &UpstreamConfig) -> Vec<ExposedChannel> {
        let devices = all_devices(&self.directories);
        // GB28181 channels keep their ids; derived ones must not clash.
        let reserved: std::collections::BTreeSet<String> = devices
            .iter()
            .flat_map(|d| &d.channels)
            .filter(|c| c.stream.starts_with("gb/") && is_gb_id(&c.id))
            .map(|c| c.id.clone())
            .collect();
        let mut out = Vec::new();
        {
            let mut ids = self.ids.ids.lock().unwrap_or_else(|e| e.into_inner());
            for d in &devices {
                for c in &d.channels {
                    if !up.exposes(&c.stream) {
                        continue;
                    }
                    let Some(id) = ids.id_for(
                        &c.stream,
                        &c.id,
                        &up.channel_ids,
                        up.civil_code(),
                        &reserved,
                    ) else {
                        continue;
                    };
                    out.push(ExposedChannel {
                        id,
                        name: c
                            .name
                            .clone()
                            .or_else(|| d.name.clone())
                            .unwrap_or_else(|| c.stream.clone()),
                        manufacturer: d
                            .manufacturer
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", d.protocol)),
                        model: d.model.clone().unwrap_or_else(|| "camera".into()),
                        online: d.online && c.online,
                        stream: c.stream.clone(),
                        ptz: c.capabilities.ptz,
                    });
                }
            }
        }
        self.ids.save_if_changed();
        out
    }
}
