//! Issue 14, scope 8: the doors around the guarded ones, tried from outside
//! against the real binary on loopback.
//!
//! - a keepalive for a registered camera sent from another port: 403, and
//!   the camera's address stays where its REGISTER put it;
//! - a keepalive from an unknown device id: 403, no device, and not one
//!   request sent back to the claimed address;
//! - a REGISTER replayed from another port (same Authorization): 401/403,
//!   the route unchanged, also with `Expires: 0`;
//! - failed digests from one source throttled after ten;
//! - RTP with the right SSRC from another port: dropped and counted, and
//!   the viewer sees only the camera's own frames (checked by content);
//! - every control route and token minting without credentials: 401;
//!   read-only keys may list but not act;
//! - MJPEG and snapshots on a token path: 401;
//! - a STUN spray with a guessed ufrag: no route added;
//! - a non-loopback HTTP listener without `http.auth`: refused at start;
//! - the console plays with API auth on (headless Chromium);
//! - a registered device that never answers is asked again later, and
//!   holds a first-query lane only for its DeviceInfo.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use camgate::sim::sip::SipMessage;
use common::marker_viewer::count_markers;
use common::{CHANNEL, DEVICE, Options, Rig, have, http_call, plain, wait_for};
use sha2::Digest as _;

const SERVER_ID: &str = "34020000002000000001";
const REALM: &str = "3402000000";
const PASSWORD: &str = "12345678";
const ADMIN_KEY: &str = "cg-admin-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const READ_KEY: &str = "cg-read-00112233445566778899aabbccddeeff";

fn sha256_hex(s: &str) -> String {
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `http:` lines turning on bearer keys: one admin, one read-only.
fn bearer_yaml() -> String {
    format!(
        "  auth: bearer\n  api_keys:\n    - {{name: ops, sha256: \"{}\", scope: admin}}\n    - {{name: wall, sha256: \"{}\", scope: read}}\n",
        sha256_hex(ADMIN_KEY),
        sha256_hex(READ_KEY)
    )
}

// ---- a bare SIP peer over UDP ----

/// One UDP socket speaking SIP to the gateway by hand.
struct SipPeer {
    sock: UdpSocket,
    server: SocketAddr,
    /// Requests the gateway sent to this socket (queries, SUBSCRIBEs).
    requests_seen: Vec<String>,
}

impl SipPeer {
    fn new(rig: &Rig) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            sock,
            server: ([127, 0, 0, 1], rig.ports.sip).into(),
            requests_seen: Vec::new(),
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// Send `text`, then again after T1 (500 ms, RFC 3261 §17.1.2.2) as a
    /// client whose answer was lost would; the answers to both copies.
    /// Sooner, the first copy's transaction might still absorb the second
    /// (§17.2.2).
    fn send_and_resend(&mut self, text: &str) -> (SipMessage, SipMessage) {
        let limit = Duration::from_secs(3);
        let first = self.exchange(text, limit).expect("an answer");
        std::thread::sleep(Duration::from_millis(500));
        let again = self.exchange(text, limit).expect("an answer again");
        (first, again)
    }

    /// REGISTER `device` from this socket: the challenge, then the digest.
    /// The final answer and the `Authorization` sent.
    fn register_with_digest(&mut self, device: &str, call_id: &str) -> (SipMessage, String) {
        let port = self.port();
        let limit = Duration::from_secs(3);
        let challenge = self
            .exchange(&register(device, port, call_id, 1, 3600, None), limit)
            .expect("401");
        assert_eq!(challenge.status(), Some(401));
        let authorization = answer(&challenge, device, PASSWORD);
        let reply = self
            .exchange(
                &register(device, port, call_id, 2, 3600, Some(&authorization)),
                limit,
            )
            .expect("an answer to the digest REGISTER");
        (reply, authorization)
    }

    /// Send `text` and wait up to `limit` for its final response; requests
    /// arriving meanwhile are answered 200 and remembered.
    fn exchange(&mut self, text: &str, limit: Duration) -> Option<SipMessage> {
        self.sock.send_to(text.as_bytes(), self.server).unwrap();
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 65_535];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(msg) = SipMessage::parse(&buf[..n]) else {
                continue;
            };
            match msg.status() {
                Some(s) if s >= 200 => return Some(msg),
                Some(_) => {}
                None => self.requests_seen.push(format!(
                    "{} {}",
                    msg.method().unwrap_or(""),
                    msg.body_text()
                )),
            }
        }
        None
    }

    /// Listen for `limit`, remembering any request the gateway sends.
    fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 65_535];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf)
                && let Ok(msg) = SipMessage::parse(&buf[..n])
                && msg.status().is_none()
            {
                self.requests_seen.push(format!(
                    "{} {}",
                    msg.method().unwrap_or(""),
                    msg.body_text()
                ));
            }
        }
    }
}

fn branch() -> String {
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

fn keepalive(device: &str, via_port: u16, call_id: &str) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>7</SN>\r\n<DeviceID>{device}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    );
    manscdp_message(device, via_port, call_id, &body)
}

/// An alarm notification (A.2.5.3) of `device`, numbered `sn`.
fn alarm(device: &str, via_port: u16, call_id: &str, sn: u32) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device}</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-12-05T10:00:00</AlarmTime>\r\n</Notify>\r\n"
    );
    manscdp_message(device, via_port, call_id, &body)
}

/// A MANSCDP MESSAGE from `device` with a fresh branch.
fn manscdp_message(device: &str, via_port: u16, call_id: &str, body: &str) -> String {
    format!(
        "MESSAGE sip:{SERVER_ID}@{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{via_port};rport;branch={}\r\n\
         From: <sip:{device}@{REALM}>;tag={:08x}\r\n\
         To: <sip:{SERVER_ID}@{REALM}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 20 MESSAGE\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: Application/MANSCDP+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        branch(),
        rand::random::<u32>(),
        body.len()
    )
}

fn register(
    device: &str,
    via_port: u16,
    call_id: &str,
    cseq: u32,
    expires: u32,
    authorization: Option<&str>,
) -> String {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:{SERVER_ID}@{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{via_port};rport;branch={}\r\n\
         From: <sip:{device}@{REALM}>;tag=7f3a91\r\n\
         To: <sip:{device}@{REALM}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{device}@127.0.0.1:{via_port}>\r\n\
         Max-Forwards: 70\r\n\
         Expires: {expires}\r\n\
         {auth}Content-Length: 0\r\n\r\n",
        branch()
    )
}

/// `Authorization` answering the challenge in `reply` (MD5, no qop).
fn answer(reply: &SipMessage, user: &str, password: &str) -> String {
    let challenge = camgate::sip::digest::DigestChallenge::parse(
        reply
            .header("WWW-Authenticate")
            .expect("401 carries a challenge"),
    )
    .expect("challenge parses");
    let uri = format!("sip:{SERVER_ID}@{REALM}");
    let response = camgate::sip::digest::compute_response(
        user,
        &challenge.realm,
        password,
        "REGISTER",
        &uri,
        &challenge.nonce,
        None,
    );
    format!(
        "Digest username=\"{user}\",realm=\"{}\",nonce=\"{}\",uri=\"{uri}\",response=\"{response}\",algorithm=MD5",
        challenge.realm, challenge.nonce
    )
}

fn device_json(rig: &Rig, id: &str, key: Option<&str>) -> Option<serde_json::Value> {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let r = http_call(
        rig.ports.http,
        "GET",
        "/api/v1/devices",
        &headers,
        b"",
        Duration::from_secs(5),
    )?;
    assert_eq!(r.status, 200, "{}", r.text());
    let list: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    list.as_array()?.iter().find(|d| d["id"] == id).cloned()
}

fn device_address(rig: &Rig, id: &str) -> Option<String> {
    device_json(rig, id, None).and_then(|d| d["address"].as_str().map(str::to_owned))
}

// ---- scope 8, first: keepalive hijack ----

#[test]
fn keepalive_from_another_port_is_refused_and_moves_nothing() {
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let before = device_address(&rig, DEVICE).expect("camera listed");

    let mut attacker = SipPeer::new(&rig);
    let port = attacker.port();
    let reply = attacker
        .exchange(
            &keepalive(DEVICE, port, "hijack-1@127.0.0.1"),
            Duration::from_secs(3),
        )
        .expect("an answer to the keepalive");
    assert_eq!(reply.status(), Some(403), "{}", rig.logs());

    // The camera's own keepalives keep coming; the route must not move.
    std::thread::sleep(Duration::from_millis(500));
    let after = device_address(&rig, DEVICE).expect("camera still listed");
    assert_eq!(after, before, "the keepalive moved the camera's route");
    assert!(!after.ends_with(&format!(":{port}")));
    assert!(
        rig.metric("camgate_sip_rejected_total{reason=\"address_mismatch\"}") >= 1.0,
        "{}",
        rig.metrics()
    );
}

// ---- scope 8, second: the API without credentials ----

/// Every route that changes state or mints a token, with a body good
/// enough to pass parsing were it let through.
const CONTROL_ROUTES: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/api/v1/tokens",
        r#"{"path":"/gb/34020000001320000001/34020000001310000001"}"#,
    ),
    (
        "POST",
        "/api/v1/devices/34020000001320000001/channels/34020000001310000001/ptz",
        r#"{"action":"left","speed":5}"#,
    ),
    (
        "POST",
        "/api/v1/devices/34020000001320000001/channels/34020000001310000001/presets",
        r#"{"action":"call","preset":1}"#,
    ),
    (
        "POST",
        "/api/v1/devices/34020000001320000001/control",
        r#"{"command":"reboot"}"#,
    ),
    ("POST", "/api/v1/devices/34020000001320000001/catalog", ""),
    ("DELETE", "/api/v1/devices/34020000001320000001", ""),
    (
        "POST",
        "/api/v1/devices/34020000001320000001/channels/34020000001310000001/snapshot",
        "{}",
    ),
    (
        "POST",
        "/api/v1/devices/34020000001320000001/channels/34020000001310000001/downloads",
        r#"{"start":"2024-05-01T08:00:00","end":"2024-05-01T08:01:00"}"#,
    ),
    (
        "DELETE",
        "/api/v1/devices/34020000001320000001/channels/34020000001310000001/downloads/1",
        "",
    ),
    (
        "POST",
        "/api/v1/devices/34020000001320000001/channels/34020000001310000001/talk",
        "",
    ),
    (
        "POST",
        "/api/v1/devices/34020000001320000001/channels/34020000001310000001/talk/webrtc",
        "v=0",
    ),
    ("DELETE", "/api/v1/talk/webrtc/0123456789abcdef", ""),
    (
        "POST",
        "/api/v1/webrtc/sessions/0123456789abcdef/playback",
        r#"{"command":"pause"}"#,
    ),
    (
        "POST",
        "/api/v1/ctel/devices/12345678901/ptz",
        r#"{"action":"left"}"#,
    ),
    ("POST", "/api/v1/ctel/devices/12345678901/reboot", ""),
    ("PUT", "/api/v1/ctel/devices/12345678901/video", "{}"),
    ("POST", "/api/v1/foscam/door/ptz", r#"{"action":"left"}"#),
    ("POST", "/api/v1/foscam/door/talk", ""),
];

fn call(rig: &Rig, method: &str, path: &str, body: &str, auth: Option<&str>) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    let r = http_call(
        rig.ports.http,
        method,
        path,
        &headers,
        body.as_bytes(),
        Duration::from_secs(15),
    )
    .expect("HTTP answer");
    let text = r.text();
    (r.status, r.head + "\n" + &text)
}

#[test]
fn api_without_credentials_is_401_on_every_control_route() {
    let mut rig = Rig::start(Options {
        http_extra: bearer_yaml(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    let admin = format!("Bearer {ADMIN_KEY}");
    let read = format!("Bearer {READ_KEY}");
    wait_for(Duration::from_secs(20), || {
        device_json(&rig, DEVICE, Some(ADMIN_KEY)).filter(|d| d["channel_count"] != 0)
    })
    .expect("camera registered");

    for (method, path, body) in CONTROL_ROUTES {
        let (status, text) = call(&rig, method, path, body, None);
        assert_eq!(status, 401, "{method} {path} without credentials: {text}");
        assert!(
            text.contains("www-authenticate: bearer"),
            "{method} {path}: {text}"
        );
        let (status, text) = call(&rig, method, path, body, Some("Bearer not-a-key"));
        assert_eq!(status, 401, "{method} {path} with a wrong key: {text}");
        let (status, text) = call(&rig, method, path, body, Some(&read));
        assert_eq!(status, 403, "{method} {path} with a read-only key: {text}");
    }
    // Listing: needs a key, any scope.
    assert_eq!(call(&rig, "GET", "/api/v1/devices", "", None).0, 401);
    assert_eq!(call(&rig, "GET", "/api/v1/streams", "", None).0, 401);
    assert_eq!(call(&rig, "GET", "/api/v1/devices", "", Some(&read)).0, 200);
    // The admin key acts: a token is minted.
    let (status, text) = call(
        &rig,
        "POST",
        CONTROL_ROUTES[0].1,
        CONTROL_ROUTES[0].2,
        Some(&admin),
    );
    assert_eq!(status, 201, "{text}");
    // Probes and metrics keep their own switch (metrics.auth, off).
    assert_eq!(call(&rig, "GET", "/healthz", "", None).0, 200);
    assert_eq!(call(&rig, "GET", "/metrics", "", None).0, 200);
    // The console itself loads; it asks for the key.
    assert_eq!(call(&rig, "GET", "/", "", None).0, 200);
    let refused = rig.metric("camgate_http_auth_failures_total{reason=\"missing\"}");
    assert!(refused >= CONTROL_ROUTES.len() as f64, "{}", rig.metrics());
    // Still registered: the unauthenticated DELETE did nothing.
    assert!(device_json(&rig, DEVICE, Some(ADMIN_KEY)).is_some());
}

// ---- unknown device, replayed REGISTER, throttle ----

#[test]
fn unknown_device_keepalive_creates_nothing_and_sends_nothing() {
    // Adoption on: even then nothing happens before a digest REGISTER.
    let rig = Rig::start(Options {
        extra_yaml: "gb:\n  adopt_keepalive: true\n".into(),
        ..Options::default()
    });
    let stranger = "34020000001320000666";
    let mut peer = SipPeer::new(&rig);
    let port = peer.port();
    for i in 0..3 {
        let reply = peer
            .exchange(
                &keepalive(stranger, port, &format!("unknown-{i}@127.0.0.1")),
                Duration::from_secs(3),
            )
            .expect("an answer");
        assert_eq!(reply.status(), Some(403), "{}", rig.logs());
    }
    // Nothing comes back to the claimed address: no DeviceInfo, Catalog or
    // SUBSCRIBE (with a spoofed source that would be a reflector).
    peer.drain(Duration::from_secs(3));
    assert!(
        peer.requests_seen.is_empty(),
        "the gateway sent {:?}",
        peer.requests_seen
    );
    assert!(device_json(&rig, stranger, None).is_none());
    assert_eq!(rig.metric("camgate_devices_online "), 0.0);
    assert!(rig.metric("camgate_sip_registrations_total{outcome=\"adopt_pending\"}") >= 3.0);
}

#[test]
fn replayed_register_from_another_port_is_refused() {
    let rig = Rig::start(Options::default());
    let device = "34020000001320000042";
    let mut owner = SipPeer::new(&rig);
    let owner_port = owner.port();
    let call_id = "replay-victim@127.0.0.1";
    let (ok, authorization) = owner.register_with_digest(device, call_id);
    assert_eq!(ok.status(), Some(200), "{}", rig.logs());
    let registered_at = device_address(&rig, device).expect("registered");
    assert!(registered_at.ends_with(&format!(":{owner_port}")));

    // The sniffed Authorization replayed from elsewhere: to move the route,
    // then to unregister the device.
    let mut attacker = SipPeer::new(&rig);
    let attacker_port = attacker.port();
    for (cseq, expires) in [(3, 3600), (4, 0)] {
        let reply = attacker
            .exchange(
                &register(
                    device,
                    attacker_port,
                    call_id,
                    cseq,
                    expires,
                    Some(&authorization),
                ),
                Duration::from_secs(3),
            )
            .expect("an answer to the replay");
        assert!(
            matches!(reply.status(), Some(401 | 403)),
            "replay (Expires {expires}) answered {:?}",
            reply.status()
        );
    }
    // And from the owner's own port too: the nonce was single-use.
    let reply = owner
        .exchange(
            &register(device, owner_port, call_id, 5, 0, Some(&authorization)),
            Duration::from_secs(3),
        )
        .expect("an answer");
    assert!(matches!(reply.status(), Some(401 | 403)));
    assert_eq!(device_address(&rig, device), Some(registered_at));
}

#[test]
fn failed_digests_are_throttled_after_ten() {
    let rig = Rig::start(Options::default());
    let device = "34020000001320000043";
    let mut guesser = SipPeer::new(&rig);
    let port = guesser.port();
    let mut statuses = Vec::new();
    for i in 0..12u32 {
        let call_id = format!("guess-{i}@127.0.0.1");
        let first = guesser
            .exchange(
                &register(device, port, &call_id, 1, 3600, None),
                Duration::from_secs(3),
            )
            .expect("an answer");
        if first.status() != Some(401) {
            statuses.push(first.status());
            continue;
        }
        let wrong = answer(&first, device, &format!("guess{i}"));
        let second = guesser
            .exchange(
                &register(device, port, &call_id, 2, 3600, Some(&wrong)),
                Duration::from_secs(3),
            )
            .expect("an answer");
        statuses.push(second.status());
    }
    assert!(statuses.iter().all(|s| *s == Some(403)), "{statuses:?}");
    // Then even the right password waits out the cool-down.
    let first = guesser
        .exchange(
            &register(device, port, "late@127.0.0.1", 1, 3600, None),
            Duration::from_secs(3),
        )
        .expect("an answer");
    assert_eq!(first.status(), Some(403));
    assert!(device_json(&rig, device, None).is_none());
    let throttled = rig.metric("camgate_sip_registrations_total{outcome=\"throttled\"}");
    assert!(throttled >= 3.0, "{}", rig.metrics());
    assert!(rig.metric("camgate_sip_rejected_total{reason=\"throttled\"}") >= 3.0);
}

// ---- RTP injection ----

/// `port=… ssrc=…` of the gateway's "sending INVITE" line.
fn invite_target(rig: &Rig) -> Option<(u16, u32)> {
    let log = plain(&rig.gateway.log_text());
    let line = log.lines().find(|l| l.contains("sending INVITE"))?;
    let field = |name: &str| -> Option<String> {
        let rest = line.split(&format!(" {name}=")).nth(1)?;
        Some(rest.split(' ').next()?.trim_matches('"').to_owned())
    };
    Some((field("port")?.parse().ok()?, field("ssrc")?.parse().ok()?))
}

#[test]
fn rtp_with_the_right_ssrc_from_another_port_is_dropped() {
    use bytes::BytesMut;
    use camgate::media::ps_mux::PsMuxer;
    use camgate::sim::clip::Clip;
    use camgate::sim::frame_marker::marker_sei;
    use camgate::sim::rtp::RtpPacketizer;

    let mut rig = Rig::start(Options {
        idle_timeout: 5.0,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &["--mark-frames"]);
    rig.wait_channel(DEVICE, CHANNEL);
    let url = rig.url(DEVICE, CHANNEL);
    let rtsp = rig.ports.rtsp;
    let viewer =
        std::thread::spawn(move || count_markers(rtsp, &url, DEVICE, 150, Duration::from_secs(40)));
    let (port, ssrc) = wait_for(Duration::from_secs(10), || invite_target(&rig))
        .unwrap_or_else(|| panic!("no INVITE logged\n{}", rig.logs()));
    // Let the camera's first packets pin the source, then inject.
    std::thread::sleep(Duration::from_secs(1));
    let evil = Clip::demo().with_unit_in_every_frame(&marker_sei("injected-by-a-stranger", false));
    let mut muxer = PsMuxer::new();
    let mut rtp = RtpPacketizer::new(ssrc, 96, rand::random());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0u64;
    for (i, unit) in evil.units().iter().cycle().take(75).enumerate() {
        let mut ps = BytesMut::new();
        let pts = 3600 * i as u64;
        muxer.write_video(&unit.nals, pts, unit.keyframe, &mut ps);
        for packet in rtp.packetize(&ps, pts as u32) {
            sock.send_to(&packet, ("127.0.0.1", port)).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let seen = viewer.join().unwrap();
    assert!(seen.error.is_none(), "{:?}\n{}", seen.error, rig.logs());
    assert!(seen.own >= 150);
    assert!(
        seen.foreign.is_empty(),
        "injected frames reached the viewer: {:?}",
        &seen.foreign[..seen.foreign.len().min(5)]
    );
    let dropped = rig.metric("camgate_rtp_errors_total{kind=\"foreign_source\"}");
    assert!(
        dropped >= sent as f64,
        "{dropped} dropped of {sent} sent\n{}",
        rig.metrics()
    );
}

// ---- MJPEG and snapshots on a protected path ----

#[test]
fn mjpeg_and_snapshot_on_a_token_path_need_the_token() {
    let rig = Rig::start_foscam(
        Options {
            rtsp_extra: "  auth:\n    paths:\n      - {prefix: \"foscam/door\", mode: token}\n"
                .into(),
            http_extra: bearer_yaml(),
            ..Options::default()
        },
        "door",
        &[],
        "",
    );
    let get = |path: &str| {
        http_call(
            rig.ports.http,
            "GET",
            path,
            &[],
            b"",
            Duration::from_secs(3),
        )
        .expect("HTTP answer")
    };
    for path in ["/mjpeg/foscam/door", "/snapshot/foscam/door.jpg"] {
        let r = get(path);
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(r.head.contains("www-authenticate: bearer"), "{}", r.head);
        let r = get(&format!("{path}?hashtoken=0123456789abcdef"));
        assert_eq!(r.status, 401, "{path} with a made-up token");
    }
    // A token minted by an admin opens the snapshot once.
    let mint = |path: &str| {
        let (status, text) = call(
            &rig,
            "POST",
            "/api/v1/tokens",
            &format!("{{\"path\":\"{path}\"}}"),
            Some(&format!("Bearer {ADMIN_KEY}")),
        );
        assert_eq!(status, 201, "{text}");
        let body = text.split("\n").last().unwrap_or_default().to_owned();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["token"].as_str().unwrap().to_owned()
    };
    let token = mint("/foscam/door");
    let r = http_call(
        rig.ports.http,
        "GET",
        &format!("/snapshot/foscam/door.jpg?hashtoken={token}"),
        &[],
        b"",
        Duration::from_secs(15),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), rig.logs());
    assert_eq!(&r.body[..2], &[0xFF, 0xD8], "not a JPEG");
    let again = get(&format!("/snapshot/foscam/door.jpg?hashtoken={token}"));
    assert_eq!(again.status, 401, "a token works once");
}

// ---- STUN spray ----

/// A Binding request for `ufrag` signed with a wrong password.
fn forged_binding(ufrag: &str) -> Vec<u8> {
    use str0m::ice::{StunMessage, TransId};
    let username = format!("{ufrag}:abcd");
    let msg = StunMessage::binding_request(&username, TransId::new(), true, 1, 100, true);
    let mut buf = vec![0u8; 512];
    let fake_hmac = |_key: &[u8], _data: &[&[u8]]| [0x5a; 20];
    let n = msg.to_bytes(Some(b"guessed"), &mut buf, fake_hmac).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn stun_spray_with_a_guessed_ufrag_adds_no_route() {
    const OFFER: &str = include_str!("../src/webrtc/testdata/chromium-156-offer.sdp");
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let r = http_call(
        rig.ports.http,
        "POST",
        &format!("/whep/gb/{DEVICE}/{CHANNEL}"),
        &[("Content-Type", "application/sdp")],
        OFFER.as_bytes(),
        Duration::from_secs(15),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}\n{}", r.text(), rig.logs());
    let answer = r.text();
    let ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("ufrag in the answer")
        .trim()
        .to_owned();
    let (ip, port) = answer
        .lines()
        .find_map(|l| {
            let c = l.strip_prefix("a=candidate:")?;
            let f: Vec<&str> = c.split(' ').collect();
            Some((f.get(4)?.to_string(), f.get(5)?.parse::<u16>().ok()?))
        })
        .expect("a candidate in the answer");
    let before = rig.metric("camgate_webrtc_routes ");
    let bad = rig.metric("camgate_webrtc_datagrams_dropped_total{reason=\"bad_integrity\"}");
    let request = forged_binding(&ufrag);
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&request, (ip.as_str(), port)).unwrap();
        sockets.push(s);
    }
    let counted = wait_for(Duration::from_secs(5), || {
        let now = rig.metric("camgate_webrtc_datagrams_dropped_total{reason=\"bad_integrity\"}");
        (now - bad >= 50.0).then_some(now)
    });
    assert!(counted.is_some(), "{}", rig.metrics());
    assert_eq!(rig.metric("camgate_webrtc_routes "), before, "routes grew");
    assert!(before <= 1.0);
}

// ---- safe defaults ----

#[test]
fn non_loopback_http_without_auth_refuses_to_start() {
    let dir = common::tempdir::Dir::new();
    let path = dir.path().join("open.yaml");
    std::fs::write(&path, "http:\n  listen: \"0.0.0.0:18080\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_camgate"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`http.auth`"), "{stderr}");
    // An explicit choice, even none, starts.
    std::fs::write(&path, "http:\n  listen: \"0.0.0.0:18080\"\n  auth: none\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_camgate"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The embedded default listens on loopback: `camgate --demo` works.
    let embedded = camgate::config::Config::embedded();
    assert!(embedded.http.listen.ip().is_loopback());
}

// ---- the console with API auth ----

#[test]
fn console_plays_with_api_auth_on() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    use common::webdriver::Browser;
    let mut rig = Rig::start(Options {
        http_extra: bearer_yaml(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    wait_for(Duration::from_secs(20), || {
        device_json(&rig, DEVICE, Some(ADMIN_KEY)).filter(|d| d["channel_count"] != 0)
    })
    .expect("camera registered");
    let browser = Browser::start(rig.ports.spare, rig.dir.path().join("chromedriver.log"));
    browser.goto(&format!(
        "http://127.0.0.1:{}/#key={ADMIN_KEY}",
        rig.ports.http
    ));
    let channel = format!("li.channel[data-path=\"gb/{DEVICE}/{CHANNEL}\"]");
    let listed = wait_for(Duration::from_secs(15), || {
        let v = browser.eval(&format!(
            "const c = document.querySelector('{channel}'); if (c) c.click(); return !!c;"
        ));
        (v == serde_json::Value::Bool(true)).then_some(())
    });
    assert!(
        listed.is_some(),
        "the console listed no channel\n{}",
        rig.logs()
    );
    let frames = wait_for(Duration::from_secs(20), || {
        let f = browser
            .eval("return Number(document.getElementById('stats').dataset.framesDecoded || 0);")
            .as_u64()
            .unwrap_or(0);
        (f >= 10).then_some(f)
    });
    assert!(frames.is_some(), "no frames decoded\n{}", rig.logs());
    // The key left the address bar.
    let url = browser.eval("return location.href;");
    assert!(
        !url.as_str().unwrap_or_default().contains(ADMIN_KEY),
        "{url}"
    );
}

// ---- stateless answers (RFC 3261 §8.2.7) ----

/// The tag of a response's To header.
fn to_tag(msg: &SipMessage) -> String {
    let to = msg.header("To").expect("a To header");
    to.split(";tag=")
        .nth(1)
        .expect("a To tag")
        .split(';')
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn retransmitted_registers_and_keepalives_are_answered_again_under_one_to_tag() {
    let rig = Rig::start(Options::default());
    let device = "34020000001320000043";
    let mut peer = SipPeer::new(&rig);
    let port = peer.port();
    // A REGISTER and its retransmission (same branch): the challenge is
    // answered statelessly, each copy afresh, under one To tag.
    let first = register(device, port, "stateless-1@127.0.0.1", 1, 3600, None);
    let (a, b) = peer.send_and_resend(&first);
    assert_eq!((a.status(), b.status()), (Some(401), Some(401)));
    assert_eq!(
        to_tag(&a),
        to_tag(&b),
        "{}\n{}",
        a.body_text(),
        b.body_text()
    );
    // A different request gets a different tag.
    let other = register(device, port, "stateless-2@127.0.0.1", 1, 3600, None);
    let c = peer.exchange(&other, Duration::from_secs(3)).expect("401");
    assert_ne!(to_tag(&a), to_tag(&c));
    // Either challenge's nonce works: each was issued to this source.
    let authorization = answer(&b, device, PASSWORD);
    let accepted = register(
        device,
        port,
        "stateless-1@127.0.0.1",
        2,
        3600,
        Some(&authorization),
    );
    // Its retransmission (the 200 lost) gets the 200 again, not a 401 for
    // the nonce already used, and under the same tag.
    let (ok, again) = peer.send_and_resend(&accepted);
    assert_eq!(ok.status(), Some(200), "{}", rig.logs());
    assert_eq!(again.status(), Some(200), "{}", rig.logs());
    assert_eq!(to_tag(&ok), to_tag(&again));
    assert_eq!(again.header("Expires"), ok.header("Expires"));
    // A new REGISTER with that used nonce is still refused.
    let reused = register(
        device,
        port,
        "stateless-1@127.0.0.1",
        3,
        3600,
        Some(&authorization),
    );
    let refused = peer
        .exchange(&reused, Duration::from_secs(3))
        .expect("an answer");
    assert!(
        matches!(refused.status(), Some(401 | 403)),
        "{:?}",
        refused.status()
    );

    // A keepalive and its retransmission: both answered 200, one tag, and
    // the device counted as heard from each time.
    let before = rig.metric("camgate_sip_keepalives_total");
    let alive = keepalive(device, port, "stateless-ka@127.0.0.1");
    let (k1, k2) = peer.send_and_resend(&alive);
    assert_eq!((k1.status(), k2.status()), (Some(200), Some(200)));
    assert_eq!(to_tag(&k1), to_tag(&k2));
    let counted = wait_for(Duration::from_secs(3), || {
        (rig.metric("camgate_sip_keepalives_total") >= before + 2.0).then_some(())
    });
    assert!(counted.is_some(), "{}", rig.metrics());

    // An alarm and its retransmission: both answered 200 under one tag
    // without a stored transaction, and recorded once. A second alarm
    // (a new request) is recorded too.
    let first_alarm = alarm(device, port, "stateless-alarm-1@127.0.0.1", 31);
    let (a1, a2) = peer.send_and_resend(&first_alarm);
    assert_eq!((a1.status(), a2.status()), (Some(200), Some(200)));
    assert_eq!(to_tag(&a1), to_tag(&a2));
    let second_alarm = alarm(device, port, "stateless-alarm-2@127.0.0.1", 32);
    let a3 = peer
        .exchange(&second_alarm, Duration::from_secs(3))
        .expect("200");
    assert_eq!(a3.status(), Some(200));
    let alarm_sns = || -> Vec<u64> {
        let Some((200, body)) = common::http_get(rig.ports.http, "/api/v1/events") else {
            return Vec::new();
        };
        let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        events
            .iter()
            .filter(|e| e["type"] == "alarm" && e["device_id"] == device)
            .filter_map(|e| e["sn"].as_u64())
            .collect()
    };
    let recorded = wait_for(Duration::from_secs(3), || {
        let sns = alarm_sns();
        (sns.len() >= 2).then_some(sns)
    });
    // Let a late duplicate show up, if there were one.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (recorded, alarm_sns()),
        (Some(vec![31, 32]), vec![31, 32]),
        "{}",
        rig.logs()
    );
}

#[test]
fn a_registered_device_that_never_answers_holds_a_lane_only_for_its_device_info() {
    let rig = Rig::start(Options::default());
    let device = "34020000001320000044";
    let mut peer = SipPeer::new(&rig);
    let (ok, _) = peer.register_with_digest(device, "silent-1@127.0.0.1");
    assert_eq!(ok.status(), Some(200), "{}", rig.logs());

    // Silent from here on: not even the MESSAGE transaction is answered.
    // DeviceInfo times out after 5 s; the device is asked again 2 s later
    // (7 s), not sent the alarm SUBSCRIBE and the catalog query, each of
    // which would time out in turn while holding one of the 64 lanes that
    // every newly registered device waits for. The third try would come at
    // 16 s.
    peer.drain(Duration::from_secs(10));
    let device_infos: std::collections::BTreeSet<&String> = peer
        .requests_seen
        .iter()
        .filter(|r| r.starts_with("MESSAGE") && r.contains("<CmdType>DeviceInfo</CmdType>"))
        .collect();
    let others: Vec<&String> = peer
        .requests_seen
        .iter()
        .filter(|r| !r.contains("<CmdType>DeviceInfo</CmdType>"))
        .collect();
    assert!(
        others.is_empty(),
        "asked more of a device that answered nothing: {others:?}"
    );
    // Distinct bodies (each query has its own SN); retransmissions of one
    // query repeat its body.
    assert_eq!(
        device_infos.len(),
        2,
        "{:?}\n{}",
        peer.requests_seen,
        rig.logs()
    );
    assert!(rig.metric("camgate_gb_queries_total{outcome=\"timeout\"}") >= 1.0);
}
