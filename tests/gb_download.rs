//! Download jobs through the API against the simulated camera: the
//! `s=Download` session at `downloadspeed` 4 ends with MediaStatus 121 and
//! leaves a file holding every frame of the range; a job can be cancelled.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The rig, and the directory downloads go to (removed when the test passes).
fn rig() -> (Rig, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let downloads = dir.path().join("dl");
    let mut rig = Rig::start(Options {
        extra_yaml: format!("gb:\n  download_dir: \"{}\"\n", downloads.display()),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    (rig, dir)
}

fn job(rig: &Rig, id: &str) -> serde_json::Value {
    let (status, body) = http_get(
        rig.ports.http,
        &format!("/api/v1/devices/{DEVICE}/channels/{CHANNEL}/downloads/{id}"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    json(&body)
}

#[test]
fn download_at_speed_4_saves_every_frame_of_the_range() {
    let (rig, _downloads) = rig();
    let mp4 = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    let format = if mp4 { "mp4" } else { "ps" };
    let (status, body) = http_send(
        rig.ports.http,
        "POST",
        &format!("/api/v1/devices/{DEVICE}/channels/{CHANNEL}/downloads"),
        &format!(
            r#"{{"start":"2024-05-01T08:00:00","end":"2024-05-01T08:00:08","speed":4,"format":"{format}"}}"#
        ),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}\n{}", rig.logs());
    let id = json(&body)["id"].as_str().unwrap().to_owned();

    let done = wait_for(Duration::from_secs(20), || {
        let j = job(&rig, &id);
        (j["state"] != "running" && j["state"] != "remuxing").then_some(j)
    })
    .unwrap_or_else(|| panic!("download never finished\n{}", rig.logs()));
    assert_eq!(done["state"], "done", "{done}\n{}", rig.logs());
    assert_eq!(done["progress"], 1.0, "{done}");
    assert!(done["bytes"].as_u64().unwrap() > 10_000, "{done}");
    let file = done["file"].as_str().unwrap();
    assert!(file.ends_with(&format!(".{format}")), "{done}");

    let camera = plain(&rig.cameras[0].log_text());
    assert!(
        camera.lines().any(|l| l.contains("history INVITE")
            && l.contains("download=true")
            && l.contains("speed=4")),
        "{camera}"
    );
    // At 4× the 8 s range streams in about 2 s.
    assert!(camera.contains("MediaStatus 121"), "{camera}");

    if !have("ffprobe") {
        return;
    }
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            file,
        ])
        .output()
        .unwrap();
    let frames: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|_| panic!("{out:?}"));
    // 8 s at 25 fps; UDP on loopback may drop a packet at most.
    assert!((195..=200).contains(&frames), "{frames} frames in {file}");
}

#[test]
fn cancelled_download_stops_the_session() {
    let (rig, _downloads) = rig();
    let (status, body) = http_send(
        rig.ports.http,
        "POST",
        &format!("/api/v1/devices/{DEVICE}/channels/{CHANNEL}/downloads"),
        r#"{"start":"2024-05-01T08:00:00","end":"2024-05-01T09:00:00","speed":1}"#,
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_owned();
    let bytes = wait_for(Duration::from_secs(10), || {
        let j = job(&rig, &id);
        (j["bytes"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    assert!(bytes.is_some(), "no media arrived\n{}", rig.logs());
    let (status, _) = http_send(
        rig.ports.http,
        "DELETE",
        &format!("/api/v1/devices/{DEVICE}/channels/{CHANNEL}/downloads/{id}"),
        "",
    )
    .unwrap();
    assert_eq!(status, 204);
    let j = wait_for(Duration::from_secs(10), || {
        let j = job(&rig, &id);
        (j["state"] == "cancelled").then_some(j)
    });
    assert!(j.is_some(), "{}", rig.logs());
    let p = j.unwrap()["progress"].as_f64().unwrap();
    assert!(p < 0.1, "progress {p} of an hour after a few seconds");
    assert!(
        wait_for(Duration::from_secs(5), || rig.cameras[0]
            .log_text()
            .contains("BYE received")
            .then_some(()))
        .is_some(),
        "{}",
        rig.logs()
    );
    // A job of another channel is not found under this one.
    let (status, _) = http_get(
        rig.ports.http,
        &format!("/api/v1/devices/{DEVICE}/channels/other/downloads/{id}"),
    )
    .unwrap();
    assert_eq!(status, 404);
}
