//! The SDP (RFC 8866) answered to DESCRIBE (RFC 2326 §10.2, Appendix C).
//!
//! Track 0 is video, track 1 audio; each has a relative `a=control`
//! (`trackID=N`) resolved against the `Content-Base` of the response, and
//! the session has `a=control:*` for aggregate control (Appendix C.1.1).
//! Codec parameters follow RFC 6184 §8.1 (H.264), RFC 7798 §7.1 (H.265) and
//! RFC 3551 §6 (G.711 static payload types) and RFC 3640 §4.1 (AAC).

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use bytes::Bytes;

use super::packetize::{Packetizer, aac};
use crate::media::frame::{Codec, MediaKind, StreamInfo};

/// Dynamic payload type for video (RFC 3551 §3).
pub const PT_VIDEO: u8 = 96;
/// Dynamic payload type for audio at a non-standard rate.
pub const PT_AUDIO_DYNAMIC: u8 = 97;
/// Static payload type of JPEG (RFC 3551 §6, RFC 2435).
pub const PT_JPEG: u8 = 26;

/// One media track offered in the SDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackDesc {
    /// `trackID=` of the control URL: 0 video, 1 audio.
    pub id: u8,
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub packetizer: Packetizer,
}

impl TrackDesc {
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }
}

/// The tracks the RTSP egress can offer for `info`: codecs without an RTP
/// payload format here are left out (and logged by the caller).
pub fn tracks(info: &StreamInfo) -> Vec<TrackDesc> {
    let mut out = Vec::new();
    if let Some((codec, _)) = &info.video
        && let Some(packetizer) = Packetizer::for_codec(*codec)
    {
        out.push(TrackDesc {
            id: 0,
            codec: *codec,
            // RFC 3551 §6: JPEG has the static payload type 26.
            payload_type: if *codec == Codec::Mjpeg {
                PT_JPEG
            } else {
                PT_VIDEO
            },
            clock_rate: 90_000,
            packetizer,
        });
    }
    if let Some((codec, params)) = &info.audio
        && let Some(packetizer) = Packetizer::for_codec(*codec)
    {
        let rate = if params.sample_rate == 0 {
            8_000
        } else {
            params.sample_rate
        };
        let payload_type = match (codec, rate) {
            (Codec::Pcmu, 8_000) => 0,
            (Codec::Pcma, 8_000) => 8,
            _ => PT_AUDIO_DYNAMIC,
        };
        out.push(TrackDesc {
            id: 1,
            codec: *codec,
            payload_type,
            clock_rate: rate,
            packetizer,
        });
    }
    out
}

/// Render the session description for `tracks` (from [`tracks`]).
///
/// `origin` is the server address for `o=`; `session_id` makes the `o=`
/// line unique per DESCRIBE.
pub fn render(
    info: &StreamInfo,
    tracks: &[TrackDesc],
    origin: IpAddr,
    session_id: u64,
    name: &str,
) -> String {
    render_with_range(info, tracks, origin, session_id, name, None)
}

/// [`render`] for a stream of known length: a recording of `duration`
/// seconds gets `a=range:npt=0-{duration}` (RFC 2326 §C.1.5; ffmpeg makes
/// it the format's duration, GStreamer and live555 the seekable span);
/// `None` is a live stream, `npt=0-`.
pub fn render_with_range(
    info: &StreamInfo,
    tracks: &[TrackDesc],
    origin: IpAddr,
    session_id: u64,
    name: &str,
    duration: Option<f64>,
) -> String {
    let ip_kind = if origin.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = String::with_capacity(512);
    // Writing into a String cannot fail; the results are ignored below.
    let _ = write!(
        s,
        "v=0\r\no=- {session_id} 1 IN {ip_kind} {origin}\r\ns={name}\r\nc=IN {ip_kind} {any}\r\nt=0 0\r\na=tool:camgate\r\na=control:*\r\n",
        any = if origin.is_ipv4() { "0.0.0.0" } else { "::" },
    );
    match duration {
        Some(d) => {
            let _ = write!(s, "a=range:npt=0-{d:.3}\r\n");
        }
        None => s.push_str("a=range:npt=0-\r\n"),
    }
    for t in tracks {
        match t.kind() {
            MediaKind::Video => {
                let _ = write!(s, "m=video 0 RTP/AVP {}\r\n", t.payload_type);
                let params = info.video.as_ref().map(|(_, p)| p);
                match t.codec {
                    Codec::Mjpeg => {
                        // Size and tables travel in every packet (RFC 2435
                        // §3.1); `a=framesize` helps players size windows.
                        let _ = write!(s, "a=rtpmap:{} JPEG/90000\r\n", t.payload_type);
                        if let Some(p) = params.filter(|p| p.width > 0 && p.height > 0) {
                            let _ = write!(
                                s,
                                "a=framesize:{} {}-{}\r\n",
                                t.payload_type, p.width, p.height
                            );
                        }
                    }
                    Codec::H265 => {
                        let _ = write!(s, "a=rtpmap:{} H265/90000\r\n", t.payload_type);
                        let sets: Vec<String> = params
                            .into_iter()
                            .flat_map(|p| {
                                [("vps", &p.vps), ("sps", &p.sps), ("pps", &p.pps)]
                                    .into_iter()
                                    .filter_map(|(n, v)| {
                                        v.as_ref().map(|b| format!("sprop-{n}={}", B64.encode(b)))
                                    })
                            })
                            .collect();
                        if !sets.is_empty() {
                            let _ = write!(s, "a=fmtp:{} {}\r\n", t.payload_type, sets.join(";"));
                        }
                    }
                    _ => {
                        let _ = write!(s, "a=rtpmap:{} H264/90000\r\n", t.payload_type);
                        let _ = write!(s, "a=fmtp:{} packetization-mode=1", t.payload_type);
                        if let Some(sps) = params.and_then(|p| p.sps.as_ref())
                            && sps.len() >= 4
                        {
                            let _ = write!(
                                s,
                                ";profile-level-id={:02X}{:02X}{:02X}",
                                sps[1], sps[2], sps[3]
                            );
                            let _ = write!(s, ";sprop-parameter-sets={}", B64.encode(sps));
                            if let Some(pps) = params.and_then(|p| p.pps.as_ref()) {
                                let _ = write!(s, ",{}", B64.encode(pps));
                            }
                        }
                        s.push_str("\r\n");
                    }
                }
                if let Some(p) = params.filter(|p| p.width > 0 && p.height > 0) {
                    // Informational; decoders take the size from the SPS.
                    let _ = write!(s, "a=x-dimensions:{},{}\r\n", p.width, p.height);
                }
            }
            MediaKind::Audio if t.codec == Codec::Aac => {
                let _ = write!(s, "m=audio 0 RTP/AVP {}\r\n", t.payload_type);
                let (channels, config) = info
                    .audio
                    .as_ref()
                    .map_or((1, None), |(_, a)| (a.channels.max(1), a.config.clone()));
                let config = config.unwrap_or_else(|| {
                    Bytes::copy_from_slice(&aac::default_config(t.clock_rate, channels))
                });
                let hex: String = config.iter().map(|b| format!("{b:02X}")).collect();
                let _ = write!(
                    s,
                    "a=rtpmap:{pt} mpeg4-generic/{rate}/{channels}\r\n\
                     a=fmtp:{pt} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config={hex}\r\n",
                    pt = t.payload_type,
                    rate = t.clock_rate,
                );
            }
            MediaKind::Audio if t.codec == Codec::Mpa => {
                // RFC 3555 registers MPA at 90 kHz; the stated clock is the
                // sample rate our frames are timed in (ffmpeg, GStreamer
                // and VLC take the rtpmap's clock).
                let _ = write!(
                    s,
                    "m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} MPA/{rate}\r\n",
                    pt = t.payload_type,
                    rate = t.clock_rate,
                );
            }
            MediaKind::Audio => {
                let _ = write!(s, "m=audio 0 RTP/AVP {}\r\n", t.payload_type);
                let name = if t.codec == Codec::Pcmu {
                    "PCMU"
                } else {
                    "PCMA"
                };
                let channels = info.audio.as_ref().map_or(1, |(_, a)| a.channels.max(1));
                let _ = write!(s, "a=rtpmap:{} {name}/{}", t.payload_type, t.clock_rate);
                if channels > 1 {
                    let _ = write!(s, "/{channels}");
                }
                s.push_str("\r\n");
            }
        }
        let _ = write!(s, "a=control:trackID={}\r\n", t.id);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{AudioParams, VideoParams};
    use bytes::Bytes;
    use std::net::Ipv4Addr;

    fn h264_info(audio: bool) -> StreamInfo {
        StreamInfo {
            audio_decided_by: None,
            video: Some((
                Codec::H264,
                VideoParams {
                    width: 640,
                    height: 360,
                    vps: None,
                    sps: Some(Bytes::from_static(&[0x67, 0x4d, 0x40, 0x1e, 0xab])),
                    pps: Some(Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80])),
                },
            )),
            audio: audio.then(|| {
                (
                    Codec::Pcma,
                    AudioParams {
                        sample_rate: 8000,
                        channels: 1,
                        config: None,
                    },
                )
            }),
        }
    }

    #[test]
    fn h264_with_pcma() {
        let info = h264_info(true);
        let t = tracks(&info);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].id, t[0].payload_type), (0, 96));
        assert_eq!((t[1].id, t[1].payload_type, t[1].clock_rate), (1, 8, 8000));
        let sdp = render(&info, &t, IpAddr::V4(Ipv4Addr::LOCALHOST), 42, "gb/a/b");
        let expected = "v=0\r\n\
            o=- 42 1 IN IP4 127.0.0.1\r\n\
            s=gb/a/b\r\n\
            c=IN IP4 0.0.0.0\r\n\
            t=0 0\r\n\
            a=tool:camgate\r\n\
            a=control:*\r\n\
            a=range:npt=0-\r\n\
            m=video 0 RTP/AVP 96\r\n\
            a=rtpmap:96 H264/90000\r\n\
            a=fmtp:96 packetization-mode=1;profile-level-id=4D401E;sprop-parameter-sets=Z01AHqs=,aO48gA==\r\n\
            a=x-dimensions:640,360\r\n\
            a=control:trackID=0\r\n\
            m=audio 0 RTP/AVP 8\r\n\
            a=rtpmap:8 PCMA/8000\r\n\
            a=control:trackID=1\r\n";
        assert_eq!(sdp, expected);
    }

    #[test]
    fn video_without_parameter_sets_and_unsupported_codecs() {
        let mut info = h264_info(false);
        if let Some((_, v)) = info.video.as_mut() {
            v.sps = None;
        }
        let t = tracks(&info);
        let sdp = render(&info, &t, IpAddr::V4(Ipv4Addr::LOCALHOST), 1, "x");
        assert!(sdp.contains("a=fmtp:96 packetization-mode=1\r\n"), "{sdp}");
        assert!(!sdp.contains("m=audio"));

        let mjpeg = StreamInfo {
            audio_decided_by: None,
            video: Some((Codec::Svac, VideoParams::default())),
            audio: Some((
                Codec::Aac,
                AudioParams {
                    sample_rate: 16000,
                    channels: 1,
                    config: None,
                },
            )),
        };
        // MJPEG has no payload format here; AAC does (RFC 3640).
        let t = tracks(&mjpeg);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].codec, t[0].payload_type, t[0].clock_rate),
            (Codec::Aac, 97, 16000)
        );
        let sdp = render(&mjpeg, &t, IpAddr::V4(Ipv4Addr::LOCALHOST), 1, "x");
        assert!(
            sdp.contains("a=rtpmap:97 mpeg4-generic/16000/1\r\na=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1408\r\n"),
            "{sdp}"
        );
    }

    #[test]
    fn mjpeg_uses_static_payload_type_26() {
        let info = StreamInfo {
            audio_decided_by: None,
            video: Some((
                Codec::Mjpeg,
                VideoParams {
                    width: 640,
                    height: 360,
                    ..VideoParams::default()
                },
            )),
            audio: Some((
                Codec::Pcma,
                AudioParams {
                    sample_rate: 8000,
                    channels: 1,
                    config: None,
                },
            )),
        };
        let t = tracks(&info);
        assert_eq!((t[0].payload_type, t[0].packetizer), (26, Packetizer::Jpeg));
        let sdp = render(&info, &t, IpAddr::V4(Ipv4Addr::LOCALHOST), 1, "foscam/x");
        assert!(
            sdp.contains(
                "m=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\na=framesize:26 640-360\r\n"
            ),
            "{sdp}"
        );
        assert!(sdp.contains("m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"));
    }

    #[test]
    fn recordings_announce_their_length() {
        let info = h264_info(false);
        let t = tracks(&info);
        let sdp = render_with_range(
            &info,
            &t,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            1,
            "x",
            Some(120.0),
        );
        assert!(
            sdp.contains("a=control:*\r\na=range:npt=0-120.000\r\nm=video"),
            "{sdp}"
        );
    }

    #[test]
    fn h265_sprops() {
        let info = StreamInfo {
            audio_decided_by: None,
            video: Some((
                Codec::H265,
                VideoParams {
                    width: 0,
                    height: 0,
                    vps: Some(Bytes::from_static(&[0x40, 1])),
                    sps: Some(Bytes::from_static(&[0x42, 1])),
                    pps: Some(Bytes::from_static(&[0x44, 1])),
                },
            )),
            audio: None,
        };
        let sdp = render(&info, &tracks(&info), "::1".parse().unwrap(), 1, "x");
        assert!(sdp.contains("c=IN IP6 ::\r\n"));
        assert!(sdp.contains("a=rtpmap:96 H265/90000\r\na=fmtp:96 sprop-vps=QAE=;sprop-sps=QgE=;sprop-pps=RAE=\r\n"), "{sdp}");
    }
}
