//! The Foscam MO_O / MO_V frame codec: arbitrary bytes, split at an
//! arbitrary point, must decode to frames or typed errors without panics,
//! every decoded message must re-encode and decode to itself, and the JPEG
//! header reader and RFC 2435 packetizer must survive any Video_Data body.
#![no_main]

use bytes::BytesMut;
use camgate::foscam::proto::{Channel, FrameDecoder, MediaMessage, OpMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize * rest.len()) / 255;
    for channel in [Channel::Operation, Channel::Media] {
        let mut decoder = FrameDecoder::with_max_body(channel, 64 * 1024);
        let mut buf = BytesMut::new();
        let mut progress = 0;
        for piece in [&rest[..cut], &rest[cut..]] {
            buf.extend_from_slice(piece);
            while let Some(r) = decoder.decode(&mut buf) {
                progress += 1;
                assert!(progress <= rest.len() + 2, "decoder must consume input");
                let Ok(frame) = r else { continue };
                match channel {
                    Channel::Operation => {
                        if let Ok(msg) = OpMessage::parse(&frame) {
                            let mut out = BytesMut::new();
                            msg.encode(&mut out);
                            let again = FrameDecoder::new(channel).decode(&mut out);
                            if let Some(Ok(f)) = again {
                                assert_eq!(OpMessage::parse(&f).ok().map(|m| m.opcode()), Some(msg.opcode()));
                            }
                        }
                    }
                    Channel::Media => {
                        if let Ok(MediaMessage::VideoData { jpeg, .. }) = MediaMessage::parse(&frame) {
                            let _ = camgate::media::jpeg::JpegHeader::parse(&jpeg);
                            let frame = camgate::media::frame::Frame {
                                codec: camgate::media::frame::Codec::Mjpeg,
                                pts: 0,
                                dts: 0,
                                keyframe: true,
                                units: [jpeg.into()].into_iter().collect(),
                            };
                            let mut out = Vec::new();
                            camgate::rtsp::packetize::Packetizer::Jpeg.packetize(&frame, 200, &mut out);
                        }
                    }
                }
            }
        }
    }
});
