//! Stable GB28181 ids for every channel shown to an upper platform.
//!
//! GB28181 channels keep their own 20-digit ids. Other sources (Foscam,
//! telecom) get an id configured per stream key, or one derived as
//! `{civil code 8}{industry 00}{type 131}{sequence 7}` (GB/T 28181-2016
//! Annex D: type 131 is a camera; sequences from 9000001, away from the
//! low numbers devices give their own channels) and remembered, so an id once shown never
//! changes: the upper platform files recordings and alarms under it.
//!
//! Sans-IO: [`ChannelIds::load`] reads the remembered map from text,
//! [`ChannelIds::to_text`] writes it; the driver does the file I/O.

use std::collections::BTreeMap;

/// Channels remembered at most (a bound on what a corrupt or hostile file
/// can make us hold).
pub const MAX_ENTRIES: usize = 100_000;
/// GB/T 28181-2016 Annex D type code of a camera.
const CAMERA_TYPE: &str = "131";
/// Derived sequences start here: devices number their own channels from 1,
/// so a GB28181 camera registering after an id was derived is unlikely to
/// bring the same id (ids already present are skipped anyway).
const FIRST_DERIVED: u32 = 9_000_001;

#[derive(Debug, thiserror::Error)]
pub enum IdFileError {
    #[error("not a JSON object of stream key to id: {0}")]
    Syntax(String),
    #[error("{0:?} is not a 20-digit id")]
    BadId(String),
    #[error("more than {MAX_ENTRIES} entries")]
    TooMany,
}

/// Whether `id` is a 20-digit GB28181 id.
pub fn is_gb_id(id: &str) -> bool {
    id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelIds {
    /// Derived ids by stream key, as remembered.
    derived: BTreeMap<String, String>,
    /// Set when `derived` gained an entry since the last save.
    dirty: bool,
}

impl ChannelIds {
    pub fn load(text: &str) -> Result<Self, IdFileError> {
        let derived: BTreeMap<String, String> =
            serde_json::from_str(text).map_err(|e| IdFileError::Syntax(e.to_string()))?;
        if derived.len() > MAX_ENTRIES {
            return Err(IdFileError::TooMany);
        }
        if let Some(bad) = derived.values().find(|id| !is_gb_id(id)) {
            return Err(IdFileError::BadId(bad.clone()));
        }
        Ok(Self {
            derived,
            dirty: false,
        })
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(&self.derived).unwrap_or_else(|_| "{}".into())
    }

    /// Whether ids were derived since the last [`ChannelIds::saved`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn saved(&mut self) {
        self.dirty = false;
    }

    /// The id channel `channel_id` of stream `stream` goes by: configured,
    /// its own when it is a GB28181 id, else remembered or derived under
    /// `civil_code` (8 digits), never one in `reserved` (the GB28181
    /// channels' own ids). `None` when the map is full.
    pub fn id_for(
        &mut self,
        stream: &str,
        channel_id: &str,
        configured: &BTreeMap<String, String>,
        civil_code: &str,
        reserved: &std::collections::BTreeSet<String>,
    ) -> Option<String> {
        if let Some(id) = configured.get(stream) {
            return Some(id.clone());
        }
        if stream.starts_with("gb/") && is_gb_id(channel_id) {
            return Some(channel_id.to_owned());
        }
        if let Some(id) = self.derived.get(stream) {
            return Some(id.clone());
        }
        if self.derived.len() >= MAX_ENTRIES {
            return None;
        }
        let prefix = format!("{civil_code}00{CAMERA_TYPE}");
        let taken: std::collections::BTreeSet<&str> = self
            .derived
            .values()
            .map(String::as_str)
            .chain(configured.values().map(String::as_str))
            .chain(reserved.iter().map(String::as_str))
            .collect();
        let id = (FIRST_DERIVED..10_000_000u32)
            .map(|n| format!("{prefix}{n:07}"))
            .find(|id| !taken.contains(id.as_str()))?;
        self.derived.insert(stream.to_owned(), id.clone());
        self.dirty = true;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gb_channels_keep_their_ids_others_get_stable_derived_ones() {
        let configured: BTreeMap<String, String> =
            [("foscam/door".to_owned(), "34020000001310000099".to_owned())].into();
        let mut ids = ChannelIds::default();
        let civil = "34020000";
        let none = std::collections::BTreeSet::new();
        assert_eq!(
            ids.id_for(
                "gb/34020000001320000001/34020000001310000001",
                "34020000001310000001",
                &configured,
                civil,
                &none
            )
            .as_deref(),
            Some("34020000001310000001")
        );
        assert_eq!(
            ids.id_for("foscam/door", "door", &configured, civil, &none)
                .as_deref(),
            Some("34020000001310000099")
        );
        // An id in use by a GB channel is skipped.
        let gb: std::collections::BTreeSet<String> = ["34020000001319000001".to_owned()].into();
        let a = ids
            .id_for("foscam/demo", "demo", &configured, civil, &gb)
            .unwrap();
        let b = ids
            .id_for("ctel/81200000001/0", "0", &configured, civil, &gb)
            .unwrap();
        assert_eq!(a, "34020000001319000002");
        assert_eq!(b, "34020000001319000003");
        assert!(ids.is_dirty());
        // Remembered across a restart, in whatever order channels come.
        let mut again = ChannelIds::load(&ids.to_text()).unwrap();
        assert_eq!(
            again
                .id_for("ctel/81200000001/0", "0", &configured, civil, &none)
                .unwrap(),
            b
        );
        assert_eq!(
            again
                .id_for("foscam/demo", "demo", &configured, civil, &none)
                .unwrap(),
            a
        );
        assert!(!again.is_dirty());
        let c = again
            .id_for("foscam/new", "new", &configured, civil, &gb)
            .unwrap();
        assert_eq!(c, "34020000001319000004");
    }

    #[test]
    fn a_bad_file_is_refused() {
        assert!(matches!(
            ChannelIds::load("[1,2]"),
            Err(IdFileError::Syntax(_))
        ));
        assert!(matches!(
            ChannelIds::load(r#"{"foscam/a": "123"}"#),
            Err(IdFileError::BadId(_))
        ));
    }
}
