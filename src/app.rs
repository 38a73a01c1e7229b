//! Wiring: SIP stack and GB28181 platform, stream table, RTSP server, HTTP
//! API, optional demo camera; SIGHUP reload; graceful drain that closes
//! viewers, BYEs every device and exits within `shutdown_grace`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::foscam::FoscamSources;
use crate::gb28181::invite::GbSources;
use crate::gb28181::platform::GbPlatform;
use crate::health::Health;
use crate::ingest::port_pool::PortPool;
use crate::media::hub::HubConfig;
use crate::reload::LiveConfig;
use crate::rtsp::auth::Authenticator;
use crate::rtsp::server::RtspServerConfig;
use crate::rtsp::tokens::TokenStore;
use crate::sip::stack::SipStack;
use crate::streams::{Streams, StreamsConfig};

/// Part of the grace kept back from the BYE wait for the final teardown.
const TEARDOWN_RESERVE: Duration = Duration::from_millis(500);

/// Run the gateway on a fixed configuration until `shutdown` is cancelled.
pub async fn run(config: Config, demo: bool, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_live(LiveConfig::new(config, None), demo, shutdown).await
}

/// Run the gateway until `shutdown` is cancelled; SIGHUP reloads `live`.
pub async fn run_live(
    live: LiveConfig,
    demo: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = live.get();
    let health = Health::new();
    let mut config = (*config).clone();
    // The demo Foscam camera listens before the camera list is read, so
    // its entry can name the port it got.
    let demo_foscam = if demo {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        config.foscam.push(crate::config::FoscamCameraConfig {
            name: "demo".into(),
            host: "127.0.0.1".into(),
            port: listener.local_addr()?.port(),
            ..Default::default()
        });
        Some(listener)
    } else {
        None
    };
    let config = Arc::new(config);
    if let Some(overlap) = crate::config::ephemeral_ports()
        .and_then(|ephemeral| config.media.ports_in_ephemeral_range(&ephemeral))
    {
        warn!(
            "{overlap}: they are bound only when a stream starts, and any outgoing \
             socket on this host may hold one by then; move them below or above it"
        );
    }
    // The SIP stack outlives `shutdown` so BYEs can still be sent after it.
    let sip_cancel = CancellationToken::new();
    let (sip, incoming) = SipStack::bind_limited(
        config.sip.listen,
        config.advertised_ip(),
        &config.limits,
        sip_cancel.clone(),
    )
    .await?;
    let sip_port = sip.local_udp.port();
    let ports = PortPool::new(
        config.media.rtp_bind,
        config.media.rtp_port_min,
        config.media.rtp_port_max,
    );
    let platform = GbPlatform::new(live.clone(), sip, ports);
    // ---- cluster (issue 18): placement of REGISTERs and viewers ----
    let cluster = config
        .cluster
        .enabled
        .then(|| crate::cluster::Cluster::new(config.cluster.clone()));
    if let Some(c) = &cluster {
        platform.set_cluster(c.clone());
    }
    let streams = Streams::new(StreamsConfig {
        idle_timeout: config.streams.idle_timeout,
        reconnect_window: config.streams.reconnect_window,
        start_timeout: config.sip.invite_timeout + Duration::from_millis(500),
        hub: HubConfig {
            queue_frames: config.media.viewer_queue_frames,
            queue_duration: config.media.viewer_queue_seconds,
            gop_cache: config.media.gop_cache,
            ..HubConfig::default()
        },
        ..StreamsConfig::default()
    })
    .with_provider("gb", {
        let local: Arc<dyn crate::streams::SourceProvider> =
            Arc::new(GbSources::new(platform.clone()));
        // Relay mode: another node's devices are pulled from it.
        match &cluster {
            Some(c)
                if c.config().viewer_routing == crate::cluster::config::ViewerRouting::Relay =>
            {
                Arc::new(crate::cluster::relay::RelaySources::new(
                    local,
                    c.clone(),
                    config.sip.invite_timeout + Duration::from_secs(5),
                ))
            }
            _ => local,
        }
    });
    let (ctel, ctel_listener) = crate::ctel::server::bind_platform(&config, demo).await?;
    let streams = match &ctel {
        Some(p) => streams.with_provider(
            "ctel",
            Arc::new(crate::ctel::source::CtelSources::new(p.clone())),
        ),
        None => streams,
    };
    let foscam = Arc::new(FoscamSources::spawn(&config.foscam, &sip_cancel));
    let streams = streams.with_provider("foscam", foscam.clone());
    let streams = match &cluster {
        Some(c) => streams.with_owners(Arc::new(c.clone())),
        None => streams,
    };

    let rtsp_listener = TcpListener::bind(config.rtsp.listen)
        .await
        .with_context(|| format!("cannot listen for RTSP on {}", config.rtsp.listen))?;
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let rtsp_port = rtsp_listener.local_addr()?.port();
    let http_port = http_listener.local_addr()?.port();

    // The HTTP API outlives `shutdown` so /readyz can say "draining" and
    // /metrics stays scrapeable while devices are sent BYE.
    let http_cancel = CancellationToken::new();
    let webrtc = crate::webrtc::WebRtc::start(webrtc_config(&config), shutdown.clone())
        .await
        .with_context(|| format!("cannot bind the WebRTC UDP port {}", config.webrtc.udp_port))?;

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::reload::reload_on_sighup(
        live.clone(),
        sip_cancel.clone(),
    ));
    {
        let platform = platform.clone();
        let cancel = sip_cancel.clone();
        tasks.spawn(async move { platform.run(incoming, cancel).await });
    }
    // Foscam alarms join the GB28181 event feed (API, SSE, webhook): the
    // southbound adapters stay unaware of each other, this is where they meet.
    for camera in foscam.cameras() {
        let mut alarms = camera.events.subscribe();
        let platform = platform.clone();
        let device = format!("foscam/{}", camera.config.name);
        tasks.spawn(async move {
            loop {
                match alarms.recv().await {
                    Ok(alarm) => platform.record_event(
                        &device,
                        crate::gb28181::events::EventKind::CameraAlarm {
                            source: "foscam",
                            alarm: serde_json::to_value(alarm.kind)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_else(|| format!("{:?}", alarm.kind)),
                            area: (alarm.area != [0; 4]).then_some(alarm.area),
                        },
                    ),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    let tokens = Arc::new(TokenStore::new(config.rtsp.auth.token_ttl()));
    let rtsp_auth = Arc::new(Authenticator::new(config.rtsp.auth.clone(), tokens.clone()));
    tasks.spawn(crate::rtsp::server::serve(
        rtsp_listener,
        streams.clone(),
        RtspServerConfig {
            session_timeout: config.rtsp.session_timeout,
            udp_bind_ip: config.media.rtp_bind,
            auth: Some(rtsp_auth.clone()),
            max_viewers: config.rtsp.max_viewers,
            stall_timeout: config.rtsp.stall_timeout,
            send_buffer: config.rtsp.send_buffer,
            audio_only_after: config.media.audio_only_after,
            max_connections_per_ip: config.limits.max_connections_per_ip,
            request_timeout: config.limits.request_timeout,
            ..RtspServerConfig::default()
        },
        shutdown.clone(),
    ));
    // Camera alarms for the upper platforms, in the neutral shape the
    // cascade reads (it may not import the adapters).
    let alarm_feed = crate::streams::alarms::feed();
    {
        let mut events = platform.event_tx.subscribe();
        let feed = alarm_feed.clone();
        tasks.spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let Some(alarm) = channel_alarm(&e) {
                            // No upstream listening: nobody to tell.
                            let _ = feed.send(alarm);
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
    // Cascade (issue 19): register to the upper platforms configured.
    let cascade_cancel = CancellationToken::new();
    let crate::cascade::driver::Cascade {
        status: cascade_status,
        tasks: cascade_tasks,
    } = crate::cascade::driver::spawn(
        &config.cascade,
        // This node's own devices: a cascade does not span a cluster (yet).
        device_directories(&platform, &foscam, ctel.as_ref(), None),
        channel_controls(&platform, &foscam, ctel.as_ref()),
        crate::cascade::session::MediaServices {
            streams: streams.clone(),
            transcodes: Arc::new(crate::transcode::shared::Transcodes::new(
                config.transcode.to_transcode_config(),
            )),
            describe_timeout: Duration::from_secs(10),
        },
        alarm_feed,
        cascade_cancel.clone(),
    );
    {
        let state = crate::api::ApiState {
            streams: streams.clone(),
            gb: platform.clone(),
            health: health.clone(),
            tokens: tokens.clone(),
            ctel: ctel.clone(),
            foscam: foscam.clone(),
            webrtc: webrtc.clone(),
            whep_auth: Arc::new(crate::webrtc::whep_auth::WhepAuth::new(
                rtsp_auth.clone(),
                &config.rtsp.auth,
            )),
            directories: device_directories(&platform, &foscam, ctel.as_ref(), cluster.as_ref()),
            cascade: cascade_status.clone(),
            ports: crate::api::Ports {
                http: http_port,
                rtsp: rtsp_port,
            },
            cors: Arc::new(crate::api::cors::CorsPolicy {
                api_origins: config.http.cors_origins.clone(),
                private_network_access: config.http.private_network_access,
            }),
            access: Arc::new(crate::api::access::ApiAccess::new(
                config.http.auth_mode(),
                &config.http.api_keys,
                &config.rtsp.auth.users,
                &config.rtsp.auth.realm,
                config.metrics.auth,
            )),
            cluster: cluster.clone(),
        };
        let cancel = http_cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::api::serve(http_listener, state, cancel).await {
                warn!("HTTP API stopped: {e}");
            }
        });
    }

    if let (Some(p), Some(listener)) = (&ctel, ctel_listener) {
        tasks.spawn(crate::ctel::server::serve(
            listener,
            p.clone(),
            config.limits.clone(),
            shutdown.clone(),
        ));
    }

    if let Some(c) = &cluster {
        let ip = config.advertised_ip();
        let a = &config.cluster.advertise;
        let advertised = crate::cluster::Advertised {
            sip: a.sip.unwrap_or((ip, sip_port).into()),
            rtsp: a.rtsp.unwrap_or((ip, rtsp_port).into()),
            http: a.http.unwrap_or((ip, http_port).into()),
        };
        let gb = platform.clone();
        let load = Box::new(move || crate::cluster::records::Load {
            devices: gb.devices().len() as u64,
            streams: crate::metrics::get().streams_active.get().max(0) as u64,
            viewers: crate::metrics::get().viewers.get().max(0) as u64,
        });
        let driver = c.start(
            advertised,
            platform.clone(),
            load,
            health.clone(),
            sip_cancel.clone(),
        )?;
        tasks.spawn(async move {
            let _ = driver.await;
        });
        // Events cluster-wide: ours out to the Redis Stream, the other
        // nodes' in to our feed (SSE, webhook, GET /api/v1/events).
        let (to_stream, from_here) = tokio::sync::mpsc::channel(1024);
        let mut ours = platform.event_tx.subscribe();
        tasks.spawn(async move {
            use crate::gb28181::events::EventKind;
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match ours.recv().await {
                    Ok(e) if matches!(e.kind, EventKind::Cluster { .. }) => {}
                    Ok(e) => {
                        if let Ok(v) = serde_json::to_value(&e) {
                            // Full (Redis slow or down): the event stays local.
                            let _ = to_stream.try_send(v);
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                }
            }
        });
        let gb = platform.clone();
        c.start_events(
            from_here,
            Box::new(move |node: &str, event| gb.record_cluster_event(node, event)),
            sip_cancel.clone(),
        )?;
        info!(node = %c.node_id(), sip = %advertised.sip, "cluster node starting");
    }
    health.set_listeners_bound();
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
    if let Some(listener) = demo_foscam {
        let cancel = sip_cancel.clone();
        let sim = crate::sim::foscam_camera::SimFoscamConfig {
            alarm_every: (!config.demo.alarm_every.is_zero()).then_some(config.demo.alarm_every),
            ..Default::default()
        };
        tasks.spawn(async move {
            if let Err(e) = crate::sim::foscam_camera::serve(listener, sim, cancel).await {
                warn!("demo Foscam camera stopped: {e:#}");
            }
        });
        println!(
            "demo Foscam camera: play rtsp://127.0.0.1:{rtsp_port}/foscam/demo or open http://127.0.0.1:{http_port}/mjpeg/foscam/demo"
        );
    }

    if demo && ctel.is_some() {
        let sim = crate::sim::ctel_camera::SimCtelConfig::new(
            format!("http://127.0.0.1:{http_port}/ctel/register"),
            crate::ctel::server::DEMO_DEV_ID.into(),
            crate::ctel::server::DEMO_DEV_KEY.into(),
        );
        let cancel = sip_cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::sim::ctel_camera::run(sim, cancel).await {
                warn!("demo telecom camera stopped: {e:#}");
            }
        });
        println!(
            "demo telecom camera {dev}: play rtsp://127.0.0.1:{rtsp_port}/ctel/{dev}/0",
            dev = crate::ctel::server::DEMO_DEV_ID,
        );
    }

    shutdown.cancelled().await;
    // The RTSP server saw the same token: it no longer accepts and closes
    // its viewers' connections. Sources are stopped next, each sending BYE.
    health.set_draining();
    let grace = live.get().shutdown_grace.0;
    let started = tokio::time::Instant::now();
    info!(
        grace_s = grace.as_secs_f64(),
        "draining: viewers closed, sending BYE to devices"
    );
    // Unregister from upper platforms (Expires: 0) while streams drain.
    cascade_cancel.cancel();
    streams
        .shutdown(grace.saturating_sub(TEARDOWN_RESERVE))
        .await;
    let cascade_left = grace.saturating_sub(started.elapsed());
    if tokio::time::timeout(cascade_left, futures_join(cascade_tasks))
        .await
        .is_err()
    {
        warn!("cascade: unregistering did not finish within shutdown_grace");
    }
    webrtc.wait().await;
    sip_cancel.cancel();
    http_cancel.cancel();
    let left = grace
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    if tokio::time::timeout(left, tasks.shutdown()).await.is_err() {
        warn!("tasks did not stop within shutdown_grace; exiting anyway");
    }
    info!(took_s = started.elapsed().as_secs_f64(), "drained");
    Ok(())
}

/// Wait for every task (their panics are already logged by tokio).
async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
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
        transcode: config.transcode.to_transcode_config(),
        audio_only_after: config.media.audio_only_after,
        ..crate::webrtc::WebRtcConfig::default()
    }
}

/// Each adapter's way to act on its channels (PTZ, recordings), for the
/// cascade.
fn channel_controls(
    gb: &Arc<crate::gb28181::platform::GbPlatform>,
    foscam: &Arc<FoscamSources>,
    ctel: Option<&Arc<crate::ctel::platform::CtelPlatform>>,
) -> Arc<[Arc<dyn crate::streams::control::ChannelControl>]> {
    let mut all: Vec<Arc<dyn crate::streams::control::ChannelControl>> =
        vec![gb.clone(), foscam.clone()];
    if let Some(c) = ctel {
        all.push(c.clone());
    }
    all.into()
}

/// Each adapter's device list, in the order the API groups them.
fn device_directories(
    gb: &Arc<crate::gb28181::platform::GbPlatform>,
    foscam: &Arc<FoscamSources>,
    ctel: Option<&Arc<crate::ctel::platform::CtelPlatform>>,
    cluster: Option<&crate::cluster::Cluster>,
) -> Arc<[Arc<dyn crate::streams::directory::DeviceDirectory>]> {
    // In a cluster the GB28181 list is every node's devices.
    let gb: Arc<dyn crate::streams::directory::DeviceDirectory> = match cluster {
        Some(c) => c.directory(gb.clone()),
        None => gb.clone(),
    };
    let mut all: Vec<Arc<dyn crate::streams::directory::DeviceDirectory>> =
        vec![gb, foscam.clone()];
    if let Some(c) = ctel {
        all.push(c.clone());
    }
    all.into()
}

/// A device event as an alarm the cascade tells upper platforms, if it is
/// one: a GB28181 alarm (its device's channels are `gb/{device}/…`; the
/// alarm's DeviceID names the channel, or the device itself), or a Foscam
/// motion or input alarm (its end, `stop`, is not an alarm of its own).
/// Another cluster node's events stay with that node's cascade.
fn channel_alarm(
    e: &crate::gb28181::events::Event,
) -> Option<crate::streams::alarms::ChannelAlarm> {
    use crate::gb28181::events::EventKind;
    use crate::streams::alarms::ChannelAlarm;
    let received = || crate::media::datetime::format(e.received);
    match &e.kind {
        EventKind::Alarm(a) => Some(ChannelAlarm {
            device: format!("gb/{}", e.device_id),
            channel: (!a.device_id.is_empty()).then(|| a.device_id.clone()),
            priority: a.priority,
            method: a.method,
            time: a.time.clone().unwrap_or_else(received),
            description: a.description.clone(),
            alarm_type: a.alarm_type,
        }),
        EventKind::CameraAlarm { source, alarm, .. } if alarm != "stop" => {
            // A.2.5.3: video alarm (method 5) type 2 is motion detection;
            // an alarm input is a device alarm (method 2).
            let (method, alarm_type) = if alarm == "motion" {
                (5, Some(2))
            } else {
                (2, None)
            };
            Some(ChannelAlarm {
                device: e.device_id.clone(),
                channel: None,
                priority: None,
                method: Some(method),
                time: received(),
                description: Some(format!("{source} {alarm}")),
                alarm_type,
            })
        }
        _ => None,
    }
}
