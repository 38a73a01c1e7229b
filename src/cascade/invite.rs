//! Media the upper platform asks for (GB/T 28181-2016 §9.2 live view,
//! §9.8 playback and download): the INVITE answered with our SDP, the
//! stream opened and sent as PS over RTP until BYE, and the end of a
//! recording told with MediaStatus 121 (A.2.5).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::driver::{Upstream, lock};
use super::forward::Upward;
use super::link::Link;
use super::media;
use super::playback::{self, CalleeDialog, InfoSequence, SessionKind};
use super::session::{self, MediaServices};
use super::status::unix_now;
use super::wire;
use crate::metrics::{self, label};
use crate::streams::StreamKey;

/// Upward streams of one upstream by INVITE Call-ID; cancelling one ends it.
pub(super) type Sessions = Arc<Mutex<HashMap<String, SessionHandle>>>;

/// What the SIP loop holds of an upward stream.
pub(super) struct SessionHandle {
    /// Cancelled by BYE (or shutdown).
    pub cancel: CancellationToken,
    /// Cancelled when the ACK for our 200 arrives, ending its
    /// retransmission (RFC 3261 §13.3.1.4).
    pub acked: CancellationToken,
    /// A recording's stream key, which MANSRTSP INFOs control.
    pub recorded: Option<StreamKey>,
    /// The INFOs already forwarded.
    pub infos: InfoSequence,
}

/// RFC 3261 timers for retransmitting a 2xx to INVITE over UDP: T1
/// doubling to T2, given up after 64·T1.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// Most upward streams one upstream may hold at once.
const MAX_SESSIONS: usize = 256;
/// How long opening a stream for an INVITE may take, from its arrival.
const INVITE_DEADLINE: Duration = Duration::from_secs(15);
/// After a recording's end is notified (MediaStatus 121), how long the
/// upper platform has to send its BYE before we send ours.
const END_BYE_WAIT: Duration = Duration::from_secs(10);
/// How long a playback command may take at the device, from the INFO's
/// arrival (the upper platform's INFO transaction gives up at 32 s).
pub(super) const INFO_DEADLINE: Duration = Duration::from_secs(8);

fn count_invite(outcome: &'static str) {
    metrics::get()
        .cascade_invites
        .get_or_create(&label("outcome", outcome))
        .inc();
}

/// A live-view INVITE: 100 at once; the stream is opened in a task of its
/// own, which answers 200 with our SDP (or an error) and then sends PS
/// until BYE.
pub(super) async fn serve_invite(ctx: &Upstream, message: &wire::Message, from: SocketAddr) {
    let call_id = message.call_id().unwrap_or_default().to_owned();
    if lock(&ctx.catalog.sessions).contains_key(&call_id) {
        // A retransmission while the stream opens.
        return;
    }
    let reply = |code: u16, reason: &str| wire::response_to(message, code, reason, "camgate", None);
    let channel_id = match &message.start {
        wire::Start::Request { uri, .. } => uri
            .strip_prefix("sip:")
            .and_then(|u| u.split('@').next())
            .unwrap_or_default()
            .to_owned(),
        wire::Start::Response { .. } => return,
    };
    let offer = match media::parse_offer(&String::from_utf8_lossy(&message.body)) {
        Ok(o) => o,
        Err(e) => {
            count_invite("refused");
            warn!(upstream = %ctx.name, %channel_id, "cascade: INVITE refused: {e}");
            let _ = ctx
                .link
                .send(&reply(488, "Not Acceptable Here"), from)
                .await;
            return;
        }
    };
    let count = |outcome: &'static str| count_invite_of(offer.kind, outcome);
    let channels = ctx.catalog.exposed(&ctx.up);
    let Some(channel) = channels.iter().find(|c| c.id == channel_id) else {
        count("not_found");
        let _ = ctx.link.send(&reply(404, "Not Found"), from).await;
        return;
    };
    let key = match offer.range {
        None => StreamKey::from_path(&channel.stream).ok_or_else(|| "bad stream key".to_owned()),
        Some(range) => playback::recorded_key(&channel.stream, range).map_err(|e| e.to_string()),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) if offer.range.is_some() => {
            // A Foscam or telecom channel: the stream table plays no
            // recordings of theirs, so the offer cannot be served here.
            count("not_recorded");
            warn!(upstream = %ctx.name, %channel_id, "cascade: {} INVITE refused: {e}", offer.kind.sdp_name());
            let _ = ctx
                .link
                .send(
                    &reply(488, "Not Acceptable Here (no recordings of this channel)"),
                    from,
                )
                .await;
            return;
        }
        Err(_) => {
            count("not_found");
            let _ = ctx.link.send(&reply(404, "Not Found"), from).await;
            return;
        }
    };
    if lock(&ctx.catalog.sessions).len() >= MAX_SESSIONS {
        count("refused");
        let _ = ctx.link.send(&reply(486, "Busy Here"), from).await;
        return;
    }
    let _ = ctx.link.send(&reply(100, "Trying"), from).await;
    let cancel = ctx.shutdown.child_token();
    let acked = CancellationToken::new();
    lock(&ctx.catalog.sessions).insert(
        call_id.clone(),
        SessionHandle {
            cancel: cancel.clone(),
            acked: acked.clone(),
            recorded: offer.range.map(|_| key.clone()),
            infos: InfoSequence::default(),
        },
    );
    let task = InviteTask {
        name: ctx.name.to_owned(),
        message: message.clone(),
        from,
        key,
        channel_id,
        offer,
        local_ip: ctx.local.ip(),
        media: ctx.catalog.media.clone(),
        sessions: ctx.catalog.sessions.clone(),
        call_id,
        cancel,
        acked,
        upward: ctx.upward(),
    };
    tokio::spawn(task.run());
}

fn count_invite_of(kind: SessionKind, outcome: &'static str) {
    if kind.is_recorded() {
        metrics::get()
            .cascade_recorded_invites
            .get_or_create(&label("outcome", outcome))
            .inc();
    } else {
        count_invite(outcome);
    }
}

/// How long the TCP media connection may take after our 200.
const TCP_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The media socket made for an INVITE before answering it.
enum Bound {
    Udp(UdpSocket),
    Listen(tokio::net::TcpListener),
    /// We connect once answered.
    Connect,
}

/// One upward stream from INVITE to its end.
struct InviteTask {
    name: String,
    message: wire::Message,
    from: SocketAddr,
    key: StreamKey,
    channel_id: String,
    offer: media::Offer,
    local_ip: IpAddr,
    media: MediaServices,
    sessions: Sessions,
    call_id: String,
    cancel: CancellationToken,
    acked: CancellationToken,
    /// The upper platform, and the link to it.
    upward: Upward,
}

/// Resend `ok` to `to` until `acked` or 64·T1 from now (the deadline is
/// fixed at the start), T1 doubling to T2 in between.
async fn retransmit_until_acked(
    link: Link,
    ok: Vec<u8>,
    to: SocketAddr,
    acked: CancellationToken,
    ended: CancellationToken,
) {
    let give_up = tokio::time::Instant::now() + 64 * T1;
    let mut interval = T1;
    let mut next = tokio::time::Instant::now() + interval;
    while next < give_up {
        tokio::select! {
            _ = acked.cancelled() => return,
            _ = ended.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let _ = link.send(&ok, to).await;
        interval = (interval * 2).min(T2);
        next += interval;
    }
}

impl InviteTask {
    /// Answer the INVITE with an error and forget the session; `outcome`
    /// is counted unless the upper platform itself ended it.
    async fn refuse(&self, code: u16, reason: &str, outcome: Option<&'static str>) {
        if let Some(outcome) = outcome {
            count_invite_of(self.offer.kind, outcome);
        }
        let answer = wire::response_to(&self.message, code, reason, "camgate", None);
        let _ = self.upward.link.send(&answer, self.from).await;
        lock(&self.sessions).remove(&self.call_id);
    }

    async fn run(self) {
        let opened = tokio::select! {
            _ = self.cancel.cancelled() => None,
            r = tokio::time::timeout(INVITE_DEADLINE, session::open(&self.media, &self.key)) => Some(r),
        };
        let count = |outcome: &'static str| count_invite_of(self.offer.kind, outcome);
        let opened = match opened {
            None => return self.refuse(487, "Request Terminated", None).await,
            Some(Ok(Ok(o))) => o,
            Some(Ok(Err(e))) => {
                warn!(upstream = %self.name, stream = %self.key, "cascade: INVITE failed: {e}");
                return self
                    .refuse(503, "Service Unavailable", Some("failed"))
                    .await;
            }
            Some(Err(_)) => {
                warn!(upstream = %self.name, stream = %self.key, "cascade: stream did not open within {INVITE_DEADLINE:?}");
                return self.refuse(504, "Timeout", Some("failed")).await;
            }
        };
        let link = self.offer.link;
        let bound = match link {
            media::MediaLink::Udp => UdpSocket::bind((self.local_ip, 0))
                .await
                .map(|s| (s.local_addr().ok(), Bound::Udp(s))),
            media::MediaLink::TcpWeListen => tokio::net::TcpListener::bind((self.local_ip, 0))
                .await
                .map(|l| (l.local_addr().ok(), Bound::Listen(l))),
            // RFC 4145 §4.1: the active side announces port 9.
            media::MediaLink::TcpWeConnect => {
                Ok((Some(SocketAddr::new(self.local_ip, 9)), Bound::Connect))
            }
        };
        let (local, bound) = match bound {
            Ok((Some(local), b)) => (local, b),
            Ok((None, _)) | Err(_) => {
                warn!(upstream = %self.name, "cascade: no media socket");
                return self
                    .refuse(500, "Server Internal Error", Some("failed"))
                    .await;
            }
        };
        let ssrc = self
            .offer
            .ssrc
            .unwrap_or_else(|| (unix_now() as u32) % 1_000_000_000);
        let sdp = media::answer(
            &self.channel_id,
            local,
            ssrc,
            link,
            (self.offer.kind, self.offer.range),
        );
        let contact = format!(
            "<sip:{}@{}{}>",
            self.channel_id,
            self.upward.local,
            self.upward.link.transport().uri_param()
        );
        let ok = wire::response_with(
            &self.message,
            200,
            "OK",
            "camgate",
            &[("Contact", contact)],
            Some(("APPLICATION/SDP", sdp.as_bytes())),
        );
        let _ = self.upward.link.send(&ok, self.from).await;
        if !self.upward.link.reliable() {
            tokio::spawn(retransmit_until_acked(
                self.upward.link.clone(),
                ok,
                self.from,
                self.acked.clone(),
                self.cancel.clone(),
            ));
        }
        let dest = SocketAddr::new(self.offer.address, self.offer.port);
        // A TCP connection must be made within this long of our 200.
        let connect_by = tokio::time::Instant::now() + TCP_CONNECT_WAIT;
        let sink = match bound {
            Bound::Udp(socket) => Ok(session::Sink::Udp { socket, dest }),
            Bound::Listen(listener) => tokio::select! {
                _ = self.cancel.cancelled() => Err("ended before connecting".to_owned()),
                _ = tokio::time::sleep_until(connect_by) => Err("upper platform never connected".to_owned()),
                r = listener.accept() => r.map(|(s, _)| session::Sink::Tcp(s)).map_err(|e| e.to_string()),
            },
            Bound::Connect => tokio::select! {
                _ = self.cancel.cancelled() => Err("ended before connecting".to_owned()),
                _ = tokio::time::sleep_until(connect_by) => Err(format!("no connection to {dest}")),
                r = tokio::net::TcpStream::connect(dest) => r.map(session::Sink::Tcp).map_err(|e| e.to_string()),
            },
        };
        let sink = match sink {
            Ok(s) => s,
            Err(e) => {
                count("failed");
                warn!(upstream = %self.name, stream = %self.key, "cascade: media connection: {e}");
                lock(&self.sessions).remove(&self.call_id);
                return;
            }
        };
        count("ok");
        if let SessionKind::Download { speed } = self.offer.kind {
            self.download_speed(speed).await;
        }
        let label = self.key.to_string();
        let ended = session::send(opened, sink, ssrc, self.cancel.clone(), label).await;
        match ended {
            Err(e) => {
                warn!(upstream = %self.name, stream = %self.key, "cascade: upward stream: {e}")
            }
            Ok(session::Ended::StreamEnded) if self.offer.kind.is_recorded() => {
                self.recording_ended().await;
            }
            Ok(_) => {}
        }
        lock(&self.sessions).remove(&self.call_id);
    }

    /// A download runs as a playback at the nearest speed devices take
    /// (see [`playback::download_scale`]); a device refusing it leaves the
    /// download at 1×.
    async fn download_speed(&self, speed: u32) {
        let Some(scale) = playback::download_scale(speed) else {
            return;
        };
        let Some(control) = self.media.streams.playback(&self.key) else {
            return;
        };
        let command = crate::streams::PlaybackCommand::Scale(scale);
        match tokio::time::timeout(INFO_DEADLINE, control.command(command)).await {
            Ok(Ok(())) => {
                info!(upstream = %self.name, stream = %self.key, speed, scale, "cascade: download at speed")
            }
            Ok(Err(e)) => {
                warn!(upstream = %self.name, stream = %self.key, speed, "cascade: download speed refused: {e}")
            }
            Err(_) => {
                warn!(upstream = %self.name, stream = %self.key, speed, "cascade: download speed unanswered")
            }
        }
    }

    /// The recording played to its end: tell the upper platform
    /// (MediaStatus 121, A.2.5) and keep the dialog until its BYE, or
    /// [`END_BYE_WAIT`] from now, then hang up ourselves.
    async fn recording_ended(&self) {
        // Branch and Call-ID differ per dialog: FNV-1a of its Call-ID.
        let dialog = self.call_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let seed = unix_now() ^ dialog;
        let sn = (seed % 1_000_000) as u32;
        let notify =
            self.upward
                .message(&playback::media_status_end(sn, &self.channel_id), seed, "e");
        if let Err(e) = self
            .upward
            .link
            .send_request(&notify, self.upward.target)
            .await
        {
            warn!(upstream = %self.name, "cascade: sending MediaStatus 121: {e}");
        }
        info!(upstream = %self.name, stream = %self.key, channel = %self.channel_id, "cascade: recording ended; MediaStatus 121 sent");
        let give_up = tokio::time::Instant::now() + END_BYE_WAIT;
        let outcome = tokio::select! {
            _ = self.cancel.cancelled() => "upper_bye",
            _ = tokio::time::sleep_until(give_up) => "our_bye",
        };
        metrics::get()
            .cascade_recording_ends
            .get_or_create(&label("outcome", outcome))
            .inc();
        if outcome == "upper_bye" {
            return;
        }
        lock(&self.sessions).remove(&self.call_id);
        let Some(dialog) = CalleeDialog::from_invite(&self.message, "camgate") else {
            return;
        };
        let bye = dialog.bye(
            self.upward.link.transport(),
            self.upward.local,
            &format!("z9hG4bK{seed:x}b"),
        );
        let _ = self.upward.link.send_request(&bye, self.from).await;
        warn!(upstream = %self.name, stream = %self.key, "cascade: no BYE within {END_BYE_WAIT:?} of the recording's end; sent ours");
    }
}
