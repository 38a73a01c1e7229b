//! rsipstack's own warnings, counted and rate-limited (issue 13, scope 5).
//!
//! The SIP library logs a WARN for each message it drops after our screen
//! passed it (a stream that turns to garbage mid-connection, a request it
//! cannot match) — one line per message, from any peer. Its target is
//! filtered out of the log (`rsipstack=error` in the default filter), and
//! this tracing layer takes its place: each such event counts in
//! `camgate_sip_errors_total{kind="stack"}` and is relayed to the normal
//! log through the per-source limiter ([`crate::log_limit`]), by the peer
//! address the event names.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};

use crate::log_limit::LogGate;
use crate::metrics::{self, label};
use crate::warn_limited;

/// Warnings waiting to be relayed; beyond this they are counted only.
const QUEUE: usize = 256;

/// One warning of the stack, as relayed.
#[derive(Debug)]
struct StackWarning {
    source: IpAddr,
    text: String,
}

type Queue = (
    tokio::sync::mpsc::Sender<StackWarning>,
    Mutex<Option<tokio::sync::mpsc::Receiver<StackWarning>>>,
);

fn queue() -> &'static Queue {
    static Q: OnceLock<Queue> = OnceLock::new();
    Q.get_or_init(|| {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        (tx, Mutex::new(Some(rx)))
    })
}

/// The layer counting rsipstack's WARN and ERROR events.
pub struct StackWarnings;

impl StackWarnings {
    /// The events this layer wants: rsipstack's warnings and errors.
    pub fn filter() -> Targets {
        Targets::new().with_target("rsipstack", Level::WARN)
    }
}

impl<S: Subscriber> Layer<S> for StackWarnings {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("rsipstack") {
            return;
        }
        metrics::get()
            .sip_errors
            .get_or_create(&label("kind", "stack"))
            .inc();
        let mut fields = Fields::default();
        event.record(&mut fields);
        // A full queue means a flood: the counter has it, the log need not.
        let _ = queue().0.try_send(StackWarning {
            source: fields.source.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            text: fields.text,
        });
    }
}

/// The message and the peer address of an event.
#[derive(Default)]
struct Fields {
    source: Option<IpAddr>,
    text: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if name == "raw_message" {
            return;
        }
        let rendered = format!("{value:?}");
        if self.source.is_none() && matches!(name, "src" | "addr" | "remote" | "remote_addr") {
            self.source = parse_peer(&rendered);
        }
        if self.text.len() < 300 {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            if name == "message" {
                self.text.push_str(&rendered);
            } else {
                let _ = write!(self.text, "{name}={rendered}");
            }
        }
    }
}

/// The IP of a peer as rsipstack prints it (`UDP 1.2.3.4:5060`, `1.2.3.4:5060`).
fn parse_peer(s: &str) -> Option<IpAddr> {
    s.trim_matches('"').split_whitespace().find_map(|w| {
        w.parse::<SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| w.parse::<IpAddr>())
            .ok()
    })
}

/// Relay queued stack warnings to the log, one line per source per minute.
/// Runs once per process (the first caller takes the queue).
pub async fn relay(gate: Arc<LogGate>) {
    let Some(mut rx) = queue().1.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    while let Some(w) = rx.recv().await {
        warn_limited!(gate, w.source, "SIP stack dropped a message: {}", w.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_in_the_stacks_formats() {
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(parse_peer("UDP 192.0.2.9:5060"), Some(ip));
        assert_eq!(parse_peer("\"192.0.2.9:5060\""), Some(ip));
        assert_eq!(parse_peer("TCP 192.0.2.9:41000;transport=tcp"), None);
        assert_eq!(parse_peer("192.0.2.9"), Some(ip));
        assert_eq!(parse_peer("-"), None);
    }
}
