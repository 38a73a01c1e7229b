//! Table-style tests of the device core, driven with canned SIP text.

use super::*;

const SERVER: &str = "127.0.0.1:5060";
const LOCAL: &str = "127.0.0.1:15060";
const MEDIA: &str = "127.0.0.1:16000";

fn config() -> DeviceConfig {
    let mut c = DeviceConfig::new(
        SERVER.parse().unwrap(),
        LOCAL.parse().unwrap(),
        MEDIA.parse().unwrap(),
    );
    c.device_id = "34020000001320000088".into();
    c.keepalive_interval = Duration::from_secs(60);
    c
}

struct Harness {
    dev: GbDevice,
    now: Instant,
    server: SocketAddr,
}

impl Harness {
    fn new(cfg: DeviceConfig) -> Self {
        Self {
            dev: GbDevice::new(cfg, 42),
            now: Instant::now(),
            server: SERVER.parse().unwrap(),
        }
    }

    fn out(&mut self) -> Vec<SipMessage> {
        let mut v = Vec::new();
        while let Some(t) = self.dev.poll_transmit() {
            v.push(SipMessage::parse(&t.payload).expect("device sent unparsable SIP"));
        }
        v
    }

    fn raw_out(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.dev.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<DeviceEvent> {
        std::iter::from_fn(|| self.dev.poll_event()).collect()
    }

    fn feed(&mut self, text: &str) -> Result<(), DeviceError> {
        let from = self.server;
        self.dev.handle_datagram(self.now, from, text.as_bytes())
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.dev.handle_timeout(self.now);
    }

    /// Run timers step by step until `until` has passed.
    fn run_for(&mut self, until: Duration) {
        let end = self.now + until;
        while let Some(t) = self.dev.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.dev.handle_timeout(self.now);
        }
        self.now = end;
        self.dev.handle_timeout(self.now);
    }

    /// Start, answer the REGISTER with 200, return the first keepalive.
    fn registered(&mut self) -> SipMessage {
        self.dev.start(self.now);
        let reg = self.out().remove(0);
        self.feed(&reply(&reg, "200 OK", "Expires: 3600\r\n"))
            .unwrap();
        let out = self.out();
        assert_eq!(out.len(), 1, "expected the first keepalive");
        self.events();
        out.into_iter().next().unwrap()
    }
}

/// A platform's response to `req`, with extra header lines.
fn reply(req: &SipMessage, status: &str, extra: &str) -> String {
    format!(
        "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=srv1\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        req.header("Via").unwrap(),
        req.header("From").unwrap(),
        req.header("To").unwrap(),
        req.call_id().unwrap(),
        req.header("CSeq").unwrap(),
    )
}

fn request(
    method: &str,
    uri: &str,
    call_id: &str,
    branch: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch={branch}\r\n\
         From: <sip:34020000002000000001@3402000000>;tag=plat1\r\n\
         To: <sip:34020000001310000001@3402000000>{extra}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 20 {method}\r\n\
         Contact: <sip:34020000002000000001@127.0.0.1:5060>\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const OFFER: &str = "v=0\r\n\
o=34020000001310000001 0 0 IN IP4 127.0.0.1\r\n\
s=Play\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=video 30000 RTP/AVP 96 98 97\r\n\
a=recvonly\r\n\
a=rtpmap:96 PS/90000\r\n\
a=rtpmap:98 H264/90000\r\n\
a=rtpmap:97 MPEG4/90000\r\n\
y=0100000001\r\n";

fn invite(call_id: &str, branch: &str, sdp: &str) -> String {
    let mut r = request(
        "INVITE",
        "sip:34020000001310000001@127.0.0.1:15060",
        call_id,
        branch,
        "",
        sdp,
    );
    r = r.replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nContent-Type: APPLICATION/SDP\r\nSubject: 34020000001310000001:0100000001,34020000002000000001:0\r\n",
    );
    r
}

fn status_of(m: &SipMessage) -> u16 {
    m.status().unwrap_or(0)
}

#[test]
fn register_answers_401_with_reference_digest() {
    let mut h = Harness::new(config());
    h.dev.start(h.now);
    let out = h.out();
    assert_eq!(out.len(), 1);
    let reg = &out[0];
    assert_eq!(
        reg.start,
        sip::StartLine::Request {
            method: "REGISTER".into(),
            uri: "sip:34020000002000000001@3402000000".into()
        }
    );
    assert_eq!(
        reg.header_uri("From"),
        Some("sip:34020000001320000088@3402000000")
    );
    assert_eq!(
        reg.header_uri("To"),
        Some("sip:34020000001320000088@3402000000")
    );
    assert_eq!(reg.header("Expires"), Some("3600"));
    assert_eq!(reg.cseq(), Some((1, "REGISTER")));
    assert!(reg.header("Authorization").is_none());
    assert_eq!(
        reg.header_uri("Contact"),
        Some("sip:34020000001320000088@127.0.0.1:15060")
    );

    h.feed(&reply(
        reg,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"3402000000\", nonce=\"9485904448344456af5449b51759016e\"\r\n",
    ))
    .unwrap();
    let out = h.out();
    assert_eq!(out.len(), 1);
    let auth_reg = &out[0];
    assert_eq!(auth_reg.cseq(), Some((2, "REGISTER")));
    assert_eq!(auth_reg.call_id(), reg.call_id());
    assert_eq!(auth_reg.from_tag(), reg.from_tag());
    assert_ne!(auth_reg.top_via_branch(), reg.top_via_branch());
    let auth = auth_reg.header("Authorization").unwrap();
    assert!(auth.contains("username=\"34020000001320000088\""), "{auth}");
    assert!(
        auth.contains("uri=\"sip:34020000002000000001@3402000000\""),
        "{auth}"
    );
    assert!(
        auth.contains("response=\"b1cfb3f036fbcf7d13b8ee3bbff89906\""),
        "{auth}"
    );
    assert!(!auth.contains("qop"), "{auth}");

    h.feed(&reply(auth_reg, "200 OK", "Expires: 3600\r\n"))
        .unwrap();
    assert!(h.dev.is_registered());
    assert_eq!(
        h.events(),
        vec![
            DeviceEvent::Registered { expires: 3600 },
            DeviceEvent::KeepaliveSent { sn: 1 }
        ]
    );
    let ka = h.out();
    assert_eq!(ka.len(), 1);
    assert_eq!(ka[0].method(), Some("MESSAGE"));
    assert_eq!(
        ka[0].header("Content-Type"),
        Some("Application/MANSCDP+xml")
    );
    let body = ka[0].body_text();
    assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"GB2312\"?>"));
    for part in [
        "<Notify>",
        "<CmdType>Keepalive</CmdType>",
        "<SN>1</SN>",
        "<DeviceID>34020000001320000088</DeviceID>",
        "<Status>OK</Status>",
    ] {
        assert!(body.contains(part), "{part} missing in {body}");
    }
}

#[test]
fn qop_auth_challenge_gets_cnonce_and_nc() {
    let mut h = Harness::new(config());
    h.dev.start(h.now);
    let reg = h.out().remove(0);
    h.feed(&reply(
        &reg,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"3402000000\", nonce=\"abc\", qop=\"auth\", opaque=\"xyz\"\r\n",
    ))
    .unwrap();
    let reg2 = h.out().remove(0);
    let auth = reg2.header("Authorization").unwrap();
    let ch = DigestChallenge::parse(&auth.replace("username", "x-user")).unwrap();
    // Recompute from the fields the device sent.
    let field = |name: &str| -> String {
        let at = auth.find(&format!("{name}=")).unwrap() + name.len() + 1;
        let rest = &auth[at..];
        let rest = rest.strip_prefix('"').unwrap_or(rest);
        rest.split(['"', ',']).next().unwrap().to_owned()
    };
    assert_eq!(field("qop"), "auth");
    assert_eq!(field("nc"), "00000001");
    assert_eq!(field("opaque"), "xyz");
    let expected = sip::digest_response(
        "34020000001320000088",
        "3402000000",
        "12345678",
        "REGISTER",
        "sip:34020000002000000001@3402000000",
        &ch.nonce,
        Some((&field("cnonce"), 1)),
    );
    assert_eq!(field("response"), expected);
}

#[test]
fn wrong_password_fails_then_retries_later() {
    let mut cfg = config();
    cfg.password = Some("wrong".into());
    let mut h = Harness::new(cfg);
    h.dev.start(h.now);
    let challenge = "WWW-Authenticate: Digest realm=\"3402000000\", nonce=\"n1\"\r\n";
    let reg = h.out().remove(0);
    h.feed(&reply(&reg, "401 Unauthorized", challenge)).unwrap();
    let reg2 = h.out().remove(0);
    assert!(reg2.header("Authorization").is_some());
    // Same nonce again, not stale: the password is wrong. Stop asking.
    h.feed(&reply(&reg2, "401 Unauthorized", challenge))
        .unwrap();
    assert!(h.out().is_empty());
    assert_eq!(
        h.events(),
        vec![DeviceEvent::RegistrationFailed {
            status: Some(401),
            reason: "credentials refused".into()
        }]
    );
    assert!(!h.dev.is_registered());
    h.advance(Duration::from_secs(5));
    let again = h.out();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].method(), Some("REGISTER"));
}

#[test]
fn server_that_keeps_challenging_is_a_failure() {
    let mut h = Harness::new(config());
    h.dev.start(h.now);
    for i in 0..MAX_AUTH_ANSWERS {
        let reg = h.out().remove(0);
        let ch = format!("WWW-Authenticate: Digest realm=\"3402000000\", nonce=\"n{i}\"\r\n");
        h.feed(&reply(&reg, "401 Unauthorized", &ch)).unwrap();
    }
    let reg = h.out().remove(0);
    h.feed(&reply(
        &reg,
        "401 Unauthorized",
        "WWW-Authenticate: Digest nonce=\"fresh\"\r\n",
    ))
    .unwrap();
    assert!(h.out().is_empty());
    assert!(matches!(
        h.events().as_slice(),
        [DeviceEvent::RegistrationFailed {
            status: Some(401),
            ..
        }]
    ));
}

#[test]
fn unanswered_register_is_retransmitted_then_fails() {
    let mut h = Harness::new(config());
    h.dev.start(h.now);
    let first = h.raw_out().remove(0);
    let mut times = Vec::new();
    let start = h.now;
    // Until Timer F (32 s) every timer firing is a retransmission.
    while let Some(t) = h.dev.poll_timeout() {
        if t - start >= Duration::from_secs(31) {
            break;
        }
        h.now = t;
        h.dev.handle_timeout(t);
        for t in h.raw_out() {
            assert_eq!(t.payload, first.payload, "retransmission must be identical");
            times.push((h.now - start).as_millis());
        }
    }
    // Timer E: 0.5, 1.5, 3.5, 7.5, then every 4 s (T2).
    assert_eq!(&times[..5], &[500, 1500, 3500, 7500, 11500]);
    h.run_for(Duration::from_secs(40));
    let events = h.events();
    assert!(
        events.contains(&DeviceEvent::RegistrationFailed {
            status: None,
            reason: "no answer".into()
        }),
        "{events:?}"
    );
}

#[test]
fn provisional_response_slows_retransmission() {
    let mut h = Harness::new(config());
    h.dev.start(h.now);
    let reg = h.out().remove(0);
    h.feed(&reply(&reg, "100 Trying", "")).unwrap();
    h.advance(Duration::from_millis(600));
    assert!(h.out().is_empty());
    h.advance(Duration::from_secs(4));
    assert_eq!(h.out().len(), 1);
}

#[test]
fn refresh_before_expiry_and_granted_expires() {
    let mut h = Harness::new(config());
    h.dev.start(h.now);
    let reg = h.out().remove(0);
    h.feed(&reply(&reg, "200 OK", "Expires: 100\r\n")).unwrap();
    assert_eq!(h.events()[0], DeviceEvent::Registered { expires: 100 });
    h.out();
    h.advance(Duration::from_secs(49));
    assert!(h.out().iter().all(|m| m.method() != Some("REGISTER")));
    h.advance(Duration::from_secs(1));
    let out = h.out();
    let refresh = out
        .iter()
        .find(|m| m.method() == Some("REGISTER"))
        .expect("refresh REGISTER");
    assert_eq!(refresh.call_id(), reg.call_id());
    assert_eq!(refresh.cseq(), Some((2, "REGISTER")));
    // A refresh does not restart the keepalive cycle.
    h.feed(&reply(refresh, "200 OK", "Expires: 100\r\n"))
        .unwrap();
    assert!(h.out().is_empty());
}

#[test]
fn refresh_reuses_challenge() {
    let mut h = Harness::new(config());
    h.dev.start(h.now);
    let reg = h.out().remove(0);
    h.feed(&reply(
        &reg,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"3402000000\", nonce=\"n1\"\r\n",
    ))
    .unwrap();
    let reg2 = h.out().remove(0);
    h.feed(&reply(&reg2, "200 OK", "Expires: 3600\r\n"))
        .unwrap();
    h.out();
    h.advance(Duration::from_secs(3540));
    let out = h.out();
    let refresh = out.iter().find(|m| m.method() == Some("REGISTER")).unwrap();
    assert!(
        refresh
            .header("Authorization")
            .unwrap()
            .contains("nonce=\"n1\"")
    );
    // The server wants a fresh nonce: answered once more, not a failure.
    h.feed(&reply(
        refresh,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"3402000000\", nonce=\"n2\", stale=true\r\n",
    ))
    .unwrap();
    let reg3 = h.out().remove(0);
    assert!(
        reg3.header("Authorization")
            .unwrap()
            .contains("nonce=\"n2\"")
    );
    h.feed(&reply(&reg3, "200 OK", "")).unwrap();
    assert!(h.dev.is_registered());
}

#[test]
fn keepalives_are_periodic_and_misses_cause_reregistration() {
    let mut h = Harness::new(config());
    let ka = h.registered();
    h.feed(&reply(&ka, "200 OK", "")).unwrap();
    h.advance(Duration::from_secs(60));
    let ka2 = h.out();
    assert_eq!(ka2.len(), 1);
    assert!(ka2[0].body_text().contains("<SN>2</SN>"));
    assert_ne!(ka2[0].call_id(), ka.call_id());
    // A fresh device whose keepalives (t = 0, 60, 120 s) all go
    // unanswered: when the third gives up (Timer F, 32 s) it registers again.
    let mut h = Harness::new(config());
    h.registered();
    let mut registers = 0;
    let end = h.now + Duration::from_secs(60 * 2 + 33);
    while let Some(t) = h.dev.poll_timeout() {
        if t > end {
            break;
        }
        h.now = t;
        h.dev.handle_timeout(t);
        registers += h
            .out()
            .iter()
            .filter(|m| m.method() == Some("REGISTER"))
            .count();
    }
    assert!(
        registers >= 1,
        "no re-registration after 3 missed keepalives"
    );
    assert!(!h.dev.is_registered());
}

#[test]
fn refused_keepalive_reregisters_at_once() {
    let mut h = Harness::new(config());
    let ka = h.registered();
    h.feed(&reply(&ka, "400 Bad Request", "")).unwrap();
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method(), Some("REGISTER"));
}

#[test]
fn keepalive_interval_is_configurable() {
    let mut cfg = config();
    cfg.keepalive_interval = Duration::from_secs(5);
    let mut h = Harness::new(cfg);
    let ka = h.registered();
    h.feed(&reply(&ka, "200 OK", "")).unwrap();
    h.advance(Duration::from_secs(5));
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert!(out[0].body_text().contains("Keepalive"));
}

#[test]
fn catalog_query_gets_200_then_response_message() {
    let mut h = Harness::new(config());
    h.registered();
    let body = "<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>17</SN>\r\n<DeviceID>34020000001320000088</DeviceID>\r\n</Query>\r\n";
    let msg = request(
        "MESSAGE",
        "sip:34020000001320000088@127.0.0.1:15060",
        "q1",
        "z9hG4bKq1",
        "",
        body,
    )
    .replace(
        "Max-Forwards",
        "Content-Type: Application/MANSCDP+xml\r\nMax-Forwards",
    );
    h.feed(&msg).unwrap();
    let out = h.out();
    assert_eq!(out.len(), 2);
    assert_eq!(status_of(&out[0]), 200);
    assert_eq!(out[0].call_id(), Some("q1"));
    assert!(out[0].to_tag().is_some());
    assert_eq!(
        out[0].header("Via"),
        Some("SIP/2.0/UDP 127.0.0.1:5060;rport=5060;branch=z9hG4bKq1;received=127.0.0.1")
    );
    let resp = &out[1];
    assert_eq!(resp.method(), Some("MESSAGE"));
    assert_eq!(resp.header("Content-Type"), Some("Application/MANSCDP+xml"));
    let text = resp.body_text();
    for part in [
        "<Response>",
        "<CmdType>Catalog</CmdType>",
        "<SN>17</SN>",
        "<SumNum>1</SumNum>",
        "<DeviceID>34020000001310000001</DeviceID>",
        "<Name>Demo Camera</Name>",
        "<Status>ON</Status>",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
    assert_eq!(
        h.events(),
        vec![DeviceEvent::QueryAnswered {
            cmd: "Catalog".into(),
            sn: "17".into()
        }]
    );

    // The platform retransmits the query: same 200, no second Response.
    h.feed(&msg).unwrap();
    let again = h.out();
    assert_eq!(again.len(), 1);
    assert_eq!(status_of(&again[0]), 200);
    assert_eq!(again[0].to_tag(), out[0].to_tag());
}

#[test]
fn device_info_and_status_queries() {
    let mut h = Harness::new(config());
    for (i, (cmd, expect)) in [
        ("DeviceInfo", "<Manufacturer>camgate</Manufacturer>"),
        ("DeviceInfo", "<Model>sim</Model>"),
        ("DeviceStatus", "<Online>ONLINE</Online>"),
        ("RecordInfo", "<SumNum>0</SumNum>"),
    ]
    .iter()
    .enumerate()
    {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\n<Query>\n<CmdType>{cmd}</CmdType>\n<SN>{i}</SN>\n<DeviceID>34020000001320000088</DeviceID>\n</Query>\n"
        );
        let msg = request(
            "MESSAGE",
            "sip:34020000001320000088@3402000000",
            &format!("c{i}"),
            &format!("z9hG4bKc{i}"),
            "",
            &body,
        );
        h.feed(&msg).unwrap();
        let out = h.out();
        assert_eq!(out.len(), 2, "{cmd}");
        let text = out[1].body_text();
        assert!(text.contains(expect), "{expect} missing in {text}");
        assert!(text.contains(&format!("<SN>{i}</SN>")));
    }
}

#[test]
fn messages_without_cmdtype_get_400_and_notifies_get_200_only() {
    let mut h = Harness::new(config());
    let bad = request(
        "MESSAGE",
        "sip:x@y",
        "m1",
        "z9hG4bKm1",
        "",
        "<Query></Query>",
    );
    assert!(matches!(h.feed(&bad), Err(DeviceError::BadManscdp { .. })));
    assert_eq!(status_of(&h.out()[0]), 400);
    let notify = request(
        "MESSAGE",
        "sip:x@y",
        "m2",
        "z9hG4bKm2",
        "",
        "<Notify><CmdType>Alarm</CmdType><SN>1</SN></Notify>",
    );
    h.feed(&notify).unwrap();
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!(status_of(&out[0]), 200);
    // Hostile SN/DeviceID values are not echoed verbatim into XML.
    let evil = request(
        "MESSAGE",
        "sip:x@y",
        "m3",
        "z9hG4bKm3",
        "",
        "<Query><CmdType>DeviceInfo</CmdType><SN>1</SN><DeviceID>a&lt;b></DeviceID></Query>",
    );
    h.feed(&evil).unwrap();
    let out = h.out();
    assert!(out[1].body_text().contains("<DeviceID>altb</DeviceID>"));
}

#[test]
fn invite_is_answered_with_gb28181_sdp() {
    let mut h = Harness::new(config());
    let ka = h.registered();
    h.feed(&reply(&ka, "200 OK", "")).unwrap();
    h.feed(&invite("call-1", "z9hG4bKinv1", OFFER)).unwrap();
    let out = h.out();
    let codes: Vec<u16> = out.iter().map(status_of).collect();
    assert_eq!(codes, vec![100, 101, 200]);
    assert_eq!(
        out[1].start,
        sip::StartLine::Response {
            code: 101,
            reason: "Dialog Establishement".into()
        }
    );
    assert!(out[0].to_tag().is_none());
    assert_eq!(out[1].to_tag(), out[2].to_tag());
    assert!(out[2].to_tag().is_some());
    assert_eq!(
        out[2].header_uri("Contact"),
        Some("sip:34020000001310000001@127.0.0.1:15060")
    );
    assert_eq!(out[2].header("Content-Type"), Some("application/sdp"));
    let sdp = String::from_utf8(out[2].body.clone()).unwrap();
    let lines: Vec<&str> = sdp.lines().collect();
    assert_eq!(
        lines,
        vec![
            "v=0",
            "o=34020000001310000001 0 0 IN IP4 127.0.0.1",
            "s=Play",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=video 16000 RTP/AVP 96",
            "a=sendonly",
            "a=rtpmap:96 PS/90000",
            "y=0100000001",
            "f=",
        ]
    );
    assert_eq!(
        h.events(),
        vec![
            DeviceEvent::InviteReceived {
                call_id: "call-1".into(),
                answered: true
            },
            DeviceEvent::StartMedia {
                call_id: "call-1".into(),
                dest: "127.0.0.1:30000".parse().unwrap(),
                ssrc: 100_000_001,
                link: MediaLink::Udp,
            },
        ]
    );
    assert_eq!(h.dev.active_calls(), 1);

    // INVITE retransmission: the 200 again, no second InviteReceived.
    h.feed(&invite("call-1", "z9hG4bKinv1", OFFER)).unwrap();
    let again = h.out();
    assert_eq!(again.len(), 1);
    assert_eq!(status_of(&again[0]), 200);
    assert!(h.events().is_empty());

    // Without ACK the 200 is retransmitted at T1.
    h.advance(Duration::from_millis(500));
    assert_eq!(status_of(&h.out()[0]), 200);
    let tag = out[2].to_tag().unwrap().to_owned();
    let ack = request(
        "ACK",
        "sip:34020000001310000001@127.0.0.1:15060",
        "call-1",
        "z9hG4bKack1",
        &format!(";tag={tag}"),
        "",
    );
    h.feed(&ack).unwrap();
    assert!(h.out().is_empty(), "ACK gets no response");
    h.advance(Duration::from_secs(10));
    assert!(h.out().is_empty(), "no retransmission after ACK");

    let bye = request(
        "BYE",
        "sip:34020000001310000001@127.0.0.1:15060",
        "call-1",
        "z9hG4bKbye1",
        &format!(";tag={tag}"),
        "",
    );
    h.feed(&bye).unwrap();
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!(status_of(&out[0]), 200);
    assert_eq!(out[0].cseq(), Some((20, "BYE")));
    assert_eq!(
        h.events(),
        vec![
            DeviceEvent::ByeReceived {
                call_id: "call-1".into(),
                known: true
            },
            DeviceEvent::StopMedia {
                call_id: "call-1".into(),
                reason: StopReason::Bye
            },
        ]
    );
    assert_eq!(h.dev.active_calls(), 0);
    // BYE retransmission: same 200, no new events.
    h.feed(&bye).unwrap();
    assert_eq!(status_of(&h.out()[0]), 200);
    assert!(h.events().is_empty());
    // A BYE for an unknown call.
    h.feed(&bye.replace("call-1", "nope").replace("bye1", "bye2"))
        .unwrap();
    assert_eq!(status_of(&h.out()[0]), 481);
}

#[test]
fn unacked_200_ends_in_bye() {
    let mut h = Harness::new(config());
    h.feed(&invite("call-2", "z9hG4bKinv2", OFFER)).unwrap();
    h.out();
    h.events();
    let mut oks = 0;
    let mut byes = Vec::new();
    let end = h.now + Duration::from_secs(33);
    while let Some(t) = h.dev.poll_timeout() {
        if t > end {
            break;
        }
        h.now = t;
        h.dev.handle_timeout(t);
        for m in h.out() {
            match m.method() {
                Some("BYE") => byes.push(m),
                _ if status_of(&m) == 200 => oks += 1,
                _ => {}
            }
        }
        if !byes.is_empty() {
            break;
        }
    }
    assert!(oks >= 5, "200 OK retransmitted {oks} times");
    assert_eq!(byes.len(), 1);
    let bye = &byes[0];
    assert_eq!(
        bye.start,
        sip::StartLine::Request {
            method: "BYE".into(),
            uri: "sip:34020000002000000001@127.0.0.1:5060".into()
        }
    );
    assert_eq!(bye.call_id(), Some("call-2"));
    assert!(bye.from_tag().is_some());
    assert_eq!(bye.to_tag(), Some("plat1"));
    assert!(h.events().contains(&DeviceEvent::StopMedia {
        call_id: "call-2".into(),
        reason: StopReason::AckTimeout
    }));
}

#[test]
fn dead_device_never_answers_invite() {
    let mut cfg = config();
    cfg.answer_invites = false;
    let mut h = Harness::new(cfg);
    h.registered();
    h.feed(&invite("dead-1", "z9hG4bKd1", OFFER)).unwrap();
    assert!(h.out().is_empty());
    assert_eq!(
        h.events(),
        vec![DeviceEvent::InviteReceived {
            call_id: "dead-1".into(),
            answered: false
        }]
    );
    h.feed(&invite("dead-1", "z9hG4bKd1", OFFER)).unwrap();
    assert!(h.out().is_empty());
    assert!(
        h.events().is_empty(),
        "retransmission counted as new INVITE"
    );
    let cancel = invite("dead-1", "z9hG4bKd1", "").replace("INVITE", "CANCEL");
    h.feed(&cancel).unwrap();
    assert!(h.out().is_empty());
}

#[test]
fn bad_offers_get_488() {
    let cases = [
        ("tcp", OFFER.replace("RTP/AVP 96 98 97", "TCP/RTP/AVP 96")),
        (
            "no m",
            OFFER.replace("m=video 30000 RTP/AVP 96 98 97\r\n", ""),
        ),
        ("no c", OFFER.replace("c=IN IP4 127.0.0.1\r\n", "")),
        ("bad y", OFFER.replace("y=0100000001", "y=01000x0001")),
        ("y too big", OFFER.replace("y=0100000001", "y=9999999999")),
        ("port 0", OFFER.replace("video 30000", "video 0")),
        ("empty", String::new()),
    ];
    for (i, (name, sdp)) in cases.iter().enumerate() {
        let mut h = Harness::new(config());
        let r = h.feed(&invite(&format!("bad{i}"), &format!("z9hG4bKbad{i}"), sdp));
        assert!(
            matches!(r, Err(DeviceError::BadOffer { .. })),
            "{name}: {r:?}"
        );
        let out = h.out();
        assert_eq!(out.len(), 1, "{name}");
        assert_eq!(status_of(&out[0]), 488, "{name}");
        assert_eq!(h.dev.active_calls(), 0);
    }
}

#[test]
fn offer_without_y_gets_an_ssrc_of_ours_and_media_c_wins() {
    let sdp = OFFER
        .replace("y=0100000001\r\n", "")
        .replace("a=recvonly", "c=IN IP4 127.0.0.2\r\na=recvonly");
    let mut h = Harness::new(config());
    h.feed(&invite("c3", "z9hG4bKc3", &sdp)).unwrap();
    let out = h.out();
    let body = String::from_utf8(out[2].body.clone()).unwrap();
    let y = body
        .lines()
        .find_map(|l| l.strip_prefix("y="))
        .unwrap()
        .to_owned();
    assert_eq!(y.len(), 10);
    let events = h.events();
    let DeviceEvent::StartMedia { ssrc, dest, .. } = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(*ssrc, y.parse::<u32>().unwrap());
    assert_eq!(dest.ip().to_string(), "127.0.0.2");
}

#[test]
fn invite_for_another_channel_is_404() {
    let mut h = Harness::new(config());
    let inv = invite("c4", "z9hG4bKc4", OFFER).replace(
        "INVITE sip:34020000001310000001@",
        "INVITE sip:34020000001310000999@",
    );
    h.feed(&inv).unwrap();
    assert_eq!(status_of(&h.out()[0]), 404);
}

#[test]
fn reinvite_gets_same_answer() {
    let mut h = Harness::new(config());
    h.feed(&invite("c5", "z9hG4bKc5", OFFER)).unwrap();
    let out = h.out();
    h.events();
    let tag = out[2].to_tag().unwrap().to_owned();
    let re = invite("c5", "z9hG4bKc5b", OFFER).replace(
        "To: <sip:34020000001310000001@3402000000>",
        &format!("To: <sip:34020000001310000001@3402000000>;tag={tag}"),
    );
    h.feed(&re).unwrap();
    let out2 = h.out();
    assert_eq!(out2.len(), 1);
    assert_eq!(status_of(&out2[0]), 200);
    assert_eq!(out2[0].body, out[2].body);
    assert!(h.events().is_empty());
    // Same Call-ID, new branch, no To tag: still one call.
    h.feed(&invite("c5", "z9hG4bKc5c", OFFER)).unwrap();
    let out3 = h.out();
    assert_eq!(out3.len(), 1);
    assert_eq!(out3[0].to_tag(), Some(tag.as_str()));
    assert!(h.events().is_empty());
    assert_eq!(h.dev.active_calls(), 1);
}

#[test]
fn other_methods() {
    let mut h = Harness::new(config());
    h.feed(&request("OPTIONS", "sip:x@y", "o1", "z9hG4bKo1", "", ""))
        .unwrap();
    let out = h.out();
    assert_eq!(status_of(&out[0]), 200);
    assert!(out[0].header("Allow").unwrap().contains("INVITE"));
    h.feed(&request("PUBLISH", "sip:x@y", "o2", "z9hG4bKo2", "", ""))
        .unwrap();
    assert_eq!(status_of(&h.out()[0]), 405);
    h.feed(&request("SUBSCRIBE", "sip:x@y", "o3", "z9hG4bKo3", "", ""))
        .unwrap();
    assert_eq!(status_of(&h.out()[0]), 200);
    h.feed(&request("INFO", "sip:x@y", "o4", "z9hG4bKo4", "", ""))
        .unwrap();
    assert_eq!(status_of(&h.out()[0]), 481);
    h.feed(&request("CANCEL", "sip:x@y", "o5", "z9hG4bKo5", "", ""))
        .unwrap();
    assert_eq!(status_of(&h.out()[0]), 481);
    // Stray response and CRLF ping.
    assert!(matches!(
        h.feed(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKnone\r\nContent-Length: 0\r\n\r\n"
        ),
        Err(DeviceError::StrayResponse { status: 200, .. })
    ));
    h.feed("\r\n\r\n").unwrap();
    assert!(h.out().is_empty());
    // Missing Call-ID.
    assert!(matches!(
        h.feed(
            "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKa\r\nCSeq: 1 OPTIONS\r\n\r\n"
        ),
        Err(DeviceError::Missing {
            what: "Call-ID",
            ..
        })
    ));
}

#[test]
fn shutdown_byes_calls_and_unregisters() {
    let mut h = Harness::new(config());
    h.registered();
    h.feed(&invite("c6", "z9hG4bKc6", OFFER)).unwrap();
    h.out();
    h.events();
    h.dev.shutdown(h.now);
    let out = h.out();
    let methods: Vec<&str> = out.iter().filter_map(|m| m.method()).collect();
    assert_eq!(methods, vec!["BYE", "REGISTER"]);
    assert_eq!(out[1].header("Expires"), Some("0"));
    assert!(!h.dev.is_quiet());
    assert_eq!(
        h.events(),
        vec![DeviceEvent::StopMedia {
            call_id: "c6".into(),
            reason: StopReason::Shutdown
        }]
    );
    h.feed(&reply(&out[0], "200 OK", "")).unwrap();
    h.feed(&reply(&out[1], "200 OK", "")).unwrap();
    assert!(h.dev.is_quiet());
    assert_eq!(h.events(), vec![DeviceEvent::Unregistered]);
    // Nothing more happens.
    h.run_for(Duration::from_secs(3600));
    assert!(h.out().is_empty());
}

#[test]
fn hostile_input_never_panics() {
    let mut h = Harness::new(config());
    h.registered();
    let seeds = [
        invite("f1", "z9hG4bKf1", OFFER),
        request(
            "MESSAGE",
            "sip:x@y",
            "f2",
            "z9hG4bKf2",
            "",
            "<Query><CmdType>Catalog</CmdType><SN>1</SN></Query>",
        ),
        "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nWWW-Authenticate: Digest nonce=\"\r\n\r\n".to_owned(),
    ];
    let mut rng = SplitMix(7);
    for seed in &seeds {
        let bytes = seed.as_bytes();
        for _ in 0..2000 {
            let mut m = bytes.to_vec();
            for _ in 0..(rng.next() % 8 + 1) {
                let op = rng.next() % 3;
                let at = (rng.next() as usize) % m.len().max(1);
                match op {
                    0 if !m.is_empty() => m[at] = rng.next() as u8,
                    1 if !m.is_empty() => {
                        m.truncate(at);
                    }
                    _ => m.insert(at.min(m.len()), b"\r\n:;=<>@\" "[rng.next() as usize % 10]),
                }
            }
            let from = h.server;
            let _ = h.dev.handle_datagram(h.now, from, &m);
            h.raw_out();
            h.events();
        }
    }
    for len in [0usize, 1, 100, 70_000] {
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let from = h.server;
        let _ = h.dev.handle_datagram(h.now, from, &junk);
    }
    h.run_for(Duration::from_secs(100));
}

#[test]
fn follows_302_then_returns_home_after_missed_keepalives() {
    let owner: SocketAddr = "127.0.0.2:5070".parse().unwrap();
    let mut cfg = config();
    cfg.keepalive_interval = Duration::from_secs(5);
    cfg.keepalive_misses = 2;
    let mut h = Harness::new(cfg);
    h.dev.start(h.now);
    let reg = h.out().remove(0);
    h.feed(&reply(
        &reg,
        "302 Moved Temporarily",
        "Contact: <sip:34020000002000000001@127.0.0.2:5070>\r\n",
    ))
    .unwrap();
    assert_eq!(h.events(), vec![DeviceEvent::Redirected { to: owner }]);
    let again = h.raw_out();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].dest, owner, "REGISTER goes to the Contact");
    let reg2 = SipMessage::parse(&again[0].payload).unwrap();
    assert_eq!(reg2.method(), Some("REGISTER"));
    h.feed(&reply(&reg2, "200 OK", "Expires: 3600\r\n"))
        .unwrap();
    assert!(h.dev.is_registered());
    let ka = h.raw_out();
    assert_eq!(ka.len(), 1);
    assert_eq!(ka[0].dest, owner, "keepalives go to the owner");
    assert_eq!(h.dev.server(), owner);
    // The owner dies: keepalives at 0 and 5 s go unanswered; at 10 s the
    // second miss is counted (long before Timer F's 32 s) and the device
    // registers at home again.
    let mut home_register_at = None;
    let start = h.now;
    while h.now < start + Duration::from_secs(11) {
        h.advance(Duration::from_millis(500));
        for t in h.raw_out() {
            let m = SipMessage::parse(&t.payload).unwrap();
            if m.method() == Some("REGISTER") && home_register_at.is_none() {
                assert_eq!(t.dest, SERVER.parse::<SocketAddr>().unwrap());
                home_register_at = Some(h.now - start);
            }
        }
    }
    assert_eq!(home_register_at, Some(Duration::from_secs(10)));
    assert_eq!(h.dev.server(), SERVER.parse::<SocketAddr>().unwrap());
}

#[test]
fn redirect_loops_and_bad_contacts_fail_the_registration() {
    let mut h = Harness::new(config());
    h.dev.start(h.now);
    let mut reg = h.out().remove(0);
    for _ in 0..MAX_REDIRECTS {
        h.feed(&reply(
            &reg,
            "302 Moved Temporarily",
            "Contact: <sip:x@127.0.0.3:5080;transport=udp>\r\n",
        ))
        .unwrap();
        reg = h.out().remove(0);
    }
    h.feed(&reply(
        &reg,
        "302 Moved Temporarily",
        "Contact: <sip:x@127.0.0.3:5080>\r\n",
    ))
    .unwrap();
    assert!(h.events().iter().any(|e| matches!(
        e,
        DeviceEvent::RegistrationFailed { reason, .. } if reason == "too many redirects"
    )));
    // Back home for the retry.
    assert_eq!(h.dev.server(), SERVER.parse::<SocketAddr>().unwrap());
    assert_eq!(
        contact_addr("sip:a@10.0.0.9"),
        Some("10.0.0.9:5060".parse().unwrap())
    );
    assert_eq!(
        contact_addr("sip:a@[::1]:5062;lr"),
        Some("[::1]:5062".parse().unwrap())
    );
    assert_eq!(contact_addr("sip:a@camgate-1.svc:5060"), None);
    assert_eq!(contact_addr("tel:123"), None);
}
