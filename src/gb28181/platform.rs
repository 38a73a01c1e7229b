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

use super::manscdp::{self, Message, Notify, QueryKind, Response};
use super::registrar::{RegisterAttempt, RegisterDecision, Registrar};
use super::registry::{Channel, DeviceInfo, DeviceSummary, Registry, RegistryEvent, SipTransport};
use super::ssrc::{Ssrc, SsrcAllocator, SsrcKind};
use crate::config::Config;
use crate::ingest::port_pool::PortPool;
use crate::metrics::{self, label};
use crate::sip::client::{self, Outgoing};
use crate::sip::request::{RequestFacts, header_value, register_expires};
use crate::sip::stack::SipStack;
use crate::streams::StartError;

/// How long a query MESSAGE may take to be acknowledged.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to send a device's requests.
#[derive(Debug, Clone)]
pub struct DeviceRoute {
    pub device_id: String,
    pub addr: SocketAddr,
    pub transport: Transport,
}

pub struct GbPlatform {
    pub config: Arc<Config>,
    pub sip: SipStack,
    pub ports: PortPool,
    registrar: Mutex<Registrar>,
    registry: Mutex<Registry>,
    ssrcs: Mutex<SsrcAllocator>,
    sn: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    pub fn new(config: Arc<Config>, sip: SipStack, ports: PortPool) -> Arc<Self> {
        let ssrcs = SsrcAllocator::new(&config.sip.realm)
            .unwrap_or_else(|_| SsrcAllocator::new("3402000000").expect("valid default realm"));
        Arc::new(Self {
            registrar: Mutex::new(Registrar::new(&config.sip.realm, config.sip.max_expires)),
            registry: Mutex::new(Registry::new(config.sip.keepalive_timeout)),
            ssrcs: Mutex::new(ssrcs),
            sn: AtomicU32::new(1),
            config,
            sip,
            ports,
        })
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
                _ = tick.tick() => self.tick(Instant::now()),
                tx = incoming.recv() => {
                    let Some(tx) = tx else { break };
                    let this = self.clone();
                    tokio::spawn(async move { this.handle(tx).await });
                }
            }
        }
    }

    fn tick(&self, now: Instant) {
        let (events, registered, online) = {
            let mut reg = lock(&self.registry);
            let events = reg.tick(now);
            (events, reg.registered_count(), reg.online_count())
        };
        for event in events {
            match event {
                RegistryEvent::Offline(id) => {
                    warn!(device = %id, "device offline: keepalives stopped")
                }
                RegistryEvent::Online(id) => info!(device = %id, "device online"),
                RegistryEvent::Expired(id) => info!(device = %id, "registration expired"),
            }
        }
        metrics::get().devices_registered.set(registered as i64);
        metrics::get().devices_online.set(online as i64);
    }

    async fn handle(self: Arc<Self>, mut tx: Transaction) {
        let method = tx.original.method;
        metrics::get()
            .sip_requests
            .get_or_create(&label("method", method_label(&method)))
            .inc();
        let facts = match RequestFacts::from_request(&tx.original) {
            Ok(f) => f,
            Err(e) => {
                metrics::get()
                    .sip_errors
                    .get_or_create(&label("kind", e.kind()))
                    .inc();
                warn!(%method, "bad SIP request: {e}");
                let _ = tx.reply(StatusCode::BadRequest).await;
                return;
            }
        };
        let span = info_span!("sip", device = %facts.from_user, peer = %facts.source);
        async {
            match method {
                Method::Register => self.on_register(&mut tx, &facts).await,
                Method::Message => self.on_message(&mut tx, &facts).await,
                Method::Options => {
                    let _ = tx.reply(StatusCode::OK).await;
                }
                Method::Ack => {}
                _ => self.in_dialog(tx).await,
            }
        }
        .instrument(span)
        .await
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
                let code = if tx.original.method == Method::Bye {
                    StatusCode::CallTransactionDoesNotExist
                } else {
                    StatusCode::MethodNotAllowed
                };
                let _ = tx.reply(code).await;
            }
        }
    }

    async fn on_register(self: &Arc<Self>, tx: &mut Transaction, facts: &RequestFacts) {
        let device_id = facts.from_user.clone();
        let authorization = header_value(&tx.original, "Authorization");
        let attempt = RegisterAttempt {
            authorization: authorization.as_deref(),
            expires: register_expires(&tx.original),
        };
        let now = Instant::now();
        let decision =
            lock(&self.registrar).decide(&attempt, self.config.password_for(&device_id), now);
        metrics::get()
            .registrations
            .get_or_create(&label("outcome", decision.outcome()))
            .inc();
        let result = match decision {
            RegisterDecision::Challenge { www_authenticate } => {
                debug!("challenging REGISTER");
                tx.reply_with(
                    StatusCode::Unauthorized,
                    vec![Header::WwwAuthenticate(www_authenticate.into())],
                    None,
                )
                .await
            }
            RegisterDecision::Forbidden { reason } => {
                warn!(reason, "REGISTER refused");
                tx.reply(StatusCode::Forbidden).await
            }
            RegisterDecision::BadRequest { reason } => {
                warn!(%reason, "REGISTER refused");
                tx.reply(StatusCode::BadRequest).await
            }
            RegisterDecision::Unregister => {
                let known = lock(&self.registry).unregister(&device_id);
                info!(known, "device unregistered");
                tx.reply_with(StatusCode::OK, vec![Header::Expires(0.into())], None)
                    .await
            }
            RegisterDecision::Accept { expires } => {
                let transport = match facts.transport {
                    Transport::Tcp => SipTransport::Tcp,
                    _ => SipTransport::Udp,
                };
                let outcome = lock(&self.registry).register(
                    &device_id,
                    transport,
                    facts.source,
                    expires,
                    now,
                );
                let reply = tx
                    .reply_with(
                        StatusCode::OK,
                        vec![
                            Header::Expires((expires.as_secs() as u32).into()),
                            Header::Date(gb_date(SystemTime::now()).into()),
                        ],
                        None,
                    )
                    .await;
                info!(?outcome, expires = expires.as_secs(), "device registered");
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
    fn spawn_initial_queries(self: &Arc<Self>, device_id: String) {
        let Some(route) = self.route_to_device(&device_id) else {
            return;
        };
        let from = self.our_uri();
        let realm = self.config.sip.realm.clone();
        let sn = [self.next_sn(), self.next_sn()];
        let this = self.clone();
        tokio::spawn(async move {
            for (kind, sn) in [(QueryKind::DeviceInfo, sn[0]), (QueryKind::Catalog, sn[1])] {
                let body = manscdp::encode_body(&manscdp::query_xml(kind, sn, &route.device_id));
                let out = Outgoing {
                    method: Method::Message,
                    request_uri: format!("sip:{}@{}", route.device_id, realm),
                    from_uri: from.clone(),
                    to_uri: format!("sip:{}@{}", route.device_id, realm),
                    content_type: Some("Application/MANSCDP+xml"),
                    body,
                    dest: route.addr,
                    transport: route.transport,
                };
                match client::send(&this.sip, out, MESSAGE_TIMEOUT).await {
                    Ok(code) if code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
                        debug!(device = %route.device_id, ?kind, "query accepted")
                    }
                    Ok(code) => {
                        warn!(device = %route.device_id, ?kind, %code, "query refused")
                    }
                    Err(e) => warn!(device = %route.device_id, ?kind, "query failed: {e}"),
                }
            }
        });
    }

    async fn on_message(&self, tx: &mut Transaction, facts: &RequestFacts) {
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
        let known = lock(&self.registry).get(&facts.from_user).is_some();
        if !known {
            // Answering 200 to an unknown device would let it believe it is
            // registered; 403 makes real devices register again.
            warn!("MESSAGE from an unregistered device");
            let _ = tx.reply(StatusCode::Forbidden).await;
            return;
        }
        let _ = tx.reply(StatusCode::OK).await;
        match msg {
            Message::Notify(Notify::Keepalive { .. }) => {
                metrics::get().keepalives.inc();
                lock(&self.registry).keepalive(&facts.from_user, facts.source, now);
            }
            Message::Response(Response::Catalog(catalog)) => {
                let channels: Vec<Channel> = catalog.items.iter().map(Channel::from).collect();
                info!(channels = channels.len(), "catalog received");
                lock(&self.registry).upsert_channels(&facts.from_user, channels);
            }
            Message::Response(Response::DeviceInfo(info)) => {
                info!(manufacturer = %info.manufacturer.as_deref().unwrap_or(""), "device info received");
                lock(&self.registry).set_info(&facts.from_user, DeviceInfo::from(&info));
            }
            other => debug!(?other, "MANSCDP message ignored"),
        }
    }

    /// `sip:{server_id}@{realm}`
    pub fn our_uri(&self) -> String {
        format!(
            "sip:{}@{}",
            self.config.sip.server_id, self.config.sip.realm
        )
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
        let reg = lock(&self.registry);
        let Some(dev) = reg.get(device) else {
            return Err(StartError::NotFound(format!(
                "device {device} is not registered"
            )));
        };
        if !dev.online() {
            return Err(StartError::Offline(device.to_owned()));
        }
        // A device with no catalog yet may still be asked for its own id.
        let has_channel = channel == device
            || reg
                .channels(device)
                .is_some_and(|cs| cs.iter().any(|c| c.id == channel));
        if !has_channel {
            return Err(StartError::NotFound(format!(
                "device {device} has no channel {channel}"
            )));
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

    pub fn channels(&self, id: &str) -> Option<Vec<Channel>> {
        lock(&self.registry).channels(id).map(<[Channel]>::to_vec)
    }
}

/// GB28181 devices set their clock from the `Date` of the 200 to REGISTER,
/// in the form `2026-11-21T09:00:00.000` (local time; we give UTC, as the
/// process has no time zone database).
fn gb_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let millis = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's civil-from-days algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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
}
