//! An RTSP viewer that keeps watching in a thread and records *when*
//! things happened: each frame tagged by a simulated camera's
//! `--mark-frames` SEI, the last RTP packet, an RTCP BYE from the server
//! and the moment the server closed the connection. Fault tests read
//! these to assert how long a viewer hung on a dead stream and whether it
//! got its picture back. The handshake is the bare client of
//! [`super::raw_rtsp`], interleaved over TCP (RFC 2326 §10.12).

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use camgate::media::rtp::RtpPacket;
use camgate::sim::frame_marker::parse_marker;

use super::raw_rtsp::RawRtsp;

/// RTCP packet type of BYE (RFC 3550 §6.6).
const RTCP_BYE: u8 = 203;

/// What the viewer has seen so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Arrival times of the frames carrying our camera's marker.
    pub own: Vec<Instant>,
    /// Markers of other cameras (each one is cross-talk).
    pub foreign: u32,
    pub packets: u64,
    pub last_packet: Option<Instant>,
    /// When an RTCP BYE came.
    pub bye: Option<Instant>,
    /// When the server closed the connection.
    pub closed: Option<Instant>,
}

impl Seen {
    /// Frames of our camera that arrived after `t`.
    pub fn own_after(&self, t: Instant) -> usize {
        self.own.iter().filter(|at| **at > t).count()
    }

    /// The first frame of our camera after `t`.
    pub fn first_after(&self, t: Instant) -> Option<Instant> {
        self.own.iter().copied().find(|at| *at > t)
    }
}

pub struct LiveViewer {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveViewer {
    /// DESCRIBE, SETUP (video, interleaved), PLAY `url` on `port`, then
    /// read in a thread until the server closes or the viewer is dropped.
    /// `marker` is the device id the camera writes into its frames.
    pub fn start(port: u16, url: &str, marker: &str) -> Self {
        let mut rtsp = RawRtsp::connect(port);
        let reply = rtsp.request("DESCRIBE", url, &["Accept: application/sdp"]);
        assert_eq!(reply.status, 200, "DESCRIBE {url}: {}", reply.head);
        let reply = rtsp.request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        );
        assert_eq!(reply.status, 200, "SETUP {url}: {}", reply.head);
        let reply = rtsp.request("PLAY", url, &["Range: npt=0-"]);
        assert_eq!(reply.status, 200, "PLAY {url}: {}", reply.head);
        let stream = rtsp.into_stream();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop, marker) = (seen.clone(), stop.clone(), marker.to_owned());
            std::thread::spawn(move || read_media(stream, &marker, &seen, &stop))
        };
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Wait until `cond` holds for what was seen, up to `limit`.
    pub fn wait(&self, limit: Duration, cond: impl Fn(&Seen) -> bool) -> bool {
        super::wait_until(limit, || cond(&self.seen.lock().unwrap()))
    }
}

impl Drop for LiveViewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Interleaved frames (`$`, channel, length, body) until EOF or `stop`.
/// Anything else from the server (an RTSP message) is skipped line-wise.
fn read_media(mut stream: TcpStream, marker: &str, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = [0u8; 16384];
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                seen.lock().unwrap().closed = Some(Instant::now());
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                seen.lock().unwrap().closed = Some(Instant::now());
                return;
            }
        }
        let mut used = 0;
        while let Some(&first) = buf.get(used) {
            if first != b'$' {
                // An RTSP message: skip its head (no body is expected).
                match buf[used..].windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(end) => used += end + 4,
                    None => break,
                }
                continue;
            }
            let Some(head) = buf.get(used..used + 4) else {
                break;
            };
            let (channel, len) = (head[1], usize::from(u16::from_be_bytes([head[2], head[3]])));
            let Some(body) = buf.get(used + 4..used + 4 + len) else {
                break;
            };
            look_at(channel, body, marker, seen);
            used += 4 + len;
        }
        buf.drain(..used);
    }
}

fn look_at(channel: u8, body: &[u8], marker: &str, seen: &Mutex<Seen>) {
    let now = Instant::now();
    let mut seen = seen.lock().unwrap();
    if channel == 1 {
        // A compound RTCP packet: walk its packets for a BYE.
        let mut at = 0;
        while let Some(h) = body.get(at..at + 4) {
            if h[1] == RTCP_BYE {
                seen.bye.get_or_insert(now);
            }
            at += 4 * (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1);
        }
        return;
    }
    let Ok(pkt) = RtpPacket::parse(Bytes::copy_from_slice(body)) else {
        return;
    };
    seen.packets += 1;
    seen.last_packet = Some(now);
    match parse_marker(&pkt.payload, false) {
        Some(m) if m == marker => seen.own.push(now),
        Some(_) => seen.foreign += 1,
        None => {}
    }
}
