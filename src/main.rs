//! `camgate`: run the gateway, check a config, or run a simulated camera.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use camgate::config::Config;

#[derive(Parser)]
#[command(version, about = "Media gateway: GB28181 cameras to RTSP and WebRTC")]
struct Cli {
    /// Configuration file (YAML). Without it the embedded default is used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Also start a simulated GB28181 camera that registers over loopback.
    #[arg(long)]
    demo: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit.
    CheckConfig { file: PathBuf },
    /// Describe a capture: MPEG-PS, raw RTP packets back to back, or RTP
    /// with RFC 4571 length prefixes (streams, codecs, resolution, frames,
    /// GOP, duration, losses, errors).
    Probe {
        file: PathBuf,
        /// G.711 law of audio no PSM declares (as `media.default_g711`).
        #[arg(long, value_parser = ["alaw", "ulaw"], default_value = "alaw")]
        default_g711: String,
    },
    /// Run only a simulated GB28181 camera against the SIP server of the
    /// configuration (ids default to the `demo` section), for tests and trials.
    SimCamera {
        #[arg(long)]
        device_id: Option<String>,
        #[arg(long)]
        channel_id: Option<String>,
        /// Never answer INVITE: a camera that registers but is dead.
        #[arg(long)]
        ignore_invites: bool,
        /// Refuse TCP/RTP/AVP offers (488), like a UDP-only camera.
        #[arg(long)]
        no_tcp: bool,
        /// Answer INVITE without a `y=` SSRC line.
        #[arg(long)]
        omit_ssrc: bool,
        /// Send (and answer, unless --omit-ssrc) this SSRC instead of the
        /// offered one.
        #[arg(long)]
        answer_ssrc: Option<u32>,
        /// Stream the H.265 demo clip (PS stream type 0x24).
        #[arg(long)]
        h265: bool,
        /// Add a G.711 A-law tone to the PS (stream id 0xC0, type 0x90).
        #[arg(long)]
        audio: bool,
        /// Ask for talk (voice broadcast) audio over TCP: `passive` (we
        /// listen, the gateway connects) or `active` (we connect).
        #[arg(long, value_parser = ["passive", "active"])]
        talk_tcp: Option<String>,
        /// Add AAC audio from this ADTS file (looped; PS stream type 0x0F)
        /// instead of the G.711 tone.
        #[arg(long)]
        aac: Option<PathBuf>,
        /// Send this MPEG-PS file as it is (looped, paced by its PTS)
        /// instead of the demo clip: replays a capture or a quirk case.
        #[arg(long)]
        ps_file: Option<PathBuf>,
        /// Send the RTP packets of this RFC 4571 capture as they are
        /// (looped, paced by their timestamps, our SSRC) instead of the clip.
        #[arg(long)]
        rtp_file: Option<PathBuf>,
        /// Run this many cameras; camera i adds i to the device and
        /// channel ids (and to a fixed SIP port).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
        /// Tag every frame with an SEI naming the device, so viewers can
        /// check whose frames they received.
        #[arg(long)]
        mark_frames: bool,
        /// Send media to this IP instead of the offered one (same port),
        /// e.g. a fault-injection proxy.
        #[arg(long)]
        media_ip: Option<std::net::IpAddr>,
        /// Seconds between keepalives (default 60).
        #[arg(long)]
        keepalive_interval: Option<f64>,
        /// Unanswered keepalives in a row before registering again at the
        /// configured server (default 3, GB/T 28181-2016 §9.6.1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        keepalive_misses: Option<u32>,
        /// Never send the answer to the first N Catalog queries (each
        /// still gets its 200 OK), as if it were lost on the way.
        #[arg(long, default_value_t = 0)]
        lose_catalog_answers: u32,
        /// Stream this RTP dump (packets back to back with no length
        /// prefix, e.g. the Hikvision capture `hik_h264_704x576.rtp`),
        /// frame by frame at 25 fps, instead of the demo clip.
        #[arg(long)]
        rtp_dump: Option<PathBuf>,
        /// Start each call's `--rtp-dump` replay after a random wait below
        /// this many milliseconds, so the cameras' GOPs are not in phase.
        #[arg(long, default_value_t = 0)]
        start_jitter_ms: u64,
    },
    /// Load test: one lightweight RTSP viewer (TCP interleaved, counts
    /// packets) per camera of `sim-camera --count`, reporting per interval.
    #[command(hide = true)]
    RtspLoad {
        /// e.g. rtsp://127.0.0.1:8554
        #[arg(long, default_value = "rtsp://127.0.0.1:8554")]
        server: String,
        #[arg(long)]
        device_id: Option<String>,
        #[arg(long)]
        channel_id: Option<String>,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Seconds between report lines.
        #[arg(long, default_value_t = 10.0)]
        report_secs: f64,
    },
    /// Run only a simulated China Telecom 手机看店 camera that registers at
    /// the gateway of the configuration (ids default to the first
    /// `ctel.devices` entry).
    SimCtel {
        #[arg(long)]
        register_url: Option<String>,
        #[arg(long)]
        dev_id: Option<String>,
        #[arg(long)]
        dev_key: Option<String>,
        /// Port of the camera's own RTSP server (0 = any).
        #[arg(long, default_value_t = 0)]
        rtsp_port: u16,
        /// Serve `GET /status` (what the camera saw) on this port.
        #[arg(long)]
        status_port: Option<u16>,
        #[arg(long, default_value_t = 120.0)]
        heartbeat_secs: f64,
        /// Send this many heartbeats, then hang silently.
        #[arg(long)]
        heartbeats: Option<u32>,
        /// Advertise a closed LocalIP port so viewers must use UpnpIP.
        #[arg(long)]
        dead_local_address: bool,
    },
    /// Make an HTTP API key: prints the key (give it to the client) and the
    /// `http.api_keys` entry holding its SHA-256 (put it in the config).
    ApiKey {
        /// Who will hold the key (logs only).
        #[arg(long, default_value = "ops")]
        name: String,
        /// read (listings) or admin (everything).
        #[arg(long, value_parser = ["read", "admin"], default_value = "admin")]
        scope: String,
    },
    /// Run only a simulated Foscam MJPEG camera (MO_O / MO_V protocol).
    SimFoscam {
        /// Address to listen on (both connections use it).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "admin")]
        user: String,
        #[arg(long, default_value = "")]
        password: String,
        /// Refuse every login with "too many connections".
        #[arg(long)]
        refuse_too_many: bool,
        /// Answer Audio_Start with "not supported".
        #[arg(long)]
        no_audio: bool,
        /// Send a motion alarm every this many seconds.
        #[arg(long)]
        alarm_every: Option<f64>,
        /// Video frames per second (1 to 60).
        #[arg(long, default_value_t = camgate::sim::foscam_camera::DEMO_FPS)]
        fps: u64,
    },
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // rsipstack's own warnings (one per dropped message) are counted and
    // relayed rate-limited by `StackWarnings` instead of logged directly.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rsipstack=error".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            camgate::sip::stack_warnings::StackWarnings
                .with_filter(camgate::sip::stack_warnings::StackWarnings::filter()),
        )
        .init();
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, camgate::config::ConfigError> {
    match path {
        Some(p) => Config::from_file(p),
        None => Ok(Config::embedded()),
    }
}

/// glibc gives threads that allocate at once arenas of their own, up to
/// eight per core; media blocks allocated on one runtime worker and freed
/// on another then leave holes in every arena, and RSS grows well past the
/// heap. Two arenas cost ~5 % of RSS per stream less at 400 streams with
/// no measurable CPU change (issue 17). `MALLOC_ARENA_MAX` in the
/// environment still decides when set. Called before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc tunable; no thread is running.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match Config::from_file(file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::ApiKey { name, scope }) = &cli.command {
        let mut raw = [0u8; 24];
        rand::fill(&mut raw);
        let key = format!("cg-{}", camgate::secret::hex(&raw));
        let hash = camgate::secret::hex(&camgate::secret::sha256(key.as_bytes()));
        println!("key: {key}");
        println!(
            "http:\n  auth: bearer\n  api_keys:\n    - {{name: {name:?}, sha256: \"{hash}\", scope: {scope}}}"
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Probe { file, default_g711 }) = &cli.command {
        let opts = camgate::media::probe::ProbeOptions {
            default_g711: if default_g711 == "ulaw" {
                camgate::media::frame::Codec::Pcmu
            } else {
                camgate::media::frame::Codec::Pcma
            },
        };
        return match camgate::media::probe::probe_file_with(file, opts) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                ExitCode::FAILURE
            }
        };
    }
    limit_malloc_arenas();
    init_logs(cli.log_format);
    camgate::heap_trim::spawn();
    let config = match load_config(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match cli.command {
            Some(Command::SimCamera {
                device_id,
                channel_id,
                ignore_invites,
                no_tcp,
                omit_ssrc,
                answer_ssrc,
                h265,
                audio,
                talk_tcp,
                aac,
                ps_file,
                rtp_file,
                count,
                mark_frames,
                media_ip,
                keepalive_interval,
                keepalive_misses,
                lose_catalog_answers,
                rtp_dump,
                start_jitter_ms,
            }) => {
                let mut sim = camgate::sim::SimCameraConfig::from_config(&config);
                if let Some(id) = device_id {
                    sim.password = config.password_for(&id).map(str::to_owned);
                    sim.device_id = id;
                }
                if let Some(id) = channel_id {
                    sim.channel_id = id;
                }
                sim.answer_invites = !ignore_invites;
                sim.lose_catalog_answers = lose_catalog_answers;
                sim.tcp_media = !no_tcp;
                sim.h265 = h265;
                sim.audio = audio;
                sim.talk_media = match talk_tcp.as_deref() {
                    Some("passive") => camgate::sim::gb_device::TalkMedia::TcpListen,
                    Some(_) => camgate::sim::gb_device::TalkMedia::TcpConnect,
                    None => camgate::sim::gb_device::TalkMedia::Udp,
                };
                if let Some(path) = aac {
                    let data = std::fs::read(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    let track = camgate::sim::aac_track::AacTrack::from_adts(data.into())
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    sim.aac = Some(std::sync::Arc::new(track));
                }
                if let Some(path) = ps_file {
                    let data = std::fs::read(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    sim.ps_file = Some(std::sync::Arc::new(camgate::sim::ps_file::PsFile::new(
                        data.into(),
                    )));
                }
                if let Some(path) = rtp_file {
                    let data = std::fs::read(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    sim.rtp_file = Some(std::sync::Arc::new(camgate::sim::rtp_file::RtpFile::new(
                        &data,
                    )));
                }
                sim.answer_ssrc = match (omit_ssrc, answer_ssrc) {
                    (true, Some(s)) => camgate::sim::gb_device::AnswerSsrc::Hidden(s),
                    (true, None) => camgate::sim::gb_device::AnswerSsrc::Omit,
                    (false, Some(s)) => camgate::sim::gb_device::AnswerSsrc::Own(s),
                    (false, None) => camgate::sim::gb_device::AnswerSsrc::Offered,
                };
                if let Some(path) = rtp_dump {
                    let data = std::fs::read(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    let capture = camgate::sim::rtp_capture::RtpCapture::parse(data.into())
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    sim.rtp_capture = Some(std::sync::Arc::new(capture));
                }
                sim.mark_frames = mark_frames;
                sim.start_jitter = std::time::Duration::from_millis(start_jitter_ms);
                sim.media_ip = media_ip;
                if let Some(secs) = keepalive_interval {
                    sim.keepalive_interval =
                        std::time::Duration::from_secs_f64(secs.clamp(0.1, 3600.0));
                }
                if let Some(n) = keepalive_misses {
                    sim.keepalive_misses = n;
                }
                if count > 1 {
                    let password_for = |id: &str| config.password_for(id).map(str::to_owned);
                    camgate::sim::gb_camera::run_many(sim, count, password_for, shutdown).await
                } else {
                    camgate::sim::run(sim, shutdown).await
                }
            }
            Some(Command::RtspLoad {
                server,
                device_id,
                channel_id,
                count,
                report_secs,
            }) => {
                let sim = camgate::sim::SimCameraConfig::from_config(&config);
                let device: u128 = device_id.unwrap_or(sim.device_id).parse()?;
                let channel: u128 = channel_id.unwrap_or(sim.channel_id).parse()?;
                let urls = (0..u128::from(count))
                    .map(|i| format!("{server}/gb/{}/{}", device + i, channel + i))
                    .collect();
                let every = std::time::Duration::from_secs_f64(report_secs.clamp(0.1, 3600.0));
                camgate::sim::rtsp_load::run(urls, every, shutdown).await;
                Ok(())
            }
            Some(Command::SimCtel {
                register_url,
                dev_id,
                dev_key,
                rtsp_port,
                status_port,
                heartbeat_secs,
                heartbeats,
                dead_local_address,
            }) => {
                use camgate::sim::ctel_camera::{SimCtelConfig, run};
                let first = config.ctel.devices.first();
                let http = config.http.listen;
                let host = if http.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    http.ip()
                };
                let mut sim = SimCtelConfig::new(
                    register_url.unwrap_or_else(|| {
                        format!(
                            "http://{}/ctel/register",
                            std::net::SocketAddr::new(host, http.port())
                        )
                    }),
                    dev_id
                        .or_else(|| first.map(|d| d.dev_id.clone()))
                        .unwrap_or_else(|| camgate::ctel::server::DEMO_DEV_ID.into()),
                    dev_key
                        .or_else(|| first.map(|d| d.dev_key.clone()))
                        .unwrap_or_else(|| camgate::ctel::server::DEMO_DEV_KEY.into()),
                );
                sim.rtsp_listen.set_port(rtsp_port);
                sim.status_listen =
                    status_port.map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)));
                sim.heartbeat_interval =
                    std::time::Duration::from_secs_f64(heartbeat_secs.clamp(0.05, 3600.0));
                sim.heartbeats = heartbeats;
                sim.dead_local_address = dead_local_address;
                run(sim, shutdown).await
            }
            Some(Command::SimFoscam {
                listen,
                user,
                password,
                refuse_too_many,
                no_audio,
                alarm_every,
                fps,
            }) => {
                let sim = camgate::sim::foscam_camera::SimFoscamConfig {
                    listen,
                    user,
                    password,
                    refuse_too_many,
                    audio: !no_audio,
                    alarm_every: alarm_every
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .map(std::time::Duration::from_secs_f64),
                    fps,
                    ..Default::default()
                };
                camgate::sim::foscam_camera::run(sim, shutdown).await
            }
            _ => {
                let live = camgate::reload::LiveConfig::new(config, cli.config.clone());
                camgate::app::run_live(live, cli.demo, shutdown).await
            }
        }
    });
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM starts a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}
