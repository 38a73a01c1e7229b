//! Who may open a WHEP session: the RTSP server's path rules
//! (`rtsp.auth`, longest prefix wins) applied to `POST /whep/{path}`, with
//! HTTP's credentials instead of RTSP's.
//!
//! - `none`: anyone.
//! - `disabled`: nobody (403).
//! - `token`: `Authorization: Bearer <token>` (draft-ietf-wish-whep §4.5,
//!   RFC 6750 §2.1) where the token is a one-time token minted for the
//!   stream by `POST /api/v1/tokens` — the same store RTSP's `?hashtoken=`
//!   redeems from, so a token is good for one viewer of either kind. The
//!   `hashtoken` query parameter is accepted too, as on RTSP URLs.
//! - `basic`: a Bearer token as above, or `Authorization: Basic` with one
//!   of `rtsp.auth.users`.
//! - `digest`: a Bearer token only. A browser's `fetch` cannot answer a
//!   digest challenge for a WHEP POST, and accepting Basic here would send
//!   in clear the password the operator chose digest to protect.
//!
//! The session resource that a successful POST creates is then reached by
//! its unguessable id (128 random bits): DELETE and PATCH need no more.
//!
//! Sans-IO: header values and `now` in, a verdict out.

use std::sync::Arc;
use std::time::Instant;

use crate::rtsp::auth::{AuthConfig, AuthError, AuthMode, Authenticator, Presented};
use crate::streams::StreamKey;

/// Why a WHEP offer was refused; the HTTP layer answers 401 (with
/// [`WhepAuth::challenges`]) or 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhepAuthError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("this stream takes only a one-time token (Authorization: Bearer)")]
    TokenRequired,
}

impl WhepAuthError {
    /// Metric and log label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Auth(e) => e.kind(),
            Self::TokenRequired => "token_required",
        }
    }

    /// 403 rather than 401: no credentials would help.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Auth(AuthError::Disabled))
    }

    /// Whether a token was presented and refused (RFC 6750 §3.1
    /// `error="invalid_token"`).
    fn bad_token(&self) -> bool {
        matches!(self, Self::Auth(AuthError::Token(_)))
    }
}

/// The credentials a WHEP request carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhepCredentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `hashtoken` query parameter.
    pub query_token: Option<&'a str>,
}

/// The WHEP access policy, built on the RTSP one.
#[derive(Debug)]
pub struct WhepAuth {
    policy: Arc<Authenticator>,
    /// The same users with `basic` everywhere: checks `Authorization:
    /// Basic` on `basic` paths through the RTSP code.
    users: Authenticator,
    realm: String,
}

/// `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl WhepAuth {
    /// `policy` is the RTSP server's authenticator (sharing its token
    /// store); `config` the `rtsp.auth` section it was built from.
    pub fn new(policy: Arc<Authenticator>, config: &AuthConfig) -> Self {
        let users = Authenticator::new(
            AuthConfig {
                mode: AuthMode::Basic,
                paths: Vec::new(),
                ..config.clone()
            },
            policy.tokens().clone(),
        );
        Self {
            policy,
            users,
            realm: config.realm.replace(['"', '\\'], ""),
        }
    }

    pub fn mode_for(&self, key: &StreamKey) -> AuthMode {
        self.policy.mode_for(key)
    }

    /// Let a WHEP offer for `key` through, or say why not. A presented
    /// token is consumed whatever the outcome.
    pub fn check(
        &self,
        key: &StreamKey,
        creds: WhepCredentials<'_>,
        now: Instant,
    ) -> Result<(), WhepAuthError> {
        let mode = self.policy.mode_for(key);
        match mode {
            AuthMode::None => return Ok(()),
            AuthMode::Disabled => return Err(AuthError::Disabled.into()),
            AuthMode::Token | AuthMode::Basic | AuthMode::Digest => {}
        }
        let token = creds.authorization.and_then(bearer).or(creds.query_token);
        if let Some(token) = token {
            return self
                .policy
                .tokens()
                .redeem(token, key, now)
                .map_err(|e| AuthError::Token(e).into());
        }
        match (mode, creds.authorization) {
            (_, None) => Err(AuthError::Missing.into()),
            (AuthMode::Basic, Some(authorization)) => {
                let presented = Presented {
                    method: "POST",
                    authorization: Some(authorization),
                    token: None,
                };
                Ok(self.users.check(key, presented, "", now)?)
            }
            (_, Some(_)) => Err(WhepAuthError::TokenRequired),
        }
    }

    /// `WWW-Authenticate` values for a 401 on `key` after `error`.
    pub fn challenges(&self, key: &StreamKey, error: &WhepAuthError) -> Vec<String> {
        let realm = &self.realm;
        let mut out = vec![if error.bad_token() {
            format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
        } else {
            format!("Bearer realm=\"{realm}\"")
        }];
        if self.policy.mode_for(key) == AuthMode::Basic {
            out.push(format!("Basic realm=\"{realm}\""));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtsp::auth::{AuthUser, PathRule};
    use crate::rtsp::tokens::{TokenError, TokenStore};
    use std::time::Duration;

    fn key(p: &str) -> StreamKey {
        StreamKey::from_path(p).unwrap()
    }

    fn whep() -> WhepAuth {
        let config = AuthConfig {
            mode: AuthMode::Digest,
            realm: "cam\"gate".into(),
            users: vec![AuthUser {
                name: "Aladdin".into(),
                password: "open sesame".into(),
            }],
            paths: vec![
                PathRule {
                    prefix: "gb/open".into(),
                    mode: AuthMode::None,
                },
                PathRule {
                    prefix: "gb/basic".into(),
                    mode: AuthMode::Basic,
                },
                PathRule {
                    prefix: "gb/tok".into(),
                    mode: AuthMode::Token,
                },
                PathRule {
                    prefix: "gb/off".into(),
                    mode: AuthMode::Disabled,
                },
            ],
            token_ttl: 60.0,
        };
        let tokens = Arc::new(TokenStore::new(Duration::from_secs(60)));
        WhepAuth::new(
            Arc::new(Authenticator::new(config.clone(), tokens)),
            &config,
        )
    }

    fn creds(authorization: Option<&str>) -> WhepCredentials<'_> {
        WhepCredentials {
            authorization,
            query_token: None,
        }
    }

    /// RFC 7617 §2's example: Aladdin / open sesame.
    const ALADDIN: &str = "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==";

    #[test]
    fn modes_follow_the_rtsp_path_rules() {
        let w = whep();
        let now = Instant::now();
        assert_eq!(w.check(&key("gb/open/1"), creds(None), now), Ok(()));
        let e = w.check(&key("gb/off/1"), creds(None), now).unwrap_err();
        assert!(e.is_forbidden());
        let e = w.check(&key("gb/tok/1"), creds(None), now).unwrap_err();
        assert_eq!(e.kind(), "missing");
        assert!(!e.is_forbidden());
        // Configured credentials: on basic paths only.
        assert_eq!(
            w.check(&key("gb/basic/1"), creds(Some(ALADDIN)), now),
            Ok(())
        );
        let wrong = "Basic QWxhZGRpbjpvcGVuIHNlc2FtZR==";
        let e = w
            .check(&key("gb/basic/1"), creds(Some(wrong)), now)
            .unwrap_err();
        assert_eq!(e.kind(), "bad_credentials");
        let e = w
            .check(&key("gb/x/1"), creds(Some(ALADDIN)), now)
            .unwrap_err();
        assert_eq!(e, WhepAuthError::TokenRequired, "digest paths take tokens");
        let e = w
            .check(&key("gb/tok/1"), creds(Some(ALADDIN)), now)
            .unwrap_err();
        assert_eq!(e, WhepAuthError::TokenRequired);
    }

    #[test]
    fn bearer_tokens_are_one_time_and_per_stream() {
        let w = whep();
        let now = Instant::now();
        let store = w.policy.tokens();
        for path in ["gb/tok/1", "gb/x/1", "gb/basic/1"] {
            let t = store.mint(key(path), format!("t-{path}"), now).unwrap();
            let header = format!("bearer  {t} ");
            assert_eq!(w.check(&key(path), creds(Some(&header)), now), Ok(()));
            let e = w.check(&key(path), creds(Some(&header)), now).unwrap_err();
            assert_eq!(
                e,
                WhepAuthError::Auth(AuthError::Token(TokenError::Unknown))
            );
            let ch = w.challenges(&key(path), &e);
            assert_eq!(ch[0], "Bearer realm=\"camgate\", error=\"invalid_token\"");
        }
        let t = store.mint(key("gb/tok/1"), "other".into(), now).unwrap();
        let e = w
            .check(&key("gb/tok/2"), creds(Some(&format!("Bearer {t}"))), now)
            .unwrap_err();
        assert_eq!(e.kind(), "token_wrong_stream");
        // The query form, as on RTSP URLs.
        let t = store.mint(key("gb/tok/1"), "q".into(), now).unwrap();
        let q = WhepCredentials {
            authorization: None,
            query_token: Some(&t),
        };
        assert_eq!(w.check(&key("gb/tok/1"), q, now), Ok(()));
        let ch = w.challenges(&key("gb/basic/1"), &AuthError::Missing.into());
        assert_eq!(ch, ["Bearer realm=\"camgate\"", "Basic realm=\"camgate\""]);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Basic abc"), None);
    }
}
