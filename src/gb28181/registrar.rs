//! REGISTER decisions (GB/T 28181-2016 §9.1.2, RFC 3261 §10.3, RFC 2617):
//! challenge, accept, refuse or unregister. Sans-IO: request facts, the
//! password and `now` in; a decision out. The driver turns it into a
//! response and registry updates.
//!
//! What a digest REGISTER has to get right, beyond the hash:
//!
//! - the nonce was issued by us, to this device id at this source (the
//!   address for UDP, the IP for TCP, which may reconnect), and is used
//!   once: the signed hash covers neither `Expires` nor the source, so a
//!   nonce valid for repeated use would let a sniffed REGISTER be
//!   replayed from anywhere to move or unregister the device;
//! - the realm is ours;
//! - the user name is the device id or the name configured for it in
//!   `sip.device_usernames` (real devices may send a "SIP user name"
//!   different from their id, but then the operator says which);
//! - fewer than ten failed digests from this IP or for this device in the
//!   last minute ([`FailureThrottle`]), else 403 without looking further.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::digest::{DigestChallenge, DigestCredentials, NonceStatus, NonceStore};
use crate::sip::throttle::FailureThrottle;

/// How long a challenge may take to be answered: devices answer at once.
const NONCE_TTL: Duration = Duration::from_secs(60);

/// What to answer a REGISTER with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterDecision {
    /// 401 with these `WWW-Authenticate` values (SHA-256 first when
    /// offered, RFC 8760 §2.4, then MD5).
    Challenge { www_authenticate: Vec<String> },
    /// 200; the registration lasts `expires`.
    Accept { expires: Duration },
    /// 200 to `Expires: 0`.
    Unregister,
    /// 403: credentials present but wrong.
    Forbidden { reason: &'static str },
    /// 403 without a look: too many failures from this IP or device.
    Throttled,
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
            RegisterDecision::Throttled => "throttled",
            RegisterDecision::BadRequest { .. } => "bad_request",
        }
    }
}

/// The parts of a REGISTER the decision needs.
#[derive(Debug, Clone)]
pub struct RegisterAttempt<'a> {
    /// The From user: the device registering.
    pub device_id: &'a str,
    /// Where it came from (transport address).
    pub source: SocketAddr,
    /// Over TCP (the nonce is then bound to the IP only).
    pub reliable: bool,
    pub authorization: Option<&'a str>,
    /// Requested lifetime in seconds, if the device gave one.
    pub expires: Option<u32>,
}

impl RegisterAttempt<'_> {
    /// What a nonce issued to this attempt is bound to.
    fn binding(&self) -> String {
        if self.reliable {
            format!("{}|{}", self.device_id, self.source.ip())
        } else {
            format!("{}|{}", self.device_id, self.source)
        }
    }
}

/// The device's credentials as configured.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub password: &'a str,
    /// The digest user name when it is not the device id.
    pub username: Option<&'a str>,
}

/// Holds the nonces we issued; one per platform.
pub struct Registrar {
    realm: String,
    max_expires: Duration,
    /// Offer SHA-256 beside MD5 (`sip.digest_sha256`).
    offer_sha256: bool,
    nonces: NonceStore,
    throttle: FailureThrottle,
}

impl Registrar {
    pub fn new(realm: &str, max_expires: Duration) -> Self {
        Self {
            realm: realm.to_owned(),
            max_expires,
            offer_sha256: false,
            nonces: NonceStore::new(NONCE_TTL, NonceStore::DEFAULT_CAPACITY),
            throttle: FailureThrottle::new(),
        }
    }

    /// Offer SHA-256 (RFC 8760) beside MD5 in challenges.
    pub fn with_sha256(mut self, offer: bool) -> Self {
        self.offer_sha256 = offer;
        self
    }

    /// Decide on a REGISTER; `credentials` is `None` when auth is off.
    pub fn decide(
        &mut self,
        attempt: &RegisterAttempt<'_>,
        credentials: Option<Credentials<'_>>,
        now: Instant,
    ) -> RegisterDecision {
        if let Some(expected) = credentials {
            if self
                .throttle
                .is_blocked(attempt.source.ip(), attempt.device_id, now)
            {
                return RegisterDecision::Throttled;
            }
            let Some(header) = attempt.authorization else {
                return self.challenge(attempt, now, false);
            };
            let creds = match DigestCredentials::parse(header) {
                Ok(c) => c,
                Err(e) => {
                    return RegisterDecision::BadRequest {
                        reason: format!("unreadable Authorization: {e}"),
                    };
                }
            };
            match self.nonces.take(&creds.nonce, &attempt.binding(), now) {
                NonceStatus::Fresh => {}
                // Not ours (we restarted), issued to another device or
                // source (a replay), used already, or too old: a new
                // challenge, flagged stale so a real device retries quietly.
                NonceStatus::Stale | NonceStatus::Unknown => {
                    return self.challenge(attempt, now, true);
                }
            }
            if let Some(reason) = self.refusal(attempt, &creds, expected) {
                self.throttle
                    .failed(attempt.source.ip(), attempt.device_id, now);
                return RegisterDecision::Forbidden { reason };
            }
            self.throttle.succeeded(attempt.device_id);
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

    /// Why fresh-nonce credentials are still refused, if they are.
    fn refusal(
        &self,
        attempt: &RegisterAttempt<'_>,
        creds: &DigestCredentials,
        expected: Credentials<'_>,
    ) -> Option<&'static str> {
        if creds.realm != self.realm {
            return Some("digest realm is not sip.realm");
        }
        let username_ok = creds.username == attempt.device_id
            || expected.username.is_some_and(|u| creds.username == u);
        if !username_ok {
            return Some(
                "digest user name is neither the device id nor its sip.device_usernames entry",
            );
        }
        if !creds.verify("REGISTER", expected.password) {
            return Some("wrong password");
        }
        None
    }

    fn challenge(
        &mut self,
        attempt: &RegisterAttempt<'_>,
        now: Instant,
        stale: bool,
    ) -> RegisterDecision {
        let nonce = self.nonces.issue_bound(&attempt.binding(), now);
        let mut challenge = DigestChallenge::new(&self.realm, &nonce);
        challenge.stale = stale;
        let mut www_authenticate = Vec::with_capacity(2);
        if self.offer_sha256 {
            let sha = DigestChallenge {
                algorithm: Some("SHA-256".into()),
                ..challenge.clone()
            };
            www_authenticate.push(sha.to_header());
        }
        www_authenticate.push(challenge.to_header());
        RegisterDecision::Challenge { www_authenticate }
    }
}

#[cfg(test)]
#[path = "register_quirks_tests.rs"]
mod quirks_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::compute_response;

    const DEV: &str = "34020000001320000001";
    const PASSWORD: &str = "12345678";

    fn nonce_of(decision: &RegisterDecision) -> String {
        let RegisterDecision::Challenge { www_authenticate } = decision else {
            panic!("expected a challenge, got {decision:?}");
        };
        DigestChallenge::parse(www_authenticate.last().unwrap())
            .unwrap()
            .nonce
    }

    fn authorization(user: &str, realm: &str, nonce: &str, password: &str) -> String {
        let uri = "sip:34020000002000000001@3402000000";
        let response = compute_response(user, realm, password, "REGISTER", uri, nonce, None);
        format!(
            "Digest username=\"{user}\",realm=\"{realm}\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{response}\",algorithm=MD5"
        )
    }

    fn from(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 168, 1, 64], port))
    }

    fn attempt<'a>(
        source: SocketAddr,
        auth: Option<&'a str>,
        expires: Option<u32>,
    ) -> RegisterAttempt<'a> {
        RegisterAttempt {
            device_id: DEV,
            source,
            reliable: false,
            authorization: auth,
            expires,
        }
    }

    fn creds() -> Option<Credentials<'static>> {
        Some(Credentials {
            password: PASSWORD,
            username: None,
        })
    }

    fn registrar() -> Registrar {
        Registrar::new("3402000000", Duration::from_secs(3600))
    }

    #[test]
    fn challenge_then_accept_then_forbid_wrong_password() {
        let now = Instant::now();
        let mut r = registrar();
        let first = r.decide(&attempt(from(5060), None, Some(7200)), creds(), now);
        assert!(
            matches!(&first, RegisterDecision::Challenge { www_authenticate } if www_authenticate.len() == 1 && www_authenticate[0].contains("algorithm=MD5"))
        );
        let good = authorization(DEV, "3402000000", &nonce_of(&first), PASSWORD);
        assert_eq!(
            r.decide(&attempt(from(5060), Some(&good), Some(7200)), creds(), now),
            RegisterDecision::Accept {
                expires: Duration::from_secs(3600)
            }
        );
        let again = r.decide(&attempt(from(5060), None, Some(3600)), creds(), now);
        let bad = authorization(DEV, "3402000000", &nonce_of(&again), "wrong");
        assert_eq!(
            r.decide(&attempt(from(5060), Some(&bad), Some(3600)), creds(), now)
                .outcome(),
            "forbidden"
        );
    }

    #[test]
    fn a_nonce_is_single_use_and_bound_to_its_source() {
        let now = Instant::now();
        let mut r = registrar();
        let c = r.decide(&attempt(from(5060), None, None), creds(), now);
        let good = authorization(DEV, "3402000000", &nonce_of(&c), PASSWORD);
        // Replayed from another port before the device used it: refused,
        // and the device's own answer still works afterwards.
        assert_eq!(
            r.decide(&attempt(from(40000), Some(&good), Some(0)), creds(), now)
                .outcome(),
            "challenged"
        );
        assert_eq!(
            r.decide(&attempt(from(5060), Some(&good), None), creds(), now)
                .outcome(),
            "ok"
        );
        // Used once: the same header again, even from the same place.
        assert_eq!(
            r.decide(&attempt(from(5060), Some(&good), Some(0)), creds(), now)
                .outcome(),
            "challenged"
        );
        // TCP binds the IP only (a device may reconnect in between).
        let tcp = |port, auth| RegisterAttempt {
            reliable: true,
            ..attempt(from(port), auth, None)
        };
        let c = r.decide(&tcp(5060, None), creds(), now);
        let good = authorization(DEV, "3402000000", &nonce_of(&c), PASSWORD);
        assert_eq!(
            r.decide(&tcp(5099, Some(&good)), creds(), now).outcome(),
            "ok"
        );
    }

    #[test]
    fn realm_and_user_name_are_checked() {
        let now = Instant::now();
        let mut r = registrar();
        let mut answer = |user: &str, realm: &str, creds: Option<Credentials<'_>>| {
            let c = r.decide(&attempt(from(5060), None, None), creds, now);
            let auth = authorization(user, realm, &nonce_of(&c), PASSWORD);
            r.decide(&attempt(from(5060), Some(&auth), None), creds, now)
                .outcome()
        };
        assert_eq!(answer(DEV, "4401000000", creds()), "forbidden");
        assert_eq!(
            answer("34020000001320000088", "3402000000", creds()),
            "forbidden"
        );
        let alias = Some(Credentials {
            password: PASSWORD,
            username: Some("admin"),
        });
        assert_eq!(answer("admin", "3402000000", alias), "ok");
        assert_eq!(answer(DEV, "3402000000", alias), "ok");
    }

    #[test]
    fn ten_failures_then_403_without_computing() {
        let now = Instant::now();
        let mut r = registrar();
        for _ in 0..FailureThrottle::LIMIT {
            let c = r.decide(&attempt(from(5060), None, None), creds(), now);
            let bad = authorization(DEV, "3402000000", &nonce_of(&c), "guess");
            assert_eq!(
                r.decide(&attempt(from(5060), Some(&bad), None), creds(), now)
                    .outcome(),
                "forbidden"
            );
        }
        // Even the right password now waits out the cool-down.
        assert_eq!(
            r.decide(&attempt(from(5060), None, None), creds(), now),
            RegisterDecision::Throttled
        );
        let later = now + FailureThrottle::COOL_DOWN;
        let c = r.decide(&attempt(from(5060), None, None), creds(), later);
        let good = authorization(DEV, "3402000000", &nonce_of(&c), PASSWORD);
        assert_eq!(
            r.decide(&attempt(from(5060), Some(&good), None), creds(), later)
                .outcome(),
            "ok"
        );
    }

    #[test]
    fn unknown_or_expired_nonce_is_rechallenged_stale() {
        let now = Instant::now();
        let mut r = registrar();
        let forged = authorization(
            DEV,
            "3402000000",
            "0123456789abcdef0123456789abcdef",
            PASSWORD,
        );
        let d = r.decide(&attempt(from(5060), Some(&forged), None), creds(), now);
        let RegisterDecision::Challenge { www_authenticate } = &d else {
            panic!("{d:?}")
        };
        assert!(DigestChallenge::parse(&www_authenticate[0]).unwrap().stale);
        let later = now + NONCE_TTL;
        let late = authorization(DEV, "3402000000", &nonce_of(&d), PASSWORD);
        assert_eq!(
            r.decide(&attempt(from(5060), Some(&late), None), creds(), later)
                .outcome(),
            "challenged"
        );
    }

    #[test]
    fn sha256_offered_first_and_accepted_when_configured() {
        use crate::sip::digest::compute_response_with;
        let now = Instant::now();
        let mut r = registrar().with_sha256(true);
        let RegisterDecision::Challenge { www_authenticate } =
            r.decide(&attempt(from(5060), None, None), creds(), now)
        else {
            panic!()
        };
        assert_eq!(www_authenticate.len(), 2);
        assert!(www_authenticate[0].contains("algorithm=SHA-256"));
        assert!(www_authenticate[1].contains("algorithm=MD5"));
        let nonce = DigestChallenge::parse(&www_authenticate[0]).unwrap().nonce;
        let uri = "sip:34020000002000000001@3402000000";
        let response = compute_response_with(
            Some("SHA-256"),
            DEV,
            "3402000000",
            PASSWORD,
            "REGISTER",
            uri,
            &nonce,
            None,
        );
        let auth = format!(
            "Digest username=\"{DEV}\",realm=\"3402000000\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{response}\",algorithm=SHA-256"
        );
        assert_eq!(
            r.decide(&attempt(from(5060), Some(&auth), None), creds(), now)
                .outcome(),
            "ok"
        );
    }

    #[test]
    fn expires_zero_unregisters_and_no_password_accepts() {
        let mut r = Registrar::new("3402000000", Duration::from_secs(600));
        let now = Instant::now();
        assert_eq!(
            r.decide(&attempt(from(5060), None, Some(0)), None, now),
            RegisterDecision::Unregister
        );
        assert_eq!(
            r.decide(&attempt(from(5060), Some("garbage"), Some(60)), None, now),
            RegisterDecision::Accept {
                expires: Duration::from_secs(60)
            }
        );
    }
}
