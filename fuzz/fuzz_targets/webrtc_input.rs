#![no_main]
//! What reaches the WebRTC engine from the network: WHEP offers (the SDP
//! body of a POST) and datagrams on the shared UDP port, both for routing
//! (STUN ufrag) and for a live peer.
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use camgate::media::frame::{Codec, StreamInfo, VideoParams};
use camgate::webrtc::peer::{LocalAddr, Peer};
use camgate::webrtc::udp::stun_ufrag;
use libfuzzer_sys::fuzz_target;

const OFFER: &str = include_str!("../../src/webrtc/testdata/chromium-156-offer.sdp");

fn info() -> &'static StreamInfo {
    static INFO: OnceLock<StreamInfo> = OnceLock::new();
    INFO.get_or_init(|| StreamInfo {
        audio_decided_by: None,
        video: Some((
            Codec::H264,
            VideoParams {
                width: 640,
                height: 360,
                vps: None,
                sps: Some(Bytes::from_static(&[0x67, 0x4d, 0x00, 0x1f])),
                pps: Some(Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80])),
            },
        )),
        audio: None,
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = stun_ufrag(data);
    let local: SocketAddr = "127.0.0.1:8189".parse().unwrap();
    let locals = [LocalAddr {
        bound: local,
        announced: local,
    }];
    let now = Instant::now();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Peer::accept(text, info(), &locals, now);
    }
    if let Ok((mut peer, _)) = Peer::accept(OFFER, info(), &locals, now) {
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let _ = peer.handle_datagram(now, from, local, data);
        while let Ok(out) = peer.poll() {
            if matches!(out, camgate::webrtc::peer::PeerOutput::Wait(_)) {
                break;
            }
        }
    }
});
