//! Viewing tokens (手机看店 spec V1.3 §7.5.5, §15): the platform mints a
//! HashToken per viewer, the device presents it back over the link (0x35
//! live, 0x74 recording) before it serves RTSP. A token is valid for a
//! limited time and for one use; a presented token is spent whether or not
//! it matched, so a guessed or replayed token never gets a second chance.
//!
//! Sans-IO: the caller supplies `now`, the wall-clock string and the random
//! key, so minting is deterministic under test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// What a token lets its bearer play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// Live video; StreamType 1 main, 2 sub.
    Live { stream_type: u8 },
    /// One recording file.
    Record { file_name: String },
}

#[derive(Debug, Clone)]
struct Issued {
    dev_id: String,
    channel: u16,
    scope: TokenScope,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown or already used token")]
    Unknown,
    #[error("token expired")]
    Expired,
    #[error("token was minted for another device, channel or stream")]
    Mismatch,
}

impl TokenError {
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Unknown => "unknown",
            TokenError::Expired => "expired",
            TokenError::Mismatch => "mismatch",
        }
    }
}

/// Inputs to one token's digest besides the scope.
pub struct MintInput<'a> {
    pub account: &'a str,
    pub password: &'a str,
    pub dev_id: &'a str,
    pub channel: u16,
    /// `YYYYMMDDHHMMSS`.
    pub time: &'a str,
    pub random: [u8; 16],
}

/// Outstanding tokens; bounded so a flood of viewers cannot grow it
/// without limit (the oldest go first).
pub struct TokenBook {
    ttl: Duration,
    max_outstanding: usize,
    issued: HashMap<String, Issued>,
}

impl TokenBook {
    pub fn new(ttl: Duration, max_outstanding: usize) -> Self {
        Self {
            ttl,
            max_outstanding: max_outstanding.max(1),
            issued: HashMap::new(),
        }
    }

    /// A new token: lowercase hex MD5 over account, password, device,
    /// channel, stream type (or file name), time and the random key.
    pub fn mint(&mut self, input: MintInput<'_>, scope: TokenScope, now: Instant) -> String {
        self.issued.retain(|_, t| t.expires > now);
        while self.issued.len() >= self.max_outstanding {
            let Some(oldest) = self
                .issued
                .iter()
                .min_by_key(|(_, t)| t.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.issued.remove(&oldest);
        }
        let mut h = Md5::new();
        for part in [input.account, input.password, input.dev_id] {
            h.update(part.as_bytes());
            h.update(b"|");
        }
        h.update(input.channel.to_string().as_bytes());
        h.update(b"|");
        match &scope {
            TokenScope::Live { stream_type } => h.update(stream_type.to_string().as_bytes()),
            TokenScope::Record { file_name } => h.update(file_name.as_bytes()),
        }
        h.update(b"|");
        h.update(input.time.as_bytes());
        h.update(b"|");
        h.update(input.random);
        let token: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.issued.insert(
            token.clone(),
            Issued {
                dev_id: input.dev_id.to_owned(),
                channel: input.channel,
                scope,
                expires: now + self.ttl,
            },
        );
        token
    }

    /// Check and spend a token the device presents.
    pub fn redeem(
        &mut self,
        token: &str,
        dev_id: &str,
        channel: u16,
        scope: &TokenScope,
        now: Instant,
    ) -> Result<(), TokenError> {
        let issued = self.issued.remove(token).ok_or(TokenError::Unknown)?;
        if issued.expires <= now {
            return Err(TokenError::Expired);
        }
        if issued.dev_id != dev_id || issued.channel != channel || issued.scope != *scope {
            return Err(TokenError::Mismatch);
        }
        Ok(())
    }

    pub fn outstanding(&self) -> usize {
        self.issued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(random: u8) -> MintInput<'static> {
        MintInput {
            account: "acc",
            password: "pw",
            dev_id: "81200000001",
            channel: 0,
            time: "20260101120000",
            random: [random; 16],
        }
    }

    const LIVE: TokenScope = TokenScope::Live { stream_type: 1 };

    #[test]
    fn token_is_md5_hex_and_single_use() {
        let now = Instant::now();
        let mut book = TokenBook::new(Duration::from_secs(60), 16);
        let t = book.mint(input(1), LIVE, now);
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(t, book.mint(input(2), LIVE, now), "random key changes it");
        assert_eq!(book.redeem(&t, "81200000001", 0, &LIVE, now), Ok(()));
        assert_eq!(
            book.redeem(&t, "81200000001", 0, &LIVE, now),
            Err(TokenError::Unknown)
        );
    }

    #[test]
    fn expired_and_mismatched_tokens_are_refused_and_spent() {
        let now = Instant::now();
        let mut book = TokenBook::new(Duration::from_secs(60), 16);
        let t = book.mint(input(1), LIVE, now);
        assert_eq!(
            book.redeem(&t, "81200000001", 0, &LIVE, now + Duration::from_secs(60)),
            Err(TokenError::Expired)
        );
        let t = book.mint(input(3), LIVE, now);
        assert_eq!(
            book.redeem(
                &t,
                "81200000001",
                0,
                &TokenScope::Live { stream_type: 2 },
                now
            ),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            book.redeem(&t, "81200000001", 0, &LIVE, now),
            Err(TokenError::Unknown)
        );
        let t = book.mint(input(4), LIVE, now);
        assert_eq!(
            book.redeem(&t, "81200000002", 0, &LIVE, now),
            Err(TokenError::Mismatch)
        );
    }

    #[test]
    fn outstanding_tokens_are_bounded() {
        let now = Instant::now();
        let mut book = TokenBook::new(Duration::from_secs(60), 3);
        let first = book.mint(input(0), LIVE, now);
        for i in 1..10u8 {
            book.mint(input(i), LIVE, now + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(book.outstanding(), 3);
        assert_eq!(
            book.redeem(&first, "81200000001", 0, &LIVE, now),
            Err(TokenError::Unknown)
        );
    }
}
