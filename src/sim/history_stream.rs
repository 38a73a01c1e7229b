//! The simulated camera's recordings (GB/T 28181-2016 §9.8 playback, §9.9
//! download): every whole hour is one "file" whose content is the demo
//! clip looped. A history INVITE for `[start, end)` streams that span of
//! it as PS over RTP and then ends, honouring MANSRTSP control on the way.
//!
//! Timestamps: the PS PTS (and the RTP timestamp, its low 32 bits) of a
//! frame is its position in its hourly file at 90 kHz, so the first frame
//! of a playback from `start` carries `(start mod 3600) × 90000` and media
//! covers exactly `end − start` seconds of PTS at any speed. That is what
//! "the timestamps match the requested range" means here; the first PTS is
//! logged (`playback first frame`) for tests to check.
//!
//! Pacing is one frame per `1/25 s ÷ scale` (download: `÷ downloadspeed`);
//! `PAUSE` stops sending until `PLAY Range: npt=now-`; `PLAY Range:
//! npt=N-` jumps to N seconds from the start of the range (always a
//! keyframe: the clip has one every second).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clip::{Clip, DEMO_FPS};
use super::gb_camera::{MediaSink, SimStats};
use super::rtp::{PAYLOAD_TYPE_PS, RtpPacketizer};
use crate::gb28181::mansrtsp::PlaybackCommand;
use crate::media::ps_mux::PsMuxer;

/// Length of one recorded file.
pub const FILE_SECS: u64 = 3600;
/// Longest range served, so a hostile INVITE cannot make an endless stream.
pub const MAX_RANGE_SECS: u64 = 24 * 3600;

/// What a history INVITE asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    pub start: u64,
    pub end: u64,
    pub download: bool,
    /// `a=downloadspeed` (1 for playback).
    pub speed: u32,
}

/// Where a history stream stands; pure, so the pacing rules are testable.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Frames from the start of the range.
    pub pos: u64,
    pub total: u64,
    /// Frames of the file before the range.
    pub offset: u64,
    pub scale: f32,
    pub paused: bool,
}

impl Cursor {
    pub fn new(req: &HistoryRequest) -> Self {
        let fps = u64::from(DEMO_FPS);
        let span = req.end.saturating_sub(req.start).min(MAX_RANGE_SECS);
        Self {
            pos: 0,
            total: span * fps,
            offset: (req.start % FILE_SECS) * fps,
            scale: if req.download {
                req.speed.max(1) as f32
            } else {
                1.0
            },
            paused: false,
        }
    }

    pub fn apply(&mut self, cmd: PlaybackCommand) {
        match cmd {
            PlaybackCommand::Pause => self.paused = true,
            PlaybackCommand::Resume => self.paused = false,
            PlaybackCommand::Scale(s) if s > 0.0 => {
                self.scale = s;
                self.paused = false;
            }
            PlaybackCommand::Scale(_) => {}
            PlaybackCommand::Seek(secs) => {
                self.pos = (u64::from(secs) * u64::from(DEMO_FPS)).min(self.total);
                self.paused = false;
            }
        }
    }

    pub fn finished(&self) -> bool {
        self.pos >= self.total
    }

    /// 90 kHz PTS of the frame at `pos`: its place in the hourly file.
    pub fn pts(&self) -> u64 {
        (self.offset + self.pos) * u64::from(90_000 / DEMO_FPS)
    }

    /// Index in the looped clip of the frame at `pos`.
    pub fn clip_index(&self, clip_len: usize) -> usize {
        if clip_len == 0 {
            return 0;
        }
        ((self.offset + self.pos) % clip_len as u64) as usize
    }

    /// Position of the frame at `pos` from the start of the range, in ms.
    pub fn position_ms(&self) -> u64 {
        self.pos * 1000 / u64::from(DEMO_FPS)
    }

    pub fn frame_interval(&self) -> Duration {
        let per_second = f64::from(DEMO_FPS) * f64::from(self.scale.clamp(0.25, 64.0));
        Duration::from_nanos((1e9 / per_second).round() as u64)
    }
}

/// UUID of the position marker (ISO/IEC 11578 form, no zero bytes so no
/// emulation prevention is ever needed).
pub const POSITION_MARKER_UUID: [u8; 16] = [
    0x63, 0x61, 0x6d, 0x67, 0x61, 0x74, 0x65, 0x2d, 0x6e, 0x70, 0x74, 0x2d, 0x6d, 0x61, 0x72, 0x6b,
];

/// Text of a position marker: the frame's place in the recording.
pub fn position_marker_text(position_ms: u64) -> String {
    format!("NPT_MS={position_ms:010};")
}

/// The access unit with a user-data-unregistered SEI (H.264 §D.1.6, H.265
/// §D.2.7) in front of its first slice that carries the frame's position
/// from the start of the range, so tests can tell which frames a viewer
/// got after a seek. Decoders ignore it.
pub fn with_position_marker(nals: &[Bytes], position_ms: u64, h265: bool) -> Vec<Bytes> {
    let text = position_marker_text(position_ms);
    let mut sei = Vec::with_capacity(24 + text.len());
    if h265 {
        // PREFIX_SEI_NUT (39), layer 0, temporal id 1.
        sei.extend_from_slice(&[39 << 1, 1]);
    } else {
        sei.push(0x06);
    }
    sei.push(5); // user_data_unregistered
    sei.push((POSITION_MARKER_UUID.len() + text.len()) as u8);
    sei.extend_from_slice(&POSITION_MARKER_UUID);
    sei.extend_from_slice(text.as_bytes());
    sei.push(0x80); // rbsp_trailing_bits
    let is_vcl = |n: &Bytes| match n.first() {
        Some(b) if h265 => (b >> 1) & 0x3f < 32,
        Some(b) => matches!(b & 0x1f, 1..=5),
        None => false,
    };
    let at = nals.iter().position(is_vcl).unwrap_or(nals.len());
    let mut out = Vec::with_capacity(nals.len() + 1);
    out.extend_from_slice(&nals[..at]);
    out.push(Bytes::from(sei));
    out.extend_from_slice(&nals[at..]);
    out
}

/// Stream the range; returns true when it played to its end (the device
/// then sends MediaStatus 121), false when stopped.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn stream_history(
    mut sink: MediaSink,
    ssrc: u32,
    clip: Arc<Clip>,
    req: HistoryRequest,
    mut control: mpsc::Receiver<PlaybackCommand>,
    stop: CancellationToken,
    stats: Arc<SimStats>,
) -> bool {
    stats.active_streams.fetch_add(1, Ordering::Relaxed);
    let mut cursor = Cursor::new(&req);
    tracing::info!(
        start = req.start,
        end = req.end,
        download = req.download,
        speed = req.speed,
        first_pts = cursor.pts(),
        "playback first frame"
    );
    let mut muxer = PsMuxer::new();
    let mut rtp = RtpPacketizer::new(ssrc, PAYLOAD_TYPE_PS, rand::random());
    let mut ps = BytesMut::with_capacity(64 * 1024);
    let mut framed = Vec::new();
    let mut next = Instant::now();
    let mut sent_keyframe = false;
    let finished = loop {
        if cursor.finished() {
            break true;
        }
        if cursor.paused {
            tokio::select! {
                _ = stop.cancelled() => break false,
                cmd = control.recv() => match cmd {
                    Some(cmd) => {
                        cursor.apply(cmd);
                        next = Instant::now();
                        sent_keyframe = false;
                    }
                    None => break false,
                },
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break false,
            cmd = control.recv() => {
                match cmd {
                    Some(cmd @ PlaybackCommand::Seek(_)) => {
                        cursor.apply(cmd);
                        sent_keyframe = false;
                    }
                    Some(cmd) => cursor.apply(cmd),
                    None => break false,
                }
                continue;
            }
            _ = tokio::time::sleep_until(next) => {}
        }
        let Some(unit) = clip.units().get(cursor.clip_index(clip.len())) else {
            break true;
        };
        // After a seek or resume, start at a keyframe so the viewer decodes.
        if !sent_keyframe && !unit.keyframe {
            cursor.pos += 1;
            continue;
        }
        sent_keyframe = true;
        ps.clear();
        let pts = cursor.pts();
        let nals = with_position_marker(&unit.nals, cursor.position_ms(), clip.is_h265());
        muxer.write_video(&nals, pts, unit.keyframe, &mut ps);
        for pkt in rtp.packetize(&ps, pts as u32) {
            if let Ok(n) = sink.send(&pkt, &mut framed).await {
                stats.rtp_packets_sent.fetch_add(1, Ordering::Relaxed);
                stats.rtp_bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        cursor.pos += 1;
        next += cursor.frame_interval();
    };
    stats.active_streams.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(finished, frames = cursor.pos, "playback stopped");
    finished
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_follows_range_scale_pause_and_seek() {
        // 08:00:30 to 08:00:40: 10 s, 30 s into the 08:00 file.
        let start = 1_714_550_400 + 30;
        let mut c = Cursor::new(&HistoryRequest {
            start,
            end: start + 10,
            download: false,
            speed: 1,
        });
        assert_eq!((c.pos, c.total, c.offset), (0, 250, 750));
        assert_eq!(c.pts(), 30 * 90_000);
        assert_eq!(c.clip_index(150), 0, "a keyframe: 750 = 5 × 150");
        assert_eq!(c.frame_interval(), Duration::from_millis(40));
        c.apply(PlaybackCommand::Pause);
        assert!(c.paused);
        c.apply(PlaybackCommand::Resume);
        assert!(!c.paused);
        c.apply(PlaybackCommand::Scale(2.0));
        assert_eq!(c.frame_interval(), Duration::from_millis(20));
        c.apply(PlaybackCommand::Seek(4));
        assert_eq!(c.pos, 100);
        assert_eq!(c.pts(), 34 * 90_000);
        c.apply(PlaybackCommand::Seek(30));
        assert!(c.finished(), "a seek past the end ends the stream");

        let d = Cursor::new(&HistoryRequest {
            start,
            end: start + 10,
            download: true,
            speed: 4,
        });
        assert_eq!(d.frame_interval(), Duration::from_millis(10));
        let huge = Cursor::new(&HistoryRequest {
            start: 0,
            end: u64::MAX,
            download: false,
            speed: 1,
        });
        assert_eq!(huge.total, MAX_RANGE_SECS * 25);
    }

    #[test]
    fn position_marker_goes_before_the_first_slice() {
        let nals = [
            Bytes::from_static(&[0x09, 0xf0]),
            Bytes::from_static(&[0x67, 1]),
            Bytes::from_static(&[0x65, 2]),
        ];
        let out = with_position_marker(&nals, 20_040, false);
        assert_eq!(out.len(), 4);
        assert_eq!(out[3], nals[2]);
        let sei = &out[2];
        assert_eq!(&sei[..3], &[0x06, 5, 16 + 18]);
        assert_eq!(&sei[3..19], &POSITION_MARKER_UUID);
        assert_eq!(&sei[19..37], b"NPT_MS=0000020040;");
        assert_eq!(sei[37], 0x80);
    }
}
