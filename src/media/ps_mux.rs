//! Sans-IO MPEG-2 program stream muxer (ISO/IEC 13818-1 §2.5), in the
//! form GB/T 28181-2016 Annex C asks for over RTP. Used by the simulated
//! camera and by the cascade egress (`cascade/`), which re-muxes whatever a
//! stream carries for an upper platform.
//!
//! Per access unit it writes:
//! - a pack header (§2.5.3.3) whose SCR follows the frames: the decoding
//!   time of video, the presentation time of audio, never going back — a
//!   live sender emits each frame when it is due, so arrival and decoding
//!   time coincide;
//! - on video keyframes (or, for an audio-only stream, on the first frame
//!   and once a second) a system header (§2.5.3.5) and a program stream map
//!   (§2.5.4) naming the codecs: H.264 0x1B / H.265 0x24 on stream id 0xE0
//!   (Table 2-34), and on 0xC0 G.711 A-law 0x90 / µ-law 0x91 (the GB/T 28181
//!   Annex C private values) or AAC in ADTS 0x0F — receivers need the PSM
//!   to tell the codec, and a keyframe is where they can start;
//! - the access unit as one or more video PES packets (§2.4.3.6) carrying
//!   PTS (and DTS when it differs), with an Annex B start code before every
//!   NAL unit. A PES holds at most [`MAX_PES_PAYLOAD`] bytes because
//!   PES_packet_length is 16 bits; a bigger frame continues in further PES
//!   packets without timestamps;
//! - audio frames as one PES each with a PTS; AAC frames without an ADTS
//!   header get one built from the track's AudioSpecificConfig, since the
//!   PS carries ADTS (13818-7 §6.2).
//!
//! Sans-IO: callers hand in NAL units (or a [`Frame`]) and timestamps and
//! get bytes appended to a `BytesMut`.

use bytes::{BufMut, BytesMut};

use super::frame::{AudioParams, Codec, Frame, MediaKind};

/// Video elementary stream id (first MPEG video stream, Table 2-18).
pub const STREAM_ID_VIDEO: u8 = 0xE0;
/// Audio elementary stream id (first MPEG audio stream, Table 2-18).
pub const STREAM_ID_AUDIO: u8 = 0xC0;
/// stream_type of H.264 (ISO/IEC 13818-1 Table 2-34).
pub const STREAM_TYPE_H264: u8 = 0x1B;
/// stream_type GB/T 28181-2016 Annex C assigns to G.711 A-law.
pub const STREAM_TYPE_G711A: u8 = 0x90;
/// stream_type GB/T 28181-2016 Annex C assigns to G.711 µ-law.
pub const STREAM_TYPE_G711U: u8 = 0x91;
/// stream_type of AAC in ADTS (ISO/IEC 13818-1 Table 2-34; GB/T 28181
/// Annex C uses the same value).
pub const STREAM_TYPE_AAC: u8 = 0x0F;
/// stream_type of H.265 video (ISO/IEC 13818-1 Table 2-34).
pub const STREAM_TYPE_H265: u8 = 0x24;
/// Largest PES payload written; keeps PES_packet_length (16 bits) in range
/// with room for the header, and matches what common cameras emit.
pub const MAX_PES_PAYLOAD: usize = 65_400;

/// Timestamps are 33-bit (§2.4.3.7).
const TS_MASK: u64 = (1 << 33) - 1;
const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// Default program_mux_rate: 2 Mbit/s in units of 50 bytes/s (§2.5.3.4).
/// Receivers do not pace by it; it only has to be a sane non-zero value.
const DEFAULT_MUX_RATE: u32 = 2_000_000 / 8 / 50;
/// How often an audio-only stream repeats its PSM (90 kHz): a receiver
/// joining late learns the codec within a second.
const AUDIO_ONLY_PSM_INTERVAL: i64 = 90_000;
/// ADTS header length without CRC (13818-7 §6.2.1).
const ADTS_HEADER_LEN: usize = 7;
/// Largest frame an ADTS header can describe (13-bit frame_length).
const MAX_ADTS_FRAME: usize = (1 << 13) - 1;
/// Sampling-frequency index table of ISO/IEC 14496-3 §1.6.3.4.
const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Why a frame could not be muxed. The frame is skipped; the muxer stays
/// usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PsMuxError {
    #[error("codec {0:?} has no program stream mapping here")]
    UnsupportedCodec(Codec),
    #[error("frame codec {0:?} is not the one this muxer announced")]
    CodecMismatch(Codec),
    #[error("audio frame of {0} bytes does not fit one PES packet")]
    OversizedAudio(usize),
    #[error("AAC frame without ADTS header and no AudioSpecificConfig to build one")]
    MissingAacConfig,
    #[error("AudioSpecificConfig cannot be stated in an ADTS header")]
    UnusableAacConfig,
}

/// Writes a program stream one access unit at a time.
#[derive(Clone, Debug)]
pub struct PsMuxer {
    mux_rate: u32,
    video: Option<(Codec, u8)>,
    audio: Option<(Codec, u8)>,
    /// SCR of the last pack header, on the caller's (unwrapped) timeline.
    last_scr: Option<i64>,
    /// When an audio-only stream last carried its PSM.
    last_psm: Option<i64>,
}

impl Default for PsMuxer {
    fn default() -> Self {
        Self::new()
    }
}

/// The PSM stream_type of a codec this muxer can carry.
pub fn stream_type_for(codec: Codec) -> Option<u8> {
    Some(match codec {
        Codec::H264 => STREAM_TYPE_H264,
        Codec::H265 => STREAM_TYPE_H265,
        Codec::Pcma => STREAM_TYPE_G711A,
        Codec::Pcmu => STREAM_TYPE_G711U,
        Codec::Aac => STREAM_TYPE_AAC,
        _ => return None,
    })
}

impl PsMuxer {
    /// A video-only (H.264) muxer.
    pub fn new() -> Self {
        Self {
            mux_rate: DEFAULT_MUX_RATE,
            video: Some((Codec::H264, STREAM_TYPE_H264)),
            audio: None,
            last_scr: None,
            last_psm: None,
        }
    }

    /// A muxer announcing exactly these tracks (either may be absent, not
    /// both). Only codecs with a PS mapping ([`stream_type_for`]) are taken.
    pub fn for_codecs(video: Option<Codec>, audio: Option<Codec>) -> Result<Self, PsMuxError> {
        let track = |c: Codec, kind: MediaKind| match stream_type_for(c) {
            Some(t) if c.kind() == kind => Ok((c, t)),
            _ => Err(PsMuxError::UnsupportedCodec(c)),
        };
        let video = video.map(|c| track(c, MediaKind::Video)).transpose()?;
        let audio = audio.map(|c| track(c, MediaKind::Audio)).transpose()?;
        Ok(Self {
            video,
            audio,
            ..Self::new()
        })
    }

    /// Also announce a G.711 A-law stream in the system header and PSM, so
    /// [`PsMuxer::write_audio`] frames are identifiable.
    pub fn with_audio(mut self) -> Self {
        self.audio = Some((Codec::Pcma, STREAM_TYPE_G711A));
        self
    }

    /// Announce G.711 µ-law audio (stream_type 0x91).
    pub fn with_pcmu(mut self) -> Self {
        self.audio = Some((Codec::Pcmu, STREAM_TYPE_G711U));
        self
    }

    /// Announce an AAC (ADTS) stream instead of G.711: frames given to
    /// [`PsMuxer::write_audio`] are then whole ADTS frames.
    pub fn with_aac(mut self) -> Self {
        self.audio = Some((Codec::Aac, STREAM_TYPE_AAC));
        self
    }

    /// Announce the video as H.265 (stream_type 0x24) instead of H.264.
    pub fn with_h265(mut self) -> Self {
        self.video = Some((Codec::H265, STREAM_TYPE_H265));
        self
    }

    /// Set program_mux_rate from a bit rate (clamped to the 22-bit field).
    pub fn with_bitrate(mut self, bits_per_second: u64) -> Self {
        let units = (bits_per_second / 8 / 50).clamp(1, (1 << 22) - 1);
        self.mux_rate = u32::try_from(units).unwrap_or(DEFAULT_MUX_RATE);
        self
    }

    /// The video codec announced, if any.
    pub fn video_codec(&self) -> Option<Codec> {
        self.video.map(|(c, _)| c)
    }

    /// The audio codec announced, if any.
    pub fn audio_codec(&self) -> Option<Codec> {
        self.audio.map(|(c, _)| c)
    }

    /// Append one video access unit with DTS = PTS. `nals` are NAL units
    /// without start codes; `pts` is in 90 kHz units (taken modulo 2^33).
    pub fn write_video<N: AsRef<[u8]>>(
        &mut self,
        nals: &[N],
        pts: u64,
        keyframe: bool,
        out: &mut BytesMut,
    ) {
        let pts = (pts & TS_MASK) as i64;
        let parts: Vec<&[u8]> = nals.iter().map(AsRef::as_ref).collect();
        self.write_video_parts(&parts, &[], pts, pts, keyframe, out);
    }

    /// Append one frame from a stream: video access units (PTS/DTS in
    /// 90 kHz) or audio frames (timestamps at the codec's clock, the
    /// sample rate of `audio_params` for AAC). Payload slices are copied
    /// once, into `out`.
    pub fn write_frame(
        &mut self,
        frame: &Frame,
        audio_params: Option<&AudioParams>,
        out: &mut BytesMut,
    ) -> Result<(), PsMuxError> {
        match frame.kind() {
            MediaKind::Video => {
                if self.video_codec() != Some(frame.codec) {
                    return Err(PsMuxError::CodecMismatch(frame.codec));
                }
                let mut parts: Vec<&[u8]> = Vec::new();
                let mut bounds: Vec<usize> = Vec::with_capacity(frame.units.len());
                for unit in &frame.units {
                    if unit.is_empty() {
                        continue;
                    }
                    bounds.push(parts.len());
                    parts.extend(unit.parts().iter().map(|b| b.as_ref()));
                }
                self.write_video_parts(&parts, &bounds, frame.pts, frame.dts, frame.keyframe, out);
                Ok(())
            }
            MediaKind::Audio => {
                if self.audio_codec() != Some(frame.codec) {
                    return Err(PsMuxError::CodecMismatch(frame.codec));
                }
                let rate = match frame.codec {
                    Codec::Aac => audio_params.map_or(0, |p| p.sample_rate),
                    c => c.clock_rate().unwrap_or(8_000),
                };
                // Rounded up, so a receiver scaling back down (rounding
                // down) recovers the sample-clock timestamp exactly.
                let pts90 = if rate == 0 {
                    frame.pts
                } else {
                    let rate = i128::from(rate);
                    i64::try_from((i128::from(frame.pts) * 90_000 + rate - 1).div_euclid(rate))
                        .unwrap_or(0)
                };
                let mut payload: Vec<u8> = Vec::with_capacity(frame.len() + ADTS_HEADER_LEN);
                for unit in &frame.units {
                    if frame.codec == Codec::Aac && !starts_with_adts(unit.parts()) {
                        let config = audio_params
                            .and_then(|p| p.config.as_deref())
                            .ok_or(PsMuxError::MissingAacConfig)?;
                        if unit.len() + ADTS_HEADER_LEN > MAX_ADTS_FRAME {
                            return Err(PsMuxError::OversizedAudio(unit.len()));
                        }
                        let header =
                            adts_header(config, unit.len()).ok_or(PsMuxError::UnusableAacConfig)?;
                        payload.extend_from_slice(&header);
                    }
                    for part in unit.parts() {
                        payload.extend_from_slice(part);
                    }
                }
                if payload.len() > MAX_PES_PAYLOAD {
                    return Err(PsMuxError::OversizedAudio(payload.len()));
                }
                self.write_audio_at(&payload, pts90, out);
                Ok(())
            }
        }
    }

    /// Append one audio frame (G.711 samples or a whole ADTS frame) as an
    /// audio PES with a PTS in 90 kHz units. Only meaningful on a muxer
    /// that announced audio; frames over [`MAX_PES_PAYLOAD`] are truncated
    /// (G.711 and AAC frames are a few hundred bytes).
    pub fn write_audio(&mut self, frame: &[u8], pts: u64, out: &mut BytesMut) {
        let frame = &frame[..frame.len().min(MAX_PES_PAYLOAD)];
        self.write_audio_at(frame, (pts & TS_MASK) as i64, out);
    }

    fn write_audio_at(&mut self, frame: &[u8], pts: i64, out: &mut BytesMut) {
        let scr = self.next_scr(pts);
        self.write_pack_header(scr, out);
        if self.video.is_none()
            && self
                .last_psm
                .is_none_or(|at| scr - at >= AUDIO_ONLY_PSM_INTERVAL)
        {
            self.last_psm = Some(scr);
            self.write_system_header(out);
            self.write_psm(out);
        }
        write_pes_header(STREAM_ID_AUDIO, frame.len(), Some((pts, pts)), out);
        out.put_slice(frame);
    }

    /// Write an access unit whose NAL units are given as slices: `bounds`
    /// holds the index in `parts` where each NAL unit starts (empty: every
    /// part is a whole NAL unit).
    fn write_video_parts(
        &mut self,
        parts: &[&[u8]],
        bounds: &[usize],
        pts: i64,
        dts: i64,
        keyframe: bool,
        out: &mut BytesMut,
    ) {
        let scr = self.next_scr(dts);
        self.write_pack_header(scr, out);
        if keyframe {
            self.write_system_header(out);
            self.write_psm(out);
        }
        let starts = bounds
            .len()
            .max(if bounds.is_empty() { parts.len() } else { 0 });
        let total: usize = starts * START_CODE.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut cursor = PayloadCursor::new(parts, bounds);
        let mut remaining = total;
        let mut first = true;
        while remaining > 0 {
            let chunk = remaining.min(MAX_PES_PAYLOAD);
            write_pes_header(STREAM_ID_VIDEO, chunk, first.then_some((pts, dts)), out);
            cursor.copy_to(chunk, out);
            remaining -= chunk;
            first = false;
        }
    }

    /// The SCR for a pack whose first access unit is due at `due`: that
    /// time, unless it would step back behind the previous pack.
    fn next_scr(&mut self, due: i64) -> i64 {
        let scr = self.last_scr.map_or(due, |last| due.max(last));
        self.last_scr = Some(scr);
        scr
    }

    /// Pack header, §2.5.3.3: '01', SCR base/extension with markers,
    /// program_mux_rate, no stuffing.
    fn write_pack_header(&self, scr: i64, out: &mut BytesMut) {
        let scr = (scr as u64) & TS_MASK;
        let ext: u64 = 0;
        out.put_slice(&[0, 0, 1, 0xBA]);
        out.put_u8(0x44 | ((scr >> 27) & 0x38) as u8 | ((scr >> 28) & 0x03) as u8);
        out.put_u8((scr >> 20) as u8);
        out.put_u8(((scr >> 12) & 0xF8) as u8 | 0x04 | ((scr >> 13) & 0x03) as u8);
        out.put_u8((scr >> 5) as u8);
        out.put_u8(((scr << 3) & 0xF8) as u8 | 0x04 | ((ext >> 7) & 0x03) as u8);
        out.put_u8(((ext << 1) & 0xFE) as u8 | 0x01);
        let rate = self.mux_rate;
        out.put_u8((rate >> 14) as u8);
        out.put_u8((rate >> 6) as u8);
        out.put_u8(((rate << 2) & 0xFC) as u8 | 0x03);
        // reserved '11111' + pack_stuffing_length 0.
        out.put_u8(0xF8);
    }

    /// (stream_id, stream_type) of every announced track, video first.
    fn entries(&self) -> impl Iterator<Item = (u8, u8)> {
        let video = self.video.map(|(_, t)| (STREAM_ID_VIDEO, t));
        let audio = self.audio.map(|(_, t)| (STREAM_ID_AUDIO, t));
        video.into_iter().chain(audio)
    }

    /// System header, §2.5.3.5: bounds, then one P-STD buffer entry per
    /// stream (video: scale 1024 bytes, 232 KiB; audio: scale 128, 4 KiB).
    fn write_system_header(&self, out: &mut BytesMut) {
        let streams = self.entries().count() as u16;
        out.put_slice(&[0, 0, 1, 0xBB]);
        out.put_u16(6 + 3 * streams);
        let rate = self.mux_rate;
        out.put_u8(0x80 | (rate >> 15) as u8);
        out.put_u8((rate >> 7) as u8);
        out.put_u8(((rate << 1) & 0xFE) as u8 | 0x01);
        // audio_bound (6), fixed_flag 0, CSPS_flag 0.
        out.put_u8(u8::from(self.audio.is_some()) << 2);
        // system_audio_lock, system_video_lock, marker, video_bound (5).
        out.put_u8(0xE0 | u8::from(self.video.is_some()));
        // packet_rate_restriction_flag 0, reserved '1111111'.
        out.put_u8(0x7F);
        for (id, _) in self.entries() {
            let (scale, size): (u8, u16) = if id == STREAM_ID_VIDEO {
                (1, 232)
            } else {
                (0, 32)
            };
            out.put_u8(id);
            out.put_u8(0xC0 | (scale << 5) | ((size >> 8) & 0x1F) as u8);
            out.put_u8(size as u8);
        }
    }

    /// Program stream map, §2.5.4.1, closed by its CRC_32 (Annex A).
    fn write_psm(&self, out: &mut BytesMut) {
        let es_map_length = 4 * self.entries().count() as u16;
        let start = out.len();
        out.put_slice(&[0, 0, 1, 0xBC]);
        // Everything after the length field: 6 fixed bytes, the map, the CRC.
        out.put_u16(6 + es_map_length + 4);
        // current_next_indicator 1, reserved '11', version 0.
        out.put_u8(0xE0);
        // reserved '1111111', marker.
        out.put_u8(0xFF);
        out.put_u16(0); // program_stream_info_length
        out.put_u16(es_map_length);
        for (id, stream_type) in self.entries() {
            out.put_u8(stream_type);
            out.put_u8(id);
            out.put_u16(0); // elementary_stream_info_length
        }
        let crc = crc32_mpeg2(&out[start..]);
        out.put_u32(crc);
    }
}

/// Whether a unit already begins with an ADTS sync word.
fn starts_with_adts(parts: &[bytes::Bytes]) -> bool {
    let mut head = [0u8; 2];
    let mut n = 0;
    for p in parts {
        for &b in p.iter().take(2 - n) {
            head[n] = b;
            n += 1;
        }
        if n == 2 {
            break;
        }
    }
    n == 2 && head[0] == 0xFF && head[1] & 0xF6 == 0xF0
}

/// An ADTS header (13818-7 §6.2, MPEG-4, no CRC) for a raw AAC frame of
/// `payload_len` bytes, from the AudioSpecificConfig's object type,
/// sampling-frequency index and channel configuration (14496-3 §1.6.2.1).
fn adts_header(config: &[u8], payload_len: usize) -> Option<[u8; ADTS_HEADER_LEN]> {
    let [a, b, ..] = *config else { return None };
    let object = a >> 3;
    let rate_index = ((a & 0x07) << 1) | (b >> 7);
    let channels = (b >> 3) & 0x0F;
    // ADTS profile is 2 bits: object types 1..=4 only; index 15 means an
    // explicit rate ADTS cannot state.
    if !(1..=4).contains(&object) || usize::from(rate_index) >= AAC_RATES.len() || channels > 7 {
        return None;
    }
    let len = payload_len + ADTS_HEADER_LEN;
    if len > MAX_ADTS_FRAME {
        return None;
    }
    Some([
        0xFF,
        0xF1,
        ((object - 1) << 6) | (rate_index << 2) | (channels >> 2),
        ((channels & 0x03) << 6) | ((len >> 11) & 0x03) as u8,
        (len >> 3) as u8,
        (((len & 0x07) << 5) as u8) | 0x1F,
        0xFC,
    ])
}

/// PES header, §2.4.3.6, for a payload of `payload_len` bytes (at most
/// [`MAX_PES_PAYLOAD`]). With timestamps `(pts, dts)`, writes PTS, and DTS
/// too when it differs (video with reordering).
fn write_pes_header(stream_id: u8, payload_len: usize, ts: Option<(i64, i64)>, out: &mut BytesMut) {
    let with_dts = ts.is_some_and(|(pts, dts)| pts != dts);
    let (flags, header_data_length) = match (ts, with_dts) {
        (Some(_), true) => (0xC0u8, 10u8),
        (Some(_), false) => (0x80, 5),
        (None, _) => (0x00, 0),
    };
    // Callers keep payload_len <= MAX_PES_PAYLOAD, so this always fits.
    let packet_length = (3 + usize::from(header_data_length) + payload_len).min(0xFFFF) as u16;
    out.put_slice(&[0, 0, 1, stream_id]);
    out.put_u16(packet_length);
    // '10', not scrambled, priority 0, data_alignment_indicator on the PES
    // that opens an access unit, not copyrighted, original.
    out.put_u8(if ts.is_some() { 0x85 } else { 0x81 });
    out.put_u8(flags);
    out.put_u8(header_data_length);
    if let Some((pts, dts)) = ts {
        let prefix = if with_dts { 0x3 } else { 0x2 };
        write_timestamp(prefix, pts as u64, out);
        if with_dts {
            write_timestamp(0x1, dts as u64, out);
        }
    }
}

/// A 33-bit PTS/DTS in the 5-byte marker-bit layout of §2.4.3.7.
fn write_timestamp(prefix: u8, ts: u64, out: &mut BytesMut) {
    let ts = ts & TS_MASK;
    out.put_u8((prefix << 4) | (((ts >> 30) & 0x07) << 1) as u8 | 0x01);
    out.put_u16((((ts >> 15) & 0x7FFF) << 1) as u16 | 0x01);
    out.put_u16(((ts & 0x7FFF) << 1) as u16 | 0x01);
}

/// Walks "start code, NAL, start code, NAL, ..." over slices without
/// gathering it. A NAL unit may span several slices.
struct PayloadCursor<'a> {
    parts: &'a [&'a [u8]],
    /// Index in `parts` where each NAL unit starts; empty: one per part.
    bounds: &'a [usize],
    index: usize,
    /// Start code bytes still to write before `parts[index]`.
    code_left: usize,
    /// Offset into `parts[index]` once its start code is out.
    offset: usize,
}

impl<'a> PayloadCursor<'a> {
    fn new(parts: &'a [&'a [u8]], bounds: &'a [usize]) -> Self {
        let mut cursor = Self {
            parts,
            bounds,
            index: 0,
            code_left: 0,
            offset: 0,
        };
        cursor.code_left = cursor.start_code_before(0);
        cursor
    }

    fn start_code_before(&self, index: usize) -> usize {
        let starts_nal = if self.bounds.is_empty() {
            true
        } else {
            self.bounds.contains(&index)
        };
        if starts_nal { START_CODE.len() } else { 0 }
    }

    /// Copy the next `n` bytes of the virtual payload (fewer at its end).
    fn copy_to(&mut self, mut n: usize, out: &mut BytesMut) {
        while n > 0 {
            let Some(part) = self.parts.get(self.index) else {
                return;
            };
            if self.code_left > 0 {
                let take = self.code_left.min(n);
                let from = START_CODE.len() - self.code_left;
                out.put_slice(&START_CODE[from..from + take]);
                self.code_left -= take;
                n -= take;
                continue;
            }
            let take = (part.len() - self.offset).min(n);
            out.put_slice(&part[self.offset..self.offset + take]);
            self.offset += take;
            n -= take;
            if self.offset >= part.len() {
                self.index += 1;
                self.offset = 0;
                self.code_left = self.start_code_before(self.index);
            }
        }
    }
}

/// CRC-32/MPEG-2 (ISO/IEC 13818-1 Annex A): polynomial 0x04C11DB7, initial
/// value all ones, no reflection, no final XOR.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xFFFF_FFFF;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use smallvec::SmallVec;

    use super::*;
    use crate::media::frame::Chunks;
    use crate::media::ps::{PsDemuxer, PsEvent};

    /// Reads back a 5-byte PTS/DTS field.
    fn read_ts(b: &[u8]) -> u64 {
        (u64::from(b[0] >> 1) & 0x07) << 30
            | u64::from(u16::from_be_bytes([b[1], b[2]]) >> 1) << 15
            | u64::from(u16::from_be_bytes([b[3], b[4]]) >> 1)
    }

    /// Reads back the SCR base of a pack header starting at `b`.
    fn read_scr(b: &[u8]) -> u64 {
        let p = &b[4..10];
        (u64::from(p[0] >> 3) & 0x07) << 30
            | u64::from(p[0] & 0x03) << 28
            | u64::from(p[1]) << 20
            | u64::from(p[2] >> 3) << 15
            | u64::from(p[2] & 0x03) << 13
            | u64::from(p[3]) << 5
            | u64::from(p[4] >> 3)
    }

    /// Splits a PS into (start code byte, whole packet) by walking lengths.
    fn packets(ps: &[u8]) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 4 <= ps.len() {
            assert_eq!(&ps[i..i + 3], &[0, 0, 1], "lost sync at {i}");
            let id = ps[i + 3];
            let len = if id == 0xBA {
                14 + usize::from(ps[i + 13] & 0x07)
            } else {
                6 + usize::from(u16::from_be_bytes([ps[i + 4], ps[i + 5]]))
            };
            out.push((id, &ps[i..i + len]));
            i += len;
        }
        assert_eq!(i, ps.len());
        out
    }

    #[test]
    fn crc_matches_mpeg2_check_value() {
        // The catalogued check value of CRC-32/MPEG-2 over "123456789".
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn keyframe_has_pack_system_psm_and_pes() {
        let mut mux = PsMuxer::new();
        let nals: [&[u8]; 2] = [&[0x67, 1, 2, 3], &[0x65, 9, 9]];
        let pts = 0x1_2345_6789;
        let mut out = BytesMut::new();
        mux.write_video(&nals, pts, true, &mut out);
        let pk = packets(&out);
        let ids: Vec<u8> = pk.iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![0xBA, 0xBB, 0xBC, 0xE0]);
        assert_eq!(read_scr(pk[0].1), pts);
        // The pack header's marker bits and '01' prefix.
        assert_eq!(pk[0].1[4] & 0xC4, 0x44);
        // System header: video_bound 1, audio_bound 0, one stream entry.
        let sys = pk[1].1;
        assert_eq!(sys[9] >> 2, 0);
        assert_eq!(sys[10] & 0x1F, 1);
        assert_eq!(sys.len(), 6 + 6 + 3);
        // PSM: one entry, H.264 on 0xE0, CRC over the whole map checks out
        // (an MPEG-2 CRC run over data + its CRC leaves zero).
        let psm = pk[2].1;
        assert_eq!(&psm[12..14], &[STREAM_TYPE_H264, STREAM_ID_VIDEO]);
        assert_eq!(crc32_mpeg2(psm), 0);
        // PES: PTS only (DTS equal), payload Annex B.
        let pes = pk[3].1;
        assert_eq!(pes[7], 0x80);
        assert_eq!(pes[8], 5);
        assert_eq!(pes[9] >> 4, 0x2);
        assert_eq!(read_ts(&pes[9..14]), pts);
        assert_eq!(
            &pes[14..],
            &[0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 0, 1, 0x65, 9, 9]
        );
    }

    #[test]
    fn reordered_frame_carries_dts_and_scr_follows_dts() {
        let mut mux = PsMuxer::new();
        let mut units = SmallVec::new();
        units.push(Chunks::from(Bytes::from_static(&[0x41, 5, 6])));
        let frame = Frame {
            codec: Codec::H264,
            pts: 10_800,
            dts: 3_600,
            keyframe: false,
            units,
        };
        let mut out = BytesMut::new();
        mux.write_frame(&frame, None, &mut out).unwrap();
        let pk = packets(&out);
        assert_eq!(read_scr(pk[0].1), 3_600);
        let pes = pk[1].1;
        assert_eq!(pes[7], 0xC0);
        assert_eq!(pes[8], 10);
        assert_eq!(pes[9] >> 4, 0x3);
        assert_eq!(pes[14] >> 4, 0x1);
        assert_eq!(read_ts(&pes[9..14]), 10_800);
        assert_eq!(read_ts(&pes[14..19]), 3_600);
        assert_eq!(&pes[19..], &[0, 0, 0, 1, 0x41, 5, 6]);
    }

    #[test]
    fn scr_never_steps_back() {
        let mut mux = PsMuxer::new().with_audio();
        let mut out = BytesMut::new();
        mux.write_video(&[[0x65u8]], 9_000, true, &mut out);
        // Audio stamped before the video frame just sent.
        mux.write_audio(&[0xD5; 160], 7_200, &mut out);
        mux.write_video(&[[0x41u8]], 12_600, false, &mut out);
        let scrs: Vec<u64> = packets(&out)
            .iter()
            .filter(|p| p.0 == 0xBA)
            .map(|p| read_scr(p.1))
            .collect();
        assert_eq!(scrs, vec![9_000, 9_000, 12_600]);
        // The audio PES still says when to play it.
        let audio = packets(&out).into_iter().find(|p| p.0 == 0xC0).unwrap().1;
        assert_eq!(read_ts(&audio[9..14]), 7_200);
    }

    #[test]
    fn non_keyframe_has_no_psm() {
        let mut out = BytesMut::new();
        PsMuxer::new().write_video(&[[0x41u8, 1]], 3600, false, &mut out);
        let ids: Vec<u8> = packets(&out).iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![0xBA, 0xE0]);
    }

    #[test]
    fn big_frame_splits_across_pes_with_pts_on_first_only() {
        let big = vec![0xAAu8; 150_000];
        let nals = [vec![0x65u8], big];
        let mut out = BytesMut::new();
        PsMuxer::new().write_video(&nals, 90_000, true, &mut out);
        let pk = packets(&out);
        let pes: Vec<&[u8]> = pk.iter().filter(|p| p.0 == 0xE0).map(|p| p.1).collect();
        assert_eq!(pes.len(), 3);
        let mut joined = Vec::new();
        for (i, p) in pes.iter().enumerate() {
            let hdr = usize::from(p[8]);
            assert_eq!(hdr, if i == 0 { 5 } else { 0 });
            let payload = &p[9 + hdr..];
            assert!(payload.len() <= MAX_PES_PAYLOAD);
            joined.extend_from_slice(payload);
        }
        assert_eq!(joined.len(), 4 + 1 + 4 + 150_000);
        assert_eq!(&joined[..9], &[0, 0, 0, 1, 0x65, 0, 0, 0, 1]);
        assert!(joined[9..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn start_code_split_across_pes_boundary() {
        // First NAL fills the first PES but for two bytes, so the second
        // start code straddles the boundary.
        let a = vec![0x65u8; MAX_PES_PAYLOAD - 4 - 2];
        let nals = [a, vec![0x41, 7]];
        let mut out = BytesMut::new();
        PsMuxer::new().write_video(&nals, 0, false, &mut out);
        let pk = packets(&out);
        let pes: Vec<&[u8]> = pk.iter().filter(|p| p.0 == 0xE0).map(|p| p.1).collect();
        assert_eq!(pes.len(), 2);
        assert_eq!(&pes[0][pes[0].len() - 2..], &[0, 0]);
        assert_eq!(&pes[1][9..], &[0, 1, 0x41, 7]);
    }

    #[test]
    fn nal_spanning_several_slices_gets_one_start_code() {
        let mut nal = Chunks::new();
        nal.push(Bytes::from_static(&[0x65, 1]));
        nal.push(Bytes::from_static(&[2, 3]));
        let mut units = SmallVec::new();
        units.push(Chunks::from(Bytes::from_static(&[0x67, 9])));
        units.push(nal);
        let frame = Frame {
            codec: Codec::H264,
            pts: 0,
            dts: 0,
            keyframe: true,
            units,
        };
        let mut out = BytesMut::new();
        PsMuxer::new().write_frame(&frame, None, &mut out).unwrap();
        let pes = packets(&out).into_iter().find(|p| p.0 == 0xE0).unwrap().1;
        assert_eq!(
            &pes[14..],
            &[0, 0, 0, 1, 0x67, 9, 0, 0, 0, 1, 0x65, 1, 2, 3]
        );
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        let mut out = BytesMut::new();
        PsMuxer::new().write_video(&[[0x41u8]], (1 << 33) + 5, false, &mut out);
        assert_eq!(read_scr(&out), 5);
        assert_eq!(read_ts(&out[14 + 9..]), 5);
    }

    #[test]
    fn audio_is_announced_and_written() {
        let mut mux = PsMuxer::new().with_audio();
        let mut out = BytesMut::new();
        mux.write_video(&[[0x65u8]], 0, true, &mut out);
        mux.write_audio(&[0xD5; 160], 0, &mut out);
        let pk = packets(&out);
        let ids: Vec<u8> = pk.iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![0xBA, 0xBB, 0xBC, 0xE0, 0xBA, 0xC0]);
        let sys = pk[1].1;
        assert_eq!(sys[9] >> 2, 1, "audio_bound");
        let psm = pk[2].1;
        assert_eq!(&psm[16..18], &[STREAM_TYPE_G711A, STREAM_ID_AUDIO]);
        assert_eq!(crc32_mpeg2(psm), 0);
        let audio = pk[5].1;
        assert_eq!(audio[7], 0x80);
        assert_eq!(audio.len(), 9 + 5 + 160);
    }

    #[test]
    fn codecs_map_to_their_stream_types() {
        for (video, audio, types) in [
            (Some(Codec::H265), Some(Codec::Pcmu), vec![0x24, 0x91]),
            (Some(Codec::H264), Some(Codec::Aac), vec![0x1B, 0x0F]),
            (None, Some(Codec::Pcma), vec![0x90]),
        ] {
            let mut mux = PsMuxer::for_codecs(video, audio).unwrap();
            let mut out = BytesMut::new();
            if video.is_some() {
                mux.write_video(&[[0x26u8, 1]], 0, true, &mut out);
            } else {
                mux.write_audio(&[0xD5; 160], 0, &mut out);
            }
            let psm = packets(&out).into_iter().find(|p| p.0 == 0xBC).unwrap().1;
            let got: Vec<u8> = psm[12..psm.len() - 4].chunks(4).map(|e| e[0]).collect();
            assert_eq!(got, types);
        }
        assert_eq!(
            PsMuxer::for_codecs(Some(Codec::Mjpeg), None).unwrap_err(),
            PsMuxError::UnsupportedCodec(Codec::Mjpeg)
        );
        assert_eq!(
            PsMuxer::for_codecs(Some(Codec::Pcma), None).unwrap_err(),
            PsMuxError::UnsupportedCodec(Codec::Pcma)
        );
    }

    #[test]
    fn audio_only_stream_repeats_psm_each_second() {
        let mut mux = PsMuxer::for_codecs(None, Some(Codec::Pcma)).unwrap();
        let mut out = BytesMut::new();
        for i in 0..60u64 {
            // 20 ms frames for 1.2 s.
            mux.write_audio(&[0xD5; 160], i * 1_800, &mut out);
        }
        let psms = packets(&out).iter().filter(|p| p.0 == 0xBC).count();
        assert_eq!(psms, 2);
    }

    #[test]
    fn raw_aac_gets_an_adts_header_from_its_config() {
        // AAC-LC (2), 44.1 kHz (index 4), stereo.
        let params = AudioParams {
            sample_rate: 44_100,
            channels: 2,
            config: Some(Bytes::from_static(&[0x12, 0x10])),
        };
        let mut units = SmallVec::new();
        units.push(Chunks::from(Bytes::from(vec![0x21u8; 100])));
        let frame = Frame {
            codec: Codec::Aac,
            pts: 44_100,
            dts: 44_100,
            keyframe: true,
            units,
        };
        let mut mux = PsMuxer::for_codecs(Some(Codec::H264), Some(Codec::Aac)).unwrap();
        let mut out = BytesMut::new();
        mux.write_frame(&frame, Some(&params), &mut out).unwrap();
        let pes = packets(&out).into_iter().find(|p| p.0 == 0xC0).unwrap().1;
        // 1 s at 44.1 kHz is 90 000 ticks.
        assert_eq!(read_ts(&pes[9..14]), 90_000);
        let adts = &pes[14..21];
        assert_eq!(adts, &[0xFF, 0xF1, 0x50, 0x80, 0x0D, 0x7F, 0xFC]);
        assert_eq!(pes.len() - 14, 107);
        // Without a config there is nothing to build the header from.
        let err = mux.write_frame(&frame, None, &mut out).unwrap_err();
        assert_eq!(err, PsMuxError::MissingAacConfig);
    }

    #[test]
    fn mismatched_codec_is_refused() {
        let mut units = SmallVec::new();
        units.push(Chunks::from(Bytes::from_static(&[0x26, 1])));
        let frame = Frame {
            codec: Codec::H265,
            pts: 0,
            dts: 0,
            keyframe: true,
            units,
        };
        let mut out = BytesMut::new();
        let err = PsMuxer::new().write_frame(&frame, None, &mut out);
        assert_eq!(err, Err(PsMuxError::CodecMismatch(Codec::H265)));
        assert!(out.is_empty());
    }

    /// A small deterministic generator (xorshift64*) for the property test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// NAL units of an Annex B stream, cut at start codes.
    fn annexb_nals(stream: &'static [u8]) -> Vec<Bytes> {
        let whole = Bytes::from_static(stream);
        let mut starts = Vec::new();
        let mut i = 0;
        while i + 3 <= stream.len() {
            if stream[i..i + 3] == [0, 0, 1] {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        let mut nals = Vec::new();
        for (k, &s) in starts.iter().enumerate() {
            let mut e = starts.get(k + 1).map_or(stream.len(), |&n| n - 3);
            while e > s && stream[e - 1] == 0 {
                e -= 1;
            }
            nals.push(whole.slice(s..e));
        }
        nals
    }

    /// The first IDR access unit's parameter sets and one non-IDR slice of
    /// the demo clips, as building blocks for random streams.
    fn blocks(h265: bool) -> (Vec<Bytes>, Bytes) {
        let nals = if h265 {
            annexb_nals(include_bytes!("../../assets/demo.h265"))
        } else {
            annexb_nals(include_bytes!("../../assets/demo.h264"))
        };
        let ty = |n: &Bytes| {
            if h265 {
                (n[0] >> 1) & 0x3F
            } else {
                n[0] & 0x1F
            }
        };
        let params: Vec<Bytes> = nals
            .iter()
            .filter(|n| {
                if h265 {
                    matches!(ty(n), 32..=34)
                } else {
                    matches!(ty(n), 7 | 8)
                }
            })
            .take(if h265 { 3 } else { 2 })
            .cloned()
            .collect();
        let slice = nals.iter().find(|n| ty(n) == 1).cloned().unwrap();
        (params, slice)
    }

    /// A NAL unit of `len` bytes with header `head` and a body free of
    /// start-code emulation (no zero bytes), so Annex B framing is exact.
    fn synthetic_nal(rng: &mut Rng, head: &[u8], len: usize) -> Bytes {
        let mut v = head.to_vec();
        while v.len() < len.max(head.len() + 1) {
            v.push(1 + rng.below(255) as u8);
        }
        Bytes::from(v)
    }

    #[test]
    fn round_trip_through_our_demuxer_keeps_every_frame() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let h265 = rng.below(2) == 1;
            let audio = [None, Some(Codec::Pcma), Some(Codec::Pcmu), Some(Codec::Aac)]
                [rng.below(4) as usize];
            let video = if h265 { Codec::H265 } else { Codec::H264 };
            let (params, slice) = blocks(h265);
            // Slice headers open with first_mb_in_slice = 0 (H.264) or
            // first_slice_segment_in_pic_flag = 1 (H.265): each frame is
            // one whole picture, as the demuxer's boundary detection reads.
            let (idr_head, p_head): (&[u8], &[u8]) = if h265 {
                (&[0x26, 0x01, 0xAF], &[0x02, 0x01, 0xD0])
            } else {
                (&[0x65, 0x88], &[0x41, 0x9A])
            };
            let aac = AudioParams {
                sample_rate: 8_000,
                channels: 1,
                config: Some(Bytes::from_static(&[0x15, 0x88])),
            };
            let mut mux = PsMuxer::for_codecs(Some(video), audio).unwrap();
            // Start anywhere, including just before the 33-bit wrap.
            let base = if rng.below(3) == 0 {
                (1i64 << 33) - 3_600 * 5
            } else {
                rng.below(1 << 32) as i64
            };
            let mut ps = BytesMut::new();
            let mut sent: Vec<(Codec, i64, Vec<Vec<u8>>)> = Vec::new();
            let frames = 5 + rng.below(20);
            for f in 0..frames as i64 {
                let key = f == 0 || rng.below(8) == 0;
                let mut units: SmallVec<[Chunks; 4]> = SmallVec::new();
                if key {
                    for p in &params {
                        units.push(Chunks::from(p.clone()));
                    }
                }
                // Large frames cross PES boundaries; split NALs into
                // several slices to exercise multi-part units.
                let len = match rng.below(6) {
                    0 => 70_000 + rng.below(80_000) as usize,
                    1 => slice.len(),
                    _ => 10 + rng.below(3_000) as usize,
                };
                let nal = if len == slice.len() && !key {
                    slice.clone()
                } else {
                    synthetic_nal(&mut rng, if key { idr_head } else { p_head }, len)
                };
                let mut chunks = Chunks::new();
                let mut at = 0;
                while at < nal.len() {
                    let end = (at + 1 + rng.below(20_000) as usize).min(nal.len());
                    chunks.push(nal.slice(at..end));
                    at = end;
                }
                units.push(chunks);
                let pts = base + f * 3_600;
                let frame = Frame {
                    codec: video,
                    pts,
                    dts: pts,
                    keyframe: key,
                    units,
                };
                sent.push((video, pts, frame.units.iter().map(Chunks::to_vec).collect()));
                mux.write_frame(&frame, None, &mut ps).unwrap();
                if let Some(codec) = audio {
                    let (payload, ts) = match codec {
                        Codec::Aac => (synthetic_nal(&mut rng, &[0x21], 50), 320),
                        _ => (synthetic_nal(&mut rng, &[0xD5], 320), 320),
                    };
                    let mut units = SmallVec::new();
                    units.push(Chunks::from(payload.clone()));
                    let apts = (base + f * 3_600) * 8 / 90 + ts;
                    let frame = Frame {
                        codec,
                        pts: apts,
                        dts: apts,
                        keyframe: true,
                        units,
                    };
                    mux.write_frame(&frame, Some(&aac), &mut ps).unwrap();
                    sent.push((codec, apts, vec![payload.to_vec()]));
                }
            }
            // Feed the demuxer in random pieces.
            let ps = ps.freeze();
            let mut demux = PsDemuxer::new();
            let mut events = Vec::new();
            let mut at = 0;
            while at < ps.len() {
                let end = (at + 1 + rng.below(3_000) as usize).min(ps.len());
                demux.push(ps.slice(at..end), &mut events);
                at = end;
            }
            demux.flush(&mut events);
            assert_eq!(demux.stats().total_errors(), 0, "seed {seed}");
            let mut got: Vec<(Codec, i64, Vec<Vec<u8>>)> = events
                .into_iter()
                .filter_map(|e| match e {
                    PsEvent::Frame(f) => {
                        Some((f.codec, f.pts, f.units.iter().map(Chunks::to_vec).collect()))
                    }
                    _ => None,
                })
                .collect();
            // ADTS headers were added by the muxer; compare raw payloads.
            for g in &mut got {
                if g.0 == Codec::Aac {
                    g.2[0].drain(..ADTS_HEADER_LEN);
                }
            }
            let key = |x: &(Codec, i64, Vec<Vec<u8>>)| (x.0.kind() == MediaKind::Audio, x.1);
            let mut want = sent;
            want.sort_by_key(key);
            got.sort_by_key(key);
            assert_eq!(got.len(), want.len(), "seed {seed}: frame count");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.0, "seed {seed}");
                let mask = (1i64 << 33) - 1;
                assert_eq!(g.1 & mask, w.1 & mask, "seed {seed}: pts");
                assert_eq!(g.2, w.2, "seed {seed}: payload of frame at {}", w.1);
            }
        }
    }
}
