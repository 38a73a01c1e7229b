//! Request → response tables for the sans-IO connection.

use super::*;
use crate::media::frame::{AudioParams, Chunks, Codec, VideoParams};

const BASE: &str = "rtsp://127.0.0.1:8554/gb/dev/ch";

fn t0() -> Instant {
    // A fixed origin keeps the tests independent of when they run.
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn new_conn() -> Connection {
    Connection::new(
        SessionConfig::default(),
        "127.0.0.1".parse().unwrap(),
        7,
        t0(),
    )
}

fn info(audio: bool) -> StreamInfo {
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

fn request(method: &str, url: &str, cseq: u32, extra: &[&str]) -> String {
    let mut s = format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n");
    for h in extra {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

/// Parsed responses queued on the connection, in order.
fn responses(c: &mut Connection) -> Vec<Response<Vec<u8>>> {
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    out.into_iter()
        .filter(|t| t.dest == Dest::Tcp && t.head.is_empty())
        .map(|t| {
            let bytes = t.payload.to_vec();
            match Message::<Vec<u8>>::parse(&bytes) {
                Ok((Message::Response(r), n)) if n == bytes.len() => r,
                other => panic!("not a response: {other:?}"),
            }
        })
        .collect()
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn status(r: &Response<Vec<u8>>) -> u16 {
    r.status().into()
}

fn header(r: &Response<Vec<u8>>, name: HeaderNameStr) -> String {
    r.header(&rtsp_types::headers::HeaderName::from_static_str(name).unwrap())
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

type HeaderNameStr = &'static str;

/// One request, one response.
fn exchange(c: &mut Connection, req: &str) -> Response<Vec<u8>> {
    c.receive(req.as_bytes(), t0());
    let mut r = responses(c);
    assert_eq!(r.len(), 1, "one response to {req:?}");
    r.remove(0)
}

/// DESCRIBE answered from a successful open.
fn described(c: &mut Connection, audio: bool) -> Response<Vec<u8>> {
    c.receive(
        request("DESCRIBE", BASE, 2, &["Accept: application/sdp"]).as_bytes(),
        t0(),
    );
    assert_eq!(
        events(c),
        [Event::OpenStream(
            StreamKey::from_path("/gb/dev/ch").unwrap()
        )]
    );
    assert!(responses(c).is_empty(), "answer waits for the stream");
    c.stream_opened(Ok(info(audio)), t0());
    let mut r = responses(c);
    assert_eq!(r.len(), 1);
    r.remove(0)
}

fn session_id(r: &Response<Vec<u8>>) -> String {
    header(r, "Session").split(';').next().unwrap().to_owned()
}

/// DESCRIBE + SETUP (TCP) + PLAY; returns the session id.
fn playing_tcp(c: &mut Connection) -> String {
    described(c, false);
    let r = exchange(
        c,
        &request(
            "SETUP",
            &format!("{BASE}/trackID=0"),
            3,
            &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        ),
    );
    assert_eq!(status(&r), 200);
    let id = session_id(&r);
    let r = exchange(c, &request("PLAY", BASE, 4, &[&format!("Session: {id}")]));
    assert_eq!(status(&r), 200);
    events(c);
    id
}

fn idr_frame(pts: i64, size: usize) -> Frame {
    let mut idr = vec![0x65u8];
    idr.resize(size, 0xab);
    Frame {
        codec: Codec::H264,
        pts,
        dts: pts,
        keyframe: true,
        units: [
            Chunks::from(Bytes::from_static(&[0x67, 0x4d, 0x40, 0x1e, 0xab])),
            Chunks::from(Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80])),
            Chunks::from(Bytes::from(idr)),
        ]
        .into_iter()
        .collect(),
    }
}

#[test]
fn simple_requests_table() {
    type Case = (&'static str, u16, &'static [(&'static str, &'static str)]);
    let cases: &[Case] = &[
        (
            "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            200,
            &[("CSeq", "1"), ("Public", PUBLIC)],
        ),
        // Header names are case-insensitive (RFC 2326 §4.2 via RFC 2616).
        (
            "OPTIONS * RTSP/1.0\r\ncseq: 9\r\n\r\n",
            200,
            &[("CSeq", "9")],
        ),
        ("OPTIONS * RTSP/1.0\r\nUser-Agent: x\r\n\r\n", 400, &[]),
        (
            "FOO rtsp://h/x RTSP/1.0\r\nCSeq: 2\r\n\r\n",
            501,
            &[("CSeq", "2")],
        ),
        (
            "ANNOUNCE rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 3\r\n\r\n",
            405,
            &[("Allow", PUBLIC)],
        ),
        ("OPTIONS * RTSP/2.0\r\nCSeq: 4\r\n\r\n", 505, &[]),
        (
            "DESCRIBE rtsp://h:554/ RTSP/1.0\r\nCSeq: 5\r\n\r\n",
            404,
            &[],
        ),
        (
            "DESCRIBE rtsp://h/gb//x RTSP/1.0\r\nCSeq: 5\r\n\r\n",
            404,
            &[],
        ),
        ("PLAY rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 6\r\n\r\n", 454, &[]),
        (
            "PLAY rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 7\r\nSession: nope\r\n\r\n",
            454,
            &[],
        ),
        (
            "TEARDOWN rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 8\r\n\r\n",
            454,
            &[],
        ),
        (
            "PAUSE rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 8\r\n\r\n",
            454,
            &[],
        ),
        (
            "GET_PARAMETER rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 10\r\n\r\n",
            200,
            &[],
        ),
        (
            "SET_PARAMETER rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 11\r\n\r\n",
            200,
            &[],
        ),
        (
            "SET_PARAMETER rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 12\r\nContent-Length: 5\r\n\r\nx: 1\n",
            451,
            &[],
        ),
    ];
    for (req, code, expect) in cases {
        let mut c = new_conn();
        let r = exchange(&mut c, req);
        assert_eq!(status(&r), *code, "{req:?}");
        for (name, value) in *expect {
            assert_eq!(header(&r, name), *value, "{req:?} header {name}");
        }
        assert!(
            !events(&mut c).contains(&Event::Close),
            "connection stays up after {req:?}"
        );
    }
}

#[test]
fn garbage_and_oversize_close_the_connection() {
    for input in [
        b"\x00\x01\x02 hello\r\n\r\n".to_vec(),
        b"OPTIONS * HTTP/1.1\r\n\r\n".to_vec(),
        vec![b'A'; MAX_REQUEST + 10],
    ] {
        let mut c = new_conn();
        c.receive(&input, t0());
        let r = responses(&mut c);
        assert_eq!(r.len(), 1);
        assert_eq!(status(&r[0]), 400);
        assert_eq!(events(&mut c), [Event::Close]);
        // Nothing more is read after the decision to close.
        c.receive(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", t0());
        assert!(responses(&mut c).is_empty());
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = SmallRng::seed_from_u64(1);
    let seeds: [&[u8]; 4] = [
        b"SETUP rtsp://h/gb/a/b/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: ",
        b"DESCRIBE rtsp://h/gb/a/b RTSP/1.0\r\nCSeq: 1\r\nSession: ",
        b"$\x01\xff\xff",
        b"PLAY * RTSP/1.0\r\nCSeq: ",
    ];
    for i in 0..2000 {
        let mut c = new_conn();
        let mut input = seeds[i % seeds.len()].to_vec();
        for _ in 0..(rng.next_u32() % 64) {
            let b = rng.next_u32() as u8;
            input.push(if b.is_multiple_of(3) {
                b"\r\n;=-\"/\\"[usize::from(b) % 8]
            } else {
                b
            });
        }
        input.extend_from_slice(b"\r\n\r\n");
        c.receive(&input, t0());
        if let Some((_, Waiting::Open(_))) = &c.waiting {
            c.stream_opened(Ok(info(true)), t0());
        }
        let _ = responses(&mut c);
        let _ = events(&mut c);
    }
}

#[test]
fn address_lists_in_transport_are_refused_not_panicked_on() {
    let mut c = new_conn();
    described(&mut c, false);
    for t in [
        "RTP/AVP/TCP;dest_addr=\"a\\\"",
        "RTP/AVP;unicast;dest_addr=\"",
        "RTP/AVP;src_addr=\"x\"",
    ] {
        let r = exchange(
            &mut c,
            &request(
                "SETUP",
                &format!("{BASE}/trackID=0"),
                3,
                &[&format!("Transport: {t}")],
            ),
        );
        assert_eq!(status(&r), 461, "{t}");
    }
}

#[test]
fn describe_maps_start_errors() {
    let cases = [
        (StartError::NotFound("x".into()), 404),
        (StartError::Offline("x".into()), 503),
        (StartError::Failed("x".into()), 503),
        (StartError::Timeout(Duration::from_secs(5)), 504),
        (
            StartError::Rejected {
                code: 488,
                reason: "Not Acceptable Here".into(),
            },
            502,
        ),
        (StartError::NoPort, 453),
    ];
    for (err, code) in cases {
        let mut c = new_conn();
        c.receive(request("DESCRIBE", BASE, 2, &[]).as_bytes(), t0());
        assert!(matches!(events(&mut c)[..], [Event::OpenStream(_)]));
        c.stream_opened(Err(err.clone().into()), t0());
        let r = responses(&mut c);
        assert_eq!(status(&r[0]), code, "{err:?}");
        assert_eq!(header(&r[0], "CSeq"), "2");
    }
    // Opened, but the source never told us what it carries.
    let mut c = new_conn();
    c.receive(request("DESCRIBE", BASE, 2, &[]).as_bytes(), t0());
    events(&mut c);
    c.stream_opened(Ok(StreamInfo::default()), t0());
    assert_eq!(status(&responses(&mut c)[0]), 504);
    assert_eq!(events(&mut c), [Event::ReleaseStream]);
}

#[test]
fn describe_answers_sdp_with_content_base() {
    let mut c = new_conn();
    let r = described(&mut c, true);
    assert_eq!(status(&r), 200);
    assert_eq!(header(&r, "Content-Base"), format!("{BASE}/"));
    assert_eq!(header(&r, "Content-Type"), "application/sdp");
    let sdp = String::from_utf8(r.body().clone()).unwrap();
    assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"), "{sdp}");
    assert!(sdp.contains("profile-level-id=4D401E;sprop-parameter-sets=Z01AHqs=,aO48gA=="));
    assert!(sdp.contains("a=rtpmap:8 PCMA/8000\r\na=control:trackID=1\r\n"));
    // Asking again reuses the open stream.
    let r = exchange(&mut c, &request("DESCRIBE", &format!("{BASE}/"), 3, &[]));
    assert_eq!(status(&r), 200);
    assert!(events(&mut c).is_empty());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut c = new_conn();
    let input = [
        request("OPTIONS", BASE, 1, &[]),
        request("DESCRIBE", BASE, 2, &[]),
        request("OPTIONS", BASE, 3, &[]),
    ]
    .concat();
    // Split awkwardly, as TCP may.
    let (a, b) = input.as_bytes().split_at(30);
    c.receive(a, t0());
    c.receive(b, t0());
    let r = responses(&mut c);
    assert_eq!(r.len(), 1, "DESCRIBE holds back the requests after it");
    assert_eq!(header(&r[0], "CSeq"), "1");
    events(&mut c);
    c.stream_opened(Ok(info(false)), t0());
    let r = responses(&mut c);
    let cseqs: Vec<String> = r.iter().map(|r| header(r, "CSeq")).collect();
    assert_eq!(cseqs, ["2", "3"]);
}

#[test]
fn setup_accepts_every_control_url_style() {
    let urls = [
        format!("{BASE}/trackID=0"),
        // ffmpeg appends the control to a URL with a query.
        format!("{BASE}?token=1/trackID=0"),
        format!("{BASE}/trackID=1"),
    ];
    for (i, url) in urls.iter().enumerate() {
        let mut c = new_conn();
        described(&mut c, true);
        let r = exchange(
            &mut c,
            &request(
                "SETUP",
                url,
                3,
                &["Transport: RTP/AVP/TCP;unicast;interleaved=4-5"],
            ),
        );
        assert_eq!(status(&r), 200, "{url}");
        let transport = header(&r, "Transport");
        assert!(
            transport.starts_with("RTP/AVP/TCP;unicast;interleaved=4-5;ssrc="),
            "{transport}"
        );
        assert!(header(&r, "Session").ends_with(";timeout=60"));
        let ev = events(&mut c);
        assert!(
            matches!(
                &ev[..],
                [Event::SessionStarted {
                    transport: TransportKind::Tcp,
                    ..
                }]
            ),
            "{ev:?}"
        );
        let want = if i == 2 { 1 } else { 0 };
        assert_eq!(c.session.as_ref().unwrap().tracks[0].desc.id, want);
    }
    // Unknown track, and an aggregate SETUP with two tracks.
    let mut c = new_conn();
    described(&mut c, true);
    let t = ["Transport: RTP/AVP/TCP;interleaved=0-1"];
    assert_eq!(
        status(&exchange(
            &mut c,
            &request("SETUP", &format!("{BASE}/trackID=7"), 3, &t)
        )),
        404
    );
    assert_eq!(
        status(&exchange(&mut c, &request("SETUP", BASE, 4, &t))),
        459
    );
    assert_eq!(
        status(&exchange(
            &mut c,
            &request(
                "SETUP",
                &format!("{BASE}/trackID=0"),
                5,
                &["Transport: RTP/SAVP;multicast"]
            )
        )),
        461
    );
}

#[test]
fn setup_without_describe_opens_the_stream() {
    let mut c = new_conn();
    c.receive(
        request(
            "SETUP",
            &format!("{BASE}/trackID=0"),
            1,
            &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        )
        .as_bytes(),
        t0(),
    );
    assert!(matches!(events(&mut c)[..], [Event::OpenStream(_)]));
    c.stream_opened(Ok(info(false)), t0());
    assert_eq!(status(&responses(&mut c)[0]), 200);
}

#[test]
fn udp_setup_binds_ports_and_answers_them() {
    let mut c = new_conn();
    described(&mut c, false);
    c.receive(
        request(
            "SETUP",
            &format!("{BASE}/trackID=0"),
            3,
            &["transport: RTP/AVP;unicast;client_port=6000-6001"],
        )
        .as_bytes(),
        t0(),
    );
    assert_eq!(
        events(&mut c),
        [Event::BindUdp {
            track: 0,
            client_rtp: 6000,
            client_rtcp: 6001
        }]
    );
    c.udp_bound(Some((5000, 5001)), t0());
    let r = responses(&mut c);
    assert_eq!(status(&r[0]), 200);
    let transport = header(&r[0], "Transport");
    assert!(
        transport.starts_with("RTP/AVP;unicast;client_port=6000-6001;server_port=5000-5001;ssrc="),
        "{transport}"
    );
    assert!(matches!(
        events(&mut c)[..],
        [Event::SessionStarted {
            transport: TransportKind::Udp,
            ..
        }]
    ));

    // No ports: 453.
    let mut c = new_conn();
    described(&mut c, false);
    c.receive(
        request(
            "SETUP",
            &format!("{BASE}/trackID=0"),
            3,
            &["Transport: RTP/AVP;unicast;client_port=6000-6001"],
        )
        .as_bytes(),
        t0(),
    );
    events(&mut c);
    c.udp_bound(None, t0());
    assert_eq!(status(&responses(&mut c)[0]), 453);
}

#[test]
fn play_pause_teardown() {
    let mut c = new_conn();
    described(&mut c, false);
    let r = exchange(
        &mut c,
        &request(
            "SETUP",
            &format!("{BASE}/trackID=0"),
            3,
            &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        ),
    );
    let id = session_id(&r);
    events(&mut c);
    let session = format!("Session: {id}");

    let r = exchange(
        &mut c,
        &request(
            "PLAY",
            &format!("{BASE}/"),
            4,
            &[&session, "Range: npt=0.000-"],
        ),
    );
    assert_eq!(status(&r), 200);
    assert_eq!(header(&r, "Range"), "npt=0.000-");
    let track = &c.session.as_ref().unwrap().tracks[0];
    assert_eq!(
        header(&r, "RTP-Info"),
        format!(
            "url={BASE}/trackID=0;seq={};rtptime={}",
            track.rtp.seq, track.base
        )
    );
    assert_eq!(events(&mut c), [Event::StartMedia]);
    assert!(c.is_playing());

    // A second viewer's SETUP on the same connection is refused mid-play.
    let r = exchange(
        &mut c,
        &request(
            "SETUP",
            &format!("{BASE}/trackID=0"),
            5,
            &[&session, "Transport: RTP/AVP/TCP;interleaved=2-3"],
        ),
    );
    assert_eq!(status(&r), 455);
    // Another stream within this session: not an aggregate we allow.
    let r = exchange(
        &mut c,
        &request(
            "SETUP",
            "rtsp://127.0.0.1:8554/gb/other/ch/trackID=0",
            6,
            &[&session, "Transport: RTP/AVP/TCP;interleaved=2-3"],
        ),
    );
    assert_eq!(status(&r), 459);

    let r = exchange(&mut c, &request("PAUSE", BASE, 7, &[&session]));
    assert_eq!(status(&r), 200);
    assert_eq!(events(&mut c), [Event::StopMedia]);
    assert!(!c.is_playing());

    let r = exchange(&mut c, &request("GET_PARAMETER", BASE, 8, &[&session]));
    assert_eq!(status(&r), 200);
    assert_eq!(session_id(&r), id);

    let r = exchange(&mut c, &request("TEARDOWN", BASE, 9, &[&session]));
    assert_eq!(status(&r), 200);
    assert!(matches!(
        &events(&mut c)[..],
        [Event::SessionEnded {
            reason: EndReason::Teardown,
            ..
        }]
    ));
    let r = exchange(&mut c, &request("PLAY", BASE, 10, &[&session]));
    assert_eq!(status(&r), 454);
}

#[test]
fn frames_become_interleaved_rtp_matching_rtp_info() {
    let mut c = new_conn();
    playing_tcp(&mut c);
    let (seq0, base) = {
        let t = &c.session.as_ref().unwrap().tracks[0];
        (t.rtp.seq, t.base)
    };
    c.push_frame(&idr_frame(900_000, 3000), t0());
    c.push_frame(&idr_frame(903_600, 100), t0());
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    // SPS, PPS, 3 FU-A; SPS, PPS, IDR.
    assert_eq!(out.len(), 8);
    for (i, t) in out.iter().enumerate() {
        let h = t.head.as_slice();
        assert_eq!((h[0], h[1]), (b'$', 0));
        assert_eq!(usize::from(u16::from_be_bytes([h[2], h[3]])), t.len() - 4);
        let rtp = &h[4..16];
        assert_eq!(rtp[0], 0x80);
        assert_eq!(rtp[1] & 0x7f, 96);
        assert_eq!(
            rtp[1] & 0x80 != 0,
            i == 4 || i == 7,
            "marker on the last packet of each AU"
        );
        assert_eq!(
            u16::from_be_bytes([rtp[2], rtp[3]]),
            seq0.wrapping_add(i as u16)
        );
        let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
        let want = if i < 5 { base } else { base.wrapping_add(3600) };
        assert_eq!(ts, want);
    }

    // The first SR follows the first frame, on the odd channel.
    assert!(c.poll_timeout().is_some_and(|t| t <= t0()));
    c.handle_timeout(t0(), SystemTime::now());
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].head.as_slice()[..2], b"$\x01");
    let sr = out[0].payload.to_vec();
    assert_eq!(sr[1], rtcp::PT_SR);
    assert_eq!(
        u32::from_be_bytes([sr[20], sr[21], sr[22], sr[23]]),
        8,
        "packet count"
    );
    // Playing over TCP: only the next SR is scheduled, no idle expiry.
    assert_eq!(c.poll_timeout(), Some(t0() + SR_INTERVAL));
}

#[test]
fn client_interleaved_rtcp_is_skipped() {
    let mut c = new_conn();
    let id = playing_tcp(&mut c);
    let mut input = vec![b'$', 1, 0, 8, 0x81, 201, 0, 1, 1, 2, 3, 4];
    input.extend_from_slice(
        request("GET_PARAMETER", BASE, 9, &[&format!("Session: {id}")]).as_bytes(),
    );
    c.receive(&input, t0());
    let r = responses(&mut c);
    assert_eq!(r.len(), 1);
    assert_eq!(header(&r[0], "CSeq"), "9");
}

#[test]
fn idle_udp_session_is_reaped_and_rtcp_keeps_it_alive() {
    let mut c = new_conn();
    described(&mut c, false);
    c.receive(
        request(
            "SETUP",
            &format!("{BASE}/trackID=0"),
            3,
            &["Transport: RTP/AVP;unicast;client_port=6000-6001"],
        )
        .as_bytes(),
        t0(),
    );
    events(&mut c);
    c.udp_bound(Some((5000, 5001)), t0());
    responses(&mut c);
    events(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0() + Duration::from_secs(60)));

    let t30 = t0() + Duration::from_secs(30);
    c.client_datagram(t30);
    c.handle_timeout(t0() + Duration::from_secs(61), SystemTime::now());
    assert!(events(&mut c).is_empty(), "RTCP refreshed the session");

    c.handle_timeout(t30 + Duration::from_secs(60), SystemTime::now());
    assert!(matches!(
        &events(&mut c)[..],
        [
            Event::SessionEnded {
                reason: EndReason::Timeout,
                ..
            },
            Event::Close
        ]
    ));
}

#[test]
fn stream_end_closes_the_session() {
    let mut c = new_conn();
    playing_tcp(&mut c);
    c.stream_ended();
    assert!(matches!(
        &events(&mut c)[..],
        [
            Event::StopMedia,
            Event::SessionEnded {
                reason: EndReason::StreamEnded,
                ..
            },
            Event::Close
        ]
    ));
}

/// RTP timestamps of the video packets queued so far.
fn video_timestamps(c: &mut Connection) -> Vec<u32> {
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    out.iter()
        .filter(|t| t.head.as_slice().get(..2) == Some(b"$\x00"))
        .map(|t| {
            let h = t.head.as_slice();
            u32::from_be_bytes([h[8], h[9], h[10], h[11]])
        })
        .collect()
}

fn rtptime_of(r: &Response<Vec<u8>>) -> u32 {
    header(r, "RTP-Info")
        .split(';')
        .find_map(|p| p.strip_prefix("rtptime="))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A recording's RTP timeline is its play time: the origin at npt 0,
/// a seek re-anchored at its target, a resume where the pause left off.
#[test]
fn recording_timestamps_follow_the_position_played() {
    const REC: &str = "rtsp://127.0.0.1:8554/gb/dev/ch/playback/1714550400-1714550520";
    let mut c = new_conn();
    c.set_playback(true);
    c.receive(
        request(
            "SETUP",
            &format!("{REC}/trackID=0"),
            1,
            &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        )
        .as_bytes(),
        t0(),
    );
    events(&mut c);
    c.stream_opened(Ok(info(false)), t0());
    let id = session_id(&responses(&mut c)[0]);
    let session = format!("Session: {id}");
    events(&mut c);

    let play = exchange(
        &mut c,
        &request("PLAY", REC, 2, &[&session, "Range: npt=0-"]),
    );
    assert_eq!(header(&play, "Range"), "npt=0.000-120.000");
    assert_eq!(
        header(&play, "Media-Range"),
        "npt=0.000-120.000, clock=20240501T080000Z-20240501T080200Z"
    );
    let origin = rtptime_of(&play);
    assert_eq!(events(&mut c), [Event::StartMedia]);
    // The stream began (pts 5 s) before this viewer's first frame (6 s).
    c.anchor_recording(Some(450_000), t0());
    c.push_frame(&idr_frame(540_000, 100), t0());
    let ts = video_timestamps(&mut c);
    assert!(
        ts.iter().all(|t| *t == origin.wrapping_add(90_000)),
        "{ts:?}"
    );
    assert_eq!(events(&mut c), [Event::FirstMedia]);

    let pause = exchange(&mut c, &request("PAUSE", REC, 3, &[&session]));
    assert_eq!(header(&pause, "Range"), "npt=1.000-120.000");
    assert_eq!(
        events(&mut c),
        [Event::HoldMedia, Event::Playback(PlaybackCommand::Pause)]
    );
    let resume = exchange(&mut c, &request("PLAY", REC, 4, &[&session]));
    assert_eq!(header(&resume, "Range"), "npt=1.000-120.000");
    assert_eq!(rtptime_of(&resume), origin.wrapping_add(90_000));
    assert_eq!(
        events(&mut c),
        [Event::Playback(PlaybackCommand::Resume), Event::StartMedia]
    );

    // A seek: the next frame, whatever its pts, is the one at 30 s.
    let seek = exchange(
        &mut c,
        &request("PLAY", REC, 5, &[&session, "Range: npt=30.9-"]),
    );
    assert_eq!(header(&seek, "Range"), "npt=30.000-120.000");
    assert_eq!(rtptime_of(&seek), origin.wrapping_add(30 * 90_000));
    assert_eq!(
        events(&mut c),
        [Event::Flush, Event::Playback(PlaybackCommand::Seek(30.0))]
    );
    c.push_frame(&idr_frame(77_000, 100), t0());
    c.push_frame(&idr_frame(80_600, 100), t0());
    let ts = video_timestamps(&mut c);
    let at_30 = origin.wrapping_add(30 * 90_000);
    assert_eq!(ts.first(), Some(&at_30));
    assert_eq!(ts.last(), Some(&at_30.wrapping_add(3600)));
}

/// Issue 13: while a DESCRIBE waits for its stream, a client could push
/// bytes without bound; the buffer is capped on receive.
#[test]
fn input_is_bounded_while_a_request_waits() {
    let mut c = new_conn();
    c.receive(
        request("DESCRIBE", BASE, 2, &["Accept: application/sdp"]).as_bytes(),
        t0(),
    );
    assert_eq!(events(&mut c).len(), 1, "OpenStream");
    let chunk = vec![b'x'; 4096];
    let mut fed = 0;
    while fed < 10 * MAX_REQUEST {
        c.receive(&chunk, t0());
        fed += chunk.len();
        assert!(c.buffered() <= MAX_REQUEST, "{} buffered", c.buffered());
    }
    assert_eq!(events(&mut c), [Event::Close]);
    let r = responses(&mut c);
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), [400]);
}

/// Issue 13 scope 6: a connection must complete a request within the
/// request timeout of opening; dribbling bytes does not extend it.
#[test]
fn a_connection_without_a_complete_request_closes_at_the_request_timeout() {
    let timeout = SessionConfig::default().request_timeout;
    let mut c = new_conn();
    assert_eq!(c.poll_timeout(), Some(t0() + timeout));
    c.receive(b"OPTIONS rtsp://h/ RTSP/1.0\r\n", t0() + timeout / 2);
    assert_eq!(
        c.poll_timeout(),
        Some(t0() + timeout),
        "bytes do not extend it"
    );
    c.handle_timeout(t0() + timeout - Duration::from_millis(1), SystemTime::now());
    assert!(events(&mut c).is_empty());
    c.handle_timeout(t0() + timeout, SystemTime::now());
    assert_eq!(events(&mut c), [Event::Close]);
    assert!(responses(&mut c).is_empty());
}

#[test]
fn each_started_request_has_the_request_timeout_from_its_first_byte() {
    let timeout = SessionConfig::default().request_timeout;
    let mut c = new_conn();
    exchange(&mut c, &request("OPTIONS", BASE, 1, &[]));
    // Complete: only the session's idle timer is left.
    assert_eq!(c.poll_timeout(), Some(t0() + Duration::from_secs(60)));
    let later = t0() + Duration::from_secs(30);
    c.receive(b"OPTIONS rtsp://h/ RTSP", later);
    assert_eq!(c.poll_timeout(), Some(later + timeout));
    c.receive(b"/1.0\r\nCSeq: 2\r\n\r\n", later + Duration::from_secs(1));
    assert_eq!(responses(&mut c).len(), 1);
    assert_eq!(
        c.poll_timeout(),
        Some(later + Duration::from_secs(1) + Duration::from_secs(60))
    );
}
