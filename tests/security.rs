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
//! - the console plays with API auth on (headless Chromium).

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
                None => self.requests_seen.push(msg.body_text() + &msg.method().unwrap_or("")),
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
                self.requests_seen
                    .push(format!("{} {}", msg.method().unwrap_or(""), msg.body_text()));
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
    list.as_array()?
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
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
    ("POST", "/api/v1/tokens", r#"{"path":"/gb/34020000001320000001/34020000001310000001"}"#),
    ("POST", "/api/v1/devices/34020000001320000001/channels/34020000001310000001/ptz", r#"{"action":"left","speed":5}"#),
    ("POST", "/api/v1/devices/34020000001320000001/channels/34020000001310000001/presets", r#"{"action":"call","preset":1}"#),
    ("POST", "/api/v1/devices/34020000001320000001/control", r#"{"command":"reboot"}"#),
    ("POST", "/api/v1/devices/34020000001320000001/catalog", ""),
    ("DELETE", "/api/v1/devices/34020000001320000001", ""),
    ("POST", "/api/v1/devices/34020000001320000001/channels/34020000001310000001/snapshot", "{}"),
    ("POST", "/api/v1/devices/34020000001320000001/channels/34020000001310000001/downloads", r#"{"start":"2024-05-01T08:00:00","end":"2024-05-01T08:01:00"}"#),
    ("DELETE", "/api/v1/devices/34020000001320000001/channels/34020000001310000001/downloads/1", ""),
    ("POST", "/api/v1/devices/34020000001320000001/channels/34020000001310000001/talk", ""),
    ("POST", "/api/v1/devices/34020000001320000001/channels/34020000001310000001/talk/webrtc", "v=0"),
    ("DELETE", "/api/v1/talk/webrtc/0123456789abcdef", ""),
    ("POST", "/api/v1/webrtc/sessions/0123456789abcdef/playback", r#"{"command":"pause"}"#),
    ("POST", "/api/v1/ctel/devices/12345678901/ptz", r#"{"action":"left"}"#),
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
    (r.status, r.head + "\n" + &r.text())
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
        assert!(text.contains("www-authenticate: bearer"), "{method} {path}: {text}");
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
    let (status, text) = call(&rig, "POST", CONTROL_ROUTES[0].1, CONTROL_ROUTES[0].2, Some(&admin));
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
