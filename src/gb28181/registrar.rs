//! REGISTER decisions (GB/T 28181-2016 §9.1.2, RFC 3261 §10.3, RFC 2617):
//! challenge, accept, refuse or unregister. Sans-IO: request facts, the
//! password and `now` in; a decision out. The driver turns it into a
//! response and registry updates.
//!
//! The digest is checked with the username in Authorization, while the
//! device is identified by the From user: real devices send different
//! values in the two (a Hikvision/Dahua "SIP user name" vs "device id").

use std::time::{Duration, Instant};

use crate::sip::digest::{DigestChallenge, DigestCredentials, NonceStatus, NonceStore};

/// What to answer a REGISTER with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterDecision {
    /// 401 with this `WWW-Authenticate` value.
    Challenge { www_authenticate: String },
    /// 200; the registration lasts `expires`.
    Accept { expires: Duration },
    /// 200 to `Expires: 0`.
    Unregister,
    /// 403: credentials present but wrong.
    Forbidden { reason: &'static str },
    /// 400: the Authorization header could not be read.
    BadRequest { reason: String },
}

impl RegisterDecision {
    /// Metrics label.
    pub fn outcome(&self) -> &'static str {
        match self {
            RegisterDecision::Challenge { .. } => "challenged",
            RegisterDecision::Accept { .. } => "ok",
            RegisterDecision::Unregister => "unregistered",
            RegisterDecision::Forbidden { .. } => "forbidden",
            RegisterDecision::BadRequest { .. } => "bad_request",
        }
    }
}

/// The parts of a REGISTER the decision needs.
#[derive(Debug, Clone)]
pub struct RegisterAttempt<'a> {
    pub authorization: Option<&'a str>,
    /// Requested lifetime in seconds, if the device gave one.
    pub expires: Option<u32>,
}

/// Holds the nonces we issued; one per platform.
pub struct Registrar {
    realm: String,
    max_expires: Duration,
    nonces: NonceStore,
}

impl Registrar {
    pub fn new(realm: &str, max_expires: Duration) -> Self {
        Self {
            realm: realm.to_owned(),
            max_expires,
            nonces: NonceStore::new(NonceStore::DEFAULT_TTL, NonceStore::DEFAULT_CAPACITY),
        }
    }

    /// Decide on a REGISTER; `password` is `None` when auth is off.
    pub fn decide(
        &mut self,
        attempt: &RegisterAttempt<'_>,
        password: Option<&str>,
        now: Instant,
    ) -> RegisterDecision {
        if let Some(password) = password {
            let Some(header) = attempt.authorization else {
                return self.challenge(now, false);
            };
            let creds = match DigestCredentials::parse(header) {
                Ok(c) => c,
                Err(e) => {
                    return RegisterDecision::BadRequest {
                        reason: format!("unreadable Authorization: {e}"),
                    };
                }
            };
            match self.nonces.check(&creds.nonce, now) {
                NonceStatus::Fresh => {}
                // Not ours (we restarted, or a replay) or too old: a new
                // challenge, flagged stale so the device retries silently.
                NonceStatus::Stale | NonceStatus::Unknown => return self.challenge(now, true),
            }
            if !creds.verify("REGISTER", password) {
                return RegisterDecision::Forbidden {
                    reason: "wrong password",
                };
            }
        }
        match attempt.expires {
            Some(0) => RegisterDecision::Unregister,
            Some(secs) => RegisterDecision::Accept {
                expires: Duration::from_secs(secs.into()).min(self.max_expires),
            },
            None => RegisterDecision::Accept {
                expires: self.max_expires,
            },
        }
    }

    fn challenge(&mut self, now: Instant, stale: bool) -> RegisterDecision {
        let nonce = self.nonces.issue(now);
        let mut challenge = DigestChallenge::new(&self.realm, &nonce);
        challenge.stale = stale;
        RegisterDecision::Challenge {
            www_authenticate: challenge.to_header(),
        }
    }
}

#[cfg(test)]
#[path = "register_quirks_tests.rs"]
mod quirks_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::compute_response;

    fn nonce_of(decision: &RegisterDecision) -> String {
        let RegisterDecision::Challenge { www_authenticate } = decision else {
            panic!("expected a challenge, got {decision:?}");
        };
        DigestChallenge::parse(www_authenticate).unwrap().nonce
    }

    fn authorization(user: &str, nonce: &str, password: &str) -> String {
        let uri = "sip:34020000002000000001@3402000000";
        let response = compute_response(user, "3402000000", password, "REGISTER", uri, nonce, None);
        format!(
            "Digest username=\"{user}\",realm=\"3402000000\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{response}\",algorithm=MD5"
        )
    }

    #[test]
    fn challenge_then_accept_then_forbid_wrong_password() {
        let now = Instant::now();
        let mut r = Registrar::new("3402000000", Duration::from_secs(3600));
        let first = r.decide(
            &RegisterAttempt {
                authorization: None,
                expires: Some(7200),
            },
            Some("12345678"),
            now,
        );
        let nonce = nonce_of(&first);
        assert!(
            matches!(&first, RegisterDecision::Challenge { www_authenticate } if www_authenticate.contains("algorithm=MD5"))
        );
        // The Authorization username differs from the device id: allowed.
        let good = authorization("34020000001320000088", &nonce, "12345678");
        let ok = r.decide(
            &RegisterAttempt {
                authorization: Some(&good),
                expires: Some(7200),
            },
            Some("12345678"),
            now,
        );
        assert_eq!(
            ok,
            RegisterDecision::Accept {
                expires: Duration::from_secs(3600)
            }
        );
        let bad = authorization("34020000001320000088", &nonce, "wrong");
        assert_eq!(
            r.decide(
                &RegisterAttempt {
                    authorization: Some(&bad),
                    expires: Some(3600),
                },
                Some("12345678"),
                now,
            )
            .outcome(),
            "forbidden"
        );
    }

    #[test]
    fn unknown_or_expired_nonce_is_rechallenged_stale() {
        let now = Instant::now();
        let mut r = Registrar::new("3402000000", Duration::from_secs(3600));
        let forged = authorization("x", "0123456789abcdef0123456789abcdef", "12345678");
        let d = r.decide(
            &RegisterAttempt {
                authorization: Some(&forged),
                expires: None,
            },
            Some("12345678"),
            now,
        );
        let RegisterDecision::Challenge { www_authenticate } = &d else {
            panic!("{d:?}")
        };
        assert!(DigestChallenge::parse(www_authenticate).unwrap().stale);
        let nonce = nonce_of(&d);
        let later = now + Duration::from_secs(3600);
        let late = authorization("x", &nonce, "12345678");
        assert_eq!(
            r.decide(
                &RegisterAttempt {
                    authorization: Some(&late),
                    expires: None
                },
                Some("12345678"),
                later
            )
            .outcome(),
            "challenged"
        );
    }

    #[test]
    fn expires_zero_unregisters_and_no_password_accepts() {
        let mut r = Registrar::new("3402000000", Duration::from_secs(600));
        let now = Instant::now();
        assert_eq!(
            r.decide(
                &RegisterAttempt {
                    authorization: None,
                    expires: Some(0)
                },
                None,
                now
            ),
            RegisterDecision::Unregister
        );
        assert_eq!(
            r.decide(
                &RegisterAttempt {
                    authorization: Some("garbage"),
                    expires: Some(60)
                },
                None,
                now
            ),
            RegisterDecision::Accept {
                expires: Duration::from_secs(60)
            }
        );
    }
}
