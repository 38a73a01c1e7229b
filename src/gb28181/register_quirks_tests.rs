//! REGISTER requests as field devices send them (issue 16), each a literal
//! message: `CSeq: 0`, an eXosip User-Agent, a From domain that is not our
//! realm (a device of another province, 3401… registering to 3402…), and a
//! Contact port that differs from the Via port with `rport`.

use std::time::{Duration, Instant};

use rsipstack::sip::{HeadersExt, Request, SipMessage};

use super::*;
use crate::sip::digest::compute_response;
use crate::sip::request::{RequestFacts, header_value, register_expires};

fn parse(text: &str) -> Request {
    match SipMessage::try_from(text.replace('\n', "\r\n").as_str()).expect("parses") {
        SipMessage::Request(r) => r,
        _ => panic!("not a request"),
    }
}

/// As the transport hands it over: the stack has stamped `received` and
/// the `rport` value (RFC 3581 §4) on the device's empty `rport`.
const EXOSIP_REGISTER: &str = "REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.8.20:5060;rport=41234;received=203.0.113.7;branch=z9hG4bK1939826361
From: <sip:34010000001320000017@3401000000>;tag=1108862371
To: <sip:34010000001320000017@3401000000>
Call-ID: 1409848327@192.168.8.20
CSeq: 0 REGISTER
Contact: <sip:34010000001320000017@192.168.8.20:5080>
Max-Forwards: 70
User-Agent: eXosip/3.6.0
Expires: 3600
Content-Length: 0

";

#[test]
fn exosip_register_with_cseq_0_and_foreign_domain_is_read() {
    let req = parse(EXOSIP_REGISTER);
    assert_eq!(req.cseq_header().unwrap().seq().unwrap(), 0);
    assert_eq!(
        header_value(&req, "User-Agent").as_deref(),
        Some("eXosip/3.6.0")
    );
    let facts = RequestFacts::from_request(&req).unwrap();
    // The device id is the From user, whatever its domain says.
    assert_eq!(facts.from_user, "34010000001320000017");
    // Replies go where the packet came from (Via received + rport), not to
    // the Contact port 5080 nor the Via sent-by port 5060.
    assert_eq!(facts.source, "203.0.113.7:41234".parse().unwrap());
    assert_eq!(register_expires(&req), Some(3600));
}

#[test]
fn foreign_domain_device_authenticates_against_our_realm() {
    let now = Instant::now();
    let mut r = Registrar::new("3402000000", Duration::from_secs(3600));
    let creds = Some(Credentials {
        password: "12345678",
        username: None,
    });
    fn attempt(auth: Option<&str>) -> RegisterAttempt<'_> {
        RegisterAttempt {
            device_id: "34010000001320000017",
            source: "203.0.113.7:41234".parse().unwrap(),
            reliable: false,
            authorization: auth,
            expires: Some(3600),
        }
    }
    let challenge = r.decide(&attempt(None), creds, now);
    let RegisterDecision::Challenge { www_authenticate } = &challenge else {
        panic!("{challenge:?}")
    };
    let nonce = DigestChallenge::parse(&www_authenticate[0]).unwrap().nonce;
    // eXosip answers with our realm and its own 3401… id as username.
    let uri = "sip:34020000002000000001@3402000000";
    let user = "34010000001320000017";
    let response = compute_response(
        user,
        "3402000000",
        "12345678",
        "REGISTER",
        uri,
        &nonce,
        None,
    );
    let auth = format!(
        "Digest username=\"{user}\",realm=\"3402000000\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{response}\",algorithm=MD5"
    );
    assert_eq!(
        r.decide(&attempt(Some(&auth)), creds, now),
        RegisterDecision::Accept {
            expires: Duration::from_secs(3600)
        }
    );
}
