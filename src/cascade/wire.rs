//! SIP messages of the cascade client in plain values (RFC 3261 §7):
//! incoming datagrams parsed by the SIP stack's parser into a start line,
//! header pairs and a body; outgoing requests written as text.
//!
//! Sans-IO and bounded: a datagram over [`MAX_MESSAGE`] bytes or with more
//! than [`MAX_HEADERS`] headers is refused, and nothing here panics.

use std::fmt::Write as _;
use std::net::SocketAddr;

use rsipstack::sip::SipMessage;

/// Largest message taken (a UDP datagram cannot be bigger).
pub const MAX_MESSAGE: usize = 65_535;
/// Most headers kept from one message.
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("not a SIP message")]
    Unparsable,
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("missing or malformed {0} header")]
    Header(&'static str),
}

impl WireError {
    pub fn kind(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Unparsable => "unparsable",
            Self::TooManyHeaders => "too_many_headers",
            Self::Header(_) => "bad_header",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Request { method: String, uri: String },
    Response { code: u16 },
}

/// One parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: Start,
    /// (name, value) in order; names as the stack spells them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        if data.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge);
        }
        let msg = SipMessage::try_from(data).map_err(|_| WireError::Unparsable)?;
        let (start, headers, body) = match msg {
            SipMessage::Request(r) => (
                Start::Request {
                    method: r.method.to_string(),
                    uri: r.uri.to_string(),
                },
                r.headers,
                r.body,
            ),
            SipMessage::Response(r) => (
                Start::Response {
                    code: r.status_code.code(),
                },
                r.headers,
                r.body,
            ),
        };
        if headers.iter().count() > MAX_HEADERS {
            return Err(WireError::TooManyHeaders);
        }
        let headers = headers
            .iter()
            .filter_map(|h| {
                let text = h.to_string();
                let (name, value) = text.split_once(':')?;
                Some((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect();
        Ok(Self {
            start,
            headers,
            body,
        })
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> Option<u16> {
        match self.start {
            Start::Response { code } => Some(code),
            Start::Request { .. } => None,
        }
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Result<(u32, &str), WireError> {
        let v = self.header("CSeq").ok_or(WireError::Header("CSeq"))?;
        let (n, method) = v.split_once(' ').ok_or(WireError::Header("CSeq"))?;
        let n = n.trim().parse().map_err(|_| WireError::Header("CSeq"))?;
        Ok((n, method.trim()))
    }

    pub fn call_id(&self) -> Result<&str, WireError> {
        self.header("Call-ID").ok_or(WireError::Header("Call-ID"))
    }

    /// The `Expires` header, or the `expires` parameter of the Contact.
    pub fn granted_expires(&self) -> Option<u64> {
        if let Some(v) = self.header("Expires")
            && let Ok(n) = v.trim().parse()
        {
            return Some(n);
        }
        let contact = self.header("Contact")?;
        param(contact, "expires")?.parse().ok()
    }

    /// `host:port` of the first Contact URI (a 3xx's new target).
    pub fn contact_target(&self) -> Option<String> {
        let contact = self.header("Contact")?;
        let uri = match (contact.find('<'), contact.find('>')) {
            (Some(a), Some(b)) if a < b => &contact[a + 1..b],
            _ => contact.split(';').next().unwrap_or(contact),
        };
        let rest = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"))?;
        let hostport = rest.rsplit('@').next()?.split(';').next()?;
        let with_port = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:5060")
        };
        Some(with_port)
    }
}

/// Value of `;name=value` in a header value (case-insensitive name).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The SIP transport a message travels on (RFC 3261 §18; GB/T 28181-2016
/// §4.3 allows UDP and TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

impl Transport {
    /// The Via protocol name (`SIP/2.0/UDP`, `SIP/2.0/TCP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// The URI parameter a Contact carries so requests to it come over
    /// the same transport (RFC 3261 §19.1.1); none for UDP, the default.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        }
    }

    /// Whether the transport delivers by itself: no retransmission of
    /// requests or 2xx (RFC 3261 §17.1.1.2, §17.1.2.2, §13.3.1.4).
    pub fn is_reliable(self) -> bool {
        self == Transport::Tcp
    }
}

/// The parts of an outgoing request outside a dialog.
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub transport: Transport,
    pub uri: &'a str,
    pub local: SocketAddr,
    pub branch: &'a str,
    pub from: &'a str,
    pub from_tag: &'a str,
    pub to: &'a str,
    /// The peer's tag, for a request inside a dialog.
    pub to_tag: Option<&'a str>,
    pub call_id: &'a str,
    pub cseq: u32,
    /// Further `Name: value` lines.
    pub extra: &'a [(&'a str, String)],
    pub body: Option<(&'a str, &'a [u8])>,
}

/// A NOTIFY inside a subscription dialog the upper platform opened with
/// SUBSCRIBE (RFC 6665 §4.2.2): To is their From, and the state names the
/// seconds the subscription has left.
pub struct SubscriptionNotify<'a> {
    /// `Event` of the subscription: `Catalog` or `Alarm`.
    pub event: &'a str,
    pub transport: Transport,
    pub local: SocketAddr,
    pub branch: &'a str,
    /// Our URI (From).
    pub from: &'a str,
    pub their_uri: &'a str,
    pub their_tag: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub seconds_left: u64,
    /// A MANSCDP document.
    pub body: &'a [u8],
}

/// Write a [`SubscriptionNotify`].
pub fn subscription_notify(n: &SubscriptionNotify<'_>) -> Vec<u8> {
    request(&RequestParts {
        method: "NOTIFY",
        transport: n.transport,
        uri: n.their_uri,
        local: n.local,
        branch: n.branch,
        from: n.from,
        from_tag: "camgate",
        to: n.their_uri,
        to_tag: Some(n.their_tag),
        call_id: n.call_id,
        cseq: n.cseq,
        extra: &[
            ("Event", n.event.to_owned()),
            (
                "Subscription-State",
                format!("active;expires={}", n.seconds_left),
            ),
        ],
        body: Some(("Application/MANSCDP+xml", n.body)),
    })
}

/// Write a request (RFC 3261 §8.1.1, §18.1.1; `rport` per RFC 3581 so
/// answers over UDP come back through NAT).
pub fn request(p: &RequestParts<'_>) -> Vec<u8> {
    let mut head = String::with_capacity(512);
    let _ = write!(
        head,
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};rport;branch={branch}\r\n\
         From: <{from}>;tag={tag}\r\n\
         To: <{to}>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Max-Forwards: 70\r\n\
         User-Agent: camgate\r\n",
        method = p.method,
        uri = p.uri,
        transport = p.transport.via_name(),
        local = p.local,
        branch = p.branch,
        from = p.from,
        tag = p.from_tag,
        to = p.to,
        to_tag = p.to_tag.map(|t| format!(";tag={t}")).unwrap_or_default(),
        call_id = p.call_id,
        cseq = p.cseq,
    );
    for (name, value) in p.extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let body = p.body.map_or(&[][..], |(_, b)| b);
    if let Some((content_type, _)) = p.body {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A response to `req` (RFC 3261 §8.2.6.2): Via, From, Call-ID and CSeq
/// echoed, a To tag added when the request had none.
pub fn response_to(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: &str,
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    response_with(req, code, reason, to_tag, &[], body)
}

/// [`response_to`] with further `Name: value` lines (Contact of a 200 to
/// INVITE).
pub fn response_with(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut head = format!("SIP/2.0 {code} {reason}\r\n");
    for via in req.headers("Via") {
        let _ = write!(head, "Via: {via}\r\n");
    }
    for name in ["From", "Call-ID", "CSeq"] {
        if let Some(v) = req.header(name) {
            let _ = write!(head, "{name}: {v}\r\n");
        }
    }
    if let Some(to) = req.header("To") {
        if param(to, "tag").is_some() {
            let _ = write!(head, "To: {to}\r\n");
        } else {
            let _ = write!(head, "To: {to};tag={to_tag}\r\n");
        }
    }
    head.push_str("User-Agent: camgate\r\n");
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let payload = body.map_or(&[][..], |(_, b)| b);
    if let Some((content_type, _)) = body {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", payload.len());
    let mut out = head.into_bytes();
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_facts_are_read() {
        let text = "SIP/2.0 302 Moved Temporarily\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
            From: <sip:1@2>;tag=a\r\nTo: <sip:1@2>;tag=b\r\nCall-ID: c1\r\n\
            CSeq: 7 REGISTER\r\nContact: <sip:34020000002000000001@127.0.0.1:6000>;expires=30\r\n\
            Content-Length: 0\r\n\r\n";
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.code(), Some(302));
        assert_eq!(m.cseq().unwrap(), (7, "REGISTER"));
        assert_eq!(m.call_id().unwrap(), "c1");
        assert_eq!(m.contact_target().as_deref(), Some("127.0.0.1:6000"));
        assert_eq!(m.granted_expires(), Some(30));
    }

    #[test]
    fn response_echoes_the_request() {
        let text = "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK9\r\n\
            From: <sip:1@2>;tag=f\r\nTo: <sip:3@4>\r\nCall-ID: q\r\nCSeq: 4 MESSAGE\r\n\
            Content-Length: 0\r\n\r\n";
        let req = Message::parse(text.as_bytes()).unwrap();
        let resp = Message::parse(&response_to(&req, 200, "OK", "t9", None)).unwrap();
        assert_eq!(resp.code(), Some(200));
        assert_eq!(resp.cseq().unwrap(), (4, "MESSAGE"));
        assert_eq!(resp.call_id().unwrap(), "q");
        assert_eq!(param(resp.header("To").unwrap(), "tag"), Some("t9"));
        assert!(resp.header("Via").unwrap().contains("branch=z9hG4bK9"));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert_eq!(
            Message::parse(b"\x00\xff junk").unwrap_err(),
            WireError::Unparsable
        );
        let big = vec![b'a'; MAX_MESSAGE + 1];
        assert_eq!(Message::parse(&big).unwrap_err(), WireError::TooLarge);
    }

    #[test]
    fn written_request_parses_back() {
        let bytes = request(&RequestParts {
            transport: Transport::Udp,
            method: "MESSAGE",
            uri: "sip:34020000002000000001@3402000000",
            local: "127.0.0.1:5070".parse().unwrap(),
            branch: "z9hG4bKx",
            from: "sip:34020000002000000002@3402000000",
            from_tag: "t1",
            to: "sip:34020000002000000001@3402000000",
            to_tag: None,
            call_id: "k1",
            cseq: 3,
            extra: &[("Expires", "60".into())],
            body: Some(("Application/MANSCDP+xml", b"<Notify/>")),
        });
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(
            m.start,
            Start::Request {
                method: "MESSAGE".into(),
                uri: "sip:34020000002000000001@3402000000".into()
            }
        );
        assert_eq!(m.cseq().unwrap(), (3, "MESSAGE"));
        assert_eq!(m.header("Expires"), Some("60"));
        assert_eq!(m.body, b"<Notify/>");
    }
}

/// What a SUBSCRIBE from the upper platform asks (RFC 6665 §4.1.2): its
/// dialog, as our NOTIFYs must name it, and the lifetime, capped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub call_id: String,
    /// Their From URI and tag: the To of our NOTIFYs.
    pub their_uri: String,
    pub their_tag: String,
    /// Zero ends the subscription.
    pub expires: std::time::Duration,
}

impl SubscribeRequest {
    /// Read `message`; a SUBSCRIBE without `Expires` lasts `default`.
    pub fn read(message: &Message, default: std::time::Duration, max: std::time::Duration) -> Self {
        let their = message.header("From").unwrap_or_default();
        let their_uri = match (their.find('<'), their.find('>')) {
            (Some(a), Some(b)) if a < b => &their[a + 1..b],
            _ => their.split(';').next().unwrap_or_default().trim(),
        };
        Self {
            call_id: message.call_id().unwrap_or_default().to_owned(),
            their_uri: their_uri.to_owned(),
            their_tag: param(their, "tag").unwrap_or_default().to_owned(),
            expires: message
                .header("Expires")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(default, std::time::Duration::from_secs)
                .min(max),
        }
    }

    /// The answer: 200 with the lifetime granted, or 486 when the upstream
    /// holds too many; our Contact names `transport`.
    pub fn answer(
        &self,
        message: &Message,
        code: u16,
        platform_id: &str,
        local: SocketAddr,
        transport: Transport,
    ) -> Vec<u8> {
        let reason = if code == 200 { "OK" } else { "Busy Here" };
        let contact = format!("<sip:{platform_id}@{local}{}>", transport.uri_param());
        response_with(
            message,
            code,
            reason,
            "camgate",
            &[
                ("Expires", self.expires.as_secs().to_string()),
                ("Contact", contact),
            ],
            None,
        )
    }
}
