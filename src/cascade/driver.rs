//! The tokio side of the cascade (GB/T 28181-2016 §9.1.2 registration,
//! §9.6 keepalive): one task per upstream owning its SIP link (a UDP
//! socket, or over TCP (§4.3) one connection, made again after a loss
//! with backoff), feeding [`RegisterClient`] messages and deadlines,
//! sending what it asks, handing the upper platform's requests to
//! [`requests`], resending our unanswered requests over UDP
//! ([`super::retransmit`], RFC 3261 §17.1.2.2), and reporting to the
//! [`StatusBoard`] and metrics.
//!
//! [`requests`]: super::requests

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::alarm_driver::{self, AlarmLink};
use super::alarms::{self, AlarmOutbox};
use super::catalog::{Catalog, IdStore};
use super::catalog_subscribe::{WATCH_INTERVAL, notify_changes};
use super::config::{CascadeConfig, UpstreamConfig, UpstreamTransport};
use super::forward::{self, Upward};
use super::link::{Connection, ConnectionError, Link};
use super::register::{ClientEvent, ClientParams, MAX_BACKOFF, MIN_BACKOFF, Phase, RegisterClient};
use super::requests::serve_request;
use super::session::MediaServices;
use super::status::{StatusBoard, UpstreamStatus, unix_now};
use super::wire;
use crate::log_limit::LogGate;
use crate::metrics::{self, label};
use crate::streams::control::ChannelControl;
use crate::streams::directory::DeviceDirectory;
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
            transport: up.transport,
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

/// The receiving side of an upstream's [`Link`].
enum Inbound {
    Udp {
        socket: Arc<UdpSocket>,
        buf: Vec<u8>,
    },
    /// One connection at a time, made again after a loss with backoff
    /// (reset once registered, so an upper platform that accepts and
    /// closes at once is not hammered).
    Tcp {
        /// Our side's address: the route's IP, `local_port` (0: any).
        bind: SocketAddr,
        conn: Option<Connection>,
        reconnect_at: Option<Instant>,
        backoff: Duration,
    },
}

/// What came in.
enum Received {
    Message(Vec<u8>, SocketAddr),
    Lost(ConnectionError),
    Nothing,
}

impl Inbound {
    async fn recv(&mut self) -> Received {
        match self {
            Inbound::Udp { socket, buf } => match socket.recv_from(buf).await {
                Ok((n, from)) => Received::Message(buf[..n].to_vec(), from),
                // ICMP port unreachable surfaces here on Linux; the
                // transaction timers deal with the silence.
                Err(e) => {
                    tracing::debug!("cascade: recv: {e}");
                    Received::Nothing
                }
            },
            Inbound::Tcp { conn: Some(c), .. } => match c.recv().await {
                Ok(m) => Received::Message(m, c.peer),
                Err(e) => Received::Lost(e),
            },
            Inbound::Tcp { conn: None, .. } => std::future::pending().await,
        }
    }

    fn reconnect_at(&self) -> Option<Instant> {
        match self {
            Inbound::Tcp {
                conn: None,
                reconnect_at,
                ..
            } => *reconnect_at,
            _ => None,
        }
    }

    /// Whether a message to `dest` needs a connection to it first (a 3xx
    /// redirect); if so, the current one is dropped and the next is made
    /// at once.
    fn needs_connection_to(&mut self, link: &Link, dest: SocketAddr) -> bool {
        let Inbound::Tcp {
            conn, reconnect_at, ..
        } = self
        else {
            return false;
        };
        if conn.as_ref().is_none_or(|c| c.peer == dest) {
            return false;
        }
        link.detach();
        *conn = None;
        *reconnect_at = Some(Instant::now());
        true
    }

    /// Drop the connection and try again after the backoff.
    fn lost(&mut self, link: &Link, now: Instant) {
        if let Inbound::Tcp {
            conn,
            reconnect_at,
            backoff,
            ..
        } = self
        {
            link.detach();
            *conn = None;
            *reconnect_at = Some(now + *backoff);
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
        }
    }
}

async fn setup(up: &UpstreamConfig) -> Result<(SocketAddr, Inbound), String> {
    let target = resolve(&up.address).await?;
    let ip = local_ip_toward(target).map_err(|e| format!("no route to {target}: {e}"))?;
    match up.transport {
        UpstreamTransport::Udp => {
            let socket = UdpSocket::bind((ip, up.local_port))
                .await
                .map_err(|e| format!("binding {ip}:{}: {e}", up.local_port))?;
            let inbound = Inbound::Udp {
                socket: Arc::new(socket),
                buf: vec![0u8; wire::MAX_MESSAGE],
            };
            Ok((target, inbound))
        }
        UpstreamTransport::Tcp => Ok((
            target,
            Inbound::Tcp {
                bind: SocketAddr::new(ip, up.local_port),
                conn: None,
                reconnect_at: Some(Instant::now()),
                backoff: MIN_BACKOFF,
            },
        )),
    }
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
    let mut alarm_outbox = AlarmOutbox::new(alarms::MAX_QUEUED);
    let (target, mut inbound) = loop {
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
    let (link, local, transport) = match &inbound {
        Inbound::Udp { socket, .. } => match socket.local_addr() {
            Ok(a) => (Link::udp(socket.clone()), a, wire::Transport::Udp),
            Err(e) => {
                warn!(upstream = %name, "cascade: socket has no address: {e}");
                return;
            }
        },
        // The real port is known once connected.
        Inbound::Tcp { bind, .. } => (Link::tcp(), *bind, wire::Transport::Tcp),
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
        transport,
    };
    let seed = unix_now() ^ (u64::from(std::process::id()) << 32) ^ slot as u64;
    let mut client = RegisterClient::new(params, target, seed);
    board.update(slot, |s, _| s.local = local.to_string());
    info!(upstream = %name, %target, %local, transport = transport.via_name(), "cascade: registering to upper platform");
    if matches!(inbound, Inbound::Udp { .. }) {
        client.start(Instant::now());
    }
    let mut ctx = Upstream {
        name,
        up,
        link,
        bad_input: LogGate::new(Duration::from_secs(60), 64),
        catalog,
        target,
        local,
        shutdown,
    };
    let mut stopping = false;
    let mut watch_at: Option<Instant> = None;
    loop {
        while let Some(t) = client.poll_transmit() {
            if inbound.needs_connection_to(&ctx.link, t.dest) {
                // Redirected (3xx): the client registers again once
                // connected to the new server.
                info!(upstream = %ctx.name, to = %t.dest, "cascade: connecting to the server redirected to");
                continue;
            }
            match ctx.link.send(&t.bytes, t.dest).await {
                Ok(()) => {}
                // Over TCP between connections: the registration waits
                // for the next one.
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {}
                Err(e) => warn!(upstream = %ctx.name, dest = %t.dest, "cascade: send failed: {e}"),
            }
        }
        ctx.target = client.target();
        while let Some(ev) = client.poll_event() {
            handle_event(&ctx, ev).await;
        }
        report(&board, slot, &client);
        if client.phase() == Phase::Registered && !alarm_outbox.is_empty() {
            let channels = ctx.catalog.exposed(&ctx.up);
            let subs = &ctx.catalog.alarm_subscriptions;
            alarm_driver::flush(&AlarmLink::of(&ctx), &mut alarm_outbox, &channels, subs).await;
        }
        if client.phase() == Phase::Stopped {
            info!(upstream = %ctx.name, "cascade: stopped");
            break;
        }
        if client.phase() == Phase::Registered
            && let Inbound::Tcp { backoff, .. } = &mut inbound
        {
            *backoff = MIN_BACKOFF;
        }
        if stopping {
            // Upward streams end with the registration.
            for (_, session) in lock(&ctx.catalog.sessions).drain() {
                session.cancel.cancel();
            }
        }
        let deadline = client.poll_timeout();
        // Channel changes are looked for while someone subscribes.
        if lock(&ctx.catalog.subscriptions).is_empty() {
            watch_at = None;
        } else if watch_at.is_none() {
            watch_at = Some(Instant::now() + WATCH_INTERVAL);
        }
        let reconnect_at = if stopping {
            None
        } else {
            inbound.reconnect_at()
        };
        tokio::select! {
            _ = sleep_until(watch_at) => {
                watch_at = Some(Instant::now() + WATCH_INTERVAL);
                notify_changes(&ctx).await;
            }
            _ = ctx.shutdown.cancelled(), if !stopping => {
                stopping = true;
                client.shutdown(Instant::now());
            }
            r = inbound.recv() => match r {
                Received::Message(bytes, from) => client.handle_datagram(&bytes, from, Instant::now()),
                Received::Lost(e) => {
                    connection_failed(&ctx, &e);
                    inbound.lost(&ctx.link, Instant::now());
                    client.connection_lost(Instant::now(), e.to_string());
                }
                Received::Nothing => {}
            },
            _ = sleep_until(reconnect_at) => {
                connect(&mut ctx, &mut inbound, &mut client).await;
                board.update(slot, |s, _| s.local = ctx.local.to_string());
            }
            _ = sleep_until(deadline) => client.handle_timeout(Instant::now()),
            got = alarm_driver::next(&mut alarm_rx) => alarm_driver::queue(&AlarmLink::of(&ctx), &mut alarm_outbox, got),
            _ = retransmission_due(&ctx.link) => resend_due(&ctx).await,
        }
    }
    ctx.link.detach();
}

/// Connect to the upper platform over TCP (bounded by
/// [`super::link::CONNECT_TIMEOUT`]) and register on the new connection.
async fn connect(ctx: &mut Upstream, inbound: &mut Inbound, client: &mut RegisterClient) {
    let Inbound::Tcp {
        bind,
        conn,
        reconnect_at,
        ..
    } = inbound
    else {
        return;
    };
    *reconnect_at = None;
    let target = client.target();
    let opened = tokio::select! {
        r = Connection::open(&ctx.link, *bind, target) => r,
        _ = ctx.shutdown.cancelled() => return,
    };
    match opened {
        Ok(c) => {
            info!(upstream = %ctx.name, %target, local = %c.local, "cascade: connected over TCP");
            ctx.local = c.local;
            client.connected(Instant::now(), c.local);
            *conn = Some(c);
        }
        Err(e) => {
            connection_failed(ctx, &e);
            inbound.lost(&ctx.link, Instant::now());
            client.connection_lost(Instant::now(), e.to_string());
        }
    }
}

/// Count and log (rate-limited) a TCP connection that failed or ended.
fn connection_failed(ctx: &Upstream, e: &ConnectionError) {
    metrics::get()
        .cascade_errors
        .get_or_create(&label("kind", e.kind()))
        .inc();
    warn_limited!(ctx.bad_input, ctx.target.ip(), upstream = %ctx.name, "cascade: TCP connection to the upper platform: {e}");
}

/// Until one of our requests over UDP is due again (or a new one is
/// tracked, which may be due sooner); over TCP, never.
async fn retransmission_due(link: &Link) {
    let Link::Udp(udp) = link else {
        return std::future::pending().await;
    };
    let deadline = lock(&udp.pending).poll_timeout();
    tokio::select! {
        _ = sleep_until(deadline) => {}
        _ = udp.tracked.notified() => {}
    }
}

/// Resend our requests that are due, and count those given up.
async fn resend_due(ctx: &Upstream) {
    let Link::Udp(udp) = &ctx.link else {
        return;
    };
    let (due, gave_up, dropped) = {
        let mut pending = lock(&udp.pending);
        let due = pending.due(Instant::now());
        let (gave_up, dropped) = pending.take_counts();
        (due, gave_up, dropped)
    };
    let m = &metrics::get().cascade_retransmissions;
    for (bytes, dest) in &due {
        if let Err(e) = udp.socket.send_to(bytes, *dest).await {
            tracing::debug!(upstream = %ctx.name, %dest, "cascade: resend failed: {e}");
        }
    }
    m.get_or_create(&label("outcome", "resent"))
        .inc_by(due.len() as u64);
    m.get_or_create(&label("outcome", "gave_up"))
        .inc_by(gave_up);
    m.get_or_create(&label("outcome", "dropped"))
        .inc_by(dropped);
    if gave_up + dropped > 0 {
        warn_limited!(ctx.bad_input, ctx.target.ip(), upstream = %ctx.name, gave_up, dropped, "cascade: requests to the upper platform unanswered; given up");
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

/// One upstream as its requests are served: who it is, how to reach it,
/// and what it may be shown.
pub(super) struct Upstream {
    pub name: String,
    pub up: UpstreamConfig,
    pub link: Link,
    /// Rate-limits logs of bad input from the network.
    pub bad_input: LogGate,
    pub catalog: Catalog,
    /// Where the upper platform's SIP server is (after redirects).
    pub target: SocketAddr,
    pub local: SocketAddr,
    /// Cancelled at shutdown; upward streams hang below it.
    pub shutdown: CancellationToken,
}

impl Upstream {
    /// What a task needs to send MESSAGEs of ours to the upper platform.
    pub fn upward(&self) -> Upward {
        Upward {
            name: self.name.clone(),
            link: self.link.clone(),
            target: self.target,
            local: self.local,
            server_id: self.up.server_id.clone(),
            realm: self.up.realm.clone(),
            platform_id: self.up.platform_id.clone(),
        }
    }
}

async fn handle_event(ctx: &Upstream, ev: ClientEvent) {
    let name = &ctx.name;
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
        ClientEvent::Answered { call_id, cseq } => {
            if let Link::Udp(udp) = &ctx.link {
                lock(&udp.pending).answered(&(call_id, cseq));
            }
        }
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
