//! On-demand live sessions (GB/T 28181-2016 §9.2.2): the `gb` stream
//! source. A first viewer of `gb/{device}/{channel}` leads here: bind an
//! RTP port, make an SSRC, INVITE the channel with our SDP offer, take the
//! answer, and pump RTP/PS into the stream's hub until the viewers go (we
//! send BYE) or the device goes (its BYE, or silence).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::platform::GbPlatform;
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

/// The `gb` scheme's source provider.
pub struct GbSources {
    platform: Arc<GbPlatform>,
}

impl GbSources {
    pub fn new(platform: Arc<GbPlatform>) -> Self {
        Self { platform }
    }
}

impl SourceProvider for GbSources {
    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        Box::pin(start_live(self.platform.clone(), key, hub))
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
    let request = InviteRequest {
        request_uri: format!("sip:{channel}@{}", route.addr),
        from_uri: platform.our_uri(),
        contact_uri: format!("sip:{}@{}", config.sip.server_id, platform.sip.advertised),
        subject: format!("{channel}:{},{}:0", ssrc.as_str(), config.sip.server_id),
        sdp: offer.build(),
        dest: route.addr,
        transport: route.transport,
    };
    info!(port = ports.port, ssrc = ssrc.as_str(), "sending INVITE");
    let sent_at = Instant::now();
    let call = match invite(&platform.sip, request, config.sip.invite_timeout).await {
        Ok(call) => call,
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
            return Err(err);
        }
    };
    metrics::get()
        .invites
        .get_or_create(&label("outcome", "ok"))
        .inc();
    // The device may answer with its own SSRC (its `y=`), or none.
    let answered_ssrc = match GbSdp::parse(&call.answer_sdp) {
        Ok(answer) => answer.ssrc.as_deref().and_then(Ssrc::parse),
        Err(e) => {
            warn!("unreadable SDP answer ({e}); keeping the offered SSRC");
            None
        }
    };
    let expect = answered_ssrc.map(|s| s.value()).unwrap_or(ssrc.value());
    info!(ssrc = expect, "device accepted INVITE");
    let cancel = CancellationToken::new();
    let session = MediaSession {
        platform: platform.clone(),
        hub,
        ports,
        expect_ssrc: expect,
        ssrc,
        sent_at,
        rtp_timeout: config.media.rtp_timeout,
    };
    let span = tracing::Span::current();
    let task = tokio::spawn(session.run(call, cancel.clone()).instrument(span));
    Ok(SourceHandle { cancel, task })
}

struct MediaSession {
    platform: Arc<GbPlatform>,
    hub: Arc<Hub>,
    ports: BoundPair,
    expect_ssrc: u32,
    ssrc: Ssrc,
    sent_at: Instant,
    rtp_timeout: Duration,
}

impl MediaSession {
    /// Pump media until cancelled (then BYE) or the device ends the call.
    async fn run(self, mut call: Call, cancel: CancellationToken) -> String {
        let reason = tokio::select! {
            _ = cancel.cancelled() => None,
            r = call.ended() => Some(r),
            r = self.pump() => Some(r),
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
