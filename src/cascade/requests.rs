//! Requests of the upper platform (GB/T 28181-2016 §9.4-§9.5 queries,
//! §9.3 control, §9.7 record search, §9.2/§9.8 dialogs): each dispatched
//! to the module serving it; MANSCDP queries (Catalog, DeviceInfo,
//! DeviceStatus) answered here with 200 and then MESSAGEs of ours.

use std::net::SocketAddr;

use tracing::{info, warn};

use super::alarm_driver::{self, AlarmLink};
use super::alarms;
use super::answers;
use super::catalog_subscribe::serve_subscribe;
use super::control::{self as control_doc, ControlParseError};
use super::driver::{Upstream, lock};
use super::forward;
use super::invite::serve_invite;
use super::playback_control::serve_info;
use super::records::{self, RecordQueryError};
use super::status::unix_now;
use super::wire;
use crate::metrics::{self, label};
use crate::streams::StreamKey;
use crate::streams::control::for_key;
use crate::warn_limited;

/// Answer a request from the upper platform: MANSCDP queries get 200 and
/// their answers as MESSAGEs of ours; everything else is not served yet.
pub(super) async fn serve_request(ctx: &Upstream, message: &wire::Message, from: SocketAddr) {
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
        let _ = ctx.link.send(&resp, from).await;
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
        let _ = ctx.link.send(&resp, from).await;
        return;
    };
    let ok = wire::response_to(message, 200, "OK", "camgate", None);
    let _ = ctx.link.send(&ok, from).await;
    m.cascade_queries
        .get_or_create(&label("cmd", cmd_label(&query.cmd_type)))
        .inc();
    let channels = ctx.catalog.exposed(&ctx.up);
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
    ctx.upward().send(&query.cmd_type, &bodies).await;
}

/// A DeviceControl or RecordInfo for one channel: 200 at once, then
/// carried out on the camera in a task ([`forward`]). Whether `message`
/// was one of them (else it is served as a query).
async fn serve_forwarded(ctx: &Upstream, message: &wire::Message, from: SocketAddr) -> bool {
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
        let _ = ctx.link.send(&reply(code, reason), from).await;
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
    let channels = ctx.catalog.exposed(&ctx.up);
    let found = channels
        .iter()
        .find(|c| c.id == channel_id)
        .and_then(|c| Some((StreamKey::from_path(&c.stream)?, c.name.clone())));
    let Some((key, name)) = found else {
        count("not_found");
        let _ = ctx.link.send(&reply(404, "Not Found"), from).await;
        return true;
    };
    let Ok(permit) = ctx.catalog.in_flight.clone().try_acquire_owned() else {
        count("busy");
        let _ = ctx.link.send(&reply(486, "Busy Here"), from).await;
        return true;
    };
    let _ = ctx.link.send(&reply(200, "OK"), from).await;
    let channel = for_key(&ctx.catalog.controls, &key).cloned();
    let up = ctx.upward();
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

/// An alarm SUBSCRIBE, or the upper platform's `<Response>` to one of our
/// alarm MESSAGEs (200, nothing more to do).
async fn serve_alarm_request(ctx: &Upstream, message: &wire::Message, from: SocketAddr) {
    if matches!(&message.start, wire::Start::Request { method, .. } if method == "SUBSCRIBE") {
        let subs = &ctx.catalog.alarm_subscriptions;
        return alarm_driver::serve_subscribe(&AlarmLink::of(ctx), message, from, subs).await;
    }
    let ok = wire::response_to(message, 200, "OK", "camgate", None);
    let _ = ctx.link.send(&ok, from).await;
}
