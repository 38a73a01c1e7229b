//! The check every SIP message passes before the SIP stack sees it.
//!
//! rsipstack drops a datagram it cannot parse (RFC 3261 §18.3: "MUST be
//! discarded") or whose headers give no transaction key (§17.2.3: top Via,
//! From tag, Call-ID, CSeq) without telling its user: the drop is a debug
//! line or one WARN per message, and no counter. Screening here with the
//! same rules lets camgate count each rejection by kind in
//! `camgate_sip_errors_total` and log it through the per-source limiter,
//! while the stack only ever gets messages it will take.
//!
//! Sans-IO: bytes in, a verdict out.

use std::net::SocketAddr;

use rsipstack::sip::{SipMessage, Transport, Version};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transport::SipConnection;

/// Largest SIP message taken (the stack's own stream limit; a UDP datagram
/// is smaller anyway).
pub const MAX_MESSAGE: usize = 65_535;

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not a SIP message")]
    Unparsable,
    #[error("not SIP/2.0")]
    BadVersion,
    #[error("no transaction key (top Via, From tag, Call-ID or CSeq missing or malformed)")]
    NoTransactionKey,
    #[error("top Via cannot take received/rport")]
    BadVia,
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
}

impl Rejection {
    /// Every `kind` label value, for pre-registering the series.
    pub const KINDS: &'static [&'static str] = &[
        "unparsable",
        "bad_version",
        "no_transaction_key",
        "bad_via",
        "too_large",
    ];

    /// The `kind` label of `camgate_sip_errors_total`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Unparsable => "unparsable",
            Self::BadVersion => "bad_version",
            Self::NoTransactionKey => "no_transaction_key",
            Self::BadVia => "bad_via",
            Self::TooLarge => "too_large",
        }
    }
}

/// What to do with one datagram or framed stream message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// CRLF keepalives and blank datagrams (RFC 5626 §3.5.1): the stack
    /// answers or ignores them.
    Keepalive,
    /// A message the stack will accept.
    Pass,
    Reject(Rejection),
}

/// Screen one complete message received from `source` over `transport`.
pub fn screen(message: &[u8], source: SocketAddr, transport: Transport) -> Verdict {
    if message.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Keepalive;
    }
    if message.len() > MAX_MESSAGE {
        return Verdict::Reject(Rejection::TooLarge);
    }
    let Ok(msg) = SipMessage::try_from(message) else {
        return Verdict::Reject(Rejection::Unparsable);
    };
    // RFC 3261 §7.1: this is SIP/2.0; the parser takes any version.
    let version = match &msg {
        SipMessage::Request(r) => &r.version,
        SipMessage::Response(r) => &r.version,
    };
    if *version != Version::V2 {
        return Verdict::Reject(Rejection::BadVersion);
    }
    let keyed = match &msg {
        SipMessage::Request(r) => TransactionKey::from_request(r, TransactionRole::Server).is_ok(),
        SipMessage::Response(r) => {
            TransactionKey::from_response(r, TransactionRole::Client).is_ok()
        }
    };
    if !keyed {
        return Verdict::Reject(Rejection::NoTransactionKey);
    }
    match SipConnection::update_msg_received(msg, source, transport) {
        Ok(_) => Verdict::Pass,
        Err(_) => Verdict::Reject(Rejection::BadVia),
    }
}

/// The length of the first complete message at the start of `buf` on a
/// stream (RFC 3261 §18.3: headers, blank line, Content-Length octets of
/// body), or `None` while it is incomplete. Leading CRLF keepalives count
/// as a message of their own length. `Err` when the headers are done but
/// Content-Length is unreadable, or the message would exceed [`MAX_MESSAGE`].
pub fn stream_message_len(buf: &[u8]) -> Result<Option<usize>, Rejection> {
    let blank = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if blank > 0 {
        return Ok(Some(blank));
    }
    let Some(head_end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE {
            Err(Rejection::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = &buf[..head_end];
    let mut body = 0usize;
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            body = std::str::from_utf8(&line[colon + 1..])
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(Rejection::Unparsable)?;
            break;
        }
    }
    let total = head_end + 4 + body;
    if total > MAX_MESSAGE {
        return Err(Rejection::TooLarge);
    }
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bK1\r\n\
From: <sip:34020000001320000001@3402000000>;tag=a1\r\n\
To: <sip:34020000001320000001@3402000000>\r\n\
Call-ID: c1@192.0.2.7\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:34020000001320000001@192.0.2.7:5060>\r\n\
Max-Forwards: 70\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n";

    fn src() -> SocketAddr {
        "192.0.2.7:5060".parse().unwrap()
    }

    fn verdict(msg: &str) -> Verdict {
        screen(msg.as_bytes(), src(), Transport::Udp)
    }

    #[test]
    fn a_valid_register_and_keepalives_pass() {
        assert_eq!(verdict(REGISTER), Verdict::Pass);
        assert_eq!(verdict("\r\n\r\n"), Verdict::Keepalive);
        assert_eq!(verdict("\r\n"), Verdict::Keepalive);
    }

    #[test]
    fn each_rejection_has_its_kind() {
        let cases = [
            ("\u{1}\u{2}garbage\u{ff}", Rejection::Unparsable),
            (
                &REGISTER.replace("SIP/2.0\r\nVia", "SIP/9.9\r\nVia")[..],
                Rejection::BadVersion,
            ),
            (
                &REGISTER.replace(";tag=a1", "")[..],
                Rejection::NoTransactionKey,
            ),
            (
                &REGISTER.replace("CSeq: 1 REGISTER\r\n", "")[..],
                Rejection::NoTransactionKey,
            ),
            (
                &REGISTER.replace("Call-ID: c1@192.0.2.7\r\n", "")[..],
                Rejection::NoTransactionKey,
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(verdict(msg), Verdict::Reject(want), "{msg:?}");
        }
        let big = format!("{REGISTER}{}", "x".repeat(MAX_MESSAGE));
        assert_eq!(verdict(&big), Verdict::Reject(Rejection::TooLarge));
    }

    #[test]
    fn random_bytes_never_pass_and_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut passed = 0;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 700)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if screen(&bytes, src(), Transport::Udp) == Verdict::Pass {
                passed += 1;
            }
        }
        assert_eq!(passed, 0);
    }

    #[test]
    fn stream_framing_by_content_length() {
        let body = "<?xml version=\"1.0\"?><Notify/>";
        let msg = REGISTER.replace(
            "Content-Length: 0",
            &format!("Content-Length: {}", body.len()),
        ) + body;
        let b = msg.as_bytes();
        assert_eq!(stream_message_len(&b[..b.len() - 1]), Ok(None));
        assert_eq!(stream_message_len(b), Ok(Some(b.len())));
        let two = format!("{msg}{msg}");
        assert_eq!(stream_message_len(two.as_bytes()), Ok(Some(b.len())));
        assert_eq!(stream_message_len(b"\r\n\r\nREGISTER"), Ok(Some(4)));
        assert_eq!(stream_message_len(b"REGISTER sip:x SIP/2.0\r\n"), Ok(None));
        let bad = REGISTER.replace("Content-Length: 0", "Content-Length: x");
        assert_eq!(
            stream_message_len(bad.as_bytes()),
            Err(Rejection::Unparsable)
        );
        let huge = REGISTER.replace("Content-Length: 0", "Content-Length: 99999999");
        assert_eq!(
            stream_message_len(huge.as_bytes()),
            Err(Rejection::TooLarge)
        );
        assert_eq!(
            stream_message_len(&vec![b'a'; MAX_MESSAGE + 1]),
            Err(Rejection::TooLarge)
        );
    }
}
