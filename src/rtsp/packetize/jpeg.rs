//! JPEG over RTP, RFC 2435.
//!
//! Every packet starts with the 8-byte main JPEG header (§3.1): type-
//! specific 0, 24-bit fragment offset into the scan data, type, Q, and
//! width/height in 8-pixel blocks. The type comes from the sampling
//! factors — 0 for 4:2:2 (luma 2x1), 1 for 4:2:0 (luma 2x2), +64 with a
//! Restart Marker header (§3.1.7, §3.1.9) when the image has a restart
//! interval. Q is 255 (§3.1.8): the tables travel in-band in a
//! Quantization Table header (§3.1.8) in each frame's first packet, and may
//! change from frame to frame, which suits cameras that retune quality.
//! The marker bit is set on the last packet of a frame.
//!
//! The headers are the only bytes made per packet; the scan data goes out
//! as slices of the JPEG the camera sent. Images RFC 2435 cannot describe
//! (progressive, grayscale, odd sampling, wider than 2040 pixels) are
//! skipped and counted.

use bytes::{BufMut, Bytes, BytesMut};
use tracing::debug;

use super::Fragment;
use crate::media::frame::{Chunks, Frame};
use crate::media::jpeg::JpegHeader;
use crate::metrics::{self, label};

/// Q ≥ 128 means in-band tables; 255 means they may differ every frame.
const Q_DYNAMIC: u8 = 255;
/// §3.1.9: F and L set with count 0x3FFF — the packet is not aligned to
/// restart intervals, so the receiver must not assume it.
const RESTART_NOT_ALIGNED: u16 = 0xffff;
/// §3.1.4: offsets are 24 bits.
const MAX_SCAN: usize = 1 << 24;

/// Why a frame was not sent; label for `camgate_rtsp_errors{kind}`.
fn skip(reason: &'static str, detail: &dyn std::fmt::Display) {
    debug!(reason, %detail, "JPEG frame not sendable over RTP");
    metrics::get()
        .rtsp_errors
        .get_or_create(&label("kind", reason))
        .inc();
}

pub(super) fn packetize(frame: &Frame, mtu: usize, out: &mut Vec<Fragment>) {
    let Some(unit) = frame.units.iter().find(|u| !u.is_empty()) else {
        return;
    };
    // Free for a JPEG in one receive slice (the Foscam path); a JPEG that
    // straddles buffers is gathered once to read its header.
    let image = unit.to_bytes();
    let header = match JpegHeader::parse(&image) {
        Ok(h) => h,
        Err(e) => return skip("jpeg_header", &e),
    };
    let Some(rtp_type) = rfc2435_type(&header) else {
        return skip("jpeg_sampling", &format_args!("{:?}", header.components));
    };
    if header.width == 0 || header.height == 0 || header.width > 2040 || header.height > 2040 {
        return skip(
            "jpeg_size",
            &format_args!("{}x{}", header.width, header.height),
        );
    }
    if header.scan.len() >= MAX_SCAN {
        return skip(
            "jpeg_size",
            &format_args!("{} scan bytes", header.scan.len()),
        );
    }
    let restart = header.restart_interval != 0;
    let mut main = [0u8; 8];
    main[4] = rtp_type | if restart { 64 } else { 0 };
    main[5] = Q_DYNAMIC;
    main[6] = header.width.div_ceil(8) as u8;
    main[7] = header.height.div_ceil(8) as u8;

    let tables = quant_tables(&header, &image);
    let scan = unit.slice(header.scan.start, header.scan.end);
    let mut offset = 0usize;
    while offset < scan.len() || offset == 0 {
        let mut head = BytesMut::with_capacity(8 + 4 + 4 + tables.len());
        let off = (offset as u32).to_be_bytes();
        main[1..4].copy_from_slice(&off[1..4]);
        head.put_slice(&main);
        if restart {
            head.put_u16(header.restart_interval);
            head.put_u16(RESTART_NOT_ALIGNED);
        }
        if offset == 0 {
            head.put_slice(&tables);
        }
        // Header space is bounded (< 280 bytes) and mtu ≥ 16, so at least
        // one scan byte fits after the first packet; the first may carry
        // only headers when the mtu is tiny, which is still valid.
        let room = mtu.saturating_sub(head.len()).max(1);
        let end = (offset + room).min(scan.len());
        let mut payload = Chunks::new();
        payload.push(head.freeze());
        for part in scan.slice(offset, end).parts() {
            payload.push(part.clone());
        }
        let last = end >= scan.len();
        out.push(Fragment::new(&[], payload, last));
        if last {
            break;
        }
        offset = end;
    }
}

/// RFC 2435 §4.1: type 0 is 4:2:2 and type 1 is 4:2:0, both with three
/// components where only the first (luma) is subsampled.
fn rfc2435_type(h: &JpegHeader) -> Option<u8> {
    let [y, cb, cr] = h.components.as_slice() else {
        return None;
    };
    if (cb.h, cb.v, cr.h, cr.v) != (1, 1, 1, 1) {
        return None;
    }
    match (y.h, y.v) {
        (2, 1) => Some(0),
        (2, 2) => Some(1),
        _ => None,
    }
}

/// The Quantization Table header (§3.1.8): MBZ, precision bits, length,
/// then the luma table and the chroma table as stored in the DQT.
fn quant_tables(h: &JpegHeader, image: &Bytes) -> Vec<u8> {
    let mut precision = 0u8;
    let mut data = Vec::with_capacity(256);
    let selectors = [h.components[0].tq, h.components[1].tq];
    for (i, tq) in selectors.into_iter().enumerate() {
        // `JpegHeader::parse` checked every used selector has a table.
        if let Some((range, wide)) = &h.qtables[tq as usize]
            && let Some(table) = image.get(range.clone())
        {
            if *wide {
                precision |= 1 << i;
            }
            data.extend_from_slice(table);
        }
    }
    let mut out = Vec::with_capacity(4 + data.len());
    out.push(0);
    out.push(precision);
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::super::Packetizer;
    use crate::media::frame::{Codec, Frame};
    use crate::media::jpeg::JpegHeader;
    use bytes::Bytes;

    fn frame(jpeg: Vec<u8>) -> Frame {
        Frame {
            codec: Codec::Mjpeg,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: [Bytes::from(jpeg).into()].into_iter().collect(),
        }
    }

    /// A 4:2:0 JPEG of `w`x`h` with two distinct tables, a restart
    /// interval when asked, and `scan` bytes of pseudo-random scan data.
    fn jpeg(w: u16, h: u16, restart: u16, scan: usize) -> Vec<u8> {
        let mut j = vec![0xff, 0xd8];
        j.extend_from_slice(&[0xff, 0xdb, 0x00, 67, 0x00]);
        j.extend(1..=64u8);
        j.extend_from_slice(&[0xff, 0xdb, 0x00, 67, 0x01]);
        j.extend(101..=164u8);
        let (wb, hb) = (w.to_be_bytes(), h.to_be_bytes());
        j.extend_from_slice(&[
            0xff, 0xc0, 0x00, 17, 8, hb[0], hb[1], wb[0], wb[1], 3, 1, 0x22, 0, 2, 0x11, 1, 3,
            0x11, 1,
        ]);
        if restart > 0 {
            let r = restart.to_be_bytes();
            j.extend_from_slice(&[0xff, 0xdd, 0x00, 0x04, r[0], r[1]]);
        }
        j.extend_from_slice(&[0xff, 0xda, 0x00, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
        let mut x = 0x1234_5678u32;
        j.extend((0..scan).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }));
        j.extend_from_slice(&[0xff, 0xd9]);
        j
    }

    /// What a receiver does (RFC 2435 §3.1 and Appendix A in spirit):
    /// check each header, collect tables from the first packet, place each
    /// payload at its fragment offset.
    fn reassemble(packets: &[Vec<u8>], restart: bool) -> (u8, u8, u8, u8, Vec<u8>, Vec<u8>) {
        let mut scan = Vec::new();
        let mut tables = Vec::new();
        let mut first = None;
        for p in packets {
            let offset = u32::from_be_bytes([0, p[1], p[2], p[3]]) as usize;
            let (ty, q, w, h) = (p[4], p[5], p[6], p[7]);
            assert_eq!(first.get_or_insert((ty, q, w, h)), &(ty, q, w, h));
            let mut at = 8;
            if restart {
                assert!(ty >= 64);
                at += 4;
            }
            if offset == 0 && q >= 128 {
                assert_eq!(p[at], 0, "MBZ");
                let len = u16::from_be_bytes([p[at + 2], p[at + 3]]) as usize;
                tables = p[at + 4..at + 4 + len].to_vec();
                at += 4 + len;
            }
            assert_eq!(offset, scan.len(), "fragments in order, no gaps");
            scan.extend_from_slice(&p[at..]);
        }
        let (ty, q, w, h) = first.unwrap();
        (ty, q, w, h, tables, scan)
    }

    fn packets(image: &[u8], mtu: usize) -> (Vec<Vec<u8>>, Vec<bool>) {
        let mut out = Vec::new();
        Packetizer::Jpeg.packetize(&frame(image.to_vec()), mtu, &mut out);
        let bytes = out.iter().map(|f| f.payload.to_vec()).collect();
        let marks = out.iter().map(|f| f.marker).collect();
        (bytes, marks)
    }

    #[test]
    fn reassembles_to_the_original_scan_and_tables() {
        let image = jpeg(640, 360, 0, 5000);
        let (pk, marks) = packets(&image, 1400);
        assert!(pk.len() >= 4);
        assert!(pk.iter().all(|p| p.len() <= 1400));
        assert_eq!(marks.iter().filter(|m| **m).count(), 1);
        assert!(marks.last().unwrap());
        let (ty, q, w, h, tables, scan) = reassemble(&pk, false);
        assert_eq!((ty, q, w, h), (1, 255, 80, 45));
        let expected_tables: Vec<u8> = (1..=64u8).chain(101..=164u8).collect();
        assert_eq!(tables, expected_tables);
        let hdr = JpegHeader::parse(&image).unwrap();
        assert_eq!(scan, &image[hdr.scan]);
    }

    #[test]
    fn restart_interval_sets_type_64_and_header() {
        let image = jpeg(100, 50, 7, 3000);
        let (pk, _) = packets(&image, 1000);
        assert_eq!(pk[0][4], 65);
        assert_eq!((pk[0][6], pk[0][7]), (13, 7), "dimensions /8 rounded up");
        assert_eq!(&pk[1][8..12], &[0x00, 0x07, 0xff, 0xff]);
        let (.., scan) = reassemble(&pk, true);
        assert_eq!(scan.len(), 3000);
    }

    #[test]
    fn unsendable_images_produce_nothing() {
        let mut out = Vec::new();
        Packetizer::Jpeg.packetize(&frame(jpeg(4096, 64, 0, 10)), 1400, &mut out);
        Packetizer::Jpeg.packetize(&frame(b"not a jpeg".to_vec()), 1400, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn the_demo_clip_frame_round_trips() {
        let clip = include_bytes!("../../../assets/demo.mjpeg");
        let end = clip.windows(2).position(|w| w == [0xff, 0xd9]).unwrap() + 2;
        let image = &clip[..end];
        let (pk, _) = packets(image, 1400);
        let (ty, _, w, h, tables, scan) = reassemble(&pk, false);
        assert_eq!((ty, w, h), (1, 80, 45));
        // One DQT table shared by all components, sent for luma and chroma.
        assert_eq!(tables.len(), 128);
        assert_eq!(tables[..64], tables[64..]);
        assert_eq!(scan, &image[JpegHeader::parse(image).unwrap().scan]);
    }
}
