//! On-demand live sessions (GB/T 28181-2016 §9.2.2): the `gb` stream
//! source. A first viewer of `gb/{device}/{channel}` leads here: bind an
//! RTP port, make an SSRC, INVITE the channel with our SDP offer, take the
//! answer, and pump RTP/PS into the stream's hub until the viewers go (we
//! send BYE) or the device goes (its BYE, or silence).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use bytes::Bytes;

use super::history::{HistoryKind, start_history};
use super::platform::{DeviceRoute, GbPlatform};
use super::playback::{GbPlayback, PlaybackRange, range_of_key_segment};
use super::reports::Report;
use super::sdp::GbSdp;
use super::ssrc::{Ssrc, SsrcKind};
use crate::ingest::port_pool::BoundPair;
use crate::ingest::udp::DatagramReader;
use crate::media::hub::Hub;
use crate::media::ps::PsEvent;
use crate::media::rtp::{RtpPacket, is_rtcp, peek_ssrc};
use crate::media::rtp_ps::RtpPsReceiver;
use crate::metrics::{self, label};
use crate::sip::invite::{Call, InviteError, InviteRequest, invite};
use crate::streams::{SourceHandle, SourceProvider, StartError, StartFuture, StreamKey};

/// The `gb` scheme's source provider: live `gb/{device}/{channel}` and
/// playback `gb/{device}/{channel}/playback/{start}-{end}` (see
/// [`super::playback::playback_key`]).
pub struct GbSources {
    platform: Arc<GbPlatform>,
    /// Trick-play control of each running playback, by stream key.
    playbacks: Arc<std::sync::Mutex<HashMap<StreamKey, Arc<GbPlayback>>>>,
}

impl GbSources {
    pub fn new(platform: Arc<GbPlatform>) -> Self {
        Self {
            platform,
            playbacks: Arc::default(),
        }
    }

    /// Pause/resume/scale/seek of a running playback stream.
    pub fn playback_control(&self, key: &StreamKey) -> Option<Arc<GbPlayback>> {
        super::platform::lock(&self.playbacks).get(key).cloned()
    }
}

impl SourceProvider for GbSources {
    fn playback(&self, key: &StreamKey) -> Option<Arc<dyn crate::streams::PlaybackControl>> {
        self.playback_control(key)
            .map(|c| c as Arc<dyn crate::streams::PlaybackControl>)
    }

    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        let segments: Vec<&str> = key.segments().collect();
        match segments.as_slice() {
            [_, _] => Box::pin(start_live(self.platform.clone(), key, hub)),
            [device, channel, "playback", range] => {
                let range = range_of_key_segment(range);
                Box::pin(self.start_playback(key, device, channel, range, hub))
            }
            _ => Box::pin(async move {
                Err(StartError::NotFound(format!(
                    "{key}: expected gb/{{device}}/{{channel}}[/playback/{{start}}-{{end}}]"
                )))
            }),
        }
    }
}

impl GbSources {
    async fn start_playback(
        &self,
        key: &StreamKey,
        device: &str,
        channel: &str,
        range: Option<PlaybackRange>,
        hub: Arc<Hub>,
    ) -> Result<SourceHandle, StartError> {
        let range = range.ok_or_else(|| {
            StartError::NotFound(format!("{key}: the range must be {{start}}-{{end}}"))
        })?;
        let session = start_history(
            self.platform.clone(),
            device,
            channel,
            range,
            HistoryKind::Playback,
            hub,
            None,
        )
        .await?;
        let control = Arc::new(GbPlayback::new(session.control, session.paused));
        super::platform::lock(&self.playbacks).insert(key.clone(), control.clone());
        // The control goes with the session: forget it when the task ends.
        let playbacks = self.playbacks.clone();
        let key = key.clone();
        let mut inner = session.source.task;
        let task = tokio::spawn(async move {
            let reason = (&mut inner)
                .await
                .unwrap_or_else(|e| format!("playback task failed: {e}"));
            let mut table = super::platform::lock(&playbacks);
            if table.get(&key).is_some_and(|c| Arc::ptr_eq(c, &control)) {
                table.remove(&key);
            }
            reason
        });
        Ok(SourceHandle {
            cancel: session.source.cancel,
            task,
        })
    }
}

async fn start_live(
    platform: Arc<GbPlatform>,
    key: &StreamKey,
    hub: Arc<Hub>,
) -> Result<SourceHandle, StartError> {
    let mut segments = key.segments();
    let (Some(device), Some(channel), None) = (segments.next(), segments.next(), segments.next())
    else {
        return Err(StartError::NotFound(format!(
            "{key}: expected gb/{{device}}/{{channel}}"
        )));
    };
    let route = platform.route_for_channel(device, channel)?;
    let ports = platform
        .ports
        .bind_pair()
        .await
        .map_err(|_| StartError::NoPort)?;
    let ssrc = platform.allocate_ssrc(SsrcKind::Live)?;
    let config = platform.config();
    let ip = config.advertised_ip();
    let offer = GbSdp::live_offer(
        &config.sip.server_id,
        &ip.to_string(),
        ports.port,
        ssrc.as_str(),
    );
    let sent_at = Instant::now();
    let call = send_invite(&platform, &route, channel, ssrc, offer.build()).await?;
    let expect = answered_ssrc(&call, ssrc);
    let cancel = CancellationToken::new();
    let session = MediaSession {
        platform: platform.clone(),
        hub,
        ports,
        expect_ssrc: expect,
        ssrc,
        sent_at,
        rtp_timeout: config.media.rtp_timeout,
        end_of_file: None,
        ps_sink: None,
        paused: None,
    };
    let span = tracing::Span::current();
    let task = tokio::spawn(session.run(call, cancel.clone()).instrument(span));
    Ok(SourceHandle { cancel, task })
}

/// INVITE `channel` with `sdp` (GB/T 28181-2016 §9.2.2 `Subject:
/// {channel}:{ssrc},{server}:0`), counting the outcome; the SSRC is
/// released when the device does not accept.
pub(crate) async fn send_invite(
    platform: &GbPlatform,
    route: &DeviceRoute,
    channel: &str,
    ssrc: Ssrc,
    sdp: String,
) -> Result<Call, StartError> {
    let config = platform.config();
    let request = InviteRequest {
        request_uri: format!("sip:{channel}@{}", route.addr),
        from_uri: platform.our_uri(),
        contact_uri: format!("sip:{}@{}", config.sip.server_id, platform.sip.advertised),
        subject: format!("{channel}:{},{}:0", ssrc.as_str(), config.sip.server_id),
        sdp,
        dest: route.addr,
        transport: route.transport,
    };
    info!(ssrc = ssrc.as_str(), "sending INVITE");
    match invite(&platform.sip, request, config.sip.invite_timeout).await {
        Ok(call) => {
            metrics::get()
                .invites
                .get_or_create(&label("outcome", "ok"))
                .inc();
            Ok(call)
        }
        Err(e) => {
            platform.release_ssrc(ssrc);
            let (outcome, err) = match e {
                InviteError::Timeout(t) => ("timeout", StartError::Timeout(t)),
                InviteError::Rejected { code, reason } => {
                    ("rejected", StartError::Rejected { code, reason })
                }
                other => ("error", StartError::Failed(other.to_string())),
            };
            metrics::get()
                .invites
                .get_or_create(&label("outcome", outcome))
                .inc();
            warn!("INVITE failed: {err}");
            Err(err)
        }
    }
}

/// The SSRC the media will carry: the device may answer with its own
/// (its `y=`), or none, which keeps ours.
pub(crate) fn answered_ssrc(call: &Call, offered: Ssrc) -> u32 {
    let answered = match GbSdp::parse(&call.answer_sdp) {
        Ok(answer) => answer.ssrc.as_deref().and_then(Ssrc::parse),
        Err(e) => {
            warn!("unreadable SDP answer ({e}); keeping the offered SSRC");
            None
        }
    };
    let expect = answered.map(|s| s.value()).unwrap_or(offered.value());
    info!(ssrc = expect, "device accepted INVITE");
    expect
}

/// Which device report ends a recorded session: `MediaStatus` 121 from
/// the channel (GB/T 28181-2016 A.2.5 MediaStatus). Devices name only the
/// channel, so two recordings of one channel at once both end on it.
pub(crate) struct EndOfFile {
    pub(crate) device: String,
    pub(crate) channel: String,
    pub(crate) reports: tokio::sync::broadcast::Receiver<(String, Report)>,
}

impl EndOfFile {
    async fn wait(&mut self) {
        loop {
            match self.reports.recv().await {
                Ok((
                    device,
                    Report::MediaStatus {
                        device_id,
                        notify_type,
                    },
                )) if notify_type == "121"
                    && device == self.device
                    && (device_id == self.channel || device_id == self.device) =>
                {
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    }
}

pub(crate) struct MediaSession {
    pub(crate) platform: Arc<GbPlatform>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) ports: BoundPair,
    pub(crate) expect_ssrc: u32,
    pub(crate) ssrc: Ssrc,
    pub(crate) sent_at: Instant,
    pub(crate) rtp_timeout: Duration,
    /// Recorded media: the device's end-of-file notify ends the session.
    pub(crate) end_of_file: Option<EndOfFile>,
    /// Downloads: every RTP payload (the PS byte stream), in arrival order.
    pub(crate) ps_sink: Option<tokio::sync::mpsc::Sender<Bytes>>,
    /// Set while a viewer has the playback paused: no RTP is expected.
    pub(crate) paused: Option<Arc<AtomicBool>>,
}

impl MediaSession {
    /// Pump media until cancelled (then BYE) or the device ends the call.
    pub(crate) async fn run(mut self, mut call: Call, cancel: CancellationToken) -> String {
        let mut end_of_file = self.end_of_file.take();
        let eof = async {
            match end_of_file.as_mut() {
                Some(e) => e.wait().await,
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            _ = cancel.cancelled() => None,
            r = call.ended() => Some(r),
            r = self.pump() => Some(r),
            _ = eof => Some(crate::streams::SOURCE_FINISHED.to_owned()),
        };
        self.platform.release_ssrc(self.ssrc);
        match reason {
            None => {
                metrics::get().byes_sent.inc();
                if let Err(e) = call.bye().await {
                    warn!("BYE failed: {e}");
                } else {
                    info!("sent BYE");
                }
                "stopped".to_owned()
            }
            Some(r) => {
                // The device is gone or silent; tell it anyway, harmlessly.
                if !r.contains("BYE") {
                    metrics::get().byes_sent.inc();
                    let _ = call.bye().await;
                }
                r
            }
        }
    }

    async fn pump(&self) -> String {
        let mut reader = DatagramReader::new();
        let mut receiver = RtpPsReceiver::with_ssrc(self.expect_ssrc);
        let mut lost = 0u64;
        let mut copied = 0u64;
        let mut events = Vec::new();
        let mut first_frame = true;
        let mut source: Option<SocketAddr> = None;
        let mut rtcp_buf = [0u8; 1500];
        loop {
            let datagram = tokio::select! {
                r = tokio::time::timeout(self.rtp_timeout, reader.recv(&self.ports.rtp)) => r,
                // Devices' RTCP is read only so it does not queue up; it is
                // never fed to the RTP path.
                _ = self.ports.rtcp.recv_from(&mut rtcp_buf) => continue,
            };
            let (data, from) = match datagram {
                // A paused playback is silent by design.
                Err(_)
                    if self
                        .paused
                        .as_ref()
                        .is_some_and(|p| p.load(Ordering::Relaxed)) =>
                {
                    continue;
                }
                Err(_) => return format!("no RTP for {:?}", self.rtp_timeout),
                Ok(Err(e)) => return format!("RTP socket error: {e}"),
                Ok(Ok(d)) => d,
            };
            let m = metrics::get();
            m.rtp_packets_received.inc();
            m.rtp_bytes_received.inc_by(data.len() as u64);
            if is_rtcp(&data) {
                m.rtp_errors
                    .get_or_create(&label("kind", "rtcp_on_rtp_port"))
                    .inc();
                continue;
            }
            if peek_ssrc(&data) != Some(self.expect_ssrc) {
                m.rtp_errors
                    .get_or_create(&label("kind", "unknown_ssrc"))
                    .inc();
                debug!(%from, ssrc = ?peek_ssrc(&data), "packet with unexpected SSRC dropped");
                continue;
            }
            if source.is_none() {
                source = Some(from);
                debug!(%from, "first RTP packet");
            }
            let packet = match RtpPacket::parse(data) {
                Ok(p) => p,
                Err(e) => {
                    m.rtp_errors.get_or_create(&label("kind", e.kind())).inc();
                    continue;
                }
            };
            if let Some(sink) = &self.ps_sink
                && sink.send(packet.payload.clone()).await.is_err()
            {
                return "download writer stopped".to_owned();
            }
            receiver.push(packet, &mut events);
            let stats = receiver.stats();
            if stats.lost > lost {
                m.rtp_packets_lost.inc_by(stats.lost - lost);
                lost = stats.lost;
            }
            let total_copied = receiver.bytes_copied();
            if total_copied > copied {
                m.payload_bytes_copied.inc_by(total_copied - copied);
                copied = total_copied;
            }
            for event in events.drain(..) {
                match event {
                    PsEvent::Frame(frame) => {
                        if first_frame {
                            first_frame = false;
                            m.invite_first_frame_seconds
                                .observe(self.sent_at.elapsed().as_secs_f64());
                        }
                        m.frames_demuxed.inc();
                        self.hub.publish(frame);
                    }
                    PsEvent::Info(info) => self.hub.set_info(info),
                    PsEvent::Error(e) => {
                        m.ps_demux_errors
                            .get_or_create(&label("kind", e.kind()))
                            .inc();
                        debug!("PS demux: {e}");
                    }
                }
            }
        }
    }
}
