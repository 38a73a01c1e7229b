//! Camera alarms in a shape every egress can read (GB/T 28181-2016 §9.4
//! alarm event notification, fields of A.2.5.3), so the cascade can tell
//! an upper platform about them without importing an adapter (the import
//! rule of `lib.rs`). `app.rs` turns each adapter's alarm events into
//! [`ChannelAlarm`]s on one broadcast feed, as it hands over the device
//! directories.

/// Alarms the feed buffers for a slow reader before it lags (a lagging
/// reader is told how many it missed).
pub const FEED_CAPACITY: usize = 256;

/// One alarm of a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAlarm {
    /// The device's stream-key prefix: `gb/{device}`, `foscam/{name}`;
    /// its channels' streams are this or start with it and `/`.
    pub device: String,
    /// The alarming channel's id as the device named it (a GB28181
    /// alarm's DeviceID), when it named one.
    pub channel: Option<String>,
    /// 1 (highest) to 4.
    pub priority: Option<u32>,
    /// 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 fault, 7 other.
    pub method: Option<u32>,
    /// Local time `YYYY-MM-DDTHH:MM:SS`, as the device gave it or as we
    /// received it.
    pub time: String,
    pub description: Option<String>,
    /// Meaning depends on `method` (A.2.5.3), e.g. video 2 = motion.
    pub alarm_type: Option<u32>,
}

/// The feed: each reader subscribes its own receiver.
pub type AlarmFeed = tokio::sync::broadcast::Sender<ChannelAlarm>;

/// A feed nobody sends on yet.
pub fn feed() -> AlarmFeed {
    tokio::sync::broadcast::channel(FEED_CAPACITY).0
}
