//! `camgate probe FILE`: what a capture holds, for people debugging a
//! device. Sans-IO: the whole file's bytes in, a [`ProbeReport`] out.
//!
//! Three layouts are recognised from the first bytes:
//! - MPEG-2 Program Stream (ISO/IEC 13818-1 §2.5, GB/T 28181-2016 Annex C),
//!   starting with a pack header `00 00 01 BA`;
//! - RFC 4571 framing: a 16-bit length, then an RTP header;
//! - raw RTP packets back to back with no lengths (a common capture
//!   export): a packet ends where the next header with the same version,
//!   payload type and SSRC begins.

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::frame::{Codec, StreamInfo};
use super::ps::{PsDemuxer, PsEvent};
use super::rtp::peek_ssrc;
use super::rtp_ps::RtpPsReceiver;
use crate::ingest::rfc4571::Rfc4571Decoder;

/// How the file's bytes were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Ps,
    RawRtp,
    Rfc4571,
}

/// Video sizes a report lists.
pub const MAX_SIZES: usize = 16;

/// How much of a capture's head is weighed to tell its layout.
pub const DETECT_WINDOW: usize = 512 * 1024;

impl Layout {
    /// Decide from evidence over the first [`DETECT_WINDOW`] bytes; `None`
    /// if nothing fits. RTP layouts must hold up as a chain of packets of
    /// one SSRC with mostly consecutive sequence numbers (two bytes of a
    /// PES cut in the middle easily pass for one length and header, never
    /// for dozens); a program stream needs pack headers found by scanning,
    /// and is read from the first one (the demuxer resynchronises there).
    pub fn detect(data: &[u8]) -> Option<Self> {
        let window = &data[..data.len().min(DETECT_WINDOW)];
        if rfc4571_chain_holds(window) {
            return Some(Self::Rfc4571);
        }
        if raw_rtp_chain_holds(window) {
            return Some(Self::RawRtp);
        }
        if pack_headers(window) > 0 {
            return Some(Self::Ps);
        }
        // Too little to show a chain: one plausible packet is all there is.
        if window.len() < 2048 {
            if let [hi, lo, rest @ ..] = window {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                if len >= 12 && peek_ssrc(rest).is_some() && rest.len() >= len {
                    return Some(Self::Rfc4571);
                }
            }
            if peek_ssrc(window).is_some() {
                return Some(Self::RawRtp);
            }
        }
        None
    }
}

/// Packets in a row an RTP layout must show (fewer if the window ends).
const MIN_CHAIN: usize = 8;

/// Whether sequence numbers step by one between most neighbours.
fn mostly_consecutive(seqs: &[u16]) -> bool {
    let pairs = seqs.len().saturating_sub(1);
    let steps = seqs
        .windows(2)
        .filter(|w| w[1] == w[0].wrapping_add(1))
        .count();
    pairs > 0 && steps * 4 >= pairs * 3
}

fn seq_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

/// RFC 4571 from offset 0: every length is followed by an RTP header of the
/// first packet's SSRC, up to the end of the window.
fn rfc4571_chain_holds(w: &[u8]) -> bool {
    let mut at = 0;
    let mut ssrc = None;
    let mut seqs = Vec::new();
    while let (Some(&hi), Some(&lo)) = (w.get(at), w.get(at + 1)) {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        // A packet cut by the end of the window ends the walk.
        let Some(pkt) = w.get(at + 2..).filter(|p| p.len() >= 12) else {
            break;
        };
        let Some(s) = peek_ssrc(pkt).filter(|_| len >= 12) else {
            return false;
        };
        if *ssrc.get_or_insert(s) != s {
            return false;
        }
        seqs.push(seq_of(pkt));
        at += 2 + len;
    }
    // Short of MIN_CHAIN only if the capture itself is that short.
    let enough = seqs.len() >= MIN_CHAIN || (!seqs.is_empty() && w.len() < DETECT_WINDOW);
    enough && (seqs.len() < 2 || mostly_consecutive(&seqs))
}

/// Back-to-back RTP with no lengths: a header at 0, its SSRC recurring
/// with the same version and payload type and consecutive sequence numbers.
fn raw_rtp_chain_holds(w: &[u8]) -> bool {
    if peek_ssrc(w).is_none() {
        return false;
    }
    let packets = split_raw_rtp(&Bytes::copy_from_slice(w));
    let seqs: Vec<u16> = packets
        .iter()
        .filter(|p| p.len() >= 12)
        .map(|p| seq_of(p))
        .collect();
    seqs.len() >= MIN_CHAIN.min(2) && mostly_consecutive(&seqs)
}

/// MPEG-2 pack headers (with valid marker bits) found anywhere in `w`.
fn pack_headers(w: &[u8]) -> usize {
    let mut n = 0;
    let mut from = 0;
    while let Some(off) = w
        .get(from..)
        .and_then(|r| memchr::memmem::find(r, &[0, 0, 1, 0xba]))
    {
        let at = from + off;
        // One cut by the end of the window cannot be disproved.
        let Some(h) = w.get(at..at + 14) else {
            n += 1;
            break;
        };
        if (h[4] >> 6 == 0b01
            && h[4] & 0x04 != 0
            && h[6] & 0x04 != 0
            && h[8] & 0x04 != 0
            && h[9] & 0x01 != 0)
            || h[4] >> 4 == 0b0010
        {
            n += 1;
        }
        from = at + 4;
    }
    n
}

/// Choices a device's habits call for.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    /// G.711 law of undeclared audio without MPEG/ADTS headers
    /// (`media.default_g711`).
    pub default_g711: Codec,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            default_g711: Codec::Pcma,
        }
    }
}

/// What the file holds.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub layout: Option<Layout>,
    pub bytes: u64,
    pub info: StreamInfo,
    /// Every video size the stream announced, in order (a new SPS mid-stream
    /// adds one); at most [`MAX_SIZES`].
    pub sizes: Vec<(u32, u32)>,
    pub video_frames: u64,
    pub audio_frames: u64,
    pub keyframes: u64,
    /// Frames per GOP (keyframe to keyframe), the first partial GOP
    /// excluded; min and max.
    pub gop: Option<(u64, u64)>,
    pub first_pts: Option<i64>,
    pub last_pts: Option<i64>,
    /// Video frame interval seen most (90 kHz ticks).
    pub frame_interval: Option<i64>,
    /// Sum of forward PTS steps up to a second; a jump (concatenated or
    /// restarted capture) counts as one frame interval.
    pub span_ticks: i64,
    jumps: u64,
    pub rtp_packets: u64,
    pub rtp_lost: u64,
    pub rtp_errors: u64,
    pub ssrc: Option<u32>,
    pub private_pes: u64,
    /// PSMs read by their packet length because their map length was wrong.
    pub psm_repaired: u64,
    pub frames_dropped: u64,
    pub demux_errors: Vec<(&'static str, u64)>,
    pub framing_errors: u64,
}

impl ProbeReport {
    /// Seconds of video: the PTS steps between frames plus one interval.
    pub fn duration_secs(&self) -> Option<f64> {
        self.first_pts?;
        let step = self.frame_interval.filter(|s| *s > 0).unwrap_or(0);
        let ticks = self.span_ticks + step * (1 + self.jumps as i64);
        Some(ticks as f64 / 90_000.0)
    }
}

#[derive(Default)]
struct Tally {
    report: ProbeReport,
    since_key: Option<u64>,
    last_video_pts: Option<i64>,
    /// (PTS step, times seen); a handful of distinct steps in practice,
    /// so a list beats hashing every frame.
    intervals: Vec<(i64, u64)>,
}

impl Tally {
    fn events(&mut self, events: &mut Vec<PsEvent>) {
        let r = &mut self.report;
        // By reference, then cleared: a frame is hundreds of bytes, and
        // moving each one out costs more than the counting here.
        for ev in events.iter() {
            match ev {
                PsEvent::Frame(f) if f.codec.kind() == super::frame::MediaKind::Video => {
                    r.video_frames += 1;
                    if f.keyframe {
                        r.keyframes += 1;
                        if let Some(n) = self.since_key {
                            r.gop = Some(match r.gop {
                                None => (n, n),
                                Some((lo, hi)) => (lo.min(n), hi.max(n)),
                            });
                        }
                        self.since_key = Some(0);
                    }
                    if let Some(n) = self.since_key.as_mut() {
                        *n += 1;
                    }
                    if let Some(prev) = self.last_video_pts {
                        let step = f.pts - prev;
                        if (1..=90_000).contains(&step) {
                            r.span_ticks += step;
                        } else {
                            r.jumps += 1;
                        }
                        let intervals = &mut self.intervals;
                        if let Some((_, n)) = intervals.iter_mut().find(|(s, _)| *s == step) {
                            *n += 1;
                        } else if intervals.len() < 64 {
                            intervals.push((step, 1));
                        }
                    }
                    self.last_video_pts = Some(f.pts);
                    r.first_pts = Some(r.first_pts.map_or(f.pts, |p| p.min(f.pts)));
                    r.last_pts = Some(r.last_pts.map_or(f.pts, |p| p.max(f.pts)));
                }
                PsEvent::Frame(_) => r.audio_frames += 1,
                PsEvent::Info(info) => {
                    if let Some((_, v)) = &info.video
                        && v.width > 0
                        && r.sizes.last() != Some(&(v.width, v.height))
                        && r.sizes.len() < MAX_SIZES
                    {
                        r.sizes.push((v.width, v.height));
                    }
                    r.info = info.clone();
                }
                PsEvent::Error(_) => {}
            }
        }
        events.clear();
    }

    fn finish(mut self, demux: &PsDemuxer) -> ProbeReport {
        let s = demux.stats();
        self.report.private_pes = s.private_pes_skipped;
        self.report.psm_repaired = s.psm_repaired;
        self.report.frames_dropped = s.frames_dropped;
        self.report.demux_errors = s.errors().filter(|(_, n)| *n > 0).collect();
        self.report.frame_interval = self
            .intervals
            .iter()
            .max_by_key(|(_, n)| *n)
            .map(|(i, _)| *i);
        if self.report.info.video.is_none() && self.report.info.audio.is_none() {
            self.report.info = demux.info().clone();
        }
        self.report
    }
}

/// Analyse a capture read from `input`. A program stream is read in
/// blocks that are recycled once no frame holds a slice of them (so a
/// large file is never held whole, and no fresh memory has to be zeroed
/// for each read); RTP layouts are read whole (a raw dump is cut by
/// looking ahead for the next header).
pub fn probe_reader(input: impl std::io::Read) -> std::io::Result<ProbeReport> {
    probe_reader_with(input, ProbeOptions::default())
}

/// [`probe_reader`] with options.
pub fn probe_reader_with(
    mut input: impl std::io::Read,
    opts: ProbeOptions,
) -> std::io::Result<ProbeReport> {
    const BLOCK: usize = 1 << 20;
    let mut head = BytesMut::zeroed(DETECT_WINDOW);
    let n = fill(&mut input, &mut head)?;
    head.truncate(n);
    let head = head.freeze();
    let layout = Layout::detect(&head);
    if !matches!(layout, Some(Layout::Ps) | None) {
        let mut all = Vec::from(&head[..]);
        input.read_to_end(&mut all)?;
        return Ok(probe_with(Bytes::from(all), opts));
    }
    let mut demux = PsDemuxer::new();
    demux.set_default_g711(opts.default_g711);
    let mut tally = Tally::default();
    let mut events = Vec::with_capacity(64);
    let mut bytes = head.len() as u64;
    demux.push(head, &mut events);
    tally.events(&mut events);
    let mut blocks = BlockPool::default();
    loop {
        let mut block = blocks.take(BLOCK);
        let n = fill(&mut input, &mut block)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        demux.push(blocks.lend(block, n), &mut events);
        tally.events(&mut events);
    }
    demux.flush(&mut events);
    tally.events(&mut events);
    let mut report = tally.finish(&demux);
    report.layout = layout;
    report.bytes = bytes;
    Ok(report)
}

/// Read blocks handed to the demuxer, kept so that each can be written
/// again once the demuxer and its frames have let go of every slice.
#[derive(Default)]
struct BlockPool {
    lent: Vec<Bytes>,
}

impl BlockPool {
    /// A block of `size` bytes to read into: a returned one if any is free.
    fn take(&mut self, size: usize) -> BytesMut {
        if let Some(i) = self.lent.iter().position(Bytes::is_unique)
            && let Ok(block) = self.lent.swap_remove(i).try_into_mut()
            && block.len() == size
        {
            return block;
        }
        BytesMut::zeroed(size)
    }

    /// The first `filled` bytes of `block`, to give away.
    fn lend(&mut self, block: BytesMut, filled: usize) -> Bytes {
        let block = block.freeze();
        let data = block.slice(..filled.min(block.len()));
        self.lent.push(block);
        data
    }
}

/// Fill `buf` from `input` (short only at the end of input); returns how
/// many bytes were read.
fn fill(input: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Analyse the capture in the file at `path`: mapped into memory when it
/// can be (no copy out of the page cache), read in blocks otherwise.
pub fn probe_file(path: &std::path::Path) -> std::io::Result<ProbeReport> {
    probe_file_with(path, ProbeOptions::default())
}

/// [`probe_file`] with options.
pub fn probe_file_with(path: &std::path::Path, opts: ProbeOptions) -> std::io::Result<ProbeReport> {
    match super::mapped_file::map(path) {
        Ok(data) => Ok(probe_with(data, opts)),
        Err(_) => probe_reader_with(std::fs::File::open(path)?, opts),
    }
}

/// Analyse a whole capture.
pub fn probe(data: Bytes) -> ProbeReport {
    probe_with(data, ProbeOptions::default())
}

/// [`probe`] with options.
pub fn probe_with(data: Bytes, opts: ProbeOptions) -> ProbeReport {
    let layout = Layout::detect(&data);
    let bytes = data.len() as u64;
    let mut report = match layout {
        Some(Layout::Ps) | None => probe_ps(data, opts),
        Some(Layout::RawRtp) => probe_rtp(split_raw_rtp(&data).into_iter(), 0, opts),
        Some(Layout::Rfc4571) => {
            let mut d = Rfc4571Decoder::default();
            d.push(&data);
            let mut frames = Vec::new();
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => break,
                    Err(_) => {}
                }
            }
            probe_rtp(frames.into_iter(), d.stats().errors, opts)
        }
    };
    report.layout = layout;
    report.bytes = bytes;
    report
}

fn probe_ps(data: Bytes, opts: ProbeOptions) -> ProbeReport {
    let mut demux = PsDemuxer::new();
    demux.set_default_g711(opts.default_g711);
    let mut tally = Tally::default();
    let mut events = Vec::with_capacity(64);
    // Chunks as a socket would deliver them keep the event list short.
    const CHUNK: usize = 256 * 1024;
    let mut at = 0;
    while at < data.len() {
        let end = (at + CHUNK).min(data.len());
        demux.push(data.slice(at..end), &mut events);
        tally.events(&mut events);
        at = end;
    }
    demux.flush(&mut events);
    tally.events(&mut events);
    tally.finish(&demux)
}

fn probe_rtp(
    packets: impl Iterator<Item = Bytes>,
    framing_errors: u64,
    opts: ProbeOptions,
) -> ProbeReport {
    let mut rx = RtpPsReceiver::new();
    rx.set_default_g711(opts.default_g711);
    let mut tally = Tally::default();
    let mut events = Vec::with_capacity(64);
    for p in packets {
        let _ = rx.push_datagram(p, &mut events);
        tally.events(&mut events);
    }
    rx.flush(&mut events);
    tally.events(&mut events);
    let s = rx.stats().clone();
    let ssrc = rx.ssrc();
    // The receiver's demuxer holds the PS statistics.
    let mut report = {
        let demux_stats = rx.demux_stats().clone();
        let mut r = tally.report;
        r.private_pes = demux_stats.private_pes_skipped;
        r.psm_repaired = demux_stats.psm_repaired;
        r.frames_dropped = demux_stats.frames_dropped;
        r.demux_errors = demux_stats.errors().filter(|(_, n)| *n > 0).collect();
        r.frame_interval = tally
            .intervals
            .iter()
            .max_by_key(|(_, n)| *n)
            .map(|(i, _)| *i);
        if r.info.video.is_none() && r.info.audio.is_none() {
            r.info = rx.info().clone();
        }
        r
    };
    report.rtp_packets = s.packets;
    report.rtp_lost = s.lost;
    report.rtp_errors = s.rtp_errors;
    report.ssrc = ssrc;
    report.framing_errors = framing_errors;
    report
}

/// Cut back-to-back RTP packets (no lengths) at each next header with the
/// first packet's version, payload type and SSRC.
pub fn split_raw_rtp(data: &Bytes) -> Vec<Bytes> {
    let Some(first) = data.get(..12) else {
        return Vec::new();
    };
    let (b0, pt, ssrc) = (
        first[0] & 0xC0,
        first[1] & 0x7f,
        [first[8], first[9], first[10], first[11]],
    );
    let mut starts = vec![0usize];
    let mut at = 12;
    let bytes: &[u8] = data;
    while at + 12 <= bytes.len() {
        // The SSRC is the most selective field: look for it first.
        match memchr_ssrc(&bytes[at + 8..], ssrc) {
            None => break,
            Some(off) => {
                let cand = at + off;
                if bytes[cand] & 0xC0 == b0 && bytes[cand + 1] & 0x7f == pt {
                    starts.push(cand);
                    at = cand + 12;
                } else {
                    at = cand + 1;
                }
            }
        }
    }
    starts.push(bytes.len());
    starts.windows(2).map(|w| data.slice(w[0]..w[1])).collect()
}

/// Offset of the next `ssrc` bytes in `hay`.
fn memchr_ssrc(hay: &[u8], ssrc: [u8; 4]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = hay.get(from..)?.iter().position(|b| *b == ssrc[0]) {
        let at = from + i;
        if hay.get(at..at + 4)? == ssrc {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::H264 => "h264",
        Codec::H265 => "hevc",
        Codec::Mpeg4 => "mpeg4",
        Codec::Svac => "svac",
        Codec::Mjpeg => "mjpeg",
        Codec::Pcma => "pcm_alaw",
        Codec::Pcmu => "pcm_mulaw",
        Codec::G722 => "g722",
        Codec::G723 => "g723_1",
        Codec::G729 => "g729",
        Codec::Aac => "aac",
        Codec::Mpa => "mp2/mp3",
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layout = match self.layout {
            Some(Layout::Ps) => "MPEG-PS",
            Some(Layout::RawRtp) => "raw RTP packets (no length prefix)",
            Some(Layout::Rfc4571) => "RTP with RFC 4571 length prefixes",
            None => "unknown (tried as MPEG-PS)",
        };
        writeln!(f, "format:     {layout}, {} bytes", self.bytes)?;
        if let Some((codec, v)) = &self.info.video {
            write!(
                f,
                "video:      {} {}x{}",
                codec_name(*codec),
                v.width,
                v.height
            )?;
            if self.sizes.len() > 1 {
                let all: Vec<String> = self.sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
                write!(f, " (sizes in order: {})", all.join(", "))?;
            }
            writeln!(f)?;
        } else if self.info.audio.is_some() {
            writeln!(f, "video:      none (audio only)")?;
        } else {
            writeln!(f, "video:      none")?;
        }
        if let Some((codec, a)) = &self.info.audio {
            write!(
                f,
                "audio:      {} {} Hz, {} ch",
                codec_name(*codec),
                a.sample_rate,
                a.channels
            )?;
            match self.info.audio_decided_by {
                Some(how) if how != super::frame::AudioEvidence::Psm => writeln!(f, " ({how})")?,
                _ => writeln!(f)?,
            }
        }
        writeln!(
            f,
            "frames:     {} video ({} keyframes), {} audio",
            self.video_frames, self.keyframes, self.audio_frames
        )?;
        match self.gop {
            Some((lo, hi)) if lo == hi => writeln!(f, "gop:        {lo} frames")?,
            Some((lo, hi)) => writeln!(f, "gop:        {lo}-{hi} frames")?,
            None => writeln!(f, "gop:        unknown (fewer than two keyframes)")?,
        }
        if let Some(d) = self.duration_secs() {
            let fps = self
                .frame_interval
                .filter(|i| *i > 0)
                .map(|i| format!(", {:.2} fps", 90_000.0 / i as f64))
                .unwrap_or_default();
            writeln!(f, "duration:   {d:.3} s{fps}")?;
        }
        if self.layout != Some(Layout::Ps) {
            writeln!(
                f,
                "rtp:        {} packets, ssrc {}, {} lost, {} bad",
                self.rtp_packets,
                self.ssrc.map_or("-".to_owned(), |s| format!("{s:#010x}")),
                self.rtp_lost,
                self.rtp_errors
            )?;
        }
        if self.psm_repaired > 0 {
            writeln!(
                f,
                "repaired:   {} PSMs with a wrong elementary_stream_map_length",
                self.psm_repaired
            )?;
        }
        let errors: Vec<String> = self
            .demux_errors
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        writeln!(
            f,
            "errors:     {} (frames dropped {}, private PES skipped {}{})",
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(" ")
            },
            self.frames_dropped,
            self.private_pes,
            if self.framing_errors > 0 {
                format!(", framing errors {}", self.framing_errors)
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_layouts() {
        assert_eq!(Layout::detect(&[0, 0, 1, 0xBA, 0x44]), Some(Layout::Ps));
        let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        rtp.extend_from_slice(&[0; 8]);
        assert_eq!(Layout::detect(&rtp), Some(Layout::RawRtp));
        let mut framed = vec![0, rtp.len() as u8];
        framed.extend_from_slice(&rtp);
        assert_eq!(Layout::detect(&framed), Some(Layout::Rfc4571));
        assert_eq!(Layout::detect(b"hello"), None);
    }

    #[test]
    fn capture_cut_mid_pes_is_ps_not_rfc4571() {
        // Mid-PES bytes that happen to read as a length (0x0020) and an RTP
        // header (version 2): the old first-bytes test called this RFC 4571.
        let mut data = vec![0x00, 0x20, 0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        data.resize(34, 0x41);
        let pack = [0, 0, 1, 0xba, 0x44, 0, 4, 0, 4, 1, 1, 0x89, 0xc3, 0xf8];
        for _ in 0..200 {
            data.extend_from_slice(&pack);
            data.extend_from_slice(&[0, 0, 1, 0xe0, 0, 4, 0x80, 0, 0, 0x00]);
            data.resize(data.len() + 100, 0x33);
        }
        assert_eq!(Layout::detect(&data), Some(Layout::Ps));
        // A real RFC 4571 chain still wins over the pack headers inside it.
        let mut framed = Vec::new();
        for seq in 0..20u16 {
            let mut rtp = vec![0x80, 96];
            rtp.extend_from_slice(&seq.to_be_bytes());
            rtp.extend_from_slice(&[0, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD]);
            rtp.extend_from_slice(&pack);
            framed.extend_from_slice(&(rtp.len() as u16).to_be_bytes());
            framed.extend_from_slice(&rtp);
        }
        assert_eq!(Layout::detect(&framed), Some(Layout::Rfc4571));
        assert_eq!(Layout::detect(&framed[2..]), Some(Layout::RawRtp));
    }

    #[test]
    fn splits_raw_rtp_by_header() {
        let mut v = Vec::new();
        for (seq, len) in [(1u8, 30usize), (2, 12), (3, 50)] {
            let start = v.len();
            v.extend_from_slice(&[0x80, 96, 0, seq, 0, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD]);
            v.resize(start + len, 0xAA);
        }
        let parts = split_raw_rtp(&Bytes::from(v));
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(lens, [30, 12, 50]);
    }

    #[test]
    fn probes_the_hikvision_captures() {
        let (Some(ps), Some(rtp)) = (
            crate::testdata::file("hik_h264_704x576.ps"),
            crate::testdata::file("hik_h264_704x576.rtp"),
        ) else {
            return;
        };
        let r = probe(Bytes::from(std::fs::read(&ps).unwrap()));
        let streamed = probe_reader(std::fs::File::open(&ps).unwrap()).unwrap();
        assert_eq!(
            (streamed.video_frames, streamed.keyframes, streamed.bytes),
            (1347, 54, 3_279_260)
        );
        assert_eq!(streamed.to_string(), r.to_string());
        let mapped = probe_file(&ps).unwrap();
        assert_eq!(mapped.to_string(), r.to_string());
        // Two copies back to back: twice the duration, not a PTS difference.
        let two = [std::fs::read(&ps).unwrap(), std::fs::read(&ps).unwrap()].concat();
        let r2 = probe(Bytes::from(two));
        assert_eq!(r2.video_frames, 2 * 1347);
        assert!((r2.duration_secs().unwrap() - 2.0 * 53.88).abs() < 0.01);
        assert_eq!(r.layout, Some(Layout::Ps));
        assert_eq!((r.video_frames, r.keyframes), (1347, 54));
        let (codec, v) = r.info.video.clone().unwrap();
        assert_eq!((codec, v.width, v.height), (Codec::H264, 704, 576));
        assert_eq!(r.frame_interval, Some(3600));
        assert_eq!(r.private_pes, 54);
        let d = r.duration_secs().unwrap();
        assert!((d - 53.88).abs() < 0.01, "{d}");
        let text = r.to_string();
        assert!(text.contains("h264 704x576"), "{text}");

        let data = Bytes::from(std::fs::read(rtp).unwrap());
        let r = probe(data.clone());
        assert_eq!(r.layout, Some(Layout::RawRtp));
        assert_eq!((r.video_frames, r.rtp_packets, r.rtp_lost), (1400, 3096, 0));
        assert_eq!(r.ssrc, Some(0x05F5_ED76));
        // The same packets with RFC 4571 lengths.
        let mut framed = Vec::new();
        for p in split_raw_rtp(&data) {
            crate::ingest::rfc4571::frame(&p, &mut framed).unwrap();
        }
        let r = probe(Bytes::from(framed));
        assert_eq!(r.layout, Some(Layout::Rfc4571));
        assert_eq!((r.video_frames, r.rtp_packets), (1400, 3096));
    }
}
