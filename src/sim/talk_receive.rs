//! The simulated camera's speaker (GB/T 28181-2016 §9.12): receives the
//! platform's voice broadcast RTP and checks it the way a device would
//! need it — payload type 8 (PCMA), 160-byte payloads (20 ms at 8 kHz),
//! sequence numbers +1 and timestamps +160 packet to packet — over UDP,
//! or over TCP with RFC 4571 framing (GB/T 28181-2016 Annex F).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::ingest::rfc4571::Rfc4571Decoder;

/// What the speaker heard; reset by [`TalkCounters::reset`] per call.
#[derive(Debug, Default)]
pub struct TalkCounters {
    pub packets: AtomicU64,
    /// Not PT 8, or not 160 bytes of payload, or not RTP at all.
    pub bad_packets: AtomicU64,
    /// Sequence not +1 or timestamp not +160 from the previous packet.
    pub discontinuities: AtomicU64,
    /// Good packets that carry sound, not silence (see [`is_loud`]).
    pub loud_packets: AtomicU64,
}

/// Mean absolute sample above which a 20 ms A-law packet counts as sound:
/// about -42 dBFS, well above the A-law silence code (0xD5 decodes to 8)
/// and the low noise of a quiet microphone.
pub const LOUD_MEAN_ABS: u32 = 256;

/// Whether an A-law payload carries sound rather than silence.
pub fn is_loud(alaw: &[u8]) -> bool {
    if alaw.is_empty() {
        return false;
    }
    let sum: u32 = alaw
        .iter()
        .map(|b| u32::from(crate::media::audio::g711::decode_sample(*b).unsigned_abs()))
        .sum();
    sum / alaw.len() as u32 > LOUD_MEAN_ABS
}

impl TalkCounters {
    pub fn reset(&self) {
        self.packets.store(0, Ordering::Relaxed);
        self.bad_packets.store(0, Ordering::Relaxed);
        self.discontinuities.store(0, Ordering::Relaxed);
        self.loud_packets.store(0, Ordering::Relaxed);
    }

    pub fn loud(&self) -> u64 {
        self.loud_packets.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> (u64, u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bad_packets.load(Ordering::Relaxed),
            self.discontinuities.load(Ordering::Relaxed),
        )
    }
}

/// (payload type, seq, timestamp, payload length) of an RTP packet.
pub fn rtp_fields(p: &[u8]) -> Option<(u8, u16, u32, usize)> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let csrcs = usize::from(p[0] & 0x0F) * 4;
    let pt = p[1] & 0x7F;
    let seq = u16::from_be_bytes([p[2], p[3]]);
    let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let len = p.len().checked_sub(12 + csrcs)?;
    Some((pt, seq, ts, len))
}

/// Checks one talk stream packet by packet.
#[derive(Default)]
struct Speaker {
    last: Option<(u16, u32)>,
}

impl Speaker {
    fn hear(&mut self, counters: &TalkCounters, packet: &[u8]) {
        counters.packets.fetch_add(1, Ordering::Relaxed);
        match rtp_fields(packet) {
            Some((8, seq, ts, 160)) => {
                if let Some((s, t)) = self.last
                    && (seq != s.wrapping_add(1) || ts != t.wrapping_add(160))
                {
                    counters.discontinuities.fetch_add(1, Ordering::Relaxed);
                }
                self.last = Some((seq, ts));
                if packet.get(12..).is_some_and(is_loud) {
                    counters.loud_packets.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                counters.bad_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Count what arrives on `socket` until `stop`.
pub async fn receive_talk(
    socket: Arc<UdpSocket>,
    counters: Arc<TalkCounters>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 2048];
    let mut speaker = Speaker::default();
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                Err(_) => continue,
            },
        };
        speaker.hear(&counters, buf.get(..n).unwrap_or_default());
    }
}

/// Count the RFC 4571 frames arriving on one TCP connection until it
/// closes or `stop`.
pub async fn receive_talk_tcp(
    mut stream: TcpStream,
    counters: Arc<TalkCounters>,
    stop: CancellationToken,
) {
    let mut framing = Rfc4571Decoder::default();
    let mut speaker = Speaker::default();
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = stream.read_buf(framing.read_buf()) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        framing.filled(n);
        loop {
            match framing.next_frame() {
                Ok(Some(packet)) => speaker.hear(&counters, &packet),
                Ok(None) => break,
                Err(e) if e.is_fatal() => return,
                Err(_) => {
                    counters.bad_packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Accept the platform's talk connections (we offered `a=setup:passive`).
pub async fn accept_talk_tcp(
    listener: TcpListener,
    counters: Arc<TalkCounters>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        tokio::spawn(receive_talk_tcp(
            stream,
            counters.clone(),
            stop.child_token(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_header_fields() {
        let mut p = vec![0x80, 0x88, 0, 5, 0, 0, 1, 0, 0, 0, 0, 1];
        p.extend_from_slice(&[0xD5; 160]);
        assert_eq!(rtp_fields(&p), Some((8, 5, 256, 160)));
        assert_eq!(rtp_fields(&p[..11]), None);
        p[0] = 0x40;
        assert_eq!(rtp_fields(&p), None);
    }

    #[test]
    fn silence_is_not_loud_and_a_tone_is() {
        assert!(!is_loud(&[0xD5; 160]));
        assert!(!is_loud(&[]));
        let tone: Vec<i16> = (0..160)
            .map(|i| ((i as f64 * 0.35).sin() * 3000.0) as i16)
            .collect();
        assert!(is_loud(&crate::media::audio::g711::encode(&tone)));
        let whisper: Vec<i16> = tone.iter().map(|s| s / 40).collect();
        assert!(!is_loud(&crate::media::audio::g711::encode(&whisper)));
    }
}
