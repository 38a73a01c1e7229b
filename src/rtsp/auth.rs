//! Access control of the RTSP server, per stream path prefix.
//!
//! - HTTP Basic (RFC 7617 §2) over RTSP (RFC 2326 §15).
//! - Digest (RFC 7616 §3.3–3.4) with MD5 and SHA-256. The challenge offers
//!   SHA-256 first and MD5 second (§3.7), both with `qop="auth"`; answers
//!   without `qop` (the RFC 2069 form several RTSP clients still send) are
//!   accepted too. The nonce is per connection: a client that presents
//!   another one gets a fresh challenge with `stale=true`.
//! - One-time hash tokens ([`super::tokens`]).
//! - `disabled`: the stream exists but is switched off (403).
//!
//! Sans-IO: header values and `now` in, a verdict out.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::Md5;
use sha2::Sha256;

use super::tokens::{TokenError, TokenStore};
use crate::sip::digest::{DigestError, parse_params};
use crate::streams::StreamKey;

/// How a path is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    None,
    Basic,
    Digest,
    Token,
    /// Refused with 403 whatever the credentials.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthUser {
    pub name: String,
    pub password: String,
}

/// A rule for stream keys starting with `prefix` (e.g. `gb/3402…`); the
/// longest matching prefix wins, `mode` applies when none matches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub prefix: String,
    pub mode: AuthMode,
}

/// The `rtsp.auth` config section.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub realm: String,
    pub users: Vec<AuthUser>,
    pub paths: Vec<PathRule>,
    /// Lifetime of a minted hash token, seconds.
    pub token_ttl: f64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            realm: "camgate".into(),
            users: Vec::new(),
            paths: Vec::new(),
            token_ttl: 60.0,
        }
    }
}

impl AuthConfig {
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.token_ttl.clamp(0.0, 86_400.0))
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("credentials for another realm")]
    WrongRealm,
    #[error("nonce is not the one issued on this connection")]
    StaleNonce,
    #[error("unsupported scheme or algorithm")]
    Unsupported,
    #[error("malformed Authorization: {0}")]
    Malformed(#[from] DigestError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("stream disabled")]
    Disabled,
}

impl AuthError {
    /// Label value for `camgate_rtsp_auth_failures{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::BadCredentials => "bad_credentials",
            Self::WrongRealm => "wrong_realm",
            Self::StaleNonce => "stale_nonce",
            Self::Unsupported => "unsupported",
            Self::Malformed(_) => "malformed",
            Self::Token(e) => e.kind(),
            Self::Disabled => "disabled",
        }
    }
}

/// What the request offers.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub method: &'a str,
    pub authorization: Option<&'a str>,
    /// The `hashtoken` query parameter of the request URL.
    pub token: Option<&'a str>,
}

/// Digest hash functions of RFC 7616 §3.2 that we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            None => Some(Self::Md5),
            Some(n) if n.eq_ignore_ascii_case("MD5") => Some(Self::Md5),
            Some(n) if n.eq_ignore_ascii_case("SHA-256") => Some(Self::Sha256),
            _ => None,
        }
    }

    fn hex(self, parts: &[&str]) -> String {
        fn run<D: sha2::Digest>(parts: &[&str]) -> String {
            let mut h = D::new();
            for p in parts {
                h.update(p.as_bytes());
            }
            let mut s = String::with_capacity(64);
            for b in h.finalize().iter() {
                let _ = write!(s, "{b:02x}");
            }
            s
        }
        match self {
            Self::Md5 => run::<Md5>(parts),
            Self::Sha256 => run::<Sha256>(parts),
        }
    }
}

/// The access policy, shared by every connection.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
    tokens: Arc<TokenStore>,
}

impl Authenticator {
    pub fn new(config: AuthConfig, tokens: Arc<TokenStore>) -> Self {
        Self { config, tokens }
    }

    pub fn tokens(&self) -> &Arc<TokenStore> {
        &self.tokens
    }

    /// The mode of the longest prefix rule matching `key`.
    pub fn mode_for(&self, key: &StreamKey) -> AuthMode {
        let path = key.as_str();
        self.config
            .paths
            .iter()
            .filter(|r| {
                let p = r.prefix.trim_matches('/');
                path == p
                    || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
                    || p.is_empty()
            })
            .max_by_key(|r| r.prefix.trim_matches('/').len())
            .map_or(self.config.mode, |r| r.mode)
    }

    /// Let the request through to `key`, or say why not. `nonce` is the
    /// connection's digest nonce.
    pub fn check(
        &self,
        key: &StreamKey,
        req: Presented<'_>,
        nonce: &str,
        now: Instant,
    ) -> Result<(), AuthError> {
        match self.mode_for(key) {
            AuthMode::None => Ok(()),
            AuthMode::Disabled => Err(AuthError::Disabled),
            AuthMode::Token => {
                let token = req.token.ok_or(AuthError::Missing)?;
                Ok(self.tokens.redeem(token, key, now)?)
            }
            AuthMode::Basic => self.check_basic(req.authorization.ok_or(AuthError::Missing)?),
            AuthMode::Digest => self.check_digest(
                req.authorization.ok_or(AuthError::Missing)?,
                req.method,
                nonce,
            ),
        }
    }

    fn password_of(&self, user: &str) -> Option<&str> {
        self.config
            .users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.password.as_str())
    }

    fn check_basic(&self, value: &str) -> Result<(), AuthError> {
        let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::Unsupported)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthError::Unsupported);
        }
        let decoded = B64
            .decode(rest.trim())
            .map_err(|_| AuthError::BadCredentials)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::BadCredentials)?;
        let (user, pass) = text.split_once(':').ok_or(AuthError::BadCredentials)?;
        match self.password_of(user) {
            Some(p) if crate::secret::ct_eq(p.as_bytes(), pass.as_bytes()) => Ok(()),
            _ => Err(AuthError::BadCredentials),
        }
    }

    fn check_digest(&self, value: &str, method: &str, nonce: &str) -> Result<(), AuthError> {
        let params = parse_params(value)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        let need = |k: &'static str| get(k).ok_or(AuthError::Malformed(DigestError::Missing(k)));
        let (user, realm, their_nonce, uri, response) = (
            need("username")?,
            need("realm")?,
            need("nonce")?,
            need("uri")?,
            need("response")?,
        );
        let algorithm = Algorithm::parse(get("algorithm")).ok_or(AuthError::Unsupported)?;
        if realm != self.config.realm {
            return Err(AuthError::WrongRealm);
        }
        if their_nonce != nonce {
            return Err(AuthError::StaleNonce);
        }
        let password = self.password_of(user).ok_or(AuthError::BadCredentials)?;
        let ha1 = algorithm.hex(&[user, ":", realm, ":", password]);
        let ha2 = algorithm.hex(&[method, ":", uri]);
        let expected = match get("qop") {
            None => algorithm.hex(&[&ha1, ":", nonce, ":", &ha2]),
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (nc, cnonce) = (need("nc")?, need("cnonce")?);
                algorithm.hex(&[&ha1, ":", nonce, ":", nc, ":", cnonce, ":auth:", &ha2])
            }
            Some(_) => return Err(AuthError::Unsupported),
        };
        if crate::secret::ct_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            Ok(())
        } else {
            Err(AuthError::BadCredentials)
        }
    }

    /// `WWW-Authenticate` values for a 401 on `key` (one header line each).
    pub fn challenges(&self, key: &StreamKey, nonce: &str, stale: bool) -> Vec<String> {
        let realm = self.config.realm.replace(['"', '\\'], "");
        match self.mode_for(key) {
            AuthMode::Basic => vec![format!("Basic realm=\"{realm}\"")],
            AuthMode::Digest => ["SHA-256", "MD5"]
                .iter()
                .map(|alg| {
                    format!(
                        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={alg}, qop=\"auth\"{}",
                        if stale { ", stale=true" } else { "" }
                    )
                })
                .collect(),
            // RFC 2326 §11.3.1 wants a challenge with every 401; the token
            // scheme has no standard one, so name it for humans.
            AuthMode::Token => vec![format!("HashToken realm=\"{realm}\"")],
            AuthMode::None | AuthMode::Disabled => Vec::new(),
        }
    }
}

/// The `hashtoken` parameter of a URL query, ignoring a `/trackID=N`
/// that some clients append after the query.
pub fn hashtoken(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "hashtoken")
        .map(|(_, v)| v.split('/').next().unwrap_or(v))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(mode: AuthMode) -> Authenticator {
        Authenticator::new(
            AuthConfig {
                mode,
                users: vec![AuthUser {
                    name: "Mufasa".into(),
                    password: "Circle of Life".into(),
                }],
                realm: "http-auth@example.org".into(),
                paths: vec![
                    PathRule {
                        prefix: "gb/off".into(),
                        mode: AuthMode::Disabled,
                    },
                    PathRule {
                        prefix: "/gb/open/".into(),
                        mode: AuthMode::None,
                    },
                ],
                ..AuthConfig::default()
            },
            Arc::new(TokenStore::new(Duration::from_secs(60))),
        )
    }

    fn key(p: &str) -> StreamKey {
        StreamKey::from_path(p).unwrap()
    }

    fn present<'a>(authorization: Option<&'a str>) -> Presented<'a> {
        Presented {
            method: "GET",
            authorization,
            token: None,
        }
    }

    /// The worked examples of RFC 7616 §3.9.1, SHA-256 and MD5.
    #[test]
    fn rfc7616_examples() {
        let a = auth(AuthMode::Digest);
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let k = key("gb/a/b");
        let header = |alg: &str, response: &str| {
            format!(
                "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", \
                 algorithm={alg}, nonce=\"{nonce}\", nc=00000001, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", \
                 qop=auth, response=\"{response}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            )
        };
        let sha = header(
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        );
        let md5 = header("MD5", "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            a.check(&k, present(Some(&sha)), nonce, Instant::now()),
            Ok(())
        );
        assert_eq!(
            a.check(&k, present(Some(&md5)), nonce, Instant::now()),
            Ok(())
        );
        assert_eq!(
            a.check(&k, present(Some(&md5)), "other", Instant::now()),
            Err(AuthError::StaleNonce)
        );
        let wrong = md5.replace("8ca523", "8ca524");
        assert_eq!(
            a.check(&k, present(Some(&wrong)), nonce, Instant::now()),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            a.check(&k, present(None), nonce, Instant::now()),
            Err(AuthError::Missing)
        );
        let ch = a.challenges(&k, "n1", false);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("algorithm=SHA-256") && ch[1].contains("algorithm=MD5"));
    }

    /// RFC 2069 answers (no qop): MD5(HA1:nonce:HA2).
    #[test]
    fn digest_without_qop() {
        let a = auth(AuthMode::Digest);
        let ha1 = Algorithm::Md5.hex(&["Mufasa:http-auth@example.org:Circle of Life"]);
        let ha2 = Algorithm::Md5.hex(&["DESCRIBE:rtsp://h/gb/a/b"]);
        let resp = Algorithm::Md5.hex(&[&ha1, ":n:", &ha2]);
        let h = format!(
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", nonce=\"n\", uri=\"rtsp://h/gb/a/b\", response=\"{resp}\""
        );
        let p = Presented {
            method: "DESCRIBE",
            authorization: Some(&h),
            token: None,
        };
        assert_eq!(a.check(&key("gb/a/b"), p, "n", Instant::now()), Ok(()));
    }

    /// RFC 7617 §2's example credentials, and the path rules.
    #[test]
    fn basic_and_rules() {
        let a = Authenticator::new(
            AuthConfig {
                mode: AuthMode::Basic,
                users: vec![AuthUser {
                    name: "Aladdin".into(),
                    password: "open sesame".into(),
                }],
                ..auth(AuthMode::Basic).config.clone()
            },
            Arc::new(TokenStore::new(Duration::from_secs(60))),
        );
        let k = key("gb/a/b");
        let now = Instant::now();
        assert_eq!(
            a.check(
                &k,
                present(Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")),
                "",
                now
            ),
            Ok(())
        );
        assert_eq!(
            a.check(
                &k,
                present(Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZR==")),
                "",
                now
            ),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            a.check(&key("gb/off/1"), present(None), "", now),
            Err(AuthError::Disabled)
        );
        assert_eq!(a.check(&key("gb/open/1"), present(None), "", now), Ok(()));
        // A prefix matches whole segments only.
        assert_eq!(a.mode_for(&key("gb/openx/1")), AuthMode::Basic);
    }

    #[test]
    fn token_mode_consumes() {
        let a = auth(AuthMode::Token);
        let k = key("gb/a/b");
        let now = Instant::now();
        let t = a.tokens().mint(k.clone(), "tok".into(), now).unwrap();
        let p = Presented {
            method: "DESCRIBE",
            authorization: None,
            token: Some(&t),
        };
        assert_eq!(a.check(&k, p, "", now), Ok(()));
        assert_eq!(
            a.check(&k, p, "", now),
            Err(AuthError::Token(TokenError::Unknown))
        );
        assert_eq!(hashtoken(Some("a=1&hashtoken=xy/trackID=0")), Some("xy"));
        assert_eq!(hashtoken(Some("hashtoken=")), None);
        assert_eq!(hashtoken(None), None);
    }
}
