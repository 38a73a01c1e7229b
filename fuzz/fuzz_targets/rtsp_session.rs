#![no_main]
//! Arbitrary bytes from an RTSP client into the sans-IO connection, with
//! digest auth on, in two reads (requests straddling reads).

use std::sync::Arc;
use std::time::{Duration, Instant};

use camgate::rtsp::auth::{AuthConfig, AuthMode, AuthUser, Authenticator};
use camgate::rtsp::session::{Connection, SessionConfig};
use camgate::rtsp::tokens::TokenStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let auth = Authenticator::new(
        AuthConfig {
            mode: AuthMode::Digest,
            users: vec![AuthUser {
                name: "a".into(),
                password: "b".into(),
            }],
            ..AuthConfig::default()
        },
        Arc::new(TokenStore::new(Duration::from_secs(60))),
    );
    let now = Instant::now();
    let mut c = Connection::new(
        SessionConfig {
            auth: Some(Arc::new(auth)),
            ..SessionConfig::default()
        },
        [127, 0, 0, 1].into(),
        1,
        now,
    );
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    c.receive(&data[..split], now);
    c.receive(&data[split..], now);
    c.client_rtcp(data, now);
    while c.poll_event().is_some() {}
    let mut out = Vec::new();
    c.take_transmits(&mut out);
});
