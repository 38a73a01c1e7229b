//! The client matrix of the RTSP server: every client the gateway promises
//! to serve plays every codec it carries, end to end through the real
//! binary.
//!
//! | source (one gateway each)          | codecs                 |
//! | ---------------------------------- | ---------------------- |
//! | `sim-camera --audio`               | H.264, PCMA            |
//! | `sim-camera --h265`                | H.265                  |
//! | `sim-foscam`                       | MJPEG, PCMA (ADPCM in) |
//! | `sim-camera --aac tone.aac`        | AAC (with H.264)       |
//!
//! × clients: ffprobe over TCP and UDP, GStreamer `rtspsrc` over TCP and
//! UDP (depayloader and decoder named per codec, so a wrong codec fails
//! to link), and retina in-process over TCP and UDP.
//!
//! Each cell asserts the codec the client saw and a frame count that
//! matches the source's frame rate: ffprobe decodes 3 s of stream time and
//! must count 3 s worth of frames; GStreamer and retina take N frames and
//! the timestamps of those N must span N − 1 frame intervals (GStreamer's
//! jitter buffer runs with `buffer-mode=none`, so its timestamps are the
//! server's RTP timestamps rather than arrival times). Every cell
//! runs even when one fails, and the whole table is printed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const FOSCAM: &str = "cam";

#[derive(Clone, Copy, Debug)]
enum Client {
    FfprobeTcp,
    FfprobeUdp,
    GstTcp,
    GstUdp,
    RetinaTcp,
    RetinaUdp,
}

const CLIENTS: [Client; 6] = [
    Client::FfprobeTcp,
    Client::FfprobeUdp,
    Client::GstTcp,
    Client::GstUdp,
    Client::RetinaTcp,
    Client::RetinaUdp,
];

impl Client {
    fn name(self) -> &'static str {
        match self {
            Self::FfprobeTcp => "ffprobe tcp",
            Self::FfprobeUdp => "ffprobe udp",
            Self::GstTcp => "gst tcp",
            Self::GstUdp => "gst udp",
            Self::RetinaTcp => "retina tcp",
            Self::RetinaUdp => "retina udp",
        }
    }

    fn tool(self) -> Option<&'static str> {
        match self {
            Self::FfprobeTcp | Self::FfprobeUdp => Some("ffprobe"),
            Self::GstTcp | Self::GstUdp => Some("gst-launch-1.0"),
            Self::RetinaTcp | Self::RetinaUdp => None,
        }
    }
}

/// One codec as each client names it.
#[derive(Clone, Copy, Debug)]
struct Codec {
    label: &'static str,
    /// `video` or `audio`.
    media: &'static str,
    /// ffprobe's `codec_name`.
    ffprobe: &'static str,
    /// The GStreamer chain after `rtspsrc`, ending in a decoder.
    gst: &'static str,
    /// `encoding-name` in rtspsrc's caps.
    gst_encoding: &'static str,
    /// retina's `encoding_name()`.
    retina: &'static str,
    /// Frames per second the source sends.
    rate: f64,
}

const H264: Codec = Codec {
    label: "H.264",
    media: "video",
    ffprobe: "h264",
    gst: "rtph264depay ! h264parse ! avdec_h264",
    gst_encoding: "H264",
    retina: "h264",
    rate: 25.0,
};
const H265: Codec = Codec {
    label: "H.265",
    media: "video",
    ffprobe: "hevc",
    gst: "rtph265depay ! h265parse ! avdec_h265",
    gst_encoding: "H265",
    retina: "h265",
    rate: 25.0,
};
const MJPEG: Codec = Codec {
    label: "MJPEG",
    media: "video",
    ffprobe: "mjpeg",
    gst: "rtpjpegdepay ! jpegdec",
    gst_encoding: "JPEG",
    retina: "jpeg",
    rate: 10.0,
};
/// The GB28181 camera's A-law: 20 ms frames.
const PCMA_20MS: Codec = Codec {
    label: "PCMA",
    media: "audio",
    ffprobe: "pcm_alaw",
    gst: "rtppcmadepay ! alawdec",
    gst_encoding: "PCMA",
    retina: "pcma",
    rate: 50.0,
};
/// The Foscam camera's ADPCM as A-law: 40 ms frames.
const PCMA_40MS: Codec = Codec {
    rate: 25.0,
    ..PCMA_20MS
};
/// 16 kHz AAC-LC: 1024 samples a frame.
const AAC: Codec = Codec {
    label: "AAC",
    media: "audio",
    ffprobe: "aac",
    gst: "rtpmp4gdepay ! aacparse ! avdec_aac",
    gst_encoding: "MPEG4-GENERIC",
    retina: "mpeg4-generic",
    rate: 16_000.0 / 1024.0,
};

/// What one cell saw.
type Cell = Result<String, String>;

/// Seconds of stream ffprobe reads; frames the other clients take.
const PROBE_SECS: f64 = 3.0;

/// Expected frames in `secs` of stream: within 25 % (UDP on a busy host
/// may lose a little; a doubled or halved rate fails).
fn count_ok(codec: &Codec, frames: usize, secs: f64) -> Result<(), String> {
    let want = codec.rate * secs;
    let n = frames as f64;
    if n >= want * 0.75 && n <= want * 1.25 {
        Ok(())
    } else {
        Err(format!(
            "{frames} frames in {secs:.2} s, expected about {want:.0}"
        ))
    }
}

/// N frames whose timestamps span `span` seconds: the span must be N − 1
/// frame intervals (within 10 %).
fn span_ok(codec: &Codec, frames: usize, span: f64) -> Result<(), String> {
    let want = (frames.saturating_sub(1)) as f64 / codec.rate;
    if (span - want).abs() <= want * 0.1 {
        Ok(())
    } else {
        Err(format!(
            "{frames} frames span {span:.3} s of timestamps, expected {want:.3} s"
        ))
    }
}

fn ffprobe(url: &str, transport: &str, codec: &Codec) -> Cell {
    let select = if codec.media == "video" { "v:0" } else { "a:0" };
    let out = run_draining(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-select_streams",
            select,
            "-read_intervals",
            &format!("%+{PROBE_SECS}"),
            "-show_entries",
            "stream=codec_name:frame=pts_time",
            "-of",
            "json",
            url,
        ]),
        Duration::from_secs(40),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ffprobe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let json: serde_json::Value =
        serde_json::from_str(&stdout).map_err(|e| format!("ffprobe JSON: {e}: {stdout}"))?;
    let name = json["streams"][0]["codec_name"].as_str().unwrap_or("none");
    if name != codec.ffprobe {
        return Err(format!("codec {name}, expected {}", codec.ffprobe));
    }
    let frames = json["frames"].as_array().map_or(0, Vec::len);
    count_ok(codec, frames, PROBE_SECS)?;
    Ok(format!("{name}, {frames} frames in {PROBE_SECS} s"))
}

/// `H:MM:SS.nnnnnnnnn` as seconds.
fn gst_time(t: &str) -> Option<f64> {
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Sessions the gateway has logged as ended by TEARDOWN.
fn teardowns(rig: &Rig) -> usize {
    rig.gateway
        .log_text()
        .lines()
        .filter(|l| l.contains("RTSP session ended") && l.contains("\"teardown\""))
        .count()
}

fn gstreamer(rig: &Rig, url: &str, protocols: &str, codec: &Codec) -> Cell {
    let frames = (codec.rate * PROBE_SECS).round() as usize;
    let teardowns_before = teardowns(rig);
    let pipeline = format!(
        "rtspsrc location={url} protocols={protocols} buffer-mode=none name=src src. ! {} ! fakesink silent=false num-buffers={frames}",
        codec.gst
    );
    let out = run_draining(
        Command::new("gst-launch-1.0")
            .arg("-v")
            .args(pipeline.split(' ')),
        Duration::from_secs(40),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut note = "";
    if !out.status.success() {
        // rtspsrc's own race; tolerated only once the gateway has seen the
        // session end by TEARDOWN, i.e. the client shut down properly.
        let torn_down = || {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                if teardowns(rig) > teardowns_before {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        if gst_pause_cancelled_at_shutdown(&stdout, &stderr) && torn_down() {
            note = " (rtspsrc's PAUSE cancelled by its own TEARDOWN at shutdown)";
        } else {
            return Err(format!(
                "gst-launch failed: {}\n{stderr}",
                stdout.lines().rev().take(5).collect::<Vec<_>>().join("\n"),
            ));
        }
    }
    let encoding = format!("encoding-name=(string){}", codec.gst_encoding);
    if !stdout.contains(&encoding) {
        return Err(format!("no {encoding} in the caps"));
    }
    // Buffers reaching the sink after the decoder, with their timestamps.
    let pts: Vec<f64> = stdout
        .lines()
        .filter(|l| l.contains("last-message = chain"))
        .filter_map(|l| l.split("pts: ").nth(1))
        .filter_map(|p| gst_time(p.split(',').next()?))
        .collect();
    if pts.len() != frames {
        return Err(format!("{} decoded buffers of {frames}", pts.len()));
    }
    let span = pts.last().copied().unwrap_or(0.0) - pts.first().copied().unwrap_or(0.0);
    span_ok(codec, frames, span)?;
    Ok(format!(
        "{}, {frames} decoded buffers over {span:.2} s{note}",
        codec.gst_encoding
    ))
}

fn retina(url: &str, udp: bool, codec: &Codec) -> Cell {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(40), retina_play(url, udp, codec))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    })
}

async fn retina_play(url: &str, udp: bool, codec: &Codec) -> Cell {
    use futures::StreamExt;
    use retina::client::{
        PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
        UdpTransportOptions,
    };
    use retina::codec::CodecItem;
    let url = url::Url::parse(url).map_err(|e| e.to_string())?;
    let mut session = retina::client::Session::describe(url, SessionOptions::default())
        .await
        .map_err(|e| format!("DESCRIBE: {e}"))?;
    let index = session
        .streams()
        .iter()
        .position(|s| s.media() == codec.media)
        .ok_or_else(|| format!("no {} stream", codec.media))?;
    let name = session.streams()[index].encoding_name().to_owned();
    if name != codec.retina {
        return Err(format!("encoding {name}, expected {}", codec.retina));
    }
    let transport = if udp {
        Transport::Udp(UdpTransportOptions::default())
    } else {
        Transport::Tcp(TcpTransportOptions::default())
    };
    session
        .setup(index, SetupOptions::default().transport(transport))
        .await
        .map_err(|e| format!("SETUP: {e}"))?;
    let mut demuxed = session
        .play(PlayOptions::default())
        .await
        .map_err(|e| format!("PLAY: {e}"))?
        .demuxed()
        .map_err(|e| format!("demuxer: {e}"))?;
    let want = (codec.rate * PROBE_SECS).round() as usize;
    let mut stamps = Vec::with_capacity(want);
    while stamps.len() < want {
        let item = match demuxed.next().await {
            Some(Ok(item)) => item,
            Some(Err(e)) => return Err(format!("after {} frames: {e}", stamps.len())),
            None => return Err(format!("stream ended after {} frames", stamps.len())),
        };
        match item {
            CodecItem::VideoFrame(f) if codec.media == "video" => {
                if f.data().is_empty() {
                    return Err("an empty video frame".into());
                }
                stamps.push(f.timestamp().elapsed_secs());
            }
            CodecItem::AudioFrame(f) if codec.media == "audio" => {
                if f.data().is_empty() {
                    return Err("an empty audio frame".into());
                }
                stamps.push(f.timestamp().elapsed_secs());
            }
            _ => {}
        }
    }
    let span = stamps.last().copied().unwrap_or(0.0) - stamps.first().copied().unwrap_or(0.0);
    span_ok(codec, want, span)?;
    Ok(format!("{name}, {want} frames over {span:.2} s"))
}

fn play(rig: &Rig, client: Client, url: &str, codec: &Codec) -> Cell {
    match client {
        Client::FfprobeTcp => ffprobe(url, "tcp", codec),
        Client::FfprobeUdp => ffprobe(url, "udp", codec),
        Client::GstTcp => gstreamer(rig, url, "tcp", codec),
        Client::GstUdp => gstreamer(rig, url, "udp", codec),
        Client::RetinaTcp => retina(url, false, codec),
        Client::RetinaUdp => retina(url, true, codec),
    }
}

/// Play every codec of `url` with every client; print the table and fail
/// on any failed cell.
fn matrix(rig: &Rig, url: &str, codecs: &[Codec]) {
    let mut rows = Vec::new();
    let mut failed = 0;
    for codec in codecs {
        for client in CLIENTS {
            if client.tool().is_some_and(|t| !have(t)) {
                rows.push(format!("{:6} {:12} SKIPPED", codec.label, client.name()));
                continue;
            }
            let cell = play(rig, client, url, codec);
            if cell.is_err() {
                failed += 1;
            }
            let text = match &cell {
                Ok(s) => format!("ok    {s}"),
                Err(e) => format!("FAIL  {e}"),
            };
            rows.push(format!("{:6} {:12} {text}", codec.label, client.name()));
        }
    }
    let table = rows.join("\n");
    println!("{url}\n{table}");
    assert!(
        failed == 0,
        "{failed} cells failed:\n{table}\n{}",
        rig.logs()
    );
}

fn gb_rig(camera_flags: &[&str]) -> Rig {
    let mut rig = Rig::start(Options {
        // Keep the source up between clients.
        idle_timeout: 10.0,
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, camera_flags);
    rig.wait_channel(DEVICE, CHANNEL);
    rig
}

#[test]
fn gb_h264_and_pcma_play_in_every_client() {
    let rig = gb_rig(&["--audio"]);
    matrix(&rig, &rig.url(DEVICE, CHANNEL), &[H264, PCMA_20MS]);
}

#[test]
fn gb_h265_plays_in_every_client() {
    let rig = gb_rig(&["--h265"]);
    matrix(&rig, &rig.url(DEVICE, CHANNEL), &[H265]);
}

#[test]
fn gb_aac_plays_in_every_client() {
    if !have("ffmpeg") {
        return;
    }
    // The camera embeds no AAC encoder: ffmpeg makes 4 s of tone it loops.
    let dir = tempdir::Dir::new();
    let tone = dir.path().join("tone.aac");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:sample_rate=16000")
        .args(["-t", "4", "-ac", "1", "-c:a", "aac", "-b:a", "32k"])
        .args(["-f", "adts"])
        .arg(&tone)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        println!("SKIPPED: ffmpeg cannot encode AAC here");
        return;
    }
    let rig = gb_rig(&["--aac", tone.to_str().unwrap()]);
    matrix(&rig, &rig.url(DEVICE, CHANNEL), &[AAC]);
}

#[test]
fn foscam_mjpeg_and_pcma_play_in_every_client() {
    let rig = Rig::start_foscam(
        Options {
            idle_timeout: 10.0,
            ..Options::default()
        },
        FOSCAM,
        &[],
        "",
    );
    rig.wait_foscam_state(FOSCAM, "online");
    matrix(&rig, &rig.foscam_url(FOSCAM), &[MJPEG, PCMA_40MS]);
}
