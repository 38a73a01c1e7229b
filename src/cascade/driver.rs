//! The tokio side of the cascade: one task per upstream owning its UDP
//! socket, feeding [`RegisterClient`] datagrams and deadlines, sending what
//! it asks, and reporting to the [`StatusBoard`] and metrics.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::alarm_driver;
use super::alarms;
use super::answers::{self, ExposedChannel};
use super::channel_ids::{ChannelIds, is_gb_id};
use super::config::{CascadeConfig, UpstreamConfig};
use super::control::{self as control_doc, ControlParseError};
use super::forward::{self, Upward};
use super::media;
use super::playback::{self, CalleeDialog, InfoSequence, InfoTurn, SessionKind};
use super::records::{self, RecordQueryError};
use super::register::{ClientEvent, ClientParams, Phase, RegisterClient};
use super::session::{self, MediaServices};
use super::status::{StatusBoard, UpstreamStatus, unix_now};
use super::subscription::{self, CatalogSubscription};
use super::wire;
use crate::log_limit::LogGate;
use crate::metrics::{self, label};
use crate::streams::StreamKey;
use crate::streams::control::{ChannelControl, for_key};
use crate::streams::directory::{DeviceDirectory, all_devices};
use crate::warn_limited;

/// Wait between attempts to resolve an upstream's address or bind its
/// socket.
const SETUP_RETRY: Duration = Duration::from_secs(5);

/// The running cascade: the status board and the tasks.
pub struct Cascade {
    pub status: StatusBoard,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Start one task per configured upstream, showing the channels of
/// `directories` and acting on them through `controls`. Each unregisters
/// and ends when `shutdown` is cancelled.
pub fn spawn(
    config: &CascadeConfig,
    directories: Arc<[Arc<dyn DeviceDirectory>]>,
    controls: Arc<[Arc<dyn ChannelControl>]>,
    media: MediaServices,
    alarm_feed: crate::streams::alarms::AlarmFeed,
    shutdown: CancellationToken,
) -> Cascade {
    let status = StatusBoard::default();
    let ids = Arc::new(IdStore::open(config.id_file.clone()));
    let mut tasks = Vec::new();
    for up in &config.upstreams {
        let slot = status.add(UpstreamStatus {
            name: up.display_name().to_owned(),
            server_id: up.server_id.clone(),
            platform_id: up.platform_id.clone(),
            address: up.address.clone(),
            target: String::new(),
            local: String::new(),
            state: Phase::Idle,
            last_error: None,
            expires_in: None,
            registered_at: None,
            stats: Default::default(),
        });
        let catalog = Catalog {
            directories: directories.clone(),
            controls: controls.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(forward::MAX_IN_FLIGHT)),
            ids: ids.clone(),
            media: media.clone(),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            subscriptions: Arc::new(Mutex::new(Vec::new())),
            alarm_feed: alarm_feed.clone(),
            alarm_subscriptions: Arc::default(),
        };
        tasks.push(tokio::spawn(run(
            up.clone(),
            catalog,
            status.clone(),
            slot,
            shutdown.clone(),
        )));
    }
    Cascade { status, tasks }
}

/// The first address `host:port` resolves to.
async fn resolve(address: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("resolving {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to nothing"))
}

/// The local IP packets to `target` leave from (a connected UDP socket
/// sends nothing; the kernel only picks the route).
fn local_ip_toward(target: SocketAddr) -> std::io::Result<IpAddr> {
    let probe = std::net::UdpSocket::bind((
        if target.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    ))?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

async fn setup(up: &UpstreamConfig) -> Result<(SocketAddr, UdpSocket), String> {
    let target = resolve(&up.address).await?;
    let ip = local_ip_toward(target).map_err(|e| format!("no route to {target}: {e}"))?;
    let socket = UdpSocket::bind((ip, up.local_port))
        .await
        .map_err(|e| format!("binding {ip}:{}: {e}", up.local_port))?;
    Ok((target, socket))
}

async fn run(
    up: UpstreamConfig,
    catalog: Catalog,
    board: StatusBoard,
    slot: usize,
    shutdown: CancellationToken,
) {
    let name = up.display_name().to_owned();
    // Alarms from now on wait in the outbox until we are registered.
    let mut alarm_rx = catalog.alarm_feed.subscribe();
    let mut alarm_outbox = super::alarms::AlarmOutbox::new(super::alarms::MAX_QUEUED);
    let (target, socket) = loop {
        match setup(&up).await {
            Ok(ok) => break ok,
            Err(e) => {
                warn!(upstream = %name, "cascade: {e}; retrying in {SETUP_RETRY:?}");
                board.update(slot, |s, _| s.last_error = Some(e));
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        board.update(slot, |s, _| s.state = Phase::Stopped);
                        return;
                    }
                    _ = tokio::time::sleep(SETUP_RETRY) => {}
                }
            }
        }
    };
    let socket = Arc::new(socket);
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(upstream = %name, "cascade: socket has no address: {e}");
            return;
        }
    };
    let params = ClientParams {
        server_id: up.server_id.clone(),
        realm: up.realm.clone(),
        platform_id: up.platform_id.clone(),
        password: up.password.clone(),
        expires: up.expires,
        keepalive_interval: up.keepalive_interval,
        keepalive_misses: up.keepalive_misses,
        local,
    };
    let seed = unix_now() ^ (u64::from(std::process::id()) << 32) ^ slot as u64;
    let mut client = RegisterClient::new(params, target, seed);
    board.update(slot, |s, _| s.local = local.to_string());
    info!(upstream = %name, %target, %local, "cascade: registering to upper platform");
    client.start(Instant::now());
    let bad_input = LogGate::new(Duration::from_secs(60), 64);
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    let mut stopping = false;
    let mut watch_at: Option<Instant> = None;
    loop {
        while let Some(t) = client.poll_transmit() {
            if let Err(e) = socket.send_to(&t.bytes, t.dest).await {
                warn!(upstream = %name, dest = %t.dest, "cascade: send failed: {e}");
            }
        }
        while let Some(ev) = client.poll_event() {
            let ctx = Ctx {
                name: &name,
                up: &up,
                socket: &socket,
                bad_input: &bad_input,
                catalog: &catalog,
                target: client.target(),
                local,
                shutdown: &shutdown,
            };
            handle_event(&ctx, ev).await;
        }
        report(&board, slot, &client);
        let alarm_link = alarm_driver::AlarmLink {
            name: &name,
            socket: &socket,
            target: client.target(),
            local,
            server_id: &up.server_id,
            realm: &up.realm,
            platform_id: &up.platform_id,
            log: &bad_input,
        };
        if client.phase() == Phase::Registered && !alarm_outbox.is_empty() {
            let channels = catalog.exposed(&up);
            let subs = &catalog.alarm_subscriptions;
            alarm_driver::flush(&alarm_link, &mut alarm_outbox, &channels, subs).await;
        }
        if client.phase() == Phase::Stopped {
            info!(upstream = %name, "cascade: stopped");
            break;
        }
        if stopping {
            // Upward streams end with the registration.
            for (_, session) in lock(&catalog.sessions).drain() {
                session.cancel.cancel();
            }
        }
        let deadline = client.poll_timeout();
        // Channel changes are looked for while someone subscribes.
        if lock(&catalog.subscriptions).is_empty() {
            watch_at = None;
        } else if watch_at.is_none() {
            watch_at = Some(Instant::now() + WATCH_INTERVAL);
        }
        tokio::select! {
            _ = sleep_until(watch_at) => {
                watch_at = Some(Instant::now() + WATCH_INTERVAL);
                let ctx = Ctx {
                    name: &name,
                    up: &up,
                    socket: &socket,
                    bad_input: &bad_input,
                    catalog: &catalog,
                    target: client.target(),
                    local,
                    shutdown: &shutdown,
                };
                notify_changes(&ctx).await;
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                client.shutdown(Instant::now());
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => client.handle_datagram(&buf[..n], from, Instant::now()),
                // ICMP port unreachable surfaces here on Linux; the
                // transaction timers deal with the silence.
                Err(e) => tracing::debug!(upstream = %name, "cascade: recv: {e}"),
            },
            _ = sleep_until(deadline) => client.handle_timeout(Instant::now()),
            got = alarm_driver::next(&mut alarm_rx) => alarm_driver::queue(&alarm_link, &mut alarm_outbox, got),
        }
    }
}

/// Sleep until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn report(board: &StatusBoard, slot: usize, client: &RegisterClient) {
    let phase = client.phase();
    board.update(slot, |s, until| {
        if phase == Phase::Registered && s.state != Phase::Registered {
            s.registered_at = Some(unix_now());
        }
        s.state = phase;
        s.target = client.target().to_string();
        s.last_error = client.last_error().map(str::to_owned);
        s.stats = client.stats();
        *until = client.registered_until();
    });
    let registered = board
        .snapshot(Instant::now())
        .iter()
        .filter(|s| s.state == Phase::Registered)
        .count();
    metrics::get()
        .cascade_upstreams_registered
        .set(i64::try_from(registered).unwrap_or(i64::MAX));
}

/// What serving one upstream's requests needs.
struct Ctx<'a> {
    name: &'a str,
    up: &'a UpstreamConfig,
    socket: &'a Arc<UdpSocket>,
    bad_input: &'a LogGate,
    catalog: &'a Catalog,
    /// Where the upper platform's SIP server is (after redirects).
    target: SocketAddr,
    local: SocketAddr,
    shutdown: &'a CancellationToken,
}

async fn handle_event(ctx: &Ctx<'_>, ev: ClientEvent) {
    let name = ctx.name;
    let m = metrics::get();
    match ev {
        ClientEvent::Registered { expires } => {
            m.cascade_registrations
                .get_or_create(&label("outcome", "ok"))
                .inc();
            info!(upstream = %name, expires = expires.as_secs(), "cascade: registered");
        }
        ClientEvent::Failed { reason, retry_in } => {
            m.cascade_registrations
                .get_or_create(&label("outcome", "failed"))
                .inc();
            warn!(upstream = %name, retry_in = ?retry_in, "cascade: registration failed: {reason}");
        }
        ClientEvent::Redirected { to } => {
            m.cascade_registrations
                .get_or_create(&label("outcome", "redirected"))
                .inc();
            info!(upstream = %name, %to, "cascade: redirected");
        }
        ClientEvent::Lost { reason } => {
            m.cascade_registrations
                .get_or_create(&label("outcome", "lost"))
                .inc();
            warn!(upstream = %name, "cascade: registration lost ({reason}); registering again");
        }
        ClientEvent::KeepaliveAnswered => {
            m.cascade_keepalives
                .get_or_create(&label("outcome", "answered"))
                .inc();
        }
        ClientEvent::KeepaliveMissed { in_a_row } => {
            m.cascade_keepalives
                .get_or_create(&label("outcome", "missed"))
                .inc();
            warn!(upstream = %name, in_a_row, "cascade: keepalive unanswered");
        }
        ClientEvent::Unregistered => info!(upstream = %name, "cascade: unregistered"),
        ClientEvent::Ignored {
            reason: "answer_acknowledged",
        } => {}
        ClientEvent::Ignored { reason } => {
            m.cascade_errors.get_or_create(&label("kind", reason)).inc();
        }
        // Only the platform we register to may ask: an INVITE from anyone
        // else would point our media at any address it names (a
        // reflector), and a BYE would end another's stream. Not answered,
        // so a forged source gets nothing back either.
        ClientEvent::Request { from, .. } if from.ip() != ctx.target.ip() => {
            m.cascade_errors
                .get_or_create(&label("kind", "foreign_source"))
                .inc();
            warn_limited!(ctx.bad_input, from.ip(), upstream = %ctx.name, %from, "cascade: request not from the upper platform dropped");
        }
        ClientEvent::Request { message, from } => serve_request(ctx, &message, from).await,
    }
}

/// Upward streams of one upstream by INVITE Call-ID; cancelling one ends it.
type Sessions = Arc<Mutex<HashMap<String, SessionHandle>>>;

/// What the SIP loop holds of an upward stream.
struct SessionHandle {
    /// Cancelled by BYE (or shutdown).
    cancel: CancellationToken,
    /// Cancelled when the ACK for our 200 arrives, ending its
    /// retransmission (RFC 3261 §13.3.1.4).
    acked: CancellationToken,
    /// A recording's stream key, which MANSRTSP INFOs control.
    recorded: Option<StreamKey>,
    /// The INFOs already forwarded.
    infos: InfoSequence,
}

/// RFC 3261 timers for retransmitting a 2xx to INVITE over UDP: T1
/// doubling to T2, given up after 64·T1.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// Most upward streams one upstream may hold at once.
const MAX_SESSIONS: usize = 256;
/// How long opening a stream for an INVITE may take, from its arrival.
const INVITE_DEADLINE: Duration = Duration::from_secs(15);
/// After a recording's end is notified (MediaStatus 121), how long the
/// upper platform has to send its BYE before we send ours.
const END_BYE_WAIT: Duration = Duration::from_secs(10);
/// How long a playback command may take at the device, from the INFO's
/// arrival (the upper platform's INFO transaction gives up at 32 s).
const INFO_DEADLINE: Duration = Duration::from_secs(8);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Channels every upstream may be shown, their remembered ids, and what
/// upward streams need.
#[derive(Clone)]
struct Catalog {
    directories: Arc<[Arc<dyn DeviceDirectory>]>,
    /// Each adapter's way to act on its channels (PTZ, records).
    controls: Arc<[Arc<dyn ChannelControl>]>,
    /// Forwarded DeviceControl and RecordInfo requests running now.
    in_flight: Arc<tokio::sync::Semaphore>,
    ids: Arc<IdStore>,
    media: MediaServices,
    sessions: Sessions,
    /// Catalog subscriptions of the upper platform (§9.7.1).
    subscriptions: Arc<Mutex<Vec<CatalogSubscription>>>,
    /// Camera alarms, and the upper platform's alarm subscriptions (§9.4).
    alarm_feed: crate::streams::alarms::AlarmFeed,
    alarm_subscriptions: Arc<Mutex<super::alarms::AlarmSubscriptions>>,
}

/// [`ChannelIds`] kept in a file.
struct IdStore {
    path: std::path::PathBuf,
    ids: Mutex<ChannelIds>,
}

impl IdStore {
    /// Read the remembered ids; a missing file is an empty map, a broken
    /// one is logged and set aside (ids are derived again from 1).
    fn open(path: std::path::PathBuf) -> Self {
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
    fn exposed(&self, up: &UpstreamConfig) -> Vec<ExposedChannel> {
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

/// Answer a request from the upper platform: MANSCDP queries get 200 and
/// their answers as MESSAGEs of ours; everything else is not served yet.
async fn serve_request(ctx: &Ctx<'_>, message: &wire::Message, from: SocketAddr) {
    let m = metrics::get();
    let wire::Start::Request { method, .. } = &message.start else {
        return;
    };
    if method == "ACK" {
        let call_id = message.call_id().unwrap_or_default();
        if let Some(session) = lock(&ctx.catalog.sessions).get(call_id) {
            tracing::debug!(upstream = %ctx.name, %call_id, "cascade: ACK for our 200");
            session.acked.cancel();
        }
        return;
    }
    if method == "INVITE" {
        return serve_invite(ctx, message, from).await;
    }
    if method == "INFO" {
        return serve_info(ctx, message, from);
    }
    if method == "SUBSCRIBE"
        && message.header("Event").is_some_and(|e| {
            e.split(';')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("Catalog"))
        })
    {
        return serve_subscribe(ctx, message, from).await;
    }
    if (method == "SUBSCRIBE" && alarms::is_alarm_subscribe(message.header("Event"), &message.body))
        || (method == "MESSAGE" && alarms::is_alarm_response(&message.body))
    {
        return serve_alarm_request(ctx, message, from).await;
    }
    if method == "BYE" {
        let call_id = message.call_id().unwrap_or_default().to_owned();
        let found = lock(&ctx.catalog.sessions).remove(&call_id);
        let code = match found {
            Some(session) => {
                session.cancel.cancel();
                info!(upstream = %ctx.name, %call_id, "cascade: BYE from the upper platform");
                200
            }
            None => 481,
        };
        let reason = if code == 200 {
            "OK"
        } else {
            "Call/Transaction Does Not Exist"
        };
        let resp = wire::response_to(message, code, reason, "camgate", None);
        let _ = ctx.socket.send_to(&resp, from).await;
        return;
    }
    if method == "MESSAGE" && serve_forwarded(ctx, message, from).await {
        return;
    }
    let query = (method == "MESSAGE")
        .then(|| answers::parse_query(&message.body))
        .and_then(Result::ok)
        .filter(|q| {
            matches!(
                q.cmd_type.as_str(),
                "Catalog" | "DeviceInfo" | "DeviceStatus"
            )
        });
    let Some(query) = query else {
        m.cascade_errors
            .get_or_create(&label("kind", "request_not_served"))
            .inc();
        if let Some(skipped) = ctx.bad_input.admit(from.ip()) {
            warn!(upstream = %ctx.name, %from, %method, skipped, "cascade: request from the upper platform not served (501)");
        }
        let resp = wire::response_to(message, 501, "Not Implemented", "camgate", None);
        let _ = ctx.socket.send_to(&resp, from).await;
        return;
    };
    let ok = wire::response_to(message, 200, "OK", "camgate", None);
    let _ = ctx.socket.send_to(&ok, from).await;
    m.cascade_queries
        .get_or_create(&label("cmd", cmd_label(&query.cmd_type)))
        .inc();
    let channels = ctx.catalog.exposed(ctx.up);
    let one = channels.iter().find(|c| c.id == query.device_id);
    let bodies = match query.cmd_type.as_str() {
        "Catalog" => {
            answers::catalog_pages(&query, &ctx.up.platform_id, ctx.up.civil_code(), &channels)
        }
        "DeviceInfo" => vec![answers::device_info(&query, channels.len(), one)],
        _ => vec![answers::device_status(
            &query,
            one,
            &crate::media::datetime::format(unix_now()),
        )],
    };
    info!(upstream = %ctx.name, cmd = %query.cmd_type, sn = query.sn, messages = bodies.len(), "cascade: answering query");
    for (i, body) in bodies.iter().enumerate() {
        let seed = unix_now() ^ (query.sn as u64) << 20 ^ i as u64;
        let uri = format!("sip:{}@{}", ctx.up.server_id, ctx.up.realm);
        let domain = ctx.up.platform_id.get(..10).unwrap_or_default();
        let from_uri = format!("sip:{}@{domain}", ctx.up.platform_id);
        let bytes = wire::request(&wire::RequestParts {
            method: "MESSAGE",
            uri: &uri,
            local: ctx.local,
            branch: &format!("z9hG4bK{seed:x}{i}"),
            from: &from_uri,
            from_tag: &format!("{seed:x}"),
            to: &uri,
            to_tag: None,
            call_id: &format!("{seed:x}-{i}@camgate"),
            cseq: 1,
            extra: &[],
            body: Some(("Application/MANSCDP+xml", body)),
        });
        if let Err(e) = ctx.socket.send_to(&bytes, ctx.target).await {
            warn!(upstream = %ctx.name, "cascade: sending {} answer: {e}", query.cmd_type);
        }
    }
}

/// A DeviceControl or RecordInfo for one channel: 200 at once, then
/// carried out on the camera in a task ([`forward`]). Whether `message`
/// was one of them (else it is served as a query).
async fn serve_forwarded(ctx: &Ctx<'_>, message: &wire::Message, from: SocketAddr) -> bool {
    let m = metrics::get();
    let reply = |code: u16, reason: &str| wire::response_to(message, code, reason, "camgate", None);
    let control = control_doc::parse_control(&message.body);
    let record = records::parse_record_query(&message.body);
    let refused = match (&control, &record) {
        (Ok(_), _) | (_, Ok(_)) => None,
        (Err(ControlParseError::NotAControl), Err(RecordQueryError::NotRecordInfo)) => {
            return false;
        }
        (Err(ControlParseError::NotAControl), Err(e)) => Some((e.kind(), e.to_string(), 400)),
        (Err(e @ (ControlParseError::Unsupported | ControlParseError::UnsupportedPtz(_))), _) => {
            Some((e.kind(), e.to_string(), 501))
        }
        (Err(e), _) => Some((e.kind(), e.to_string(), 400)),
    };
    if let Some((kind, why, code)) = refused {
        m.cascade_errors.get_or_create(&label("kind", kind)).inc();
        warn_limited!(ctx.bad_input, from.ip(), upstream = %ctx.name, %from, "cascade: request refused ({code}): {why}");
        let reason = if code == 400 {
            "Bad Request"
        } else {
            "Not Implemented"
        };
        let _ = ctx.socket.send_to(&reply(code, reason), from).await;
        return true;
    }
    let channel_id = match (&control, &record) {
        (Ok(c), _) => c.device_id.clone(),
        (_, Ok(q)) => q.device_id.clone(),
        _ => return true,
    };
    let count = |outcome: &'static str| {
        m.cascade_forwarded
            .get_or_create(&label("outcome", outcome))
            .inc();
    };
    let channels = ctx.catalog.exposed(ctx.up);
    let found = channels
        .iter()
        .find(|c| c.id == channel_id)
        .and_then(|c| Some((StreamKey::from_path(&c.stream)?, c.name.clone())));
    let Some((key, name)) = found else {
        count("not_found");
        let _ = ctx.socket.send_to(&reply(404, "Not Found"), from).await;
        return true;
    };
    let Ok(permit) = ctx.catalog.in_flight.clone().try_acquire_owned() else {
        count("busy");
        let _ = ctx.socket.send_to(&reply(486, "Busy Here"), from).await;
        return true;
    };
    let _ = ctx.socket.send_to(&reply(200, "OK"), from).await;
    let channel = for_key(&ctx.catalog.controls, &key).cloned();
    let up = Upward {
        name: ctx.name.to_owned(),
        socket: ctx.socket.clone(),
        target: ctx.target,
        local: ctx.local,
        server_id: ctx.up.server_id.clone(),
        realm: ctx.up.realm.clone(),
        platform_id: ctx.up.platform_id.clone(),
    };
    match (control, record) {
        (Ok(req), _) => {
            m.cascade_queries
                .get_or_create(&label("cmd", "device_control"))
                .inc();
            tokio::spawn(forward::control(up, channel, key, req, permit));
        }
        (_, Ok(q)) => {
            m.cascade_queries
                .get_or_create(&label("cmd", "record_info"))
                .inc();
            tokio::spawn(forward::records(up, channel, key, name, q, permit));
        }
        _ => {}
    }
    true
}

fn cmd_label(cmd: &str) -> &'static str {
    match cmd {
        "Catalog" => "catalog",
        "DeviceInfo" => "device_info",
        _ => "device_status",
    }
}

fn count_invite(outcome: &'static str) {
    metrics::get()
        .cascade_invites
        .get_or_create(&label("outcome", outcome))
        .inc();
}

/// A live-view INVITE: 100 at once; the stream is opened in a task of its
/// own, which answers 200 with our SDP (or an error) and then sends PS
/// until BYE.
async fn serve_invite(ctx: &Ctx<'_>, message: &wire::Message, from: SocketAddr) {
    let call_id = message.call_id().unwrap_or_default().to_owned();
    if lock(&ctx.catalog.sessions).contains_key(&call_id) {
        // A retransmission while the stream opens.
        return;
    }
    let reply = |code: u16, reason: &str| wire::response_to(message, code, reason, "camgate", None);
    let channel_id = match &message.start {
        wire::Start::Request { uri, .. } => uri
            .strip_prefix("sip:")
            .and_then(|u| u.split('@').next())
            .unwrap_or_default()
            .to_owned(),
        wire::Start::Response { .. } => return,
    };
    let offer = match media::parse_offer(&String::from_utf8_lossy(&message.body)) {
        Ok(o) => o,
        Err(e) => {
            count_invite("refused");
            warn!(upstream = %ctx.name, %channel_id, "cascade: INVITE refused: {e}");
            let _ = ctx
                .socket
                .send_to(&reply(488, "Not Acceptable Here"), from)
                .await;
            return;
        }
    };
    let count = |outcome: &'static str| count_invite_of(offer.kind, outcome);
    let channels = ctx.catalog.exposed(ctx.up);
    let Some(channel) = channels.iter().find(|c| c.id == channel_id) else {
        count("not_found");
        let _ = ctx.socket.send_to(&reply(404, "Not Found"), from).await;
        return;
    };
    let key = match offer.range {
        None => StreamKey::from_path(&channel.stream).ok_or_else(|| "bad stream key".to_owned()),
        Some(range) => playback::recorded_key(&channel.stream, range).map_err(|e| e.to_string()),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) if offer.range.is_some() => {
            // A Foscam or telecom channel: the stream table plays no
            // recordings of theirs, so the offer cannot be served here.
            count("not_recorded");
            warn!(upstream = %ctx.name, %channel_id, "cascade: {} INVITE refused: {e}", offer.kind.sdp_name());
            let _ = ctx
                .socket
                .send_to(
                    &reply(488, "Not Acceptable Here (no recordings of this channel)"),
                    from,
                )
                .await;
            return;
        }
        Err(_) => {
            count("not_found");
            let _ = ctx.socket.send_to(&reply(404, "Not Found"), from).await;
            return;
        }
    };
    if lock(&ctx.catalog.sessions).len() >= MAX_SESSIONS {
        count("refused");
        let _ = ctx.socket.send_to(&reply(486, "Busy Here"), from).await;
        return;
    }
    let _ = ctx.socket.send_to(&reply(100, "Trying"), from).await;
    let cancel = ctx.shutdown.child_token();
    let acked = CancellationToken::new();
    lock(&ctx.catalog.sessions).insert(
        call_id.clone(),
        SessionHandle {
            cancel: cancel.clone(),
            acked: acked.clone(),
            recorded: offer.range.map(|_| key.clone()),
            infos: InfoSequence::default(),
        },
    );
    let upward = UpwardAddress {
        server_id: ctx.up.server_id.clone(),
        realm: ctx.up.realm.clone(),
        platform_id: ctx.up.platform_id.clone(),
        target: ctx.target,
        local: ctx.local,
    };
    let task = InviteTask {
        name: ctx.name.to_owned(),
        message: message.clone(),
        from,
        sip: ctx.socket.clone(),
        key,
        channel_id,
        offer,
        local_ip: ctx.local.ip(),
        media: ctx.catalog.media.clone(),
        sessions: ctx.catalog.sessions.clone(),
        call_id,
        cancel,
        acked,
        upward,
    };
    tokio::spawn(task.run());
}

fn count_invite_of(kind: SessionKind, outcome: &'static str) {
    if kind.is_recorded() {
        metrics::get()
            .cascade_recorded_invites
            .get_or_create(&label("outcome", outcome))
            .inc();
    } else {
        count_invite(outcome);
    }
}

fn count_control(outcome: &'static str) {
    metrics::get()
        .cascade_playback_controls
        .get_or_create(&label("outcome", outcome))
        .inc();
}

/// A MANSRTSP INFO (§9.8.2) in a playback dialog: read at once (400 when
/// unreadable, 481 outside any dialog, 488 in a live one), then forwarded
/// to the recording's source in a task of its own, which answers with the
/// device's verdict — 200 once the device took it. A retransmission is
/// never forwarded twice (see [`InfoSequence`]).
fn serve_info(ctx: &Ctx<'_>, message: &wire::Message, from: SocketAddr) {
    let call_id = message.call_id().unwrap_or_default().to_owned();
    let sip_cseq = message.cseq().map_or(0, |(n, _)| n);
    let reply = |code: u16, reason: &str| wire::response_to(message, code, reason, "camgate", None);
    let socket = ctx.socket.clone();
    let send = move |bytes: Vec<u8>| {
        let socket = socket.clone();
        async move {
            let _ = socket.send_to(&bytes, from).await;
        }
    };
    let admitted = {
        let mut sessions = lock(&ctx.catalog.sessions);
        match sessions.get_mut(&call_id) {
            Some(SessionHandle {
                recorded: Some(key),
                infos,
                ..
            }) => Some(Some((key.clone(), infos.admit(sip_cseq)))),
            // A live view cannot pause or change speed.
            Some(_) => Some(None),
            None => None,
        }
    };
    if admitted == Some(None) {
        count_control("bad_request");
        tokio::spawn(send(reply(488, "Not Acceptable Here (live session)")));
        return;
    }
    let Some(Some((key, turn))) = admitted else {
        count_control("unknown_call");
        if let Some(skipped) = ctx.bad_input.admit(from.ip()) {
            warn!(upstream = %ctx.name, %call_id, skipped, "cascade: INFO outside a playback (481)");
        }
        tokio::spawn(send(reply(481, "Call/Transaction Does Not Exist")));
        return;
    };
    match turn {
        InfoTurn::Forward => {}
        InfoTurn::InFlight | InfoTurn::Stale => {
            count_control("repeated");
            return;
        }
        InfoTurn::Repeat(answer) => {
            count_control("repeated");
            tokio::spawn(send(answer));
            return;
        }
    }
    let sessions = ctx.catalog.sessions.clone();
    // Remember the final answer for retransmissions, then send it.
    let answer = move |bytes: Vec<u8>| {
        if let Some(h) = lock(&sessions).get_mut(&call_id) {
            h.infos.answered(sip_cseq, bytes.clone());
        }
        send(bytes)
    };
    let command = match playback::parse_info(message.header("Content-Type"), &message.body) {
        Ok((cmd, _)) => cmd,
        Err(e) => {
            count_control("bad_request");
            metrics::get()
                .cascade_errors
                .get_or_create(&label("kind", e.kind()))
                .inc();
            warn_limited!(ctx.bad_input, from.ip(), upstream = %ctx.name, "cascade: unreadable playback INFO: {e}");
            tokio::spawn(answer(reply(400, "Bad Request")));
            return;
        }
    };
    let streams = ctx.catalog.media.streams.clone();
    let ok = reply(200, "OK");
    let refused = reply(500, "Server Internal Error");
    let gone = reply(481, "Call/Transaction Does Not Exist");
    let name = ctx.name.to_owned();
    tokio::spawn(async move {
        let Some(control) = streams.playback(&key) else {
            // The recording already ended (or never started).
            count_control("unknown_call");
            return answer(gone).await;
        };
        let outcome = tokio::time::timeout(INFO_DEADLINE, control.command(command)).await;
        match outcome {
            Ok(Ok(())) => {
                count_control("ok");
                info!(upstream = %name, stream = %key, ?command, "cascade: playback control forwarded");
                answer(ok).await;
            }
            Ok(Err(e)) => {
                count_control("refused");
                warn!(upstream = %name, stream = %key, ?command, "cascade: playback control refused: {e}");
                answer(refused).await;
            }
            Err(_) => {
                count_control("refused");
                warn!(upstream = %name, stream = %key, ?command, "cascade: playback control unanswered within {INFO_DEADLINE:?}");
                answer(refused).await;
            }
        }
    });
}

/// Where out-of-dialog MESSAGEs to the upper platform go, and as whom.
struct UpwardAddress {
    server_id: String,
    realm: String,
    platform_id: String,
    target: SocketAddr,
    local: SocketAddr,
}

impl UpwardAddress {
    /// A MESSAGE carrying `body` (MANSCDP) to the upper platform.
    fn message(&self, body: &[u8], seed: u64) -> Vec<u8> {
        let uri = format!("sip:{}@{}", self.server_id, self.realm);
        let domain = self.platform_id.get(..10).unwrap_or_default();
        let from_uri = format!("sip:{}@{domain}", self.platform_id);
        wire::request(&wire::RequestParts {
            method: "MESSAGE",
            uri: &uri,
            local: self.local,
            branch: &format!("z9hG4bK{seed:x}e"),
            from: &from_uri,
            from_tag: &format!("{seed:x}"),
            to: &uri,
            to_tag: None,
            call_id: &format!("{seed:x}-e@camgate"),
            cseq: 1,
            extra: &[],
            body: Some(("Application/MANSCDP+xml", body)),
        })
    }
}

/// How long the TCP media connection may take after our 200.
const TCP_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The media socket made for an INVITE before answering it.
enum Bound {
    Udp(UdpSocket),
    Listen(tokio::net::TcpListener),
    /// We connect once answered.
    Connect,
}

/// One upward stream from INVITE to its end.
struct InviteTask {
    name: String,
    message: wire::Message,
    from: SocketAddr,
    sip: Arc<UdpSocket>,
    key: StreamKey,
    channel_id: String,
    offer: media::Offer,
    local_ip: IpAddr,
    media: MediaServices,
    sessions: Sessions,
    call_id: String,
    cancel: CancellationToken,
    acked: CancellationToken,
    upward: UpwardAddress,
}

/// Resend `ok` to `to` until `acked` or 64·T1 from now (the deadline is
/// fixed at the start), T1 doubling to T2 in between.
async fn retransmit_until_acked(
    sip: Arc<UdpSocket>,
    ok: Vec<u8>,
    to: SocketAddr,
    acked: CancellationToken,
    ended: CancellationToken,
) {
    let give_up = tokio::time::Instant::now() + 64 * T1;
    let mut interval = T1;
    let mut next = tokio::time::Instant::now() + interval;
    while next < give_up {
        tokio::select! {
            _ = acked.cancelled() => return,
            _ = ended.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let _ = sip.send_to(&ok, to).await;
        interval = (interval * 2).min(T2);
        next += interval;
    }
}

impl InviteTask {
    async fn run(self) {
        let fail = |code: u16, reason: &str| {
            wire::response_to(&self.message, code, reason, "camgate", None)
        };
        let opened = tokio::select! {
            _ = self.cancel.cancelled() => None,
            r = tokio::time::timeout(INVITE_DEADLINE, session::open(&self.media, &self.key)) => Some(r),
        };
        let count = |outcome: &'static str| count_invite_of(self.offer.kind, outcome);
        let opened = match opened {
            None => {
                let _ = self
                    .sip
                    .send_to(&fail(487, "Request Terminated"), self.from)
                    .await;
                lock(&self.sessions).remove(&self.call_id);
                return;
            }
            Some(Ok(Ok(o))) => o,
            Some(Ok(Err(e))) => {
                count("failed");
                warn!(upstream = %self.name, stream = %self.key, "cascade: INVITE failed: {e}");
                let _ = self
                    .sip
                    .send_to(&fail(503, "Service Unavailable"), self.from)
                    .await;
                lock(&self.sessions).remove(&self.call_id);
                return;
            }
            Some(Err(_)) => {
                count("failed");
                warn!(upstream = %self.name, stream = %self.key, "cascade: stream did not open within {INVITE_DEADLINE:?}");
                let _ = self.sip.send_to(&fail(504, "Timeout"), self.from).await;
                lock(&self.sessions).remove(&self.call_id);
                return;
            }
        };
        let link = self.offer.link;
        let bound = match link {
            media::MediaLink::Udp => UdpSocket::bind((self.local_ip, 0))
                .await
                .map(|s| (s.local_addr().ok(), Bound::Udp(s))),
            media::MediaLink::TcpWeListen => tokio::net::TcpListener::bind((self.local_ip, 0))
                .await
                .map(|l| (l.local_addr().ok(), Bound::Listen(l))),
            // RFC 4145 §4.1: the active side announces port 9.
            media::MediaLink::TcpWeConnect => {
                Ok((Some(SocketAddr::new(self.local_ip, 9)), Bound::Connect))
            }
        };
        let (local, bound) = match bound {
            Ok((Some(local), b)) => (local, b),
            Ok((None, _)) | Err(_) => {
                count("failed");
                warn!(upstream = %self.name, "cascade: no media socket");
                let _ = self
                    .sip
                    .send_to(&fail(500, "Server Internal Error"), self.from)
                    .await;
                lock(&self.sessions).remove(&self.call_id);
                return;
            }
        };
        let ssrc = self
            .offer
            .ssrc
            .unwrap_or_else(|| (unix_now() as u32) % 1_000_000_000);
        let sdp = media::answer(
            &self.channel_id,
            local,
            ssrc,
            link,
            (self.offer.kind, self.offer.range),
        );
        let contact = format!(
            "<sip:{}@{}>",
            self.channel_id,
            self.sip.local_addr().map_or(local, |a| a)
        );
        let ok = wire::response_with(
            &self.message,
            200,
            "OK",
            "camgate",
            &[("Contact", contact)],
            Some(("APPLICATION/SDP", sdp.as_bytes())),
        );
        let _ = self.sip.send_to(&ok, self.from).await;
        tokio::spawn(retransmit_until_acked(
            self.sip.clone(),
            ok,
            self.from,
            self.acked.clone(),
            self.cancel.clone(),
        ));
        let dest = SocketAddr::new(self.offer.address, self.offer.port);
        // A TCP connection must be made within this long of our 200.
        let connect_by = tokio::time::Instant::now() + TCP_CONNECT_WAIT;
        let sink = match bound {
            Bound::Udp(socket) => Ok(session::Sink::Udp { socket, dest }),
            Bound::Listen(listener) => tokio::select! {
                _ = self.cancel.cancelled() => Err("ended before connecting".to_owned()),
                _ = tokio::time::sleep_until(connect_by) => Err("upper platform never connected".to_owned()),
                r = listener.accept() => r.map(|(s, _)| session::Sink::Tcp(s)).map_err(|e| e.to_string()),
            },
            Bound::Connect => tokio::select! {
                _ = self.cancel.cancelled() => Err("ended before connecting".to_owned()),
                _ = tokio::time::sleep_until(connect_by) => Err(format!("no connection to {dest}")),
                r = tokio::net::TcpStream::connect(dest) => r.map(session::Sink::Tcp).map_err(|e| e.to_string()),
            },
        };
        let sink = match sink {
            Ok(s) => s,
            Err(e) => {
                count("failed");
                warn!(upstream = %self.name, stream = %self.key, "cascade: media connection: {e}");
                lock(&self.sessions).remove(&self.call_id);
                return;
            }
        };
        count("ok");
        if let SessionKind::Download { speed } = self.offer.kind {
            self.download_speed(speed).await;
        }
        let label = self.key.to_string();
        let ended = session::send(opened, sink, ssrc, self.cancel.clone(), label).await;
        match ended {
            Err(e) => {
                warn!(upstream = %self.name, stream = %self.key, "cascade: upward stream: {e}")
            }
            Ok(session::Ended::StreamEnded) if self.offer.kind.is_recorded() => {
                self.recording_ended().await;
            }
            Ok(_) => {}
        }
        lock(&self.sessions).remove(&self.call_id);
    }

    /// A download runs as a playback at the nearest speed devices take
    /// (see [`playback::download_scale`]); a device refusing it leaves the
    /// download at 1×.
    async fn download_speed(&self, speed: u32) {
        let Some(scale) = playback::download_scale(speed) else {
            return;
        };
        let Some(control) = self.media.streams.playback(&self.key) else {
            return;
        };
        let command = crate::streams::PlaybackCommand::Scale(scale);
        match tokio::time::timeout(INFO_DEADLINE, control.command(command)).await {
            Ok(Ok(())) => {
                info!(upstream = %self.name, stream = %self.key, speed, scale, "cascade: download at speed")
            }
            Ok(Err(e)) => {
                warn!(upstream = %self.name, stream = %self.key, speed, "cascade: download speed refused: {e}")
            }
            Err(_) => {
                warn!(upstream = %self.name, stream = %self.key, speed, "cascade: download speed unanswered")
            }
        }
    }

    /// The recording played to its end: tell the upper platform
    /// (MediaStatus 121, A.2.5) and keep the dialog until its BYE, or
    /// [`END_BYE_WAIT`] from now, then hang up ourselves.
    async fn recording_ended(&self) {
        // Branch and Call-ID differ per dialog: FNV-1a of its Call-ID.
        let dialog = self.call_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let seed = unix_now() ^ dialog;
        let sn = (seed % 1_000_000) as u32;
        let notify = self
            .upward
            .message(&playback::media_status_end(sn, &self.channel_id), seed);
        if let Err(e) = self.sip.send_to(&notify, self.upward.target).await {
            warn!(upstream = %self.name, "cascade: sending MediaStatus 121: {e}");
        }
        info!(upstream = %self.name, stream = %self.key, channel = %self.channel_id, "cascade: recording ended; MediaStatus 121 sent");
        let give_up = tokio::time::Instant::now() + END_BYE_WAIT;
        let outcome = tokio::select! {
            _ = self.cancel.cancelled() => "upper_bye",
            _ = tokio::time::sleep_until(give_up) => "our_bye",
        };
        metrics::get()
            .cascade_recording_ends
            .get_or_create(&label("outcome", outcome))
            .inc();
        if outcome == "upper_bye" {
            return;
        }
        lock(&self.sessions).remove(&self.call_id);
        let Some(dialog) = CalleeDialog::from_invite(&self.message, "camgate") else {
            return;
        };
        let bye = dialog.bye(self.upward.local, &format!("z9hG4bK{seed:x}b"));
        let _ = self.sip.send_to(&bye, self.from).await;
        warn!(upstream = %self.name, stream = %self.key, "cascade: no BYE within {END_BYE_WAIT:?} of the recording's end; sent ours");
    }
}

/// How often channel lists are compared for subscribers.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Lifetime of a subscription whose SUBSCRIBE named none.
const DEFAULT_SUBSCRIPTION: Duration = Duration::from_secs(3600);

/// A catalog SUBSCRIBE (new, refreshed, or ended with Expires: 0).
async fn serve_subscribe(ctx: &Ctx<'_>, message: &wire::Message, from: SocketAddr) {
    let call_id = message.call_id().unwrap_or_default().to_owned();
    let expires = message
        .header("Expires")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SUBSCRIPTION, Duration::from_secs)
        .min(subscription::MAX_EXPIRES);
    let their = message.header("From").unwrap_or_default();
    let their_uri = match (their.find('<'), their.find('>')) {
        (Some(a), Some(b)) if a < b => their[a + 1..b].to_owned(),
        _ => their
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    let their_tag = wire::param(their, "tag").unwrap_or_default().to_owned();
    let code = {
        let mut subs = lock(&ctx.catalog.subscriptions);
        subs.retain(|s| s.call_id != call_id || !expires.is_zero());
        if expires.is_zero() {
            200
        } else if let Some(s) = subs.iter_mut().find(|s| s.call_id == call_id) {
            s.expires_at = Instant::now() + expires;
            200
        } else if subs.len() >= subscription::MAX_SUBSCRIPTIONS {
            486
        } else {
            // Known: nothing. The first comparison NOTIFYs every channel
            // (ADD), so the subscriber converges even when the channels
            // changed between its Catalog query and this SUBSCRIBE (seen:
            // a camera's catalog completing in that gap was never told).
            subs.push(CatalogSubscription::new(
                call_id.clone(),
                their_uri,
                their_tag,
                from,
                Instant::now() + expires,
                &[],
            ));
            200
        }
    };
    let reason = if code == 200 { "OK" } else { "Busy Here" };
    let contact = format!("<sip:{}@{}>", ctx.up.platform_id, ctx.local);
    let resp = wire::response_with(
        message,
        code,
        reason,
        "camgate",
        &[
            ("Expires", expires.as_secs().to_string()),
            ("Contact", contact),
        ],
        None,
    );
    let _ = ctx.socket.send_to(&resp, from).await;
    info!(upstream = %ctx.name, %call_id, expires = expires.as_secs(), code, "cascade: catalog subscription");
}

/// Compare the channels with what each subscriber knows and NOTIFY the
/// changes; expired subscriptions are dropped.
async fn notify_changes(ctx: &Ctx<'_>) {
    let now = Instant::now();
    let channels = ctx.catalog.exposed(ctx.up);
    let mut outgoing: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
    {
        let mut subs = lock(&ctx.catalog.subscriptions);
        subs.retain(|s| s.expires_at > now);
        for sub in subs.iter_mut() {
            let changes = sub.changes(&channels);
            if changes.is_empty() {
                continue;
            }
            let sn = (unix_now() % 1_000_000) as u32;
            let left = sub.expires_at.saturating_duration_since(now).as_secs();
            let domain = ctx.up.platform_id.get(..10).unwrap_or_default();
            let ours = format!("sip:{}@{domain}", ctx.up.platform_id);
            for (i, body) in answers::catalog_notify_pages(
                sn,
                &ctx.up.platform_id,
                ctx.up.civil_code(),
                &changes,
            )
            .iter()
            .enumerate()
            {
                sub.cseq += 1;
                let bytes = wire::request(&wire::RequestParts {
                    method: "NOTIFY",
                    uri: &sub.their_uri,
                    local: ctx.local,
                    branch: &format!("z9hG4bK{sn:x}n{}{i}", sub.cseq),
                    from: &ours,
                    from_tag: "camgate",
                    to: &sub.their_uri,
                    to_tag: Some(&sub.their_tag),
                    call_id: &sub.call_id,
                    cseq: sub.cseq,
                    extra: &[
                        ("Event", "Catalog".to_owned()),
                        ("Subscription-State", format!("active;expires={left}")),
                    ],
                    body: Some(("Application/MANSCDP+xml", body)),
                });
                outgoing.push((bytes, sub.target));
            }
            info!(upstream = %ctx.name, changes = changes.len(), "cascade: catalog changes notified");
            metrics::get()
                .cascade_queries
                .get_or_create(&label("cmd", "catalog_notify"))
                .inc_by(changes.len() as u64);
        }
    }
    for (bytes, to) in outgoing {
        let _ = ctx.socket.send_to(&bytes, to).await;
    }
}

/// An alarm SUBSCRIBE, or the upper platform's `<Response>` to one of our
/// alarm MESSAGEs (200, nothing more to do).
async fn serve_alarm_request(ctx: &Ctx<'_>, message: &wire::Message, from: SocketAddr) {
    let link = alarm_driver::AlarmLink {
        name: ctx.name,
        socket: ctx.socket,
        target: ctx.target,
        local: ctx.local,
        server_id: &ctx.up.server_id,
        realm: &ctx.up.realm,
        platform_id: &ctx.up.platform_id,
        log: ctx.bad_input,
    };
    if matches!(&message.start, wire::Start::Request { method, .. } if method == "SUBSCRIBE") {
        let subs = &ctx.catalog.alarm_subscriptions;
        return alarm_driver::serve_subscribe(&link, message, from, subs).await;
    }
    let ok = wire::response_to(message, 200, "OK", "camgate", None);
    let _ = ctx.socket.send_to(&ok, from).await;
}
