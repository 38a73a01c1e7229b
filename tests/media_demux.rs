//! Acceptance tests of the RTP/PS receive path against real captures
//! (`../shared/testdata`) and files muxed at test time by ffmpeg and
//! GStreamer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use camgate::media::frame::{Codec, Frame};
use camgate::media::h264;
use camgate::media::jitter::{JitterBuffer, JitterConfig, JitterStats};
use camgate::media::ps::{PsDemuxer, PsEvent, PsStats};
use camgate::media::rtp::RtpPacket;
use camgate::media::rtp_ps::RtpPsReceiver;

const HIK_FRAMES: usize = 1347;
const HIK_SSRC: u32 = 0x05F5_ED76;

fn frames(events: Vec<PsEvent>) -> Vec<Frame> {
    events
        .into_iter()
        .filter_map(|e| match e {
            PsEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn demux_file(data: &Bytes, chunk: usize) -> (Vec<Frame>, PsStats, PsDemuxer) {
    let mut d = PsDemuxer::new();
    let mut ev = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + chunk).min(data.len());
        d.push(data.slice(at..end), &mut ev);
        at = end;
    }
    d.flush(&mut ev);
    let stats = d.stats().clone();
    (frames(ev), stats, d)
}

/// Frame payload as comparable bytes: units joined with their lengths.
fn flat(f: &Frame) -> Vec<u8> {
    let mut v = Vec::with_capacity(f.len() + 4 * f.units.len());
    for u in &f.units {
        v.extend_from_slice(&(u.len() as u32).to_be_bytes());
        v.extend_from_slice(&u.to_vec());
    }
    v
}

fn load(name: &str) -> Option<Bytes> {
    let path = camgate::testdata::file(name)?;
    Some(Bytes::from(std::fs::read(path).expect("read capture")))
}

/// The capture has no length prefixes: a packet ends where the next RTP
/// header (V=2, PT 96, the session's SSRC at offset 8) begins.
fn split_rtp(data: &Bytes) -> Vec<Bytes> {
    let is_header = |at: usize| {
        data.get(at..at + 12).is_some_and(|h| {
            h[0] == 0x80
                && h[1] & 0x7f == 96
                && u32::from_be_bytes([h[8], h[9], h[10], h[11]]) == HIK_SSRC
        })
    };
    let mut starts = vec![0];
    let mut at = 12;
    while at + 12 <= data.len() {
        if is_header(at) {
            starts.push(at);
            at += 12;
        } else {
            at += 1;
        }
    }
    starts.push(data.len());
    starts.windows(2).map(|w| data.slice(w[0]..w[1])).collect()
}

#[test]
fn hik_ps_in_any_chunking() {
    let Some(data) = load("hik_h264_704x576.ps") else {
        return;
    };
    let (reference, stats, d) = demux_file(&data, 1400);
    assert_eq!(reference.len(), HIK_FRAMES);
    assert_eq!(
        stats.private_pes_skipped, 54,
        "0xBD PES skipped and counted"
    );
    assert_eq!(stats.total_errors(), 0, "{stats:?}");
    for w in reference.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, 3600);
    }
    let first = &reference[0];
    assert!(first.keyframe);
    assert_eq!(first.codec, Codec::H264);
    let types: Vec<u8> = first
        .units
        .iter()
        .map(|u| h264::nal_type(u.get(0).unwrap()))
        .collect();
    assert_eq!(&types[..2], [h264::NAL_SPS, h264::NAL_PPS]);
    assert!(types.contains(&h264::NAL_IDR));
    let sps = h264::parse_sps(&first.units[0].to_vec()).unwrap();
    assert_eq!((sps.width, sps.height), (704, 576));
    let (codec, video) = d.info().video.clone().unwrap();
    assert_eq!((codec, video.width, video.height), (Codec::H264, 704, 576));
    assert_eq!(
        reference.iter().filter(|f| f.keyframe).count(),
        54,
        "one IDR per GOP"
    );
    // Every keyframe carries its parameter sets.
    for f in reference.iter().filter(|f| f.keyframe) {
        assert_eq!(h264::nal_type(f.units[0].get(0).unwrap()), h264::NAL_SPS);
    }
    assert!(
        stats.bytes_copied as f64 / stats.payload_bytes as f64 <= 0.05,
        "{stats:?}"
    );

    for chunk in [7, data.len()] {
        let (got, stats, _) = demux_file(&data, chunk);
        assert_eq!(got.len(), HIK_FRAMES, "chunk {chunk}");
        assert_eq!(stats.private_pes_skipped, 54);
        for (a, b) in got.iter().zip(&reference) {
            assert_eq!((a.pts, a.keyframe), (b.pts, b.keyframe));
            assert_eq!(flat(a), flat(b), "chunk {chunk} pts {}", a.pts);
        }
    }
}

#[test]
fn hik_rtp_matches_ps() {
    let (Some(ps), Some(rtp)) = (load("hik_h264_704x576.ps"), load("hik_h264_704x576.rtp")) else {
        return;
    };
    let (reference, _, _) = demux_file(&ps, 1400);
    let packets = split_rtp(&rtp);
    assert_eq!(packets.len(), 3096);
    let mut rx = RtpPsReceiver::with_ssrc(HIK_SSRC);
    let mut ev = Vec::new();
    for p in &packets {
        rx.push_datagram(p.clone(), &mut ev).unwrap();
    }
    rx.flush(&mut ev);
    let got = frames(ev);
    // The .rtp dump runs 144 packets (53 frames) past the end of the .ps
    // file; its first 2,952 payloads are the .ps byte for byte.
    assert_eq!(got.len(), HIK_FRAMES + 53);
    for (a, b) in got.iter().zip(&reference) {
        assert_eq!((a.pts, a.dts, a.keyframe), (b.pts, b.dts, b.keyframe));
        assert_eq!(flat(a), flat(b), "pts {}", a.pts);
    }
    for w in got.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, 3600);
    }
    let s = rx.stats();
    assert_eq!((s.packets, s.lost, s.rtp_errors), (3096, 0, 0));
    let ratio = rx.bytes_copied() as f64 / rx.demux_stats().payload_bytes as f64;
    eprintln!(
        "bytes copied {} of {} payload bytes ({ratio:.4})",
        rx.bytes_copied(),
        rx.demux_stats().payload_bytes
    );
    assert!(ratio <= 0.05, "copied ratio {ratio}");
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What an impaired run emitted.
struct Impaired {
    /// PTS of every frame emitted, in order.
    pts: Vec<i64>,
    lost: u64,
    jitter: Option<JitterStats>,
}

/// Feeds the capture with `drop_percent` of its packets dropped and the
/// rest shuffled inside windows of `shuffle_window`, through a reorder
/// buffer when `reorder` is set, and checks that nothing corrupt comes out:
/// after each loss the first video frame is a keyframe, and every frame
/// emitted is byte-identical to the clean decode's frame with the same PTS.
/// Also returns which frames a perfect receiver would emit: those whose
/// packets, and all packets since their GOP's keyframe began, arrived.
fn impaired(
    shuffle_window: usize,
    drop_percent: u64,
    seed: u64,
    reorder: bool,
) -> (Impaired, Vec<i64>) {
    let rtp = load("hik_h264_704x576.rtp").expect("checked by caller");
    let packets = split_rtp(&rtp);
    // Clean run; remember which packets each frame spans (from the packet
    // after the previous frame came out to the one that completed it).
    let mut clean_rx = RtpPsReceiver::new();
    let mut clean = std::collections::HashMap::new();
    let mut spans = Vec::new();
    let mut first_packet = 0;
    let mut ev = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        clean_rx.push_datagram(p.clone(), &mut ev).unwrap();
        if i + 1 == packets.len() {
            clean_rx.flush(&mut ev);
        }
        for f in frames(std::mem::take(&mut ev)) {
            spans.push((f.pts, f.keyframe, first_packet..=i));
            clean.insert(f.pts, flat(&f));
            first_packet = i + 1;
        }
    }

    let mut rng = XorShift(seed);
    let kept: Vec<bool> = packets
        .iter()
        .map(|_| rng.next() % 100 >= drop_percent)
        .collect();
    let mut expected = Vec::new();
    let mut gop_intact = false;
    for (pts, key, span) in &spans {
        let intact = span.clone().all(|i| kept[i]);
        gop_intact = if *key { intact } else { gop_intact && intact };
        if gop_intact {
            expected.push(*pts);
        }
    }
    let mut order: Vec<Bytes> = packets
        .iter()
        .zip(&kept)
        .filter(|(_, k)| **k)
        .map(|(p, _)| p.clone())
        .collect();
    let mut shuffle_rng = XorShift(seed ^ 0x9e37_79b9_7f4a_7c15);
    if shuffle_window > 1 {
        for window in order.chunks_mut(shuffle_window) {
            for i in (1..window.len()).rev() {
                let j = (shuffle_rng.next() % (i as u64 + 1)) as usize;
                window.swap(i, j);
            }
        }
    }

    let mut rx = RtpPsReceiver::new();
    let mut jitter = reorder.then(|| JitterBuffer::new(JitterConfig::default()));
    let t0 = Instant::now();
    let mut need_key = false;
    let mut emitted = Vec::new();
    let mut ordered = Vec::new();
    for (i, p) in order.iter().enumerate() {
        let pkt = RtpPacket::parse(p.clone()).unwrap();
        // One packet every 200 µs: the depth, not the delay, bounds waits.
        let now = t0 + Duration::from_micros(200 * i as u64);
        match jitter.as_mut() {
            Some(j) => {
                j.push(pkt, now, &mut ordered);
                j.poll(now, &mut ordered);
                if i + 1 == order.len() {
                    j.flush(&mut ordered);
                }
            }
            None => ordered.push(pkt),
        }
        for pkt in ordered.drain(..) {
            let lost_before = rx.stats().lost;
            ev.clear();
            rx.push(pkt, &mut ev);
            if rx.stats().lost > lost_before {
                need_key = true;
            }
            for f in frames(std::mem::take(&mut ev)) {
                if need_key {
                    assert!(f.keyframe, "frame after a loss is not a keyframe");
                    need_key = false;
                }
                assert_eq!(
                    clean.get(&f.pts),
                    Some(&flat(&f)),
                    "corrupt frame at {}",
                    f.pts
                );
                emitted.push(f.pts);
            }
        }
    }
    rx.flush(&mut ev);
    emitted.extend(frames(ev).iter().map(|f| f.pts));
    let out = Impaired {
        pts: emitted,
        lost: rx.stats().lost,
        jitter: jitter.map(|j| j.stats().clone()),
    };
    (out, expected)
}

#[test]
fn hik_rtp_shuffled_and_dropped() {
    if camgate::testdata::file("hik_h264_704x576.rtp").is_none() {
        return;
    }
    let seed = 0x2545_F491_4F6C_DD1D;
    // Dropped only, in order: the reference for what loss alone costs.
    let (in_order, expected) = impaired(1, 2, seed, false);
    let dropped = 3096 - in_order.lost as usize;
    eprintln!(
        "dropped only: {} frames, {} lost",
        in_order.pts.len(),
        in_order.lost
    );
    assert!(in_order.lost > 30, "losses reported");
    assert_eq!(in_order.pts, expected, "resumes at each next keyframe");

    // Same drops, shuffled within 10 packets, through the reorder buffer:
    // exactly the same frames come out.
    let (reordered, expected2) = impaired(10, 2, seed, true);
    let j = reordered.jitter.clone().unwrap();
    eprintln!(
        "shuffled+dropped: {} frames, {} lost, {j:?}",
        reordered.pts.len(),
        reordered.lost
    );
    assert_eq!(expected2, expected);
    assert!(j.reordered > 500, "the shuffle reordered packets: {j:?}");
    assert_eq!(j.lost, in_order.lost, "{j:?}");
    assert_eq!(reordered.lost, in_order.lost);
    assert_eq!((j.late, j.duplicates), (0, 0));
    assert_eq!(j.released as usize, dropped);
    assert_eq!(reordered.pts, in_order.pts);
    assert!(reordered.pts.len() > 200, "recovers at keyframes");

    // Without the reorder buffer the shuffle ruins nearly every frame; it
    // still never panics nor emits a corrupt frame.
    let (raw, _) = impaired(10, 2, seed, false);
    eprintln!("shuffled, no reorder buffer: {} frames", raw.pts.len());
    assert!(raw.pts.len() < reordered.pts.len());
}

// ---- files muxed by other tools at test time ----------------------------

fn tool(name: &str) -> bool {
    let ok = Command::new(name)
        .arg(if name == "ffmpeg" {
            "-version"
        } else {
            "--version"
        })
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: {name} not installed");
    }
    ok
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("camgate-media-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> bool {
    match cmd.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "SKIPPED: {:?} failed: {}",
                cmd.get_program(),
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("SKIPPED: {:?}: {e}", cmd.get_program());
            false
        }
    }
}

fn check_file(path: &Path, codec: Codec, frames_expected: usize, expect_psm: bool) {
    let data = Bytes::from(std::fs::read(path).unwrap());
    for chunk in [1316, 5] {
        let (got, stats, d) = demux_file(&data, chunk);
        assert_eq!(
            got.len(),
            frames_expected,
            "{path:?} chunk {chunk}: {stats:?}"
        );
        assert!(got.iter().all(|f| f.codec == codec));
        assert!(got[0].keyframe);
        assert_eq!(stats.psms > 0, expect_psm);
        assert_eq!(stats.total_errors(), 0, "{stats:?}");
        let (c, v) = d.info().video.clone().unwrap();
        assert_eq!((c, v.width, v.height), (codec, 320, 240));
        if codec == Codec::H265 {
            assert!(v.vps.is_some());
        }
        assert!(v.sps.is_some() && v.pps.is_some());
    }
}

fn ffmpeg_ps(codec_arg: &str, tag: &str) -> Option<PathBuf> {
    if !tool("ffmpeg") {
        return None;
    }
    let out = temp_dir(tag).join("out.ps");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25")
        .args(["-frames:v", "50", "-c:v", codec_arg]);
    if codec_arg == "libx265" {
        cmd.args(["-x265-params", "log-level=error"]);
    }
    cmd.args(["-f", "mpeg"]).arg(&out);
    run(&mut cmd).then_some(out)
}

#[test]
fn ffmpeg_h264_without_psm_on_0xe2() {
    let Some(path) = ffmpeg_ps("libx264", "h264") else {
        return;
    };
    check_file(&path, Codec::H264, 50, false);
}

#[test]
fn ffmpeg_h265_without_psm() {
    let Some(path) = ffmpeg_ps("libx265", "h265") else {
        return;
    };
    check_file(&path, Codec::H265, 50, false);
}

#[test]
fn gstreamer_mpegpsmux_h264_with_psm() {
    if !tool("gst-launch-1.0") {
        return;
    }
    let out = temp_dir("gst").join("g.ps");
    let location = format!("location={}", out.display());
    let mut ok = false;
    for encoder in ["x264enc", "openh264enc"] {
        let mut cmd = Command::new("gst-launch-1.0");
        cmd.args(["-q", "videotestsrc", "num-buffers=50", "!"])
            .args(["video/x-raw,width=320,height=240,framerate=25/1", "!"])
            .args([encoder, "!", "h264parse", "!", "mpegpsmux", "!", "filesink"])
            .arg(&location);
        if run(&mut cmd) {
            ok = true;
            break;
        }
    }
    if !ok {
        eprintln!("SKIPPED: no GStreamer H.264 encoder with mpegpsmux");
        return;
    }
    check_file(&out, Codec::H264, 50, true);
}
