//! Playback control from the upper platform (GB/T 28181-2016 §9.8.2):
//! MANSRTSP in SIP INFO inside a playback dialog, forwarded to the
//! recording's source and answered with the device's verdict.

use std::net::SocketAddr;

use tracing::{info, warn};

use super::driver::{Upstream, lock};
use super::invite::{INFO_DEADLINE, SessionHandle};
use super::playback::{self, InfoTurn};
use super::wire;
use crate::metrics::{self, label};
use crate::warn_limited;

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
pub(super) fn serve_info(ctx: &Upstream, message: &wire::Message, from: SocketAddr) {
    let call_id = message.call_id().unwrap_or_default().to_owned();
    let sip_cseq = message.cseq().map_or(0, |(n, _)| n);
    let reply = |code: u16, reason: &str| wire::response_to(message, code, reason, "camgate", None);
    let link = ctx.link.clone();
    let send = move |bytes: Vec<u8>| {
        let link = link.clone();
        async move {
            let _ = link.send(&bytes, from).await;
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
