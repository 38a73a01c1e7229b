//! GB28181 signaling against the real binary with sipp as the device, over
//! UDP and over TCP: register, queries answered (catalog in three
//! MESSAGEs), keepalive, alarm, unregister — results read back through the
//! HTTP API — and the 2022 registration redirect.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const SIPP_DEVICE: &str = "34020000001320000077";
const CHANNELS: [&str; 5] = [
    "34020000001310000001",
    "34020000001310000002",
    "34020000001310000003",
    "34020000001310000004",
    "34020000001310000005",
];

fn spawn_sipp(rig: &Rig, transport: &str, scenario: &str, ooc: Option<&str>) -> Child {
    let mut args = vec![
        "-sf".to_owned(),
        scenario.to_owned(),
        "-key".into(),
        "device".into(),
        SIPP_DEVICE.into(),
        "-key".into(),
        "server".into(),
        "34020000002000000001".into(),
        "-key".into(),
        "domain".into(),
        "3402000000".into(),
        "-au".into(),
        SIPP_DEVICE.into(),
        "-ap".into(),
        "12345678".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        rig.ports.spare.to_string(),
        "-m".into(),
        "1".into(),
        "-t".into(),
        transport.into(),
        "-timeout".into(),
        "30s".into(),
        "-timeout_error".into(),
        "-nostdin".into(),
        "-trace_err".into(),
    ];
    if let Some(ooc) = ooc {
        args.push("-oocsf".into());
        args.push(ooc.into());
    }
    args.push(format!("127.0.0.1:{}", rig.ports.sip));
    Command::new("sipp")
        .args(&args)
        .current_dir(rig.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sipp")
}

fn wait_sipp(mut child: Child, limit: Duration) -> (bool, String) {
    let ok = wait_for(limit, || child.try_wait().ok().flatten()).is_some_and(|s| s.success());
    if !ok {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("sipp output");
    (ok, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn device_life(transport: &str) {
    if !have("sipp") {
        return;
    }
    let rig = Rig::start(Options::default());
    let scenario = rig.dir.path().join("device.xml");
    std::fs::write(
        &scenario,
        include_str!("sipp/device.xml").replace("PAUSE_MS", "6000"),
    )
    .unwrap();
    let ooc = rig.dir.path().join("device_ooc.xml");
    std::fs::write(&ooc, include_str!("sipp/device_ooc.xml")).unwrap();
    let sipp = spawn_sipp(
        &rig,
        transport,
        scenario.to_str().unwrap(),
        Some(ooc.to_str().unwrap()),
    );

    // All five channels, from three pages, through the API.
    let channels = wait_for(Duration::from_secs(15), || {
        let (status, body) = http_get(
            rig.ports.http,
            &format!("/api/v1/devices/{SIPP_DEVICE}/channels"),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v.as_array()?.len() == CHANNELS.len()).then_some(v)
    });
    let Some(channels) = channels else {
        let (_, err) = wait_sipp(sipp, Duration::from_secs(1));
        panic!(
            "{transport}: channels never complete\n{err}\n{}",
            rig.logs()
        );
    };
    let mut ids: Vec<&str> = channels
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, CHANNELS, "{channels}");

    // The device is remembered with the transport it spoke.
    let (_, dev) = http_get(rig.ports.http, &format!("/api/v1/devices/{SIPP_DEVICE}")).unwrap();
    let dev: serde_json::Value = serde_json::from_str(&dev).unwrap();
    let want = if transport == "t1" { "tcp" } else { "udp" };
    assert_eq!(
        dev["transport"].as_str().map(str::to_lowercase).as_deref(),
        Some(want),
        "{dev}"
    );

    // The alarm, in the ring.
    let alarm = wait_for(Duration::from_secs(10), || {
        let (_, body) = http_get(rig.ports.http, "/api/v1/events")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v.as_array()?.iter().find(|e| e["type"] == "alarm").cloned()
    })
    .unwrap_or_else(|| panic!("{transport}: no alarm event\n{}", rig.logs()));
    assert_eq!(alarm["device_id"], SIPP_DEVICE, "{alarm}");
    assert_eq!(alarm["priority"], 1, "{alarm}");
    assert_eq!(alarm["method"], 5, "{alarm}");
    assert_eq!(alarm["alarm_type"], 2, "{alarm}");
    assert_eq!(alarm["description"], "sipp motion", "{alarm}");

    let m = rig.metrics();
    assert_eq!(metric_value(&m, "camgate_sip_keepalives_total"), 1.0, "{m}");
    // The catalog query completed from its three pages (not at the
    // deadline, which would count as partial).
    assert_eq!(
        metric_value(&m, r#"camgate_gb_queries_total{outcome="ok"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, r#"camgate_sip_requests_total{method="MESSAGE"}"#),
        5.0,
        "{m}"
    );

    let (ok, err) = wait_sipp(sipp, Duration::from_secs(30));
    assert!(ok, "{transport}: sipp failed\n{err}\n{}", rig.logs());
    // Unregistered: gone from the device list.
    let (_, devices) = http_get(rig.ports.http, "/api/v1/devices").unwrap();
    assert!(!devices.contains(SIPP_DEVICE), "{devices}");
    assert_eq!(
        rig.metric(r#"camgate_sip_registrations_total{outcome="unregistered"}"#),
        1.0
    );
}

#[test]
fn sipp_device_over_udp_registers_answers_catalog_in_three_pages_alarms_and_leaves() {
    device_life("u1");
}

#[test]
fn sipp_device_over_tcp_registers_answers_catalog_in_three_pages_alarms_and_leaves() {
    device_life("t1");
}

#[test]
fn redirected_device_gets_302_with_the_configured_contact() {
    if !have("sipp") {
        return;
    }
    let rig = Rig::start(Options {
        extra_yaml: format!("gb:\n  redirect:\n    \"{SIPP_DEVICE}\": \"10.1.2.3:5070\"\n"),
        ..Options::default()
    });
    let scenario = rig.dir.path().join("redirect.xml");
    std::fs::write(&scenario, include_str!("sipp/register_redirect.xml")).unwrap();
    let sipp = spawn_sipp(&rig, "u1", scenario.to_str().unwrap(), None);
    let (ok, err) = wait_sipp(sipp, Duration::from_secs(20));
    assert!(ok, "sipp: {err}\n{}", rig.logs());
    assert_eq!(
        rig.metric(r#"camgate_sip_registrations_total{outcome="redirected"}"#),
        1.0
    );
    let (_, devices) = http_get(rig.ports.http, "/api/v1/devices").unwrap();
    assert!(!devices.contains(SIPP_DEVICE), "{devices}");
}
