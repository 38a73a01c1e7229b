//! Operating the real binary: graceful drain on SIGTERM, reload on SIGHUP,
//! and the readiness endpoint, with simulated cameras, ffmpeg viewers and
//! sipp as the devices and clients.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// An ffmpeg viewer decoding `url` over RTSP/TCP for up to `seconds`;
/// returns its output when it ends (by itself or because the server closed).
fn spawn_viewer(
    url: String,
    seconds: u32,
) -> std::thread::JoinHandle<(std::process::Output, Duration)> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let out = run_with_timeout(
            Command::new("ffmpeg").args([
                "-nostdin",
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                &url,
                "-t",
                &seconds.to_string(),
                "-f",
                "null",
                "-progress",
                "pipe:1",
                "-",
            ]),
            Duration::from_secs(u64::from(seconds) + 15),
        );
        (out, started.elapsed())
    })
}

fn wait_streaming(rig: &Rig) {
    assert!(
        wait_until(Duration::from_secs(15), || {
            let m = rig.metrics();
            metric_value(&m, "camgate_streams_active") == 1.0
                && metric_value(&m, "camgate_viewers") >= 1.0
                && metric_value(&m, "camgate_frames_demuxed_total") > 10.0
        }),
        "stream never became active\n{}",
        rig.logs()
    );
}

#[test]
fn sigterm_with_active_stream_byes_the_device_and_exits_0_within_grace() {
    if !have("ffmpeg") {
        return;
    }
    let grace = Duration::from_secs(3);
    let mut rig = Rig::start(Options {
        idle_timeout: 30.0,
        extra_yaml: "shutdown_grace: 3\n".into(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let viewer = spawn_viewer(rig.url(DEVICE, CHANNEL), 60);
    wait_streaming(&rig);
    assert_eq!(rig.cameras[0].log_text().matches("BYE received").count(), 0);

    let status = rig.gateway.terminate(grace);
    let status = status.unwrap_or_else(|| {
        panic!(
            "gateway still running {grace:?} after SIGTERM\n{}",
            rig.logs()
        )
    });
    assert!(status.success(), "exit status {status:?}\n{}", rig.logs());

    // The viewer was disconnected, not left to run its 60 s.
    let (out, viewed_for) = viewer.join().unwrap();
    assert!(
        viewed_for < Duration::from_secs(40),
        "viewer ran {viewed_for:?}"
    );
    assert!(ffmpeg_frames(&out) > 0, "viewer decoded nothing");
    assert!(
        wait_until(Duration::from_secs(3), || rig.cameras[0]
            .log_text()
            .matches("BYE received")
            .count()
            == 1),
        "camera did not receive exactly one BYE\n{}",
        rig.logs()
    );
    let log = rig.gateway.log_text();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("drained"), "{log}");
    assert!(!log.contains("did not stop within"), "{log}");
}

#[test]
fn readyz_is_ready_after_start_and_503_while_draining() {
    if !have("ffmpeg") {
        return;
    }
    let mut rig = Rig::start(Options {
        idle_timeout: 30.0,
        extra_yaml: "shutdown_grace: 6\n".into(),
        ..Options::default()
    });
    assert_eq!(
        http_get(rig.ports.http, "/readyz"),
        Some((200, "ready\n".to_owned()))
    );
    assert_eq!(rig.metric("camgate_ready"), 1.0);
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let viewer = spawn_viewer(rig.url(DEVICE, CHANNEL), 60);
    wait_streaming(&rig);

    // A frozen camera cannot answer BYE, so the drain lasts long enough to
    // be observed; it then resumes and answers the retransmitted BYE.
    let camera = rig.cameras[0].child.id();
    send_signal(camera, "STOP");
    send_signal(rig.gateway.child.id(), "TERM");
    let mut seen = None;
    let observed = wait_until(Duration::from_secs(3), || {
        seen = http_get(rig.ports.http, "/readyz");
        seen.as_ref().is_some_and(|(status, _)| *status == 503)
    });
    send_signal(camera, "CONT");
    assert!(observed, "readyz during drain: {seen:?}\n{}", rig.logs());
    let (_, body) = seen.unwrap();
    assert!(body.contains("draining"), "{body}");

    let status = rig.gateway.terminate(Duration::from_secs(6));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        rig.logs()
    );
    let _ = viewer.join();
    assert!(
        wait_until(Duration::from_secs(3), || rig.cameras[0]
            .log_text()
            .contains("BYE received")),
        "{}",
        rig.logs()
    );
}

#[test]
fn sighup_applies_a_new_password_to_the_next_register_without_restart() {
    if !have("sipp") {
        return;
    }
    const DEV: &str = "34020000001320000042";
    let rig = Rig::start(Options::default());
    let pid = rig.gateway.child.id();
    let ok = sipp_register_device(&rig, DEV, "12345678", 200);
    assert!(ok.status.success(), "{ok:?}\n{}", rig.logs());

    // New password, plus a key that cannot change at run time.
    let original = std::fs::read_to_string(&rig.config).unwrap();
    let rotated = original
        .replace("password: \"12345678\"", "password: \"rotated-pw\"")
        .replace("idle_timeout: 1", "idle_timeout: 7");
    assert_ne!(rotated, original);
    std::fs::write(&rig.config, rotated).unwrap();
    send_signal(pid, "HUP");
    assert!(
        wait_until(Duration::from_secs(5), || rig
            .gateway
            .log_text()
            .contains("configuration reloaded")),
        "{}",
        rig.logs()
    );

    let old = sipp_register_device(&rig, DEV, "12345678", 403);
    assert!(
        old.status.success(),
        "old password: {old:?}\n{}",
        rig.logs()
    );
    let new = sipp_register_device(&rig, DEV, "rotated-pw", 200);
    assert!(
        new.status.success(),
        "new password: {new:?}\n{}",
        rig.logs()
    );

    let log = rig.gateway.log_text();
    assert!(log.contains("sip.password"), "{log}");
    assert!(log.contains("needs restart"), "{log}");
    assert!(log.contains("streams.idle_timeout"), "{log}");
    assert!(!log.contains("rotated-pw"), "a password reached the log");
    // Same process throughout.
    assert_eq!(rig.gateway.child.id(), pid);
    let m = rig.metrics();
    assert_eq!(
        metric_value(&m, r#"camgate_config_reloads_total{outcome="applied"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(metric_value(&m, "camgate_config_restart_pending"), 1.0);
    assert_eq!(
        metric_value(&m, r#"camgate_sip_registrations_total{outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        metric_value(
            &m,
            r#"camgate_sip_registrations_total{outcome="forbidden"}"#
        ),
        1.0
    );

    // A broken file is refused and the running config stays.
    std::fs::write(&rig.config, "sip:\n  pasword: x\n").unwrap();
    send_signal(pid, "HUP");
    assert!(
        wait_until(Duration::from_secs(5), || rig
            .gateway
            .log_text()
            .contains("reload failed")),
        "{}",
        rig.logs()
    );
    let again = sipp_register_device(&rig, DEV, "rotated-pw", 200);
    assert!(again.status.success(), "{again:?}\n{}", rig.logs());
}

#[test]
fn sighup_allow_list_refuses_unlisted_devices() {
    let mut rig = Rig::start(Options::default());
    let listed = "34020000001320000001";
    let unlisted = "34020000001320000077";
    let text = std::fs::read_to_string(&rig.config).unwrap().replace(
        "password: \"12345678\"",
        &format!("password: \"12345678\"\n  allowed_devices: [\"{listed}\"]"),
    );
    std::fs::write(&rig.config, text).unwrap();
    send_signal(rig.gateway.child.id(), "HUP");
    assert!(
        wait_until(Duration::from_secs(5), || rig
            .gateway
            .log_text()
            .contains("configuration reloaded")),
        "{}",
        rig.logs()
    );
    rig.add_camera(unlisted, "34020000001310000077", &[]);
    rig.add_camera(listed, CHANNEL, &[]);
    rig.wait_channel(listed, CHANNEL);
    assert!(
        wait_until(Duration::from_secs(5), || rig
            .metric(r#"camgate_sip_registrations_total{outcome="forbidden"}"#)
            >= 1.0),
        "{}",
        rig.logs()
    );
    let (status, devices) = http_get(rig.ports.http, "/api/v1/devices").unwrap();
    assert_eq!(status, 200);
    assert!(devices.contains(listed), "{devices}");
    assert!(!devices.contains(unlisted), "{devices}");
}
