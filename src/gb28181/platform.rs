//! The GB28181 platform: the SIP server devices register to (GB/T
//! 28181-2016 §9.1), the keepalive and MANSCDP message handler (§9.3, §9.5,
//! Annex A), and the origin of queries to devices.
//!
//! This is the tokio driver over the sans-IO pieces — [`Registrar`] for
//! REGISTER, [`Registry`] for device state, `manscdp` for bodies — and the
//! rsipstack transactions that carry them. Each incoming request is handled
//! in its own task, so a slow or broken device only delays itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rsipstack::sip::{Header, Method, StatusCode, Transport};
use rsipstack::transaction::{Transaction, TransactionReceiver};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::events::{Event, EventKind, EventRing};
use super::exchanges::{Exchanges, QueryError};
use super::manscdp::{self, Message, Notify, QueryKind, Response};
use super::registrar::{Credentials, RegisterAttempt, RegisterDecision, Registrar};
use super::registry::{Channel, DeviceInfo, DeviceSummary, Registry, RegistryEvent, SipTransport};
use super::reports::{self, Report};
use super::ssrc::{Ssrc, SsrcAllocator, SsrcKind};
use super::talk::{HostFuture, TalkError, TalkFeed, TalkHost, TalkSessions, TalkStarted};
use crate::config::Config;
use crate::ingest::port_pool::PortPool;
use crate::metrics::{self, label};
use crate::reload::LiveConfig;
use crate::sip::answered_requests::{AnsweredRequests, Seen};
use crate::sip::client::{self, Outgoing};
use crate::sip::request::{RequestFacts, header_value, register_expires};
use crate::sip::stack::SipStack;
use crate::sip::stateless::reply_stateless;
use crate::streams::StartError;

/// How long a query MESSAGE may take to be acknowledged.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened to a device that ends or restarts its media sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChange {
    /// Offline (keepalives stopped), unregistered or expired: its calls
    /// are over.
    Gone(String),
    /// It registered again under a new Call-ID: it restarted and forgot
    /// its calls; live streams should call it again.
    Restarted,
}

/// Where to send a device's requests.
#[derive(Debug, Clone)]
pub struct DeviceRoute {
    pub device_id: String,
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// First wait before asking a device again (an incomplete catalog, an
/// unanswered DeviceInfo); doubles per try.
const QUERY_RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest wait between such retries.
const QUERY_RETRY_MAX: Duration = Duration::from_secs(60);

/// Wait before the `attempt`-th retry (from 1) of a device's queries:
/// 2 s, doubling, at most 60 s.
fn query_retry_delay(attempt: u32) -> Duration {
    QUERY_RETRY_FIRST
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(QUERY_RETRY_MAX)
}

/// Devices whose first queries (DeviceInfo, subscriptions, catalog) run at
/// once. A registration storm otherwise starts them for every device at
/// the same moment: each holds its task (~6 KB of futures), transactions
/// and their channels (~12 KiB) until its device answers, and on a loaded
/// host answers take seconds, so 10,000 devices pushed the heap to
/// hundreds of MB that the allocator kept after the storm (issue 17). At
/// ~5 ms per device 64 lanes get through 10,000 devices in about a second.
const FIRST_QUERIES_AT_ONCE: usize = 64;

pub struct GbPlatform {
    live: LiveConfig,
    pub sip: SipStack,
    pub ports: PortPool,
    registrar: Mutex<Registrar>,
    registry: Mutex<Registry>,
    ssrcs: Mutex<SsrcAllocator>,
    sn: AtomicU32,
    /// Queries waiting for their answers.
    pub(crate) exchanges: Mutex<Exchanges>,
    pub(crate) events: Mutex<EventRing>,
    /// Live feed of the event ring (SSE, webhook).
    pub(crate) event_tx: tokio::sync::broadcast::Sender<Event>,
    /// Observers of device reports the platform itself does not consume
    /// (end of recording, snapshot uploads): playback and snapshot jobs.
    pub(crate) report_tx: tokio::sync::broadcast::Sender<(String, Report)>,
    last_catalog_refresh: Mutex<Option<Instant>>,
    pub(crate) subscriptions: Mutex<super::subscriptions::Subscriptions>,
    pub(crate) downloads: super::download::DownloadJobs,
    pub(crate) snapshots: super::snapshot::Snapshots,
    pub(crate) talks: TalkSessions,
    /// Lifecycle changes for the media sessions of each device.
    device_tx: tokio::sync::broadcast::Sender<(String, DeviceChange)>,
    /// Warnings about requests from the wrong sender, rate-limited per IP.
    pub(crate) sender_log: crate::log_limit::LogGate,
    /// Cluster placement of REGISTERs (issue 18); unset on a single node.
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
    /// Lanes for new devices' first queries ([`FIRST_QUERIES_AT_ONCE`]).
    first_queries: Arc<tokio::sync::Semaphore>,
    /// Devices waiting for a lane, in registration order, each with the
    /// number of earlier rounds it left unanswered.
    first_query_queue: Mutex<std::collections::VecDeque<(String, u32)>>,
    /// REGISTERs accepted in the last 32 s, to answer their retransmissions.
    accepted_registers: Mutex<super::accepted_registers::AcceptedRegisters>,
    /// MESSAGEs and NOTIFYs acted on and answered statelessly in the last
    /// 32 s, to answer their retransmissions without acting twice.
    answered_requests: Mutex<AnsweredRequests>,
}

/// Set the device gauges from the registry. Done on every tick and right
/// after a REGISTER, so `camgate_devices_online` shows a registration the
/// moment it is answered rather than up to a tick later.
fn publish_device_counts(registry: &Registry) {
    metrics::get()
        .devices_registered
        .set(registry.registered_count() as i64);
    metrics::get()
        .devices_online
        .set(registry.online_count() as i64);
}

fn has_to_tag(tx: &Transaction) -> bool {
    use rsipstack::sip::HeadersExt as _;
    tx.original
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some()
}

/// The address a request came from (the connection's, not the Via's).
fn peer_ip(tx: &Transaction) -> std::net::IpAddr {
    tx.connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok())
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip())
}

/// A REGISTER answered 400 or 403 is a rejected SIP message too.
fn count_refused_register() {
    metrics::get()
        .sip_errors
        .get_or_create(&label("kind", "register_refused"))
        .inc();
}

/// Warnings about bad requests, at most one per source per minute.
fn bad_input_log() -> &'static crate::log_limit::LogGate {
    static GATE: std::sync::OnceLock<crate::log_limit::LogGate> = std::sync::OnceLock::new();
    GATE.get_or_init(Default::default)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn method_label(m: &Method) -> &'static str {
    match m {
        Method::Register => "REGISTER",
        Method::Message => "MESSAGE",
        Method::Invite => "INVITE",
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Info => "INFO",
        Method::Notify => "NOTIFY",
        Method::Subscribe => "SUBSCRIBE",
        Method::Options => "OPTIONS",
        _ => "OTHER",
    }
}

impl GbPlatform {
    pub fn new(live: LiveConfig, sip: SipStack, ports: PortPool) -> Arc<Self> {
        let config = live.get();
        let ssrcs = SsrcAllocator::new(&config.sip.realm)
            .unwrap_or_else(|_| SsrcAllocator::new("3402000000").expect("valid default realm"));
        Arc::new(Self {
            registrar: Mutex::new(
                Registrar::new(&config.sip.realm, config.sip.max_expires)
                    .with_sha256(config.sip.digest_sha256),
            ),
            registry: Mutex::new(Registry::new(config.sip.keepalive_timeout)),
            ssrcs: Mutex::new(ssrcs),
            sn: AtomicU32::new(1),
            exchanges: Mutex::new(Exchanges::new()),
            events: Mutex::new(EventRing::new(config.gb.event_capacity)),
            event_tx: tokio::sync::broadcast::channel(256).0,
            report_tx: tokio::sync::broadcast::channel(64).0,
            last_catalog_refresh: Mutex::new(None),
            subscriptions: Mutex::default(),
            downloads: Default::default(),
            snapshots: Default::default(),
            talks: Default::default(),
            device_tx: tokio::sync::broadcast::channel(256).0,
            sender_log: Default::default(),
            cluster: std::sync::OnceLock::new(),
            first_queries: Arc::new(tokio::sync::Semaphore::new(FIRST_QUERIES_AT_ONCE)),
            first_query_queue: Mutex::default(),
            accepted_registers: Mutex::default(),
            answered_requests: Mutex::default(),
            live,
            sip,
            ports,
        })
    }

    /// Place REGISTERs across a cluster: a device another node owns is
    /// sent there with 302. Set once, before SIP is served.
    pub fn set_cluster(&self, cluster: crate::cluster::Cluster) {
        let _ = self.cluster.set(cluster);
    }

    /// Where a REGISTER from `device_id` belongs when a cluster is set.
    fn cluster_route(&self, device_id: &str) -> Option<crate::cluster::view::RegisterRoute> {
        let cluster = self.cluster.get()?;
        let known_here = lock(&self.registry).get(device_id).is_some();
        Some(cluster.route_register(device_id, known_here))
    }

    /// 302 Moved Temporarily with the platform to register to instead
    /// (GB/T 28181-2022 §9.1.2.3): its id at `target` as Contact.
    async fn redirect_register(&self, tx: &mut Transaction, target: SocketAddr, why: &str) {
        let contact = format!("<sip:{}@{target}>", self.config().sip.server_id);
        metrics::get()
            .registrations
            .get_or_create(&label("outcome", "redirected"))
            .inc();
        info!(%target, why, "REGISTER redirected");
        if let Err(e) = reply_stateless(
            tx,
            StatusCode::MovedTemporarily,
            vec![Header::Contact(contact.into())],
        )
        .await
        {
            warn!("cannot answer REGISTER: {e}");
        }
    }

    /// The configuration in effect now: read it per decision, so a SIGHUP
    /// reload (passwords, allow-list, time limits) applies to the next one.
    pub fn config(&self) -> Arc<Config> {
        self.live.get()
    }

    /// Serve SIP until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        mut incoming: TransactionReceiver,
        cancel: CancellationToken,
    ) {
        let endpoint = self.sip.endpoint.inner.clone();
        let serve = async move { endpoint.serve().await };
        tokio::pin!(serve);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = &mut serve => {
                    warn!("SIP endpoint stopped: {r:?}");
                    break;
                }
                _ = tick.tick() => self.clone().tick(Instant::now()),
                tx = incoming.recv() => {
                    let Some(tx) = tx else { break };
                    let this = self.clone();
                    tokio::spawn(async move { this.handle(tx).await });
                }
            }
        }
    }

    fn tick(self: Arc<Self>, now: Instant) {
        lock(&self.exchanges).expire(now);
        lock(&self.accepted_registers).expire(now);
        lock(&self.answered_requests).expire(now);
        self.maybe_refresh_catalogs(now);
        self.renew_subscriptions(now);
        let events = {
            let mut reg = lock(&self.registry);
            let events = reg.tick(now);
            publish_device_counts(&reg);
            events
        };
        for event in events {
            match event {
                RegistryEvent::Offline(id) => {
                    warn!(device = %id, "device offline: keepalives stopped");
                    self.device_changed(
                        &id,
                        DeviceChange::Gone("offline: keepalives stopped".into()),
                    );
                }
                RegistryEvent::Online(id) => info!(device = %id, "device online"),
                RegistryEvent::Expired(id) => {
                    lock(&self.subscriptions).forget(&id);
                    info!(device = %id, "registration expired");
                    self.device_changed(&id, DeviceChange::Gone("registration expired".into()));
                }
            }
        }
    }

    async fn handle(self: Arc<Self>, mut tx: Transaction) {
        let method = tx.original.method;
        metrics::get()
            .sip_requests
            .get_or_create(&label("method", method_label(&method)))
            .inc();
        let facts = match RequestFacts::from_request(&tx.original) {
            Ok(mut f) => {
                // Over TCP the connection, not the Via, says who is speaking.
                if let Some(peer) = tx
                    .connection
                    .as_ref()
                    .filter(|c| c.is_reliable())
                    .and_then(|c| c.get_remote_addr())
                    .and_then(|a| a.get_socketaddr().ok())
                {
                    f.source = peer;
                }
                f
            }
            Err(e) => {
                metrics::get()
                    .sip_errors
                    .get_or_create(&label("kind", e.kind()))
                    .inc();
                crate::warn_limited!(
                    bad_input_log(),
                    peer_ip(&tx),
                    %method,
                    "bad SIP request: {e}"
                );
                let _ = tx.reply(StatusCode::BadRequest).await;
                return;
            }
        };
        let span = info_span!("sip", device = %facts.from_user, peer = %facts.source);
        async {
            match method {
                Method::Register => self.on_register(&mut tx, &facts).await,
                Method::Message => self.on_message(&mut tx, &facts).await,
                Method::Notify
                    if !has_to_tag(&tx) || self.sip.dialogs.match_dialog(&tx).is_none() =>
                {
                    self.on_notify(&mut tx, &facts).await
                }
                Method::Options => {
                    let _ = tx.reply(StatusCode::OK).await;
                }
                // A 2xx ACK belongs to a dialog we answered (talk callback).
                Method::Ack => self.ack(tx).await,
                // An INVITE outside a dialog is a device calling back for
                // voice broadcast (§9.12).
                Method::Invite if !has_to_tag(&tx) => {
                    super::talk::on_talk_invite(&*self, tx, &facts).await
                }
                _ => self.in_dialog(tx).await,
            }
        }
        .instrument(span)
        .await
    }

    async fn ack(&self, mut tx: Transaction) {
        if let Some(rsipstack::dialog::dialog::Dialog::Invite(mut dialog)) =
            self.sip.dialogs.match_dialog(&tx)
            && let Err(e) = dialog.handle(&mut tx).await
        {
            debug!("ACK not taken: {e}");
        }
    }

    /// Requests inside an INVITE dialog we started (a device's BYE).
    async fn in_dialog(&self, mut tx: Transaction) {
        match self.sip.dialogs.match_dialog(&tx) {
            Some(rsipstack::dialog::dialog::Dialog::Invite(mut dialog)) => {
                if let Err(e) = dialog.handle(&mut tx).await {
                    debug!("in-dialog request failed: {e}");
                }
            }
            Some(_) => {
                let _ = tx.reply(StatusCode::MethodNotAllowed).await;
            }
            None => {
                let (code, kind) = if tx.original.method == Method::Bye {
                    (StatusCode::CallTransactionDoesNotExist, "no_dialog")
                } else {
                    (StatusCode::MethodNotAllowed, "method_not_allowed")
                };
                metrics::get()
                    .sip_errors
                    .get_or_create(&label("kind", kind))
                    .inc();
                let _ = tx.reply(code).await;
            }
        }
    }

    async fn on_register(self: &Arc<Self>, tx: &mut Transaction, facts: &RequestFacts) {
        let device_id = facts.from_user.clone();
        let authorization = header_value(&tx.original, "Authorization");
        let attempt = RegisterAttempt {
            device_id: &device_id,
            source: facts.source,
            reliable: facts.transport != Transport::Udp,
            authorization: authorization.as_deref(),
            expires: register_expires(&tx.original),
        };
        let now = Instant::now();
        let config = self.config();
        if let Some(target) = config.gb.redirect.get(&device_id) {
            // GB/T 28181-2022 §9.1.2.4: send the device to another platform.
            self.redirect_register(tx, *target, "gb.redirect").await;
            return;
        }
        // A cluster places the device on its owner; an un-REGISTER is for
        // whichever node holds the registration, so it stays here.
        if attempt.expires != Some(0) {
            use crate::cluster::view::RegisterRoute;
            match self.cluster_route(&device_id) {
                Some(RegisterRoute::Redirect { node, sip }) => {
                    debug!(owner = %node, "device belongs to another node");
                    self.redirect_register(tx, sip, "cluster").await;
                    return;
                }
                Some(RegisterRoute::Refuse) => {
                    metrics::get()
                        .registrations
                        .get_or_create(&label("outcome", "unavailable"))
                        .inc();
                    if let Err(e) =
                        reply_stateless(tx, StatusCode::ServiceUnavailable, Vec::new()).await
                    {
                        warn!("cannot answer REGISTER: {e}");
                    }
                    return;
                }
                Some(RegisterRoute::Local) | None => {}
            }
        }
        let cseq = {
            use rsipstack::sip::HeadersExt as _;
            tx.original
                .cseq_header()
                .ok()
                .and_then(|c| c.seq().ok())
                .unwrap_or(0)
        };
        let repeated = lock(&self.accepted_registers).repeat_of(
            &device_id,
            &facts.call_id,
            cseq,
            facts.source,
            now,
        );
        if let Some(expires) = repeated {
            // Its 200 was lost: the same answer again, nothing re-done.
            debug!(cseq, "REGISTER retransmitted: 200 again");
            let result = reply_stateless(tx, StatusCode::OK, registered_headers(expires)).await;
            if let Err(e) = result {
                warn!("cannot answer REGISTER: {e}");
            }
            return;
        }
        let decision = if config.device_allowed(&device_id) {
            let credentials = config.password_for(&device_id).map(|password| Credentials {
                password,
                username: config
                    .sip
                    .device_usernames
                    .get(&device_id)
                    .map(String::as_str),
            });
            lock(&self.registrar).decide(&attempt, credentials, now)
        } else {
            RegisterDecision::Forbidden {
                reason: "device not in sip.allowed_devices",
            }
        };
        metrics::get()
            .registrations
            .get_or_create(&label("outcome", decision.outcome()))
            .inc();
        let result = match decision {
            RegisterDecision::Challenge { www_authenticate } => {
                debug!("challenging REGISTER");
                reply_stateless(
                    tx,
                    StatusCode::Unauthorized,
                    www_authenticate
                        .into_iter()
                        .map(|v| Header::WwwAuthenticate(v.into()))
                        .collect(),
                )
                .await
            }
            RegisterDecision::Forbidden { reason } => {
                count_refused_register();
                crate::warn_limited!(
                    bad_input_log(),
                    facts.source.ip(),
                    reason,
                    "REGISTER refused"
                );
                reply_stateless(tx, StatusCode::Forbidden, Vec::new()).await
            }
            RegisterDecision::Throttled => {
                metrics::get()
                    .sip_rejected
                    .get_or_create(&label("reason", "throttled"))
                    .inc();
                crate::warn_limited!(
                    self.sender_log,
                    facts.source.ip(),
                    "REGISTER refused: too many failed digests from this address or for this device"
                );
                reply_stateless(tx, StatusCode::Forbidden, Vec::new()).await
            }
            RegisterDecision::BadRequest { reason } => {
                count_refused_register();
                crate::warn_limited!(bad_input_log(), facts.source.ip(), %reason, "REGISTER refused");
                reply_stateless(tx, StatusCode::BadRequest, Vec::new()).await
            }
            RegisterDecision::Unregister => {
                lock(&self.subscriptions).forget(&device_id);
                let known = {
                    let mut registry = lock(&self.registry);
                    let known = registry.unregister(&device_id);
                    publish_device_counts(&registry);
                    known
                };
                info!(known, "device unregistered");
                self.device_changed(&device_id, DeviceChange::Gone("unregistered".into()));
                // Keeps its transaction (rare, unlike acceptances): the
                // nonce was single-use, so a retransmission answered afresh
                // would get a 401 instead of this 200.
                tx.reply_with(StatusCode::OK, vec![Header::Expires(0.into())], None)
                    .await
            }
            RegisterDecision::Accept { expires } => {
                let transport = match facts.transport {
                    Transport::Tcp => SipTransport::Tcp,
                    _ => SipTransport::Udp,
                };
                let (outcome, restarted) = {
                    let mut registry = lock(&self.registry);
                    let outcome =
                        registry.register(&device_id, transport, facts.source, expires, now);
                    let restarted = registry.note_register_call_id(&device_id, &facts.call_id);
                    publish_device_counts(&registry);
                    (outcome, restarted)
                };
                // Answered statelessly: a retransmission is recognised by
                // `accepted_registers` rather than a stored transaction.
                lock(&self.accepted_registers).note(
                    &device_id,
                    &facts.call_id,
                    cseq,
                    facts.source,
                    expires,
                    now,
                );
                let reply = reply_stateless(tx, StatusCode::OK, registered_headers(expires)).await;
                info!(?outcome, expires = expires.as_secs(), "device registered");
                // After the 200 OK: the device should know it is registered
                // before its streams call it again.
                if restarted {
                    warn!(call_id = %facts.call_id, "device restarted (new REGISTER Call-ID): calling its streams again");
                    self.device_changed(&device_id, DeviceChange::Restarted);
                }
                self.spawn_initial_queries(device_id.clone());
                reply
            }
        };
        if let Err(e) = result {
            warn!("cannot answer REGISTER: {e}");
        }
    }

    /// After (re-)registration, learn what the device is and what channels
    /// it has (§9.5). Done in the background: the 200 OK must not wait.
    /// The device joins a queue served by at most [`FIRST_QUERIES_AT_ONCE`]
    /// lanes: a task per device would hold every device's query futures
    /// (~6 KB each) at once during a storm, which was most of its heap.
    fn spawn_initial_queries(self: &Arc<Self>, device_id: String) {
        lock(&self.first_query_queue).push_back((device_id, 0));
        self.start_first_query_lanes();
    }

    /// A device that left its DeviceInfo unanswered queues again after a
    /// backoff (2 s doubling to 60 s) while it stays online, instead of
    /// holding its lane through a subscription and a catalog query that
    /// would time out too: 64 such devices would otherwise stall every
    /// new device behind them for their whole round.
    fn queue_first_queries_later(self: &Arc<Self>, device_id: String, unanswered: u32) {
        let delay = query_retry_delay(unanswered);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let online = lock(&this.registry)
                .get(&device_id)
                .is_some_and(|d| d.online());
            if online {
                lock(&this.first_query_queue).push_back((device_id, unanswered));
                this.start_first_query_lanes();
            }
        });
    }

    /// Start a lane for each queued device while lanes are free. Called
    /// after every enqueue and every lane's end, so no device waits while
    /// a lane is free.
    fn start_first_query_lanes(self: &Arc<Self>) {
        while let Ok(lane) = self.first_queries.clone().try_acquire_owned() {
            let Some(first) = lock(&self.first_query_queue).pop_front() else {
                return;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let mut next = Some(first);
                while let Some((device_id, unanswered)) = next {
                    this.first_queries_of(&device_id, unanswered).await;
                    next = lock(&this.first_query_queue).pop_front();
                }
                drop(lane);
                this.start_first_query_lanes();
            });
        }
    }

    /// DeviceInfo, the alarm subscription and a first catalog query; a
    /// catalog still incomplete is asked again later, off the lane, and a
    /// device silent to DeviceInfo has its round again later.
    async fn first_queries_of(self: &Arc<Self>, device_id: &str, unanswered: u32) {
        let Some(route) = self.route_to_device(device_id) else {
            return;
        };
        let realm = self.config().sip.realm.clone();
        let kind = QueryKind::DeviceInfo;
        let body = manscdp::encode_body(&manscdp::query_xml(kind, self.next_sn(), device_id));
        let out = Outgoing {
            method: Method::Message,
            request_uri: format!("sip:{device_id}@{realm}"),
            from_uri: self.our_uri(),
            to_uri: format!("sip:{device_id}@{realm}"),
            content_type: Some("Application/MANSCDP+xml"),
            body,
            dest: route.addr,
            transport: route.transport,
            extra_headers: Vec::new(),
        };
        match client::send(&self.sip, out, MESSAGE_TIMEOUT).await {
            Ok(code) if code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
                debug!(device = %device_id, ?kind, "query accepted")
            }
            Ok(code) => warn!(device = %device_id, ?kind, %code, "query refused"),
            Err(e) => {
                let unanswered = unanswered + 1;
                metrics::get()
                    .gb_queries
                    .get_or_create(&label("outcome", "timeout"))
                    .inc();
                crate::warn_limited!(
                    self.sender_log,
                    route.addr.ip(),
                    device = %device_id,
                    unanswered,
                    retry_in = ?query_retry_delay(unanswered),
                    "device did not answer its first query: {e}"
                );
                self.queue_first_queries_later(device_id.to_owned(), unanswered);
                return;
            }
        }
        if self.config().gb.subscribe_alarms {
            let _ = self.subscribe_alarms(device_id).await;
        }
        if self.catalog_attempt(device_id, query_retry_delay(1)).await {
            self.after_catalog(device_id).await;
        } else {
            tokio::spawn(self.clone().catalog_retries(device_id.to_owned()));
        }
    }

    /// One catalog query (§9.5.2). The catalog may come in several
    /// MESSAGEs; pages update the registry as they arrive, and a complete
    /// answer replaces the channel list so channels the device dropped go
    /// too. False when the answer was incomplete or missing.
    async fn catalog_attempt(&self, id: &str, retry_in: Duration) -> bool {
        match self.query_catalog(id).await {
            Ok(done) if !done.partial => {
                info!(device = %id, channels = done.items.len(), "catalog complete");
                let channels = done.items.iter().map(Channel::from).collect();
                lock(&self.registry).set_channels(id, channels);
                true
            }
            Ok(done) => {
                warn!(
                    device = %id,
                    received = done.items.len(),
                    sum_num = done.sum_num,
                    retry_in = ?retry_in,
                    "catalog incomplete at the deadline"
                );
                false
            }
            Err(e) => {
                warn!(device = %id, retry_in = ?retry_in, "catalog query failed: {e}");
                false
            }
        }
    }

    /// A lost answer (a burst of registrations overflows any socket
    /// buffer) must not leave the device without channels: ask again with
    /// backoff until the list is complete or the device is gone, each try
    /// in a lane.
    async fn catalog_retries(self: Arc<Self>, id: String) {
        for attempt in 1.. {
            tokio::time::sleep(query_retry_delay(attempt)).await;
            let online = lock(&self.registry).get(&id).is_some_and(|d| d.online());
            if !online {
                return;
            }
            let complete = {
                let Ok(_lane) = self.first_queries.acquire().await else {
                    return;
                };
                self.catalog_attempt(&id, query_retry_delay(attempt + 1))
                    .await
            };
            if complete {
                self.after_catalog(&id).await;
                return;
            }
        }
    }

    /// After the full list: changes then apply on top of it.
    async fn after_catalog(&self, id: &str) {
        if self.config().gb.subscribe_catalog {
            let _ = self.subscribe_catalog(id).await;
        }
    }

    /// Whether `facts` may speak for registered device `device`: `Ok`, or
    /// the `camgate_sip_rejected_total` reason to refuse it with (403).
    /// Only the transport address (and for TCP, the connection) of the
    /// device's last authenticated REGISTER may.
    pub(crate) fn sender_verdict(
        &self,
        device: &str,
        facts: &RequestFacts,
    ) -> Result<(), &'static str> {
        if !self.config().device_allowed(device) {
            return Err("not_allowed");
        }
        let transport = match facts.transport {
            Transport::Udp => SipTransport::Udp,
            _ => SipTransport::Tcp,
        };
        match lock(&self.registry).sender_matches(device, transport, facts.source) {
            None => Err("unregistered"),
            Some(false) => Err("address_mismatch"),
            Some(true) => Ok(()),
        }
    }

    /// Refuse a request from the wrong sender: 403 (real devices register
    /// again on it), counted, and logged once per source per minute.
    pub(crate) async fn refuse_sender(
        &self,
        tx: &mut Transaction,
        facts: &RequestFacts,
        reason: &'static str,
    ) {
        metrics::get()
            .sip_rejected
            .get_or_create(&label("reason", reason))
            .inc();
        crate::warn_limited!(
            self.sender_log,
            facts.source.ip(),
            reason,
            method = %facts.method,
            "request refused: not from the device's registered address"
        );
        let _ = reply_stateless(tx, StatusCode::Forbidden, Vec::new()).await;
    }

    async fn on_message(self: &Arc<Self>, tx: &mut Transaction, facts: &RequestFacts) {
        if let Err(reason) = self.sender_verdict(&facts.from_user, facts) {
            if reason == "unregistered" && self.config().gb.adopt_keepalive {
                // A device that registered before we restarted: the 403
                // makes it register again; until then it is neither online
                // nor sent anything (a spoofed source must not turn us into
                // a reflector).
                metrics::get()
                    .registrations
                    .get_or_create(&label("outcome", "adopt_pending"))
                    .inc();
            }
            self.refuse_sender(tx, facts, reason).await;
            return;
        }
        let msg = match manscdp::decode_body(&facts.body) {
            Ok(m) => m,
            Err(e) => {
                metrics::get()
                    .manscdp_errors
                    .get_or_create(&label("kind", e.kind()))
                    .inc();
                warn!("unreadable MANSCDP body: {e}");
                let _ = tx.reply(StatusCode::BadRequest).await;
                return;
            }
        };
        let now = Instant::now();
        // A keepalive or a DeviceInfo answer applied twice changes nothing:
        // answered statelessly ([`reply_stateless`]). Catalog pages and
        // alarms would count twice: their retransmissions are recognised.
        let repeatable = matches!(
            msg,
            Message::Notify(Notify::Keepalive { .. }) | Message::Response(Response::DeviceInfo(_))
        );
        if repeatable {
            let _ = reply_stateless(tx, StatusCode::OK, Vec::new()).await;
        } else if !self.answer_once(tx, now).await {
            return;
        }
        match msg {
            Message::Notify(Notify::Keepalive { .. }) => {
                metrics::get().keepalives.inc();
                lock(&self.registry).keepalive(&facts.from_user, facts.source, now);
            }
            Message::Response(Response::Catalog(catalog)) => {
                let channels: Vec<Channel> = catalog.items.iter().map(Channel::from).collect();
                info!(
                    channels = channels.len(),
                    sn = catalog.sn,
                    "catalog page received"
                );
                lock(&self.registry).upsert_channels(&facts.from_user, channels);
                lock(&self.exchanges).catalog_page(
                    &facts.from_user,
                    catalog.sn,
                    catalog.sum_num,
                    catalog.items,
                );
            }
            Message::Notify(Notify::Other(h)) if h.cmd_type.eq_ignore_ascii_case("Catalog") => {
                self.on_catalog_notify(&facts.from_user, &facts.body);
            }
            Message::Response(Response::DeviceInfo(info)) => {
                info!(manufacturer = %info.manufacturer.as_deref().unwrap_or(""), "device info received");
                lock(&self.registry).set_info(&facts.from_user, DeviceInfo::from(&info));
            }
            other => self.on_report(facts, &other),
        }
    }

    /// Answer 200 to a request that must be acted on once, keeping no
    /// transaction ([`AnsweredRequests`]). False for a retransmission of
    /// one already acted on: answered again, to be ignored.
    async fn answer_once(&self, tx: &mut Transaction, now: Instant) -> bool {
        let seen = lock(&self.answered_requests).note(&tx.key.to_string(), now);
        match seen {
            Seen::First => {
                let _ = reply_stateless(tx, StatusCode::OK, Vec::new()).await;
                true
            }
            Seen::Repeat => {
                debug!(key = %tx.key, "retransmission answered again");
                let _ = reply_stateless(tx, StatusCode::OK, Vec::new()).await;
                false
            }
            Seen::Full => {
                let _ = tx.reply(StatusCode::OK).await;
                true
            }
        }
    }

    /// A NOTIFY from a device: catalog changes after our catalog
    /// SUBSCRIBE (§9.7.1), or any other MANSCDP notification sent that way.
    async fn on_notify(self: &Arc<Self>, tx: &mut Transaction, facts: &RequestFacts) {
        if let Err(reason) = self.sender_verdict(&facts.from_user, facts) {
            self.refuse_sender(tx, facts, reason).await;
            return;
        }
        let msg = match manscdp::decode_body(&facts.body) {
            Ok(m) => m,
            Err(e) => {
                metrics::get()
                    .manscdp_errors
                    .get_or_create(&label("kind", e.kind()))
                    .inc();
                warn!("unreadable NOTIFY body: {e}");
                let _ = tx.reply(StatusCode::BadRequest).await;
                return;
            }
        };
        if !self.answer_once(tx, Instant::now()).await {
            return;
        }
        match &msg {
            Message::Notify(Notify::Other(h)) if h.cmd_type.eq_ignore_ascii_case("Catalog") => {
                self.on_catalog_notify(&facts.from_user, &facts.body);
            }
            other => self.on_report(facts, other),
        }
    }

    /// Apply a catalog notification's ON/OFF/ADD/DEL/UPDATE items to the
    /// device's channel list.
    fn on_catalog_notify(&self, device: &str, body: &[u8]) {
        use super::catalog_notify;
        let items = match manscdp::decode_tree(body).and_then(|t| catalog_notify::parse(&t)) {
            Ok(items) => items,
            Err(e) => {
                metrics::get()
                    .manscdp_errors
                    .get_or_create(&label("kind", e.kind()))
                    .inc();
                warn!("unreadable catalog notify: {e}");
                return;
            }
        };
        let mut reg = lock(&self.registry);
        let Some(mut channels) = reg.channels(device).map(<[Channel]>::to_vec) else {
            return;
        };
        for (item, event) in &items {
            if catalog_notify::apply(&mut channels, item, *event) {
                metrics::get()
                    .gb_catalog_notifies
                    .get_or_create(&label("event", event.as_str()))
                    .inc();
                info!(channel = %item.device_id, event = event.as_str(), "catalog change");
            }
        }
        reg.set_channels(device, channels);
    }

    /// Everything beyond keepalive, catalog and device info: answers to our
    /// queries, alarms, media status, snapshot completion.
    fn on_report(&self, facts: &RequestFacts, msg: &Message) {
        let report = match manscdp::decode_tree(&facts.body).and_then(|t| reports::classify(&t)) {
            Ok(Some(r)) => r,
            Ok(None) => {
                debug!(cmd = msg.cmd_type(), "MANSCDP message ignored");
                return;
            }
            Err(e) => {
                metrics::get()
                    .manscdp_errors
                    .get_or_create(&label("kind", e.kind()))
                    .inc();
                warn!(cmd = msg.cmd_type(), "unreadable MANSCDP report: {e}");
                return;
            }
        };
        let device = &facts.from_user;
        match &report {
            Report::Alarm(alarm) => {
                info!(priority = ?alarm.priority, method = ?alarm.method, "alarm");
                self.record_event(device, EventKind::Alarm(alarm.clone()));
            }
            Report::MediaStatus {
                device_id,
                notify_type,
            } if notify_type == "121" => {
                info!(channel = %device_id, "end of recorded media");
                self.record_event(
                    device,
                    EventKind::MediaEnd {
                        channel: device_id.clone(),
                    },
                );
            }
            Report::SnapshotFinished {
                session_id, files, ..
            } => {
                let known = self.snapshots.finish(device, session_id, files.clone());
                info!(session = %session_id, known, "snapshot upload finished");
            }
            Report::ConfigDownload(p) => {
                if let Some(window) = p.offline_after() {
                    lock(&self.registry).set_keepalive_timeout(device, window);
                }
            }
            _ => {}
        }
        let _ = self.report_tx.send((device.clone(), report.clone()));
        if !lock(&self.exchanges).deliver(device, report) {
            debug!(cmd = msg.cmd_type(), "report with no waiting query");
        }
    }

    /// Add an event to the ring, the live feed and the webhook.
    /// An event another cluster node recorded (its JSON as that node's
    /// feed shows it): into this node's ring, SSE and webhook, once.
    pub fn record_cluster_event(&self, node: &str, event: serde_json::Value) {
        let device: String = event
            .get("device_id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect();
        self.record_event(
            &device,
            EventKind::Cluster {
                node: node.to_owned(),
                event,
            },
        );
    }

    pub(crate) fn record_event(&self, device: &str, kind: EventKind) {
        let received = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let event = lock(&self.events).push(device, kind, received);
        metrics::get().gb_events.inc();
        let _ = self.event_tx.send(event.clone());
        if !self.config().gb.webhook.is_empty() {
            let url = self.config().gb.webhook.clone();
            tokio::spawn(async move {
                if let Err(e) = super::webhook::post_json(&url, &event).await {
                    metrics::get()
                        .gb_webhook_errors
                        .get_or_create(&label("kind", e.kind()))
                        .inc();
                    warn!(%url, "event webhook failed: {e}");
                }
            });
        }
    }

    /// SUBSCRIBE again before a subscription lapses (§9.7).
    fn renew_subscriptions(self: &Arc<Self>, now: Instant) {
        let due = lock(&self.subscriptions).due(now);
        for (device, kind) in due {
            let this = self.clone();
            tokio::spawn(async move {
                // Outcome logged and counted by the subscribe itself.
                let _ = this.renew_subscription(&device, kind).await;
            });
        }
    }

    fn maybe_refresh_catalogs(self: &Arc<Self>, now: Instant) {
        let every = self.config().gb.catalog_refresh;
        if every.is_zero() {
            return;
        }
        {
            let mut last = lock(&self.last_catalog_refresh);
            match *last {
                Some(t) if now.duration_since(t) < every => return,
                _ => *last = Some(now),
            }
        }
        let ids: Vec<String> = lock(&self.registry)
            .list(now, SystemTime::now())
            .into_iter()
            .filter(|d| d.online)
            .map(|d| d.id)
            .collect();
        for id in ids {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.query_catalog(&id).await {
                    debug!(device = %id, "catalog refresh failed: {e}");
                }
            });
        }
    }

    /// Send a MANSCDP document to a device and wait for its 200.
    pub(crate) async fn send_manscdp(&self, device: &str, xml: &str) -> Result<(), QueryError> {
        self.send_to_device(device, Method::Message, "Application/MANSCDP+xml", xml, &[])
            .await
    }

    /// Send an out-of-dialog request with a MANSCDP body.
    pub(crate) async fn send_to_device(
        &self,
        device: &str,
        method: Method,
        content_type: &'static str,
        xml: &str,
        extra: &[(&'static str, String)],
    ) -> Result<(), QueryError> {
        if !self.config().device_allowed(device) {
            return Err(QueryError::UnknownDevice(device.to_owned()));
        }
        let route = {
            let reg = lock(&self.registry);
            let dev = reg
                .get(device)
                .ok_or_else(|| QueryError::UnknownDevice(device.to_owned()))?;
            if !dev.online() {
                return Err(QueryError::Offline(device.to_owned()));
            }
            DeviceRoute {
                device_id: device.to_owned(),
                addr: dev.addr(),
                transport: match dev.transport() {
                    SipTransport::Tcp => Transport::Tcp,
                    SipTransport::Udp => Transport::Udp,
                },
            }
        };
        let realm = &self.config().sip.realm;
        let out = Outgoing {
            method,
            request_uri: format!("sip:{device}@{realm}"),
            from_uri: self.our_uri(),
            to_uri: format!("sip:{device}@{realm}"),
            content_type: Some(content_type),
            body: manscdp::encode_body(xml),
            dest: route.addr,
            transport: route.transport,
            extra_headers: extra.to_vec(),
        };
        match client::send(&self.sip, out, MESSAGE_TIMEOUT).await {
            Ok(code) if code.kind() == rsipstack::sip::StatusCodeKind::Successful => Ok(()),
            Ok(code) => Err(QueryError::Refused(code.code())),
            Err(client::ClientError::Timeout(t)) => Err(QueryError::Timeout(t)),
            Err(e) => Err(QueryError::Send(e.to_string())),
        }
    }

    /// `sip:{server_id}@{realm}`
    pub fn our_uri(&self) -> String {
        let config = self.config();
        format!("sip:{}@{}", config.sip.server_id, config.sip.realm)
    }

    pub fn next_sn(&self) -> u32 {
        self.sn.fetch_add(1, Ordering::Relaxed)
    }

    fn route_to_device(&self, device_id: &str) -> Option<DeviceRoute> {
        let reg = lock(&self.registry);
        let dev = reg.get(device_id)?;
        Some(DeviceRoute {
            device_id: device_id.to_owned(),
            addr: dev.addr(),
            transport: match dev.transport() {
                SipTransport::Tcp => Transport::Tcp,
                SipTransport::Udp => Transport::Udp,
            },
        })
    }

    /// Where to INVITE `channel` of `device`, or why not.
    pub fn route_for_channel(
        &self,
        device: &str,
        channel: &str,
    ) -> Result<DeviceRoute, StartError> {
        // A device taken off sip.allowed_devices (SIGHUP) is not streamed
        // from, though its registration has yet to lapse.
        if !self.config().device_allowed(device) {
            return Err(StartError::NotFound(format!(
                "device {device} is not in sip.allowed_devices"
            )));
        }
        let reg = lock(&self.registry);
        let Some(dev) = reg.get(device) else {
            return Err(StartError::NotFound(format!(
                "device {device} is not registered"
            )));
        };
        if !dev.online() {
            return Err(StartError::Offline(device.to_owned()));
        }
        // A channel the catalog has not listed (yet: a lost or partial
        // Catalog answer, issue 17) is INVITEd anyway; GB/T 28181 addresses
        // the INVITE to the channel id, and the device's 404 is the answer
        // that counts. Only ids that cannot be a GB28181 id are refused here.
        let listed = channel == device
            || reg
                .channels(device)
                .is_some_and(|cs| cs.iter().any(|c| c.id == channel));
        if !listed {
            if channel.len() != 20 || !channel.bytes().all(|b| b.is_ascii_digit()) {
                return Err(StartError::NotFound(format!(
                    "device {device} has no channel {channel}"
                )));
            }
            debug!(device, channel, "channel not in the catalog; INVITE anyway");
        }
        Ok(DeviceRoute {
            device_id: device.to_owned(),
            addr: dev.addr(),
            transport: match dev.transport() {
                SipTransport::Tcp => Transport::Tcp,
                SipTransport::Udp => Transport::Udp,
            },
        })
    }

    pub fn allocate_ssrc(&self, kind: SsrcKind) -> Result<Ssrc, StartError> {
        lock(&self.ssrcs)
            .allocate(kind)
            .map_err(|e| StartError::Failed(format!("no SSRC: {e}")))
    }

    pub fn release_ssrc(&self, ssrc: Ssrc) {
        lock(&self.ssrcs).release(ssrc);
    }

    pub fn devices(&self) -> Vec<DeviceSummary> {
        lock(&self.registry).list(Instant::now(), SystemTime::now())
    }

    pub fn device(&self, id: &str) -> Option<DeviceSummary> {
        self.devices().into_iter().find(|d| d.id == id)
    }

    pub(crate) fn forget_device(&self, id: &str) -> bool {
        lock(&self.subscriptions).forget(id);
        let known = lock(&self.registry).unregister(id);
        self.device_changed(id, DeviceChange::Gone("removed".into()));
        known
    }

    fn device_changed(&self, id: &str, change: DeviceChange) {
        // An error only means no media session is listening.
        let _ = self.device_tx.send((id.to_owned(), change));
    }

    /// Resolves at the next [`DeviceChange`] of `device` (subscribed now,
    /// so nothing after this call is missed).
    pub(crate) fn device_change(
        &self,
        device: &str,
    ) -> impl std::future::Future<Output = DeviceChange> + Send + 'static {
        use tokio::sync::broadcast::error::RecvError;
        let mut rx = self.device_tx.subscribe();
        let device = device.to_owned();
        async move {
            loop {
                match rx.recv().await {
                    Ok((id, change)) if id == device => return change,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        }
    }

    pub fn channels(&self, id: &str) -> Option<Vec<Channel>> {
        lock(&self.registry).channels(id).map(<[Channel]>::to_vec)
    }
}

/// GB28181 devices set their clock from the `Date` of the 200 to REGISTER,
/// in the form `2026-11-21T09:00:00.000` (local time; we give UTC, as the
/// process has no time zone database).
/// The headers of a 200 to a REGISTER: the lifetime granted, and the
/// time, which GB28181 devices set their clocks from (§9.10).
fn registered_headers(expires: Duration) -> Vec<Header> {
    vec![
        Header::Expires((expires.as_secs() as u32).into()),
        Header::Date(gb_date(SystemTime::now()).into()),
    ]
}

fn gb_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let millis = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = super::gbtime::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Talk (voice broadcast) works through this narrow handle, so talk.rs
/// does not name the platform (issue 15).
impl TalkHost for GbPlatform {
    fn talk_sessions(&self) -> &TalkSessions {
        &self.talks
    }

    fn config(&self) -> Arc<Config> {
        GbPlatform::config(self)
    }

    fn next_sn(&self) -> u32 {
        GbPlatform::next_sn(self)
    }

    fn sip(&self) -> &SipStack {
        &self.sip
    }

    fn ports(&self) -> &PortPool {
        &self.ports
    }

    fn send_manscdp<'a>(
        &'a self,
        device: &'a str,
        xml: &'a str,
    ) -> HostFuture<'a, Result<(), QueryError>> {
        Box::pin(GbPlatform::send_manscdp(self, device, xml))
    }

    fn device_change(&self, device: &str) -> HostFuture<'static, String> {
        let change = GbPlatform::device_change(self, device);
        Box::pin(async move { format!("{:?}", change.await) })
    }

    fn sender_verdict(&self, device: &str, facts: &RequestFacts) -> Result<(), &'static str> {
        GbPlatform::sender_verdict(self, device, facts)
    }

    fn refuse_sender<'a>(
        &'a self,
        tx: &'a mut Transaction,
        facts: &'a RequestFacts,
        reason: &'static str,
    ) -> HostFuture<'a, ()> {
        Box::pin(GbPlatform::refuse_sender(self, tx, facts, reason))
    }
}

/// Voice broadcast (GB/T 28181-2016 §9.12, see [`super::talk`]).
impl GbPlatform {
    /// Ask `channel` to call back, then play `alaw` to it. Returns once the
    /// device accepted; the audio goes on in the background.
    pub async fn talk(
        &self,
        device: &str,
        channel: &str,
        alaw: Vec<u8>,
    ) -> Result<TalkStarted, TalkError> {
        super::talk::talk(self, device, channel, alaw).await
    }

    /// [`talk`](Self::talk) from any [`TalkFeed`], e.g. live audio.
    pub async fn talk_feed(
        &self,
        device: &str,
        channel: &str,
        feed: TalkFeed,
    ) -> Result<TalkStarted, TalkError> {
        super::talk::talk_feed(self, device, channel, feed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gb_date_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(gb_date(t), "2026-11-18T11:06:40.123");
        assert_eq!(gb_date(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000");
    }

    #[test]
    fn a_device_is_asked_again_after_2_s_doubling_to_a_minute() {
        let secs = |n| query_retry_delay(n).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(5)], [2, 4, 8, 32]);
        assert_eq!(secs(6), 60);
        assert_eq!(secs(u32::MAX), 60);
    }
}
