#![no_main]
//! The SIP screen (src/sip/screen.rs) on arbitrary datagrams and TCP byte
//! streams: never a panic; a message it passes is one the stack parses; a
//! stream message length never exceeds the bytes held or the size limit.
use camgate::sip::screen::{MAX_MESSAGE, Verdict, screen, stream_message_len};
use libfuzzer_sys::fuzz_target;
use rsipstack::sip::{SipMessage, Transport};

fuzz_target!(|data: &[u8]| {
    let source = "192.0.2.7:5060".parse().unwrap();
    for transport in [Transport::Udp, Transport::Tcp] {
        if screen(data, source, transport) == Verdict::Pass {
            assert!(SipMessage::try_from(data).is_ok(), "passed but unparsable");
        }
    }
    // A TCP stream: frame messages one after another, as the gate does.
    let mut rest = data;
    while !rest.is_empty() {
        match stream_message_len(rest) {
            Ok(Some(n)) => {
                assert!(n >= 1 && n <= rest.len() && n <= MAX_MESSAGE);
                rest = &rest[n..];
            }
            Ok(None) | Err(_) => break,
        }
    }
});
