//! A simulated 手机看店 camera (spec V1.3): registers over HTTP (§7.2.1),
//! logs in on the FA F5 link, reports its abilities, sends heartbeats,
//! answers PTZ / reboot / video-parameter / record-search commands, and
//! serves its own RTSP ([`super::ctel_rtsp`]) that checks every viewer's
//! token with the platform over 0x35.
//!
//! `GET /status` on the optional status port reports what it saw (logins,
//! heartbeats, token checks with their results, PTZ directions, reboots),
//! so tests can assert on the device's side of the conversation.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ctel_rtsp::{self, CheckRecord, RtspContext, TokenCheck};
use crate::ctel::frame::{FrameDecoder, MAX_BODY, Packet, SeqCounter, encode};
use crate::ctel::messages::{self as m, Message, cmd};
use crate::ctel::register::{self, RegisterReq, RegisterRes};

#[derive(Debug, Clone)]
pub struct SimCtelConfig {
    /// `http://HOST:PORT/ctel/register`.
    pub register_url: String,
    pub dev_id: String,
    pub dev_key: String,
    pub rtsp_listen: SocketAddr,
    pub status_listen: Option<SocketAddr>,
    pub heartbeat_interval: Duration,
    /// Send this many heartbeats, then fall silent (and never reconnect):
    /// a hung device, for expiry tests.
    pub heartbeats: Option<u32>,
    /// Advertise a closed port as LocalIP:RtspLocalPort and the real one as
    /// UpnpIP:RtspUpnpPort, so a viewer must fall back.
    pub dead_local_address: bool,
    pub channels: u16,
}

impl SimCtelConfig {
    pub fn new(register_url: String, dev_id: String, dev_key: String) -> Self {
        Self {
            register_url,
            dev_id,
            dev_key,
            rtsp_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            status_listen: None,
            heartbeat_interval: Duration::from_secs(120),
            heartbeats: None,
            dead_local_address: false,
            channels: 1,
        }
    }
}

/// What the device saw, for `GET /status`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SimCtelStatus {
    pub registered: u32,
    pub logins: u32,
    pub heartbeats: u32,
    pub token_checks: Vec<CheckRecord>,
    pub ptz: Vec<u8>,
    pub reboots: u32,
    pub file_queries: u32,
    pub playing: u32,
    pub rtsp_port: u16,
}

#[derive(Default)]
struct Shared {
    status: Mutex<SimCtelStatus>,
    checks: Arc<Mutex<Vec<CheckRecord>>>,
    playing: Arc<AtomicU32>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut SimCtelStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    fn snapshot(&self) -> SimCtelStatus {
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        s.token_checks = self.checks.lock().map(|c| c.clone()).unwrap_or_default();
        s.playing = self.playing.load(Ordering::SeqCst);
        s
    }
}

/// The recordings the camera claims to hold: one per hour of 2026-01-01.
fn recordings(channel: u16) -> Vec<m::RecordFile> {
    (0..24u32)
        .map(|h| m::RecordFile {
            file_name: format!("ch{channel}_20260101{h:02}0000.mp4"),
            file_size: 50_000_000 + u64::from(h),
            start_time: format!("20260101{h:02}00"),
            end_time: format!("20260101{h:02}59"),
        })
        .collect()
}

pub async fn run(config: SimCtelConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    let rtsp = TcpListener::bind(config.rtsp_listen).await?;
    let rtsp_addr = rtsp.local_addr()?;
    shared.update(|s| s.rtsp_port = rtsp_addr.port());
    let (check_tx, mut check_rx) = mpsc::channel::<TokenCheck>(16);
    let ctx = Arc::new(RtspContext {
        dev_id: config.dev_id.clone(),
        channels: config.channels,
        checks: check_tx,
        log: shared.checks.clone(),
        playing: shared.playing.clone(),
    });
    tokio::spawn(ctel_rtsp::serve(rtsp, ctx, cancel.clone()));
    if let Some(addr) = config.status_listen {
        let listener = TcpListener::bind(addr).await?;
        let s = shared.clone();
        let app = axum::Router::new().route(
            "/status",
            axum::routing::get(move || {
                let s = s.clone();
                async move { axum::Json(s.snapshot()) }
            }),
        );
        let c = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await;
        });
    }
    // Where viewers reach our RTSP server.
    let (local, upnp) = if config.dead_local_address {
        let closed = TcpListener::bind((rtsp_addr.ip(), 0)).await?.local_addr()?;
        (closed, rtsp_addr)
    } else {
        (rtsp_addr, rtsp_addr)
    };
    info!(dev_id = %config.dev_id, rtsp = %rtsp_addr, "sim-ctel camera up");
    let mut settings: HashMap<(u16, u8), m::SetChannelReq> = HashMap::new();
    loop {
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = session(&config, &shared, local, upnp, &mut check_rx, &mut settings) => r,
        };
        match outcome {
            Ok(Silent) => {
                info!("sim-ctel fell silent as asked");
                cancel.cancelled().await;
                return Ok(());
            }
            Err(e) => warn!("sim-ctel link: {e:#}; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct Silent;

async fn http_post(url: &str, body: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("register URL must be http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await??;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "registration answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

struct Link {
    socket: TcpStream,
    decoder: FrameDecoder,
    seq: SeqCounter,
}

impl Link {
    async fn send_request<T: Message>(&mut self, msg: &T) -> anyhow::Result<u16> {
        let seq = self.seq.next_request();
        self.socket
            .write_all(&encode(T::CMD, seq, m::to_xml(msg)?.as_bytes())?)
            .await?;
        Ok(seq)
    }

    async fn respond<T: Message>(&mut self, seq: u16, msg: &T) -> anyhow::Result<()> {
        self.socket
            .write_all(&encode(T::CMD, seq, m::to_xml(msg)?.as_bytes())?)
            .await?;
        Ok(())
    }

    async fn next_packet(&mut self) -> anyhow::Result<Packet> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(p) = self.decoder.next_packet()? {
                return Ok(p);
            }
            let n = self.socket.read(&mut buf).await?;
            if n == 0 {
                bail!("platform closed the link");
            }
            self.decoder.push(&buf[..n]);
        }
    }
}

async fn session(
    config: &SimCtelConfig,
    shared: &Shared,
    local: SocketAddr,
    upnp: SocketAddr,
    checks: &mut mpsc::Receiver<TokenCheck>,
    settings: &mut HashMap<(u16, u8), m::SetChannelReq>,
) -> anyhow::Result<Silent> {
    let reg = RegisterReq {
        manufacturer_no: config.dev_id.get(..3).unwrap_or_default().to_owned(),
        mode: "SIM-CTEL".into(),
        dev_type: 1,
        dev_id: config.dev_id.clone(),
        dev_key: config.dev_key.clone(),
    };
    let body = http_post(&config.register_url, &register::to_xml(&reg)).await?;
    let res: RegisterRes = register::parse(body.as_bytes())?;
    if res.result != register::REGISTER_OK {
        bail!("registration refused: Result {}", res.result);
    }
    shared.update(|s| s.registered += 1);
    let link_addr = format!("{}:{}", res.nat_ip, res.nat_port);
    info!(%link_addr, "sim-ctel registered");
    let mut link = Link {
        socket: TcpStream::connect(&link_addr).await?,
        decoder: FrameDecoder::new(MAX_BODY),
        seq: SeqCounter::default(),
    };
    let ip = |a: SocketAddr| a.ip().to_string();
    link.send_request(&m::LoginReq {
        dev_ver: "SIM-1.3".into(),
        dev_id: config.dev_id.clone(),
        dev_key: config.dev_key.clone(),
        upnp_ip: ip(upnp),
        rtsp_upnp_port: upnp.port(),
        local_ip: ip(local),
        rtsp_local_port: local.port(),
        net_type: 0,
        ..Default::default()
    })
    .await?;
    let p = link.next_packet().await?;
    let login: m::LoginRes = m::from_xml(p.body_str())?;
    if p.cmd != cmd::LOGIN || login.result != m::RESULT_OK {
        bail!("login refused: Result {}", login.result);
    }
    shared.update(|s| s.logins += 1);
    info!("sim-ctel logged in");
    link.send_request(&m::AbilityUpReq {
        dev_id: config.dev_id.clone(),
        channel_num: config.channels,
        ptz_flag: 1,
        local_store_flag: 1,
        video: vec![
            m::VideoAbility {
                stream_type: 1,
                frame_size: 1,
            },
            m::VideoAbility {
                stream_type: 2,
                frame_size: 3,
            },
        ],
        ..Default::default()
    })
    .await?;
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.reset();
    let mut sent_heartbeats = 0u32;
    let mut waiting: HashMap<u16, oneshot::Sender<Option<u8>>> = HashMap::new();
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if config.heartbeats.is_some_and(|n| sent_heartbeats >= n) {
                    // Hang: keep the socket open but say nothing more.
                    std::future::pending::<()>().await;
                }
                sent_heartbeats += 1;
                link.send_request(&m::HeartbeatReq {
                    dev_id: config.dev_id.clone(),
                    cur_video_num: shared.playing.load(Ordering::SeqCst) as u16,
                    upnp_ip: ip(upnp),
                    rtsp_upnp_port: upnp.port(),
                    local_ip: ip(local),
                    rtsp_local_port: local.port(),
                    ..Default::default()
                }).await?;
                shared.update(|s| s.heartbeats += 1);
            }
            Some(check) = checks.recv() => {
                let seq = link.send_request(&check.request).await?;
                waiting.insert(seq, check.reply);
            }
            p = link.next_packet() => {
                let p = p?;
                handle_packet(config, shared, &mut link, p, &mut waiting, settings).await?;
            }
        }
    }
}

async fn handle_packet(
    config: &SimCtelConfig,
    shared: &Shared,
    link: &mut Link,
    p: Packet,
    waiting: &mut HashMap<u16, oneshot::Sender<Option<u8>>>,
    settings: &mut HashMap<(u16, u8), m::SetChannelReq>,
) -> anyhow::Result<()> {
    let dev_id = config.dev_id.clone();
    let text = p.body_str();
    match p.cmd {
        cmd::VIDEO_PLAY => {
            let res: m::VideoPlayRes = m::from_xml(text)?;
            if let Some(reply) = waiting.remove(&p.seq) {
                let _ = reply.send(Some(res.result));
            }
        }
        cmd::HEARTBEAT | cmd::ABILITY_UP | cmd::EXCEPTION => {}
        cmd::VIDEO_PTZ => {
            let req: m::VideoPtzReq = m::from_xml(text)?;
            info!(direction = req.ptz_direction, "sim-ctel PTZ");
            shared.update(|s| s.ptz.push(req.ptz_direction));
            let result = if m::PtzDirection::from_code(req.ptz_direction).is_some() {
                0
            } else {
                m::RESULT_OTHER
            };
            link.respond(p.seq, &m::VideoPtzRes { result, dev_id })
                .await?;
        }
        cmd::REBOOT => {
            shared.update(|s| s.reboots += 1);
            link.respond(p.seq, &m::RebootRes { result: 0, dev_id })
                .await?;
        }
        cmd::FILE_QUERY => {
            let req: m::FileQueryReq = m::from_xml(text)?;
            shared.update(|s| s.file_queries += 1);
            let matching: Vec<m::RecordFile> = recordings(req.channel_no)
                .into_iter()
                .filter(|f| f.end_time >= req.start_time && f.start_time <= req.end_time)
                .collect();
            let page = (req.page_no.max(1) - 1) as usize;
            let file = matching
                .iter()
                .skip(page * m::FILES_PER_PAGE)
                .take(m::FILES_PER_PAGE)
                .cloned()
                .collect();
            link.respond(
                p.seq,
                &m::FileQueryRes {
                    result: 0,
                    dev_id,
                    total_record_num: matching.len() as u32,
                    file,
                },
            )
            .await?;
        }
        cmd::SET_CHANNEL => {
            let req: m::SetChannelReq = m::from_xml(text)?;
            settings.insert((req.channel_no, req.stream_type), req);
            link.respond(p.seq, &m::SetChannelRes { result: 0, dev_id })
                .await?;
        }
        cmd::GET_CHANNEL => {
            let req: m::GetChannelReq = m::from_xml(text)?;
            let s = settings
                .get(&(req.channel_no, req.stream_type))
                .cloned()
                .unwrap_or(m::SetChannelReq {
                    frame_size: 1,
                    frame_rate: 25,
                    bit_rate: 8,
                    ..Default::default()
                });
            link.respond(
                p.seq,
                &m::GetChannelRes {
                    result: 0,
                    dev_id,
                    channel_no: req.channel_no,
                    stream_type: req.stream_type,
                    frame_size: s.frame_size,
                    frame_rate: s.frame_rate,
                    rate_type: s.rate_type,
                    bit_rate: s.bit_rate,
                    audio_input: s.audio_input,
                },
            )
            .await?;
        }
        other => warn!(cmd = other, "sim-ctel ignores command"),
    }
    Ok(())
}
