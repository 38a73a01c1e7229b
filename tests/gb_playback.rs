//! GB28181 playback end to end against the simulated camera: the record
//! list, a playback stream over RTSP that ends by itself at the end of the
//! range (MediaStatus 121), and MANSRTSP pause/scale/seek arriving at the
//! camera byte for byte.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use camgate::config::Config;
use camgate::gb28181::gbtime;
use camgate::gb28181::invite::GbSources;
use camgate::gb28181::platform::GbPlatform;
use camgate::gb28181::playback::{PlaybackRange, playback_key};
use camgate::ingest::port_pool::PortPool;
use camgate::sip::stack::SipStack;
use camgate::streams::{
    PlaybackCommand, PlaybackControl, SourceProvider, StreamKey, Streams, StreamsConfig,
};
use common::raw_rtsp::{RawRtsp, Reply};
use common::*;
use tokio_util::sync::CancellationToken;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `08:00:30` to `08:00:34` on 2024-05-01 (UTC): four seconds, thirty
/// seconds into the camera's 08:00 file.
const START: &str = "2024-05-01T08:00:30";
const END: &str = "2024-05-01T08:00:34";

#[test]
fn record_list_and_playback_over_rtsp_ends_at_the_range_end() {
    let mut rig = Rig::start(Options {
        idle_timeout: 0.5,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);

    let (status, body) = http_get(
        rig.ports.http,
        &format!(
            "/api/v1/devices/{DEVICE}/channels/{CHANNEL}/records?start=2024-05-01T08:30:00&end=2024-05-01T11:00:00"
        ),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let records = json(&body);
    let starts: Vec<&str> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["start_time"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2024-05-01T08:00:00",
            "2024-05-01T09:00:00",
            "2024-05-01T10:00:00"
        ],
        "{records}"
    );

    if !have("ffprobe") {
        return;
    }
    let range = PlaybackRange {
        start: gbtime::parse(START).unwrap(),
        end: gbtime::parse(END).unwrap(),
    };
    // The viewer's URL: the live path with the range as a query.
    let url = format!("{}?start={START}&end={END}", rig.url(DEVICE, CHANNEL));
    // No duration limit: ffprobe must stop because the stream ends.
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
            &url,
        ]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert!(
        out.status.success(),
        "ffprobe did not end cleanly: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.logs()
    );
    // 4 s at 25 fps is 100 frames; a viewer joins at the GOP cache, so the
    // first second may be cut to its keyframe.
    assert!(
        (70..=100).contains(&times.len()),
        "{} frames\n{}",
        times.len(),
        rig.logs()
    );
    let span = times.last().unwrap() - times.first().unwrap();
    assert!(
        (2.9..=4.0).contains(&span),
        "frames span {span} s of a 4 s range\n{text}"
    );

    let camera = rig.cameras[0].log_text();
    let first = camera
        .lines()
        .find(|l| l.contains("playback first frame"))
        .unwrap_or_else(|| panic!("{}", rig.logs()));
    // The first frame is 30 s into the camera's 08:00 file.
    assert!(first.contains(&(30 * 90_000).to_string()), "{first}");
    assert!(first.contains(&range.start.to_string()), "{first}");
    assert!(first.contains(&range.end.to_string()), "{first}");
    assert!(
        camera.contains("MediaStatus 121"),
        "camera never ended the file\n{}",
        rig.logs()
    );
    assert!(
        wait_for(Duration::from_secs(5), || {
            (rig.metric(r#"camgate_stream_stops_total{reason="finished"}"#) == 1.0).then_some(())
        })
        .is_some(),
        "{}",
        rig.metrics()
    );
}

/// The gateway and camera in this process, calling the playback control
/// the RTSP session calls directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_scale_and_seek_reach_the_camera_as_mansrtsp() {
    let ports = Ports::new();
    let mut config = Config::default();
    config.sip.listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), ports.sip);
    config.media.rtp_bind = Ipv4Addr::LOCALHOST.into();
    config.media.rtp_port_min = ports.rtp_min;
    config.media.rtp_port_max = ports.rtp_max;
    let live = camgate::reload::LiveConfig::new(config.clone(), None);
    let cancel = CancellationToken::new();
    let (sip, incoming) = SipStack::bind(config.sip.listen, config.advertised_ip(), cancel.clone())
        .await
        .unwrap();
    let pool = PortPool::new(
        config.media.rtp_bind,
        config.media.rtp_port_min,
        config.media.rtp_port_max,
    );
    let platform = GbPlatform::new(live, sip, pool);
    tokio::spawn(platform.clone().run(incoming, cancel.clone()));
    let sources = Arc::new(GbSources::new(platform.clone()));
    let streams = Streams::new(StreamsConfig::default())
        .with_provider("gb", sources.clone() as Arc<dyn SourceProvider>);

    let camera = camgate::sim::spawn(
        camgate::sim::SimCameraConfig::new(config.sip.listen),
        cancel.clone(),
    );
    let online = wait_for_async(Duration::from_secs(20), || {
        platform
            .channels(DEVICE)
            .is_some_and(|cs| cs.iter().any(|c| c.id == CHANNEL))
    })
    .await;
    assert!(online, "camera never registered its channel");

    // A 60 s range so the seek to 30 s stays inside it.
    let range = PlaybackRange {
        start: gbtime::parse("2024-05-01T08:00:00").unwrap(),
        end: gbtime::parse("2024-05-01T08:01:00").unwrap(),
    };
    let key = StreamKey::from_path(&playback_key(DEVICE, CHANNEL, range)).unwrap();
    let viewer = streams.open(&key).await.expect("playback starts");
    let control = sources.playback_control(&key).expect("a playback control");
    control.command(PlaybackCommand::Pause).await.unwrap();
    control.command(PlaybackCommand::Scale(2.0)).await.unwrap();
    control.command(PlaybackCommand::Seek(30.0)).await.unwrap();
    assert!(
        control.command(PlaybackCommand::Scale(3.0)).await.is_err(),
        "3× is no device speed"
    );
    // The camera answers each INFO before its driver records the body.
    wait_for_async(Duration::from_secs(3), || {
        camera.stats.playback_bodies().len() >= 3
    })
    .await;
    let bodies = camera.stats.playback_bodies();
    assert_eq!(
        bodies,
        [
            "PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n",
            "PLAY RTSP/1.0\r\nCSeq: 2\r\nScale: 2\r\n",
            "PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=30-\r\n",
        ]
    );
    // Frames keep coming after the seek (the camera resumed at 30 s).
    let hub = viewer.hub().clone();
    let before = hub
        .stats
        .frames_in
        .load(std::sync::atomic::Ordering::Relaxed);
    let grew = wait_for_async(Duration::from_secs(5), || {
        hub.stats
            .frames_in
            .load(std::sync::atomic::Ordering::Relaxed)
            > before + 10
    })
    .await;
    assert!(grew, "no frames after the seek");
    drop(viewer);
    streams.shutdown(Duration::from_secs(3)).await;
    assert!(
        sources.playback_control(&key).is_none(),
        "control outlived its session"
    );
    cancel.cancel();
    let _ = camera.task.await;
}

async fn wait_for_async(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[test]
fn rtsp_pause_scale_and_seek_become_mansrtsp_info_at_the_camera() {
    let mut rig = Rig::start(Options::default());
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    // Two minutes of recording, so the seek to 30 s stays inside it.
    let url = format!(
        "{}?start=2024-05-01T08:00:00&end=2024-05-01T08:02:00",
        rig.url(DEVICE, CHANNEL)
    );
    let mut c = RawRtsp::connect(rig.ports.rtsp);
    let Reply { status, head, .. } = c.request("DESCRIBE", &url, &["Accept: application/sdp"]);
    assert_eq!(status, 200, "{head}\n{}", rig.logs());
    let base = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Base:"))
        .map(|b| b.trim().to_owned())
        .unwrap_or_else(|| format!("{url}/"));
    assert!(base.contains("/playback/"), "{base}");
    let track = format!("{base}trackID=0");
    let Reply { status, head, .. } = c.request(
        "SETUP",
        &track,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
    );
    assert_eq!(status, 200, "{head}");
    assert_eq!(c.request("PLAY", &base, &["Range: npt=0-"]).status, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.request("PAUSE", &base, &[]).status, 200);
    let Reply { status, head, .. } = c.request("PLAY", &base, &["Scale: 2"]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Scale: 2"), "{head}");
    assert_eq!(c.request("PLAY", &base, &["Range: npt=30-"]).status, 200);

    let bodies = wait_for(Duration::from_secs(5), || {
        let log = plain(&rig.cameras[0].log_text());
        let bodies: Vec<String> = log
            .lines()
            .filter(|l| l.contains("playback control received"))
            .filter_map(|l| l.split("body=\"").nth(1))
            .filter_map(|b| b.split('"').next())
            .map(str::to_owned)
            .collect();
        (bodies.len() >= 4).then_some(bodies)
    })
    .unwrap_or_else(|| panic!("the camera saw too few INFOs\n{}", rig.logs()));
    assert_eq!(
        bodies,
        [
            r"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n",
            r"PLAY RTSP/1.0\r\nCSeq: 2\r\nScale: 2\r\n",
            r"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=now-\r\n",
            r"PLAY RTSP/1.0\r\nCSeq: 4\r\nRange: npt=30-\r\n",
        ]
    );
    assert_eq!(c.request("TEARDOWN", &base, &[]).status, 200);
}
