//! Typed configuration: one YAML file, validated at start-up.
//!
//! Every key has a default, so an empty file (or none) is a working
//! configuration; `config/camgate.yaml` documents every key. Errors name the
//! key and the line (serde-saphyr reports both).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config_secs as secs;

/// A password file larger than this is not a password file.
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

/// The embedded default: what `camgate` runs with when given no file.
pub const DEFAULT_YAML: &str = include_str!("../config/camgate.yaml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub streams: StreamsSection,
    pub rtsp: RtspConfig,
    pub http: HttpConfig,
    pub demo: DemoConfig,
    pub gb: GbConfig,
    /// Prometheus exposition options.
    pub metrics: MetricsConfig,
    /// On SIGTERM/SIGINT, how long draining (viewers closed, devices sent
    /// BYE) may take before the process exits anyway.
    pub shutdown_grace: ShutdownGrace,
    pub ctel: crate::ctel::config::CtelConfig,
    /// Upper GB28181 platforms camgate registers to (cascade, issue 19).
    pub cascade: crate::cascade::config::CascadeConfig,
    /// Foscam MJPEG cameras (MO_O / MO_V protocol), served as `foscam/{name}`.
    pub foscam: Vec<FoscamCameraConfig>,
    pub webrtc: WebRtcSection,
    /// H.265 and MJPEG sources transcoded to H.264 for WebRTC viewers.
    pub transcode: TranscodeSection,
    /// Per-source limits on the TCP listeners (SIP, RTSP, HTTP, telecom).
    pub limits: LimitsConfig,
    /// Many nodes as one gateway, Redis as the shared state (off by default).
    pub cluster: crate::cluster::config::ClusterConfig,
}

/// What one peer may hold open: the defence against a single host
/// exhausting file descriptors or memory with idle connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// TCP connections one peer IP may hold on each listener (SIP, RTSP,
    /// HTTP, telecom link); past it new ones are closed at accept. 0 = no limit.
    pub max_connections_per_ip: usize,
    /// An RTSP or SIP TCP connection must complete a request within this
    /// many seconds of opening (and a started request within this long of
    /// its first byte), else it is closed.
    #[serde(with = "secs")]
    pub request_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections_per_ip: 64,
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Export per-device series (`camgate_device_online{device=…}`). Off by
    /// default: one series per camera is unbounded cardinality.
    pub per_device_labels: bool,
    /// `/metrics`, `/healthz` and `/readyz` need an API credential (read
    /// scope) under `http.auth`. Off: scrapers and probes stay simple.
    pub auth: bool,
}

/// Drain time limit, seconds in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct ShutdownGrace(#[serde(with = "secs")] pub Duration);

impl Default for ShutdownGrace {
    fn default() -> Self {
        Self(Duration::from_secs(10))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// UDP and TCP listen address for SIP.
    pub listen: SocketAddr,
    /// Address put in Via/Contact/SDP; defaults to the listen IP, or
    /// 127.0.0.1 when listening on every interface.
    pub external_ip: Option<IpAddr>,
    /// This platform's 20-digit SIP id.
    pub server_id: String,
    /// SIP domain/realm: the first ten digits of the server id by convention.
    pub realm: String,
    /// Registration password for every device; empty = no digest auth.
    pub password: String,
    /// Per-device passwords overriding `password`.
    pub device_passwords: std::collections::BTreeMap<String, String>,
    /// Registration lifetime we grant at most, seconds.
    #[serde(with = "secs")]
    pub max_expires: Duration,
    /// A device whose last keepalive is older than this is offline.
    #[serde(with = "secs")]
    pub keepalive_timeout: Duration,
    /// How long a device has to answer INVITE with a final response.
    #[serde(with = "secs")]
    pub invite_timeout: Duration,
    /// File holding the registration password (e.g. a mounted Kubernetes
    /// Secret); replaces `password` and is re-read on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// Device ids allowed to register; empty = any device.
    pub allowed_devices: Vec<String>,
    /// Digest user names that differ from the device id, by device id (a
    /// camera's "SIP user name" when it is not its device id). Any other
    /// user name than the device id or this is refused.
    pub device_usernames: std::collections::BTreeMap<String, String>,
    /// Offer SHA-256 digest (RFC 8760) beside MD5 in REGISTER challenges.
    pub digest_sha256: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// IP the RTP ports bind to.
    pub rtp_bind: IpAddr,
    /// First and last RTP receive port (inclusive); even ports are used.
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// A stream with no RTP for this long is considered dead.
    #[serde(with = "secs")]
    pub rtp_timeout: Duration,
    /// Frames a viewer may fall behind before skipping to the next keyframe.
    pub viewer_queue_frames: usize,
    /// Media a viewer may fall behind, in seconds at the stream's bit rate
    /// (at least 256 KiB), before skipping to the next keyframe: bounds the
    /// memory a slow viewer holds.
    #[serde(with = "secs")]
    pub viewer_queue_seconds: Duration,
    /// New viewers start at the last keyframe.
    pub gop_cache: bool,
    /// Default RTP transport asked of devices (GB/T 28181-2016 Annex F):
    /// udp, udp_shared, tcp_passive or tcp_active.
    pub transport: crate::ingest::transport::MediaTransport,
    /// The one UDP port (RTCP on the next) for `udp_shared` streams.
    pub shared_rtp_port: u16,
    /// A device answering without `y=`: learn its SSRC, or insist on ours.
    pub ssrc_policy: crate::ingest::transport::SsrcPolicy,
    /// Reorder buffer for UDP: most packets held behind a hole.
    pub reorder_depth: usize,
    /// Reorder buffer for UDP: longest wait for a missing packet, seconds.
    #[serde(with = "secs")]
    pub reorder_delay: Duration,
    /// How long a TCP media connection may take to be made.
    #[serde(with = "secs")]
    pub tcp_connect_timeout: Duration,
    /// After lost packets: `keyframe` (freeze until the next one) or
    /// `next_frame` (drop only the damaged frame).
    pub after_loss: crate::ingest::transport::AfterLoss,
    /// A stream showing audio and no video for this long after its first
    /// frame is served audio only (intercoms, audio channels).
    #[serde(with = "secs")]
    pub audio_only_after: Duration,
    /// What audio on stream ids 0xC0–0xDF with no PSM and no MPEG audio or
    /// ADTS header is taken as: alaw or ulaw.
    pub default_g711: G711Law,
}

/// G.711 companding law (`media.default_g711`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum G711Law {
    #[default]
    Alaw,
    Ulaw,
}

impl G711Law {
    pub fn codec(self) -> crate::media::frame::Codec {
        match self {
            Self::Alaw => crate::media::frame::Codec::Pcma,
            Self::Ulaw => crate::media::frame::Codec::Pcmu,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsSection {
    /// After the last viewer leaves, keep the source this long; 0 = stop at once.
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// A source that died (no media for `media.rtp_timeout`, a broken
    /// connection) is restarted with backoff (1, 2, 4 … 30 s) while viewers
    /// remain, for this long after its last media; then its viewers are
    /// ended. 0 = end them at once.
    #[serde(with = "secs")]
    pub reconnect_window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtspConfig {
    pub listen: SocketAddr,
    /// `Session: …;timeout=` announced to clients, seconds.
    pub session_timeout: u32,
    /// Concurrent RTSP viewers at most (0 = no limit); beyond, 453.
    pub max_viewers: usize,
    /// Drop a viewer whose socket accepts no media for this long.
    #[serde(with = "secs")]
    pub stall_timeout: Duration,
    /// Access control per stream path prefix.
    pub auth: crate::rtsp::auth::AuthConfig,
    /// SO_SNDBUF of viewer sockets in bytes; 0 = OS autotuning.
    pub send_buffer: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Origins whose pages may call `/api/…` from a browser (`"*"` = any);
    /// empty = same-origin only. WHEP is open to every origin.
    pub cors_origins: Vec<String>,
    /// Answer `Access-Control-Request-Private-Network: true` preflights
    /// (WHEP and the API) with `Access-Control-Allow-Private-Network: true`.
    pub private_network_access: bool,
    /// API authentication (`none`, `basic`, `bearer`); absent = `none` on
    /// a loopback listener, a start-up error on any other.
    pub auth: Option<crate::api::access::ApiAuthMode>,
    /// Bearer API keys, stored as SHA-256, each read-only or admin.
    pub api_keys: Vec<crate::api::access::ApiKeyConfig>,
}

impl HttpConfig {
    /// The mode in force (validation refused an absent one off loopback).
    pub fn auth_mode(&self) -> crate::api::access::ApiAuthMode {
        self.auth.unwrap_or(crate::api::access::ApiAuthMode::None)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    pub device_id: String,
    pub channel_id: String,
    /// Local SIP port of the simulated camera (0 = any).
    pub sip_port: u16,
    /// The simulated GB28181 and Foscam cameras raise a motion alarm
    /// (GB/T 28181-2016 §9.4) this often; 0 = never.
    #[serde(with = "secs")]
    pub alarm_every: Duration,
}

/// GB28181 behaviour beyond registration: queries, alarms, redirects.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbConfig {
    /// How long a query (catalog, records, status, presets…) waits for the
    /// device's answer, all pages included.
    #[serde(with = "secs")]
    pub query_timeout: Duration,
    /// Re-query every registered device's catalog this often; 0 = never.
    #[serde(with = "secs")]
    pub catalog_refresh: Duration,
    /// A device that sends keepalives without registering (it registered
    /// before we restarted) is told 403 at once so it registers again,
    /// instead of being ignored; it is never taken as registered or queried
    /// before a digest REGISTER.
    pub adopt_keepalive: bool,
    /// Events (alarms…) kept in memory for `GET /api/v1/events`.
    pub event_capacity: usize,
    /// POST every event as JSON to this `http://` URL; empty = off.
    pub webhook: String,
    /// Subscribe to every device's alarms after it registers.
    pub subscribe_alarms: bool,
    /// GB/T 28181-2022 registration redirect: device id → `ip:port` of the
    /// platform it should register to instead (answered with 302).
    pub redirect: std::collections::BTreeMap<String, SocketAddr>,
    /// Where download jobs write their files (created on first use).
    pub download_dir: std::path::PathBuf,
    /// Download jobs running at once at most.
    pub max_downloads: usize,
    /// SUBSCRIBE to each device's catalog changes (Event: Catalog) after
    /// it registers.
    pub subscribe_catalog: bool,
    /// `Expires` of our alarm and catalog SUBSCRIBEs; each is renewed at
    /// four fifths of it.
    #[serde(with = "secs")]
    pub subscription_expires: Duration,
}

impl Default for GbConfig {
    fn default() -> Self {
        Self {
            query_timeout: Duration::from_secs(10),
            catalog_refresh: Duration::ZERO,
            adopt_keepalive: false,
            event_capacity: 1000,
            webhook: String::new(),
            subscribe_alarms: true,
            redirect: Default::default(),
            download_dir: "downloads".into(),
            max_downloads: 4,
            subscribe_catalog: false,
            subscription_expires: Duration::from_secs(3600),
        }
    }
}

/// One Foscam MJPEG camera.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FoscamCameraConfig {
    /// Path segment of `rtsp://HOST:8554/foscam/{name}`.
    pub name: String,
    /// Camera address (IP or host name) and its web port.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Ask for the camera's audio (ADPCM, re-encoded as PCMA).
    pub audio: bool,
    /// Swap left and right: some firmware has the pan codes reversed.
    pub swap_pan: bool,
}

impl Default for FoscamCameraConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            host: String::new(),
            port: 80,
            user: "admin".into(),
            password: String::new(),
            audio: true,
            swap_pan: false,
        }
    }
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(ANY, 5060),
            external_ip: None,
            server_id: "34020000002000000001".into(),
            realm: "3402000000".into(),
            password: "12345678".into(),
            device_passwords: Default::default(),
            max_expires: Duration::from_secs(3600),
            keepalive_timeout: Duration::from_secs(180),
            invite_timeout: Duration::from_secs(5),
            password_file: None,
            allowed_devices: Vec::new(),
            device_usernames: Default::default(),
            digest_sha256: false,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            rtp_bind: ANY,
            rtp_port_min: 30000,
            rtp_port_max: 30999,
            rtp_timeout: Duration::from_secs(10),
            viewer_queue_frames: 128,
            viewer_queue_seconds: Duration::from_secs(2),
            gop_cache: true,
            transport: crate::ingest::transport::MediaTransport::Udp,
            shared_rtp_port: 31000,
            ssrc_policy: crate::ingest::transport::SsrcPolicy::Learn,
            reorder_depth: 64,
            reorder_delay: Duration::from_millis(50),
            tcp_connect_timeout: Duration::from_secs(5),
            after_loss: crate::ingest::transport::AfterLoss::NextFrame,
            audio_only_after: crate::media::hub::DEFAULT_AUDIO_ONLY_AFTER,
            default_g711: G711Law::Alaw,
        }
    }
}

impl MediaConfig {
    /// What of the RTP ports falls in `ephemeral`, the ports the kernel
    /// gives sockets bound to port 0 (Linux `ip_local_port_range`), in
    /// words; `None` when nothing does. RTP ports are bound only when a
    /// stream starts, so any outgoing socket on the host (ours included)
    /// may hold one by then: that stream then takes another port of the
    /// range, and a `udp_shared` stream cannot start at all.
    pub fn ports_in_ephemeral_range(
        &self,
        ephemeral: &std::ops::RangeInclusive<u16>,
    ) -> Option<String> {
        let first = self.rtp_port_min.max(*ephemeral.start());
        let last = self.rtp_port_max.min(*ephemeral.end());
        let mut parts = Vec::new();
        if first <= last {
            parts.push(format!(
                "RTP ports {first}-{last} (of media.rtp_port_min..rtp_port_max)"
            ));
        }
        if ephemeral.contains(&self.shared_rtp_port) {
            parts.push(format!(
                "the shared RTP port {} (media.shared_rtp_port)",
                self.shared_rtp_port
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "{} lie in the kernel's ephemeral port range {}-{}",
                parts.join(" and "),
                ephemeral.start(),
                ephemeral.end()
            )
        })
    }
}

/// The kernel's ephemeral port range, where the platform reports it.
pub fn ephemeral_ports() -> Option<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    Some(ports.next()?.ok()?..=ports.next()?.ok()?)
}

impl Default for StreamsSection {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            reconnect_window: Duration::from_secs(60),
        }
    }
}

impl Default for RtspConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(ANY, 8554),
            session_timeout: 60,
            max_viewers: 0,
            stall_timeout: Duration::from_secs(10),
            auth: Default::default(),
            send_buffer: 0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(LOOPBACK, 8080),
            cors_origins: Vec::new(),
            private_network_access: true,
            auth: None,
            api_keys: Vec::new(),
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            device_id: "34020000001320000001".into(),
            channel_id: "34020000001310000001".into(),
            sip_port: 0,
            alarm_every: Duration::ZERO,
        }
    }
}

/// WebRTC (WHEP) egress: one UDP port shared by every browser peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtcSection {
    /// UDP port all peers share (ICE-lite; demultiplexed by ICE ufrag and
    /// remote address). 0 = any free port.
    pub udp_port: u16,
    /// Local IPs to bind and announce as host candidates. Empty = the
    /// advertised IP (`sip.external_ip`, else the listen IP, else 127.0.0.1).
    pub ips: Vec<IpAddr>,
    /// Public IPs that map 1:1 onto `ips` (NAT, cloud): announced in the
    /// answer instead of the matching local IP.
    pub nat_1to1_ips: Vec<IpAddr>,
    /// A peer that has not completed ICE+DTLS within this long is dropped.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Most concurrent WebRTC viewers; more are answered 503.
    pub max_peers: usize,
}

impl Default for WebRtcSection {
    fn default() -> Self {
        Self {
            udp_port: 8189,
            ips: Vec::new(),
            nat_1to1_ips: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            max_peers: 2000,
        }
    }
}

/// Transcoding for browsers: H.265 and MJPEG sources become H.264
/// Constrained Baseline for WebRTC viewers (RTSP viewers keep the original).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeSection {
    /// Off: such sources answer WHEP with 501.
    pub enabled: bool,
    /// FFmpeg binary that decodes H.265 (one child process per stream).
    pub ffmpeg: PathBuf,
    /// Most streams transcoded at once (a 25 fps 720p one takes about a
    /// fifth of a core); more get 503.
    pub max_streams: usize,
    /// Target H.264 bit rate, kbit/s; 0 = by picture size and frame rate.
    pub bitrate_kbps: u32,
    /// Longest time between H.264 IDR frames, seconds.
    #[serde(with = "secs")]
    pub keyframe_interval: Duration,
    /// Largest source picture transcoded (OpenH264 stops at 3840x2160).
    pub max_width: usize,
    pub max_height: usize,
}

impl Default for TranscodeSection {
    fn default() -> Self {
        Self {
            enabled: true,
            ffmpeg: PathBuf::from("ffmpeg"),
            max_streams: 4,
            bitrate_kbps: 0,
            keyframe_interval: Duration::from_secs(2),
            max_width: 3840,
            max_height: 2160,
        }
    }
}

impl TranscodeSection {
    /// The transcoder's settings.
    pub fn to_transcode_config(&self) -> crate::transcode::TranscodeConfig {
        crate::transcode::TranscodeConfig {
            enabled: self.enabled,
            ffmpeg: self.ffmpeg.clone(),
            max_streams: self.max_streams,
            limits: crate::transcode::PictureLimits {
                max_width: self.max_width,
                max_height: self.max_height,
            },
            encoder: crate::transcode::EncoderSettings {
                bitrate_bps: (self.bitrate_kbps > 0)
                    .then(|| self.bitrate_kbps.saturating_mul(1000)),
                keyframe_interval: (self.keyframe_interval.as_secs_f64() * 90_000.0) as i64,
            },
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        let seconds = self.keyframe_interval.as_secs_f64();
        if !(0.5..=60.0).contains(&seconds) {
            return Err(invalid(
                "transcode.keyframe_interval",
                format!("{seconds} s is outside 0.5 to 60"),
            ));
        }
        if !(16..=3840).contains(&self.max_width) || !(16..=3840).contains(&self.max_height) {
            return Err(invalid(
                "transcode.max_width",
                format!(
                    "{}x{} is outside 16 to 3840 per side (transcode.max_width, max_height)",
                    self.max_width, self.max_height
                ),
            ));
        }
        if self.bitrate_kbps > 50_000 {
            return Err(invalid(
                "transcode.bitrate_kbps",
                format!("{} is more than 50000", self.bitrate_kbps),
            ));
        }
        Ok(())
    }
}

/// A configuration that failed to load, with the place it failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        origin: String,
        key: &'static str,
        message: String,
    },
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parse and validate; `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let expanded =
            crate::config_env::expand(text, |name| std::env::var(name).ok()).map_err(|e| {
                ConfigError::Parse {
                    origin: origin.to_owned(),
                    message: e.to_string(),
                }
            })?;
        let text = expanded.as_str();
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?
        };
        config.read_password_file(origin)?;
        config
            .cluster
            .read_password_file()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origin.to_owned(),
                key,
                message,
            })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Replace `sip.password` with the contents of `sip.password_file`. One
    /// trailing line break is dropped (`echo … > file` and most Secret
    /// tooling add one); an empty file is refused, since it would silently
    /// turn authentication off.
    fn read_password_file(&mut self, origin: &str) -> Result<(), ConfigError> {
        let Some(path) = &self.sip.password_file else {
            return Ok(());
        };
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: "sip.password_file",
            message,
        };
        // Read through a limit, not by metadata: /dev/zero and friends
        // report no length and would otherwise be read forever.
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| {
                use std::io::Read;
                f.take(MAX_PASSWORD_FILE_BYTES + 1)
                    .read_to_string(&mut text)
            })
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        if text.len() as u64 > MAX_PASSWORD_FILE_BYTES {
            return Err(invalid(format!(
                "{} is over {MAX_PASSWORD_FILE_BYTES} bytes; not a password file",
                path.display()
            )));
        }
        let password = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if password.is_empty() {
            return Err(invalid(format!(
                "{} is empty (to turn digest auth off, set sip.password: \"\" instead)",
                path.display()
            )));
        }
        self.sip.password = password.to_owned();
        Ok(())
    }

    /// Whether `device_id` may register (`sip.allowed_devices`).
    pub fn device_allowed(&self, device_id: &str) -> bool {
        self.sip.allowed_devices.is_empty()
            || self.sip.allowed_devices.iter().any(|d| d == device_id)
    }

    pub fn embedded() -> Self {
        Self::from_yaml(DEFAULT_YAML, "embedded default").expect("embedded default config is valid")
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        let is_gb_id = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !is_gb_id(&self.sip.server_id) {
            return Err(invalid(
                "sip.server_id",
                format!("must be 20 digits, got {:?}", self.sip.server_id),
            ));
        }
        if self.sip.realm.len() < 8 || !self.sip.realm.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "sip.realm",
                format!(
                    "must be the 10-digit domain (digits 1-10 of the server id), got {:?}",
                    self.sip.realm
                ),
            ));
        }
        if self.media.rtp_port_min > self.media.rtp_port_max || self.media.rtp_port_min == 0 {
            return Err(invalid(
                "media.rtp_port_min",
                format!(
                    "port range {}-{} is empty",
                    self.media.rtp_port_min, self.media.rtp_port_max
                ),
            ));
        }
        if !(1..=crate::media::jitter::MAX_DEPTH).contains(&self.media.reorder_depth) {
            return Err(invalid(
                "media.reorder_depth",
                format!("must be 1 to {}", crate::media::jitter::MAX_DEPTH),
            ));
        }
        if self.media.viewer_queue_frames == 0 {
            return Err(invalid(
                "media.viewer_queue_frames",
                "must be above 0".into(),
            ));
        }
        if self.media.viewer_queue_seconds.is_zero() {
            return Err(invalid(
                "media.viewer_queue_seconds",
                "must be above 0".into(),
            ));
        }
        if self.media.shared_rtp_port == 0 || self.media.shared_rtp_port == u16::MAX {
            return Err(invalid(
                "media.shared_rtp_port",
                "must be 1 to 65534 (RTCP uses the next port)".into(),
            ));
        }
        if self.sip.invite_timeout.is_zero() {
            return Err(invalid("sip.invite_timeout", "must be above 0".into()));
        }
        if let Some(bad) = self.sip.allowed_devices.iter().find(|d| !is_gb_id(d)) {
            return Err(invalid(
                "sip.allowed_devices",
                format!("entries must be 20-digit device ids, got {bad:?}"),
            ));
        }
        {
            use crate::rtsp::auth::AuthMode;
            let a = &self.rtsp.auth;
            let needs_users = std::iter::once(a.mode)
                .chain(a.paths.iter().map(|r| r.mode))
                .any(|m| matches!(m, AuthMode::Basic | AuthMode::Digest));
            if needs_users && a.users.is_empty() {
                return Err(invalid(
                    "rtsp.auth.users",
                    "basic or digest auth is configured but no user is".into(),
                ));
            }
            if !(0.0..=86_400.0).contains(&a.token_ttl) {
                return Err(invalid(
                    "rtsp.auth.token_ttl",
                    format!("{} is not 0 to 86400 seconds", a.token_ttl),
                ));
            }
        }
        self.validate_http(origin)?;
        if !is_gb_id(&self.demo.device_id) || !is_gb_id(&self.demo.channel_id) {
            return Err(invalid(
                "demo.device_id",
                "demo ids must be 20 digits".into(),
            ));
        }
        if !self.gb.webhook.is_empty() && !self.gb.webhook.starts_with("http://") {
            return Err(invalid(
                "gb.webhook",
                format!("must be an http:// URL, got {:?}", self.gb.webhook),
            ));
        }
        if self.gb.query_timeout.is_zero() {
            return Err(invalid("gb.query_timeout", "must be above 0".into()));
        }
        self.ctel
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        self.cascade
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        if !self.webrtc.nat_1to1_ips.is_empty()
            && self.webrtc.nat_1to1_ips.len() != self.webrtc.ips.len().max(1)
        {
            return Err(invalid(
                "webrtc.nat_1to1_ips",
                "needs one public IP per entry of webrtc.ips".into(),
            ));
        }
        self.validate_foscam(origin)?;
        self.transcode.validate(origin)?;
        self.cluster
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        Ok(())
    }

    /// Safe by default: an API reachable beyond this host must say how it
    /// is protected, even if the answer is `none`.
    fn validate_http(&self, origin: &str) -> Result<(), ConfigError> {
        use crate::api::access::ApiAuthMode;
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        let listen = self.http.listen;
        match self.http.auth {
            None if !listen.ip().is_loopback() => {
                return Err(invalid(
                    "http.auth",
                    format!(
                        "the HTTP API listens on {listen}, beyond loopback: choose http.auth \
                         (bearer with http.api_keys, basic with rtsp.auth.users, or none to \
                         leave it open behind your own gateway)"
                    ),
                ));
            }
            Some(ApiAuthMode::Bearer) if self.http.api_keys.is_empty() => {
                return Err(invalid(
                    "http.api_keys",
                    "http.auth is bearer but no key is configured (`camgate api-key` makes one)"
                        .into(),
                ));
            }
            Some(ApiAuthMode::Basic) if self.rtsp.auth.users.is_empty() => {
                return Err(invalid(
                    "http.auth",
                    "basic checks rtsp.auth.users, and none is configured".into(),
                ));
            }
            _ => {}
        }
        if let Some(bad) = self
            .http
            .api_keys
            .iter()
            .find(|k| crate::secret::parse_sha256_hex(&k.sha256).is_none())
        {
            return Err(invalid(
                "http.api_keys",
                format!(
                    "key {:?}: sha256 must be 64 hex digits (the SHA-256 of the key)",
                    bad.name
                ),
            ));
        }
        Ok(())
    }

    fn validate_foscam(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        let mut seen = std::collections::BTreeSet::new();
        for cam in &self.foscam {
            let name_ok = !cam.name.is_empty()
                && cam.name.len() <= 64
                && cam
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(invalid(
                    "foscam.name",
                    format!("{:?} must be 1-64 of A-Z a-z 0-9 - _", cam.name),
                ));
            }
            if !seen.insert(cam.name.as_str()) {
                return Err(invalid(
                    "foscam.name",
                    format!("{:?} appears twice", cam.name),
                ));
            }
            if cam.host.is_empty() || cam.port == 0 {
                return Err(invalid(
                    "foscam.host",
                    format!("camera {:?} needs a host and a non-zero port", cam.name),
                ));
            }
            // Verify_Req has 13-byte fields; longer values would be cut.
            if cam.user.len() > 13 || cam.password.len() > 13 {
                return Err(invalid(
                    "foscam.password",
                    format!(
                        "camera {:?}: user and password are at most 13 bytes",
                        cam.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The address we advertise in SIP and SDP.
    pub fn advertised_ip(&self) -> IpAddr {
        self.sip.external_ip.unwrap_or_else(|| {
            let ip = self.sip.listen.ip();
            if ip.is_unspecified() { LOOPBACK } else { ip }
        })
    }

    /// The registration password for `device_id`, if auth is on for it.
    pub fn password_for(&self, device_id: &str) -> Option<&str> {
        let p = self
            .sip
            .device_passwords
            .get(device_id)
            .map(String::as_str)
            .unwrap_or(&self.sip.password);
        (!p.is_empty()).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_ports_in_the_ephemeral_range_are_named() {
        let linux = 32_768..=60_999;
        let mut media = MediaConfig::default();
        assert_eq!(media.ports_in_ephemeral_range(&linux), None);
        media.rtp_port_min = 40_000;
        media.rtp_port_max = 40_999;
        media.shared_rtp_port = 41_000;
        assert_eq!(
            media.ports_in_ephemeral_range(&linux).as_deref(),
            Some(
                "RTP ports 40000-40999 (of media.rtp_port_min..rtp_port_max) and the shared \
                 RTP port 41000 (media.shared_rtp_port) lie in the kernel's ephemeral port \
                 range 32768-60999"
            )
        );
        media.rtp_port_min = 30_000;
        media.shared_rtp_port = 31_000;
        assert_eq!(
            media.ports_in_ephemeral_range(&linux).as_deref(),
            Some(
                "RTP ports 32768-40999 (of media.rtp_port_min..rtp_port_max) lie in the \
                 kernel's ephemeral port range 32768-60999"
            )
        );
    }

    #[test]
    fn embedded_default_matches_code_defaults() {
        let c = Config::embedded();
        let d = Config::default();
        assert_eq!(c.sip.server_id, d.sip.server_id);
        assert_eq!(c.sip.listen, d.sip.listen);
        assert_eq!(c.rtsp.listen, d.rtsp.listen);
        assert_eq!(c.media.rtp_port_min, d.media.rtp_port_min);
        assert_eq!(c.streams.idle_timeout, d.streams.idle_timeout);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::from_yaml("sip:\n  realm: \"3402000000\"\n  pasword: x\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pasword"), "{err}");
        assert!(err.contains('3'), "line number missing: {err}");
    }

    #[test]
    fn invalid_value_names_key() {
        let err = Config::from_yaml("sip:\n  server_id: \"123\"\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sip.server_id"), "{err}");
        let err = Config::from_yaml("streams:\n  idle_timeout: -1\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("duration"), "{err}");
    }

    #[test]
    fn foscam_cameras_parse_with_defaults_and_validate() {
        let c = Config::from_yaml(
            "foscam:\n  - name: door\n    host: 192.168.1.20\n    password: pw\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.foscam.len(), 1);
        let door = &c.foscam[0];
        assert_eq!(
            (door.port, door.user.as_str(), door.audio),
            (80, "admin", true)
        );
        let err = Config::from_yaml(
            "foscam:\n  - {name: a, host: h}\n  - {name: a, host: h}\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("foscam.name") && err.contains("twice"),
            "{err}"
        );
        let err = Config::from_yaml("foscam:\n  - {name: a/b, host: h}\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("foscam.name"), "{err}");
        assert!(Config::embedded().foscam.is_empty());
    }

    #[test]
    fn per_device_password_overrides() {
        let c = Config::from_yaml(
            "sip:\n  password: a\n  device_passwords:\n    \"34020000001320000009\": b\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.password_for("34020000001320000009"), Some("b"));
        assert_eq!(c.password_for("x"), Some("a"));
        let open = Config::from_yaml("sip:\n  password: \"\"\n", "t").unwrap();
        assert_eq!(open.password_for("x"), None);
    }

    #[test]
    fn allow_list_and_env_substitution() {
        let c = Config::from_yaml("sip:\n  allowed_devices: [\"34020000001320000009\"]\n", "t")
            .unwrap();
        assert!(c.device_allowed("34020000001320000009"));
        assert!(!c.device_allowed("34020000001320000001"));
        assert!(Config::embedded().device_allowed("34020000001320000001"));
        let err = Config::from_yaml("sip:\n  allowed_devices: [\"cam1\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sip.allowed_devices"), "{err}");
        // PATH is set in any test environment; the default covers the rest.
        let c = Config::from_yaml(
            "sip:\n  external_ip: \"${CAMGATE_TEST_UNSET_IP:-10.1.2.3}\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.advertised_ip().to_string(), "10.1.2.3");
        let err = Config::from_yaml("sip:\n  password: \"${CAMGATE_TEST_UNSET}\"\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CAMGATE_TEST_UNSET") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn shutdown_grace_and_metrics_section() {
        let c = Config::from_yaml(
            "shutdown_grace: 2.5\nmetrics:\n  per_device_labels: true\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.shutdown_grace.0, Duration::from_millis(2500));
        assert!(c.metrics.per_device_labels);
        assert_eq!(Config::embedded().shutdown_grace.0, Duration::from_secs(10));
    }

    #[test]
    fn transcode_section_defaults_and_limits() {
        let c = Config::embedded();
        let t = c.transcode.to_transcode_config();
        assert!(t.enabled);
        assert_eq!(t.max_streams, 4);
        assert_eq!(t.encoder.bitrate_bps, None);
        assert_eq!(t.encoder.keyframe_interval, 180_000);
        let c = Config::from_yaml(
            "transcode:\n  bitrate_kbps: 1500\n  keyframe_interval: 1\n  ffmpeg: /opt/ff\n",
            "t",
        )
        .unwrap();
        let t = c.transcode.to_transcode_config();
        assert_eq!(t.encoder.bitrate_bps, Some(1_500_000));
        assert_eq!(t.encoder.keyframe_interval, 90_000);
        assert_eq!(t.ffmpeg, PathBuf::from("/opt/ff"));
        let err = Config::from_yaml("transcode:\n  max_width: 8000\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("transcode.max_width"), "{err}");
        let err = Config::from_yaml("transcode:\n  keyframe_interval: 0\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("transcode.keyframe_interval"), "{err}");
    }

    #[test]
    fn ctel_section_parses_and_validates() {
        let c = Config::from_yaml(
            "ctel:\n  enabled: true\n  heartbeat_timeout: 5\n  devices:\n    - dev_id: \"81200000001\"\n      dev_key: k\n",
            "t",
        )
        .unwrap();
        assert!(c.ctel.enabled);
        assert_eq!(c.ctel.heartbeat_timeout.as_secs(), 5);
        assert_eq!(c.ctel.key_for("81200000001"), Some("k"));
        assert_eq!(c.ctel.key_for("81200000002"), None);
        let err = Config::from_yaml(
            "ctel:\n  devices:\n    - dev_id: \"123\"\n      dev_key: k\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ctel.devices.dev_id"), "{err}");
        let embedded = Config::embedded();
        assert!(!embedded.ctel.enabled);
        assert_eq!(embedded.ctel.listen.port(), 8588);
        assert_eq!(embedded.ctel.heartbeat_timeout.as_secs(), 360);
    }
}
