//! The tokio side of what an upper platform asks of one channel:
//! DeviceControl (§9.3) carried out on the camera through its adapter's
//! [`ChannelControl`], with the `Result` answer where the command has one,
//! and RecordInfo (§9.7.1) searched on the camera and answered in pages.
//!
//! Each runs in a task of its own so the SIP loop keeps serving, with a
//! deadline fixed when the request arrived; whatever happens, a RecordInfo
//! gets an answer (`SumNum` 0 on failure) and a control with a `Result`
//! gets OK or ERROR before the upper platform's own timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

use super::control::{ControlRequest, control_response};
use super::link::Link;
use super::records::{RecordQuery, record_pages};
use super::wire;
use crate::metrics::{self, label};
use crate::streams::StreamKey;
use crate::streams::control::{ChannelControl, ControlError};

/// How long a forwarded DeviceControl may take, from its arrival.
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(8);
/// How long a RecordInfo search may take, from its arrival: under the
/// 10 s an upper platform commonly waits (camgate's own
/// `gb.query_timeout`), so an empty answer still reaches it in time.
pub const RECORDS_DEADLINE: Duration = Duration::from_secs(8);
/// Most forwarded requests in flight per upstream; more are refused with
/// 486 so a flood from above cannot pile tasks on the cameras.
pub const MAX_IN_FLIGHT: usize = 32;

/// Sending MESSAGEs of ours to the upper platform, from a task.
#[derive(Clone)]
pub struct Upward {
    pub name: String,
    pub link: Link,
    /// The upper platform's SIP server (after redirects).
    pub target: SocketAddr,
    pub local: SocketAddr,
    pub server_id: String,
    pub realm: String,
    pub platform_id: String,
}

impl Upward {
    /// An out-of-dialog MESSAGE carrying `body` (MANSCDP) to the upper
    /// platform; `seed` and `tag` make its branch, tag and Call-ID unique.
    pub fn message(&self, body: &[u8], seed: u64, tag: &str) -> Vec<u8> {
        let uri = format!("sip:{}@{}", self.server_id, self.realm);
        let domain = self.platform_id.get(..10).unwrap_or_default();
        let from_uri = format!("sip:{}@{domain}", self.platform_id);
        wire::request(&wire::RequestParts {
            method: "MESSAGE",
            transport: self.link.transport(),
            uri: &uri,
            local: self.local,
            branch: &format!("z9hG4bK{seed:x}{tag}"),
            from: &from_uri,
            from_tag: &format!("{seed:x}"),
            to: &uri,
            to_tag: None,
            call_id: &format!("{seed:x}-{tag}@camgate"),
            cseq: 1,
            extra: &[],
            body: Some(("Application/MANSCDP+xml", body)),
        })
    }

    /// Send each body as one MESSAGE (`what` names it in logs).
    pub async fn send(&self, what: &str, bodies: &[Vec<u8>]) {
        for (i, body) in bodies.iter().enumerate() {
            // Random: answers to two queries in one second must not share
            // a branch (see `alarm_driver::flush`).
            let seed: u64 = rand::random();
            let bytes = self.message(body, seed, &format!("f{i}"));
            if let Err(e) = self.link.send_request(&bytes, self.target).await {
                warn!(upstream = %self.name, "cascade: sending {what} answer: {e}");
            }
        }
    }
}

fn count(outcome: &'static str) {
    metrics::get()
        .cascade_forwarded
        .get_or_create(&label("outcome", outcome))
        .inc();
}

fn outcome<T>(r: &Result<Result<T, ControlError>, tokio::time::error::Elapsed>) -> &'static str {
    match r {
        Ok(Ok(_)) => "ok",
        Ok(Err(e)) => e.kind(),
        Err(_) => "timeout",
    }
}

/// Carry out `req` on the channel `key` plays; answer its `Result` up
/// when the command has one. `channel` is `None` when no adapter serves
/// the key's scheme.
pub async fn control(
    up: Upward,
    channel: Option<Arc<dyn ChannelControl>>,
    key: StreamKey,
    req: ControlRequest,
    _permit: OwnedSemaphorePermit,
) {
    let result = tokio::time::timeout(CONTROL_DEADLINE, async {
        match &channel {
            Some(c) => c.command(&key, req.command).await,
            None => Err(ControlError::Unsupported("be controlled")),
        }
    })
    .await;
    let outcome = outcome(&result);
    count(outcome);
    let ok = matches!(result, Ok(Ok(())));
    if ok {
        info!(upstream = %up.name, stream = %key, command = req.command.name(), "cascade: DeviceControl forwarded");
    } else {
        let why = match &result {
            Ok(Err(e)) => e.to_string(),
            _ => format!("no outcome within {CONTROL_DEADLINE:?}"),
        };
        warn!(upstream = %up.name, stream = %key, command = req.command.name(), "cascade: DeviceControl not carried out: {why}");
    }
    // A.2.6.1: PTZ has only the 200; the other commands report a Result.
    if !req.command.is_ptz() {
        let body = control_response(req.sn, &req.device_id, ok);
        up.send("DeviceControl", &[body]).await;
    }
}

/// Search the recordings of `key` and answer `q` with RecordInfo pages;
/// an error or the deadline answers `SumNum` 0.
pub async fn records(
    up: Upward,
    channel: Option<Arc<dyn ChannelControl>>,
    key: StreamKey,
    name: String,
    q: RecordQuery,
    _permit: OwnedSemaphorePermit,
) {
    let result = tokio::time::timeout(RECORDS_DEADLINE, async {
        match &channel {
            // No adapter for the scheme: nothing is recorded there.
            None => Ok(Vec::new()),
            Some(c) => c.records(&key, q.start, q.end).await,
        }
    })
    .await;
    count(outcome(&result));
    let entries = match result {
        Ok(Ok(entries)) => entries,
        Ok(Err(e)) => {
            warn!(upstream = %up.name, stream = %key, "cascade: RecordInfo search failed, answering none: {e}");
            Vec::new()
        }
        Err(_) => {
            warn!(upstream = %up.name, stream = %key, "cascade: RecordInfo search took over {RECORDS_DEADLINE:?}, answering none");
            Vec::new()
        }
    };
    let pages = record_pages(q.sn, &q.device_id, &name, &entries);
    info!(upstream = %up.name, stream = %key, sn = q.sn, records = entries.len(), messages = pages.len(), "cascade: answering RecordInfo");
    up.send("RecordInfo", &pages).await;
}
