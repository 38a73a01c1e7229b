//! A minimal MPEG-2 program stream muxer (ISO/IEC 13818-1), as GB/T
//! 28181-2016 Annex C asks devices to send over RTP.
//!
//! Per video access unit it writes:
//! - a pack header (§2.5.3.3) whose SCR is the frame's PTS: the simulated
//!   camera sends each frame the moment it is "captured", so arrival and
//!   presentation time coincide;
//! - on keyframes, a system header (§2.5.3.5) and a program stream map
//!   (§2.5.4) naming H.264 (stream_type 0x1B, Table 2-34) on stream id 0xE0,
//!   and G.711 A-law (0x90, the GB28181 Annex C value) on 0xC0 when audio is
//!   enabled — receivers need the PSM to tell the codec, and a keyframe is
//!   where they can start;
//! - the access unit as one or more video PES packets (§2.4.3.6) carrying
//!   PTS and DTS (equal: the clip has no B-frames), with an Annex B start
//!   code before every NAL unit. A PES holds at most
//!   [`MAX_PES_PAYLOAD`] bytes because PES_packet_length is 16 bits; a bigger
//!   frame continues in further PES packets without timestamps.
//!
//! Sans-IO: callers hand in NAL units and a 90 kHz timestamp and get bytes
//! appended to a `BytesMut`.

use bytes::{BufMut, BytesMut};

/// Video elementary stream id (first MPEG video stream, Table 2-18).
pub const STREAM_ID_VIDEO: u8 = 0xE0;
/// Audio elementary stream id (first MPEG audio stream, Table 2-18).
pub const STREAM_ID_AUDIO: u8 = 0xC0;
/// stream_type of H.264 (ISO/IEC 13818-1 Table 2-34).
pub const STREAM_TYPE_H264: u8 = 0x1B;
/// stream_type GB/T 28181-2016 Annex C assigns to G.711 A-law.
pub const STREAM_TYPE_G711A: u8 = 0x90;
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

/// Writes a program stream one access unit at a time.
#[derive(Clone, Debug)]
pub struct PsMuxer {
    mux_rate: u32,
    audio: bool,
    video_type: u8,
    audio_type: u8,
}

impl Default for PsMuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl PsMuxer {
    /// A video-only (H.264) muxer.
    pub fn new() -> Self {
        Self {
            mux_rate: DEFAULT_MUX_RATE,
            audio: false,
            video_type: STREAM_TYPE_H264,
            audio_type: STREAM_TYPE_G711A,
        }
    }

    /// Also announce a G.711 A-law stream in the system header and PSM, so
    /// [`PsMuxer::write_audio`] frames are identifiable.
    pub fn with_audio(mut self) -> Self {
        self.audio = true;
        self
    }

    /// Announce an AAC (ADTS) stream instead of G.711: frames given to
    /// [`PsMuxer::write_audio`] are then whole ADTS frames.
    pub fn with_aac(mut self) -> Self {
        self.audio = true;
        self.audio_type = STREAM_TYPE_AAC;
        self
    }

    /// Announce the video as H.265 (stream_type 0x24) instead of H.264.
    pub fn with_h265(mut self) -> Self {
        self.video_type = STREAM_TYPE_H265;
        self
    }

    /// Set program_mux_rate from a bit rate (clamped to the 22-bit field).
    pub fn with_bitrate(mut self, bits_per_second: u64) -> Self {
        let units = (bits_per_second / 8 / 50).clamp(1, (1 << 22) - 1);
        self.mux_rate = u32::try_from(units).unwrap_or(DEFAULT_MUX_RATE);
        self
    }

    /// Append one H.264 access unit. `nals` are NAL units without start
    /// codes; `pts` is in 90 kHz units (taken modulo 2^33).
    pub fn write_video<N: AsRef<[u8]>>(
        &self,
        nals: &[N],
        pts: u64,
        keyframe: bool,
        out: &mut BytesMut,
    ) {
        let pts = pts & TS_MASK;
        self.write_pack_header(pts, out);
        if keyframe {
            self.write_system_header(out);
            self.write_psm(out);
        }
        let total: usize = nals
            .iter()
            .map(|n| START_CODE.len() + n.as_ref().len())
            .sum();
        let mut cursor = PayloadCursor::new(nals);
        let mut remaining = total;
        let mut first = true;
        while remaining > 0 {
            let chunk = remaining.min(MAX_PES_PAYLOAD);
            write_pes_header(STREAM_ID_VIDEO, chunk, first.then_some(pts), true, out);
            cursor.copy_to(chunk, out);
            remaining -= chunk;
            first = false;
        }
    }

    /// Append one G.711 A-law frame as an audio PES with a PTS. Only
    /// meaningful on a muxer built [`PsMuxer::with_audio`]; frames over
    /// [`MAX_PES_PAYLOAD`] are truncated (G.711 frames are a few hundred
    /// bytes).
    pub fn write_audio(&self, frame: &[u8], pts: u64, out: &mut BytesMut) {
        let pts = pts & TS_MASK;
        let frame = &frame[..frame.len().min(MAX_PES_PAYLOAD)];
        self.write_pack_header(pts, out);
        write_pes_header(STREAM_ID_AUDIO, frame.len(), Some(pts), false, out);
        out.put_slice(frame);
    }

    /// Pack header, §2.5.3.3: '01', SCR base/extension with markers,
    /// program_mux_rate, no stuffing.
    fn write_pack_header(&self, scr: u64, out: &mut BytesMut) {
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

    /// System header, §2.5.3.5: bounds, then one P-STD buffer entry per
    /// stream.
    fn write_system_header(&self, out: &mut BytesMut) {
        let streams: &[(u8, u8, u16)] = if self.audio {
            // (stream_id, buffer_bound_scale, buffer_size_bound)
            &[(STREAM_ID_VIDEO, 1, 232), (STREAM_ID_AUDIO, 0, 32)]
        } else {
            &[(STREAM_ID_VIDEO, 1, 232)]
        };
        let header_length = 6 + 3 * streams.len() as u16;
        out.put_slice(&[0, 0, 1, 0xBB]);
        out.put_u16(header_length);
        let rate = self.mux_rate;
        out.put_u8(0x80 | (rate >> 15) as u8);
        out.put_u8((rate >> 7) as u8);
        out.put_u8(((rate << 1) & 0xFE) as u8 | 0x01);
        // audio_bound (6), fixed_flag 0, CSPS_flag 0.
        out.put_u8(u8::from(self.audio) << 2);
        // system_audio_lock, system_video_lock, marker, video_bound = 1.
        out.put_u8(0xE1);
        // packet_rate_restriction_flag 0, reserved '1111111'.
        out.put_u8(0x7F);
        for &(id, scale, size) in streams {
            out.put_u8(id);
            out.put_u8(0xC0 | (scale << 5) | ((size >> 8) & 0x1F) as u8);
            out.put_u8(size as u8);
        }
    }

    /// Program stream map, §2.5.4.1, closed by its CRC_32 (Annex A).
    fn write_psm(&self, out: &mut BytesMut) {
        let all = [
            (self.video_type, STREAM_ID_VIDEO),
            (self.audio_type, STREAM_ID_AUDIO),
        ];
        let entries: &[(u8, u8)] = if self.audio { &all } else { &all[..1] };
        let es_map_length = 4 * entries.len() as u16;
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
        for &(stream_type, id) in entries {
            out.put_u8(stream_type);
            out.put_u8(id);
            out.put_u16(0); // elementary_stream_info_length
        }
        let crc = crc32_mpeg2(&out[start..]);
        out.put_u32(crc);
    }
}

/// PES header, §2.4.3.6, for a payload of `payload_len` bytes (at most
/// [`MAX_PES_PAYLOAD`]). With `pts`, writes PTS and, for video, DTS = PTS.
fn write_pes_header(
    stream_id: u8,
    payload_len: usize,
    pts: Option<u64>,
    with_dts: bool,
    out: &mut BytesMut,
) {
    let (flags, header_data_length) = match (pts, with_dts) {
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
    out.put_u8(if pts.is_some() { 0x85 } else { 0x81 });
    out.put_u8(flags);
    out.put_u8(header_data_length);
    if let Some(pts) = pts {
        let prefix = if with_dts { 0x3 } else { 0x2 };
        write_timestamp(prefix, pts, out);
        if with_dts {
            write_timestamp(0x1, pts, out);
        }
    }
}

/// A 33-bit PTS/DTS in the 5-byte marker-bit layout of §2.4.3.7.
fn write_timestamp(prefix: u8, ts: u64, out: &mut BytesMut) {
    out.put_u8((prefix << 4) | (((ts >> 30) & 0x07) << 1) as u8 | 0x01);
    out.put_u16((((ts >> 15) & 0x7FFF) << 1) as u16 | 0x01);
    out.put_u16(((ts & 0x7FFF) << 1) as u16 | 0x01);
}

/// Walks "start code, NAL, start code, NAL, ..." without gathering it.
struct PayloadCursor<'a, N> {
    nals: &'a [N],
    index: usize,
    /// Offset into the current piece: `0..4` is the start code, then the NAL.
    offset: usize,
}

impl<'a, N: AsRef<[u8]>> PayloadCursor<'a, N> {
    fn new(nals: &'a [N]) -> Self {
        Self {
            nals,
            index: 0,
            offset: 0,
        }
    }

    /// Copy the next `n` bytes of the virtual payload (fewer at its end).
    fn copy_to(&mut self, mut n: usize, out: &mut BytesMut) {
        while n > 0 {
            let Some(nal) = self.nals.get(self.index) else {
                return;
            };
            let nal = nal.as_ref();
            let piece_len = START_CODE.len() + nal.len();
            if self.offset < START_CODE.len() {
                let take = (START_CODE.len() - self.offset).min(n);
                out.put_slice(&START_CODE[self.offset..self.offset + take]);
                self.offset += take;
                n -= take;
            } else {
                let from = self.offset - START_CODE.len();
                let take = (nal.len() - from).min(n);
                out.put_slice(&nal[from..from + take]);
                self.offset += take;
                n -= take;
            }
            if self.offset >= piece_len {
                self.index += 1;
                self.offset = 0;
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
    use super::*;

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
        let mux = PsMuxer::new();
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
        // PSM: one entry, H.264 on 0xE0, CRC over the whole map checks out
        // (an MPEG-2 CRC run over data + its CRC leaves zero).
        let psm = pk[2].1;
        assert_eq!(&psm[12..14], &[STREAM_TYPE_H264, STREAM_ID_VIDEO]);
        assert_eq!(crc32_mpeg2(psm), 0);
        // PES: PTS and DTS both equal to pts, payload Annex B.
        let pes = pk[3].1;
        assert_eq!(pes[7], 0xC0);
        assert_eq!(pes[8], 10);
        assert_eq!(pes[9] >> 4, 0x3);
        assert_eq!(pes[14] >> 4, 0x1);
        assert_eq!(read_ts(&pes[9..14]), pts);
        assert_eq!(read_ts(&pes[14..19]), pts);
        assert_eq!(
            &pes[19..],
            &[0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 0, 1, 0x65, 9, 9]
        );
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
            assert_eq!(hdr, if i == 0 { 10 } else { 0 });
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
    fn timestamps_wrap_at_33_bits() {
        let mut out = BytesMut::new();
        PsMuxer::new().write_video(&[[0x41u8]], (1 << 33) + 5, false, &mut out);
        assert_eq!(read_scr(&out), 5);
        assert_eq!(read_ts(&out[14 + 9..]), 5);
    }

    #[test]
    fn audio_is_announced_and_written() {
        let mux = PsMuxer::new().with_audio();
        let mut out = BytesMut::new();
        mux.write_video(&[[0x65u8]], 0, true, &mut out);
        mux.write_audio(&[0xD5; 160], 0, &mut out);
        let pk = packets(&out);
        let ids: Vec<u8> = pk.iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![0xBA, 0xBB, 0xBC, 0xE0, 0xBA, 0xC0]);
        let psm = pk[2].1;
        assert_eq!(&psm[16..18], &[STREAM_TYPE_G711A, STREAM_ID_AUDIO]);
        assert_eq!(crc32_mpeg2(psm), 0);
        let audio = pk[5].1;
        assert_eq!(audio[7], 0x80);
        assert_eq!(audio.len(), 9 + 5 + 160);
    }
}
