//! A program stream file replayed by the simulated camera
//! (`sim-camera --ps-file`), for the quirk corpus (`tests/quirks/`):
//! the bytes go out exactly as in the file, quirks and all, cut at pack
//! headers and paced by the PTS found in each piece. Sans-IO: the file is
//! split once here; the driver only sleeps and sends.

use std::sync::Arc;

use bytes::Bytes;

use super::replay::ReplaySource;
use super::rtp::{PAYLOAD_TYPE_PS, RtpPacketizer};

/// One piece to send: the bytes from a pack header to the next (the first
/// piece also holds whatever precedes the first pack header), and the
/// first pacing timestamp in it.
#[derive(Debug, Clone)]
pub struct Piece {
    pub data: Bytes,
    pub pts: Option<u64>,
}

/// The file cut into pieces.
#[derive(Debug, Clone, Default)]
pub struct PsFile {
    pub pieces: Vec<Piece>,
}

const TS_MASK: u64 = (1 << 33) - 1;
/// One frame at 25 fps, used for a jump (device restart, wrap glitch).
pub const JUMP_TICKS: u64 = 3600;

impl PsFile {
    /// Cut `data` at every `00 00 01 BA`. Video PTS pace the pieces; a
    /// file with no video PTS (audio only) is paced by its audio PTS.
    pub fn new(data: Bytes) -> Self {
        let mut cuts: Vec<usize> = memchr::memmem::find_iter(&data, &[0, 0, 1, 0xba]).collect();
        // Bytes before the first pack header go out with it.
        match cuts.first_mut() {
            Some(first) => *first = 0,
            None => cuts.push(0),
        }
        cuts.push(data.len());
        let has_video = first_pts(&data, 0xe0..=0xef).is_some();
        let pieces = cuts
            .windows(2)
            .filter(|w| w[1] > w[0])
            .map(|w| {
                let data = data.slice(w[0]..w[1]);
                let pts = if has_video {
                    first_pts(&data, 0xe0..=0xef)
                } else {
                    first_pts(&data, 0xc0..=0xdf)
                };
                Piece { data, pts }
            })
            .collect();
        Self { pieces }
    }

    /// 90 kHz ticks to advance from one pacing timestamp to the next: the
    /// forward step modulo 2^33 (so a wrap is a small step), nothing for a
    /// small step back (audio interleaved before video), one frame for a
    /// jump either way.
    pub fn step(prev: u64, next: u64) -> u64 {
        let delta = next.wrapping_sub(prev) & TS_MASK;
        if delta <= 90_000 {
            delta
        } else if delta >= TS_MASK + 1 - 90_000 {
            0
        } else {
            JUMP_TICKS
        }
    }
}

/// A [`PsFile`] as a call's stream: pieces paced by their PTS, packetized
/// with the call's SSRC, RTP timestamps following the media time sent, and
/// no marker bits (a piece may end inside a frame).
pub(crate) struct PsFileReplay {
    file: Arc<PsFile>,
    rtp: RtpPacketizer,
    /// The last pacing timestamp seen in this lap.
    prev: Option<u64>,
}

impl PsFileReplay {
    pub(crate) fn new(file: Arc<PsFile>, ssrc: u32) -> Self {
        Self {
            file,
            rtp: RtpPacketizer::new(ssrc, PAYLOAD_TYPE_PS, rand::random()),
            prev: None,
        }
    }
}

impl ReplaySource for PsFileReplay {
    fn items(&self) -> usize {
        self.file.pieces.len()
    }

    fn advance(&mut self, i: usize) -> u64 {
        if i == 0 {
            self.prev = None;
        }
        let Some(p) = self.file.pieces.get(i).and_then(|piece| piece.pts) else {
            return 0;
        };
        let step = self.prev.map_or(0, |q| PsFile::step(q, p));
        self.prev = Some(p);
        step
    }

    fn lap_gap(&self) -> u64 {
        JUMP_TICKS
    }

    fn packets(&mut self, i: usize, _lap: u64, ticks: u64, out: &mut Vec<Bytes>) {
        if let Some(piece) = self.file.pieces.get(i) {
            out.extend(self.rtp.packetize_marked(&piece.data, ticks as u32, false));
        }
    }
}

/// The PTS of the first MPEG-2 PES with one among `ids`.
fn first_pts(data: &[u8], ids: std::ops::RangeInclusive<u8>) -> Option<u64> {
    memchr::memmem::find_iter(data, &[0, 0, 1]).find_map(|at| {
        let h = data.get(at..at + 14)?;
        if !ids.contains(&h[3]) || h[6] >> 6 != 0b10 || h[7] & 0x80 == 0 {
            return None;
        }
        let t = &h[9..14];
        Some(
            (u64::from((t[0] >> 1) & 7) << 30)
                | (u64::from(t[1]) << 22)
                | (u64::from(t[2] >> 1) << 15)
                | (u64::from(t[3]) << 7)
                | u64::from(t[4] >> 1),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_packs_and_reads_pts() {
        let pack = [0, 0, 1, 0xba, 0x44, 0, 4, 0, 4, 1, 1, 0x89, 0xc3, 0xf8];
        // PTS 3600 in the 5-byte layout.
        let pes = [
            0, 0, 1, 0xe0, 0, 9, 0x80, 0x80, 5, 0x21, 0, 1, 0x1c, 0x21, 0xaa,
        ];
        let mut data = vec![7, 7, 7];
        data.extend_from_slice(&pack);
        data.extend_from_slice(&pes);
        data.extend_from_slice(&pack);
        let f = PsFile::new(Bytes::from(data));
        assert_eq!(f.pieces.len(), 2);
        assert_eq!(f.pieces[0].data.len(), 3 + 14 + 15);
        assert_eq!(f.pieces[0].pts, Some(3600));
        assert_eq!(f.pieces[1].pts, None);
        assert_eq!(PsFile::step(3600, 7200), 3600);
        assert_eq!(PsFile::step(TS_MASK - 1799, 1800), 3600, "wrap");
        assert_eq!(PsFile::step(7200, 5400), 0, "small step back");
        assert_eq!(PsFile::step(0, 90_000 * 40), JUMP_TICKS, "restart");
    }
}
