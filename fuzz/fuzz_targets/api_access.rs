#![no_main]
//! What reaches `http.auth` from the network: any method, path,
//! `Authorization` value and query, under each mode. Nothing may panic,
//! and only a configured credential may pass an API door.
use camgate::api::access::{
    ApiAccess, ApiAuthMode, ApiKeyConfig, Door, Presented, Scope, access_token, door,
};
use camgate::rtsp::auth::AuthUser;
use camgate::secret::{hex, sha256};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let authorization = parts.next();
    let query = parts.next();
    let keys = [ApiKeyConfig {
        name: "ops".into(),
        sha256: hex(&sha256(b"the-only-key")),
        scope: Scope::Admin,
    }];
    let users = [AuthUser {
        name: "admin".into(),
        password: "s3cret".into(),
    }];
    let d = door(method, path);
    let presented = Presented {
        authorization,
        access_token: access_token(query),
    };
    for mode in [ApiAuthMode::None, ApiAuthMode::Basic, ApiAuthMode::Bearer] {
        let access = ApiAccess::new(mode, &keys, &users, "camgate", true);
        let verdict = access.check(d, presented);
        if let (Ok(_), Door::Api(_), ApiAuthMode::Bearer) = (&verdict, d, mode) {
            let a = authorization.unwrap_or("");
            let t = access_token(query).unwrap_or("");
            assert!(a.contains("the-only-key") || t == "the-only-key");
        }
        if let Err(e) = verdict {
            let _ = access.challenge(e);
        }
    }
});
