//! The lower platform's side of GB/T 28181-2016 registration and keepalive
//! toward one upper platform (§9.1.2 register with digest, RFC 3261 §10;
//! §9.6 keepalive MESSAGE), as a sans-IO core: datagrams and `now` in,
//! datagrams, events and one deadline out.
//!
//! - REGISTER is answered with digest after a 401/407 (MD5, or SHA-256 when
//!   the challenge offers it, RFC 8760), retransmitted over UDP with RFC
//!   3261 timers E/F (500 ms doubling to 4 s, given up after 32 s); over
//!   TCP only timer F runs (§17.1.2.2: timer E is for unreliable
//!   transports).
//! - Over TCP the connection is the driver's: [`RegisterClient::connected`]
//!   starts a registration on a new connection,
//!   [`RegisterClient::connection_lost`] drops the registration and waits
//!   for the next one.
//! - The registration is refreshed at half the lifetime granted.
//! - Once registered, a keepalive MESSAGE goes every `keepalive_interval`;
//!   `keepalive_misses` unanswered in a row, or an error answer (the upper
//!   platform restarted and forgot us: 401/403/404), start a new
//!   registration.
//! - A 3xx names another server in its Contact (GB/T 28181-2022 §9.1.2.3
//!   redirect): the next REGISTER goes there, at most [`MAX_REDIRECTS`]
//!   times per attempt.
//! - Failures back off 1, 2, 4 … [`MAX_BACKOFF`] s.
//! - [`RegisterClient::shutdown`] unregisters (Expires: 0).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::wire::{self, Message, RequestParts};
use crate::sip::digest::{DigestChallenge, DigestCredentials};

/// RFC 3261 §17.1.1.1 T1 and T2; timer F = 64·T1.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TIMER_F: Duration = Duration::from_secs(32);
/// First and longest wait before trying again after a failure.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Redirects followed within one registration attempt.
pub const MAX_REDIRECTS: u32 = 3;
/// How long an unregister may wait for its answer at shutdown.
const UNREGISTER_WAIT: Duration = Duration::from_secs(2);

/// What the client needs to know, in plain values.
#[derive(Debug, Clone)]
pub struct ClientParams {
    pub server_id: String,
    pub realm: String,
    pub platform_id: String,
    pub password: String,
    pub expires: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_misses: u32,
    /// The address our socket is bound to (Via, Contact).
    pub local: SocketAddr,
    /// UDP or TCP (Via, Contact, whether to retransmit).
    pub transport: wire::Transport,
}

/// Where the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Registering,
    Registered,
    /// Waiting to try again after a failure.
    Backoff,
    Unregistering,
    Stopped,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Registered {
        expires: Duration,
    },
    /// An attempt failed; the next comes after `retry_in`.
    Failed {
        reason: String,
        retry_in: Duration,
    },
    Redirected {
        to: SocketAddr,
    },
    KeepaliveAnswered,
    KeepaliveMissed {
        in_a_row: u32,
    },
    /// Answered with an error or missed too often: registering again.
    Lost {
        reason: String,
    },
    Unregistered,
    /// A request from the upper platform (queries, INVITE …) for the layer
    /// above; the client only handles its own transactions.
    Request {
        message: Box<Message>,
        from: SocketAddr,
    },
    /// A response (any) to a MESSAGE, NOTIFY or BYE of ours other than
    /// the keepalive: its retransmission stops (RFC 3261 §17.1.2.2).
    Answered {
        call_id: String,
        cseq: u32,
    },
    /// A datagram that is not SIP, or not ours; counted and dropped.
    Ignored {
        reason: &'static str,
    },
}

/// A request of ours waiting for its final answer.
#[derive(Debug, Clone)]
struct Pending {
    cseq: u32,
    bytes: Vec<u8>,
    dest: SocketAddr,
    retransmit_at: Instant,
    interval: Duration,
    give_up_at: Instant,
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientStats {
    pub registers_sent: u64,
    pub registrations_ok: u64,
    pub registration_failures: u64,
    pub keepalives_sent: u64,
    pub keepalives_answered: u64,
    pub keepalives_missed: u64,
    pub redirects: u64,
}

pub struct RegisterClient {
    params: ClientParams,
    /// Where REGISTER and MESSAGE go (the configured address, or a 3xx's).
    configured: SocketAddr,
    target: SocketAddr,
    phase: Phase,
    call_id: String,
    from_tag: String,
    cseq: u32,
    rng: u64,
    register: Option<Pending>,
    /// Expires asked in the REGISTER in flight.
    asked_expires: u64,
    challenge: Option<DigestChallenge>,
    /// Whether the REGISTER in flight already carries an answer to
    /// `challenge`: a second 401 for the same nonce means wrong credentials.
    answered: bool,
    redirects: u32,
    refresh_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// CSeq of the keepalive still unanswered.
    keepalive_cseq: Option<u32>,
    keepalive_call_id: String,
    misses: u32,
    sn: u32,
    backoff: Duration,
    retry_at: Option<Instant>,
    stop_at: Option<Instant>,
    last_error: Option<String>,
    registered_until: Option<Instant>,
    stats: ClientStats,
    out: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
}

impl RegisterClient {
    /// `seed` makes Call-IDs, tags and branches (tests pass a fixed one).
    pub fn new(params: ClientParams, target: SocketAddr, seed: u64) -> Self {
        let mut c = Self {
            params,
            configured: target,
            target,
            phase: Phase::Idle,
            call_id: String::new(),
            from_tag: String::new(),
            cseq: 0,
            rng: seed | 1,
            register: None,
            asked_expires: 0,
            challenge: None,
            answered: false,
            redirects: 0,
            refresh_at: None,
            keepalive_at: None,
            keepalive_cseq: None,
            keepalive_call_id: String::new(),
            misses: 0,
            sn: 0,
            backoff: MIN_BACKOFF,
            retry_at: None,
            stop_at: None,
            last_error: None,
            registered_until: None,
            stats: ClientStats::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        };
        c.call_id = format!("{:016x}@camgate", c.random());
        c.from_tag = format!("{:08x}", c.random() as u32);
        c.keepalive_call_id = format!("{:016x}@camgate", c.random());
        c
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The server REGISTER currently goes to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// When the registration lapses unless refreshed.
    pub fn registered_until(&self) -> Option<Instant> {
        self.registered_until
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The next moment [`RegisterClient::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self
            .register
            .as_ref()
            .map(|p| p.retransmit_at.min(p.give_up_at));
        [
            pending,
            self.refresh_at,
            self.keepalive_at,
            self.retry_at,
            self.stop_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A new connection (TCP) from `local`: register on it at once, as a
    /// new registration (the upper platform may have restarted).
    pub fn connected(&mut self, now: Instant, local: SocketAddr) {
        self.params.local = local;
        if !matches!(self.phase, Phase::Unregistering | Phase::Stopped) {
            self.retry_at = None;
            self.send_register(now);
        }
    }

    /// The connection (TCP) is gone, and with it whatever was in flight:
    /// the registration is lost until [`RegisterClient::connected`] is
    /// called again; an unregister in progress ends here.
    pub fn connection_lost(&mut self, now: Instant, reason: String) {
        match self.phase {
            Phase::Unregistering => return self.stop(now),
            Phase::Stopped => return,
            Phase::Registered => self.events.push_back(ClientEvent::Lost {
                reason: reason.clone(),
            }),
            _ => {}
        }
        self.phase = Phase::Backoff;
        self.register = None;
        self.retry_at = None;
        self.forget_registration(reason);
    }

    /// Drop what the last registration established (its timers, the
    /// challenge, any redirect), remembering why.
    fn forget_registration(&mut self, reason: String) {
        self.keepalive_at = None;
        self.keepalive_cseq = None;
        self.refresh_at = None;
        self.registered_until = None;
        self.misses = 0;
        self.challenge = None;
        self.target = self.configured;
        self.redirects = 0;
        self.last_error = Some(reason);
    }

    /// Begin registering.
    pub fn start(&mut self, now: Instant) {
        if self.phase == Phase::Idle {
            self.send_register(now);
        }
    }

    /// Unregister (Expires: 0) if registered; [`Phase::Stopped`] once
    /// answered or after a short wait.
    pub fn shutdown(&mut self, now: Instant) {
        self.refresh_at = None;
        self.keepalive_at = None;
        self.retry_at = None;
        if matches!(self.phase, Phase::Registered | Phase::Registering) {
            self.phase = Phase::Unregistering;
            self.stop_at = Some(now + UNREGISTER_WAIT);
            self.send_register_with(now, 0);
        } else {
            self.stop(now);
        }
    }

    fn stop(&mut self, _now: Instant) {
        self.phase = Phase::Stopped;
        self.register = None;
        self.stop_at = None;
        self.registered_until = None;
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stop_at.is_some_and(|t| now >= t) {
            self.stop(now);
            return;
        }
        if let Some(p) = &mut self.register {
            if now >= p.give_up_at {
                if self.phase == Phase::Unregistering {
                    self.stop(now);
                } else {
                    self.fail(now, "no answer to REGISTER".into());
                }
                return;
            }
            if now >= p.retransmit_at {
                p.interval = (p.interval * 2).min(T2);
                p.retransmit_at = now + p.interval;
                self.out.push_back(Transmit {
                    dest: p.dest,
                    bytes: p.bytes.clone(),
                });
            }
        }
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
            self.send_register(now);
        }
        if self.phase == Phase::Registered && self.refresh_at.is_some_and(|t| now >= t) {
            self.refresh_at = None;
            self.send_register(now);
        }
        if self.keepalive_at.is_some_and(|t| now >= t) {
            self.keepalive_due(now);
        }
    }

    fn keepalive_due(&mut self, now: Instant) {
        if self.keepalive_cseq.take().is_some() {
            self.misses += 1;
            self.stats.keepalives_missed += 1;
            self.events.push_back(ClientEvent::KeepaliveMissed {
                in_a_row: self.misses,
            });
            if self.misses >= self.params.keepalive_misses {
                self.lost(now, format!("{} keepalives unanswered", self.misses));
                return;
            }
        }
        self.send_keepalive(now);
        self.keepalive_at = Some(now + self.params.keepalive_interval);
    }

    /// The registration is gone: register again at once.
    fn lost(&mut self, now: Instant, reason: String) {
        self.events.push_back(ClientEvent::Lost {
            reason: reason.clone(),
        });
        self.forget_registration(reason);
        self.phase = Phase::Registering;
        self.send_register(now);
    }

    fn fail(&mut self, now: Instant, reason: String) {
        self.stats.registration_failures += 1;
        self.register = None;
        self.phase = Phase::Backoff;
        self.keepalive_at = None;
        self.keepalive_cseq = None;
        self.refresh_at = None;
        self.registered_until = None;
        self.challenge = None;
        self.target = self.configured;
        self.redirects = 0;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.retry_at = Some(now + wait);
        self.last_error = Some(reason.clone());
        self.events.push_back(ClientEvent::Failed {
            reason,
            retry_in: wait,
        });
    }

    /// One datagram from the network.
    pub fn handle_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        let message = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.events
                    .push_back(ClientEvent::Ignored { reason: e.kind() });
                return;
            }
        };
        let Some(code) = message.code() else {
            self.events.push_back(ClientEvent::Request {
                message: Box::new(message),
                from,
            });
            return;
        };
        let (Ok((cseq, method)), Ok(call_id)) = (message.cseq(), message.call_id()) else {
            self.events.push_back(ClientEvent::Ignored {
                reason: "bad_header",
            });
            return;
        };
        if method.eq_ignore_ascii_case("REGISTER")
            && call_id == self.call_id
            && self.register.as_ref().is_some_and(|p| p.cseq == cseq)
        {
            if code >= 200 {
                self.register_answered(code, &message, now);
            }
        } else if method.eq_ignore_ascii_case("MESSAGE")
            && call_id == self.keepalive_call_id
            && self.keepalive_cseq == Some(cseq)
        {
            if code >= 200 {
                self.keepalive_answered(code, now);
            }
        } else if method.eq_ignore_ascii_case("MESSAGE")
            || method.eq_ignore_ascii_case("NOTIFY")
            || method.eq_ignore_ascii_case("BYE")
        {
            // The upper platform acknowledging a query answer, a catalog
            // notification or an end-of-recording notify we sent, or the
            // BYE ending a recording it did not hang up itself.
            self.events.push_back(ClientEvent::Answered {
                call_id: call_id.to_owned(),
                cseq,
            });
        } else {
            self.events.push_back(ClientEvent::Ignored {
                reason: "stray_response",
            });
        }
    }

    fn keepalive_answered(&mut self, code: u16, now: Instant) {
        self.keepalive_cseq = None;
        if (200..300).contains(&code) {
            self.misses = 0;
            self.stats.keepalives_answered += 1;
            self.events.push_back(ClientEvent::KeepaliveAnswered);
        } else if self.phase == Phase::Registered {
            self.lost(now, format!("keepalive answered {code}"));
        }
    }

    fn register_answered(&mut self, code: u16, message: &Message, now: Instant) {
        let unregistering = self.phase == Phase::Unregistering;
        match code {
            200..=299 => {
                self.register = None;
                if unregistering {
                    self.events.push_back(ClientEvent::Unregistered);
                    self.stop(now);
                    return;
                }
                let granted = message
                    .granted_expires()
                    .filter(|&s| s > 0)
                    .map_or(self.params.expires, Duration::from_secs);
                self.phase = Phase::Registered;
                self.stats.registrations_ok += 1;
                self.backoff = MIN_BACKOFF;
                self.redirects = 0;
                self.answered = false;
                self.last_error = None;
                self.registered_until = Some(now + granted);
                self.refresh_at = Some(now + granted / 2);
                if self.keepalive_at.is_none() {
                    self.keepalive_at = Some(now + self.params.keepalive_interval);
                }
                self.events
                    .push_back(ClientEvent::Registered { expires: granted });
            }
            401 | 407 => {
                let header = if code == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let challenges: Vec<DigestChallenge> = message
                    .headers(header)
                    .filter_map(|v| DigestChallenge::parse(v).ok())
                    .collect();
                // Prefer SHA-256 when offered beside MD5 (RFC 8760 §2.4).
                let chosen = challenges
                    .iter()
                    .find(|c| {
                        c.algorithm
                            .as_deref()
                            .is_some_and(|a| a.eq_ignore_ascii_case("sha-256"))
                    })
                    .or_else(|| challenges.first())
                    .cloned();
                let Some(challenge) = chosen else {
                    return self.fail_or_stop(now, format!("{code} without a usable challenge"));
                };
                let repeated = self.answered
                    && !challenge.stale
                    && self
                        .challenge
                        .as_ref()
                        .is_some_and(|c| c.nonce == challenge.nonce);
                if repeated {
                    return self.fail_or_stop(now, "credentials refused (401 again)".into());
                }
                self.challenge = Some(challenge);
                let expires = self.asked_expires;
                self.send_register_with(now, expires);
            }
            300..=399 if !unregistering => {
                let to = message
                    .contact_target()
                    .and_then(|t| t.parse::<SocketAddr>().ok());
                match to {
                    Some(to) if self.redirects < MAX_REDIRECTS => {
                        self.redirects += 1;
                        self.stats.redirects += 1;
                        self.target = to;
                        self.challenge = None;
                        self.events.push_back(ClientEvent::Redirected { to });
                        self.send_register(now);
                    }
                    Some(_) => self.fail(now, "too many redirects".into()),
                    None => self.fail(now, format!("{code} without a usable Contact")),
                }
            }
            _ => self.fail_or_stop(now, format!("REGISTER answered {code}")),
        }
    }

    fn fail_or_stop(&mut self, now: Instant, reason: String) {
        if self.phase == Phase::Unregistering {
            self.stop(now);
        } else {
            self.fail(now, reason);
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: ids only need to be unique, not secret.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn server_uri(&self) -> String {
        format!("sip:{}@{}", self.params.server_id, self.params.realm)
    }

    fn our_uri(&self) -> String {
        let domain = &self.params.platform_id[..10.min(self.params.platform_id.len())];
        format!("sip:{}@{}", self.params.platform_id, domain)
    }

    fn send_register(&mut self, now: Instant) {
        if self.phase != Phase::Registered {
            self.phase = Phase::Registering;
        }
        self.answered = false;
        let expires = self.params.expires.as_secs();
        self.send_register_with(now, expires);
    }

    /// Send a REGISTER asking `expires` seconds, answering the current
    /// challenge if there is one.
    fn send_register_with(&mut self, now: Instant, expires: u64) {
        self.cseq += 1;
        self.asked_expires = expires;
        let uri = self.server_uri();
        let from = self.our_uri();
        let branch = format!("z9hG4bK{:016x}", self.random());
        let mut extra: Vec<(&str, String)> = vec![
            (
                "Contact",
                format!(
                    "<sip:{}@{}{}>",
                    self.params.platform_id,
                    self.params.local,
                    self.params.transport.uri_param()
                ),
            ),
            ("Expires", expires.to_string()),
        ];
        self.answered = false;
        if let Some(c) = &self.challenge {
            let cnonce = format!("{:016x}", self.rng);
            let creds = DigestCredentials::answer(
                c,
                &self.params.platform_id,
                &self.params.password,
                "REGISTER",
                &uri,
                &cnonce,
            );
            let name = "Authorization";
            extra.push((name, creds.to_header()));
            self.answered = true;
        }
        let bytes = wire::request(&RequestParts {
            method: "REGISTER",
            transport: self.params.transport,
            uri: &uri,
            local: self.params.local,
            branch: &branch,
            from: &from,
            from_tag: &self.from_tag,
            to: &from,
            to_tag: None,
            call_id: &self.call_id,
            cseq: self.cseq,
            extra: &extra,
            body: None,
        });
        self.stats.registers_sent += 1;
        self.register = Some(Pending {
            cseq: self.cseq,
            bytes: bytes.clone(),
            dest: self.target,
            // Over TCP nothing is resent: the give-up comes first.
            retransmit_at: if self.params.transport.is_reliable() {
                now + TIMER_F
            } else {
                now + T1
            },
            interval: T1,
            give_up_at: now + TIMER_F,
        });
        self.out.push_back(Transmit {
            dest: self.target,
            bytes,
        });
    }

    fn send_keepalive(&mut self, _now: Instant) {
        self.cseq += 1;
        self.sn += 1;
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>{}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n",
            self.sn, self.params.platform_id
        );
        let uri = self.server_uri();
        let from = self.our_uri();
        let branch = format!("z9hG4bK{:016x}", self.random());
        let bytes = wire::request(&RequestParts {
            method: "MESSAGE",
            transport: self.params.transport,
            uri: &uri,
            local: self.params.local,
            branch: &branch,
            from: &from,
            from_tag: &self.from_tag,
            to: &uri,
            to_tag: None,
            call_id: &self.keepalive_call_id,
            cseq: self.cseq,
            extra: &[],
            body: Some(("Application/MANSCDP+xml", body.as_bytes())),
        });
        self.stats.keepalives_sent += 1;
        self.keepalive_cseq = Some(self.cseq);
        self.out.push_back(Transmit {
            dest: self.target,
            bytes,
        });
    }
}

/// Who registers where: the request parts are plain text, so tests read
/// them back with the same parser.
#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "34020000002000000001";
    const US: &str = "34020000002000000002";

    fn params() -> ClientParams {
        ClientParams {
            server_id: SERVER.into(),
            realm: "3402000000".into(),
            platform_id: US.into(),
            password: "12345678".into(),
            expires: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(10),
            keepalive_misses: 3,
            local: "127.0.0.1:5070".parse().unwrap(),
            transport: wire::Transport::Udp,
        }
    }

    fn upper() -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }

    /// A response to `req` with `code` and extra header lines.
    fn answer(req: &[u8], code: u16, extra: &str) -> Vec<u8> {
        let m = Message::parse(req).unwrap();
        let h = |n: &str| m.header(n).unwrap().to_owned();
        format!(
            "SIP/2.0 {code} X\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=up\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            h("Via"),
            h("From"),
            h("To"),
            h("Call-ID"),
            h("CSeq")
        )
        .into_bytes()
    }

    fn sent(c: &mut RegisterClient) -> Vec<Transmit> {
        std::iter::from_fn(|| c.poll_transmit()).collect()
    }

    fn events(c: &mut RegisterClient) -> Vec<ClientEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    const CHALLENGE: &str =
        "WWW-Authenticate: Digest realm=\"3402000000\",nonce=\"n1\",algorithm=MD5\r\n";

    /// Start, get challenged, answer, get 200 with `granted` seconds.
    fn registered(granted: u64) -> (RegisterClient, Instant) {
        let t0 = Instant::now();
        let mut c = RegisterClient::new(params(), upper(), 7);
        c.start(t0);
        let first = sent(&mut c).remove(0);
        c.handle_datagram(&answer(&first.bytes, 401, CHALLENGE), upper(), t0);
        let second = sent(&mut c).remove(0);
        let ok = answer(&second.bytes, 200, &format!("Expires: {granted}\r\n"));
        c.handle_datagram(&ok, upper(), t0);
        assert_eq!(c.phase(), Phase::Registered);
        (c, t0)
    }

    #[test]
    fn digest_answer_then_registered_with_granted_expiry() {
        let t0 = Instant::now();
        let mut c = RegisterClient::new(params(), upper(), 7);
        c.start(t0);
        let first = sent(&mut c);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].dest, upper());
        let m = Message::parse(&first[0].bytes).unwrap();
        assert_eq!(m.header("Expires"), Some("60"));
        assert!(m.header("Authorization").is_none());
        c.handle_datagram(&answer(&first[0].bytes, 401, CHALLENGE), upper(), t0);
        let second = sent(&mut c);
        let m2 = Message::parse(&second[0].bytes).unwrap();
        let auth = m2.header("Authorization").unwrap();
        let creds = DigestCredentials::parse(auth).unwrap();
        assert_eq!(creds.username, US);
        assert!(creds.verify("REGISTER", "12345678"));
        assert_eq!(m2.call_id().unwrap(), m.call_id().unwrap());
        assert_eq!(m2.cseq().unwrap().0, m.cseq().unwrap().0 + 1);
        c.handle_datagram(
            &answer(&second[0].bytes, 200, "Expires: 40\r\n"),
            upper(),
            t0,
        );
        assert_eq!(
            events(&mut c),
            vec![ClientEvent::Registered {
                expires: Duration::from_secs(40)
            }]
        );
        assert_eq!(c.registered_until(), Some(t0 + Duration::from_secs(40)));
        // Refresh at half the granted 40 s, keepalive first at 10 s.
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn sha256_is_chosen_when_offered_beside_md5() {
        let t0 = Instant::now();
        let mut c = RegisterClient::new(params(), upper(), 7);
        c.start(t0);
        let first = sent(&mut c).remove(0);
        let both = "WWW-Authenticate: Digest realm=\"3402000000\",nonce=\"n1\",algorithm=MD5\r\n\
                    WWW-Authenticate: Digest realm=\"3402000000\",nonce=\"n2\",algorithm=SHA-256\r\n";
        c.handle_datagram(&answer(&first.bytes, 401, both), upper(), t0);
        let m = Message::parse(&sent(&mut c)[0].bytes).unwrap();
        let creds = DigestCredentials::parse(m.header("Authorization").unwrap()).unwrap();
        assert_eq!(creds.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(creds.nonce, "n2");
        assert!(creds.verify("REGISTER", "12345678"));
    }

    #[test]
    fn wrong_password_backs_off_doubling() {
        let t0 = Instant::now();
        let mut c = RegisterClient::new(params(), upper(), 7);
        c.start(t0);
        let mut now = t0;
        for expected in [1u64, 2, 4] {
            let req = sent(&mut c).remove(0);
            c.handle_datagram(&answer(&req.bytes, 401, CHALLENGE), upper(), now);
            let again = sent(&mut c).remove(0);
            c.handle_datagram(&answer(&again.bytes, 401, CHALLENGE), upper(), now);
            assert_eq!(c.phase(), Phase::Backoff);
            assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(expected)));
            assert!(c.last_error().unwrap().contains("credentials"));
            now += Duration::from_secs(expected);
            c.handle_timeout(now);
            assert_eq!(c.phase(), Phase::Registering);
        }
    }

    #[test]
    fn register_is_retransmitted_then_given_up() {
        let t0 = Instant::now();
        let mut c = RegisterClient::new(params(), upper(), 7);
        c.start(t0);
        let first = sent(&mut c).remove(0);
        let mut now = t0;
        let mut gaps = Vec::new();
        while c.phase() == Phase::Registering {
            let next = c.poll_timeout().unwrap();
            gaps.push((next - now).as_millis());
            now = next;
            c.handle_timeout(now);
            for t in sent(&mut c) {
                assert_eq!(t.bytes, first.bytes, "retransmissions are identical");
            }
        }
        assert_eq!(&gaps[..5], &[500, 1000, 2000, 4000, 4000]);
        assert_eq!(now - t0, TIMER_F);
        assert_eq!(c.phase(), Phase::Backoff);
    }

    #[test]
    fn refresh_goes_at_half_the_lifetime() {
        let (mut c, t0) = registered(40);
        // Answer every keepalive until the refresh.
        let mut now;
        loop {
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now);
            let out = sent(&mut c);
            let m = Message::parse(&out[0].bytes).unwrap();
            if m.cseq().unwrap().1 == "REGISTER" {
                break;
            }
            c.handle_datagram(&answer(&out[0].bytes, 200, ""), upper(), now);
        }
        assert_eq!(now - t0, Duration::from_secs(20));
        assert_eq!(
            c.phase(),
            Phase::Registered,
            "still registered while refreshing"
        );
    }

    #[test]
    fn missed_keepalives_start_a_new_registration() {
        let (mut c, t0) = registered(3600);
        let mut now = t0;
        let mut keepalives = 0;
        while c.phase() == Phase::Registered {
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now);
            keepalives += sent(&mut c).len();
        }
        // Three sent, none answered: at the fourth interval, re-register.
        assert_eq!(keepalives, 4, "three keepalives and a REGISTER");
        assert_eq!(now - t0, Duration::from_secs(40));
        assert_eq!(c.phase(), Phase::Registering);
        let ev = events(&mut c);
        assert!(
            ev.contains(&ClientEvent::KeepaliveMissed { in_a_row: 3 }),
            "{ev:?}"
        );
        assert!(matches!(ev.last(), Some(ClientEvent::Lost { .. })));
    }

    #[test]
    fn keepalive_refused_means_register_again() {
        let (mut c, t0) = registered(3600);
        let now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        let ka = sent(&mut c).remove(0);
        c.handle_datagram(&answer(&ka.bytes, 403, ""), upper(), now);
        assert_eq!(c.phase(), Phase::Registering);
        let reg = sent(&mut c).remove(0);
        let m = Message::parse(&reg.bytes).unwrap();
        assert_eq!(m.cseq().unwrap().1, "REGISTER");
        assert!(now > t0);
    }

    #[test]
    fn redirect_is_followed_to_the_contact() {
        let t0 = Instant::now();
        let mut c = RegisterClient::new(params(), upper(), 7);
        c.start(t0);
        let first = sent(&mut c).remove(0);
        let moved = "Contact: <sip:34020000002000000001@127.0.0.1:6060>\r\n";
        c.handle_datagram(&answer(&first.bytes, 302, moved), upper(), t0);
        let next = sent(&mut c).remove(0);
        let other: SocketAddr = "127.0.0.1:6060".parse().unwrap();
        assert_eq!(next.dest, other);
        assert_eq!(c.target(), other);
        c.handle_datagram(&answer(&next.bytes, 200, ""), other, t0);
        assert_eq!(c.phase(), Phase::Registered);
        // Endless redirects end in backoff.
        let mut c = RegisterClient::new(params(), upper(), 7);
        c.start(t0);
        for _ in 0..=MAX_REDIRECTS {
            let r = sent(&mut c).remove(0);
            c.handle_datagram(&answer(&r.bytes, 302, moved), upper(), t0);
        }
        assert_eq!(c.phase(), Phase::Backoff);
    }

    #[test]
    fn shutdown_unregisters_with_expires_zero() {
        let (mut c, t0) = registered(3600);
        c.shutdown(t0);
        let out = sent(&mut c).remove(0);
        let m = Message::parse(&out.bytes).unwrap();
        assert_eq!(m.header("Expires"), Some("0"));
        assert!(
            m.header("Authorization").is_some(),
            "answers the known challenge"
        );
        c.handle_datagram(&answer(&out.bytes, 200, ""), upper(), t0);
        assert_eq!(c.phase(), Phase::Stopped);
        assert!(events(&mut c).contains(&ClientEvent::Unregistered));
    }

    #[test]
    fn junk_and_requests_are_handed_up_not_acted_on() {
        let (mut c, t0) = registered(3600);
        c.handle_datagram(b"garbage", upper(), t0);
        let query = "MESSAGE sip:34020000002000000002@3402000000 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKq\r\nFrom: <sip:1@2>;tag=a\r\n\
            To: <sip:3@4>\r\nCall-ID: q1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        c.handle_datagram(query.as_bytes(), upper(), t0);
        let ev = events(&mut c);
        assert!(matches!(
            ev[ev.len() - 2],
            ClientEvent::Ignored {
                reason: "unparsable"
            }
        ));
        assert!(matches!(ev[ev.len() - 1], ClientEvent::Request { .. }));
        assert_eq!(c.phase(), Phase::Registered);
    }

    fn tcp_params() -> ClientParams {
        ClientParams {
            transport: wire::Transport::Tcp,
            ..params()
        }
    }

    #[test]
    fn over_tcp_register_is_sent_once_and_given_up_at_timer_f() {
        let t0 = Instant::now();
        let mut c = RegisterClient::new(tcp_params(), upper(), 7);
        c.connected(t0, "127.0.0.1:40001".parse().unwrap());
        let first = sent(&mut c);
        assert_eq!(first.len(), 1);
        let m = Message::parse(&first[0].bytes).unwrap();
        assert!(
            m.header("Via")
                .unwrap()
                .starts_with("SIP/2.0/TCP 127.0.0.1:40001;")
        );
        assert_eq!(
            m.header("Contact").unwrap(),
            format!("<sip:{US}@127.0.0.1:40001;transport=tcp>")
        );
        let next = c.poll_timeout().unwrap();
        assert_eq!(next - t0, TIMER_F, "no timer E over TCP");
        c.handle_timeout(next);
        assert!(sent(&mut c).is_empty(), "nothing resent over TCP");
        assert_eq!(c.phase(), Phase::Backoff);
    }

    #[test]
    fn lost_connection_drops_the_registration_until_the_next_one() {
        let t0 = Instant::now();
        let mut c = RegisterClient::new(tcp_params(), upper(), 7);
        c.connected(t0, "127.0.0.1:40001".parse().unwrap());
        let req = sent(&mut c).remove(0);
        c.handle_datagram(&answer(&req.bytes, 200, "Expires: 60\r\n"), upper(), t0);
        assert_eq!(c.phase(), Phase::Registered);
        events(&mut c);
        c.connection_lost(t0, "closed by the upper platform".into());
        assert_eq!(
            events(&mut c),
            vec![ClientEvent::Lost {
                reason: "closed by the upper platform".into()
            }]
        );
        assert_eq!(c.phase(), Phase::Backoff);
        assert_eq!(c.registered_until(), None);
        assert_eq!(c.poll_timeout(), None, "waits for a connection");
        // Reconnected from another port: registers from there at once.
        c.connected(t0, "127.0.0.1:40002".parse().unwrap());
        let again = sent(&mut c);
        assert_eq!(again.len(), 1);
        let m = Message::parse(&again[0].bytes).unwrap();
        assert!(m.header("Via").unwrap().contains("127.0.0.1:40002"));
        assert_eq!(m.cseq().unwrap().1, "REGISTER");
        assert_eq!(c.phase(), Phase::Registering);
        // Losing it while unregistering ends the client.
        c.shutdown(t0);
        c.connection_lost(t0, "gone".into());
        assert_eq!(c.phase(), Phase::Stopped);
    }
}
