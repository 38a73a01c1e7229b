//! Sans-IO receiver for one GB28181 media stream: RTP (RFC 3550 §5.1)
//! carrying MPEG-2 Program Stream (GB/T 28181-2016 Annex C, payload type 96
//! by convention), or raw H.264 per RFC 6184 (payload type 98).
//!
//! Packets are taken in the order given; reordering, if wanted, belongs to a
//! jitter buffer in front of this. A sequence gap tells the demuxer that
//! data is missing, so the partial frame is dropped and video resumes at the
//! next keyframe: a decoder downstream never gets a frame with a hole.
//! The marker bit ends a frame at once instead of when the next one starts.

use bytes::Bytes;

use super::frame::{Chunks, Codec, StreamInfo};
use super::h264::H264Depacketizer;
use super::ps::{PsDemuxer, PsEvent, PsStats};
use super::rtp::{RtpError, RtpPacket, SeqEvent, SeqTracker};

/// GB/T 28181-2016 Annex C / SDP conventions.
pub const PT_PS: u8 = 96;
pub const PT_H264: u8 = 98;

/// Counters of the RTP layer; the demuxer's are in [`PsStats`].
#[derive(Debug, Clone, Default)]
pub struct RtpPsStats {
    /// Packets accepted into the demuxer.
    pub packets: u64,
    /// RTP payload bytes accepted.
    pub payload_bytes: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    pub restarts: u64,
    /// Datagrams of another SSRC than the one this receiver is bound to.
    pub foreign_ssrc: u64,
    /// Packets with a payload type this receiver does not handle.
    pub unknown_payload_type: u64,
    /// RTP parse failures (see [`RtpPsReceiver::rtp_error_counts`]) and
    /// RFC 6184 depacketization failures.
    pub rtp_errors: u64,
    pub h264_errors: u64,
    /// Payload bytes copied outside the demuxer (rebuilt FU-A headers).
    pub bytes_copied: u64,
}

const RTP_ERROR_KINDS: [&str; 6] = [
    "too_short",
    "bad_version",
    "csrc_overrun",
    "extension_overrun",
    "bad_padding",
    "rtcp",
];

/// One stream's receive path: RTP packets in, [`PsEvent`]s out.
#[derive(Debug, Default)]
pub struct RtpPsReceiver {
    ssrc: Option<u32>,
    locked: bool,
    seq: SeqTracker,
    demux: PsDemuxer,
    h264: H264Depacketizer,
    ts_last: Option<u32>,
    ts_ext: i64,
    stats: RtpPsStats,
    rtp_errors: [u64; RTP_ERROR_KINDS.len()],
}

impl RtpPsReceiver {
    /// A receiver that adopts the SSRC of the first packet (and follows a
    /// change of SSRC as a source restart).
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver bound to the SSRC negotiated in SDP (`y=` line); other
    /// SSRCs are counted and dropped.
    pub fn with_ssrc(ssrc: u32) -> Self {
        Self {
            ssrc: Some(ssrc),
            locked: true,
            ..Self::default()
        }
    }

    /// See [`PsDemuxer::set_resume_at_keyframe`].
    pub fn set_resume_at_keyframe(&mut self, on: bool) {
        self.demux.set_resume_at_keyframe(on);
    }

    /// See [`PsDemuxer::set_default_g711`].
    pub fn set_default_g711(&mut self, codec: crate::media::frame::Codec) {
        self.demux.set_default_g711(codec);
    }

    pub fn stats(&self) -> &RtpPsStats {
        &self.stats
    }

    pub fn demux_stats(&self) -> &PsStats {
        self.demux.stats()
    }

    /// Payload bytes copied anywhere on this path.
    pub fn bytes_copied(&self) -> u64 {
        self.stats.bytes_copied + self.demux.stats().bytes_copied
    }

    /// Sequence accounting of the stream (for RTCP receiver reports).
    pub fn sequence(&self) -> &SeqTracker {
        &self.seq
    }

    /// The SSRC received (negotiated, or adopted from the first packet).
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    pub fn info(&self) -> &StreamInfo {
        self.demux.info()
    }

    /// `(kind, count)` of RTP parse failures, zeros included.
    pub fn rtp_error_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RTP_ERROR_KINDS
            .iter()
            .copied()
            .zip(self.rtp_errors.iter().copied())
    }

    /// Parse and process one datagram (or RFC 4571 frame body).
    pub fn push_datagram(&mut self, data: Bytes, out: &mut Vec<PsEvent>) -> Result<(), RtpError> {
        match RtpPacket::parse(data) {
            Ok(p) => {
                self.push(p, out);
                Ok(())
            }
            Err(e) => {
                self.stats.rtp_errors += 1;
                if let Some(i) = RTP_ERROR_KINDS.iter().position(|k| *k == e.kind()) {
                    self.rtp_errors[i] += 1;
                }
                Err(e)
            }
        }
    }

    /// Process one parsed packet.
    pub fn push(&mut self, pkt: RtpPacket, out: &mut Vec<PsEvent>) {
        match self.ssrc {
            Some(s) if s != pkt.ssrc => {
                if self.locked {
                    self.stats.foreign_ssrc += 1;
                    return;
                }
                // A camera that restarts picks a new SSRC and sequence.
                self.ssrc = Some(pkt.ssrc);
                self.seq = SeqTracker::new();
                self.ts_last = None;
                self.demux.discontinuity();
                self.h264.reset();
                self.stats.restarts += 1;
            }
            None => self.ssrc = Some(pkt.ssrc),
            _ => {}
        }
        let ev = self.seq.update(pkt.sequence);
        self.stats.lost = self.seq.lost;
        self.stats.late = self.seq.late;
        self.stats.duplicates = self.seq.duplicates;
        self.stats.restarts = self.stats.restarts.max(self.seq.restarts);
        if !ev.accept() {
            return;
        }
        if ev.discontinuity() {
            self.demux.discontinuity();
            self.h264.reset();
        }
        if let SeqEvent::Restart = ev {
            self.ts_last = None;
        }
        self.stats.packets += 1;
        self.stats.payload_bytes += pkt.payload.len() as u64;
        match pkt.payload_type {
            PT_H264 => self.push_h264(&pkt, out),
            // Anything else dynamic is taken as PS: devices are told the
            // mapping in SDP, and some ignore it.
            pt if pt >= 96 => self.demux.push(pkt.payload, out),
            _ => {
                self.stats.unknown_payload_type += 1;
                return;
            }
        }
        if pkt.marker {
            self.demux.end_of_frame(out);
        }
    }

    fn push_h264(&mut self, pkt: &RtpPacket, out: &mut Vec<PsEvent>) {
        let pts = self.unwrap_ts(pkt.timestamp);
        let demux = &mut self.demux;
        let mut fu_copied = 0u64;
        let r = self.h264.push(&pkt.payload, |nal: Chunks| {
            // An FU-A unit's first part is its rebuilt one-byte header.
            if nal.parts().len() > 1 && nal.parts().first().is_some_and(|p| p.len() == 1) {
                fu_copied += 1;
            }
            demux.push_nal_unit(Codec::H264, pts, nal, out)
        });
        self.stats.bytes_copied += fu_copied;
        if r.is_err() {
            self.stats.h264_errors += 1;
        }
    }

    fn unwrap_ts(&mut self, ts: u32) -> i64 {
        match self.ts_last {
            None => self.ts_ext = i64::from(ts),
            Some(last) => self.ts_ext += i64::from(ts.wrapping_sub(last) as i32),
        }
        self.ts_last = Some(ts);
        self.ts_ext
    }

    /// End of stream: emit the last complete frame.
    pub fn flush(&mut self, out: &mut Vec<PsEvent>) {
        self.demux.flush(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, ts: u32, pt: u8, marker: bool, payload: &[u8]) -> Bytes {
        let mut v = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(payload);
        Bytes::from(v)
    }

    #[test]
    fn raw_h264_rfc6184() {
        let sps: &[u8] = &[
            0x67, 0x4d, 0x00, 0x1e, 0x9d, 0xa8, 0x2c, 0x04, 0x9a, 0x6e, 0x02, 0x02, 0x02, 0x80,
            0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x19, 0x42,
        ];
        let mut stap = vec![0x18, 0, sps.len() as u8];
        stap.extend_from_slice(sps);
        stap.extend_from_slice(&[0, 2, 0x68, 0xee]);
        let mut r = RtpPsReceiver::new();
        let mut ev = Vec::new();
        r.push_datagram(rtp(1, 0, 98, false, &stap), &mut ev)
            .unwrap();
        r.push_datagram(rtp(2, 0, 98, false, &[0x7c, 0x85, 1, 2]), &mut ev)
            .unwrap();
        r.push_datagram(rtp(3, 0, 98, true, &[0x7c, 0x45, 3]), &mut ev)
            .unwrap();
        r.push_datagram(rtp(4, 3600, 98, true, &[0x41, 9]), &mut ev)
            .unwrap();
        // Loss: the next non-key frame must not come out.
        r.push_datagram(rtp(6, 10800, 98, true, &[0x41, 9]), &mut ev)
            .unwrap();
        r.flush(&mut ev);
        let frames: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                PsEvent::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 2);
        assert!(frames[0].keyframe);
        assert_eq!(frames[0].units.len(), 3);
        assert_eq!(frames[0].units[2].to_vec(), [0x65, 1, 2, 3]);
        assert_eq!(frames[1].pts, 3600);
        assert_eq!(r.stats().lost, 1);
        assert_eq!(r.demux_stats().frames_dropped, 1);
        let v = r.info().video.clone().unwrap();
        assert_eq!((v.1.width, v.1.height), (704, 576));
        assert_eq!(r.bytes_copied(), 1);
    }

    #[test]
    fn ssrc_binding_and_bad_datagrams() {
        let mut r = RtpPsReceiver::with_ssrc(8);
        let mut ev = Vec::new();
        r.push_datagram(rtp(1, 0, 96, false, &[0; 4]), &mut ev)
            .unwrap();
        assert_eq!(r.stats().foreign_ssrc, 1);
        assert!(
            r.push_datagram(Bytes::from_static(&[0x81, 200, 0, 1]), &mut ev)
                .is_err()
        );
        assert!(
            r.push_datagram(Bytes::from_static(&[0x40; 20]), &mut ev)
                .is_err()
        );
        let counts: Vec<_> = r.rtp_error_counts().filter(|c| c.1 > 0).collect();
        assert_eq!(counts, [("too_short", 1), ("bad_version", 1)]);
    }
}
