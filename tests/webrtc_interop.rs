//! Interop with the other Rust WebRTC stack: webrtc-rs's sans-IO core (the
//! `rtc` crate) plays a camera as a WHEP client (draft-ietf-wish-whep §4.2)
//! against our str0m-based server, over a real UDP socket on loopback.
//!
//! Everything on the client side is webrtc-rs: offer/answer (JSEP), ICE as
//! the controlling agent against our ICE-lite server, DTLS-SRTP, and the
//! H.264 depacketizer (`rtc::rtp::codec::h264::H264Packet`, RFC 6184
//! single NAL / STAP-A / FU-A) behind `rtc::media`'s `SampleBuilder`, which
//! turns packets into access units by RTP timestamp and marker bit. The
//! test only checks what comes out: access units parsed with `h264-reader`,
//! compared with the source stream.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitReader, decode_nal};
use rtc::interceptor::Registry;
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use camgate::streams::{StreamKey, Streams, StreamsConfig};
use camgate::webrtc::{WebRtc, WebRtcConfig};
use common::capture_replay::{CAPTURE_KEY, CaptureReplay, demux};
use common::{CHANNEL, DEVICE, Options, Rig, http_exchange, http_get};
use tokio_util::sync::CancellationToken;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// Access units the client must put together, and how long it may take
/// from connecting (the demo clip is 25 fps: 50 frames take 2 s).
const WANTED_UNITS: usize = 50;
const MEDIA_BUDGET: Duration = Duration::from_secs(6);

/// One access unit as webrtc-rs's sample builder handed it over.
struct AccessUnit {
    rtp_timestamp: u32,
    /// NAL units without start codes.
    nals: Vec<Bytes>,
}

impl AccessUnit {
    fn types(&self) -> Vec<u8> {
        self.nals
            .iter()
            .filter_map(|n| n.first().map(|h| h & 0x1f))
            .collect()
    }
}

/// Split an Annex B byte stream (what `H264Packet` emits) into NAL units.
fn annex_b_nals(data: &Bytes) -> Vec<Bytes> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let mut end = starts.get(k + 1).map_or(data.len(), |next| next - 3);
            // A four-byte start code leaves its leading zero behind.
            while end > start && data[end - 1] == 0 && k + 1 < starts.len() {
                end -= 1;
            }
            data.slice(start..end)
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Width and height from an SPS NAL unit (header included).
fn sps_size(nal: &[u8]) -> (u32, u32) {
    let rbsp = decode_nal(nal).expect("SPS RBSP");
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).expect("a valid SPS");
    sps.pixel_dimensions().expect("SPS dimensions")
}

/// A WHEP viewer built on webrtc-rs's `RTCPeerConnection`, driven by hand
/// over a std UDP socket: the sans-IO loop of handle_read / poll_write /
/// poll_event / poll_read / poll_timeout / handle_timeout.
struct WhepClient {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    samples: SampleBuilder<H264Packet>,
    state: RTCPeerConnectionState,
    connected_at: Option<Instant>,
    rtp_packets: u64,
    payload_types: HashSet<u8>,
    units: Vec<AccessUnit>,
}

impl WhepClient {
    /// A peer connection with one recvonly H.264 transceiver, offering
    /// Constrained Baseline and Main (like a browser, no High), and the
    /// offer to POST.
    fn new() -> (Self, String) {
        let mut media = MediaEngine::default();
        for (pt, plid) in [(102, "42e01f"), (104, "4d001f")] {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_H264.to_owned(),
                            clock_rate: 90_000,
                            channels: 0,
                            sdp_fmtp_line: format!(
                                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={plid}"
                            ),
                            rtcp_feedback: vec![],
                        },
                        payload_type: pt,
                    },
                    RtpCodecKind::Video,
                )
                .expect("register H.264");
        }
        // NACK generation, receiver reports, TWCC: what a real client runs.
        let registry =
            register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .expect("build RTCPeerConnection");
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .expect("recvonly video transceiver");

        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client UDP");
        let local = socket.local_addr().expect("client address");
        let offer = pc.create_offer(None).expect("createOffer");
        pc.set_local_description(Instant::now(), offer)
            .expect("setLocalDescription");
        let host = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .expect("host candidate");
        pc.add_local_candidate(RTCIceCandidate::from(&host).to_json().expect("candidate"))
            .expect("add host candidate");
        let offer = pc.local_description().expect("local description").sdp;

        let samples = SampleBuilder::new(512, H264Packet::default(), 90_000)
            .with_max_time_delay(Duration::from_millis(500));
        let client = Self {
            pc,
            socket,
            local,
            samples,
            state: RTCPeerConnectionState::New,
            connected_at: None,
            rtp_packets: 0,
            payload_types: HashSet::new(),
            units: Vec::new(),
        };
        (client, offer)
    }

    /// Access units from the first IDR on: the ones a decoder can use.
    fn decodable_units(&self) -> usize {
        self.units
            .iter()
            .position(|u| u.types().contains(&NAL_IDR))
            .map_or(0, |first| self.units.len() - first)
    }

    fn accept(&mut self, answer: &str) {
        let answer = RTCSessionDescription::answer(answer.to_owned()).expect("SDP answer");
        self.pc
            .set_remote_description(Instant::now(), answer)
            .expect("setRemoteDescription");
    }

    /// Run the peer connection until `done` holds or `deadline` passes;
    /// whether `done` held.
    fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        let mut buf = vec![0u8; 2048];
        loop {
            self.drain();
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wake = self.pc.poll_timeout().unwrap_or(deadline).min(deadline);
            if wake <= now {
                self.pc.handle_timeout(now).expect("handle_timeout");
                continue;
            }
            let wait = (wake - now).clamp(Duration::from_millis(1), Duration::from_millis(20));
            self.socket
                .set_read_timeout(Some(wait))
                .expect("read timeout");
            match self.socket.recv_from(&mut buf) {
                Ok((n, peer)) => self
                    .pc
                    .handle_read(TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext {
                            local_addr: self.local,
                            peer_addr: peer,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&buf[..n]),
                    })
                    .expect("handle_read"),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("client socket: {e}"),
            }
            let now = Instant::now();
            if self.pc.poll_timeout().is_some_and(|t| t <= now) {
                self.pc.handle_timeout(now).expect("handle_timeout");
            }
        }
    }

    /// Send what the connection wants sent, take its events, and feed the
    /// RTP it decrypted to the sample builder.
    fn drain(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            self.socket
                .send_to(&out.message, out.transport.peer_addr)
                .expect("client send");
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.state = state;
                if state == RTCPeerConnectionState::Connected {
                    self.connected_at.get_or_insert_with(Instant::now);
                }
            }
        }
        while let Some(read) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = read.message {
                self.rtp_packets += 1;
                self.payload_types.insert(packet.header.payload_type);
                self.samples.push(read.now, packet);
            }
        }
        while let Some(sample) = self.samples.pop(Instant::now()) {
            self.units.push(AccessUnit {
                rtp_timestamp: sample.packet_timestamp,
                nals: annex_b_nals(&sample.data),
            });
        }
        // poll_write again: reading may have queued RTCP (receiver reports,
        // NACKs) and handshake replies.
        while let Some(out) = self.pc.poll_write() {
            self.socket
                .send_to(&out.message, out.transport.peer_addr)
                .expect("client send");
        }
    }
}

/// `profile-level-id` the answer gives payload type `pt`, as a number.
fn answered_profile(answer: &str, pt: u8) -> Option<u32> {
    let prefix = format!("a=fmtp:{pt} ");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))?
        .split(';')
        .find_map(|kv| kv.trim().strip_prefix("profile-level-id="))
        .and_then(|v| u32::from_str_radix(v, 16).ok())
}

/// What the received access units show, checked against the source's SPS
/// (`source_sps`) and NAL units (`source_nals`).
fn check_units(units: &[AccessUnit], source_sps: &[u8], source_nals: &HashSet<Bytes>) {
    // The first unit the sample builder hands over may start mid-GOP
    // (packets before the first partition head are dropped); the first
    // decodable one is the first that carries an IDR.
    let first = units
        .iter()
        .position(|u| u.types().contains(&NAL_IDR))
        .expect("no IDR access unit received");
    assert!(
        units.len() - first >= WANTED_UNITS,
        "only {} access units from the first IDR on",
        units.len() - first
    );
    let key = &units[first];
    let types = key.types();
    let (sps_at, pps_at, idr_at) = (
        types.iter().position(|&t| t == NAL_SPS),
        types.iter().position(|&t| t == NAL_PPS),
        types.iter().position(|&t| t == NAL_IDR),
    );
    assert!(
        matches!((sps_at, pps_at, idr_at), (Some(s), Some(p), Some(i)) if s < i && p < i),
        "first key access unit's NAL types {types:?}: want SPS (7) and PPS (8) before IDR (5)"
    );
    let sps = &key.nals[sps_at.unwrap_or_default()];
    assert_eq!(sps_size(sps), sps_size(source_sps), "SPS size vs source");
    eprintln!(
        "webrtc-rs assembled {} access units; first IDR at unit {first} with NAL types {types:?}, SPS {:?}",
        units.len(),
        sps_size(sps)
    );

    // Every access unit is one picture: a slice, and every NAL unit it
    // holds is byte for byte one the source sent (passthrough, nothing
    // lost or mangled in RTP packetization and depacketization).
    for (i, u) in units[first..].iter().enumerate() {
        let types = u.types();
        assert!(
            types.iter().any(|&t| t == 1 || t == NAL_IDR),
            "access unit {i} has no slice: NAL types {types:?}"
        );
        for nal in &u.nals {
            let t = nal.first().map_or(0, |h| h & 0x1f);
            assert!(
                t == NAL_AUD || source_nals.contains(nal),
                "access unit {i}: a {}-byte NAL unit of type {t} the source never sent",
                nal.len()
            );
        }
    }

    // RTP timestamps rise from unit to unit (RFC 3550 modular order).
    for pair in units[first..].windows(2) {
        let step = pair[1].rtp_timestamp.wrapping_sub(pair[0].rtp_timestamp);
        assert!(
            step > 0 && step < 1 << 31,
            "RTP timestamp went from {} to {}",
            pair[0].rtp_timestamp,
            pair[1].rtp_timestamp
        );
    }
}

#[test]
fn webrtc_rs_whep_client_receives_the_demo_camera() {
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let port = rig.ports.http;

    // The source, as the simulated camera sends it.
    let clip = camgate::sim::clip::Clip::demo();
    let source_nals: HashSet<Bytes> = clip
        .units()
        .iter()
        .flat_map(|u| u.nals.iter().cloned())
        .collect();
    let source_sps = source_nals
        .iter()
        .find(|n| n.first().is_some_and(|h| h & 0x1f == NAL_SPS))
        .expect("demo clip has an SPS")
        .clone();
    assert_eq!(sps_size(&source_sps).0, 640, "demo clip is 640 wide");

    let (mut client, offer) = WhepClient::new();
    let (status, head, answer) = http_exchange(
        port,
        "POST",
        &format!("/whep/gb/{DEVICE}/{CHANNEL}"),
        &[("Content-Type", "application/sdp")],
        &offer,
    )
    .expect("WHEP POST");
    assert_eq!(status, 201, "{answer}\n{}", rig.logs());
    assert!(head.contains("content-type: application/sdp"), "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location:"))
        .map(|l| l.trim().to_owned())
        .expect("Location header");
    client.accept(&answer);
    let answered_at = Instant::now();

    let connected = client.run_until(Instant::now() + Duration::from_secs(10), |c| {
        c.connected_at.is_some() || c.state == RTCPeerConnectionState::Failed
    });
    assert!(
        connected && client.state == RTCPeerConnectionState::Connected,
        "webrtc-rs never connected (state {:?})\n{}",
        client.state,
        rig.logs()
    );
    let connected_at = client.connected_at.unwrap_or_else(Instant::now);
    let enough = client.run_until(connected_at + MEDIA_BUDGET, |c| {
        c.decodable_units() >= WANTED_UNITS
    });
    assert!(
        enough,
        "{} access units from {} RTP packets within {MEDIA_BUDGET:?} of connecting\n{}",
        client.units.len(),
        client.rtp_packets,
        rig.logs()
    );
    eprintln!(
        "connected {:?} after the answer; {} access units ({} RTP packets) {:?} after connecting",
        connected_at - answered_at,
        client.units.len(),
        client.rtp_packets,
        connected_at.elapsed()
    );

    // Sent on the Main payload type: the demo clip is Main and we offered
    // it, so the server must not fall back to Baseline.
    let pts: Vec<u8> = client.payload_types.iter().copied().collect();
    assert_eq!(pts.len(), 1, "payload types {pts:?}");
    let plid = answered_profile(&answer, pts[0]).expect("fmtp of the payload type used");
    assert_eq!(plid >> 16, u32::from(source_sps[1]), "answered {plid:06x}");

    check_units(&client.units, &source_sps, &source_nals);
    let received = client.units.len() as f64;
    assert!(
        rig.metric("camgate_webrtc_frames_sent_total") >= received,
        "server counted fewer frames than the client assembled"
    );

    // The server lists the session under the Location's id.
    let id = location
        .strip_prefix("/whep/resource/")
        .expect("Location under /whep/resource/");
    let (_, list) = http_get(port, "/api/v1/webrtc/sessions").expect("sessions");
    assert!(list.contains(id), "{list}");

    // DELETE ends it on the server: the peer is released, the end is
    // counted as a delete, the list is empty, and the media stops.
    let (status, _, body) = http_exchange(port, "DELETE", &location, &[], "").expect("DELETE");
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.metric("camgate_webrtc_peers") != 0.0
        || rig.metric(r#"camgate_webrtc_sessions_ended_total{reason="deleted"}"#) != 1.0
    {
        assert!(
            Instant::now() < deadline,
            "session not ended after DELETE\n{}",
            rig.logs()
        );
        client.run_until(Instant::now() + Duration::from_millis(100), |_| false);
    }
    let (_, list) = http_get(port, "/api/v1/webrtc/sessions").expect("sessions");
    assert_eq!(list.trim(), "[]");
    client.run_until(Instant::now() + Duration::from_millis(300), |_| false);
    let before = client.rtp_packets;
    client.run_until(Instant::now() + Duration::from_secs(1), |_| false);
    assert_eq!(
        client.rtp_packets, before,
        "RTP still arriving after DELETE"
    );
    let (status, _, _) = http_exchange(port, "DELETE", &location, &[], "").expect("DELETE");
    assert_eq!(status, 404, "a deleted resource is gone");
}

/// Real camera H.264 (Hikvision, Main, 704x576) through the same engine
/// the WHEP route uses, in-process; the offer and answer pass through the
/// test, the media goes over loopback UDP to webrtc-rs.
#[test]
fn webrtc_rs_receives_the_hikvision_capture() {
    let Some(path) = camgate::testdata::file("hik_h264_704x576.ps") else {
        eprintln!("SKIPPED: testdata hik_h264_704x576.ps not found");
        return;
    };
    let (frames, info) = demux(&path);
    let (_, params) = info.video.clone().expect("capture has video");
    let source_sps = params.sps.clone().expect("capture has an SPS");
    assert_eq!(sps_size(&source_sps), (704, 576));
    // The capture's NAL units, to compare the received ones with.
    let mut source_nals: HashSet<Bytes> = HashSet::new();
    for unit in frames.iter().flat_map(|f| f.units.iter()) {
        let mut nal = BytesMut::with_capacity(unit.len());
        for part in unit.parts() {
            nal.extend_from_slice(part);
        }
        source_nals.insert(nal.freeze());
    }
    source_nals.insert(source_sps.clone());
    if let Some(pps) = params.pps.clone() {
        source_nals.insert(pps);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let shutdown = CancellationToken::new();
    let streams = rt.block_on(async {
        Streams::new(StreamsConfig::default()).with_provider(
            "gb",
            Arc::new(CaptureReplay {
                frames: Arc::new(frames),
                info: info.clone(),
            }),
        )
    });
    let webrtc = rt
        .block_on(WebRtc::start(
            WebRtcConfig {
                udp_port: 0,
                ips: vec!["127.0.0.1".parse().expect("ip")],
                ..WebRtcConfig::default()
            },
            shutdown.clone(),
        ))
        .expect("bind WebRTC port");

    let (mut client, offer) = WhepClient::new();
    let key = StreamKey::from_path(CAPTURE_KEY).expect("key");
    let session = rt
        .block_on(webrtc.play(&streams, key, &offer))
        .expect("offer accepted");
    client.accept(&session.answer);
    let connected = client.run_until(Instant::now() + Duration::from_secs(10), |c| {
        c.connected_at.is_some() || c.state == RTCPeerConnectionState::Failed
    });
    assert!(
        connected && client.state == RTCPeerConnectionState::Connected,
        "never connected"
    );
    let connected_at = client.connected_at.unwrap_or_else(Instant::now);
    // The capture's GOP is long (54 IDRs in 1,347 frames, ~1 s each at
    // 25 fps), and the GOP cache starts a viewer at the last IDR.
    let enough = client.run_until(connected_at + MEDIA_BUDGET, |c| {
        c.decodable_units() >= WANTED_UNITS
    });
    assert!(
        enough,
        "{} access units from {} RTP packets",
        client.units.len(),
        client.rtp_packets
    );
    let pts: Vec<u8> = client.payload_types.iter().copied().collect();
    assert_eq!(pts.len(), 1, "payload types {pts:?}");
    let plid = answered_profile(&session.answer, pts[0]).expect("fmtp");
    assert_eq!(plid >> 16, 0x4d, "Main sent as {plid:06x}");
    check_units(&client.units, &source_sps, &source_nals);
    assert!(webrtc.stop(&session.id));
    shutdown.cancel();
}
