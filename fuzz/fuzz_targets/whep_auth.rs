#![no_main]
//! WHEP access checks on arbitrary `Authorization` values and query
//! tokens, on every kind of path: never a panic, and nothing but a
//! minted token or the configured user gets through a protected path.
use std::sync::Arc;
use std::time::{Duration, Instant};

use camgate::rtsp::auth::{AuthConfig, AuthMode, AuthUser, Authenticator, PathRule};
use camgate::rtsp::tokens::TokenStore;
use camgate::streams::StreamKey;
use camgate::webrtc::whep_auth::{WhepAuth, WhepCredentials};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (authorization, token) = text.split_once('\n').unwrap_or((&text, ""));
    let rule = |prefix: &str, mode| PathRule {
        prefix: prefix.into(),
        mode,
    };
    let config = AuthConfig {
        mode: AuthMode::Digest,
        users: vec![AuthUser {
            name: "admin".into(),
            password: "s3cret".into(),
        }],
        paths: vec![
            rule("gb/b", AuthMode::Basic),
            rule("gb/t", AuthMode::Token),
            rule("gb/o", AuthMode::None),
        ],
        ..AuthConfig::default()
    };
    let tokens = Arc::new(TokenStore::new(Duration::from_secs(60)));
    let auth = WhepAuth::new(Arc::new(Authenticator::new(config.clone(), tokens)), &config);
    for path in ["gb/b/1", "gb/t/1", "gb/o/1", "gb/d/1"] {
        let key = StreamKey::from_path(path).unwrap();
        let creds = WhepCredentials {
            authorization: Some(authorization),
            query_token: (!token.is_empty()).then_some(token),
        };
        let verdict = auth.check(&key, creds, Instant::now());
        if path != "gb/o/1" && verdict.is_ok() {
            // No token was minted: only admin:s3cret on the basic path.
            assert_eq!(path, "gb/b/1");
            assert!(authorization.to_ascii_lowercase().contains("basic"));
        }
        if let Err(e) = &verdict {
            let _ = auth.challenges(&key, e);
        }
    }
});
