//! Device control and queries through the HTTP API, against the simulated
//! camera as a separate process: PTZ and preset words arrive at the camera
//! byte for byte; presets, status, configuration and records come back.

mod common;

use std::time::Duration;

use common::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Wait until the camera's log shows `word` received with a valid checksum.
fn camera_saw(rig: &Rig, word: &str) -> bool {
    wait_for(Duration::from_secs(5), || {
        rig.cameras[0]
            .log_text()
            .lines()
            .any(|l| l.contains("PTZ command received") && l.contains(word) && l.contains("true"))
            .then_some(())
    })
    .is_some()
}

#[test]
fn ptz_presets_queries_and_removal_through_the_api() {
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let http = rig.ports.http;
    let base = format!("/api/v1/devices/{DEVICE}");

    let (status, body) = http_send(
        http,
        "POST",
        &format!("{base}/channels/{CHANNEL}/ptz"),
        r#"{"action":"up","speed":100}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}\n{}", rig.logs());
    assert_eq!(json(&body)["ptz_cmd"], "A50F000800640020");
    assert!(camera_saw(&rig, "A50F000800640020"), "{}", rig.logs());

    let (status, body) = http_send(
        http,
        "POST",
        &format!("{base}/channels/{CHANNEL}/presets"),
        r#"{"action":"call","preset":2,"address":1}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["ptz_cmd"], "A50F018200020039");
    assert!(camera_saw(&rig, "A50F018200020039"), "{}", rig.logs());

    let (status, body) = http_get(http, &format!("{base}/channels/{CHANNEL}/presets")).unwrap();
    assert_eq!(status, 200, "{body}");
    let presets = json(&body);
    assert_eq!(presets["presets"][0]["id"], "1", "{presets}");
    assert_eq!(presets["presets"][1]["name"], "Yard", "{presets}");
    assert_eq!(presets["partial"], false);

    let (status, body) = http_get(http, &format!("{base}/status")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["device_id"], DEVICE, "{body}");

    let (status, body) = http_get(http, &format!("{base}/config")).unwrap();
    assert_eq!(status, 200, "{body}");
    let config = json(&body);
    assert_eq!(config["heartbeat_count"], 3, "{config}");
    assert!(
        config["heartbeat_interval"].as_u64().unwrap_or(0) >= 1,
        "{config}"
    );

    let (status, body) = http_get(
        http,
        &format!(
            "{base}/channels/{CHANNEL}/records?start=2024-05-01T00:00:00&end=2024-05-01T12:00:00"
        ),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let records = json(&body);
    assert_eq!(records["partial"], false, "{records}");
    assert!(records["records"].is_array(), "{records}");

    let (status, body) = http_get(
        http,
        &format!("{base}/channels/{CHANNEL}/records?start=yesterday&end=2024-05-01T12:00:00"),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");

    let (status, body) = http_send(
        http,
        "POST",
        &format!("{base}/control"),
        r#"{"action":"tele_boot"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["result"], "OK");

    let m = rig.metrics();
    assert_eq!(
        metric_value(&m, r#"camgate_gb_controls_total{outcome="ok"}"#),
        3.0,
        "{m}"
    );

    let (status, _) = http_send(http, "DELETE", &base, "").unwrap();
    assert_eq!(status, 204);
    let (status, _) = http_get(http, &base).unwrap();
    assert_eq!(status, 404);
    let (status, _) = http_send(
        http,
        "POST",
        "/api/v1/devices/34020000001320009999/channels/x/ptz",
        r#"{"action":"stop"}"#,
    )
    .unwrap();
    assert_eq!(status, 404);
}
