//! The tokio driver of the RTSP server: accepts connections and runs one
//! task per connection around a sans-IO [`Connection`].
//!
//! Each connection task owns its TCP stream, its UDP port pairs, the
//! [`Viewer`] that keeps its stream alive and the hub [`Subscription`]. It
//! waits on the socket, the subscription, the core's timer and pending
//! stream starts at once, and writes what the core queues. Media is pulled
//! one frame at a time and written before the next is pulled, so a slow
//! client only ever holds one frame here; falling further behind is the
//! hub's business (it makes the subscription skip to the next keyframe).

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::auth::Authenticator;
use super::fragment_cache::FragmentCache;
use super::session::{Connection, Dest, Event, RequestError, SessionConfig, Transmit};
use crate::conn_limit::ConnLimiter;
use crate::log_limit::LogGate;
use crate::media::frame::StreamInfo;
use crate::media::hub::Subscription;
use crate::metrics;
use crate::metrics::label;
use crate::streams::{PlaybackControl, StartError, StreamKey, Streams, Viewer};
use crate::warn_limited;

/// Server settings the app wiring passes to [`serve`].
#[derive(Clone, Debug)]
pub struct RtspServerConfig {
    /// Seconds announced in `Session: …;timeout=`; UDP sessions without a
    /// request or RTCP for this long are reaped.
    pub session_timeout: u32,
    /// How long DESCRIBE waits for the source to reveal its parameter sets.
    pub describe_timeout: Duration,
    /// Audio with no video for this long is offered as audio only.
    pub audio_only_after: Duration,
    /// Local address of the UDP RTP/RTCP port pairs.
    pub udp_bind_ip: IpAddr,
    /// Access policy; `None` lets everyone in.
    pub auth: Option<Arc<Authenticator>>,
    /// Viewers (connections holding a stream) at most; 0 = no limit.
    /// Beyond it DESCRIBE/SETUP get 453 Not Enough Bandwidth.
    pub max_viewers: usize,
    /// A viewer whose socket takes no media for this long is dropped: its
    /// client is gone or cannot keep up even after keyframe skips.
    pub stall_timeout: Duration,
    /// SO_SNDBUF of viewer connections (0 = the OS's autotuning): with
    /// the hub ring position, the bound on what one viewer can queue.
    pub send_buffer: usize,
    /// Connections one peer IP may hold (`limits.max_connections_per_ip`);
    /// 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Time to complete a request (`limits.request_timeout`).
    pub request_timeout: Duration,
}

impl Default for RtspServerConfig {
    fn default() -> Self {
        Self {
            session_timeout: 60,
            describe_timeout: Duration::from_secs(3),
            audio_only_after: crate::media::hub::DEFAULT_AUDIO_ONLY_AFTER,
            udp_bind_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            auth: None,
            max_viewers: 0,
            stall_timeout: Duration::from_secs(10),
            send_buffer: 0,
            max_connections_per_ip: 0,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The viewer count shared by every connection, for `max_viewers`.
#[derive(Clone, Default)]
struct ViewerCount(Arc<AtomicUsize>);

/// One counted viewer; leaving is dropping it.
struct ViewerSlot(Arc<AtomicUsize>);

impl ViewerCount {
    fn acquire(&self, max: usize) -> Option<ViewerSlot> {
        let ok = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_ok();
        ok.then(|| ViewerSlot(self.0.clone()))
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accept RTSP connections until `shutdown`, then wait for every
/// connection task to finish (they end on the same token).
pub async fn serve(
    listener: TcpListener,
    streams: Streams,
    config: RtspServerConfig,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let count = ViewerCount::default();
    let fragments = Arc::new(FragmentCache::default());
    let limiter = ConnLimiter::new("rtsp", config.max_connections_per_ip);
    let refusals = LogGate::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((socket, peer)) => {
                let Some(permit) = limiter.admit(peer.ip()) else {
                    warn_limited!(refusals, peer.ip(), %peer, "RTSP connection refused: too many from this address");
                    continue;
                };
                let _ = socket.set_nodelay(true);
                if config.send_buffer > 0 {
                    let _ =
                        socket2::SockRef::from(&socket).set_send_buffer_size(config.send_buffer);
                }
                // Filled in as the connection learns them, so every line
                // about a viewer carries its stream and session.
                let span = info_span!(
                    "rtsp",
                    %peer,
                    stream = tracing::field::Empty,
                    session = tracing::field::Empty
                );
                let connection = run_connection(
                    socket,
                    peer,
                    streams.clone(),
                    config.clone(),
                    count.clone(),
                    fragments.clone(),
                    shutdown.clone(),
                );
                tasks.spawn(
                    async move {
                        connection.await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of
                // spinning on accept.
                warn!(error = %e, "RTSP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

type OpenFuture = Pin<Box<dyn Future<Output = Result<(Viewer, StreamInfo), StartError>> + Send>>;

/// How long a trick-play command may take (a SIP INFO round trip).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// A track's UDP port pair and where its packets go.
struct UdpPair {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    client_rtp: SocketAddr,
    client_rtcp: SocketAddr,
}

fn open_stream(
    streams: Streams,
    key: StreamKey,
    options: crate::streams::SourceOptions,
    describe_timeout: Duration,
    audio_only_after: Duration,
) -> OpenFuture {
    Box::pin(async move {
        let viewer = streams.open_with(&key, options).await?;
        let info = viewer
            .hub()
            .wait_described_or_audio_only(describe_timeout, audio_only_after)
            .await;
        Ok((viewer, info))
    })
}

/// Bind an even RTP port and the odd RTCP port after it (RFC 3550 §11).
async fn bind_pair(ip: IpAddr) -> io::Result<(UdpSocket, UdpSocket)> {
    for _ in 0..64 {
        let rtp = UdpSocket::bind((ip, 0)).await?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind((ip, port + 1)).await {
            return Ok((rtp, rtcp));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free even/odd UDP port pair",
    ))
}

/// Wait for any datagram on any of the session's UDP sockets; returns the
/// sender, its length, and whether it came to an RTCP port.
/// Transmits a connection's send batch keeps room for between frames:
/// a P frame of a few Mbit/s stream.
const BATCH_KEPT: usize = 8;

/// Room for one datagram a client sends to our UDP ports (RTCP).
const UDP_READ_BUF: usize = 2048;

async fn udp_activity(udp: &[Option<UdpPair>; 2], buf: &mut [u8]) -> (SocketAddr, usize, bool) {
    std::future::poll_fn(|cx| {
        for pair in udp.iter().flatten() {
            for (s, rtcp) in [(&pair.rtcp, true), (&pair.rtp, false)] {
                let mut rb = ReadBuf::new(buf);
                // Errors (e.g. an ICMP-induced refusal) just mean nothing
                // useful arrived on that socket this time.
                if let Poll::Ready(Ok(from)) = s.poll_recv_from(cx, &mut rb) {
                    return Poll::Ready((from, rb.filled().len(), rtcp));
                }
            }
        }
        Poll::Pending
    })
    .await
}

async fn next_frame(
    sub: &mut Option<Subscription>,
) -> Result<std::sync::Arc<crate::media::frame::Frame>, crate::media::hub::StreamEnded> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn opened(opening: &mut Option<OpenFuture>) -> Result<(Viewer, StreamInfo), StartError> {
    match opening {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Most slices one `writev` takes (Linux `UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

/// The TCP bytes of a batch as slices (headers and payload side by side,
/// no gathering copy), from byte `skip` on; and their total length.
fn tcp_slices(batch: &[Transmit], skip: usize) -> (Vec<IoSlice<'_>>, usize) {
    let mut slices = Vec::with_capacity(batch.len() * 3);
    let mut total = 0;
    let mut skip = skip;
    for t in batch.iter().filter(|t| t.dest == Dest::Tcp) {
        let parts =
            std::iter::once(t.head.as_slice()).chain(t.payload.parts().iter().map(|p| &p[..]));
        for bytes in parts {
            total += bytes.len();
            if skip >= bytes.len() {
                skip -= bytes.len();
            } else {
                slices.push(IoSlice::new(&bytes[skip..]));
                skip = 0;
            }
        }
    }
    (slices, total)
}

/// Write what the socket takes of a batch's TCP bytes without waiting
/// (the common case: the kernel buffer has room for a frame), so no
/// timer is armed for a write that never blocks. Returns bytes written.
fn try_write_tcp(stream: &TcpStream, batch: &[Transmit]) -> io::Result<(usize, usize)> {
    let (mut slices, total) = tcp_slices(batch, 0);
    let mut bufs = &mut slices[..];
    let mut written = 0;
    while !bufs.is_empty() {
        let n = bufs.len().min(MAX_IOV);
        match stream.try_write_vectored(&bufs[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok((written, total))
}

/// Write the TCP bytes of a batch from byte `skip` on, waiting for room.
async fn write_tcp(stream: &mut TcpStream, batch: &[Transmit], skip: usize) -> io::Result<()> {
    let (mut slices, _) = tcp_slices(batch, skip);
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = bufs.len().min(MAX_IOV);
        let n = stream.write_vectored(&bufs[..n]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Send the UDP transmits of a batch. `send_to` takes one buffer, so each
/// packet is gathered into `scratch`: the one payload copy of the UDP path,
/// counted in `camgate_payload_bytes_copied`.
async fn send_udp(udp: &[Option<UdpPair>; 2], batch: &[Transmit], scratch: &mut Vec<u8>) -> usize {
    let mut sent = 0;
    let mut copied = 0u64;
    for t in batch {
        let Dest::Udp { track, rtcp } = t.dest else {
            continue;
        };
        let Some(pair) = udp.get(usize::from(track)).and_then(Option::as_ref) else {
            continue;
        };
        scratch.clear();
        scratch.extend_from_slice(t.head.as_slice());
        for p in t.payload.parts() {
            scratch.extend_from_slice(p);
        }
        copied += t.payload.len() as u64;
        let (socket, to) = if rtcp {
            (&pair.rtcp, pair.client_rtcp)
        } else {
            (&pair.rtp, pair.client_rtp)
        };
        // A lost datagram is UDP's normal failure; the client's RTCP (or
        // its absence) decides whether the session lives on.
        let result = match socket.try_send_to(scratch, to) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(scratch, to).await,
            other => other,
        };
        if result.is_ok() {
            sent += scratch.len();
        }
    }
    if copied > 0 {
        metrics::get().payload_bytes_copied.inc_by(copied);
    }
    sent
}

async fn run_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    streams: Streams,
    config: RtspServerConfig,
    count: ViewerCount,
    fragments: Arc<FragmentCache>,
    shutdown: CancellationToken,
) {
    let local_ip = stream
        .local_addr()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), |a| a.ip());
    let udp_ip = match (config.udp_bind_ip, peer.ip()) {
        (IpAddr::V4(v4), IpAddr::V6(_)) if v4.is_unspecified() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (ip, _) => ip,
    };
    let write_timeout = config.stall_timeout.max(Duration::from_millis(100));
    let mut conn = Connection::new(
        SessionConfig {
            session_timeout: config.session_timeout,
            auth: config.auth.clone(),
            request_timeout: config.request_timeout,
            ..SessionConfig::default()
        },
        local_ip,
        rand::random(),
        Instant::now(),
    );
    let mut viewer: Option<Viewer> = None;
    let mut slot: Option<ViewerSlot> = None;
    let mut control: Option<Arc<dyn PlaybackControl>> = None;
    let mut play_at: Option<Instant> = None;
    let mut sub: Option<Subscription> = None;
    // A paused recording's place in its stream (see Event::HoldMedia).
    let mut held: Option<Subscription> = None;
    // The next subscription skips what was published before it.
    let mut fresh = false;
    let mut opening: Option<OpenFuture> = None;
    let mut udp: [Option<UdpPair>; 2] = [None, None];
    let mut started_at: Option<Instant> = None;
    // Sized for requests and client RTCP; grows for a larger request. The
    // UDP buffers are taken only by sessions over UDP (a viewer's fixed
    // cost is what limits viewers per node, issue 17).
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut udp_buf: Vec<u8> = Vec::new();
    let mut batch: Vec<Transmit> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    let mut close = false;
    let mut drop_udp = false;
    // Registered once: a fresh `cancelled()` per loop turn would take the
    // token's lock (shared by every connection) twice per frame.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut armed_for: Option<Instant> = None;
    debug!("RTSP connection opened");

    loop {
        // Carry out what the core asked for, then send what it queued.
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::OpenStream(key) => {
                    tracing::Span::current().record("stream", tracing::field::display(&key));
                    // Cluster: another node holds the device; send the
                    // viewer there (RFC 2326 §11.3.3, 302 + Location).
                    if let Some(owner) = streams.remote_owner(&key) {
                        metrics::get()
                            .cluster_redirects
                            .get_or_create(&label("kind", "rtsp"))
                            .inc();
                        let location = format!("rtsp://{}/{}", owner.rtsp, key.as_str());
                        info!(stream = %key, node = %owner.node, %location, "viewer redirected to the owning node");
                        conn.stream_opened(Err(RequestError::Moved(location)), Instant::now());
                        continue;
                    }
                    if slot.is_none() {
                        slot = count.acquire(config.max_viewers);
                    }
                    if slot.is_some() {
                        opening = Some(open_stream(
                            streams.clone(),
                            key,
                            conn.open_options(),
                            config.describe_timeout,
                            config.audio_only_after,
                        ));
                    } else {
                        info!(stream = %key, max = config.max_viewers, "viewer limit reached");
                        conn.stream_opened(Err(RequestError::TooManyViewers), Instant::now());
                    }
                }
                Event::Playback(command) => {
                    let outcome = match &control {
                        Some(c) => tokio::time::timeout(CONTROL_TIMEOUT, c.command(command))
                            .await
                            .unwrap_or(Err(StartError::Timeout(CONTROL_TIMEOUT))),
                        None => Ok(()),
                    };
                    if let Err(e) = outcome {
                        metrics::get()
                            .rtsp_errors
                            .get_or_create(&label("kind", "playback_control"))
                            .inc();
                        warn!(?command, error = %e, "playback control failed");
                    }
                }
                Event::FirstMedia => {
                    if let Some(at) = play_at.take() {
                        metrics::get()
                            .rtsp_first_frame_seconds
                            .observe(at.elapsed().as_secs_f64());
                    }
                }
                Event::BindUdp {
                    track,
                    client_rtp,
                    client_rtcp,
                } => {
                    let bound = bind_pair(udp_ip).await;
                    let ports = match bound {
                        Ok((rtp, rtcp)) => {
                            let ports = rtp
                                .local_addr()
                                .and_then(|a| Ok((a.port(), rtcp.local_addr()?.port())));
                            if let (Ok(ports), Some(slot)) =
                                (ports, udp.get_mut(usize::from(track)))
                            {
                                udp_buf.resize(UDP_READ_BUF, 0);
                                *slot = Some(UdpPair {
                                    rtp,
                                    rtcp,
                                    client_rtp: SocketAddr::new(peer.ip(), client_rtp),
                                    client_rtcp: SocketAddr::new(peer.ip(), client_rtcp),
                                });
                                Some(ports)
                            } else {
                                None
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot bind UDP ports for RTP");
                            None
                        }
                    };
                    conn.udp_bound(ports, Instant::now());
                }
                Event::SessionStarted { id, key, transport } => {
                    tracing::Span::current().record("session", tracing::field::display(&id));
                    started_at = Some(Instant::now());
                    info!(%peer, stream = %key, session = %id, transport = transport.as_str(), "RTSP session started");
                }
                Event::StartMedia => {
                    play_at = Some(Instant::now());
                    sub = match held.take() {
                        Some(h) => Some(h),
                        None if fresh => viewer
                            .as_ref()
                            .map(|v| v.hub().subscribe_from_next_keyframe()),
                        None => viewer.as_ref().map(Viewer::subscribe),
                    };
                    fresh = false;
                    if let Some(v) = &viewer {
                        conn.anchor_recording(v.hub().first_video_pts(), Instant::now());
                    }
                }
                Event::StopMedia => sub = None,
                Event::HoldMedia => held = sub.take(),
                Event::Flush => {
                    held = None;
                    match (&mut sub, &viewer) {
                        (Some(s), Some(v)) => *s = v.hub().subscribe_from_next_keyframe(),
                        _ => fresh = true,
                    }
                }
                Event::SessionEnded {
                    id,
                    key,
                    reason,
                    packets,
                } => {
                    let secs = started_at.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
                    info!(%peer, stream = %key, session = %id, reason = reason.as_str(), packets, duration_s = secs, "RTSP session ended");
                    sub = None;
                    held = None;
                    viewer = None;
                    slot = None;
                    control = None;
                    // Closed after this turn's transmits: the RTCP BYE of
                    // an ended stream still goes out on them.
                    drop_udp = true;
                }
                Event::ReleaseStream => {
                    sub = None;
                    held = None;
                    viewer = None;
                    slot = None;
                    control = None;
                }
                Event::Close => close = true,
            }
        }
        conn.take_transmits(&mut batch);
        if !batch.is_empty() {
            let result = match try_write_tcp(&stream, &batch) {
                Ok((written, total)) => {
                    let write = async {
                        if written < total {
                            write_tcp(&mut stream, &batch, written).await?;
                        }
                        let udp_sent = send_udp(&udp, &batch, &mut scratch).await;
                        io::Result::Ok(total + udp_sent)
                    };
                    if written == total && !batch.iter().any(|t| t.dest != Dest::Tcp) {
                        Ok(total)
                    } else {
                        tokio::select! {
                            r = tokio::time::timeout(write_timeout, write) => r.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
                            _ = &mut cancelled => Err(io::ErrorKind::Interrupted.into()),
                        }
                    }
                }
                Err(e) => Err(e),
            };
            batch.clear();
            // A keyframe's packets grow the batch to dozens of entries; kept
            // at that size by every viewer it would be the largest part of
            // a viewer's memory (issue 17). Regrowing once a GOP is cheap.
            batch.shrink_to(BATCH_KEPT);
            match result {
                Ok(n) => {
                    metrics::get().rtsp_bytes_sent.inc_by(n as u64);
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::TimedOut {
                        metrics::get()
                            .rtsp_viewers_dropped
                            .get_or_create(&label("reason", "stalled"))
                            .inc();
                        let skipped = sub.as_ref().map_or(0, Subscription::skipped);
                        info!(%peer, skipped, "dropping an RTSP viewer whose socket stalled");
                    } else {
                        debug!(error = %e, "RTSP write failed");
                    }
                    break;
                }
            }
        }
        if drop_udp {
            udp = [None, None];
            drop_udp = false;
        }
        if close {
            break;
        }

        // One timer for the connection, moved only when the core's
        // deadline moves: arming a fresh one per frame costs a timer-wheel
        // insert and removal for every frame of every viewer.
        let deadline = conn.poll_timeout();
        if deadline != armed_for {
            if let Some(d) = deadline {
                timer.as_mut().reset(d.into());
            }
            armed_for = deadline;
        }
        tokio::select! {
            _ = &mut cancelled => break,
            r = stream.read_buf(&mut rbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    conn.receive(&rbuf, Instant::now());
                    rbuf.clear();
                }
            },
            r = opened(&mut opening) => {
                opening = None;
                match r {
                    Ok((v, info)) => {
                        control = v.playback();
                        conn.set_playback(control.is_some());
                        viewer = Some(v);
                        conn.stream_opened(Ok(info), Instant::now());
                    }
                    Err(e) => {
                        slot = None;
                        conn.stream_opened(Err(e.into()), Instant::now());
                    }
                }
            }
            f = next_frame(&mut sub) => match f {
                Ok(frame) => {
                    if let Some((packetizer, mtu)) = conn.track_packetizer(frame.codec) {
                        let shared = fragments.fragments(&frame, packetizer, mtu);
                        conn.push_fragments(&frame, shared, Instant::now());
                    }
                }
                Err(_) => conn.stream_ended(),
            },
            _ = &mut timer, if armed_for.is_some() => {
                armed_for = None;
                conn.handle_timeout(Instant::now(), SystemTime::now());
            }
            (from, len, rtcp) = udp_activity(&udp, &mut udp_buf) => {
                // Only the client's own address counts as a sign of life.
                if from.ip() == peer.ip() {
                    match udp_buf.get(..len).filter(|_| rtcp) {
                        Some(data) => conn.client_rtcp(data, Instant::now()),
                        None => conn.client_datagram(Instant::now()),
                    }
                }
            }
        }
    }

    conn.connection_closed();
    while let Some(ev) = conn.poll_event() {
        if let Event::SessionEnded {
            id,
            key,
            reason,
            packets,
        } = ev
        {
            let secs = started_at.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
            info!(%peer, stream = %key, session = %id, reason = reason.as_str(), packets, duration_s = secs, "RTSP session ended");
        }
    }
    drop(sub);
    drop(viewer);
    drop(slot);
    let _ = stream.shutdown().await;
    debug!("RTSP connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtsp::packetize::Head;
    use bytes::Bytes;

    /// A TCP transmit with the 4-byte interleaved framing or no head.
    fn tcp(framed: bool, payload: &'static [u8]) -> Transmit {
        Transmit {
            dest: Dest::Tcp,
            head: if framed {
                Head::interleaved(0, payload.len() as u16)
            } else {
                Head::default()
            },
            payload: Bytes::from_static(payload).into(),
        }
    }

    fn gathered(slices: &[IoSlice<'_>]) -> Vec<u8> {
        slices.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn slices_resume_after_a_partial_write() {
        let udp = Transmit {
            dest: Dest::Udp {
                track: 0,
                rtcp: false,
            },
            head: Head::default(),
            payload: Bytes::from_static(b"not on tcp").into(),
        };
        let batch = [tcp(true, b"abcdef"), udp, tcp(false, b"XYZ")];
        let (all, total) = tcp_slices(&batch, 0);
        assert_eq!(total, 4 + 6 + 3);
        let whole = gathered(&all);
        assert_eq!(&whole[4..], b"abcdefXYZ");
        for skip in 0..=total {
            let (rest, t) = tcp_slices(&batch, skip);
            assert_eq!(t, total);
            assert_eq!(gathered(&rest), whole[skip..], "skip {skip}");
            assert!(rest.iter().all(|s| !s.is_empty()));
        }
    }
}
