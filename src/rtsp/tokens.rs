//! One-time hash tokens for RTSP URLs, after China Telecom 手机看店 V1.3
//! §10.2: the platform mints a token for one stream path; the viewer
//! carries it as `?…&hashtoken=…` on the RTSP URL; it is good for one
//! connection and expires after a short lifetime whether used or not.
//!
//! The store is shared by the HTTP API (which mints) and every RTSP
//! connection (which redeems), hence the lock; time is always passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::streams::StreamKey;

/// Outstanding tokens kept at most; minting beyond this fails rather than
/// letting an API client grow memory without bound.
pub const MAX_TOKENS: usize = 10_000;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown or already used token")]
    Unknown,
    #[error("token expired")]
    Expired,
    #[error("token was minted for another stream")]
    WrongStream,
    #[error("too many outstanding tokens")]
    Full,
}

impl TokenError {
    /// Label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unknown => "token_unknown",
            Self::Expired => "token_expired",
            Self::WrongStream => "token_wrong_stream",
            Self::Full => "token_store_full",
        }
    }
}

#[derive(Debug)]
struct Grant {
    key: StreamKey,
    expires: Instant,
}

/// Outstanding tokens, keyed by the SHA-256 of the token: the lookup then
/// compares digests, never the secret itself, so its timing says nothing
/// about how much of a guessed token was right.
#[derive(Debug)]
pub struct TokenStore {
    ttl: Duration,
    grants: Mutex<HashMap<[u8; 32], Grant>>,
}

impl TokenStore {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            grants: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Grant>> {
        // The map stays consistent across a panic elsewhere; keep serving.
        self.grants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `token` (fresh randomness from the caller) for `key`.
    pub fn mint(&self, key: StreamKey, token: String, now: Instant) -> Result<String, TokenError> {
        let mut grants = self.lock();
        if grants.len() >= MAX_TOKENS {
            grants.retain(|_, g| g.expires > now);
            if grants.len() >= MAX_TOKENS {
                return Err(TokenError::Full);
            }
        }
        grants.insert(
            crate::secret::sha256(token.as_bytes()),
            Grant {
                key,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Use `token` for `key`. Any presentation consumes it, so a token
    /// that leaked with a wrong path cannot be retried.
    pub fn redeem(&self, token: &str, key: &StreamKey, now: Instant) -> Result<(), TokenError> {
        let grant = self
            .lock()
            .remove(&crate::secret::sha256(token.as_bytes()))
            .ok_or(TokenError::Unknown)?;
        if now >= grant.expires {
            return Err(TokenError::Expired);
        }
        if grant.key != *key {
            return Err(TokenError::WrongStream);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fresh token: 128 random bits as lower-case hex.
pub fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> StreamKey {
        StreamKey::from_path(p).unwrap()
    }

    #[test]
    fn once_only_within_ttl_and_for_its_path() {
        let t0 = Instant::now();
        let store = TokenStore::new(Duration::from_secs(60));
        let a = store.mint(key("gb/a/1"), "a".into(), t0).unwrap();
        assert_eq!(store.redeem(&a, &key("gb/a/1"), t0), Ok(()));
        assert_eq!(
            store.redeem(&a, &key("gb/a/1"), t0),
            Err(TokenError::Unknown)
        );

        let b = store.mint(key("gb/a/1"), "b".into(), t0).unwrap();
        assert_eq!(
            store.redeem(&b, &key("gb/a/1"), t0 + Duration::from_secs(60)),
            Err(TokenError::Expired)
        );
        let c = store.mint(key("gb/a/1"), "c".into(), t0).unwrap();
        assert_eq!(
            store.redeem(&c, &key("gb/a/2"), t0),
            Err(TokenError::WrongStream)
        );
        assert!(store.is_empty(), "every presented token is consumed");
    }
}
