//! Comparing secrets without leaking them through timing.
//!
//! A comparison that stops at the first differing byte answers sooner the
//! fewer leading bytes of a guess are right, and a remote attacker can
//! measure that. Every secret (passwords, digest responses, DevKeys, API
//! keys, stream tokens) is compared here instead, or looked up by its
//! SHA-256 so the lookup itself never touches the secret's bytes.

use sha2::{Digest as _, Sha256};

/// Whether `a == b`, taking the same time for every `a` of a given length.
/// Lengths are not secret (digests and keys have fixed sizes).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// SHA-256 of a secret: what maps are keyed by and what config stores.
pub fn sha256(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parse 64 hex digits (either case) into a SHA-256 value.
pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_unequal_and_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn sha256_hex_round_trip() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let h = sha256(b"abc");
        let text = hex(&h);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_sha256_hex(&text.to_uppercase()), Some(h));
        assert_eq!(parse_sha256_hex("abc"), None);
        assert_eq!(parse_sha256_hex(&"zz".repeat(32)), None);
    }
}
