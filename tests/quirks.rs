//! The device-quirk corpus (issue 16): every capture in `tests/quirks/`
//! gives, through `camgate probe`, exactly the codecs, sizes and frame
//! counts its row in README's "Device quirks handled" table promises;
//! every case plays live (a simulated camera sends the PS file or the RTP
//! packets as they are → gateway → RTSP → ffprobe and ffmpeg); and an
//! audio-only source is described as such once `media.audio_only_after`
//! has passed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Options, Rig, ffmpeg_decode, ffmpeg_frames, ffprobe_codecs, ffprobe_json, have};

use camgate::media::frame::{AudioParams, Codec, StreamInfo, VideoParams};
use camgate::media::hub::{Hub, HubConfig};

struct Row {
    file: String,
    video: String,
    audio: Option<String>,
    frames: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/quirks")
}

/// Rows of the README table: `| \`file\` | quirk | video | audio | frames |`.
fn readme_rows() -> Vec<Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Device quirks handled\n")
        .nth(1)
        .expect("README has a ## Device quirks handled section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 5, "malformed row: {l}");
            Row {
                file: cells[0].trim_matches('`').to_owned(),
                video: cells[2].to_owned(),
                audio: (cells[3] != "—").then(|| cells[3].to_owned()),
                frames: cells[4].to_owned(),
            }
        })
        .collect()
}

fn probe(file: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_camgate"));
    cmd.arg("probe").arg(file);
    // The µ-law case is what a device configured for µ-law sends; the
    // operator says so (media.default_g711 / --default-g711).
    if file.to_string_lossy().contains("g711u") {
        cmd.args(["--default-g711", "ulaw"]);
    }
    let out = cmd.output().expect("run camgate probe");
    assert!(out.status.success(), "probe {}: {out:?}", file.display());
    String::from_utf8(out.stdout).expect("utf-8")
}

fn field<'a>(report: &'a str, name: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

#[test]
fn every_corpus_case_probes_as_its_readme_row() {
    let rows = readme_rows();
    assert!(rows.len() >= 30, "only {} rows", rows.len());
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("tests/quirks")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = rows.iter().map(|r| r.file.clone()).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "README rows and tests/quirks/ differ");
    for row in &rows {
        let path = corpus_dir().join(&row.file);
        assert!(
            std::fs::metadata(&path).unwrap().len() <= 400 * 1024,
            "{} is too big for the corpus",
            row.file
        );
        let report = probe(&path);
        let ctx = format!("{}:\n{report}", row.file);
        assert_eq!(field(&report, "video:"), Some(row.video.as_str()), "{ctx}");
        assert_eq!(field(&report, "audio:"), row.audio.as_deref(), "{ctx}");
        assert_eq!(
            field(&report, "frames:"),
            Some(row.frames.as_str()),
            "{ctx}"
        );
        // Nothing the quirk does is an error, except the garbage itself.
        let errors = field(&report, "errors:").unwrap_or_default();
        if row.file == "garbage_between_packs.ps" {
            assert!(errors.starts_with("lost_sync="), "{ctx}");
        } else {
            assert!(errors.starts_with("none"), "{ctx}");
        }
        if row.file.starts_with("psm_map_len") {
            assert!(
                field(&report, "repaired:").is_some_and(|r| r.starts_with("2 PSMs")),
                "{ctx}"
            );
        }
        if row.file == "start_mid_pes.ps" {
            assert!(report.starts_with("format:     MPEG-PS"), "{ctx}");
        }
    }
}

fn audio_info() -> StreamInfo {
    StreamInfo {
        audio: Some((
            Codec::Pcma,
            AudioParams {
                sample_rate: 8000,
                channels: 1,
                config: None,
            },
        )),
        ..StreamInfo::default()
    }
}

#[tokio::test(start_paused = true)]
async fn audio_without_video_is_described_audio_only_after_the_wait() {
    let hub = Hub::new(HubConfig::default());
    hub.set_info(audio_info());
    let start = tokio::time::Instant::now();
    let info = hub
        .wait_described_or_audio_only(Duration::from_secs(10), Duration::from_secs(2))
        .await;
    assert!(info.video.is_none());
    assert_eq!(info.audio.as_ref().map(|a| a.0), Some(Codec::Pcma));
    // The paused clock advanced only as far as the audio-only wait.
    assert!(
        start.elapsed() <= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // Video arriving within the wait is waited for and offered.
    let hub = std::sync::Arc::new(Hub::new(HubConfig::default()));
    hub.set_info(audio_info());
    let later = hub.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut info = audio_info();
        info.video = Some((
            Codec::H264,
            VideoParams {
                width: 640,
                height: 360,
                ..VideoParams::default()
            },
        ));
        later.set_info(info);
    });
    let info = hub
        .wait_described_or_audio_only(Duration::from_secs(10), Duration::from_secs(2))
        .await;
    assert_eq!(info.video.as_ref().map(|v| v.1.width), Some(640));
}

/// Codec name and size ffprobe should report for a README video cell.
fn expected_video(cell: &str) -> Option<(&str, Vec<(u64, u64)>)> {
    let (codec, rest) = cell.split_once(' ')?;
    if codec == "none" {
        return None;
    }
    let sizes = rest
        .split([' ', ',', '(', ')'])
        .filter_map(|t| t.split_once('x'))
        .filter_map(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .collect();
    Some((codec, sizes))
}

#[test]
fn every_case_plays_live_over_rtsp() {
    if !have("ffprobe") || !have("ffmpeg") {
        return;
    }
    let rows: Vec<Row> = readme_rows()
        .into_iter()
        // Played under media.default_g711: ulaw below.
        .filter(|r| !r.file.contains("g711u"))
        .collect();
    let mut rig = Rig::start(Options::default());
    let ids: Vec<(String, String)> = (0..rows.len())
        .map(|i| {
            (
                format!("340200000013200{:05}", 100 + i),
                format!("340200000013100{:05}", 100 + i),
            )
        })
        .collect();
    for (row, (device, channel)) in rows.iter().zip(&ids) {
        // One camera at a time: each lives only for its case, well inside
        // its keepalive timeout.
        rig.cameras.clear();
        let path = corpus_dir().join(&row.file);
        let flag = if row.file.ends_with(".rtp") {
            "--rtp-file"
        } else {
            "--ps-file"
        };
        rig.add_camera(device, channel, &[flag, path.to_str().unwrap()]);
        rig.wait_channel(device, channel);
        let url = rig.url(device, channel);
        let probe = ffprobe_json(&url, "tcp");
        let streams = probe["streams"].as_array().cloned().unwrap_or_default();
        let ctx = format!("{}: {probe}", row.file);
        let video = streams.iter().find(|s| s["codec_type"] == "video");
        match expected_video(&row.video) {
            Some((codec, sizes)) => {
                let v = video.unwrap_or_else(|| panic!("no video track; {ctx}"));
                assert_eq!(v["codec_name"], codec, "{ctx}");
                let size = (
                    v["width"].as_u64().unwrap_or(0),
                    v["height"].as_u64().unwrap_or(0),
                );
                assert!(sizes.contains(&size), "{size:?} not in {sizes:?}; {ctx}");
            }
            None => assert!(video.is_none(), "{ctx}"),
        }
        let audio = streams.iter().find(|s| s["codec_type"] == "audio");
        let want_audio = row
            .audio
            .as_deref()
            .map(|a| a.split(' ').next().unwrap_or(""));
        // ffprobe names MPEG audio by its layer; the probe says "mp2/mp3".
        let got_audio = audio.and_then(|a| a["codec_name"].as_str()).map(|c| {
            if c == "mp2" || c == "mp3" {
                "mp2/mp3"
            } else {
                c
            }
        });
        if row.file == "psm_version_bump.ps" {
            // Audio joins a second in: a viewer that connected before it
            // was described with video alone (RTSP cannot add a track).
            assert!(got_audio.is_none() || got_audio == want_audio, "{ctx}");
        } else {
            assert_eq!(got_audio, want_audio, "{ctx}");
        }
        if video.is_some() {
            let out = ffmpeg_decode(&url, "tcp", ["-frames:v", "25"]);
            let frames = ffmpeg_frames(&out);
            assert!(
                frames >= 25,
                "{}: {frames} frames decoded; {}",
                row.file,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn mu_law_without_psm_plays_as_pcmu_under_default_g711_ulaw() {
    if !have("ffprobe") {
        return;
    }
    // `transport` is the last key the rig writes under `media:`; the
    // setting under test rides on the same line break.
    let mut rig = Rig::start(Options {
        transport: "udp\n  default_g711: ulaw",
        ..Options::default()
    });
    let (device, channel) = ("34020000001320000091", "34020000001310000091");
    let path = corpus_dir().join("nopsm_g711u.ps");
    rig.add_camera(device, channel, &["--ps-file", path.to_str().unwrap()]);
    rig.wait_channel(device, channel);
    let probe = ffprobe_json(&rig.url(device, channel), "tcp");
    let codecs = ffprobe_codecs(&probe);
    assert_eq!(codecs, ["h264", "pcm_mulaw"], "{probe}");
}

/// After a gateway restart a device keeps sending keepalives and would not
/// REGISTER again until its registration runs out. Its first keepalive (an
/// eXosip-style literal MESSAGE, LF line ends inside the body, GB2312
/// declared) is read and answered 403 — never adopted unauthenticated
/// (issue 14: an adopted keepalive could hijack a camera) — and a 403 is
/// what makes field devices register again at once, after which it plays.
#[test]
fn keepalive_before_register_is_refused_so_the_device_registers_again() {
    let mut rig = Rig::start(Options::default());
    let device = "34010000001320000077";
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\n<Notify>\n<CmdType>Keepalive</CmdType>\n<SN>5</SN>\n<DeviceID>{device}</DeviceID>\n<Status>OK</Status>\n</Notify>\n"
    );
    let message = format!(
        "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK77001\r\n\
         From: <sip:{device}@3401000000>;tag=77\r\n\
         To: <sip:34020000002000000001@3402000000>\r\n\
         Call-ID: 77@{ip}\r\n\
         CSeq: 20 MESSAGE\r\n\
         Max-Forwards: 70\r\n\
         User-Agent: eXosip/3.6.0\r\n\
         Content-Type: Application/MANSCDP+xml\r\n\
         Content-Length: {len}\r\n\r\n{body}",
        ip = local.ip(),
        len = body.len(),
    );
    socket
        .send_to(message.as_bytes(), ("127.0.0.1", rig.ports.sip))
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = socket
        .recv_from(&mut buf)
        .expect("an answer to the keepalive");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 403"), "{answer}");
    assert_eq!(
        rig.metric(r#"camgate_sip_rejected_total{reason="unregistered"}"#),
        1.0
    );
    let http = rig.ports.http;
    let listed = || {
        common::http_get(http, "/api/v1/devices")
            .is_some_and(|(s, b)| s == 200 && b.contains(device))
    };
    assert!(!listed(), "a keepalive alone must not create a device");
    // The device registers again (digest), and is listed and playable.
    let channel = "34010000001310000077";
    rig.add_camera(device, channel, &[]);
    rig.wait_channel(device, channel);
    assert!(listed(), "device not listed after its REGISTER");
}

/// A WHEP viewer of an audio-only device (PSM announces video, none is
/// sent) gets an answer with the audio section alone, once
/// `media.audio_only_after` has passed, not a 5xx after the describe wait.
#[test]
fn whep_offers_audio_only_for_an_audio_only_device() {
    const OFFER: &str = include_str!("../src/webrtc/testdata/chromium-156-offer.sdp");
    let mut rig = Rig::start(Options::default());
    let (device, channel) = ("34020000001320000092", "34020000001310000092");
    let path = corpus_dir().join("audio_only_g711a.ps");
    rig.add_camera(device, channel, &["--ps-file", path.to_str().unwrap()]);
    rig.wait_channel(device, channel);
    let (status, _, answer) = common::http_exchange(
        rig.ports.http,
        "POST",
        &format!("/whep/gb/{device}/{channel}"),
        &[("Content-Type", "application/sdp")],
        OFFER,
    )
    .expect("HTTP answer");
    assert_eq!(status, 201, "{answer}\n{}", rig.logs());
    // The browser's video section is still answered (str0m would answer
    // it with an empty format list, which Chromium refuses to parse);
    // nothing is ever sent on it. Audio is what the stream is.
    let audio = answer.split("m=audio").nth(1).unwrap_or("");
    assert!(audio.contains("PCMA/8000"), "{answer}");
    assert!(
        rig.metric("camgate_webrtc_peers") >= 1.0,
        "{}",
        rig.metrics()
    );
}
