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
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rsipstack=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, camgate::config::ConfigError> {
    match path {
        Some(p) => Config::from_file(p),
        None => Ok(Config::embedded()),
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
    init_logs(cli.log_format);
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
                camgate::sim::run(sim, shutdown).await
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
