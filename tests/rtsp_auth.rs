//! RTSP access control against the real binary and a simulated camera:
//! Basic and Digest with ffprobe and GStreamer `rtspsrc` (no, wrong and
//! right credentials), and one-time tokens minted over the HTTP API
//! (used once, reused → 401, expired → 401).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{CHANNEL, DEVICE, Options, Rig, have, http_post, run_with_timeout};

fn rig(auth_yaml: &str) -> Rig {
    let mut rig = Rig::start(Options {
        rtsp_extra: auth_yaml.to_owned(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    rig
}

/// ffprobe's verdict on `url`: Ok(codec) or Err(stderr).
fn ffprobe(url: &str) -> Result<String, String> {
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-rtsp_transport", "tcp"])
            .args(["-show_entries", "stream=codec_name", "-of", "csv=p=0"])
            .arg(url),
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !stdout.is_empty() {
        Ok(stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether GStreamer got 10 H.264 buffers from `url` with these credentials.
fn gstreamer(url: &str, creds: Option<(&str, &str)>) -> Result<(), String> {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(["-q", "rtspsrc", &format!("location={url}"), "protocols=tcp"]);
    if let Some((user, pass)) = creds {
        cmd.arg(format!("user-id={user}"))
            .arg(format!("user-pw={pass}"));
    }
    cmd.args(["!", "rtph264depay", "!", "fakesink", "num-buffers=10"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(20));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn with_creds(url: &str, user: &str, pass: &str) -> String {
    url.replacen("rtsp://", &format!("rtsp://{user}:{pass}@"), 1)
}

fn matrix(mode: &str) {
    if !have("ffprobe") || !have("gst-launch-1.0") {
        return;
    }
    let rig = rig(&format!(
        "  auth:\n    mode: {mode}\n    users: [{{name: admin, password: \"s3cret\"}}]\n"
    ));
    let url = rig.url(DEVICE, CHANNEL);

    let none = ffprobe(&url).expect_err("no credentials must fail");
    assert!(none.contains("401"), "{mode}, none: {none}");
    let wrong = ffprobe(&with_creds(&url, "admin", "nope")).expect_err("wrong password");
    assert!(wrong.contains("401"), "{mode}, wrong: {wrong}");
    let codec = ffprobe(&with_creds(&url, "admin", "s3cret"))
        .unwrap_or_else(|e| panic!("{mode}, right credentials: {e}\n{}", rig.logs()));
    assert_eq!(codec, "h264");

    let err = gstreamer(&url, None).expect_err("GStreamer without credentials");
    assert!(
        err.contains("Unauthorized") || err.contains("401"),
        "{mode}: {err}"
    );
    let err = gstreamer(&url, Some(("admin", "nope"))).expect_err("GStreamer wrong password");
    assert!(
        err.contains("Unauthorized") || err.contains("401"),
        "{mode}: {err}"
    );
    let sessions_before = rig.metric("camgate_rtsp_sessions_started_total{transport=\"tcp\"}");
    if let Err(e) = gstreamer(&url, Some(("admin", "s3cret"))) {
        // rtspsrc sometimes reports a failed PAUSE after its own TEARDOWN at
        // end of stream; that is GStreamer's shutdown, not access control.
        // Accepted only if it was never refused and its session did play.
        assert!(
            !e.contains("401") && !e.contains("Unauthorized"),
            "{mode}, GStreamer right credentials refused: {e}"
        );
        assert!(
            e.contains("Could not send message"),
            "{mode}, GStreamer right credentials: {e}\n{}",
            rig.logs()
        );
    }
    assert!(
        rig.metric("camgate_rtsp_sessions_started_total{transport=\"tcp\"}") > sessions_before,
        "{mode}: GStreamer's session never started\n{}",
        rig.logs()
    );

    assert!(rig.metric("camgate_rtsp_auth_failures_total{kind=\"missing\"}") >= 2.0);
    assert!(rig.metric("camgate_rtsp_auth_failures_total{kind=\"bad_credentials\"}") >= 2.0);
}

#[test]
fn basic_auth_matrix() {
    matrix("basic");
}

#[test]
fn digest_auth_matrix() {
    matrix("digest");
}

fn mint(rig: &Rig) -> String {
    let (status, body) = http_post(
        rig.ports.http,
        "/api/v1/tokens",
        &format!("{{\"path\": \"/gb/{DEVICE}/{CHANNEL}\"}}"),
    )
    .expect("API answers");
    assert_eq!(status, 201, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["expires_in"], 1.5);
    json["token"].as_str().expect("token").to_owned()
}

#[test]
fn hash_tokens_work_once_and_expire() {
    if !have("ffprobe") {
        return;
    }
    let rig = rig("  auth:\n    mode: token\n    token_ttl: 1.5\n");
    let url = rig.url(DEVICE, CHANNEL);
    let err = ffprobe(&url).expect_err("no token");
    assert!(err.contains("401"), "{err}");

    let token = mint(&rig);
    let with_token = format!("{url}?hashtoken={token}");
    let codec = ffprobe(&with_token).unwrap_or_else(|e| panic!("fresh token: {e}\n{}", rig.logs()));
    assert_eq!(codec, "h264");
    let reused = ffprobe(&with_token).expect_err("a token works once");
    assert!(reused.contains("401"), "{reused}");

    let token = mint(&rig);
    std::thread::sleep(Duration::from_millis(1800));
    let expired = ffprobe(&format!("{url}?hashtoken={token}")).expect_err("expired token");
    assert!(expired.contains("401"), "{expired}");
    assert!(rig.metric("camgate_rtsp_auth_failures_total{kind=\"token_unknown\"}") >= 1.0);
    assert!(rig.metric("camgate_rtsp_auth_failures_total{kind=\"token_expired\"}") >= 1.0);
}
