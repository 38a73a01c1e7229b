#![no_main]
//! Arbitrary requests (Range, Scale, PAUSE, …) to a playing recording, with
//! frames pushed between reads: the timeline code never panics and every
//! request gets its answer.

use std::time::Instant;

use bytes::Bytes;
use camgate::media::frame::{Chunks, Codec, Frame, StreamInfo, VideoParams};
use camgate::rtsp::session::{Connection, SessionConfig};
use libfuzzer_sys::fuzz_target;

const REC: &str = "rtsp://127.0.0.1:8554/gb/d/c/playback/1714550400-1714550520";

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut c = Connection::new(
        SessionConfig::default(),
        "127.0.0.1".parse().unwrap(),
        1,
        now,
    );
    c.set_playback(true);
    c.receive(
        format!(
            "SETUP {REC}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
        )
        .as_bytes(),
        now,
    );
    while c.poll_event().is_some() {}
    c.stream_opened(
        Ok(StreamInfo {
            audio_decided_by: None,
            video: Some((
                Codec::H264,
                VideoParams {
                    width: 16,
                    height: 16,
                    vps: None,
                    sps: Some(Bytes::from_static(&[0x67, 0x42, 0, 0x1e])),
                    pps: Some(Bytes::from_static(&[0x68, 0xce])),
                },
            )),
            audio: None,
        }),
        now,
    );
    let mut pts = 0i64;
    for chunk in data.split(|b| *b == 0) {
        c.receive(chunk, now);
        while c.poll_event().is_some() {}
        c.anchor_recording(Some(pts / 2), now);
        pts += i64::from(chunk.first().copied().unwrap_or(1)) * 3600;
        c.push_frame(
            &Frame {
                codec: Codec::H264,
                pts,
                dts: pts,
                keyframe: true,
                units: [Chunks::from(Bytes::from(vec![0x65; 2000]))]
                    .into_iter()
                    .collect(),
            },
            now,
        );
        let mut out = Vec::new();
        c.take_transmits(&mut out);
    }
});
