//! A per-camera tag inside the video itself, so a test watching many
//! streams can tell by content which camera each frame came from: an SEI
//! NAL unit carrying `user_data_unregistered` (H.264 §7.3.2.3.1 and
//! D.1.6; H.265 §7.3.2.4 prefix SEI and D.2.7) with a fixed UUID and the
//! camera's text (its device id).
//!
//! Decoders ignore unregistered user data, and every hop of the gateway
//! (PS demux, access-unit assembly, RTSP/WebRTC packetizers) carries SEI
//! units through untouched, so the tag arrives with each frame.

use bytes::Bytes;

/// Identifies camgate's marker among other unregistered user data.
pub const MARKER_UUID: [u8; 16] = *b"camgate-marker-1";

/// The longest text a marker carries (one-byte SEI payload size).
pub const MAX_MARKER_TEXT: usize = 255 - MARKER_UUID.len();

/// The SEI NAL unit tagging frames with `text` (truncated to
/// [`MAX_MARKER_TEXT`] bytes). The text must not contain `00 00` (device
/// ids are digits), which would need emulation prevention.
pub fn marker_sei(text: &str, h265: bool) -> Bytes {
    let text = text.as_bytes();
    let text = text.get(..MAX_MARKER_TEXT).unwrap_or(text);
    let mut nal = if h265 {
        // nal_unit_type 39 (PREFIX_SEI), layer 0, temporal id 1.
        vec![39 << 1, 1]
    } else {
        // nal_ref_idc 0, nal_unit_type 6.
        vec![6]
    };
    // payloadType 5 (user_data_unregistered), payloadSize, payload.
    nal.push(5);
    nal.push((MARKER_UUID.len() + text.len()) as u8);
    nal.extend_from_slice(&MARKER_UUID);
    nal.extend_from_slice(text);
    // rbsp_trailing_bits.
    nal.push(0x80);
    Bytes::from(nal)
}

/// The marker text of a NAL unit (header included), if it is one of ours.
pub fn parse_marker(nal: &[u8], h265: bool) -> Option<&str> {
    let body = if h265 {
        match nal {
            [h, _, rest @ ..] if (h >> 1) & 0x3f == 39 => rest,
            _ => return None,
        }
    } else {
        match nal {
            [h, rest @ ..] if h & 0x1f == 6 => rest,
            _ => return None,
        }
    };
    let [5, size, payload @ ..] = body else {
        return None;
    };
    let payload = payload.get(..usize::from(*size))?;
    let text = payload.strip_prefix(&MARKER_UUID[..])?;
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_codecs() {
        for h265 in [false, true] {
            let nal = marker_sei("34020000001320000042", h265);
            assert_eq!(parse_marker(&nal, h265), Some("34020000001320000042"));
            assert_eq!(parse_marker(&nal, !h265), None);
        }
        assert_eq!(parse_marker(&[0x65, 5, 3], false), None);
        assert_eq!(parse_marker(&[6, 5, 40, 1, 2], false), None);
        let long = "9".repeat(400);
        let nal = marker_sei(&long, false);
        assert_eq!(
            parse_marker(&nal, false).map(str::len),
            Some(MAX_MARKER_TEXT)
        );
    }

    #[test]
    fn is_parsed_as_sei_by_the_access_unit_rules() {
        let nal = marker_sei("x", false);
        assert_eq!(
            crate::media::h264::nal_type(nal[0]),
            crate::media::h264::NAL_SEI
        );
        // No start-code emulation inside.
        assert!(!nal.windows(3).any(|w| w == [0, 0, 1] || w == [0, 0, 0]));
    }
}
