//! WHEP access control against the real binary: the `rtsp.auth` path
//! rules apply to `POST /whep/{path}` — no token, a wrong one, a right
//! one-time token minted over the API (201), the same token again, a token
//! for another stream; Basic on a `basic` path; a disabled path; and the
//! session resource reached by its id alone.

mod common;

use common::{CHANNEL, DEVICE, Options, Rig, http_exchange, http_post};

/// A recvonly video+audio offer captured from Chromium: a real offer, so
/// the gateway answers it with 201 once access is granted.
const OFFER: &str = include_str!("../src/webrtc/testdata/chromium-156-offer.sdp");

const AUTH: &str = "  auth:
    mode: none
    users: [{name: admin, password: \"s3cret\"}]
    paths:
      - {prefix: \"gb/34020000001320000001\", mode: token}
      - {prefix: \"gb/34020000001320000009\", mode: basic}
      - {prefix: \"gb/34020000001320000008\", mode: disabled}
";

fn offer(rig: &Rig, path: &str, authorization: Option<&str>) -> (u16, String, String) {
    let mut headers = vec![("Content-Type", "application/sdp")];
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    http_exchange(rig.ports.http, "POST", path, &headers, OFFER).expect("HTTP answer")
}

fn mint(rig: &Rig, path: &str) -> String {
    let (status, body) = http_post(
        rig.ports.http,
        "/api/v1/tokens",
        &format!("{{\"path\":\"{path}\"}}"),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

#[test]
fn whep_post_obeys_the_rtsp_path_rules() {
    let mut rig = Rig::start(Options {
        rtsp_extra: AUTH.to_owned(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let path = format!("/whep/gb/{DEVICE}/{CHANNEL}");

    // No credentials: 401 with a Bearer challenge, readable by scripts.
    let (status, head, body) = offer(&rig, &path, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        head.contains("www-authenticate: bearer realm=\"camgate\""),
        "{head}"
    );
    assert!(!head.contains("invalid_token"), "{head}");
    assert!(
        head.contains(
            "access-control-expose-headers: location, etag, link, accept-patch, www-authenticate"
        ),
        "{head}"
    );

    // A token nobody minted.
    let (status, head, _) = offer(&rig, &path, Some("Bearer 0123456789abcdef"));
    assert_eq!(status, 401);
    assert!(head.contains("error=\"invalid_token\""), "{head}");

    // The configured user is no good on a token path.
    let (status, _, body) = offer(&rig, &path, Some("Basic YWRtaW46czNjcmV0"));
    assert_eq!(status, 401, "{body}");

    // A token minted for this stream: one session.
    let token = mint(&rig, &format!("/gb/{DEVICE}/{CHANNEL}"));
    let bearer = format!("Bearer {token}");
    let (status, head, answer) = offer(&rig, &path, Some(&bearer));
    assert_eq!(status, 201, "{answer}\n{}", rig.logs());
    assert!(answer.contains("a=ice-lite"), "{answer}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("Location header")
        .trim()
        .to_owned();
    assert!(location.starts_with("/whep/resource/"), "{location}");
    let id = location.trim_start_matches("/whep/resource/");
    assert_eq!(id.len(), 32, "128 random bits as hex: {id}");

    // The same token again: consumed.
    let (status, head, _) = offer(&rig, &path, Some(&bearer));
    assert_eq!(status, 401);
    assert!(head.contains("error=\"invalid_token\""), "{head}");

    // A token for another stream.
    let other = mint(&rig, &format!("/gb/{DEVICE}/34020000001310000002"));
    let (status, _, _) = offer(&rig, &path, Some(&format!("Bearer {other}")));
    assert_eq!(status, 401);

    // The resource needs no credentials, only its id.
    let (status, _, _) = http_exchange(rig.ports.http, "DELETE", &location, &[], "").unwrap();
    assert_eq!(status, 200);

    assert_eq!(
        rig.metric(r#"camgate_webrtc_sessions_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        rig.metric(r#"camgate_webrtc_sessions_total{outcome="unauthorized"}"#),
        5.0
    );
}

#[test]
fn basic_and_disabled_paths() {
    let rig = Rig::start(Options {
        rtsp_extra: AUTH.to_owned(),
        ..Options::default()
    });
    // Devices that never registered: access granted shows as 404.
    let basic = "/whep/gb/34020000001320000009/34020000001310000001";
    let (status, head, _) = offer(&rig, basic, None);
    assert_eq!(status, 401);
    assert!(
        head.contains("www-authenticate: basic realm=\"camgate\""),
        "{head}"
    );
    let (status, _, _) = offer(&rig, basic, Some("Basic YWRtaW46d3Jvbmc="));
    assert_eq!(status, 401, "admin:wrong");
    let (status, _, body) = offer(&rig, basic, Some("Basic YWRtaW46czNjcmV0"));
    assert_eq!(
        status, 404,
        "admin:s3cret passes, then no such device: {body}"
    );

    let (status, _, _) = offer(
        &rig,
        "/whep/gb/34020000001320000008/34020000001310000001",
        Some("Basic YWRtaW46czNjcmV0"),
    );
    assert_eq!(status, 403);
    let (status, _, _) = offer(&rig, "/whep/gb/34020000001320000007/x", None);
    assert_eq!(status, 404, "paths without a rule are open");
    assert_eq!(
        rig.metric(r#"camgate_webrtc_sessions_total{outcome="forbidden"}"#),
        1.0
    );
}
