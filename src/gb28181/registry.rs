//! The device table: which GB28181 devices are registered (GB/T 28181-2016
//! §9.1, REGISTER), which are alive (§9.6, keepalive MESSAGE), what they
//! said about themselves (A.2.6.3 DeviceInfo) and which channels they carry
//! (A.2.6.4 Catalog).
//!
//! Sans-IO: every call takes `now`; [`Registry::tick`] turns elapsed time
//! into events (offline, expired). The driver calls `tick` on a timer and
//! publishes [`Registry::registered_count`] / [`Registry::online_count`]
//! to the metrics gauges.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::manscdp::{CatalogItem, DeviceInfoResponse};

/// Most channels kept per device: a large NVR has a few hundred; this bound
/// only stops a misbehaving device from growing the table without limit.
pub const MAX_CHANNELS_PER_DEVICE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// First registration (or first since it expired / was removed): the
    /// driver should query DeviceInfo and Catalog.
    New,
    /// A refresh of a live registration.
    Refreshed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// The device went from absent or offline to online (registration or
    /// keepalive).
    Online(String),
    /// Registered, but no keepalive within the timeout.
    Offline(String),
    /// The registration lapsed without a refresh; the device was removed.
    Expired(String),
}

/// What a device said in its DeviceInfo response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// Number of video channels the device reports.
    pub channel_count: Option<u32>,
}

impl From<&DeviceInfoResponse> for DeviceInfo {
    fn from(r: &DeviceInfoResponse) -> Self {
        Self {
            name: r.device_name.clone(),
            manufacturer: r.manufacturer.clone(),
            model: r.model.clone(),
            firmware: r.firmware.clone(),
            channel_count: r.channel,
        }
    }
}

/// A video channel from a device's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Channel {
    pub id: String,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    /// As reported (`ON`/`OFF`).
    pub status: Option<String>,
    /// `status` read as a flag.
    pub online: bool,
    pub parent_id: Option<String>,
    pub civil_code: Option<String>,
    pub address: Option<String>,
    pub ptz_type: Option<u32>,
}

impl From<&CatalogItem> for Channel {
    fn from(i: &CatalogItem) -> Self {
        Self {
            id: i.device_id.clone(),
            name: i.name.clone(),
            manufacturer: i.manufacturer.clone(),
            model: i.model.clone(),
            status: i.status.clone(),
            online: i.is_on(),
            parent_id: i.parent_id.clone(),
            civil_code: i.civil_code.clone(),
            address: i.address.clone(),
            ptz_type: i.ptz_type,
        }
    }
}

/// One registered device.
#[derive(Debug, Clone)]
pub struct Device {
    id: String,
    transport: SipTransport,
    addr: SocketAddr,
    expires: Duration,
    registered_at: Instant,
    expires_at: Instant,
    last_keepalive: Option<Instant>,
    /// Last registration or keepalive: the base of the keepalive timeout.
    last_seen: Instant,
    /// The device's own heartbeat interval × count (ConfigDownload
    /// BasicParam), when it told us; else the configured default.
    keepalive_timeout: Option<Duration>,
    online: bool,
    info: DeviceInfo,
    channels: Vec<Channel>,
    /// Call-ID of its REGISTERs: a device keeps it across refreshes
    /// (RFC 3261 §10.2.4) and picks a new one when it restarts.
    register_call_id: Option<String>,
}

impl Device {
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn transport(&self) -> SipTransport {
        self.transport
    }
    /// Where to send requests to the device (its latest source address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn expires(&self) -> Duration {
        self.expires
    }
    pub fn registered_at(&self) -> Instant {
        self.registered_at
    }
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }
    pub fn last_keepalive(&self) -> Option<Instant> {
        self.last_keepalive
    }
    pub fn online(&self) -> bool {
        self.online
    }
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }
}

/// A device as the HTTP API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSummary {
    pub id: String,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub transport: SipTransport,
    pub address: String,
    pub online: bool,
    /// Unix seconds of the first REGISTER of this registration.
    pub registered_at: u64,
    /// `None` until the first keepalive.
    pub last_keepalive_secs_ago: Option<u64>,
    pub channel_count: usize,
}

#[derive(Debug)]
pub struct Registry {
    keepalive_timeout: Duration,
    /// Ordered so listings and tick events come out in a stable order.
    devices: BTreeMap<String, Device>,
    /// Channel id → devices listing it, latest catalog last. Usually one;
    /// several when an NVR and the camera itself both list a channel, so
    /// removing one still leaves the channel reachable through the other.
    channel_owner: HashMap<String, Vec<String>>,
    /// Transitions caused by register/keepalive, handed out by `tick`.
    pending: Vec<RegistryEvent>,
    /// Devices with `online` set, kept as they change: the gauge is read
    /// after every REGISTER, and counting 10,000 devices each time would
    /// make a registration storm quadratic.
    online_devices: usize,
}

impl Registry {
    pub fn new(keepalive_timeout: Duration) -> Self {
        Self {
            keepalive_timeout,
            devices: BTreeMap::new(),
            channel_owner: HashMap::new(),
            pending: Vec::new(),
            online_devices: 0,
        }
    }

    /// Record a successful REGISTER. `expires` is the granted lifetime; a
    /// REGISTER with `Expires: 0` is a de-registration — call
    /// [`Registry::unregister`] for it instead.
    pub fn register(
        &mut self,
        id: &str,
        transport: SipTransport,
        addr: SocketAddr,
        expires: Duration,
        now: Instant,
    ) -> RegisterOutcome {
        let expires_at = now.checked_add(expires).unwrap_or(now);
        if let Some(d) = self.devices.get_mut(id) {
            d.transport = transport;
            d.addr = addr;
            d.expires = expires;
            d.expires_at = expires_at;
            d.last_seen = now;
            if !d.online {
                d.online = true;
                self.online_devices += 1;
                self.pending.push(RegistryEvent::Online(id.to_owned()));
            }
            return RegisterOutcome::Refreshed;
        }
        self.devices.insert(
            id.to_owned(),
            Device {
                id: id.to_owned(),
                transport,
                addr,
                expires,
                registered_at: now,
                expires_at,
                last_keepalive: None,
                last_seen: now,
                keepalive_timeout: None,
                register_call_id: None,
                online: true,
                info: DeviceInfo::default(),
                channels: Vec::new(),
            },
        );
        self.online_devices += 1;
        self.pending.push(RegistryEvent::Online(id.to_owned()));
        RegisterOutcome::New
    }

    /// Note the Call-ID of an accepted REGISTER of `id`. True when the
    /// device registered before under another Call-ID: it restarted, and
    /// every call it had is gone with its memory.
    pub fn note_register_call_id(&mut self, id: &str, call_id: &str) -> bool {
        let Some(d) = self.devices.get_mut(id) else {
            return false;
        };
        let restarted = d
            .register_call_id
            .as_deref()
            .is_some_and(|old| old != call_id);
        if d.register_call_id.as_deref() != Some(call_id) {
            d.register_call_id = Some(call_id.to_owned());
        }
        restarted
    }

    /// Use the device's own offline window (its HeartBeatInterval ×
    /// HeartBeatCount) instead of the configured one; false if unknown.
    pub fn set_keepalive_timeout(&mut self, id: &str, timeout: Duration) -> bool {
        match self.devices.get_mut(id) {
            Some(d) => {
                d.keepalive_timeout = Some(timeout);
                true
            }
            None => false,
        }
    }

    /// Remove a device and its channels; false if it was not registered.
    pub fn unregister(&mut self, id: &str) -> bool {
        match self.devices.remove(id) {
            Some(d) => {
                if d.online {
                    self.online_devices -= 1;
                }
                self.forget_channels(id, &d.channels);
                true
            }
            None => false,
        }
    }

    /// Whether a request from `transport`/`addr` may speak for device `id`:
    /// `None` when the device is not registered, else whether it comes from
    /// where its last digest REGISTER came from (GB/T 28181-2016 §9.1 binds
    /// the device to that transport address; anything else is somebody
    /// else, whatever its From says).
    pub fn sender_matches(
        &self,
        id: &str,
        transport: SipTransport,
        addr: SocketAddr,
    ) -> Option<bool> {
        self.devices
            .get(id)
            .map(|d| d.transport == transport && d.addr == addr)
    }

    /// Record a keepalive from `addr`; false for an unregistered device or
    /// one registered at another address. A keepalive never moves a
    /// device: only an authenticated REGISTER does (a NAT rebinding shows
    /// up as a 403 here, upon which devices register again).
    pub fn keepalive(&mut self, id: &str, addr: SocketAddr, now: Instant) -> bool {
        let Some(d) = self.devices.get_mut(id) else {
            return false;
        };
        if d.addr != addr {
            return false;
        }
        d.last_keepalive = Some(now);
        d.last_seen = now;
        if !d.online {
            d.online = true;
            self.online_devices += 1;
            self.pending.push(RegistryEvent::Online(id.to_owned()));
        }
        true
    }

    /// Store a DeviceInfo answer; false for an unknown device.
    pub fn set_info(&mut self, id: &str, info: DeviceInfo) -> bool {
        match self.devices.get_mut(id) {
            Some(d) => {
                d.info = info;
                true
            }
            None => false,
        }
    }

    /// Replace a device's channel list; false for an unknown device.
    pub fn set_channels(&mut self, id: &str, mut channels: Vec<Channel>) -> bool {
        let Some(d) = self.devices.get_mut(id) else {
            return false;
        };
        // A channel listed twice would be counted twice; keep the first.
        let mut seen = std::collections::HashSet::new();
        channels.retain(|c| seen.insert(c.id.clone()));
        channels.truncate(MAX_CHANNELS_PER_DEVICE);
        let old = std::mem::replace(&mut d.channels, channels);
        self.forget_channels(id, &old);
        self.index_channels(id);
        true
    }

    /// Add or update channels by id, keeping the others: catalogs arrive as
    /// several pages (MESSAGEs) sharing one SN.
    pub fn upsert_channels(&mut self, id: &str, channels: Vec<Channel>) -> bool {
        let Some(d) = self.devices.get_mut(id) else {
            return false;
        };
        for c in channels {
            match d.channels.iter().position(|x| x.id == c.id) {
                Some(i) => d.channels[i] = c,
                None if d.channels.len() < MAX_CHANNELS_PER_DEVICE => d.channels.push(c),
                None => {
                    tracing::warn!(device = id, "channel limit reached; catalog item dropped");
                }
            }
        }
        self.index_channels(id);
        true
    }

    fn index_channels(&mut self, id: &str) {
        if let Some(d) = self.devices.get(id) {
            for c in &d.channels {
                // The latest catalog wins the lookup: move this device last.
                let owners = self.channel_owner.entry(c.id.clone()).or_default();
                owners.retain(|o| o != id);
                owners.push(id.to_owned());
            }
        }
    }

    fn forget_channels(&mut self, id: &str, channels: &[Channel]) {
        for c in channels {
            if let Some(owners) = self.channel_owner.get_mut(&c.id) {
                owners.retain(|o| o != id);
                if owners.is_empty() {
                    self.channel_owner.remove(&c.id);
                }
            }
        }
    }

    /// Advance time: expire lapsed registrations and mark devices whose
    /// keepalives stopped as offline. Also returns the Online transitions
    /// recorded since the last call, first.
    pub fn tick(&mut self, now: Instant) -> Vec<RegistryEvent> {
        let mut events = std::mem::take(&mut self.pending);
        let mut expired = Vec::new();
        for (id, d) in &mut self.devices {
            let timeout = d.keepalive_timeout.unwrap_or(self.keepalive_timeout);
            if now >= d.expires_at {
                expired.push(id.clone());
            } else if d.online && now.saturating_duration_since(d.last_seen) >= timeout {
                d.online = false;
                self.online_devices -= 1;
                events.push(RegistryEvent::Offline(id.clone()));
            }
        }
        for id in expired {
            self.unregister(&id);
            events.push(RegistryEvent::Expired(id));
        }
        events
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// The device that listed `channel_id` in its catalog. A device id is
    /// not a channel unless its catalog says so (many IPCs do list
    /// themselves).
    pub fn device_for_channel(&self, channel_id: &str) -> Option<&Device> {
        self.channel_owner
            .get(channel_id)
            .and_then(|owners| owners.last())
            .and_then(|id| self.devices.get(id))
    }

    /// A device's channels, for the HTTP API.
    pub fn channels(&self, id: &str) -> Option<&[Channel]> {
        self.devices.get(id).map(|d| d.channels.as_slice())
    }

    /// Every device, ordered by id. `now` and `wall_now` are the same
    /// moment on the monotonic and wall clocks, to report wall times
    /// without the registry reading a clock.
    pub fn list(&self, now: Instant, wall_now: SystemTime) -> Vec<DeviceSummary> {
        self.devices
            .values()
            .map(|d| {
                let registered_wall = wall_now
                    .checked_sub(now.saturating_duration_since(d.registered_at))
                    .unwrap_or(UNIX_EPOCH);
                DeviceSummary {
                    id: d.id.clone(),
                    name: d.info.name.clone(),
                    manufacturer: d.info.manufacturer.clone(),
                    model: d.info.model.clone(),
                    firmware: d.info.firmware.clone(),
                    transport: d.transport,
                    address: d.addr.to_string(),
                    online: d.online,
                    registered_at: registered_wall
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |t| t.as_secs()),
                    last_keepalive_secs_ago: d
                        .last_keepalive
                        .map(|k| now.saturating_duration_since(k).as_secs()),
                    channel_count: d.channels.len(),
                }
            })
            .collect()
    }

    /// Devices with a current registration (the `devices_registered` gauge).
    pub fn registered_count(&self) -> usize {
        self.devices.len()
    }

    /// Registered devices whose keepalives are on time.
    pub fn online_count(&self) -> usize {
        self.online_devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb28181::manscdp::{Message, Response, decode_body};

    const DEV: &str = "34020000001320000001";
    const CH: &str = "34020000001310000001";

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 168, 28, 110], port))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn channel(id: &str) -> Channel {
        Channel {
            id: id.into(),
            name: None,
            manufacturer: None,
            model: None,
            status: Some("ON".into()),
            online: true,
            parent_id: None,
            civil_code: None,
            address: None,
            ptz_type: None,
        }
    }

    #[test]
    fn online_count_follows_every_transition() {
        let t0 = Instant::now();
        let mut r = Registry::new(secs(180));
        let other = "34020000001320000002";
        r.register(DEV, SipTransport::Udp, addr(5060), secs(3600), t0);
        r.register(other, SipTransport::Udp, addr(5061), secs(3600), t0);
        assert_eq!((r.registered_count(), r.online_count()), (2, 2));
        r.keepalive(other, addr(5061), t0 + secs(100));
        r.tick(t0 + secs(180));
        assert_eq!(r.online_count(), 1, "DEV went offline");
        // A REGISTER of an offline device brings it back, once.
        r.register(
            DEV,
            SipTransport::Udp,
            addr(5060),
            secs(3600),
            t0 + secs(181),
        );
        r.register(
            DEV,
            SipTransport::Udp,
            addr(5060),
            secs(3600),
            t0 + secs(182),
        );
        assert_eq!(r.online_count(), 2);
        r.tick(t0 + secs(281));
        assert_eq!(r.online_count(), 1, "other went offline");
        assert!(r.unregister(other), "an offline device leaves");
        assert_eq!((r.registered_count(), r.online_count()), (1, 1));
        assert!(r.unregister(DEV), "an online device leaves");
        assert_eq!((r.registered_count(), r.online_count()), (0, 0));
        // Expiry of an online device.
        r.register(DEV, SipTransport::Udp, addr(5060), secs(60), t0);
        r.tick(t0 + secs(60));
        assert_eq!((r.registered_count(), r.online_count()), (0, 0));
    }

    #[test]
    fn lifecycle_register_keepalive_offline_expire() {
        let t0 = Instant::now();
        let mut r = Registry::new(secs(180));
        assert_eq!(
            r.register(DEV, SipTransport::Udp, addr(5060), secs(3600), t0),
            RegisterOutcome::New
        );
        assert_eq!(r.tick(t0), vec![RegistryEvent::Online(DEV.into())]);
        assert_eq!((r.registered_count(), r.online_count()), (1, 1));

        // From another port: refused, and the route stays.
        assert!(!r.keepalive(DEV, addr(5061), t0 + secs(60)));
        assert_eq!(r.get(DEV).unwrap().addr(), addr(5060));
        assert_eq!(
            r.sender_matches(DEV, SipTransport::Udp, addr(5061)),
            Some(false)
        );
        assert_eq!(
            r.sender_matches(DEV, SipTransport::Tcp, addr(5060)),
            Some(false)
        );
        assert_eq!(
            r.sender_matches(DEV, SipTransport::Udp, addr(5060)),
            Some(true)
        );
        assert_eq!(
            r.sender_matches("34020000001320000099", SipTransport::Udp, addr(1)),
            None
        );
        assert!(r.keepalive(DEV, addr(5060), t0 + secs(60)));
        assert!(!r.keepalive("34020000001320000099", addr(1), t0));
        assert_eq!(r.tick(t0 + secs(239)), vec![]);

        // No keepalive for the timeout: offline, once.
        assert_eq!(
            r.tick(t0 + secs(240)),
            vec![RegistryEvent::Offline(DEV.into())]
        );
        assert_eq!(r.tick(t0 + secs(250)), vec![]);
        assert_eq!((r.registered_count(), r.online_count()), (1, 0));

        // A keepalive brings it back.
        assert!(r.keepalive(DEV, addr(5060), t0 + secs(300)));
        assert_eq!(
            r.tick(t0 + secs(300)),
            vec![RegistryEvent::Online(DEV.into())]
        );

        // Refresh extends the registration.
        assert_eq!(
            r.register(
                DEV,
                SipTransport::Tcp,
                addr(5062),
                secs(600),
                t0 + secs(3000)
            ),
            RegisterOutcome::Refreshed
        );
        assert_eq!(r.get(DEV).unwrap().transport(), SipTransport::Tcp);
        assert_eq!(r.get(DEV).unwrap().registered_at(), t0);
        assert_eq!(r.tick(t0 + secs(3000)), vec![]);

        // Keepalives alone don't keep a registration alive past expiry.
        for k in 1..=5 {
            r.keepalive(DEV, addr(5062), t0 + secs(3000 + k * 100));
        }
        assert_eq!(
            r.tick(t0 + secs(3600)),
            vec![RegistryEvent::Expired(DEV.into())]
        );
        assert!(r.get(DEV).is_none());
        assert_eq!((r.registered_count(), r.online_count()), (0, 0));
    }

    #[test]
    fn a_new_register_call_id_means_the_device_restarted() {
        let mut r = Registry::new(secs(180));
        let t0 = Instant::now();
        r.register("dev", SipTransport::Udp, addr(5060), secs(3600), t0);
        assert!(!r.note_register_call_id("dev", "a@1"), "first registration");
        r.register("dev", SipTransport::Udp, addr(5060), secs(3600), t0);
        assert!(!r.note_register_call_id("dev", "a@1"), "a refresh");
        r.register("dev", SipTransport::Udp, addr(5061), secs(3600), t0);
        assert!(r.note_register_call_id("dev", "b@1"), "a restart");
        assert!(!r.note_register_call_id("dev", "b@1"));
        assert!(!r.note_register_call_id("other", "c@1"), "unknown device");
        // Unregistered and back: a fresh start, not a restart.
        r.unregister("dev");
        r.register("dev", SipTransport::Udp, addr(5061), secs(3600), t0);
        assert!(!r.note_register_call_id("dev", "d@1"));
    }

    #[test]
    fn channels_from_real_catalog() {
        let t0 = Instant::now();
        let mut r = Registry::new(secs(180));
        r.register(DEV, SipTransport::Udp, addr(5060), secs(3600), t0);
        assert!(r.device_for_channel(CH).is_none());
        // No catalog yet: the device id is not a channel.
        assert!(r.device_for_channel(DEV).is_none());

        let body = br#"<?xml version="1.0" encoding="GB2312" ?><Response><CmdType>Catalog</CmdType><SN>7</SN><DeviceID>34020000001320000001</DeviceID><SumNum>1</SumNum><DeviceList Num="1"><Item><DeviceID>34020000001310000001</DeviceID><Name>DH71</Name><Manufacturer>Dahua</Manufacturer><Status>ON</Status><Info><PTZType>3</PTZType></Info></Item></DeviceList></Response>"#;
        let Ok(Message::Response(Response::Catalog(c))) = decode_body(body) else {
            panic!("catalog")
        };
        let chans: Vec<Channel> = c.items.iter().map(Channel::from).collect();
        assert!(r.set_channels(DEV, chans));
        assert_eq!(r.device_for_channel(CH).unwrap().id(), DEV);
        let ch = &r.channels(DEV).unwrap()[0];
        assert_eq!(ch.name.as_deref(), Some("DH71"));
        assert!(ch.online);
        assert_eq!(ch.ptz_type, Some(3));

        // Pages merge by id; replacing drops stale index entries.
        assert!(r.upsert_channels(DEV, vec![channel("c2"), channel(CH)]));
        assert_eq!(r.channels(DEV).unwrap().len(), 2);
        assert_eq!(r.channels(DEV).unwrap()[0].name, None);
        assert!(r.set_channels(DEV, vec![channel("c3")]));
        assert!(r.device_for_channel(CH).is_none());
        assert_eq!(r.device_for_channel("c3").unwrap().id(), DEV);
        assert!(!r.set_channels("unknown", vec![]));
        assert!(!r.upsert_channels("unknown", vec![]));

        // Another device listing c3 takes the lookup; when it goes, the
        // first device answers again.
        r.register("d2", SipTransport::Tcp, addr(1), secs(60), t0);
        r.set_channels("d2", vec![channel("c3")]);
        assert_eq!(r.device_for_channel("c3").unwrap().id(), "d2");
        assert!(r.unregister("d2"));
        assert_eq!(r.device_for_channel("c3").unwrap().id(), DEV);
        assert!(r.unregister(DEV));
        assert!(!r.unregister(DEV));
        assert!(r.device_for_channel("c3").is_none());
    }

    #[test]
    fn summary_serializes_for_the_api() {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + secs(1_700_000_000);
        let mut r = Registry::new(secs(180));
        r.register(DEV, SipTransport::Udp, addr(5060), secs(3600), t0);
        assert!(r.set_info(
            DEV,
            DeviceInfo::from(&DeviceInfoResponse {
                device_name: Some("IPC".into()),
                manufacturer: Some("Dahua".into()),
                model: Some("IPC-HDW2230C-A-V2".into()),
                firmware: Some("2.623".into()),
                channel: Some(1),
                ..Default::default()
            })
        ));
        assert!(!r.set_info("nope", DeviceInfo::default()));
        r.set_channels(DEV, vec![channel(CH)]);
        r.keepalive(DEV, addr(5060), t0 + secs(10));
        let list = r.list(t0 + secs(25), wall + secs(25));
        assert_eq!(list.len(), 1);
        let json = serde_json::to_value(&list[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": DEV,
                "name": "IPC",
                "manufacturer": "Dahua",
                "model": "IPC-HDW2230C-A-V2",
                "firmware": "2.623",
                "transport": "udp",
                "address": "192.168.28.110:5060",
                "online": true,
                "registered_at": 1_700_000_000u64,
                "last_keepalive_secs_ago": 15,
                "channel_count": 1,
            })
        );
        let ch = serde_json::to_value(r.channels(DEV).unwrap()).unwrap();
        assert_eq!(ch[0]["id"], CH);
        assert_eq!(ch[0]["online"], true);
    }

    #[test]
    fn channel_bound_holds() {
        let t0 = Instant::now();
        let mut r = Registry::new(secs(180));
        r.register(DEV, SipTransport::Udp, addr(5060), secs(3600), t0);
        let many: Vec<Channel> = (0..MAX_CHANNELS_PER_DEVICE + 10)
            .map(|i| channel(&i.to_string()))
            .collect();
        r.set_channels(DEV, many.clone());
        assert_eq!(r.channels(DEV).unwrap().len(), MAX_CHANNELS_PER_DEVICE);
        r.set_channels(DEV, vec![]);
        r.upsert_channels(DEV, many);
        assert_eq!(r.channels(DEV).unwrap().len(), MAX_CHANNELS_PER_DEVICE);
    }

    #[test]
    fn random_operations_keep_invariants() {
        let t0 = Instant::now();
        let mut r = Registry::new(secs(30));
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut now = t0;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("d{}", x % 7);
            now += Duration::from_millis(x % 5000);
            match (x >> 8) % 6 {
                0 => {
                    r.register(
                        &id,
                        SipTransport::Udp,
                        addr(1),
                        Duration::from_secs(x % 120),
                        now,
                    );
                }
                1 => {
                    r.keepalive(&id, addr(2), now);
                }
                2 => {
                    r.unregister(&id);
                }
                3 => {
                    let c = channel(&format!("c{}", x % 5));
                    r.set_channels(&id, vec![c.clone(), channel("c9"), c]);
                }
                4 => {
                    r.upsert_channels(&id, vec![channel(&format!("c{}", x % 5))]);
                }
                _ => {
                    for e in r.tick(now) {
                        if let RegistryEvent::Expired(id) = e {
                            assert!(r.get(&id).is_none());
                        }
                    }
                }
            }
            // The index is exactly the set of (channel, device) listings.
            let mut indexed = 0;
            for (ch, owners) in &r.channel_owner {
                assert!(!owners.is_empty());
                for dev in owners {
                    let d = r.get(dev).expect("index points at a live device");
                    assert!(d.channels().iter().any(|c| &c.id == ch));
                    indexed += 1;
                }
            }
            let listed: usize = r.devices.values().map(|d| d.channels().len()).sum();
            assert_eq!(indexed, listed);
            assert!(r.online_count() <= r.registered_count());
        }
    }
}
