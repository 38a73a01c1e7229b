//! Wiring: SIP stack and GB28181 platform, stream table, RTSP server, HTTP
//! API, optional demo camera; graceful shutdown that BYEs every device.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::gb28181::invite::GbSources;
use crate::gb28181::platform::GbPlatform;
use crate::ingest::port_pool::PortPool;
use crate::media::hub::HubConfig;
use crate::rtsp::server::RtspServerConfig;
use crate::sip::stack::SipStack;
use crate::streams::{Streams, StreamsConfig};

/// How long shutdown waits for devices to acknowledge BYE.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Run the gateway until `shutdown` is cancelled.
pub async fn run(config: Config, demo: bool, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // The SIP stack outlives `shutdown` so BYEs can still be sent after it.
    let sip_cancel = CancellationToken::new();
    let (sip, incoming) = SipStack::bind(
        config.sip.listen,
        config.advertised_ip(),
        sip_cancel.clone(),
    )
    .await?;
    let sip_port = sip.local_udp.port();
    let ports = PortPool::new(
        config.media.rtp_bind,
        config.media.rtp_port_min,
        config.media.rtp_port_max,
    );
    let platform = GbPlatform::new(config.clone(), sip, ports);
    let streams = Streams::new(StreamsConfig {
        idle_timeout: config.streams.idle_timeout,
        start_timeout: config.sip.invite_timeout + Duration::from_millis(500),
        hub: HubConfig {
            queue_frames: config.media.viewer_queue_frames,
            gop_cache: config.media.gop_cache,
            ..HubConfig::default()
        },
        ..StreamsConfig::default()
    })
    .with_provider("gb", Arc::new(GbSources::new(platform.clone())));

    let rtsp_listener = TcpListener::bind(config.rtsp.listen)
        .await
        .with_context(|| format!("cannot listen for RTSP on {}", config.rtsp.listen))?;
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let rtsp_port = rtsp_listener.local_addr()?.port();
    let http_port = http_listener.local_addr()?.port();

    let webrtc = crate::webrtc::WebRtc::start(webrtc_config(&config), shutdown.clone())
        .await
        .with_context(|| format!("cannot bind the WebRTC UDP port {}", config.webrtc.udp_port))?;

    let mut tasks = tokio::task::JoinSet::new();
    {
        let platform = platform.clone();
        let cancel = sip_cancel.clone();
        tasks.spawn(async move { platform.run(incoming, cancel).await });
    }
    tasks.spawn(crate::rtsp::server::serve(
        rtsp_listener,
        streams.clone(),
        RtspServerConfig {
            session_timeout: config.rtsp.session_timeout,
            udp_bind_ip: config.media.rtp_bind,
            ..RtspServerConfig::default()
        },
        shutdown.clone(),
    ));
    {
        let state = crate::api::ApiState {
            streams: streams.clone(),
            gb: platform.clone(),
            webrtc: webrtc.clone(),
        };
        let cancel = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::api::serve(http_listener, state, cancel).await {
                warn!("HTTP API stopped: {e}");
            }
        });
    }

    let host = config.advertised_ip();
    info!(
        sip = %format!("{host}:{sip_port} (UDP+TCP)"),
        rtsp = %format!("rtsp://{host}:{rtsp_port}/gb/{{device}}/{{channel}}"),
        http = %format!("http://{host}:{http_port}/"),
        webrtc = ?webrtc.local_addrs(),
        "camgate is up"
    );
    if demo {
        let mut sim = crate::sim::gb_camera::SimCameraConfig::from_config(&config);
        sim.server = std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), sip_port);
        let cancel = sip_cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::sim::gb_camera::run(sim, cancel).await {
                warn!("demo camera stopped: {e:#}");
            }
        });
        println!(
            "demo camera {dev}: play rtsp://127.0.0.1:{rtsp_port}/gb/{dev}/{ch}",
            dev = config.demo.device_id,
            ch = config.demo.channel_id,
        );
    }

    shutdown.cancelled().await;
    info!("stopping streams");
    streams.shutdown(SHUTDOWN_GRACE).await;
    webrtc.wait().await;
    sip_cancel.cancel();
    tasks.shutdown().await;
    Ok(())
}

/// The WebRTC engine's settings; candidate IPs default to the advertised IP.
fn webrtc_config(config: &Config) -> crate::webrtc::WebRtcConfig {
    let w = &config.webrtc;
    crate::webrtc::WebRtcConfig {
        udp_port: w.udp_port,
        ips: if w.ips.is_empty() {
            vec![config.advertised_ip()]
        } else {
            w.ips.clone()
        },
        nat_1to1_ips: w.nat_1to1_ips.clone(),
        connect_timeout: w.connect_timeout,
        max_peers: w.max_peers,
        ..crate::webrtc::WebRtcConfig::default()
    }
}
