//! Streaming, sans-IO MPEG-2 Program Stream demuxer (ISO/IEC 13818-1):
//! pack header and system header §2.5.3, program stream map §2.5.4, PES
//! packet §2.4.3.6 (with the MPEG-1 forms of pack and PES headers tolerated,
//! ISO/IEC 11172-1 §2.4.3), as carried by GB/T 28181-2016 Annex C.
//!
//! Bytes go in through [`PsDemuxer::push`] in pieces of any size (RTP
//! payloads, file reads); [`PsEvent`]s come out. PES payloads are never
//! gathered: every NAL unit or audio frame is a [`Chunks`] of slices of the
//! pushed buffers. Only headers that straddle two pushes, and parameter sets
//! kept for [`StreamInfo`], are copied, and those copies are counted in
//! [`PsStats::bytes_copied`]. Internal buffers are reused and `Chunks` part
//! lists are recycled from dropped frames, so steady-state pushing does not
//! allocate (only an access unit of more than four NAL units spills its
//! unit list to the heap).
//!
//! Video access units are delimited by PTS (a PES whose PTS differs from the
//! unit being assembled starts a new one; PES without PTS continue it), by
//! [`PsDemuxer::end_of_frame`] (the RTP marker bit), or by
//! [`PsDemuxer::flush`]. After [`PsDemuxer::discontinuity`] (packet loss)
//! the partial unit is dropped and no video is emitted until a keyframe, so
//! a decoder never sees a frame with a hole in it.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use smallvec::SmallVec;

use super::frame::{
    AudioEvidence, AudioParams, Chunks, Codec, Frame, MediaKind, StreamInfo, VideoParams,
};
use super::h264::{self, AnnexBSplitter, SplitNal};
use super::h265;

/// What the demuxer produces.
#[derive(Debug, Clone)]
pub enum PsEvent {
    /// A complete video access unit or audio frame.
    Frame(Frame),
    /// The stream's description changed (codec, size, parameter sets).
    Info(StreamInfo),
    /// Input that had to be skipped; already counted in [`PsStats`].
    Error(PsError),
}

/// Demux errors. None is fatal: the demuxer skips and resynchronises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PsError {
    #[error("expected a start code, resynchronising on the next pack header")]
    LostSync,
    #[error("malformed pack header")]
    BadPackHeader,
    #[error("malformed system header")]
    BadSystemHeader,
    #[error("malformed program stream map")]
    MalformedPsm,
    #[error("malformed PES header")]
    BadPesHeader,
    #[error("video codec could not be identified; access unit dropped")]
    UnknownCodec,
    #[error("access unit or audio frame exceeds the size limit; dropped")]
    OversizedFrame,
    #[error("parameter set does not parse")]
    BadParameterSet,
    #[error("stream ended inside a packet")]
    Truncated,
}

impl PsError {
    /// Every kind, in [`PsError::index`] order.
    pub const KINDS: [&'static str; 9] = [
        "lost_sync",
        "bad_pack_header",
        "bad_system_header",
        "malformed_psm",
        "bad_pes_header",
        "unknown_codec",
        "oversized_frame",
        "bad_parameter_set",
        "truncated",
    ];

    fn index(self) -> usize {
        match self {
            PsError::LostSync => 0,
            PsError::BadPackHeader => 1,
            PsError::BadSystemHeader => 2,
            PsError::MalformedPsm => 3,
            PsError::BadPesHeader => 4,
            PsError::UnknownCodec => 5,
            PsError::OversizedFrame => 6,
            PsError::BadParameterSet => 7,
            PsError::Truncated => 8,
        }
    }

    /// Short static label for metrics (`camgate_ps_demux_errors{kind=…}`).
    pub fn kind(self) -> &'static str {
        Self::KINDS[self.index()]
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default)]
pub struct PsStats {
    pub bytes_in: u64,
    /// Elementary-stream bytes of the selected tracks, as delivered.
    pub payload_bytes: u64,
    /// Bytes memcpy'd for any reason (straddling headers, parameter sets).
    pub bytes_copied: u64,
    /// Bytes thrown away while looking for a pack header.
    pub bytes_skipped: u64,
    pub pack_headers: u64,
    pub system_headers: u64,
    pub psms: u64,
    /// PSMs whose `elementary_stream_map_length` disagreed with the
    /// packet's own length and were read by the outer length instead.
    pub psm_repaired: u64,
    pub pes_packets: u64,
    /// PES of private_stream_1 (0xBD) and private_stream_2 (0xBF).
    pub private_pes_skipped: u64,
    /// Padding, unknown streams, and tracks other than the selected ones.
    pub other_pes_skipped: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Frames dropped because of loss (partial, or waiting for a keyframe).
    pub frames_dropped: u64,
    pub resyncs: u64,
    errors: [u64; PsError::KINDS.len()],
}

impl PsStats {
    /// Count of one error kind.
    pub fn error_count(&self, kind: PsError) -> u64 {
        self.errors[kind.index()]
    }

    /// `(kind, count)` for every kind, zeros included.
    pub fn errors(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        PsError::KINDS
            .iter()
            .copied()
            .zip(self.errors.iter().copied())
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Codec for a PSM `stream_type` (13818-1 Table 2-34 plus the GB/T 28181
/// Annex C private assignments).
pub fn codec_for_stream_type(stream_type: u8) -> Option<Codec> {
    Some(match stream_type {
        0x1b => Codec::H264,
        0x24 => Codec::H265,
        0x10 => Codec::Mpeg4,
        0x80 => Codec::Svac,
        0x0f => Codec::Aac,
        0x03 | 0x04 => Codec::Mpa,
        0x90 => Codec::Pcma,
        0x91 => Codec::Pcmu,
        0x92 => Codec::G722,
        0x93 => Codec::G723,
        0x99 => Codec::G729,
        _ => return None,
    })
}

/// Converts 33-bit PTS/DTS values to a monotonic 64-bit timeline: each value
/// is placed nearest the previous one, so a wrap at 2^33 (every 26.5 h) or
/// a small step back (B-frames, DTS vs PTS) both come out right.
#[derive(Debug, Clone, Copy, Default)]
struct Unwrapper {
    last: Option<i64>,
}

const TS_MOD: i64 = 1 << 33;

impl Unwrapper {
    fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = (raw as i64) & (TS_MOD - 1);
        let v = match self.last {
            None => raw,
            Some(last) => {
                let delta = (raw - last.rem_euclid(TS_MOD)).rem_euclid(TS_MOD);
                let delta = if delta >= TS_MOD / 2 {
                    delta - TS_MOD
                } else {
                    delta
                };
                last.saturating_add(delta)
            }
        };
        self.last = Some(v);
        v
    }
}

const MAX_AU_BYTES: usize = 16 << 20;
const MAX_AU_UNITS: usize = 4096;
const MAX_AUDIO_BYTES: usize = 1 << 20;

/// PES timestamps carried to the first NAL unit starting after them.
type Stamp = (i64, Option<i64>);

/// The video access unit being assembled.
#[derive(Debug, Default)]
struct VideoTrack {
    stream_id: Option<u8>,
    /// Declared by the PSM or recognised from the elementary stream.
    codec: Option<Codec>,
    splitter: AnnexBSplitter<Stamp>,
    /// Completed units waiting to be assigned (reused, never shrinks).
    nal_buf: Vec<SplitNal<Stamp>>,
    /// Units with a lower index have been placed in an access unit.
    classified: u64,
    units: SmallVec<[Chunks; 4]>,
    /// Raw elementary stream for codecs not made of NAL units.
    raw: Chunks,
    open: bool,
    has_vcl: bool,
    pts: Option<i64>,
    dts: Option<i64>,
    bytes: usize,
    overflow: bool,
    unwrap: Unwrapper,
    last_pts: i64,
    last_dts: Option<i64>,
    /// Frame duration, learnt from timestamped units, for units without.
    duration: i64,
    await_keyframe: bool,
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

#[derive(Debug, Default)]
struct AudioTrack {
    stream_id: Option<u8>,
    /// Declared by the PSM.
    codec: Option<Codec>,
    /// Decided from the payload of a stream no PSM declared (kept for the
    /// stream: a frame that happens to look different does not flip it).
    sniffed: Option<(Codec, AudioEvidence)>,
    pending: Chunks,
    pts: Option<i64>,
    unwrap: Unwrapper,
    last_pts: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Video,
    Audio,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for 00 00 01 BA; everything before it is discarded.
    Sync,
    /// Expecting a start code at the head of the queue.
    Header,
    /// Inside a PES payload of known length.
    Payload { remaining: usize },
    /// Inside a PES of length 0, which runs to the next start code.
    Unbounded,
    /// Discarding the body of a packet.
    Skip { remaining: usize },
}

enum Src {
    Front,
    Scratch,
}

enum Scan {
    Found(usize),
    /// No match starts before this offset; decide the rest on more data.
    Partial(usize),
    NotFound,
}

enum Step {
    Progress,
    NeedMore,
}

/// Streaming PS demuxer; see the module documentation.
#[derive(Debug)]
pub struct PsDemuxer {
    queue: VecDeque<Bytes>,
    queued: usize,
    scratch: Vec<u8>,
    state: State,
    target: Target,
    /// stream_id → PSM stream_type (0: not declared).
    psm: [u8; 256],
    video: VideoTrack,
    audio: AudioTrack,
    info: StreamInfo,
    stats: PsStats,
    /// After lost data, hold video back until a keyframe (else drop only
    /// the damaged frame).
    resume_at_keyframe: bool,
    /// What undeclared 0xC0–0xDF audio without MPEG/ADTS sync is taken as.
    default_g711: Codec,
}

impl Default for PsDemuxer {
    fn default() -> Self {
        Self::new()
    }
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    match (b.get(at), b.get(at + 1)) {
        (Some(&h), Some(&l)) => Some(usize::from(u16::from_be_bytes([h, l]))),
        _ => None,
    }
}

/// A 33-bit timestamp in the 5-byte PES layout (13818-1 §2.4.3.7).
fn read_ts(b: &[u8]) -> Option<u64> {
    let b = b.get(..5)?;
    Some(
        (u64::from((b[0] >> 1) & 7) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1),
    )
}

/// Offset of the first `00 00 01 X` with `pred(X)` lying wholly in `buf`.
/// Looks for the `01` byte with `memchr` (rare in coded data), then checks
/// its neighbours.
fn find_start_code(buf: &[u8], pred: impl Fn(u8) -> bool) -> Option<usize> {
    let mut from = 2;
    while let Some(off) = buf.get(from..).and_then(|rest| memchr::memchr(1, rest)) {
        let one = from + off;
        if let (Some(0), Some(0), Some(&x)) = (buf.get(one - 2), buf.get(one - 1), buf.get(one + 1))
            && pred(x)
        {
            return Some(one - 2);
        }
        from = one + 1;
    }
    None
}

/// Parsed PES header: how many bytes it spans and its timestamps.
struct PesHeader {
    header_len: usize,
    pts: Option<u64>,
    dts: Option<u64>,
}

/// MPEG-2 PES header (§2.4.3.6); `b` starts at the start code.
fn parse_pes_header_mpeg2(b: &[u8], pes_len: usize) -> Result<PesHeader, PsError> {
    let flags = *b.get(7).ok_or(PsError::BadPesHeader)?;
    let data_len = usize::from(*b.get(8).ok_or(PsError::BadPesHeader)?);
    if pes_len != 0 && 3 + data_len > pes_len {
        return Err(PsError::BadPesHeader);
    }
    let data = b.get(9..9 + data_len).ok_or(PsError::BadPesHeader)?;
    let (pts, dts) = match flags >> 6 {
        0b10 => (Some(read_ts(data).ok_or(PsError::BadPesHeader)?), None),
        0b11 => (
            Some(read_ts(data).ok_or(PsError::BadPesHeader)?),
            Some(read_ts(data.get(5..).unwrap_or(&[])).ok_or(PsError::BadPesHeader)?),
        ),
        // '01' is forbidden; treat as no timestamps rather than drop data.
        _ => (None, None),
    };
    Ok(PesHeader {
        header_len: 9 + data_len,
        pts,
        dts,
    })
}

/// MPEG-1 packet header (11172-1 §2.4.3.3); `b` holds up to 34 bytes of it.
fn parse_pes_header_mpeg1(b: &[u8], pes_len: usize) -> Result<PesHeader, PsError> {
    let mut at = 6;
    let mut stuffing = 0;
    while b.get(at) == Some(&0xff) {
        at += 1;
        stuffing += 1;
        if stuffing > 16 {
            return Err(PsError::BadPesHeader);
        }
    }
    if b.get(at).is_some_and(|&x| x >> 6 == 0b01) {
        at += 2; // STD buffer scale and size
    }
    let first = *b.get(at).ok_or(PsError::BadPesHeader)?;
    let (pts, dts, n) = match first >> 4 {
        0b0010 => (read_ts(b.get(at..).unwrap_or(&[])), None, 5),
        0b0011 => (
            read_ts(b.get(at..).unwrap_or(&[])),
            read_ts(b.get(at + 5..).unwrap_or(&[])),
            10,
        ),
        _ if first == 0x0f => (None, None, 1),
        _ => return Err(PsError::BadPesHeader),
    };
    if n > 1 && (pts.is_none() || (n == 10 && dts.is_none())) {
        return Err(PsError::BadPesHeader);
    }
    let header_len = at + n;
    if header_len > 6 + pes_len {
        return Err(PsError::BadPesHeader);
    }
    Ok(PesHeader {
        header_len,
        pts,
        dts,
    })
}

/// How a program stream map was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PsmRead {
    /// `elementary_stream_map_length` matched the entries.
    AsDeclared,
    /// It did not (field devices get it wrong both ways); the entries were
    /// read up to the CRC, as the packet's own length allows.
    Repaired,
}

/// Walk the elementary stream entries in `b[at..end]`, writing each to
/// `map`. `Ok` only if the entries tile the range exactly.
fn read_psm_entries(b: &[u8], mut at: usize, end: usize, map: &mut [u8; 256]) -> Result<(), ()> {
    while at + 4 <= end {
        let (Some(&stream_type), Some(&stream_id)) = (b.get(at), b.get(at + 1)) else {
            return Err(());
        };
        let es_info_len = be16(b, at + 2).ok_or(())?;
        // Descriptors (ISO 639 language, Hikvision's private ones) are
        // stepped over by their lengths, never interpreted.
        let next = at + 4 + es_info_len;
        if next > end {
            return Err(());
        }
        map[usize::from(stream_id)] = stream_type;
        at = next;
    }
    if at == end { Ok(()) } else { Err(()) }
}

/// Program stream map (§2.5.4.1); `b` is the whole packet from the start
/// code. The packet length is taken as the truth: when the inner
/// `elementary_stream_map_length` disagrees with it, the entries are read
/// up to the 4-byte CRC (the CRC itself is not checked: devices that get
/// the lengths wrong get it wrong too). Entries are written to `map` as
/// they are read, so a map whose tail is malformed still yields its good
/// entries.
fn parse_psm(b: &[u8], map: &mut [u8; 256]) -> Result<PsmRead, PsError> {
    let crc_at = b.len().saturating_sub(4);
    let info_len = be16(b, 8).ok_or(PsError::MalformedPsm)?;
    let at = 10 + info_len + 2;
    let map_len = be16(b, at - 2).ok_or(PsError::MalformedPsm)?;
    if at > crc_at {
        return Err(PsError::MalformedPsm);
    }
    if at + map_len <= crc_at {
        let mut declared = *map;
        if read_psm_entries(b, at, at + map_len, &mut declared).is_ok() {
            *map = declared;
            // Bytes between the map and the CRC: the length is short.
            return Ok(if at + map_len == crc_at {
                PsmRead::AsDeclared
            } else {
                let mut outer = *map;
                match read_psm_entries(b, at, crc_at, &mut outer) {
                    Ok(()) => {
                        *map = outer;
                        PsmRead::Repaired
                    }
                    // Trailing bytes that are not entries: keep what
                    // the declared length gave.
                    Err(()) => PsmRead::AsDeclared,
                }
            });
        }
    }
    match read_psm_entries(b, at, crc_at, map) {
        Ok(()) => Ok(PsmRead::Repaired),
        Err(()) => Err(PsError::MalformedPsm),
    }
}

impl PsDemuxer {
    pub fn new() -> Self {
        Self {
            queue: VecDeque::with_capacity(8),
            queued: 0,
            scratch: Vec::with_capacity(512),
            state: State::Sync,
            target: Target::Skip,
            psm: [0; 256],
            video: VideoTrack::default(),
            audio: AudioTrack::default(),
            info: StreamInfo::default(),
            stats: PsStats::default(),
            resume_at_keyframe: true,
            default_g711: Codec::Pcma,
        }
    }

    /// G.711 law assumed for audio no PSM declares and whose payload has
    /// no MPEG audio or ADTS header (`media.default_g711`). Only
    /// [`Codec::Pcma`] and [`Codec::Pcmu`] are taken; anything else is
    /// ignored.
    pub fn set_default_g711(&mut self, codec: Codec) {
        if matches!(codec, Codec::Pcma | Codec::Pcmu) {
            self.default_g711 = codec;
        }
    }

    /// Whether video waits for a keyframe after lost data (the default) or
    /// resumes with the next whole frame.
    pub fn set_resume_at_keyframe(&mut self, on: bool) {
        self.resume_at_keyframe = on;
    }

    pub fn stats(&self) -> &PsStats {
        &self.stats
    }

    /// What the stream carries, as learnt so far.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// Feed the next piece of the program stream.
    pub fn push(&mut self, data: Bytes, out: &mut Vec<PsEvent>) {
        self.stats.bytes_in += data.len() as u64;
        if !data.is_empty() {
            self.queued += data.len();
            self.queue.push_back(data);
        }
        self.run(out);
    }

    /// The source says a frame ended here (RTP marker bit). Completes the
    /// access unit if the stream is at a packet boundary; a PES of length 0
    /// is taken to end here too.
    pub fn end_of_frame(&mut self, out: &mut Vec<PsEvent>) {
        if self.state == State::Unbounded {
            self.drain_unbounded();
            self.end_pes(out);
            self.state = State::Header;
        }
        // Between packets (or never synchronised, as for RFC 6184 input):
        // nothing of the frame can still be in flight.
        if matches!(self.state, State::Header | State::Sync) && self.queued == 0 {
            self.finish_video(out);
        }
    }

    /// End of input: complete whatever is complete and drop the rest.
    pub fn flush(&mut self, out: &mut Vec<PsEvent>) {
        match self.state {
            State::Unbounded => {
                self.drain_unbounded();
                self.end_pes(out);
            }
            State::Payload { .. } => {
                self.error(PsError::Truncated, out);
                self.drop_video_au();
                self.audio.pending.clear();
            }
            _ => {}
        }
        if self.queued > 0 && self.state != State::Sync {
            self.error(PsError::Truncated, out);
        }
        self.finish_video(out);
        self.clear_queue();
        self.state = State::Header;
    }

    /// Data was lost before the next push: drop the partial frame, resync on
    /// the next pack header, and hold video back until a keyframe (unless
    /// [`PsDemuxer::set_resume_at_keyframe`] turned that off).
    pub fn discontinuity(&mut self) {
        self.clear_queue();
        self.drop_video_au();
        self.video.await_keyframe |= self.resume_at_keyframe;
        self.audio.pending.clear();
        self.audio.pts = None;
        if self.state != State::Sync {
            self.stats.resyncs += 1;
        }
        self.state = State::Sync;
    }

    fn clear_queue(&mut self) {
        self.queue.clear();
        self.queued = 0;
    }

    fn error(&mut self, e: PsError, out: &mut Vec<PsEvent>) {
        self.stats.errors[e.index()] += 1;
        tracing::debug!(kind = e.kind(), "ps demux: {e}");
        out.push(PsEvent::Error(e));
    }

    fn run(&mut self, out: &mut Vec<PsEvent>) {
        loop {
            let step = match self.state {
                State::Sync => self.sync(),
                State::Header => self.header(out),
                State::Payload { remaining } => self.payload(remaining, out),
                State::Skip { remaining } => self.skip(remaining),
                State::Unbounded => self.unbounded(out),
            };
            if let Step::NeedMore = step {
                break;
            }
        }
    }

    // ---- input queue -------------------------------------------------

    #[inline]
    fn byte_at(&self, offset: usize) -> Option<u8> {
        // Headers nearly always lie in the front buffer.
        match self.queue.front().and_then(|f| f.get(offset)) {
            Some(&b) => Some(b),
            None => self.byte_at_slow(offset),
        }
    }

    fn byte_at_slow(&self, mut offset: usize) -> Option<u8> {
        for b in &self.queue {
            if offset < b.len() {
                return b.get(offset).copied();
            }
            offset -= b.len();
        }
        None
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                self.queued -= n;
                return;
            }
            n -= front.len();
            self.queued -= front.len();
            self.queue.pop_front();
        }
    }

    /// Make the first `n` queued bytes readable as one slice, copying only
    /// when they straddle pushes.
    fn contiguous(&mut self, n: usize) -> Option<Src> {
        if self.queue.front().is_some_and(|f| f.len() >= n) {
            return Some(Src::Front);
        }
        if self.queued < n {
            return None;
        }
        self.scratch.clear();
        for b in &self.queue {
            let take = (n - self.scratch.len()).min(b.len());
            self.scratch.extend_from_slice(&b[..take]);
            if self.scratch.len() == n {
                break;
            }
        }
        self.stats.bytes_copied += n as u64;
        Some(Src::Scratch)
    }

    fn view(&self, src: Src, n: usize) -> &[u8] {
        let all: &[u8] = match src {
            Src::Front => self.queue.front().map_or(&[], |b| &b[..]),
            Src::Scratch => &self.scratch,
        };
        all.get(..n).unwrap_or(all)
    }

    /// Look for `00 00 01 X` (`pred(X)`) starting in the front buffer.
    fn scan_front(&self, pred: impl Fn(u8) -> bool) -> Scan {
        let Some(front) = self.queue.front() else {
            return Scan::Partial(0);
        };
        if let Some(p) = find_start_code(front, &pred) {
            return Scan::Found(p);
        }
        // The last three offsets may begin a code that continues in the
        // next buffer.
        for p in front.len().saturating_sub(3)..front.len() {
            let mut code = [0u8; 4];
            for (k, c) in code.iter_mut().enumerate() {
                match self.byte_at(p + k) {
                    Some(b) => *c = b,
                    None => return Scan::Partial(p),
                }
            }
            if code[..3] == [0, 0, 1] && pred(code[3]) {
                return Scan::Found(p);
            }
        }
        Scan::NotFound
    }

    // ---- states ------------------------------------------------------

    fn sync(&mut self) -> Step {
        match self.scan_front(|b| b == 0xba) {
            Scan::Found(p) => {
                self.stats.bytes_skipped += p as u64;
                self.consume(p);
                self.state = State::Header;
                Step::Progress
            }
            Scan::Partial(p) => {
                self.stats.bytes_skipped += p as u64;
                self.consume(p);
                Step::NeedMore
            }
            Scan::NotFound => {
                if let Some(front) = self.queue.pop_front() {
                    self.stats.bytes_skipped += front.len() as u64;
                    self.queued -= front.len();
                }
                Step::Progress
            }
        }
    }

    fn lose_sync(&mut self, e: PsError, skip: usize, out: &mut Vec<PsEvent>) -> Step {
        self.error(e, out);
        self.stats.bytes_skipped += skip as u64;
        self.consume(skip);
        self.stats.resyncs += 1;
        self.state = State::Sync;
        Step::Progress
    }

    fn header(&mut self, out: &mut Vec<PsEvent>) -> Step {
        let mut code = [0u8; 4];
        for (k, c) in code.iter_mut().enumerate() {
            match self.byte_at(k) {
                Some(b) => *c = b,
                None => return Step::NeedMore,
            }
        }
        if code[..3] != [0, 0, 1] {
            return self.lose_sync(PsError::LostSync, 0, out);
        }
        match code[3] {
            0xba => self.pack_header(out),
            // program_end_code
            0xb9 => {
                self.consume(4);
                Step::Progress
            }
            0xbb..=0xff => self.packet(code[3], out),
            // Video elementary-stream start codes: not PS structure.
            _ => self.lose_sync(PsError::LostSync, 0, out),
        }
    }

    fn pack_header(&mut self, out: &mut Vec<PsEvent>) -> Step {
        let Some(b4) = self.byte_at(4) else {
            return Step::NeedMore;
        };
        let len = if b4 >> 6 == 0b01 {
            // MPEG-2 (§2.5.3.3): 14 bytes then pack_stuffing_length bytes.
            let Some(b13) = self.byte_at(13) else {
                return Step::NeedMore;
            };
            let Some(src) = self.contiguous(14) else {
                return Step::NeedMore;
            };
            let h = self.view(src, 14);
            let markers_ok = h[4] & 0x04 != 0
                && h[6] & 0x04 != 0
                && h[8] & 0x04 != 0
                && h[9] & 0x01 != 0
                && h[12] & 0x03 == 0x03;
            if !markers_ok {
                return self.lose_sync(PsError::BadPackHeader, 4, out);
            }
            14 + usize::from(b13 & 0x07)
        } else if b4 >> 4 == 0b0010 {
            // MPEG-1 pack header (11172-1 §2.4.3.2) is a fixed 12 bytes.
            12
        } else {
            return self.lose_sync(PsError::BadPackHeader, 4, out);
        };
        if self.queued < len {
            return Step::NeedMore;
        }
        self.consume(len);
        self.stats.pack_headers += 1;
        Step::Progress
    }

    fn packet(&mut self, stream_id: u8, out: &mut Vec<PsEvent>) -> Step {
        let (Some(hi), Some(lo)) = (self.byte_at(4), self.byte_at(5)) else {
            return Step::NeedMore;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        match stream_id {
            0xbb => {
                // Nothing in the system header changes how we demux; its
                // stream list is often wrong (the capture lists absent audio).
                if len < 6 {
                    self.error(PsError::BadSystemHeader, out);
                }
                self.consume(6);
                self.stats.system_headers += 1;
                self.state = State::Skip { remaining: len };
                Step::Progress
            }
            0xbc => {
                let Some(src) = self.contiguous(6 + len) else {
                    return Step::NeedMore;
                };
                let mut map = self.psm;
                let parsed = parse_psm(self.view(src, 6 + len), &mut map);
                self.consume(6 + len);
                self.stats.psms += 1;
                match parsed {
                    Ok(PsmRead::AsDeclared) => {}
                    Ok(PsmRead::Repaired) => {
                        self.stats.psm_repaired += 1;
                        tracing::debug!(
                            "ps demux: PSM map length disagrees; read by packet length"
                        );
                    }
                    Err(e) => self.error(e, out),
                }
                self.apply_psm(map);
                Step::Progress
            }
            0xbd | 0xbf => {
                self.consume(6);
                self.stats.private_pes_skipped += 1;
                self.state = State::Skip { remaining: len };
                Step::Progress
            }
            0xc0..=0xef => self.pes(stream_id, len, out),
            // Padding (0xBE), ECM/EMM/DSM-CC and the rest: not ours.
            _ => {
                self.consume(6);
                self.stats.other_pes_skipped += 1;
                self.state = State::Skip { remaining: len };
                Step::Progress
            }
        }
    }

    fn pes(&mut self, stream_id: u8, len: usize, out: &mut Vec<PsEvent>) -> Step {
        let Some(b6) = self.byte_at(6) else {
            return Step::NeedMore;
        };
        let parsed = if b6 >> 6 == 0b10 {
            let Some(data_len) = self.byte_at(8) else {
                return Step::NeedMore;
            };
            let need = 9 + usize::from(data_len);
            if len != 0 && need > 6 + len {
                Err(PsError::BadPesHeader)
            } else {
                let Some(src) = self.contiguous(need) else {
                    return Step::NeedMore;
                };
                parse_pes_header_mpeg2(self.view(src, need), len)
            }
        } else {
            let need = (6 + len).min(34);
            let Some(src) = self.contiguous(need) else {
                return Step::NeedMore;
            };
            parse_pes_header_mpeg1(self.view(src, need), len)
        };
        let h = match parsed {
            Ok(h) => h,
            Err(e) => {
                self.error(e, out);
                self.consume(6);
                if len == 0 {
                    return self.lose_sync(PsError::LostSync, 0, out);
                }
                self.state = State::Skip { remaining: len };
                return Step::Progress;
            }
        };
        self.consume(h.header_len);
        self.stats.pes_packets += 1;
        self.target = self.target_for(stream_id);
        match self.target {
            Target::Video => self.start_video_pes(h.pts, h.dts, out),
            Target::Audio => self.start_audio_pes(h.pts, out),
            Target::Skip => self.stats.other_pes_skipped += 1,
        }
        self.state = if len == 0 {
            State::Unbounded
        } else {
            State::Payload {
                remaining: (6 + len) - h.header_len,
            }
        };
        Step::Progress
    }

    fn payload(&mut self, remaining: usize, out: &mut Vec<PsEvent>) -> Step {
        if remaining == 0 {
            self.end_pes(out);
            self.state = State::Header;
            return Step::Progress;
        }
        let Some(front) = self.queue.front_mut() else {
            return Step::NeedMore;
        };
        let piece = if front.len() <= remaining {
            let p = std::mem::take(front);
            self.queue.pop_front();
            p
        } else {
            front.split_to(remaining)
        };
        self.queued -= piece.len();
        self.state = State::Payload {
            remaining: remaining - piece.len(),
        };
        self.feed(piece, out);
        Step::Progress
    }

    fn skip(&mut self, remaining: usize) -> Step {
        if remaining == 0 {
            self.state = State::Header;
            return Step::Progress;
        }
        if self.queued == 0 {
            return Step::NeedMore;
        }
        let n = remaining.min(self.queued);
        self.consume(n);
        self.state = State::Skip {
            remaining: remaining - n,
        };
        Step::Progress
    }

    fn unbounded(&mut self, out: &mut Vec<PsEvent>) -> Step {
        // PS start codes are all ≥ 0xB9; H.264/H.265 NAL headers are < 0x80,
        // so the video inside cannot fake one.
        let scan = self.scan_front(|b| b >= 0xb9);
        let Some(front) = self.queue.front().cloned() else {
            return Step::NeedMore;
        };
        match scan {
            Scan::Found(p) => {
                self.take_and_feed(front, p, out);
                self.end_pes(out);
                self.state = State::Header;
                Step::Progress
            }
            Scan::Partial(p) => {
                self.take_and_feed(front, p, out);
                Step::NeedMore
            }
            Scan::NotFound => {
                let n = front.len();
                self.take_and_feed(front, n, out);
                Step::Progress
            }
        }
    }

    fn take_and_feed(&mut self, front: Bytes, n: usize, out: &mut Vec<PsEvent>) {
        if n == 0 {
            return;
        }
        let piece = front.slice(..n);
        self.consume(n);
        self.feed(piece, out);
    }

    /// Everything queued belongs to the PES of length 0 in progress.
    fn drain_unbounded(&mut self) {
        let mut sink = Vec::new();
        while let Some(b) = self.queue.pop_front() {
            self.queued -= b.len();
            self.feed(b, &mut sink);
        }
    }

    // ---- elementary streams --------------------------------------------

    fn target_for(&mut self, stream_id: u8) -> Target {
        let declared = codec_for_stream_type(self.psm[usize::from(stream_id)]);
        let kind = match declared {
            Some(c) => c.kind(),
            None if (0xe0..=0xef).contains(&stream_id) => MediaKind::Video,
            // MPEG audio ids without a PSM: the payload decides the codec.
            None if (0xc0..=0xdf).contains(&stream_id) => MediaKind::Audio,
            None => return Target::Skip,
        };
        match kind {
            MediaKind::Video => match self.video.stream_id {
                Some(id) if id != stream_id => Target::Skip,
                _ => {
                    self.video.stream_id = Some(stream_id);
                    if self.video.codec.is_none() {
                        self.video.codec = declared;
                    }
                    Target::Video
                }
            },
            MediaKind::Audio => match self.audio.stream_id {
                Some(id) if id != stream_id => Target::Skip,
                _ => {
                    self.audio.stream_id = Some(stream_id);
                    if declared.is_some() && declared != self.audio.codec {
                        self.audio.sniffed = None;
                    }
                    self.audio.codec = declared;
                    Target::Audio
                }
            },
        }
    }

    fn apply_psm(&mut self, map: [u8; 256]) {
        self.psm = map;
        if let Some(id) = self.video.stream_id
            && let Some(c) = codec_for_stream_type(map[usize::from(id)])
            && self.video.codec != Some(c)
        {
            // The camera switched codec (a new PSM after reconfiguration):
            // what was cached belongs to the old one.
            if self.video.codec.is_some() {
                self.drop_video_au();
                self.video.vps = None;
                self.video.sps = None;
                self.video.pps = None;
            }
            self.video.codec = Some(c);
        }
    }

    fn feed(&mut self, piece: Bytes, out: &mut Vec<PsEvent>) {
        match self.target {
            Target::Video => {
                self.stats.payload_bytes += piece.len() as u64;
                if matches!(self.video.codec, Some(Codec::Mpeg4 | Codec::Svac)) {
                    let v = &mut self.video;
                    if !v.open || v.overflow {
                        return;
                    }
                    v.bytes += piece.len();
                    if v.bytes > MAX_AU_BYTES {
                        v.overflow = true;
                        self.error(PsError::OversizedFrame, out);
                        return;
                    }
                    v.raw.push(piece);
                    return;
                }
                let VideoTrack {
                    splitter, nal_buf, ..
                } = &mut self.video;
                splitter.push(&piece, |n| nal_buf.push(n));
                self.drain_nals(out);
                // Decide where the unit in progress belongs as soon as its
                // header is here, so the previous access unit goes out now
                // rather than when this unit ends.
                let mut head = [0u8; 3];
                if let Some((index, n, tag)) = self.video.splitter.in_progress(&mut head)
                    && index >= self.video.classified
                    && n == head.len()
                {
                    self.video.classified = index + 1;
                    self.classify(&head, tag, out);
                }
                if self.video.bytes + self.video.splitter.pending_len() > MAX_AU_BYTES {
                    self.video.splitter.reset();
                    self.drop_video_au();
                    self.error(PsError::OversizedFrame, out);
                }
            }
            Target::Audio => {
                self.stats.payload_bytes += piece.len() as u64;
                if self.audio.pending.len() + piece.len() > MAX_AUDIO_BYTES {
                    self.audio.pending.clear();
                    self.error(PsError::OversizedFrame, out);
                    return;
                }
                self.audio.pending.push(piece);
            }
            Target::Skip => {}
        }
    }

    fn end_pes(&mut self, out: &mut Vec<PsEvent>) {
        if self.target == Target::Audio {
            self.finish_audio(out);
        }
        self.target = Target::Skip;
    }

    fn start_video_pes(&mut self, pts: Option<u64>, dts: Option<u64>, out: &mut Vec<PsEvent>) {
        let stamp = pts.map(|p| {
            let p = self.video.unwrap.unwrap(p);
            (p, dts.map(|d| self.video.unwrap.unwrap(d)))
        });
        if matches!(self.video.codec, Some(Codec::Mpeg4 | Codec::Svac)) {
            // No unit structure parsed for these: a PTS change is the
            // access unit boundary.
            if let Some((p, d)) = stamp {
                if self.video.open && self.video.pts != Some(p) {
                    self.finish_video(out);
                }
                if !self.video.open {
                    self.video.open = true;
                    self.video.pts = Some(p);
                    self.video.dts = d;
                }
            }
            return;
        }
        // 13818-1 §2.4.3.7: a PES timestamp belongs to the first access unit
        // that starts in that PES, which may not be where the PES starts.
        if let Some(s) = stamp {
            self.video.splitter.set_tag(s);
        }
    }

    fn drain_nals(&mut self, out: &mut Vec<PsEvent>) {
        let mut buf = std::mem::take(&mut self.video.nal_buf);
        for n in buf.drain(..) {
            self.video_nal(n, out);
        }
        self.video.nal_buf = buf;
    }

    /// A complete NAL unit from the splitter.
    fn video_nal(&mut self, n: SplitNal<Stamp>, out: &mut Vec<PsEvent>) {
        if n.index >= self.video.classified {
            self.video.classified = n.index + 1;
            let mut head = [0u8; 3];
            let len = n.data.copy_prefix(&mut head);
            self.classify(&head[..len], n.tag, out);
        }
        self.add_video_unit(n.data, out);
    }

    fn add_video_unit(&mut self, nal: Chunks, out: &mut Vec<PsEvent>) {
        let v = &mut self.video;
        if !v.open || v.overflow {
            return;
        }
        v.bytes += nal.len();
        if v.bytes > MAX_AU_BYTES || v.units.len() >= MAX_AU_UNITS {
            v.overflow = true;
            self.error(PsError::OversizedFrame, out);
            return;
        }
        v.units.push(nal);
    }

    /// Place a unit that is starting: it may open a new access unit.
    fn classify(&mut self, head: &[u8], tag: Option<Stamp>, out: &mut Vec<PsEvent>) {
        if self.video.codec.is_none() {
            self.video.codec = sniff_codec(head);
        }
        let Some(&h) = head.first() else { return };
        let (boundary, vcl) = match self.video.codec {
            Some(Codec::H264) => (h264::first_in_access_unit(head), h264::is_vcl(h)),
            Some(Codec::H265) => (h265::first_in_access_unit(head), h265::is_vcl(h)),
            _ => (false, false),
        };
        if boundary && self.video.has_vcl {
            self.finish_au(out);
        }
        let v = &mut self.video;
        if !v.open {
            v.open = true;
            v.pts = None;
            v.dts = None;
        }
        if v.pts.is_none()
            && let Some((p, d)) = tag
        {
            v.pts = Some(p);
            v.dts = d;
        }
        v.has_vcl |= vcl;
    }

    fn drop_video_au(&mut self) {
        let v = &mut self.video;
        if v.open && (v.bytes > 0 || !v.units.is_empty()) {
            self.stats.frames_dropped += 1;
        }
        v.splitter.reset();
        v.nal_buf.clear();
        v.units.clear();
        v.raw.clear();
        v.has_vcl = false;
        v.open = false;
        v.pts = None;
        v.dts = None;
        v.bytes = 0;
        v.overflow = false;
    }

    /// The frame ended (marker, flush): the unit in progress is complete.
    fn finish_video(&mut self, out: &mut Vec<PsEvent>) {
        {
            let VideoTrack {
                splitter, nal_buf, ..
            } = &mut self.video;
            splitter.finish(|n| nal_buf.push(n));
        }
        self.drain_nals(out);
        self.finish_au(out);
    }

    /// Emit the access unit assembled so far.
    fn finish_au(&mut self, out: &mut Vec<PsEvent>) {
        if !self.video.open {
            return;
        }
        if self.video.overflow {
            self.drop_video_au();
            return;
        }
        let Some(codec) = self.video.codec else {
            let had_data = self.video.bytes > 0;
            self.drop_video_au();
            if had_data {
                self.error(PsError::UnknownCodec, out);
            }
            return;
        };
        let mut units = std::mem::take(&mut self.video.units);
        let raw = std::mem::take(&mut self.video.raw);
        let keyframe = match codec {
            Codec::H264 | Codec::H265 => self.learn_parameter_sets(codec, &mut units, out),
            _ => {
                // MPEG-4 Visual / SVAC: a unit opening with a sequence or
                // group header (VOS 0xB0, GOV 0xB3, VO/VOL) is a random
                // access point.
                let mut head = [0u8; 4];
                let n = raw.copy_prefix(&mut head);
                let key = n == 4
                    && head[..3] == [0, 0, 1]
                    && matches!(head[3], 0x00..=0x2f | 0xb0 | 0xb3);
                if !raw.is_empty() {
                    units.push(raw);
                }
                key
            }
        };
        let v = &mut self.video;
        let duration = if v.duration > 0 { v.duration } else { 3600 };
        let (pts, dts) = match (v.pts, v.dts) {
            (Some(p), d) => (p, d.unwrap_or(p)),
            // No timestamp reached this unit (several units in one PES):
            // one frame after the last.
            _ => match v.last_dts {
                Some(d) => (v.last_pts.max(d) + duration, d + duration),
                None => (0, 0),
            },
        };
        if v.pts.is_some()
            && let Some(last) = v.last_dts
            && dts > last
            && (v.duration == 0 || dts - last < v.duration)
        {
            v.duration = dts - last;
        }
        v.last_pts = pts;
        v.last_dts = Some(dts);
        v.open = false;
        v.has_vcl = false;
        v.pts = None;
        v.dts = None;
        v.bytes = 0;
        if units.is_empty() {
            return;
        }
        if self.video.await_keyframe && !keyframe {
            self.stats.frames_dropped += 1;
            return;
        }
        self.video.await_keyframe = false;
        self.stats.video_frames += 1;
        out.push(PsEvent::Frame(Frame {
            codec,
            pts,
            dts,
            keyframe,
            units,
        }));
    }

    /// Cache parameter sets seen in this access unit, publish changes, and
    /// prepend cached ones to a keyframe lacking them. Returns whether the
    /// unit is a keyframe.
    fn learn_parameter_sets(
        &mut self,
        codec: Codec,
        units: &mut SmallVec<[Chunks; 4]>,
        out: &mut Vec<PsEvent>,
    ) -> bool {
        let hevc = codec == Codec::H265;
        let (mut keyframe, mut has_vps, mut has_sps, mut has_pps) = (false, false, false, false);
        let mut changed = false;
        let mut size: Option<(u32, u32)> = None;
        for unit in units.iter() {
            let Some(h) = unit.get(0) else { continue };
            let slot = if hevc {
                match h265::nal_type(h) {
                    t if (16..=23).contains(&t) => {
                        keyframe = true;
                        continue;
                    }
                    h265::NAL_VPS => {
                        has_vps = true;
                        &mut self.video.vps
                    }
                    h265::NAL_SPS => {
                        has_sps = true;
                        &mut self.video.sps
                    }
                    h265::NAL_PPS => {
                        has_pps = true;
                        &mut self.video.pps
                    }
                    _ => continue,
                }
            } else {
                match h264::nal_type(h) {
                    h264::NAL_IDR => {
                        keyframe = true;
                        continue;
                    }
                    h264::NAL_SPS => {
                        has_sps = true;
                        &mut self.video.sps
                    }
                    h264::NAL_PPS => {
                        has_pps = true;
                        &mut self.video.pps
                    }
                    _ => continue,
                }
            };
            if slot.as_ref().is_some_and(|cached| chunks_eq(unit, cached)) {
                continue;
            }
            if unit.parts().len() > 1 {
                self.stats.bytes_copied += unit.len() as u64;
            }
            let bytes = unit.to_bytes();
            let is_sps = if hevc {
                h265::nal_type(h) == h265::NAL_SPS
            } else {
                h264::nal_type(h) == h264::NAL_SPS
            };
            if is_sps {
                let parsed = if hevc {
                    h265::parse_sps(&bytes).map(|s| (s.width, s.height)).ok()
                } else {
                    h264::parse_sps(&bytes).map(|s| (s.width, s.height)).ok()
                };
                match parsed {
                    Some(wh) => size = Some(wh),
                    None => {
                        self.stats.errors[PsError::BadParameterSet.index()] += 1;
                        out.push(PsEvent::Error(PsError::BadParameterSet));
                    }
                }
            }
            *slot = Some(bytes);
            changed = true;
        }
        if changed || self.info.video.as_ref().is_none_or(|(c, _)| *c != codec) {
            let (w, h) = match (size, &self.info.video) {
                (Some(wh), _) => wh,
                (None, Some((c, p))) if *c == codec => (p.width, p.height),
                _ => (0, 0),
            };
            let params = VideoParams {
                width: w,
                height: h,
                vps: if hevc { self.video.vps.clone() } else { None },
                sps: self.video.sps.clone(),
                pps: self.video.pps.clone(),
            };
            let new = Some((codec, params));
            if self.info.video != new {
                self.info.video = new;
                out.push(PsEvent::Info(self.info.clone()));
            }
        }
        if keyframe {
            let mut prefix: SmallVec<[Chunks; 3]> = SmallVec::new();
            if hevc
                && !has_vps
                && let Some(b) = &self.video.vps
            {
                prefix.push(Chunks::from(b.clone()));
            }
            if !has_sps && let Some(b) = &self.video.sps {
                prefix.push(Chunks::from(b.clone()));
            }
            if !has_pps && let Some(b) = &self.video.pps {
                prefix.push(Chunks::from(b.clone()));
            }
            if !prefix.is_empty() {
                units.insert_many(0, prefix);
            }
        }
        keyframe
    }

    /// Add one NAL unit of a stream that arrives without PS framing (RTP
    /// H.264 per RFC 6184), sharing this demuxer's access-unit assembly,
    /// parameter-set caching and keyframe gating. A new `pts` completes the
    /// unit in progress, as does [`PsDemuxer::end_of_frame`].
    pub fn push_nal_unit(&mut self, codec: Codec, pts: i64, nal: Chunks, out: &mut Vec<PsEvent>) {
        if self.video.codec != Some(codec) {
            self.drop_video_au();
            self.video.codec = Some(codec);
        }
        if self.video.open && self.video.pts != Some(pts) {
            self.finish_au(out);
        }
        self.stats.payload_bytes += nal.len() as u64;
        let mut head = [0u8; 3];
        let n = nal.copy_prefix(&mut head);
        self.classify(&head[..n], Some((pts, None)), out);
        self.add_video_unit(nal, out);
    }

    fn start_audio_pes(&mut self, pts: Option<u64>, out: &mut Vec<PsEvent>) {
        if !self.audio.pending.is_empty() {
            self.finish_audio(out);
        }
        self.audio.pts = pts.map(|p| self.audio.unwrap.unwrap(p));
    }

    fn finish_audio(&mut self, out: &mut Vec<PsEvent>) {
        let payload = std::mem::take(&mut self.audio.pending);
        if payload.is_empty() {
            return;
        }
        let (codec, evidence) = match (self.audio.codec, self.audio.sniffed) {
            (Some(c), _) => (c, AudioEvidence::Psm),
            (None, Some(decided)) => decided,
            (None, None) => {
                let mut head = [0u8; SNIFF_AUDIO_BYTES];
                let n = payload.copy_prefix(&mut head);
                self.stats.bytes_copied += n as u64;
                let decided = sniff_audio(&head[..n], self.default_g711);
                tracing::debug!(codec = ?decided.0, "ps demux: undeclared audio: {}", decided.1);
                self.audio.sniffed = Some(decided);
                decided
            }
        };
        let mut params = AudioParams {
            sample_rate: 8000,
            channels: 1,
            config: None,
        };
        let header = match codec {
            Codec::Aac => Some(adts_params(&payload)),
            Codec::Mpa => Some(mpa_params(&payload)),
            _ => None,
        };
        // A PES need not start on a frame boundary (ffmpeg cuts MPEG
        // audio anywhere): keep the parameters learnt from an earlier one.
        let known = self
            .info
            .audio
            .as_ref()
            .filter(|(c, _)| *c == codec)
            .map(|(_, p)| p.clone());
        match header {
            Some(Some(p)) => params = p,
            Some(None) if known.is_some() => params = known.unwrap_or(params),
            Some(None) => {
                self.stats.frames_dropped += 1;
                return;
            }
            None => {}
        }
        let new = Some((codec, params));
        if self.info.audio != new || self.info.audio_decided_by != Some(evidence) {
            self.info.audio = new;
            self.info.audio_decided_by = Some(evidence);
            out.push(PsEvent::Info(self.info.clone()));
        }
        let rate = self
            .info
            .audio
            .as_ref()
            .map_or(8000, |(_, p)| i128::from(p.sample_rate));
        let pts90 = self.audio.pts.unwrap_or(self.audio.last_pts);
        self.audio.last_pts = pts90;
        let pts = i64::try_from((i128::from(pts90) * rate).div_euclid(90_000)).unwrap_or(0);
        self.stats.audio_frames += 1;
        let mut units = SmallVec::new();
        units.push(payload);
        out.push(PsEvent::Frame(Frame {
            codec,
            pts,
            dts: pts,
            keyframe: true,
            units,
        }));
    }
}

/// Tell H.264 from H.265 (and MPEG-4 Visual) by a NAL unit that only one of
/// them can start with; `None` while undecided.
fn sniff_codec(h: &[u8]) -> Option<Codec> {
    let (&b0, b1) = (h.first()?, h.get(1).copied());
    if matches!(b0, 0xb0 | 0xb5 | 0xb6) {
        return Some(Codec::Mpeg4);
    }
    if b0 & 0x80 != 0 {
        return None;
    }
    // H.265 VPS/SPS/PPS/AUD/IDR/CRA with layer 0 and temporal id 0: as H.264
    // these bytes would be forbidden or unused type/ref_idc combinations.
    if b1 == Some(0x01) && matches!(h265::nal_type(b0), 32..=35 | 19..=21) && b0 & 1 == 0 {
        return Some(Codec::H265);
    }
    match h264::nal_type(b0) {
        h264::NAL_SPS | h264::NAL_AUD => Some(Codec::H264),
        h264::NAL_IDR | h264::NAL_PPS if b0 & 0x60 != 0 => Some(Codec::H264),
        _ => None,
    }
}

fn chunks_eq(c: &Chunks, b: &Bytes) -> bool {
    if c.len() != b.len() {
        return false;
    }
    let mut at = 0;
    for part in c.parts() {
        if b.get(at..at + part.len()) != Some(&part[..]) {
            return false;
        }
        at += part.len();
    }
    true
}

/// Payload bytes looked at to tell MPEG audio and ADTS from G.711: enough
/// for one frame header and the sync of the frame after it.
const SNIFF_AUDIO_BYTES: usize = 2048;

/// Frame length of the ADTS frame starting `h` (13818-7 §6.2), if `h`
/// starts with a valid ADTS header.
fn adts_frame_len(h: &[u8]) -> Option<usize> {
    let h = h.get(..7)?;
    // 12-bit sync, layer '00'.
    if h[0] != 0xff || h[1] & 0xf6 != 0xf0 || (h[2] >> 2) & 0x0f > 12 {
        return None;
    }
    let len = (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
    (len >= 7).then_some(len)
}

/// Parsed MPEG audio frame header (ISO/IEC 11172-3 §2.4.2.3, 13818-3).
struct MpaHeader {
    sample_rate: u32,
    channels: u8,
    frame_len: usize,
}

fn mpa_header(h: &[u8]) -> Option<MpaHeader> {
    const KBPS: [[u16; 14]; 5] = [
        [
            32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ], // v1 L1
        [
            32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ], // v1 L2
        [
            32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ], // v1 L3
        [
            32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ], // v2 L1
        [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160], // v2 L2/L3
    ];
    let h = h.get(..4)?;
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    let layer = (h[1] >> 1) & 3; // 3: I, 2: II, 1: III
    let bitrate_index = usize::from(h[2] >> 4);
    let rate_index = usize::from((h[2] >> 2) & 3);
    // Reserved version/layer, free-format or forbidden bitrate, reserved rate.
    if version == 1 || layer == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    let base = [44_100u32, 48_000, 32_000][rate_index];
    let sample_rate = match version {
        3 => base,
        2 => base / 2,
        _ => base / 4,
    };
    let table = match (version == 3, layer) {
        (true, 3) => 0,
        (true, 2) => 1,
        (true, _) => 2,
        (false, 3) => 3,
        (false, _) => 4,
    };
    let bitrate = u32::from(KBPS[table][bitrate_index - 1]) * 1000;
    let padding = u32::from((h[2] >> 1) & 1);
    let frame_len = match layer {
        3 => (12 * bitrate / sample_rate + padding) * 4,
        1 if version != 3 => 72 * bitrate / sample_rate + padding,
        _ => 144 * bitrate / sample_rate + padding,
    };
    Some(MpaHeader {
        sample_rate,
        channels: if h[3] >> 6 == 3 { 1 } else { 2 },
        frame_len: frame_len as usize,
    })
}

/// Decide the codec of audio no PSM declared. A header counts only if the
/// frame after it (when the payload reaches that far) starts with the same
/// kind of header: G.711 bytes can look like one sync word, rarely two.
fn sniff_audio(head: &[u8], default_g711: Codec) -> (Codec, AudioEvidence) {
    let confirmed = |len: usize, next_ok: &dyn Fn(&[u8]) -> bool| match head.get(len..) {
        Some(rest) if rest.len() >= 4 => next_ok(rest),
        _ => true,
    };
    if let Some(len) = adts_frame_len(head)
        && confirmed(len, &|r| adts_frame_len(r).is_some())
    {
        return (Codec::Aac, AudioEvidence::AdtsHeader);
    }
    if let Some(h) = mpa_header(head)
        && h.frame_len >= 4
        && confirmed(h.frame_len, &|r| mpa_header(r).is_some())
    {
        return (Codec::Mpa, AudioEvidence::MpegAudioHeader);
    }
    (default_g711, AudioEvidence::DefaultG711)
}

/// Sample rate and channels of MPEG audio from its first frame header.
fn mpa_params(payload: &Chunks) -> Option<AudioParams> {
    let mut h = [0u8; 4];
    payload.copy_prefix(&mut h);
    let m = mpa_header(&h)?;
    Some(AudioParams {
        sample_rate: m.sample_rate,
        channels: m.channels,
        config: None,
    })
}

/// Sample rate, channels and AudioSpecificConfig from an ADTS header
/// (ISO/IEC 13818-7 §6.2).
fn adts_params(payload: &Chunks) -> Option<AudioParams> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let mut h = [0u8; 4];
    if payload.copy_prefix(&mut h) < 4 || h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
        return None;
    }
    let object = (h[2] >> 6) + 1;
    let rate_index = (h[2] >> 2) & 0x0f;
    let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
    let sample_rate = *RATES.get(usize::from(rate_index))?;
    let config = [
        (object << 3) | (rate_index >> 1),
        ((rate_index & 1) << 7) | (channels << 3),
    ];
    Some(AudioParams {
        sample_rate,
        channels,
        config: Some(Bytes::copy_from_slice(&config)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrapper_crosses_2_pow_33() {
        let mut u = Unwrapper::default();
        assert_eq!(u.unwrap((1 << 33) - 3600), (1 << 33) - 3600);
        assert_eq!(u.unwrap(0), 1 << 33);
        assert_eq!(u.unwrap(3600), (1 << 33) + 3600);
        assert_eq!(u.unwrap(0), 1 << 33, "small step back stays near");
    }

    #[test]
    fn start_code_search() {
        assert_eq!(find_start_code(&[0, 0, 1, 0xba], |b| b == 0xba), Some(0));
        assert_eq!(
            find_start_code(&[5, 0, 0, 1, 0x65, 0, 0, 1, 0xe0], |b| b >= 0xb9),
            Some(5)
        );
        assert_eq!(find_start_code(&[0, 0, 1], |_| true), None);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff_codec(&[0x67, 0x4d]), Some(Codec::H264));
        assert_eq!(sniff_codec(&[0x09, 0xf0]), Some(Codec::H264));
        assert_eq!(sniff_codec(&[0x40, 0x01]), Some(Codec::H265));
        assert_eq!(sniff_codec(&[0x46, 0x01]), Some(Codec::H265));
        assert_eq!(sniff_codec(&[0x26, 0x01]), Some(Codec::H265));
        assert_eq!(sniff_codec(&[0x41, 0x9a]), None);
        assert_eq!(sniff_codec(&[0xb6]), Some(Codec::Mpeg4));
    }

    fn pes(stream_id: u8, pts: Option<u64>, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 1, stream_id];
        let hdr: Vec<u8> = match pts {
            Some(p) => vec![
                0x80,
                0x80,
                5,
                0x21 | (((p >> 30) as u8 & 7) << 1),
                (p >> 22) as u8,
                ((p >> 14) as u8) | 1,
                (p >> 7) as u8,
                ((p << 1) as u8) | 1,
            ],
            None => vec![0x80, 0, 0],
        };
        let len = hdr.len() + payload.len();
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v.extend_from_slice(&hdr);
        v.extend_from_slice(payload);
        v
    }

    fn pack() -> Vec<u8> {
        vec![0, 0, 1, 0xba, 0x44, 0, 4, 0, 4, 1, 1, 0x89, 0xc3, 0xf8]
    }

    fn psm(entries: &[(u8, u8)], overrun: bool) -> Vec<u8> {
        let mut body = vec![0xe0, 0xff, 0, 6, 0x40, 4, b'H', b'K', 1, 0];
        let mut map = Vec::new();
        for &(t, id) in entries {
            map.extend_from_slice(&[t, id, 0, 2, 0x42, 0]);
        }
        if overrun {
            map.extend_from_slice(&[0x90, 0xc0, 0x7f, 0xff]);
        }
        body.extend_from_slice(&(map.len() as u16).to_be_bytes());
        body.extend_from_slice(&map);
        body.extend_from_slice(&[0, 0, 0, 0]);
        let mut v = vec![0, 0, 1, 0xbc];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(&body);
        v
    }

    fn frames(ev: &[PsEvent]) -> Vec<&Frame> {
        ev.iter()
            .filter_map(|e| match e {
                PsEvent::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn audio_psm_and_malformed_psm_recovery() {
        let mut s = pack();
        s.extend(psm(&[(0x1b, 0xe0), (0x90, 0xc0)], true));
        s.extend(pes(0xc0, Some(90_000), &[0xd5; 160]));
        s.extend(pes(0xc0, Some(93_600), &[0xd5; 160]));
        s.extend(pes(0xbd, None, &[1, 2, 3]));
        let mut d = PsDemuxer::new();
        let mut ev = Vec::new();
        d.push(Bytes::from(s), &mut ev);
        d.flush(&mut ev);
        let f = frames(&ev);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].codec, Codec::Pcma);
        assert_eq!((f[0].pts, f[1].pts), (8000, 8320));
        assert_eq!(f[0].len(), 160);
        assert_eq!(d.stats().error_count(PsError::MalformedPsm), 1);
        assert_eq!(d.stats().private_pes_skipped, 1);
        assert_eq!(d.info().audio.as_ref().map(|a| a.0), Some(Codec::Pcma));
    }

    #[test]
    fn unbounded_pes_and_garbage_resync() {
        let sps: &[u8] = &[
            0x67, 0x4d, 0x00, 0x1e, 0x9d, 0xa8, 0x2c, 0x04, 0x9a, 0x6e, 0x02, 0x02, 0x02, 0x80,
            0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x19, 0x42,
        ];
        let mut es = vec![0, 0, 0, 1];
        es.extend_from_slice(sps);
        es.extend_from_slice(&[0, 0, 1, 0x68, 0xee, 0x3c, 0x80, 0, 0, 1, 0x65, 1, 2, 3]);
        let mut s = b"garbage\0\0\x01".to_vec();
        for i in 0..3u64 {
            s.extend(pack());
            let mut p = pes(
                0xe2,
                Some(3600 * i),
                if i == 0 {
                    &es
                } else {
                    &[0, 0, 1, 0x41, 0x9a, 7]
                },
            );
            p[4] = 0;
            p[5] = 0; // length 0: runs to the next start code
            s.extend(p);
            if i == 1 {
                s.extend_from_slice(&[0xde, 0xad, 0, 0, 1, 0x01, 0xbe, 0xef]);
            }
        }
        let mut d = PsDemuxer::new();
        let mut ev = Vec::new();
        for c in s.chunks(5) {
            d.push(Bytes::copy_from_slice(c), &mut ev);
        }
        d.flush(&mut ev);
        let f = frames(&ev);
        assert_eq!(f.len(), 3);
        assert!(f[0].keyframe);
        assert_eq!(f[0].units.len(), 3);
        assert_eq!(f[0].units[0].to_vec(), sps);
        assert_eq!(f[2].pts, 7200);
        assert_eq!(f[2].units[0].to_vec(), [0x41, 0x9a, 7]);
        let info = d.info().video.clone().unwrap();
        assert_eq!(
            (info.0, info.1.width, info.1.height),
            (Codec::H264, 704, 576)
        );
        assert_eq!(d.stats().bytes_skipped, 10);
    }

    /// An H.264 IDR access unit (SPS 704x576, PPS, IDR slice) as Annex B.
    fn h264_idr() -> Vec<u8> {
        let mut es = vec![
            0, 0, 0, 1, 0x67, 0x4d, 0x00, 0x1e, 0x9d, 0xa8, 0x2c, 0x04, 0x9a, 0x6e, 0x02, 0x02,
            0x02, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x19, 0x42,
        ];
        es.extend_from_slice(&[0, 0, 1, 0x68, 0xee, 0x3c, 0x80, 0, 0, 1, 0x65, 1, 2, 3]);
        es
    }

    fn demux_all(s: Vec<u8>, default_g711: Option<Codec>) -> (PsDemuxer, Vec<PsEvent>) {
        let mut d = PsDemuxer::new();
        if let Some(c) = default_g711 {
            d.set_default_g711(c);
        }
        let mut ev = Vec::new();
        d.push(Bytes::from(s), &mut ev);
        d.flush(&mut ev);
        (d, ev)
    }

    #[test]
    fn psm_with_short_elementary_stream_map_length_is_repaired() {
        // The field capture: program_stream_map_length 24, H.264 on 0xE0
        // with a 6-byte ISO 639 descriptor and G.711A on 0xC0 (14 bytes of
        // entries), but elementary_stream_map_length says 8.
        let psm: &[u8] = &[
            0, 0, 1, 0xbc, 0x00, 0x18, 0xe0, 0xff, 0x00, 0x00, 0x00, 0x08, //
            0x1b, 0xe0, 0x00, 0x06, 0x0a, 0x04, b'c', b'h', b'i', 0x00, //
            0x90, 0xc0, 0x00, 0x00, //
            0x12, 0x34, 0x56, 0x78,
        ];
        let mut s = pack();
        s.extend_from_slice(psm);
        s.extend(pes(0xe0, Some(3600), &h264_idr()));
        s.extend(pes(0xc0, Some(3600), &[0xd5; 160]));
        s.extend(pack());
        s.extend(pes(0xe0, Some(7200), &[0, 0, 1, 0x41, 0x9a, 7]));
        let (d, ev) = demux_all(s, None);
        let f = frames(&ev);
        let (video, audio): (Vec<&&Frame>, Vec<&&Frame>) =
            f.iter().partition(|f| f.codec.kind() == MediaKind::Video);
        assert_eq!((video.len(), audio.len()), (2, 1));
        assert_eq!(audio[0].codec, Codec::Pcma);
        assert_eq!(d.stats().psm_repaired, 1);
        assert_eq!(d.stats().error_count(PsError::MalformedPsm), 0);
        assert_eq!(d.info().audio_decided_by, Some(AudioEvidence::Psm));
        assert_eq!(d.psm[0xe0], 0x1b);
    }

    #[test]
    fn psm_with_long_elementary_stream_map_length_is_repaired() {
        let psm: &[u8] = &[
            0, 0, 1, 0xbc, 0x00, 0x12, 0xe0, 0xff, 0x00, 0x00, 0x00, 0x40, //
            0x24, 0xe0, 0x00, 0x00, 0x91, 0xc0, 0x00, 0x00, //
            0, 0, 0, 0,
        ];
        let mut map = [0u8; 256];
        assert_eq!(
            parse_psm(psm, &mut map),
            Ok(PsmRead::Repaired),
            "0x40 overruns the packet; entries read up to the CRC"
        );
        assert_eq!((map[0xe0], map[0xc0]), (0x24, 0x91));
        // A correct one is read as declared.
        let mut good = psm.to_vec();
        good[11] = 8;
        let mut map = [0u8; 256];
        assert_eq!(parse_psm(&good, &mut map), Ok(PsmRead::AsDeclared));
        assert_eq!((map[0xe0], map[0xc0]), (0x24, 0x91));
    }

    #[test]
    fn undeclared_audio_decided_from_payload() {
        // MPEG-1 Layer II, 128 kbit/s, 48 kHz, mono: 384-byte frames.
        let mut mp2 = Vec::new();
        for _ in 0..2 {
            let start = mp2.len();
            mp2.extend_from_slice(&[0xff, 0xfd, 0x84, 0xc0]);
            mp2.resize(start + 384, 0x55);
        }
        // ADTS AAC-LC 44.1 kHz mono, 27-byte frames.
        let mut adts = Vec::new();
        for _ in 0..2 {
            adts.extend_from_slice(&[0xff, 0xf1, 0x50, 0x40, 0x03, 0x7f, 0xfc]);
            adts.extend_from_slice(&[0x21; 20]);
        }
        // (payload, media.default_g711, codec, evidence, rate, channels)
        type Case<'a> = (&'a [u8], Option<Codec>, Codec, AudioEvidence, u32, u8);
        let cases: [Case; 5] = [
            (
                &mp2,
                None,
                Codec::Mpa,
                AudioEvidence::MpegAudioHeader,
                48_000,
                1,
            ),
            (
                &adts,
                None,
                Codec::Aac,
                AudioEvidence::AdtsHeader,
                44_100,
                1,
            ),
            (
                &[0xd5; 160],
                None,
                Codec::Pcma,
                AudioEvidence::DefaultG711,
                8000,
                1,
            ),
            (
                &[0xd5; 160],
                Some(Codec::Pcmu),
                Codec::Pcmu,
                AudioEvidence::DefaultG711,
                8000,
                1,
            ),
            // µ-law silence: 0xFF sync, but bitrate index 15 is forbidden.
            (
                &[0xff; 160],
                Some(Codec::Pcmu),
                Codec::Pcmu,
                AudioEvidence::DefaultG711,
                8000,
                1,
            ),
        ];
        for (payload, default, codec, evidence, rate, channels) in cases {
            let mut s = pack();
            s.extend(pes(0xc0, Some(9000), payload));
            s.extend(pes(0xc0, Some(18000), payload));
            let (d, ev) = demux_all(s, default);
            let f = frames(&ev);
            assert_eq!(f.len(), 2, "{codec:?}");
            assert!(f.iter().all(|f| f.codec == codec), "{codec:?}");
            let (c, p) = d.info().audio.clone().unwrap();
            assert_eq!((c, p.sample_rate, p.channels), (codec, rate, channels));
            assert_eq!(d.info().audio_decided_by, Some(evidence));
            assert!(d.info().video.is_none());
        }
    }

    #[test]
    fn one_mpeg_audio_sync_followed_by_garbage_is_g711() {
        let mut payload = vec![0xff, 0xfd, 0x84, 0xc0];
        payload.resize(400, 0xd5);
        assert_eq!(
            sniff_audio(&payload, Codec::Pcma),
            (Codec::Pcma, AudioEvidence::DefaultG711)
        );
    }

    #[test]
    fn random_and_truncated_input_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut template = pack();
        template.extend(psm(&[(0x24, 0xe0), (0x91, 0xc0)], false));
        template.extend(pes(0xe0, Some(1), &[0, 0, 1, 0x40, 1, 0, 0, 1, 0x26, 1, 9]));
        template.extend(pes(0xc0, Some(1), &[0x7f; 20]));
        for round in 0..3000 {
            let mut data = if round % 2 == 0 {
                template.clone()
            } else {
                (0..(next() % 300)).map(|_| next() as u8).collect()
            };
            if !data.is_empty() {
                for _ in 0..(next() % 6) {
                    let i = (next() as usize) % data.len();
                    data[i] = next() as u8;
                }
                let cut = (next() as usize) % (data.len() + 1);
                data.truncate(cut);
            }
            let mut d = PsDemuxer::new();
            let mut ev = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let n = 1 + (next() as usize) % 40;
                let end = (at + n).min(data.len());
                d.push(Bytes::copy_from_slice(&data[at..end]), &mut ev);
                if next() % 7 == 0 {
                    d.end_of_frame(&mut ev);
                }
                if next() % 11 == 0 {
                    d.discontinuity();
                }
                at = end;
            }
            d.flush(&mut ev);
        }
    }
}
