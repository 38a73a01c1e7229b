//! GB/T 28181-2022 snapshots against the simulated camera: the API asks
//! for N images, the camera POSTs them to the gateway's upload URL and
//! sends UploadSnapShotFinished, and the API serves the images back.

mod common;

use std::time::Duration;

use common::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn camera_uploads_the_requested_images_and_the_api_returns_them() {
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let http = rig.ports.http;

    let (status, body) = http_send(
        http,
        "POST",
        &format!("/api/v1/devices/{DEVICE}/channels/{CHANNEL}/snapshot"),
        r#"{"count":3,"interval":1}"#,
    )
    .unwrap();
    assert_eq!(status, 202, "{body}\n{}", rig.logs());
    let session = json(&body)["session"].as_str().unwrap().to_owned();

    let done = wait_for(Duration::from_secs(15), || {
        let (_, body) = http_get(http, &format!("/api/v1/snapshots/{session}"))?;
        let s = json(&body);
        (s["finished"] == true).then_some(s)
    })
    .unwrap_or_else(|| panic!("snapshots never finished\n{}", rig.logs()));
    assert_eq!(done["requested"], 3, "{done}");
    assert_eq!(done["received"], 3, "{done}");
    assert_eq!(
        done["device_files"],
        serde_json::json!([
            format!("{session}_1"),
            format!("{session}_2"),
            format!("{session}_3")
        ]),
        "{done}"
    );
    let urls: Vec<String> = done["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(urls.len(), 3);
    let mut images = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let (status, head, jpeg) = http_get_bytes(http, url).unwrap();
        assert_eq!(status, 200, "{url}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: image/jpeg"),
            "{head}"
        );
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "{url} is not a JPEG");
        let marker = format!("camgate sim snapshot {session} #{}", i + 1);
        assert!(
            jpeg.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{url} is not image {}",
            i + 1
        );
        images.push(jpeg);
    }
    if have("ffprobe") {
        let path = rig.dir.path().join("snap.jpg");
        std::fs::write(&path, &images[0]).unwrap();
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "32,24");
    }
    let (status, _, _) =
        http_get_bytes(http, &format!("/api/v1/snapshots/{session}/4.jpg")).unwrap();
    assert_eq!(status, 404);
    // Uploads that are not JPEG, or for no session, are refused.
    let (status, _) = http_send(
        http,
        "POST",
        &format!("/api/v1/snapshots/upload/{session}"),
        "not a jpeg",
    )
    .unwrap();
    assert_eq!(status, 415);
    let (status, _) = http_send(http, "POST", "/api/v1/snapshots/upload/nope", "x").unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        rig.metric(r#"camgate_gb_snapshot_images_total{outcome="stored"}"#),
        3.0
    );

    let (status, body) = http_get(http, "/api/v1/openapi.json").unwrap();
    assert_eq!(status, 200);
    let doc = json(&body);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/api/v1/snapshots/{session}/{file}"]["get"].is_object(),
        "{doc}"
    );
}
