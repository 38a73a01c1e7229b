#![no_main]
//! RTSP Authorization headers (Basic, Digest) and `hashtoken` queries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use camgate::rtsp::auth::{AuthConfig, AuthMode, AuthUser, Authenticator, Presented, hashtoken};
use camgate::rtsp::tokens::TokenStore;
use camgate::streams::StreamKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = StreamKey::from_path("gb/a/b").expect("valid key");
    for mode in [AuthMode::Basic, AuthMode::Digest, AuthMode::Token] {
        let auth = Authenticator::new(
            AuthConfig {
                mode,
                users: vec![AuthUser {
                    name: "admin".into(),
                    password: "x".into(),
                }],
                ..AuthConfig::default()
            },
            Arc::new(TokenStore::new(Duration::from_secs(60))),
        );
        let presented = Presented {
            method: "DESCRIBE",
            authorization: Some(text),
            token: hashtoken(Some(text)),
        };
        let _ = auth.check(&key, presented, "nonce", Instant::now());
        let _ = auth.challenges(&key, text, true);
    }
});
