//! The tokio side of [`super::alarms`] for one upstream: the alarm feed
//! read into the outbox, the outbox sent once registered (a MESSAGE each,
//! GB/T 28181-2016 §9.4 — or, to an upper platform that subscribed to
//! alarms, a NOTIFY in each alarm subscription's dialog instead, §9.7, so
//! it does not record every alarm twice), and the upper platform's alarm
//! SUBSCRIBEs answered.
//!
//! Called from the upstream's task in [`super::driver`], which owns the
//! link; nothing here waits on the network beyond a send.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tracing::info;

use super::alarms::{self, AlarmOutbox, AlarmSubscription, AlarmSubscriptions};
use super::answers::ExposedChannel;
use super::driver::Upstream;
use super::link::Link;
use super::wire;
use crate::log_limit::LogGate;
use crate::metrics::{self, label};
use crate::streams::alarms::ChannelAlarm;
use crate::warn_limited;

/// Lifetime of an alarm subscription whose SUBSCRIBE named none.
const DEFAULT_EXPIRES: Duration = Duration::from_secs(3600);

/// Where and as whom one upstream's alarms go.
pub struct AlarmLink<'a> {
    pub name: &'a str,
    pub link: &'a Link,
    /// The upper platform's SIP server (after redirects).
    pub target: SocketAddr,
    pub local: SocketAddr,
    pub server_id: &'a str,
    pub realm: &'a str,
    pub platform_id: &'a str,
    pub log: &'a LogGate,
}

impl<'a> AlarmLink<'a> {
    pub(super) fn of(up: &'a Upstream) -> Self {
        Self {
            name: &up.name,
            link: &up.link,
            target: up.target,
            local: up.local,
            server_id: &up.up.server_id,
            realm: &up.up.realm,
            platform_id: &up.up.platform_id,
            log: &up.bad_input,
        }
    }
}

fn count(outcome: &'static str, n: u64) {
    metrics::get()
        .cascade_alarms
        .get_or_create(&label("outcome", outcome))
        .inc_by(n);
}

/// The next alarm of the feed: `Ok`, or `Err(n)` when `n` were missed
/// (the feed outran us). Never resolves once the feed is closed, so a
/// `select!` branch on it simply goes quiet.
pub async fn next(rx: &mut broadcast::Receiver<ChannelAlarm>) -> Result<ChannelAlarm, u64> {
    match rx.recv().await {
        Ok(a) => Ok(a),
        Err(broadcast::error::RecvError::Lagged(n)) => Err(n),
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

/// Queue what [`next`] gave, counting what is lost.
pub fn queue(link: &AlarmLink<'_>, outbox: &mut AlarmOutbox, got: Result<ChannelAlarm, u64>) {
    let lost = match got {
        Ok(alarm) => u64::from(outbox.push(alarm)),
        Err(missed) => missed,
    };
    if lost > 0 {
        count("dropped", lost);
        warn_limited!(link.log, link.target.ip(), upstream = %link.name, lost, "cascade: alarms dropped (queue full or feed lagged)");
    }
}

/// Send every queued alarm of a camera `channels` shows: a NOTIFY in each
/// live alarm subscription whose conditions admit it, or, when the upper
/// platform holds no alarm subscription, a MESSAGE (§9.4). Both at once
/// would have an upper that subscribes (camgate itself does, by default)
/// record every alarm twice.
pub async fn flush(
    link: &AlarmLink<'_>,
    outbox: &mut AlarmOutbox,
    channels: &[ExposedChannel],
    subscriptions: &Mutex<AlarmSubscriptions>,
) {
    let now = Instant::now();
    let mut outgoing: Vec<(Vec<u8>, SocketAddr, &'static str)> = Vec::new();
    for (i, alarm) in outbox.take().into_iter().enumerate() {
        let Some(device_id) = alarms::channel_for(&alarm, channels, link.platform_id) else {
            count("not_exposed", 1);
            continue;
        };
        // Random, not the clock: two alarms flushed in one second (one
        // camera's, then another's) would otherwise share a branch and a
        // Call-ID, and the upper would take the second for a
        // retransmission of the first and drop it.
        let seed: u64 = rand::random();
        let sn = (seed % 1_000_000) as u32;
        let body = alarms::notify_body(sn, &device_id, &alarm);
        let uri = format!("sip:{}@{}", link.server_id, link.realm);
        let domain = link.platform_id.get(..10).unwrap_or_default();
        let ours = format!("sip:{}@{domain}", link.platform_id);
        let mut subs = lock(subscriptions);
        let active = subs.active(now);
        if active.is_empty() {
            outgoing.push((
                wire::request(&wire::RequestParts {
                    method: "MESSAGE",
                    transport: link.link.transport(),
                    uri: &uri,
                    local: link.local,
                    branch: &format!("z9hG4bK{seed:x}a{i}"),
                    from: &ours,
                    from_tag: &format!("{seed:x}"),
                    to: &uri,
                    to_tag: None,
                    call_id: &format!("{seed:x}-a{i}@camgate"),
                    cseq: 1,
                    extra: &[],
                    body: Some(("Application/MANSCDP+xml", &body)),
                }),
                link.target,
                "sent",
            ));
        }
        for sub in active.iter_mut().filter(|s| s.filter.admits(&alarm)) {
            sub.cseq += 1;
            let left = sub.expires_at.saturating_duration_since(now).as_secs();
            outgoing.push((
                wire::subscription_notify(&wire::SubscriptionNotify {
                    event: "Alarm",
                    transport: link.link.transport(),
                    local: link.local,
                    branch: &format!("z9hG4bK{seed:x}an{}", sub.cseq),
                    from: &ours,
                    their_uri: &sub.their_uri,
                    their_tag: &sub.their_tag,
                    call_id: &sub.call_id,
                    cseq: sub.cseq,
                    seconds_left: left,
                    body: &body,
                }),
                sub.target,
                "notified",
            ));
        }
        info!(upstream = %link.name, channel = %device_id, camera = %alarm.device, "cascade: alarm sent up");
    }
    for (bytes, to, outcome) in outgoing {
        match link.link.send_request(&bytes, to).await {
            Ok(_) => count(outcome, 1),
            Err(e) => {
                warn_limited!(link.log, to.ip(), upstream = %link.name, %to, "cascade: sending alarm: {e}")
            }
        }
    }
}

/// An alarm SUBSCRIBE (new, refreshed, or ended with Expires: 0), its
/// priority and method conditions kept for its NOTIFYs: 200
/// with the Expires granted, or 486 when the upstream holds too many.
pub async fn serve_subscribe(
    link: &AlarmLink<'_>,
    message: &wire::Message,
    from: SocketAddr,
    subscriptions: &Arc<Mutex<AlarmSubscriptions>>,
) {
    let request = wire::SubscribeRequest::read(message, DEFAULT_EXPIRES, alarms::MAX_EXPIRES);
    let (call_id, expires) = (request.call_id.clone(), request.expires);
    let sub = AlarmSubscription {
        call_id: call_id.clone(),
        their_uri: request.their_uri.clone(),
        their_tag: request.their_tag.clone(),
        target: from,
        expires_at: Instant::now(),
        cseq: 0,
        filter: alarms::AlarmFilter::parse(&message.body),
    };
    let code = lock(subscriptions).subscribe(sub, expires, Instant::now());
    // The Contact names the link's transport (over TCP: `;transport=tcp`).
    let resp = request.answer(
        message,
        code,
        link.platform_id,
        link.local,
        link.link.transport(),
    );
    let _ = link.link.send(&resp, from).await;
    info!(upstream = %link.name, %call_id, expires = expires.as_secs(), code, "cascade: alarm subscription");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
