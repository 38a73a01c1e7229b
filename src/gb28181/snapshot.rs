//! Snapshots (GB/T 28181-2022 §9.14, A.2.3.2.4 `SnapShotConfig`): we ask a
//! channel for `SnapNum` images `Interval` seconds apart, to be POSTed to
//! our upload URL under a fresh `SessionID`; the device then sends
//! `UploadSnapShotFinished`. This is the sans-IO store of those sessions:
//! bounded in sessions, images per session and image size, and it takes
//! only bodies that look like JPEG (SOI … EOI).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use serde::Serialize;

use crate::metrics::{self, label};

/// Sessions kept; the oldest goes first.
pub const MAX_SESSIONS: usize = 32;
/// Largest image accepted.
pub const MAX_IMAGE_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot session {0}")]
    UnknownSession(String),
    #[error("session {session} already has its {limit} images")]
    Full { session: String, limit: u32 },
    #[error("image of {0} bytes is above the {MAX_IMAGE_BYTES} byte limit")]
    TooLarge(usize),
    #[error("body is not a JPEG image")]
    NotJpeg,
}

impl SnapshotError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownSession(_) => "unknown_session",
            Self::Full { .. } => "full",
            Self::TooLarge(_) => "too_large",
            Self::NotJpeg => "not_jpeg",
        }
    }
}

/// One request and what arrived for it.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotSession {
    pub session: String,
    pub device: String,
    pub channel: String,
    pub requested: u32,
    pub interval: u32,
    /// The device said `UploadSnapShotFinished`.
    pub finished: bool,
    /// File ids the device listed when it finished.
    pub device_files: Vec<String>,
    #[serde(skip)]
    pub images: Vec<Bytes>,
}

#[derive(Default)]
pub struct SnapshotStore {
    sessions: VecDeque<SnapshotSession>,
}

/// JPEG: starts with SOI (FFD8) and a marker, ends with EOI (FFD9).
pub fn looks_like_jpeg(data: &[u8]) -> bool {
    data.len() >= 4 && data.starts_with(&[0xFF, 0xD8, 0xFF]) && data.ends_with(&[0xFF, 0xD9])
}

impl SnapshotStore {
    pub fn open(&mut self, session: SnapshotSession) {
        if self.sessions.len() >= MAX_SESSIONS {
            self.sessions.pop_front();
        }
        self.sessions.push_back(session);
    }

    pub fn get(&self, session: &str) -> Option<&SnapshotSession> {
        self.sessions.iter().find(|s| s.session == session)
    }

    /// Store one uploaded image; returns its number (from 1).
    pub fn add_image(&mut self, session: &str, image: Bytes) -> Result<usize, SnapshotError> {
        let s = self
            .sessions
            .iter_mut()
            .find(|s| s.session == session)
            .ok_or_else(|| SnapshotError::UnknownSession(session.to_owned()))?;
        if image.len() > MAX_IMAGE_BYTES {
            return Err(SnapshotError::TooLarge(image.len()));
        }
        if !looks_like_jpeg(&image) {
            return Err(SnapshotError::NotJpeg);
        }
        if s.images.len() >= s.requested as usize {
            return Err(SnapshotError::Full {
                session: session.to_owned(),
                limit: s.requested,
            });
        }
        s.images.push(image);
        Ok(s.images.len())
    }

    /// `UploadSnapShotFinished` from `device`; false when the session is
    /// unknown or another device's.
    pub fn finish(&mut self, device: &str, session: &str, files: Vec<String>) -> bool {
        match self
            .sessions
            .iter_mut()
            .find(|s| s.session == session && s.device == device)
        {
            Some(s) => {
                s.finished = true;
                s.device_files = files;
                true
            }
            None => false,
        }
    }
}

/// The snapshot sessions as the rest of the platform reaches them: the
/// SIP side closes them (`UploadSnapShotFinished`), the HTTP side stores
/// uploads and reads them. A narrow handle: nothing here reaches devices
/// or the rest of the platform.
#[derive(Default)]
pub struct Snapshots {
    store: Mutex<SnapshotStore>,
}

impl Snapshots {
    fn store_locked(&self) -> std::sync::MutexGuard<'_, SnapshotStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for `count` images of `channel`, `interval` s apart;
    /// opened before the device is asked, as a quick device may upload
    /// before its 200 OK arrives.
    pub fn open(&self, device: &str, channel: &str, count: u32, interval: u32) -> SnapshotSession {
        let session = SnapshotSession {
            session: format!("{:016x}", rand::random::<u64>()),
            device: device.to_owned(),
            channel: channel.to_owned(),
            requested: count,
            interval,
            finished: false,
            device_files: Vec::new(),
            images: Vec::new(),
        };
        self.store_locked().open(session.clone());
        session
    }

    /// An image POSTed to the upload URL of `session`.
    pub fn store(&self, session: &str, image: Bytes) -> Result<usize, SnapshotError> {
        let r = self.store_locked().add_image(session, image);
        let kind = match &r {
            Ok(_) => "stored",
            Err(e) => e.kind(),
        };
        metrics::get()
            .gb_snapshot_images
            .get_or_create(&label("outcome", kind))
            .inc();
        match &r {
            Ok(n) => tracing::info!(%session, n, "snapshot stored"),
            Err(e) => tracing::warn!(%session, "snapshot upload refused: {e}"),
        }
        r
    }

    pub fn get(&self, session: &str) -> Option<SnapshotSession> {
        self.store_locked().get(session).cloned()
    }

    /// `UploadSnapShotFinished` from `device`; false when the session is
    /// unknown or another device's.
    pub fn finish(&self, device: &str, session: &str, files: Vec<String>) -> bool {
        self.store_locked().finish(device, session, files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, n: u32) -> SnapshotSession {
        SnapshotSession {
            session: id.into(),
            device: "d".into(),
            channel: "c".into(),
            requested: n,
            interval: 1,
            finished: false,
            device_files: Vec::new(),
            images: Vec::new(),
        }
    }

    #[test]
    fn images_are_bounded_checked_and_numbered() {
        let jpeg = Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0xFF, 0xD9]);
        let mut store = SnapshotStore::default();
        store.open(session("s1", 2));
        assert_eq!(store.add_image("s1", jpeg.clone()), Ok(1));
        assert_eq!(store.add_image("s1", jpeg.clone()), Ok(2));
        assert!(matches!(
            store.add_image("s1", jpeg.clone()),
            Err(SnapshotError::Full { limit: 2, .. })
        ));
        assert_eq!(
            store.add_image("s1", Bytes::from_static(b"GIF89a")),
            Err(SnapshotError::NotJpeg)
        );
        assert!(matches!(
            store.add_image("nope", jpeg.clone()),
            Err(SnapshotError::UnknownSession(_))
        ));
        assert!(!store.finish("other-device", "s1", vec![]));
        assert!(store.finish("d", "s1", vec!["f1".into()]));
        assert!(store.get("s1").unwrap().finished);

        for i in 0..MAX_SESSIONS {
            store.open(session(&format!("x{i}"), 1));
        }
        assert!(store.get("s1").is_none(), "oldest session evicted");
        assert_eq!(store.sessions.len(), MAX_SESSIONS);
    }
}
