//! Lightweight RTSP viewers for load tests (RFC 2326 §10, interleaved RTP
//! over the RTSP connection, §10.12).
//!
//! Each viewer sends DESCRIBE, SETUP (video track, TCP interleaved) and
//! PLAY, then counts the RTP packets of channel 0 and discards their bytes.
//! A viewer whose request fails (e.g. 404 before its camera registered)
//! tries again every second, so "never played" means no packet ever came.
//! The whole set reports packets per viewer at a fixed interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Responses larger than this are not an RTSP server we want to load.
const MAX_HEADER_LINES: usize = 64;
const MAX_BODY: usize = 64 * 1024;
/// Keeps the RTSP session alive (server timeout is 60 s by default).
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Packets received by each viewer.
#[derive(Default)]
pub struct LoadStats {
    pub packets: Vec<AtomicU64>,
}

/// Run one viewer per URL until `shutdown`, printing a report line every
/// `report_every`: `t`, viewers playing, viewers with no packet yet, and the
/// min / median packets per viewer.
pub async fn run(urls: Vec<String>, report_every: Duration, shutdown: CancellationToken) {
    let stats = Arc::new(LoadStats {
        packets: urls.iter().map(|_| AtomicU64::new(0)).collect(),
    });
    for (i, url) in urls.into_iter().enumerate() {
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = view(&url, &stats.packets[i]) => r,
                };
                if let Err(e) = result {
                    tracing::debug!(%url, error = %e, "viewer failed; retrying");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
    let start = Instant::now();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + report_every, report_every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        report(&stats, start.elapsed());
    }
    report(&stats, start.elapsed());
}

fn report(stats: &LoadStats, elapsed: Duration) {
    let mut counts: Vec<u64> = stats
        .packets
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    counts.sort_unstable();
    let never = counts.iter().filter(|&&c| c == 0).count();
    let min = counts.first().copied().unwrap_or(0);
    let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
    println!(
        "readers t={:.0} viewers={} never_played={never} packets_min={min} packets_median={median}",
        elapsed.as_secs_f64(),
        counts.len()
    );
}

/// One RTSP session, until the connection ends.
async fn view(url: &str, packets: &AtomicU64) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("rtsp://")
        .ok_or_else(|| anyhow::anyhow!("not an rtsp:// URL"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let stream = TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(16 * 1024, rd);
    let describe = format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n");
    wr.write_all(describe.as_bytes()).await?;
    let (status, headers, body) = read_response(&mut rd).await?;
    anyhow::ensure!(status == 200, "DESCRIBE: {status}");
    let base = header(&headers, "content-base")
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_owned();
    let sdp = String::from_utf8_lossy(&body);
    let control = sdp
        .split("m=video")
        .nth(1)
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("a=control:")))
        .unwrap_or("trackID=0")
        .trim();
    let track = if control.starts_with("rtsp://") {
        control.to_owned()
    } else {
        format!("{base}/{control}")
    };
    let setup = format!(
        "SETUP {track} RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    );
    wr.write_all(setup.as_bytes()).await?;
    let (status, headers, _) = read_response(&mut rd).await?;
    anyhow::ensure!(status == 200, "SETUP: {status}");
    let session = header(&headers, "session")
        .and_then(|s| s.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("SETUP without Session"))?
        .trim()
        .to_owned();
    let play = format!(
        "PLAY {base}/ RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\nRange: npt=0.000-\r\n\r\n"
    );
    wr.write_all(play.as_bytes()).await?;
    let (status, _, _) = read_response(&mut rd).await?;
    anyhow::ensure!(status == 200, "PLAY: {status}");
    let keepalive = tokio::spawn(async move {
        let mut cseq = 4u32;
        loop {
            tokio::time::sleep(KEEPALIVE).await;
            let msg = format!(
                "GET_PARAMETER {base}/ RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {session}\r\n\r\n"
            );
            if wr.write_all(msg.as_bytes()).await.is_err() {
                return;
            }
            cseq += 1;
        }
    });
    let result = read_media(&mut rd, packets).await;
    keepalive.abort();
    result
}

/// Interleaved frames until the connection ends; RTSP replies in between
/// (to the keepalives) are read and ignored.
async fn read_media(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    packets: &AtomicU64,
) -> anyhow::Result<()> {
    let mut skip = vec![0u8; 65_536];
    loop {
        let first = rd.read_u8().await?;
        if first == b'$' {
            let channel = rd.read_u8().await?;
            let len = usize::from(rd.read_u16().await?);
            rd.read_exact(&mut skip[..len]).await?;
            if channel == 0 {
                packets.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let mut line = vec![first];
            rd.read_until(b'\n', &mut line).await?;
            read_rest(rd).await?;
        }
    }
}

type Response = (u16, Vec<(String, String)>, Vec<u8>);

async fn read_response(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> anyhow::Result<Response> {
    let mut line = String::new();
    rd.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {line:?}"))?;
    let (headers, body) = read_rest(rd).await?;
    Ok((status, headers, body))
}

/// Header lines after the first, and the body they announce.
async fn read_rest(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> anyhow::Result<(Vec<(String, String)>, Vec<u8>)> {
    let mut headers = Vec::new();
    for _ in 0..MAX_HEADER_LINES {
        let mut line = String::new();
        if rd.read_line(&mut line).await? == 0 {
            anyhow::bail!("connection closed");
        }
        let line = line.trim_end();
        if line.is_empty() {
            let len: usize = header(&headers, "content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            anyhow::ensure!(len <= MAX_BODY, "body of {len} bytes");
            let mut body = vec![0; len];
            rd.read_exact(&mut body).await?;
            return Ok((headers, body));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    anyhow::bail!("too many header lines")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
