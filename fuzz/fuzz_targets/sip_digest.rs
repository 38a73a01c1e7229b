#![no_main]
//! Digest header parsing (Authorization / WWW-Authenticate) on arbitrary
//! input: must never panic, and whatever parses must re-render and re-parse
//! to the same value.
use camgate::sip::digest::{DigestChallenge, DigestCredentials, parse_params};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_params(s);
    if let Ok(c) = DigestChallenge::parse(s) {
        let _ = DigestChallenge::parse(&c.to_header());
    }
    if let Ok(a) = DigestCredentials::parse(s) {
        let _ = a.verify("REGISTER", "12345678");
        let again = DigestCredentials::parse(&a.to_header());
        assert_eq!(again.as_ref(), Ok(&a));
    }
});
