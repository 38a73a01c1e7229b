#![allow(dead_code)]
//! Shared by the RTSP benches: an in-process RTSP server fed by a
//! synthetic H.264 source, and a raw RTSP-over-TCP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use camgate::media::frame::{Chunks, Codec, Frame, StreamInfo, VideoParams};
use camgate::media::hub::{Hub, HubConfig};
use camgate::rtsp::{RtspServerConfig, serve};
use camgate::streams::{
    SourceHandle, SourceProvider, StartFuture, StreamKey, Streams, StreamsConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const PATH: &str = "/gb/34020000001320000001/34020000001310000001";
const SPS: &[u8] = &[0x67, 0x4d, 0x40, 0x1e, 0x9a, 0x66, 0x02, 0x80];
const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];

/// Synthetic camera: `fps` frames a second, a keyframe every `gop`
/// frames, `frame_bytes` per frame (the IDR twice that).
pub struct Synthetic {
    pub fps: u32,
    pub gop: u32,
    pub frame_bytes: usize,
}

impl SourceProvider for Synthetic {
    fn start<'a>(&'a self, _key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        let (fps, gop, size) = (self.fps, self.gop, self.frame_bytes);
        Box::pin(async move {
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            let task = tokio::spawn(async move {
                hub.set_info(StreamInfo {
                    audio_decided_by: None,
                    video: Some((
                        Codec::H264,
                        VideoParams {
                            width: 1280,
                            height: 720,
                            vps: None,
                            sps: Some(Bytes::from_static(SPS)),
                            pps: Some(Bytes::from_static(PPS)),
                        },
                    )),
                    audio: None,
                });
                let mut idr = vec![0x65u8; size * 2];
                idr[1..]
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = i as u8);
                let idr = Bytes::from(idr);
                let p = Bytes::from(vec![0x41u8; size]);
                let mut tick = tokio::time::interval(Duration::from_secs(1) / fps);
                let mut n = 0u32;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return camgate::streams::SourceExit::Stopped,
                        _ = tick.tick() => {}
                    }
                    let key = n.is_multiple_of(gop);
                    let units = if key {
                        [SPS, PPS]
                            .iter()
                            .map(|s| Chunks::from(Bytes::from_static(s)))
                            .chain([Chunks::from(idr.clone())])
                            .collect()
                    } else {
                        [Chunks::from(p.clone())].into_iter().collect()
                    };
                    let pts = i64::from(n) * 90_000 / i64::from(fps);
                    hub.publish(Frame {
                        codec: Codec::H264,
                        pts,
                        dts: pts,
                        keyframe: key,
                        units,
                    });
                    n += 1;
                }
            });
            Ok(SourceHandle { cancel, task })
        })
    }
}

pub struct BenchServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start(source: Synthetic, gop_cache: bool, config: RtspServerConfig) -> BenchServer {
    let streams = Streams::new(StreamsConfig {
        hub: HubConfig {
            gop_cache,
            ..HubConfig::default()
        },
        ..StreamsConfig::default()
    })
    .with_provider("gb", Arc::new(source));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, streams, config, shutdown.clone()));
    BenchServer { addr, shutdown }
}

/// A client that has sent DESCRIBE/SETUP(TCP)/PLAY and read the answers;
/// `buf` holds whatever arrived after the PLAY response.
pub struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

fn find_response_end(buf: &[u8]) -> Option<(usize, String)> {
    if buf.first() == Some(&b'$') {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let body: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    (buf.len() >= end + body).then(|| (end + body, head))
}

impl Client {
    async fn response(&mut self) -> String {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            // Interleaved packets before a response are skipped.
            while self.buf.first() == Some(&b'$') && self.buf.len() >= 4 {
                let len = 4 + usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() < len {
                    break;
                }
                self.buf.drain(..len);
            }
            if let Some((n, head)) = find_response_end(&self.buf) {
                self.buf.drain(..n);
                return head;
            }
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "server closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn play(addr: SocketAddr) -> Self {
        let mut c = Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        };
        let url = format!("rtsp://{addr}{PATH}");
        c.stream
            .write_all(
                format!(
                    "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n\
                     SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        c.response().await;
        let setup = c.response().await;
        let session = setup
            .lines()
            .find_map(|l| l.strip_prefix("Session: "))
            .and_then(|s| s.split(';').next())
            .expect("session")
            .to_owned();
        c.stream
            .write_all(
                format!("PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let play = c.response().await;
        assert!(play.starts_with("RTSP/1.0 200"), "{play}");
        c
    }

    /// Read until the last RTP packet of a video frame (marker bit set on
    /// channel 0) has arrived.
    pub async fn first_frame(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let mut at = 0;
            while at + 4 <= self.buf.len() && self.buf[at] == b'$' {
                let len = usize::from(u16::from_be_bytes([self.buf[at + 2], self.buf[at + 3]]));
                if at + 4 + len > self.buf.len() {
                    break;
                }
                if self.buf[at + 1] == 0 && len >= 12 && self.buf[at + 5] & 0x80 != 0 {
                    return;
                }
                at += 4 + len;
            }
            self.buf.drain(..at);
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "server closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
