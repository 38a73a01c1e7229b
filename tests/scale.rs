//! Issue 17: memory per stream stays small, asserted at a small N through
//! `scripts/scale` (memory, unlike time, is stable enough to assert).
//!
//! 20 simulated GB28181 devices replay the Hikvision capture (~0.5 Mbit/s)
//! into the gateway binary, each read by one RTSP viewer; after 60 s the
//! gateway's RSS above its idle RSS, per stream, must be under the bound,
//! and every viewer must have received packets. Runs the debug binary
//! under test (allocation sizes are the same as release; task futures are
//! larger, so this is an upper bound).

mod common;

use std::path::PathBuf;
use std::process::Command;

/// Per-stream bound at N = 20 for the debug build. Fixed costs weigh more
/// at small N (the RTSP server's shared fragment cache of 256 frames is 13
/// frames per stream here, 0.6 at N = 400): this code measures ~340 KB
/// here (debug) and ~230 KB at N = 100-400 (release); the code before it
/// measured ~400 KB here, and the 1 MiB receive blocks before that ~2 MB
/// at N = 25 (issue 17). Steady-state figures per N are in README.
const MAX_KB_PER_STREAM: u64 = 450;

#[test]
fn twenty_streams_stay_under_the_per_stream_memory_bound() {
    let testdata = std::env::var_os("CAMGATE_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"));
    if !testdata.join("hik_h264_704x576.rtp").exists() {
        eprintln!("skipped: no hik_h264_704x576.rtp in {}", testdata.display());
        return;
    }
    // SIP, RTSP, HTTP, 62 RTP ports and the shared one: out of the ephemeral range, where
    // a simulated camera's socket could take an RTP port before the
    // gateway binds it.
    let ports = common::free_ports(66);
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/scale"))
        .args([
            "-b",
            env!("CARGO_BIN_EXE_camgate"),
            "-d",
            "60",
            "--max-kb-per-stream",
            &MAX_KB_PER_STREAM.to_string(),
            "20",
        ])
        .env("CAMGATE_TESTDATA", &testdata)
        .env("SCALE_SIP_PORT", ports.to_string())
        .env("SCALE_RTSP_PORT", (ports + 1).to_string())
        .env("SCALE_HTTP_PORT", (ports + 2).to_string())
        .env("SCALE_RTP_PORT_MIN", (ports + 3).to_string())
        .env("SCALE_RTP_PORTS", "62")
        .output()
        .expect("run scripts/scale");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    // The last table row: every viewer played and got the stream.
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("| 20 |"))
        .expect("a sample row");
    let cells: Vec<&str> = last.split('|').map(str::trim).collect();
    let per_stream: u64 = cells[5].parse().expect("KB per stream");
    let min_packets: u64 = cells[7].split('/').next().unwrap().trim().parse().unwrap();
    assert!(
        min_packets > 2_000,
        "a viewer got only {min_packets} packets in 60 s: {last}"
    );
    assert_eq!(cells[8], "0", "viewers that never played: {last}");
    assert!(
        per_stream <= MAX_KB_PER_STREAM,
        "{per_stream} KB per stream: {last}"
    );
    assert!(out.status.success(), "scripts/scale failed: {stderr}");
}
