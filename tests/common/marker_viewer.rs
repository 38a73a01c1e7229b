//! A minimal RTSP viewer that counts the frames tagged by a simulated
//! camera's `--mark-frames` SEI (camgate::sim::frame_marker): DESCRIBE,
//! SETUP one track interleaved over the RTSP connection (RFC 2326 §10.12),
//! PLAY, then read RTP H.264 packets (RFC 6184) and look at every SEI.
//! Light enough to run fifty at once, where fifty ffprobes would not be.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use camgate::media::rtp::RtpPacket;
use camgate::sim::frame_marker::parse_marker;

/// What one viewer saw.
#[derive(Debug, Default)]
pub struct MarkerCount {
    /// Frames tagged with the expected camera's marker.
    pub own: u32,
    /// Markers of other cameras (each one is cross-talk).
    pub foreign: Vec<String>,
    /// RTP packets received.
    pub packets: u32,
    /// Why the viewer stopped early, if it did.
    pub error: Option<String>,
    /// The open RTSP connection, kept so the stream stays wanted.
    pub connection: Option<TcpStream>,
}

/// Watch `url` until `want` frames carrying `marker` arrived or `limit`
/// passed. The connection is returned open in [`MarkerCount::connection`].
pub fn count_markers(
    port: u16,
    url: &str,
    marker: &str,
    want: u32,
    limit: Duration,
) -> MarkerCount {
    let mut seen = MarkerCount::default();
    if let Err(e) = watch(port, url, marker, want, limit, &mut seen) {
        seen.error = Some(e);
    }
    seen
}

fn watch(
    port: u16,
    url: &str,
    marker: &str,
    want: u32,
    limit: Duration,
    seen: &mut MarkerCount,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut request = |method: &str, target: &str, extra: &str, cseq: u32| {
        writer
            .write_all(
                format!("{method} {target} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n").as_bytes(),
            )
            .map_err(|e| e.to_string())
    };
    request("DESCRIBE", url, "Accept: application/sdp\r\n", 1)?;
    let (status, head) = response(&mut reader)?;
    if status != 200 {
        return Err(format!("DESCRIBE: {status}\n{head}"));
    }
    request(
        "SETUP",
        &format!("{url}/trackID=0"),
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
        2,
    )?;
    let (status, head) = response(&mut reader)?;
    if status != 200 {
        return Err(format!("SETUP: {status}\n{head}"));
    }
    let session = head
        .lines()
        .find_map(|l| l.strip_prefix("Session:"))
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| format!("SETUP without Session\n{head}"))?;
    request(
        "PLAY",
        url,
        &format!("Session: {session}\r\nRange: npt=0-\r\n"),
        3,
    )?;
    let (status, head) = response(&mut reader)?;
    if status != 200 {
        return Err(format!("PLAY: {status}\n{head}"));
    }
    while seen.own < want {
        if Instant::now() > deadline {
            return Err(format!("only {} of {want} marked frames in time", seen.own));
        }
        if let Some((0, body)) = next_message(&mut reader)? {
            look_at_packet(body, marker, seen);
        }
    }
    seen.connection = Some(stream);
    Ok(())
}

/// Count an RTP packet, and its marker if it is a single-NAL SEI packet
/// (the SEI is far smaller than any MTU, so it is never fragmented).
fn look_at_packet(body: Vec<u8>, marker: &str, seen: &mut MarkerCount) {
    let Ok(pkt) = RtpPacket::parse(Bytes::from(body)) else {
        return;
    };
    seen.packets += 1;
    match parse_marker(&pkt.payload, false) {
        Some(m) if m == marker => seen.own += 1,
        Some(m) => seen.foreign.push(m.to_owned()),
        None => {}
    }
}

/// The next RTSP response (status, head), skipping interleaved packets
/// that arrive before it.
fn response(reader: &mut BufReader<TcpStream>) -> Result<(u16, String), String> {
    loop {
        if peek(reader)? == b'$' {
            next_message(reader)?;
            continue;
        }
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("connection closed after {head:?}"));
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        return Ok((status, head));
    }
}

fn peek(reader: &mut BufReader<TcpStream>) -> Result<u8, String> {
    let buf = reader.fill_buf().map_err(|e| e.to_string())?;
    buf.first()
        .copied()
        .ok_or_else(|| "connection closed".to_owned())
}

/// One interleaved frame (channel, body); `None` for an RTSP message
/// from the server in between (skipped).
fn next_message(reader: &mut BufReader<TcpStream>) -> Result<Option<(u8, Vec<u8>)>, String> {
    if peek(reader)? != b'$' {
        let mut line = String::new();
        while line != "\r\n" {
            line.clear();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".to_owned());
            }
        }
        return Ok(None);
    }
    let mut head = [0u8; 4];
    reader.read_exact(&mut head).map_err(|e| e.to_string())?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut body = vec![0; len];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Some((head[1], body)))
}
