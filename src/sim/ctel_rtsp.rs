//! The simulated 手机看店 camera's own RTSP server (spec V1.3 §15): serves
//! `rtsp://…/realplay?devid=…&channelno=…&streamtype=…&hashtoken=…` over TCP
//! interleaved only, asking the platform to check the token (0x35) before
//! it serves: 401 if the platform refuses, 404 for a wrong device, channel
//! or stream type. It streams the demo clip in RTP (RFC 6184) with the
//! egress packetizer, looping at 25 fps.
//!
//! Just enough RTSP (RFC 2326) for retina, ffmpeg and a raw test client:
//! OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::clip::{Clip, DEMO_FPS};
use crate::ctel::messages::VideoPlayReq;
use crate::media::frame::{Chunks, Codec, Frame};
use crate::rtsp::packetize::{DEFAULT_MTU, Head, Packetizer, RtpHeader};

/// A token check the RTSP side asks the link to make; the answer is the
/// VIDEO_PLAY_RES Result, or `None` when the link is down.
pub struct TokenCheck {
    pub request: VideoPlayReq,
    pub reply: oneshot::Sender<Option<u8>>,
}

/// One check, as the status endpoint reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckRecord {
    pub token: String,
    pub channel: u16,
    pub stream_type: u8,
    /// Result from the platform; `None` if the link was down.
    pub result: Option<u8>,
}

pub struct RtspContext {
    pub dev_id: String,
    pub channels: u16,
    pub checks: mpsc::Sender<TokenCheck>,
    pub log: Arc<Mutex<Vec<CheckRecord>>>,
    pub playing: Arc<std::sync::atomic::AtomicU32>,
}

pub async fn serve(listener: TcpListener, ctx: Arc<RtspContext>, cancel: CancellationToken) {
    loop {
        let (socket, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    warn!("sim RTSP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, peer, ctx, cancel).await {
                debug!(%peer, "sim RTSP connection ended: {e}");
            }
        });
    }
}

struct Request {
    method: String,
    url: String,
    cseq: String,
    transport: Option<String>,
}

/// Parse one request head from `buf`, consuming it (and any body).
fn take_request(buf: &mut Vec<u8>) -> Option<Request> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let url = first.next().unwrap_or_default().to_owned();
    let mut cseq = String::from("0");
    let mut transport = None;
    let mut body_len = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "cseq" => cseq = value.to_owned(),
            "transport" => transport = Some(value.to_owned()),
            "content-length" => body_len = value.parse().unwrap_or(0).min(64 * 1024),
            _ => {}
        }
    }
    let total = (end + 4 + body_len).min(buf.len());
    buf.drain(..total);
    Some(Request {
        method,
        url,
        cseq,
        transport,
    })
}

fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn response(cseq: &str, status: &str, extra: &str, body: &str) -> Vec<u8> {
    let mut r = format!("RTSP/1.0 {status}\r\nCSeq: {cseq}\r\nServer: camgate-sim-ctel\r\n{extra}");
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

fn sdp(url: &str, clip: &Clip) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let find = |t: u8| {
        clip.units()
            .iter()
            .flat_map(|u| &u.nals)
            .find(|n| n.first().map(|b| b & 0x1f) == Some(t))
    };
    let mut fmtp = String::from("packetization-mode=1");
    if let (Some(sps), Some(pps)) = (find(7), find(8)) {
        if let Some(p) = sps.get(1..4) {
            fmtp.push_str(&format!(
                ";profile-level-id={:02X}{:02X}{:02X}",
                p[0], p[1], p[2]
            ));
        }
        fmtp.push_str(&format!(
            ";sprop-parameter-sets={},{}",
            b64.encode(sps),
            b64.encode(pps)
        ));
    }
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=camgate sim-ctel\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 {fmtp}\r\na=control:{url}\r\n"
    )
}

/// Why a request for `url` may not be served, as an RTSP status line.
async fn authorize(ctx: &RtspContext, url: &str) -> Result<(), &'static str> {
    let dev = query_param(url, "devid").unwrap_or_default();
    let channel: Option<u16> = query_param(url, "channelno").and_then(|c| c.parse().ok());
    let stream_type: Option<u8> = query_param(url, "streamtype").and_then(|c| c.parse().ok());
    let (Some(channel), Some(stream_type)) = (channel, stream_type) else {
        return Err("404 Not Found");
    };
    if dev != ctx.dev_id || channel >= ctx.channels || !(1..=2).contains(&stream_type) {
        return Err("404 Not Found");
    }
    let token = query_param(url, "hashtoken").unwrap_or_default().to_owned();
    let (tx, rx) = oneshot::channel();
    let request = VideoPlayReq {
        dev_id: ctx.dev_id.clone(),
        channel_no: channel,
        stream_type,
        hash_token: token.clone(),
    };
    let result = if ctx
        .checks
        .send(TokenCheck { request, reply: tx })
        .await
        .is_ok()
    {
        rx.await.ok().flatten()
    } else {
        None
    };
    info!(token = %token, ?result, "sim-ctel token check");
    if let Ok(mut log) = ctx.log.lock() {
        log.push(CheckRecord {
            token,
            channel,
            stream_type,
            result,
        });
    }
    match result {
        Some(0) => Ok(()),
        _ => Err("401 Unauthorized"),
    }
}

async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    ctx: Arc<RtspContext>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let clip = Clip::demo();
    let mut buf: Vec<u8> = Vec::new();
    let mut read_buf = vec![0u8; 8192];
    let mut authorized = false;
    let mut set_up = false;
    let mut playing = false;
    let session_id = format!("{:016X}", rand::random::<u64>());
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / DEMO_FPS);
    let mut index = 0usize;
    let mut rtp = RtpHeader {
        payload_type: 96,
        ssrc: rand::random(),
        seq: rand::random(),
    };
    let ts_base: u32 = rand::random::<u32>() >> 1;
    let mut frags = Vec::new();
    let result = 'conn: loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            r = socket.read(&mut read_buf) => {
                let n = r?;
                if n == 0 {
                    break Ok(());
                }
                buf.extend_from_slice(&read_buf[..n]);
                if buf.len() > 256 * 1024 {
                    break Ok(());
                }
                // Interleaved data from the client (RTCP receiver reports).
                while buf.first() == Some(&b'$') {
                    let Some(len) = buf.get(2..4).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else { break };
                    if buf.len() < 4 + len { break; }
                    buf.drain(..4 + len);
                }
                while let Some(req) = take_request(&mut buf) {
                    debug!(%peer, method = %req.method, url = %req.url, "sim RTSP request");
                    let needs_auth = matches!(req.method.as_str(), "DESCRIBE" | "SETUP" | "PLAY");
                    if needs_auth && !authorized {
                        match authorize(&ctx, &req.url).await {
                            Ok(()) => authorized = true,
                            Err(status) => {
                                socket.write_all(&response(&req.cseq, status, "", "")).await?;
                                continue;
                            }
                        }
                    }
                    let session = format!("Session: {session_id};timeout=60\r\n");
                    let reply = match req.method.as_str() {
                        "OPTIONS" => response(&req.cseq, "200 OK", "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n", ""),
                        "DESCRIBE" => response(
                            &req.cseq,
                            "200 OK",
                            &format!("Content-Type: application/sdp\r\nContent-Base: {}\r\n", req.url),
                            &sdp(&req.url, &clip),
                        ),
                        "SETUP" => match req.transport.as_deref() {
                            Some(t) if t.contains("TCP") => {
                                set_up = true;
                                response(&req.cseq, "200 OK", &format!("Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n{session}"), "")
                            }
                            _ => response(&req.cseq, "461 Unsupported Transport", "", ""),
                        },
                        "PLAY" if set_up => {
                            if !playing {
                                ctx.playing.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            playing = true;
                            response(&req.cseq, "200 OK", &format!("{session}Range: npt=0.000-\r\n"), "")
                        }
                        "PLAY" => response(&req.cseq, "455 Method Not Valid in This State", "", ""),
                        "GET_PARAMETER" | "SET_PARAMETER" => response(&req.cseq, "200 OK", &session, ""),
                        "TEARDOWN" => {
                            socket.write_all(&response(&req.cseq, "200 OK", &session, "")).await?;
                            info!(%peer, "sim-ctel TEARDOWN");
                            if playing {
                                ctx.playing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                                playing = false;
                            }
                            break 'conn Ok(());
                        }
                        _ => response(&req.cseq, "501 Not Implemented", "", ""),
                    };
                    socket.write_all(&reply).await?;
                }
            }
            _ = ticker.tick(), if playing => {
                let Some(unit) = clip.units().get(index % clip.len().max(1)) else { continue };
                let frame = Frame {
                    codec: Codec::H264,
                    pts: 0,
                    dts: 0,
                    keyframe: unit.keyframe,
                    units: unit.nals.iter().cloned().map(Chunks::from).collect(),
                };
                let ts = ts_base.wrapping_add((index as u32).wrapping_mul(90_000 / DEMO_FPS));
                index += 1;
                frags.clear();
                Packetizer::H264.packetize(&frame, DEFAULT_MTU, &mut frags);
                let mut out = Vec::with_capacity(frame.len() + frags.len() * 20);
                for f in &frags {
                    let mut head = Head::interleaved(0, (12 + f.len()) as u16);
                    rtp.write(&mut head, f.marker, ts, f.prefix());
                    out.extend_from_slice(head.as_slice());
                    for part in f.payload.parts() {
                        out.extend_from_slice(part);
                    }
                }
                socket.write_all(&out).await?;
            }
        }
    };
    if playing {
        ctx.playing
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
    result
}
