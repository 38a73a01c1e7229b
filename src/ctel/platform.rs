//! The platform's state for telecom devices: who registered and logged in,
//! their abilities and RTSP addresses, their links, tokens and exception
//! events; and the request handling of the FA F5 link (§7.4, §7.5), which
//! is synchronous (state in, response out) so the link driver in
//! [`super::server`] stays a thin loop.
//!
//! Exceptions (0x34) go to a bounded in-memory list behind
//! `GET /api/v1/ctel/events`. To feed a shared event stream, forward from
//! [`CtelPlatform::record_event`], the single place events are made.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::CtelConfig;
use super::frame::Packet;
use super::messages::{self as m, Message, cmd};
use super::register::{self, LinkAddress, RegisterReq, RegisterRes};
use super::token::{MintInput, TokenBook, TokenError, TokenScope};
use crate::metrics::{self, label};

/// Manufacturer from the first three digits of the DevID (§7.2.1).
pub fn manufacturer(dev_id: &str) -> Option<&'static str> {
    Some(match dev_id.get(..3)? {
        "811" => "Hikvision",
        "812" => "Dahua",
        "813" => "皓维",
        "814" => "卡尔",
        "815" => "海目达",
        "816" => "悠克",
        "817" => "视威",
        "818" => "华沃",
        "819" => "Samsung",
        "820" => "红苹果",
        "821" => "远业",
        "822" => "城市无线",
        "823" => "烽火众智",
        "824" => "华迈",
        _ => return None,
    })
}

/// `YYYYMMDDHHMMSS` (UTC: the process has no time zone database).
pub fn telecom_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = crate::media::datetime::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{mo:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a device serves RTSP, in the order the viewer tries them (§15):
/// LAN address, UPnP-mapped address, TURN relay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RtspAddresses {
    pub local: Option<SocketAddr>,
    pub upnp: Option<SocketAddr>,
    pub turn_relay: Option<SocketAddr>,
}

impl RtspAddresses {
    fn from_parts(parts: [(&str, u16); 3]) -> Self {
        let addr = |(ip, port): (&str, u16)| {
            let ip: IpAddr = ip.trim().parse().ok()?;
            (port != 0 && !ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
        };
        Self {
            local: addr(parts[0]),
            upnp: addr(parts[1]),
            turn_relay: addr(parts[2]),
        }
    }

    pub fn in_order(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::with_capacity(3);
        for a in [self.local, self.upnp, self.turn_relay]
            .into_iter()
            .flatten()
        {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }
}

/// One row of `GET /api/v1/ctel/devices`.
#[derive(Debug, Clone, Serialize)]
pub struct CtelDevice {
    pub dev_id: String,
    pub manufacturer: Option<&'static str>,
    pub online: bool,
    pub registered_at: Option<u64>,
    pub logged_in_at: Option<u64>,
    pub last_heartbeat: Option<u64>,
    pub dev_ver: String,
    pub net_type: u8,
    pub rtsp: RtspAddresses,
    pub channels: u16,
    pub ptz: bool,
    pub streams: Vec<m::VideoAbility>,
    pub current_viewers: u16,
    pub peer: Option<SocketAddr>,
}

/// An exception a device reported (0x34).
#[derive(Debug, Clone, Serialize)]
pub struct CtelEvent {
    pub time: u64,
    pub dev_id: String,
    pub channel: u16,
    pub exception_type: u8,
    pub description: String,
}

/// A platform → device request waiting for its response.
pub struct LinkCommand {
    pub cmd: u8,
    pub body: String,
    pub reply: oneshot::Sender<Packet>,
}

#[derive(Clone)]
struct LinkHandle {
    id: u64,
    commands: mpsc::Sender<LinkCommand>,
    /// Cancelled when the link ends: sources pulling this device stop.
    gone: CancellationToken,
    peer: SocketAddr,
}

struct DeviceState {
    info: CtelDevice,
    link: Option<LinkHandle>,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<String, DeviceState>,
    events: VecDeque<CtelEvent>,
}

pub struct CtelPlatform {
    pub config: CtelConfig,
    advertised_ip: IpAddr,
    link_port: AtomicU16,
    next_link_id: AtomicU64,
    state: Mutex<State>,
    tokens: Mutex<TokenBook>,
}

/// Per-connection state the link driver keeps and hands back on each call.
pub struct LinkSession {
    pub id: u64,
    pub peer: SocketAddr,
    pub dev_id: Option<String>,
    pub commands: mpsc::Sender<LinkCommand>,
    pub gone: CancellationToken,
}

/// What to do after a device request.
pub struct Reply {
    pub cmd: u8,
    pub seq: u16,
    pub body: String,
    /// Close the link after sending (failed login).
    pub close: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("request {0:#04x} before login")]
    NotLoggedIn(u8),
    #[error("unexpected command {0:#04x} from the device")]
    UnknownCommand(u8),
    #[error(transparent)]
    Xml(#[from] m::XmlError),
}

impl LinkError {
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::NotLoggedIn(_) => "not_logged_in",
            LinkError::UnknownCommand(_) => "unknown_command",
            LinkError::Xml(e) => e.kind(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no such device {0}")]
    UnknownDevice(String),
    #[error("device {0} is offline")]
    Offline(String),
    #[error("device did not answer within {0:?}")]
    Timeout(Duration),
    #[error("device answered Result {0}")]
    Refused(u8),
    #[error(transparent)]
    Xml(#[from] m::XmlError),
}

impl CommandError {
    pub fn kind(&self) -> &'static str {
        match self {
            CommandError::UnknownDevice(_) => "unknown_device",
            CommandError::Offline(_) => "offline",
            CommandError::Timeout(_) => "timeout",
            CommandError::Refused(_) => "refused",
            CommandError::Xml(_) => "xml",
        }
    }
}

/// What a source needs to pull a device's RTSP.
pub struct PullTicket {
    pub token: String,
    pub addresses: Vec<SocketAddr>,
    /// Fires when the device's link ends.
    pub gone: CancellationToken,
}

impl CtelPlatform {
    pub fn new(config: CtelConfig, advertised_ip: IpAddr) -> Arc<Self> {
        let tokens = TokenBook::new(config.token_ttl, 4096);
        Arc::new(Self {
            advertised_ip: config.external_ip.unwrap_or(advertised_ip),
            link_port: AtomicU16::new(config.listen.port()),
            config,
            next_link_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            tokens: Mutex::new(tokens),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, TokenBook> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The link listener's actual port (tests bind port 0).
    pub fn set_link_port(&self, port: u16) {
        self.link_port.store(port, Ordering::Relaxed);
    }

    pub fn link_address(&self) -> LinkAddress {
        LinkAddress {
            ip: self.advertised_ip.to_string(),
            port: self.link_port.load(Ordering::Relaxed),
        }
    }

    fn entry<'a>(state: &'a mut State, dev_id: &str) -> &'a mut DeviceState {
        state
            .devices
            .entry(dev_id.to_owned())
            .or_insert_with(|| DeviceState {
                info: CtelDevice {
                    dev_id: dev_id.to_owned(),
                    manufacturer: manufacturer(dev_id),
                    online: false,
                    registered_at: None,
                    logged_in_at: None,
                    last_heartbeat: None,
                    dev_ver: String::new(),
                    net_type: 0,
                    rtsp: RtspAddresses::default(),
                    channels: 0,
                    ptz: false,
                    streams: Vec::new(),
                    current_viewers: 0,
                    peer: None,
                },
                link: None,
            })
    }

    /// §7.2.1 REGISTER_REQ.
    pub fn on_register(&self, req: &RegisterReq, wall: SystemTime) -> RegisterRes {
        let res =
            register::decide_register(&self.config, req, &self.link_address(), &telecom_time(wall));
        let outcome = match res.result {
            register::REGISTER_OK => "ok",
            register::REGISTER_UNKNOWN_DEVICE => "unknown_device",
            _ => "wrong_key",
        };
        metrics::get()
            .ctel_registrations
            .get_or_create(&label("outcome", outcome))
            .inc();
        if res.result == register::REGISTER_OK {
            Self::entry(&mut self.lock(), &req.dev_id)
                .info
                .registered_at = Some(unix(wall));
            info!(dev_id = %req.dev_id, "telecom device registered over HTTP");
        } else {
            warn!(dev_id = %req.dev_id, result = res.result, "telecom registration refused");
        }
        res
    }

    pub fn new_session(
        &self,
        peer: SocketAddr,
        commands: mpsc::Sender<LinkCommand>,
    ) -> LinkSession {
        LinkSession {
            id: self.next_link_id.fetch_add(1, Ordering::Relaxed),
            peer,
            dev_id: None,
            commands,
            gone: CancellationToken::new(),
        }
    }

    /// Answer one device → platform request.
    pub fn handle_request(
        &self,
        session: &mut LinkSession,
        packet: &Packet,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Reply, LinkError> {
        let text = packet.body_str();
        let time = telecom_time(wall);
        let reply = |body: String, close: bool| Reply {
            cmd: packet.cmd,
            seq: packet.seq,
            body,
            close,
        };
        if packet.cmd == cmd::LOGIN {
            let req: m::LoginReq = m::from_xml(text)?;
            return Ok(self.login(session, req, &time, wall, reply));
        }
        let Some(dev_id) = session.dev_id.clone() else {
            return Err(LinkError::NotLoggedIn(packet.cmd));
        };
        let body = match packet.cmd {
            cmd::ABILITY_UP => {
                let req: m::AbilityUpReq = m::from_xml(text)?;
                let mut st = self.lock();
                let d = &mut Self::entry(&mut st, &dev_id).info;
                d.channels = req.channel_num;
                d.ptz = req.ptz_flag != 0;
                d.streams = req.video;
                info!(%dev_id, channels = req.channel_num, "telecom abilities");
                m::to_xml(&m::AbilityUpRes { dev_id, time })?
            }
            cmd::HEARTBEAT => {
                let req: m::HeartbeatReq = m::from_xml(text)?;
                metrics::get().ctel_heartbeats.inc();
                let mut st = self.lock();
                let d = &mut Self::entry(&mut st, &dev_id).info;
                d.last_heartbeat = Some(unix(wall));
                d.current_viewers = req.cur_video_num;
                let rtsp = RtspAddresses::from_parts([
                    (&req.local_ip, req.rtsp_local_port),
                    (&req.upnp_ip, req.rtsp_upnp_port),
                    (&req.turn_relay_ip, req.rtsp_turn_relay_port),
                ]);
                if rtsp != RtspAddresses::default() {
                    d.rtsp = rtsp;
                }
                m::to_xml(&m::HeartbeatRes { dev_id, time })?
            }
            cmd::EXCEPTION => {
                let req: m::ExceptionNotifyReq = m::from_xml(text)?;
                self.record_event(CtelEvent {
                    time: unix(wall),
                    dev_id: dev_id.clone(),
                    channel: req.channel_no,
                    exception_type: req.exception_type,
                    description: req.exception_desc,
                });
                m::to_xml(&m::ExceptionNotifyRes {
                    result: m::RESULT_OK,
                    dev_id,
                })?
            }
            cmd::VIDEO_PLAY => {
                let req: m::VideoPlayReq = m::from_xml(text)?;
                let scope = TokenScope::Live {
                    stream_type: req.stream_type,
                };
                let result = self.check_token(
                    &dev_id,
                    &req.dev_id,
                    req.channel_no,
                    &req.hash_token,
                    &scope,
                    now,
                );
                m::to_xml(&m::VideoPlayRes { result, dev_id })?
            }
            cmd::RECORD_PLAY => {
                let req: m::RecordPlayReq = m::from_xml(text)?;
                let scope = TokenScope::Record {
                    file_name: req.file_name,
                };
                let result = self.check_token(
                    &dev_id,
                    &req.dev_id,
                    req.channel_no,
                    &req.hash_token,
                    &scope,
                    now,
                );
                m::to_xml(&m::RecordPlayRes { result, dev_id })?
            }
            cmd::FTP_PICTURE => {
                let req: m::FtpPictureNotifyReq = m::from_xml(text)?;
                info!(%dev_id, file = %req.file_name, "telecom FTP picture");
                m::to_xml(&m::FtpPictureNotifyRes {
                    result: m::RESULT_OK,
                    dev_id,
                })?
            }
            other => return Err(LinkError::UnknownCommand(other)),
        };
        Ok(reply(body, false))
    }

    fn login(
        &self,
        session: &mut LinkSession,
        req: m::LoginReq,
        time: &str,
        wall: SystemTime,
        reply: impl Fn(String, bool) -> Reply,
    ) -> Reply {
        let result = match self.config.key_for(&req.dev_id) {
            None => m::LOGIN_UNKNOWN_DEVICE,
            Some(k) if !crate::secret::ct_eq(k.as_bytes(), req.dev_key.as_bytes()) => {
                m::LOGIN_WRONG_KEY
            }
            Some(_) => m::RESULT_OK,
        };
        let outcome = match result {
            m::RESULT_OK => "ok",
            m::LOGIN_UNKNOWN_DEVICE => "unknown_device",
            _ => "wrong_key",
        };
        metrics::get()
            .ctel_logins
            .get_or_create(&label("outcome", outcome))
            .inc();
        let res = m::LoginRes {
            result,
            dev_id: req.dev_id.clone(),
            time: time.to_owned(),
            ..Default::default()
        };
        let body = m::to_xml(&res).unwrap_or_default();
        if result != m::RESULT_OK {
            warn!(dev_id = %req.dev_id, peer = %session.peer, outcome, "telecom login refused");
            return reply(body, true);
        }
        let handle = LinkHandle {
            id: session.id,
            commands: session.commands.clone(),
            gone: session.gone.clone(),
            peer: session.peer,
        };
        let mut st = self.lock();
        let dev = Self::entry(&mut st, &req.dev_id);
        // A device logging in again replaces its old link.
        if let Some(old) = dev.link.replace(handle) {
            old.gone.cancel();
        } else {
            metrics::get().ctel_devices_online.inc();
        }
        let d = &mut dev.info;
        d.online = true;
        d.logged_in_at = Some(unix(wall));
        d.last_heartbeat = Some(unix(wall));
        d.dev_ver = req.dev_ver;
        d.net_type = req.net_type;
        d.peer = Some(session.peer);
        d.rtsp = RtspAddresses::from_parts([
            (&req.local_ip, req.rtsp_local_port),
            (&req.upnp_ip, req.rtsp_upnp_port),
            (&req.turn_relay_ip, req.rtsp_turn_relay_port),
        ]);
        info!(dev_id = %req.dev_id, peer = %session.peer, rtsp = ?d.rtsp.in_order(), "telecom device logged in");
        session.dev_id = Some(req.dev_id);
        reply(body, false)
    }

    fn check_token(
        &self,
        link_dev: &str,
        claimed_dev: &str,
        channel: u16,
        token: &str,
        scope: &TokenScope,
        now: Instant,
    ) -> u8 {
        // A device may only redeem tokens for itself.
        let outcome = if claimed_dev != link_dev {
            Err(TokenError::Mismatch)
        } else {
            self.lock_tokens()
                .redeem(token, link_dev, channel, scope, now)
        };
        let kind = outcome.map_or_else(|e| e.kind(), |()| "ok");
        metrics::get()
            .ctel_token_checks
            .get_or_create(&label("outcome", kind))
            .inc();
        info!(dev_id = %link_dev, channel, outcome = kind, "telecom token check");
        if outcome.is_ok() {
            m::RESULT_OK
        } else {
            m::TOKEN_INVALID
        }
    }

    /// The single place exception events are made (see the module docs).
    pub fn record_event(&self, event: CtelEvent) {
        warn!(dev_id = %event.dev_id, channel = event.channel, kind = event.exception_type, desc = %event.description, "telecom device exception");
        let mut st = self.lock();
        if st.events.len() >= self.config.event_log_size.max(1) {
            st.events.pop_front();
        }
        st.events.push_back(event);
    }

    pub fn events(&self) -> Vec<CtelEvent> {
        self.lock().events.iter().cloned().collect()
    }

    /// The link ended (closed, expired or failed).
    pub fn link_closed(&self, session: &LinkSession, reason: &str) {
        session.gone.cancel();
        let Some(dev_id) = &session.dev_id else {
            return;
        };
        let mut st = self.lock();
        let Some(dev) = st.devices.get_mut(dev_id) else {
            return;
        };
        if dev.link.as_ref().is_some_and(|l| l.id == session.id) {
            dev.link = None;
            dev.info.online = false;
            metrics::get().ctel_devices_online.dec();
            info!(%dev_id, reason, "telecom device offline");
        }
    }

    pub fn devices(&self) -> Vec<CtelDevice> {
        self.lock()
            .devices
            .values()
            .map(|d| d.info.clone())
            .collect()
    }

    pub fn device(&self, dev_id: &str) -> Option<CtelDevice> {
        self.lock().devices.get(dev_id).map(|d| d.info.clone())
    }

    fn link_of(&self, dev_id: &str) -> Result<LinkHandle, CommandError> {
        let st = self.lock();
        let dev = st
            .devices
            .get(dev_id)
            .ok_or_else(|| CommandError::UnknownDevice(dev_id.to_owned()))?;
        dev.link
            .clone()
            .ok_or_else(|| CommandError::Offline(dev_id.to_owned()))
    }

    /// Send a platform → device request and wait for its response.
    pub async fn command<Q: Message, R: Message>(
        &self,
        dev_id: &str,
        request: &Q,
    ) -> Result<R, CommandError> {
        let result = self.command_inner(dev_id, request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::get()
            .ctel_commands
            .get_or_create(&label("outcome", outcome))
            .inc();
        result
    }

    async fn command_inner<Q: Message, R: Message>(
        &self,
        dev_id: &str,
        request: &Q,
    ) -> Result<R, CommandError> {
        let link = self.link_of(dev_id)?;
        let body = m::to_xml(request)?;
        let (tx, rx) = oneshot::channel();
        let timeout = self.config.command_timeout;
        let sent = link.commands.send(LinkCommand {
            cmd: Q::CMD,
            body,
            reply: tx,
        });
        let answer = tokio::time::timeout(timeout, async move {
            sent.await.ok()?;
            rx.await.ok()
        })
        .await;
        match answer {
            Err(_) => Err(CommandError::Timeout(timeout)),
            Ok(None) => Err(CommandError::Offline(dev_id.to_owned())),
            Ok(Some(packet)) => Ok(m::from_xml(packet.body_str())?),
        }
    }

    /// Mint a token for a live pull and say where to pull from.
    pub fn ticket_live(
        &self,
        dev_id: &str,
        channel: u16,
        stream_type: u8,
        now: Instant,
        wall: SystemTime,
        random: [u8; 16],
    ) -> Result<PullTicket, CommandError> {
        let (addresses, gone) = {
            let st = self.lock();
            let dev = st
                .devices
                .get(dev_id)
                .ok_or_else(|| CommandError::UnknownDevice(dev_id.to_owned()))?;
            let link = dev
                .link
                .as_ref()
                .ok_or_else(|| CommandError::Offline(dev_id.to_owned()))?;
            (dev.info.rtsp.in_order(), link.gone.clone())
        };
        let time = telecom_time(wall);
        let token = self.lock_tokens().mint(
            MintInput {
                account: &self.config.token_account,
                password: &self.config.token_password,
                dev_id,
                channel,
                time: &time,
                random,
            },
            TokenScope::Live { stream_type },
            now,
        );
        Ok(PullTicket {
            token,
            addresses,
            gone,
        })
    }

    /// Whether `link` still belongs to the device (for tests and status).
    pub fn is_online(&self, dev_id: &str) -> bool {
        self.lock()
            .devices
            .get(dev_id)
            .is_some_and(|d| d.link.is_some())
    }

    #[doc(hidden)]
    pub fn link_peer(&self, dev_id: &str) -> Option<SocketAddr> {
        self.lock()
            .devices
            .get(dev_id)
            .and_then(|d| d.link.as_ref().map(|l| l.peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctel::config::CtelDeviceEntry;
    use crate::ctel::frame::Packet;
    use bytes::Bytes;

    fn platform() -> Arc<CtelPlatform> {
        CtelPlatform::new(
            CtelConfig {
                devices: vec![CtelDeviceEntry {
                    dev_id: "81300000001".into(),
                    dev_key: "k".into(),
                }],
                ..Default::default()
            },
            "127.0.0.1".parse().unwrap(),
        )
    }

    fn packet<T: Message>(seq: u16, msg: &T) -> Packet {
        Packet {
            cmd: T::CMD,
            seq,
            body: Bytes::from(m::to_xml(msg).unwrap()),
        }
    }

    #[test]
    fn telecom_time_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(telecom_time(t), "20261118110640");
    }

    #[test]
    fn manufacturer_prefixes() {
        assert_eq!(manufacturer("81100000001"), Some("Hikvision"));
        assert_eq!(manufacturer("82400000001"), Some("华迈"));
        assert_eq!(manufacturer("99900000001"), None);
        assert_eq!(manufacturer("8"), None);
    }

    #[tokio::test]
    async fn login_abilities_token_and_close() {
        let p = platform();
        let (tx, _rx) = mpsc::channel(4);
        let mut s = p.new_session("127.0.0.1:5000".parse().unwrap(), tx);
        let now = Instant::now();
        let wall = SystemTime::now();
        let hb = packet(0, &m::HeartbeatReq::default());
        assert_eq!(
            p.handle_request(&mut s, &hb, now, wall)
                .err()
                .map(|e| e.kind()),
            Some("not_logged_in")
        );
        let bad = m::LoginReq {
            dev_id: "81300000001".into(),
            dev_key: "wrong".into(),
            ..Default::default()
        };
        let r = p
            .handle_request(&mut s, &packet(1, &bad), now, wall)
            .unwrap();
        assert!(r.close);
        assert_eq!(
            m::from_xml::<m::LoginRes>(&r.body).unwrap().result,
            m::LOGIN_WRONG_KEY
        );
        let good = m::LoginReq {
            dev_key: "k".into(),
            local_ip: "127.0.0.1".into(),
            rtsp_local_port: 554,
            upnp_ip: "127.0.0.2".into(),
            rtsp_upnp_port: 10554,
            ..bad
        };
        let r = p
            .handle_request(&mut s, &packet(2, &good), now, wall)
            .unwrap();
        assert!(!r.close);
        assert_eq!((r.cmd, r.seq), (cmd::LOGIN, 2));
        let abilities = m::AbilityUpReq {
            dev_id: "81300000001".into(),
            channel_num: 2,
            ptz_flag: 1,
            ..Default::default()
        };
        p.handle_request(&mut s, &packet(3, &abilities), now, wall)
            .unwrap();
        let d = p.device("81300000001").unwrap();
        assert!(d.online && d.ptz);
        assert_eq!((d.channels, d.manufacturer), (2, Some("皓维")));

        let ticket = p
            .ticket_live("81300000001", 0, 1, now, wall, [7; 16])
            .unwrap();
        assert_eq!(
            ticket.addresses,
            vec![
                "127.0.0.1:554".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:10554".parse().unwrap()
            ]
        );
        let check = m::VideoPlayReq {
            dev_id: "81300000001".into(),
            channel_no: 0,
            stream_type: 1,
            hash_token: ticket.token.clone(),
        };
        for (seq, expect) in [(4, m::RESULT_OK), (5, m::TOKEN_INVALID)] {
            let r = p
                .handle_request(&mut s, &packet(seq, &check), now, wall)
                .unwrap();
            assert_eq!(
                m::from_xml::<m::VideoPlayRes>(&r.body).unwrap().result,
                expect
            );
        }
        p.link_closed(&s, "test");
        assert!(ticket.gone.is_cancelled());
        assert!(!p.device("81300000001").unwrap().online);
        assert!(
            p.ticket_live("81300000001", 0, 1, now, wall, [0; 16])
                .is_err()
        );
    }

    #[test]
    fn exceptions_are_bounded_events() {
        let p = CtelPlatform::new(
            CtelConfig {
                event_log_size: 2,
                ..Default::default()
            },
            "127.0.0.1".parse().unwrap(),
        );
        for i in 0..3u8 {
            p.record_event(CtelEvent {
                time: 0,
                dev_id: "d".into(),
                channel: 0,
                exception_type: i,
                description: String::new(),
            });
        }
        let types: Vec<u8> = p.events().iter().map(|e| e.exception_type).collect();
        assert_eq!(types, [1, 2]);
    }
}
