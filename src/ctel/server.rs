//! The tokio driver of the FA F5 link (§7.3, default port 8588): one task
//! per device connection around [`FrameDecoder`] and
//! [`CtelPlatform::handle_request`].
//!
//! The task owns the socket; it answers device requests, sends platform
//! commands queued by the API (with our own SEQ, matching responses by
//! echoed SEQ), and closes a link silent for `heartbeat_timeout` (the spec's
//! 360 s) or one that sent a bad frame.
//!
//! Limits (issue 13, scope 6): a peer IP holds at most
//! `limits.max_connections_per_ip` links; a link must log in within
//! `limits.request_timeout` of opening (the silence deadline only applies
//! after); and every write has a deadline, so a device that stops reading
//! (a zero TCP window) cannot hold the task, its commands and shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::frame::{FrameDecoder, Packet, SeqCounter, encode};
use super::messages::cmd;
use super::platform::{CtelPlatform, LinkCommand};
use crate::config::LimitsConfig;
use crate::conn_limit::ConnLimiter;
use crate::log_limit::LogGate;
use crate::metrics::{self, label};
use crate::warn_limited;

/// Platform commands in flight per link; more wait in the queue.
const MAX_PENDING: usize = 32;

/// How long one frame may take to be written: a device whose receive
/// window stays shut longer is gone for our purposes.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    platform: Arc<CtelPlatform>,
    limits: LimitsConfig,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let limiter = ConnLimiter::new("ctel", limits.max_connections_per_ip);
    let refusals = LogGate::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((socket, peer)) => {
                let Some(permit) = limiter.admit(peer.ip()) else {
                    warn_limited!(refusals, peer.ip(), %peer, "telecom link refused: too many from this address");
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let span = info_span!("ctel_link", %peer);
                let link = run_link(
                    socket,
                    peer,
                    platform.clone(),
                    limits.request_timeout,
                    shutdown.clone(),
                );
                tasks.spawn(
                    async move {
                        link.await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                warn!(error = %e, "telecom link accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

fn link_error(kind: &'static str) {
    metrics::get()
        .ctel_link_errors
        .get_or_create(&label("kind", kind))
        .inc();
}

/// Write one frame within [`WRITE_TIMEOUT`], or give up on shutdown.
async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    socket: &mut W,
    bytes: &[u8],
    shutdown: &CancellationToken,
) -> Result<(), String> {
    tokio::select! {
        r = tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(bytes)) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => {
                link_error("write_timeout");
                Err(format!("device took no data for {WRITE_TIMEOUT:?}"))
            }
        },
        _ = shutdown.cancelled() => Err("shutdown".into()),
    }
}

async fn run_link(
    mut socket: TcpStream,
    peer: SocketAddr,
    platform: Arc<CtelPlatform>,
    login_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (tx, mut commands) = mpsc::channel::<LinkCommand>(MAX_PENDING);
    let mut session = platform.new_session(peer, tx);
    let mut decoder = FrameDecoder::new(platform.config.max_body);
    let mut seq = SeqCounter::default();
    let mut pending: HashMap<u16, (u8, oneshot::Sender<Packet>)> = HashMap::new();
    let silence = platform.config.heartbeat_timeout;
    let mut deadline = tokio::time::Instant::now() + silence;
    // One deadline from the accept: a link that never logs in is not kept
    // for the heartbeat silence (minutes).
    let login_deadline = tokio::time::Instant::now() + login_timeout;
    let mut buf = vec![0u8; 16 * 1024];
    let reason: String = 'link: loop {
        tokio::select! {
            _ = shutdown.cancelled() => break 'link "shutdown".into(),
            _ = session.gone.cancelled() => break 'link "replaced by a newer login".into(),
            _ = tokio::time::sleep_until(login_deadline), if session.dev_id.is_none() => {
                metrics::get()
                    .request_timeouts
                    .get_or_create(&label("listener", "ctel"))
                    .inc();
                break 'link format!("no login within {login_timeout:?}");
            }
            _ = tokio::time::sleep_until(deadline) => {
                link_error("timeout");
                break 'link format!("silent for {silence:?}");
            }
            c = commands.recv(), if pending.len() < MAX_PENDING => {
                let Some(c) = c else { break 'link "platform dropped the link".into() };
                pending.retain(|_, (_, reply)| !reply.is_closed());
                let s = seq.next_request();
                let Ok(bytes) = encode(c.cmd, s, c.body.as_bytes()) else {
                    // Our own bodies are small; a giant one is a bug, not the device's fault.
                    warn!(cmd = c.cmd, "command body too long; dropped");
                    continue;
                };
                if let Err(e) = write_frame(&mut socket, &bytes, &shutdown).await {
                    break 'link e;
                }
                debug!(cmd = format_args!("{:#04x}", c.cmd), seq = s, "command sent");
                pending.insert(s, (c.cmd, c.reply));
            }
            r = socket.read(&mut buf) => {
                let n = match r {
                    Ok(0) => break 'link "closed by device".into(),
                    Ok(n) => n,
                    Err(e) => break 'link format!("read failed: {e}"),
                };
                deadline = tokio::time::Instant::now() + silence;
                decoder.push(&buf[..n]);
                loop {
                    let packet = match decoder.next_packet() {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(e) => {
                            link_error(e.kind());
                            warn!(dev_id = ?session.dev_id, error = %e, "bad frame; closing link");
                            break 'link format!("bad frame: {e}");
                        }
                    };
                    if !cmd::from_device(packet.cmd) {
                        // A response to one of our commands.
                        match pending.remove(&packet.seq) {
                            Some((c, reply)) if c == packet.cmd => {
                                let _ = reply.send(packet);
                            }
                            other => {
                                link_error("unmatched_response");
                                debug!(cmd = packet.cmd, seq = packet.seq, "response matches no command");
                                if let Some((c, reply)) = other {
                                    pending.insert(packet.seq, (c, reply));
                                }
                            }
                        }
                        continue;
                    }
                    match platform.handle_request(&mut session, &packet, Instant::now(), SystemTime::now()) {
                        Ok(reply) => {
                            let Ok(bytes) = encode(reply.cmd, reply.seq, reply.body.as_bytes()) else {
                                warn!("response body too long");
                                continue;
                            };
                            if let Err(e) = write_frame(&mut socket, &bytes, &shutdown).await {
                                break 'link e;
                            }
                            if reply.close {
                                break 'link "login refused".into();
                            }
                        }
                        Err(e) => {
                            link_error(e.kind());
                            warn!(dev_id = ?session.dev_id, cmd = packet.cmd, error = %e, "bad request; closing link");
                            break 'link format!("bad request: {e}");
                        }
                    }
                }
            }
        }
    };
    debug!(%reason, "telecom link closed");
    platform.link_closed(&session, &reason);
    // Shutdown writes a FIN; bounded like every write.
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.shutdown()).await;
}

/// The telecom device used by `--demo` (a 皓维 PUID).
pub const DEMO_DEV_ID: &str = "81300000001";
pub const DEMO_DEV_KEY: &str = "demo-key";

/// Build the platform and bind its link listener when `ctel.enabled` (or
/// for `--demo`, which enables it and allows the demo device).
pub async fn bind_platform(
    config: &crate::config::Config,
    demo: bool,
) -> anyhow::Result<(Option<Arc<CtelPlatform>>, Option<TcpListener>)> {
    use anyhow::Context;
    let mut ctel = config.ctel.clone();
    if demo && ctel.key_for(DEMO_DEV_ID).is_none() {
        ctel.enabled = true;
        ctel.devices.push(super::config::CtelDeviceEntry {
            dev_id: DEMO_DEV_ID.into(),
            dev_key: DEMO_DEV_KEY.into(),
        });
    }
    if !ctel.enabled {
        return Ok((None, None));
    }
    let listener = TcpListener::bind(ctel.listen)
        .await
        .with_context(|| format!("cannot listen for telecom devices on {}", ctel.listen))?;
    let platform = CtelPlatform::new(ctel, config.advertised_ip());
    platform.set_link_port(listener.local_addr()?.port());
    Ok((Some(platform), Some(listener)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a device that stops reading (zero window) must not hang
    /// the link task forever.
    #[tokio::test(start_paused = true)]
    async fn a_write_to_a_device_that_stops_reading_ends() {
        let (mut ours, _device) = tokio::io::duplex(64);
        let shutdown = CancellationToken::new();
        let frame = vec![0u8; 4096];
        let err = write_frame(&mut ours, &frame, &shutdown)
            .await
            .expect_err("the write cannot complete");
        assert!(err.contains("took no data"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_stuck_write() {
        let (mut ours, _device) = tokio::io::duplex(64);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let err = write_frame(&mut ours, &[0u8; 4096], &shutdown)
            .await
            .expect_err("cancelled");
        assert_eq!(err, "shutdown");
    }
}
