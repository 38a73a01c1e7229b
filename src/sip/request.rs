//! Plain facts out of an incoming SIP request (RFC 3261 §8.2, §18.2.1,
//! RFC 3581), so the GB28181 logic never handles rsipstack types.

use std::net::SocketAddr;

use rsipstack::sip::{HeadersExt, Request, Transport};
use rsipstack::transport::{SipAddr, SipConnection};

/// What the GB28181 layer needs to know about a request.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub method: String,
    /// The user part of the From URI: the device id in GB28181.
    pub from_user: String,
    /// The user part of the To URI.
    pub to_user: String,
    pub call_id: String,
    /// Where responses and our requests go: Via `received`/`rport` when the
    /// device set them (RFC 3581), the Via sent-by otherwise.
    pub source: SocketAddr,
    pub transport: Transport,
    pub request_uri: String,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("missing or malformed {0} header")]
    Header(&'static str),
}

impl RequestError {
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::Header(_) => "bad_header",
        }
    }
}

fn user_of(uri: Result<rsipstack::sip::Uri, rsipstack::sip::Error>) -> Option<String> {
    uri.ok()?.user().map(str::to_owned)
}

impl RequestFacts {
    pub fn from_request(req: &Request) -> Result<Self, RequestError> {
        let from_user = req
            .from_header()
            .ok()
            .and_then(|h| user_of(h.uri()))
            .ok_or(RequestError::Header("From"))?;
        let to_user = req
            .to_header()
            .ok()
            .and_then(|h| user_of(h.uri()))
            .unwrap_or_default();
        let call_id = req
            .call_id_header()
            .map(|c| c.value().to_owned())
            .map_err(|_| RequestError::Header("Call-ID"))?;
        let via = req.via_header().map_err(|_| RequestError::Header("Via"))?;
        let (transport, host) =
            SipConnection::parse_target_from_via(via).map_err(|_| RequestError::Header("Via"))?;
        let source = SipAddr {
            r#type: Some(transport),
            addr: host,
        }
        .get_socketaddr()
        .map_err(|_| RequestError::Header("Via"))?;
        Ok(Self {
            method: req.method.to_string(),
            from_user,
            to_user,
            call_id,
            source,
            transport,
            request_uri: req.uri.to_string(),
            body: req.body.clone(),
        })
    }
}

/// The value of the first header called `name` (case-insensitive).
pub fn header_value(req: &Request, name: &str) -> Option<String> {
    req.headers.iter().find_map(|h| {
        let line = h.to_string();
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// `Expires` of a REGISTER: the header, else the Contact's `expires`
/// parameter (RFC 3261 §10.2.1.1), else `None`.
pub fn register_expires(req: &Request) -> Option<u32> {
    if let Some(v) = header_value(req, "Expires") {
        return v.parse().ok();
    }
    let contact = header_value(req, "Contact")?;
    contact.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("expires")
            .then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Request {
        let msg = rsipstack::sip::SipMessage::try_from(text.replace('\n', "\r\n").as_str())
            .expect("test message parses");
        match msg {
            rsipstack::sip::SipMessage::Request(r) => r,
            _ => panic!("not a request"),
        }
    }

    const REGISTER: &str = "REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.64:5060;rport=5061;received=10.0.0.7;branch=z9hG4bK1
From: <sip:34020000001320000002@3402000000>;tag=1
To: <sip:34020000001320000002@3402000000>
Call-ID: abc@192.168.1.64
CSeq: 1 REGISTER
Contact: <sip:34020000001320000002@192.168.1.64:5060>;expires=1800
Max-Forwards: 70
Content-Length: 0

";

    #[test]
    fn facts_follow_rport_and_received() {
        let req = parse(REGISTER);
        let f = RequestFacts::from_request(&req).unwrap();
        assert_eq!(f.from_user, "34020000001320000002");
        assert_eq!(f.source, "10.0.0.7:5061".parse().unwrap());
        assert_eq!(f.call_id, "abc@192.168.1.64");
        assert_eq!(register_expires(&req), Some(1800));
    }

    #[test]
    fn expires_header_wins() {
        let req = parse(&REGISTER.replace("Max-Forwards: 70", "Expires: 0\nMax-Forwards: 70"));
        assert_eq!(register_expires(&req), Some(0));
    }
}
