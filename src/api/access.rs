//! Who may use the HTTP API (`http.auth`).
//!
//! Three doors, decided per request by method and path ([`door`]):
//!
//! - **API** (`/api/…`): `GET`/`HEAD` need the `read` scope, every other
//!   method `admin` — token minting, PTZ, talk, downloads, snapshots,
//!   reboot, removal and telecom commands all change something or hand out
//!   access. Modes: `none` (anyone is admin), `basic` (RFC 7617 with the
//!   `rtsp.auth.users`, who are admins), `bearer` (RFC 6750 §2.1, API keys
//!   from `http.api_keys`, stored as SHA-256 and each with a scope).
//! - **Probes** (`/healthz`, `/readyz`, `/metrics`): open unless
//!   `metrics.auth`, then `read`.
//! - **Open**: the console's static files, the OpenAPI document, CORS
//!   preflights, the telecom devices' own registration (they prove
//!   themselves with their DevKey), and the routes that open a stream
//!   (`/whep/…`, `/mjpeg/…`, `/snapshot/…`), which apply the stream path
//!   rules of `rtsp.auth` themselves ([`super::stream_access`]).
//!
//! An `EventSource` cannot send headers, so `GET /api/v1/events/stream`
//! also takes the key as `?access_token=` (RFC 6750 §2.3).
//!
//! Sans-IO: method, path, header values in; a verdict out.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::rtsp::auth::AuthUser;
use crate::secret::{ct_eq, parse_sha256_hex, sha256};

/// `http.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiAuthMode {
    None,
    Basic,
    Bearer,
}

impl ApiAuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Basic => "basic",
            Self::Bearer => "bearer",
        }
    }
}

/// What a credential may do; `Admin` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Admin,
}

/// One entry of `http.api_keys`: the key itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds it (logs only).
    pub name: String,
    /// SHA-256 of the key, 64 hex digits (`camgate api-key` prints one).
    pub sha256: String,
    pub scope: Scope,
}

/// Which rule a request falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// No API credentials asked (a route may still check its own).
    Open,
    /// Health and metrics: `metrics.auth` decides.
    Probe,
    /// The API proper, needing this scope.
    Api(Scope),
}

/// Classify a request. Unknown paths are `Open`: they answer 404 anyway.
pub fn door(method: &str, path: &str) -> Door {
    if method.eq_ignore_ascii_case("OPTIONS") {
        return Door::Open;
    }
    match path {
        "/healthz" | "/readyz" | "/metrics" => return Door::Probe,
        "/api/v1/openapi.json" => return Door::Open,
        _ => {}
    }
    if path.starts_with("/api/") {
        let safe = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
        return Door::Api(if safe { Scope::Read } else { Scope::Admin });
    }
    Door::Open
}

/// The query parameter an `EventSource` passes the key in, honoured on this
/// path only.
pub const EVENT_STREAM_PATH: &str = "/api/v1/events/stream";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiAuthError {
    #[error("credentials required")]
    Missing,
    #[error("unknown key or wrong user name or password")]
    Invalid,
    #[error("this credential may not do that (needs the admin scope)")]
    Scope,
}

impl ApiAuthError {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Scope => "scope",
        }
    }

    /// 401 asks for (other) credentials; 403 says these will not do.
    pub fn status(self) -> u16 {
        match self {
            Self::Missing | Self::Invalid => 401,
            Self::Scope => 403,
        }
    }
}

#[derive(Debug)]
struct Key {
    name: String,
    hash: [u8; 32],
    scope: Scope,
}

/// The API access policy, built once from the configuration.
#[derive(Debug)]
pub struct ApiAccess {
    mode: ApiAuthMode,
    keys: Vec<Key>,
    users: Vec<AuthUser>,
    realm: String,
    probes_need_auth: bool,
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub authorization: Option<&'a str>,
    /// `?access_token=` (event stream only; the caller filters).
    pub access_token: Option<&'a str>,
}

impl ApiAccess {
    /// `keys` must have been validated (see `Config::validate`); entries
    /// whose hash does not parse are skipped.
    pub fn new(
        mode: ApiAuthMode,
        keys: &[ApiKeyConfig],
        users: &[AuthUser],
        realm: &str,
        probes_need_auth: bool,
    ) -> Self {
        Self {
            mode,
            keys: keys
                .iter()
                .filter_map(|k| {
                    Some(Key {
                        name: k.name.clone(),
                        hash: parse_sha256_hex(&k.sha256)?,
                        scope: k.scope,
                    })
                })
                .collect(),
            users: users.to_vec(),
            realm: realm.replace(['"', '\\'], ""),
            probes_need_auth,
        }
    }

    /// Everyone is admin: the loopback default.
    pub fn open() -> Self {
        Self::new(ApiAuthMode::None, &[], &[], "camgate", false)
    }

    pub fn mode(&self) -> ApiAuthMode {
        self.mode
    }

    /// Let a request through `door` (`Ok` with who it was, for logs), or
    /// say why not.
    pub fn check(&self, door: Door, presented: Presented<'_>) -> Result<String, ApiAuthError> {
        let needed = match door {
            Door::Open => return Ok(String::new()),
            Door::Probe if !self.probes_need_auth => return Ok(String::new()),
            Door::Probe => Scope::Read,
            Door::Api(scope) => scope,
        };
        let (who, scope) = match self.mode {
            ApiAuthMode::None => return Ok(String::new()),
            ApiAuthMode::Bearer => self.bearer(presented)?,
            ApiAuthMode::Basic => self.basic(presented)?,
        };
        if scope < needed {
            return Err(ApiAuthError::Scope);
        }
        Ok(who)
    }

    fn bearer(&self, presented: Presented<'_>) -> Result<(String, Scope), ApiAuthError> {
        let key = match presented.authorization {
            Some(value) => {
                let (scheme, key) = value.trim().split_once(' ').ok_or(ApiAuthError::Invalid)?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(ApiAuthError::Invalid);
                }
                key.trim()
            }
            None => presented.access_token.ok_or(ApiAuthError::Missing)?,
        };
        let hash = sha256(key.as_bytes());
        // Every key is compared, so the time taken does not say which one
        // (or whether any) was close.
        let mut found = None;
        for k in &self.keys {
            if ct_eq(&k.hash, &hash) {
                found = Some((k.name.clone(), k.scope));
            }
        }
        found.ok_or(ApiAuthError::Invalid)
    }

    fn basic(&self, presented: Presented<'_>) -> Result<(String, Scope), ApiAuthError> {
        let value = presented.authorization.ok_or(ApiAuthError::Missing)?;
        let (scheme, encoded) = value.trim().split_once(' ').ok_or(ApiAuthError::Invalid)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiAuthError::Invalid);
        }
        let decoded = B64
            .decode(encoded.trim())
            .map_err(|_| ApiAuthError::Invalid)?;
        let text = String::from_utf8(decoded).map_err(|_| ApiAuthError::Invalid)?;
        let (name, password) = text.split_once(':').ok_or(ApiAuthError::Invalid)?;
        let mut ok = false;
        for u in &self.users {
            // Both compared in full for every user: no early exit.
            let name_ok = ct_eq(&sha256(u.name.as_bytes()), &sha256(name.as_bytes()));
            let pass_ok = ct_eq(&sha256(u.password.as_bytes()), &sha256(password.as_bytes()));
            ok |= name_ok & pass_ok;
        }
        if ok {
            Ok((name.to_owned(), Scope::Admin))
        } else {
            Err(ApiAuthError::Invalid)
        }
    }

    /// The `WWW-Authenticate` of a 401.
    pub fn challenge(&self, error: ApiAuthError) -> String {
        let realm = &self.realm;
        match self.mode {
            ApiAuthMode::Basic => format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
            _ if error == ApiAuthError::Invalid => {
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
            }
            _ => format!("Bearer realm=\"{realm}\""),
        }
    }
}

/// The `access_token` query parameter, if any.
pub fn access_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::hex;

    const ADMIN: &str = "admin-key-1";
    const READ: &str = "read-key-1";

    fn bearer() -> ApiAccess {
        let keys = [
            ApiKeyConfig {
                name: "ops".into(),
                sha256: hex(&sha256(ADMIN.as_bytes())),
                scope: Scope::Admin,
            },
            ApiKeyConfig {
                name: "wall".into(),
                sha256: hex(&sha256(READ.as_bytes())).to_uppercase(),
                scope: Scope::Read,
            },
        ];
        ApiAccess::new(ApiAuthMode::Bearer, &keys, &[], "camgate", false)
    }

    fn with(auth: &str) -> Presented<'_> {
        Presented {
            authorization: Some(auth),
            access_token: None,
        }
    }

    #[test]
    fn doors_by_method_and_path() {
        assert_eq!(door("GET", "/api/v1/devices"), Door::Api(Scope::Read));
        assert_eq!(
            door("HEAD", "/api/v1/events/stream"),
            Door::Api(Scope::Read)
        );
        assert_eq!(door("POST", "/api/v1/tokens"), Door::Api(Scope::Admin));
        assert_eq!(door("DELETE", "/api/v1/devices/1"), Door::Api(Scope::Admin));
        assert_eq!(
            door("PUT", "/api/v1/ctel/devices/1/video"),
            Door::Api(Scope::Admin)
        );
        assert_eq!(door("OPTIONS", "/api/v1/tokens"), Door::Open);
        assert_eq!(door("GET", "/metrics"), Door::Probe);
        assert_eq!(door("GET", "/healthz"), Door::Probe);
        assert_eq!(door("GET", "/api/v1/openapi.json"), Door::Open);
        assert_eq!(door("POST", "/whep/gb/1/2"), Door::Open);
        assert_eq!(door("GET", "/mjpeg/foscam/door"), Door::Open);
        assert_eq!(door("POST", "/ctel/register"), Door::Open);
        assert_eq!(door("GET", "/"), Door::Open);
    }

    #[test]
    fn bearer_keys_and_scopes() {
        let a = bearer();
        let admin = format!("Bearer {ADMIN}");
        let read = format!("bearer {READ}");
        let post = Door::Api(Scope::Admin);
        let get = Door::Api(Scope::Read);
        assert_eq!(
            a.check(post, Presented::default()),
            Err(ApiAuthError::Missing)
        );
        assert_eq!(
            a.check(post, with("Bearer nope")),
            Err(ApiAuthError::Invalid)
        );
        assert_eq!(
            a.check(post, with("Basic YTpi")),
            Err(ApiAuthError::Invalid)
        );
        assert_eq!(a.check(post, with(&read)), Err(ApiAuthError::Scope));
        assert_eq!(a.check(get, with(&read)).as_deref(), Ok("wall"));
        assert_eq!(a.check(post, with(&admin)).as_deref(), Ok("ops"));
        assert_eq!(a.check(Door::Open, Presented::default()), Ok(String::new()));
        // Probes stay open unless metrics.auth.
        assert!(a.check(Door::Probe, Presented::default()).is_ok());
        let token = Presented {
            authorization: None,
            access_token: Some(READ),
        };
        assert!(a.check(get, token).is_ok());
        assert_eq!(ApiAuthError::Scope.status(), 403);
        assert!(a.challenge(ApiAuthError::Invalid).contains("invalid_token"));
    }

    #[test]
    fn basic_users_are_admins_and_none_lets_all() {
        let users = [AuthUser {
            name: "Aladdin".into(),
            password: "open sesame".into(),
        }];
        let a = ApiAccess::new(ApiAuthMode::Basic, &[], &users, "cam\"gate", true);
        let post = Door::Api(Scope::Admin);
        assert!(
            a.check(post, with("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="))
                .is_ok()
        );
        assert_eq!(
            a.check(post, with("Basic QWxhZGRpbjpvcGVuIHNlc2FtZR==")),
            Err(ApiAuthError::Invalid)
        );
        assert_eq!(
            a.check(Door::Probe, Presented::default()),
            Err(ApiAuthError::Missing)
        );
        assert_eq!(
            a.challenge(ApiAuthError::Missing),
            "Basic realm=\"camgate\", charset=\"UTF-8\""
        );
        assert!(ApiAccess::open().check(post, Presented::default()).is_ok());
    }

    #[test]
    fn access_token_from_query() {
        assert_eq!(access_token(Some("a=1&access_token=xyz")), Some("xyz"));
        assert_eq!(access_token(Some("access_token=")), None);
        assert_eq!(access_token(None), None);
    }
}
