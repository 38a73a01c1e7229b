//! Catalog subscriptions of the upper platform (GB/T 28181-2016 §9.7.1,
//! RFC 6665): SUBSCRIBE answered, then channel changes NOTIFYed (ADD, DEL,
//! ON, OFF, UPDATE) while the subscription lasts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::info;

use super::answers;
use super::driver::{Upstream, lock};
use super::status::unix_now;
use super::subscription::{self, CatalogSubscription};
use super::wire;
use crate::metrics::{self, label};

/// How often channel lists are compared for subscribers.
pub(super) const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Lifetime of a subscription whose SUBSCRIBE named none.
const DEFAULT_SUBSCRIPTION: Duration = Duration::from_secs(3600);

/// A catalog SUBSCRIBE (new, refreshed, or ended with Expires: 0).
pub(super) async fn serve_subscribe(ctx: &Upstream, message: &wire::Message, from: SocketAddr) {
    let request =
        wire::SubscribeRequest::read(message, DEFAULT_SUBSCRIPTION, subscription::MAX_EXPIRES);
    let wire::SubscribeRequest {
        call_id,
        their_uri,
        their_tag,
        expires,
    } = request.clone();
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
    let resp = request.answer(
        message,
        code,
        &ctx.up.platform_id,
        ctx.local,
        ctx.link.transport(),
    );
    let _ = ctx.link.send(&resp, from).await;
    info!(upstream = %ctx.name, %call_id, expires = expires.as_secs(), code, "cascade: catalog subscription");
}

/// Compare the channels with what each subscriber knows and NOTIFY the
/// changes; expired subscriptions are dropped.
pub(super) async fn notify_changes(ctx: &Upstream) {
    let now = Instant::now();
    let channels = ctx.catalog.exposed(&ctx.up);
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
            for body in answers::catalog_notify_pages(
                sn,
                &ctx.up.platform_id,
                ctx.up.civil_code(),
                &changes,
            )
            .iter()
            {
                sub.cseq += 1;
                let bytes = wire::subscription_notify(&wire::SubscriptionNotify {
                    event: "Catalog",
                    transport: ctx.link.transport(),
                    local: ctx.local,
                    branch: &format!("z9hG4bK{:016x}n", rand::random::<u64>()),
                    from: &ours,
                    their_uri: &sub.their_uri,
                    their_tag: &sub.their_tag,
                    call_id: &sub.call_id,
                    cseq: sub.cseq,
                    seconds_left: left,
                    body,
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
        let _ = ctx.link.send_request(&bytes, to).await;
    }
}
