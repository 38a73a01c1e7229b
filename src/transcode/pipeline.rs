//! One transcode: source frames in, H.264 frames out, on threads of its
//! own so decoding and encoding never hold up a tokio worker.
//!
//! ```text
//! MJPEG: push ─► queue ─► [mjpeg thread: zune-jpeg → I420 → OpenH264] ─► Output
//! H.265: push ─► queue ─► [writer thread] ─► ffmpeg stdin
//!                 ffmpeg stdout ─► [reader thread: YUV4MPEG2 → I420 → OpenH264] ─► Output
//!                 ffmpeg stderr ─► [log thread: each line one counted decode error]
//! ```
//!
//! The queue is short ([`QUEUE_FRAMES`]): when the transcoder falls behind,
//! `push` drops frames (counted) and resumes at the next key frame, so the
//! delay a slow transcoder adds stays bounded instead of growing into the
//! hub's long viewer queue. No sockets and no runtime: tests and benches
//! drive it with frames directly.
//!
//! H.265 goes to the decoder as Annex B (ITU-T H.265 Annex B) with access
//! unit delimiters moved to the *end* of each access unit: FFmpeg's parser
//! only knows an access unit is complete when the next one starts, and a
//! trailing AUD says so at once, which takes the decoder's delay from one
//! frame to about a millisecond. The decoder's pictures come out in
//! presentation order; each takes the smallest pending source timestamp
//! (which also holds for streams with B-frames).

use std::io::{BufRead, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tracing::{debug, warn};

use super::cpu::{CpuMeter, CpuSource};
use super::error::{TranscodeError, panic_message};
use super::h264_encoder::H264Encoder;
use super::mjpeg::MjpegDecoder;
use super::picture::Picture;
use super::y4m::Y4mParser;
use super::{PictureLimits, TranscodeConfig, codec_label};
use crate::media::frame::{Codec, Frame, VideoParams};
use crate::media::h265;
use crate::metrics::{self, label};

/// Source frames waiting for the transcoder before new ones are dropped.
pub const QUEUE_FRAMES: usize = 4;
/// Failed frames in a row after which the transcode gives up.
const MAX_CONSECUTIVE_FAILURES: u32 = 50;
/// Source timestamps kept for pictures still inside the decoder. The
/// writer blocks on a full pipe, so only a pipe's worth of access units
/// (a few dozen) is ever in flight; more pending means the decoder dropped
/// pictures, and the oldest are forgotten.
const MAX_PENDING_PTS: usize = 512;
/// Decoder error lines kept for the log line when it ends.
const STDERR_TAIL: usize = 4;
/// Longest decoder error line kept.
const STDERR_LINE: usize = 300;
/// An H.265 access unit delimiter (NAL type 35, pic_type 2: any slice).
const TRAILING_AUD: [u8; 7] = [0, 0, 0, 1, 0x46, 0x01, 0x50];

/// Where a transcoder's results go; called on its threads.
pub trait Output: Send + 'static {
    /// One H.264 frame, with the output's size and parameter sets.
    fn frame(&mut self, frame: Frame, params: &VideoParams);
    /// The transcode ended by itself and produces nothing more. Not called
    /// when it is stopped by dropping the [`Transcoder`].
    fn failed(&mut self, error: TranscodeError);
}

/// What became of a pushed frame.
#[derive(Debug)]
pub enum Pushed {
    Queued,
    /// The queue is full: here is the frame back, to retry or to give up
    /// with [`Transcoder::drop_frame`].
    Full(Arc<Frame>),
    /// Not the codec transcoded, or skipped while waiting for a key frame.
    Skipped,
    /// The transcode has ended.
    Ended,
}

/// Asks a running transcoder for an IDR frame, from anywhere.
#[derive(Clone)]
pub struct KeyframeRequester(Arc<Control>);

impl KeyframeRequester {
    pub fn request(&self) {
        self.0.keyframe.store(true, Ordering::Relaxed);
    }
}

/// State shared between the handle and the threads.
#[derive(Default)]
struct Control {
    stopping: AtomicBool,
    keyframe: AtomicBool,
    child: Mutex<Option<Child>>,
}

impl Control {
    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kill_child(&self) {
        if let Some(child) = self.child().as_mut() {
            let _ = child.kill();
        }
    }
}

/// A running transcode; dropping it stops the threads and the decoder.
pub struct Transcoder {
    codec: Codec,
    input: SyncSender<Arc<Frame>>,
    control: Arc<Control>,
    awaiting_keyframe: bool,
}

impl Transcoder {
    /// Start transcoding `codec` (H.265 or MJPEG) into `output`.
    pub fn start(
        codec: Codec,
        config: &TranscodeConfig,
        output: impl Output,
    ) -> Result<Self, TranscodeError> {
        if !matches!(codec, Codec::H265 | Codec::Mjpeg) {
            return Err(TranscodeError::Unsupported(codec));
        }
        let (input, queue) = sync_channel(QUEUE_FRAMES);
        let control = Arc::new(Control::default());
        let stage = EncodeStage::new(codec, config, Box::new(output), control.clone());
        match codec {
            Codec::Mjpeg => {
                let decoder = MjpegDecoder::new(config.limits);
                spawn("transcode-mjpeg", move || {
                    mjpeg_thread(queue, decoder, stage)
                })?;
            }
            _ => start_hevc(config, queue, stage, &control)?,
        }
        let m = metrics::get();
        m.transcodes_active.inc();
        m.transcode_starts
            .get_or_create(&label("codec", codec_label(codec)))
            .inc();
        Ok(Self {
            codec,
            input,
            control,
            awaiting_keyframe: true,
        })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Hand over a source frame without waiting. Frames of other codecs
    /// are ignored, and so is everything up to the first key frame and up
    /// to the next one after a [`drop_frame`](Self::drop_frame).
    pub fn push(&mut self, frame: Arc<Frame>) -> Pushed {
        if frame.codec != self.codec {
            return Pushed::Skipped;
        }
        if self.awaiting_keyframe && !frame.keyframe {
            self.count_dropped();
            return Pushed::Skipped;
        }
        match self.input.try_send(frame) {
            Ok(()) => {
                self.awaiting_keyframe = false;
                metrics::get()
                    .transcode_frames_in
                    .get_or_create(&label("codec", codec_label(self.codec)))
                    .inc();
                Pushed::Queued
            }
            Err(TrySendError::Full(frame)) => Pushed::Full(frame),
            Err(TrySendError::Disconnected(_)) => Pushed::Ended,
        }
    }

    /// Give up on a frame [`push`](Self::push) returned as `Full`: it is
    /// counted as dropped and the transcoder resumes at the next key frame
    /// (decoding from a frame whose reference is missing would smear).
    pub fn drop_frame(&mut self) {
        self.awaiting_keyframe = true;
        self.count_dropped();
    }

    fn count_dropped(&self) {
        metrics::get()
            .transcode_frames_dropped
            .get_or_create(&label("codec", codec_label(self.codec)))
            .inc();
    }

    /// Make the next output frame an IDR (a browser reported loss).
    pub fn request_keyframe(&self) {
        self.keyframes().request();
    }

    /// A handle for [`request_keyframe`](Self::request_keyframe) that can
    /// live apart from the transcoder.
    pub fn keyframes(&self) -> KeyframeRequester {
        KeyframeRequester(self.control.clone())
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        self.control.stopping.store(true, Ordering::SeqCst);
        // The reader thread reaps it; killing does not block.
        self.control.kill_child();
        metrics::get().transcodes_active.dec();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), TranscodeError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Per-frame work is already guarded; this is the last line, so
            // a bug elsewhere on the thread is logged and counted too.
            if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
                let e = TranscodeError::Panic(panic_message(p.as_ref()));
                count_error(&e);
                warn!(error = %e, "transcode thread ended");
            }
        })
        .map(drop)
        .map_err(|e| TranscodeError::Thread(e.to_string()))
}

/// Encoding and delivery, shared by both decoders; lives on the thread
/// that has the pictures.
struct EncodeStage {
    codec: &'static str,
    encoder: H264Encoder,
    output: Box<dyn Output>,
    control: Arc<Control>,
    cpu: Option<CpuMeter>,
    failures: u32,
    last_pts: Option<i64>,
}

impl EncodeStage {
    fn new(
        codec: Codec,
        config: &TranscodeConfig,
        output: Box<dyn Output>,
        control: Arc<Control>,
    ) -> Self {
        Self {
            codec: codec_label(codec),
            encoder: H264Encoder::new(config.encoder),
            output,
            control,
            cpu: None,
            failures: 0,
            last_pts: None,
        }
    }

    fn stopping(&self) -> bool {
        self.control.stopping.load(Ordering::SeqCst)
    }

    /// Meter the CPU of the thread this is first called on.
    fn meter_this_thread(&mut self) {
        let counter = metrics::get()
            .transcode_cpu_seconds
            .get_or_create(&label("codec", self.codec))
            .clone();
        self.cpu = Some(CpuMeter::new(CpuSource::CurrentThread, counter));
    }

    /// Encode one picture; `Err` only when the transcode must end.
    fn encode(&mut self, picture: &Picture, pts: i64) -> Result<(), TranscodeError> {
        // Timestamps must rise for the browser's jitter buffer, even when a
        // decoder drops a picture and the mapping shifts.
        let pts = match self.last_pts {
            Some(last) if pts <= last => last + 1,
            _ => pts,
        };
        self.last_pts = Some(pts);
        if self.control.keyframe.swap(false, Ordering::Relaxed) {
            self.encoder.request_keyframe();
        }
        let encoder = &mut self.encoder;
        let result = catch_unwind(AssertUnwindSafe(|| encoder.encode(picture, pts)))
            .unwrap_or_else(|p| Err(TranscodeError::Panic(panic_message(p.as_ref()))));
        match result {
            Ok(Some(frame)) => {
                self.failures = 0;
                metrics::get()
                    .transcode_frames_out
                    .get_or_create(&label("codec", self.codec))
                    .inc();
                self.output.frame(frame, self.encoder.params());
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => self.frame_failed(e),
        }
    }

    /// Count a frame that could not be transcoded; too many in a row end
    /// the transcode.
    fn frame_failed(&mut self, e: TranscodeError) -> Result<(), TranscodeError> {
        count_error(&e);
        self.failures += 1;
        if self.failures == 1 {
            warn!(codec = self.codec, error = %e, "transcode: frame lost");
        } else {
            debug!(codec = self.codec, error = %e, "transcode: frame lost");
        }
        if matches!(e, TranscodeError::Panic(_)) || self.failures >= MAX_CONSECUTIVE_FAILURES {
            return Err(TranscodeError::Persistent(self.failures));
        }
        Ok(())
    }

    fn sample_cpu(&mut self) {
        if let Some(cpu) = self.cpu.as_mut() {
            cpu.sample_if_due();
        }
    }

    /// The transcode is over: meter the last CPU and, unless it was
    /// stopped on purpose, report why.
    fn finish(mut self, error: Option<TranscodeError>) {
        if let Some(cpu) = self.cpu.as_mut() {
            cpu.sample();
        }
        if let Some(e) = error
            && !self.stopping()
        {
            if !matches!(e, TranscodeError::Persistent(_)) {
                count_error(&e);
            }
            warn!(codec = self.codec, error = %e, "transcode ended");
            self.output.failed(e);
        }
    }
}

fn count_error(e: &TranscodeError) {
    metrics::get()
        .transcode_errors
        .get_or_create(&label("kind", e.kind()))
        .inc();
}

fn mjpeg_thread(queue: Receiver<Arc<Frame>>, mut decoder: MjpegDecoder, mut stage: EncodeStage) {
    stage.meter_this_thread();
    let mut error = None;
    while let Ok(frame) = queue.recv() {
        if stage.stopping() {
            break;
        }
        let Some(unit) = frame.units.first() else {
            continue;
        };
        let jpeg = unit.to_bytes();
        let outcome = match decoder.decode(&jpeg) {
            Ok(picture) => stage.encode(&picture, frame.pts),
            Err(e) => stage.frame_failed(e),
        };
        if let Err(e) = outcome {
            error = Some(e);
            break;
        }
        stage.sample_cpu();
    }
    stage.finish(error);
}

/// Source timestamps of access units inside the decoder.
type PendingPts = Arc<Mutex<Vec<i64>>>;

fn start_hevc(
    config: &TranscodeConfig,
    queue: Receiver<Arc<Frame>>,
    stage: EncodeStage,
    control: &Arc<Control>,
) -> Result<(), TranscodeError> {
    let mut child = Command::new(&config.ffmpeg)
        .args(decoder_args(config.limits))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TranscodeError::DecoderStart {
            program: config.ffmpeg.display().to_string(),
            reason: e.to_string(),
        })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(TranscodeError::DecoderStart {
            program: config.ffmpeg.display().to_string(),
            reason: "no pipes".into(),
        });
    };
    let pid = child.id();
    *control.child() = Some(child);
    let pending: PendingPts = Arc::default();
    let tail: Arc<Mutex<Vec<String>>> = Arc::default();
    let limits = config.limits;
    let started = {
        let pending = pending.clone();
        spawn("transcode-hevc-in", move || {
            hevc_writer(queue, stdin, pending)
        })
    }
    .and_then(|()| {
        let tail = tail.clone();
        spawn("transcode-hevc-log", move || hevc_stderr(stderr, tail))
    })
    .and_then(|()| {
        let parser = Y4mParser::new(limits);
        spawn("transcode-hevc-out", move || {
            hevc_reader(stdout, parser, stage, pending, tail, pid)
        })
    });
    if started.is_err() {
        control.kill_child();
        if let Some(mut child) = control.child().take() {
            let _ = child.wait();
        }
    }
    started
}

/// FFmpeg reading H.265 Annex B on stdin and writing 8-bit 4:2:0
/// YUV4MPEG2 on stdout, one picture per decoded frame, with as little
/// buffering as it allows: no probing beyond the first packet, one
/// decoding thread (frame threads would each hold a frame back), and no
/// frame-rate conversion. `-max_pixels` makes the decoder itself refuse a
/// bitstream that claims a picture over the limits before allocating it.
pub fn decoder_args(limits: PictureLimits) -> Vec<String> {
    let max_pixels = limits
        .max_width
        .saturating_mul(limits.max_height)
        .min(i32::MAX as usize);
    let args = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-threads",
        "1",
        "-max_pixels",
        &max_pixels.to_string(),
        "-probesize",
        "32",
        "-analyzeduration",
        "0",
        "-f",
        "hevc",
        "-i",
        "pipe:0",
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "yuv4mpegpipe",
        "pipe:1",
    ];
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Annex B of one H.265 access unit, delimiter last (see the module doc).
pub fn hevc_annex_b(frame: &Frame, out: &mut Vec<u8>) {
    out.clear();
    for unit in &frame.units {
        if unit.get(0).map(h265::nal_type) == Some(35) {
            continue;
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        for part in unit.parts() {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(&TRAILING_AUD);
}

fn hevc_writer(queue: Receiver<Arc<Frame>>, mut stdin: ChildStdin, pending: PendingPts) {
    let mut buffer = Vec::new();
    while let Ok(frame) = queue.recv() {
        hevc_annex_b(&frame, &mut buffer);
        {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() >= MAX_PENDING_PTS {
                // The decoder dropped pictures; forget the oldest.
                if let Some(oldest) = p.iter().enumerate().min_by_key(|(_, v)| **v) {
                    let i = oldest.0;
                    p.swap_remove(i);
                }
            }
            p.push(frame.pts);
        }
        // A closed pipe means the decoder is gone; the reader reports it.
        if stdin.write_all(&buffer).is_err() {
            break;
        }
    }
}

fn hevc_stderr(stderr: std::process::ChildStderr, tail: Arc<Mutex<Vec<String>>>) {
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        // Bounded: a line longer than this is cut, the rest read as more
        // lines.
        match (&mut reader)
            .take(STDERR_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim().to_owned();
        if text.is_empty() {
            continue;
        }
        metrics::get()
            .transcode_errors
            .get_or_create(&label("kind", "hevc_decode"))
            .inc();
        if first {
            warn!(decoder = %text, "transcode: H.265 decode error");
            first = false;
        } else {
            debug!(decoder = %text, "transcode: H.265 decode error");
        }
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == STDERR_TAIL {
            t.remove(0);
        }
        t.push(text);
    }
}

fn hevc_reader(
    mut stdout: ChildStdout,
    mut parser: Y4mParser,
    mut stage: EncodeStage,
    pending: PendingPts,
    tail: Arc<Mutex<Vec<String>>>,
    pid: u32,
) {
    stage.meter_this_thread();
    let counter = metrics::get()
        .transcode_cpu_seconds
        .get_or_create(&label("codec", stage.codec))
        .clone();
    let mut decoder_cpu = CpuMeter::new(CpuSource::Process(pid), counter);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut pictures = Vec::new();
    let error = loop {
        let n = match stdout.read(&mut buffer) {
            Ok(0) | Err(_) => break None,
            Ok(n) => n,
        };
        if let Err(e) = parser.push(&buffer[..n], &mut pictures) {
            break Some(TranscodeError::DecoderOutput(e.to_string()));
        }
        let mut failed = None;
        for picture in pictures.drain(..) {
            let pts = {
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                let smallest = p
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, v)| **v)
                    .map(|(i, _)| i);
                smallest.map(|i| p.swap_remove(i))
            };
            // A picture with no pending access unit cannot happen with a
            // sane decoder; the stage keeps timestamps rising regardless.
            let pts = pts.unwrap_or(i64::MIN);
            if let Err(e) = stage.encode(&picture, pts) {
                failed = Some(e);
                break;
            }
        }
        if failed.is_some() {
            break failed;
        }
        stage.sample_cpu();
        decoder_cpu.sample_if_due();
    };
    // Read the decoder's CPU before reaping it (a zombie keeps its times).
    decoder_cpu.sample();
    let status = reap(&stage.control);
    let error = error.or_else(|| {
        let tail = tail.lock().unwrap_or_else(|e| e.into_inner()).join(" | ");
        Some(TranscodeError::DecoderExit(format!(
            "{}{}{}",
            status.map_or_else(|| "killed".to_owned(), |s| s.to_string()),
            if tail.is_empty() { "" } else { ": " },
            tail
        )))
    });
    stage.finish(error);
}

/// Kill the decoder if it still runs and collect its exit status.
fn reap(control: &Control) -> Option<std::process::ExitStatus> {
    let mut child = control.child().take()?;
    // Its stdout closed, so it is exiting; give it a moment before forcing.
    for _ in 0..20 {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::Chunks;
    use crate::sim::clip::Clip;
    use crate::sim::foscam_camera::{DEMO_MJPEG, split_jpegs};
    use bytes::Bytes;
    use std::sync::mpsc;
    use std::time::Duration;

    enum Out {
        Frame(Box<Frame>),
        Failed(TranscodeError),
    }

    struct Collect(mpsc::Sender<Out>);

    impl Output for Collect {
        fn frame(&mut self, frame: Frame, _: &VideoParams) {
            let _ = self.0.send(Out::Frame(Box::new(frame)));
        }
        fn failed(&mut self, error: TranscodeError) {
            let _ = self.0.send(Out::Failed(error));
        }
    }

    fn start(codec: Codec, config: &TranscodeConfig) -> (Transcoder, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel();
        (Transcoder::start(codec, config, Collect(tx)).unwrap(), rx)
    }

    /// Push, waiting while the queue is full.
    fn push(t: &mut Transcoder, mut frame: Arc<Frame>) {
        loop {
            match t.push(frame) {
                Pushed::Full(back) => {
                    frame = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => {
                    assert!(matches!(other, Pushed::Queued), "{other:?}");
                    return;
                }
            }
        }
    }

    fn collect(rx: &mpsc::Receiver<Out>, count: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        while frames.len() < count {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Out::Frame(f)) => frames.push(*f),
                Ok(Out::Failed(e)) => panic!("transcode failed: {e}"),
                Err(e) => panic!("after {} frames: {e}", frames.len()),
            }
        }
        frames
    }

    /// Decode H.264 frames with OpenH264's decoder: the size of the last
    /// picture and how many pictures came out.
    fn decode_h264(frames: &[Frame]) -> ((usize, usize), usize) {
        use openh264::formats::YUVSource;
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let (mut size, mut pictures) = ((0, 0), 0);
        for f in frames {
            let mut annex_b = Vec::new();
            for unit in &f.units {
                annex_b.extend_from_slice(&[0, 0, 0, 1]);
                annex_b.extend_from_slice(&unit.to_vec());
            }
            if let Some(yuv) = decoder.decode(&annex_b).unwrap() {
                size = yuv.dimensions();
                pictures += 1;
            }
        }
        (size, pictures)
    }

    fn jpeg_frame(jpeg: Bytes, pts: i64) -> Arc<Frame> {
        Arc::new(Frame {
            codec: Codec::Mjpeg,
            pts,
            dts: pts,
            keyframe: true,
            units: [Chunks::from(jpeg)].into_iter().collect(),
        })
    }

    #[test]
    fn mjpeg_frames_in_h264_frames_out_one_for_one() {
        let (mut t, rx) = start(Codec::Mjpeg, &TranscodeConfig::default());
        let jpegs = split_jpegs(DEMO_MJPEG);
        for (i, j) in jpegs.iter().enumerate() {
            push(&mut t, jpeg_frame(j.clone(), i as i64 * 9000));
            // One undecodable JPEG in the middle costs only itself.
            if i == 5 {
                push(
                    &mut t,
                    jpeg_frame(Bytes::from_static(b"\xff\xd8garbage"), 46_000),
                );
            }
        }
        let frames = collect(&rx, jpegs.len());
        let pts: Vec<i64> = frames.iter().map(|f| f.pts).collect();
        let want: Vec<i64> = (0..jpegs.len() as i64).map(|i| i * 9000).collect();
        assert_eq!(pts, want);
        assert!(frames[0].keyframe);
        assert!(frames.iter().all(|f| f.codec == Codec::H264));
        assert_eq!(decode_h264(&frames), ((640, 360), jpegs.len()));
    }

    #[test]
    fn hevc_frames_in_h264_frames_out_with_their_timestamps() {
        if !crate::transcode::tool_available("ffmpeg") {
            eprintln!("SKIPPED: ffmpeg not installed");
            return;
        }
        let clip = Clip::demo_h265();
        let (mut t, rx) = start(Codec::H265, &TranscodeConfig::default());
        // Frames before the first key frame are skipped by the transcoder.
        let not_key = clip.units().iter().find(|u| !u.keyframe).unwrap();
        assert!(matches!(t.push(hevc_frame(not_key, 0)), Pushed::Skipped));
        for (i, unit) in clip.units().iter().enumerate() {
            push(&mut t, hevc_frame(unit, 90_000 + i as i64 * 3600));
        }
        let frames = collect(&rx, clip.len());
        let pts: Vec<i64> = frames.iter().map(|f| f.pts).collect();
        let want: Vec<i64> = (0..clip.len() as i64).map(|i| 90_000 + i * 3600).collect();
        assert_eq!(pts, want);
        assert_eq!(decode_h264(&frames), ((640, 360), clip.len()));
        // Stopping is not a failure.
        drop(t);
        assert!(rx.recv_timeout(Duration::from_secs(2)).is_err());
    }

    /// Corrupt access units in the middle of a stream cost pictures, not
    /// the transcode: the decoder conceals or drops them and picks up at
    /// the next IRAP, and output timestamps keep rising.
    #[test]
    fn corrupt_hevc_mid_stream_is_survived() {
        if !crate::transcode::tool_available("ffmpeg") {
            eprintln!("SKIPPED: ffmpeg not installed");
            return;
        }
        let clip = Clip::demo_h265();
        let (mut t, rx) = start(Codec::H265, &TranscodeConfig::default());
        let mut pts = 0;
        let mut next = || {
            pts += 3600;
            pts
        };
        for unit in &clip.units()[..10] {
            push(&mut t, hevc_frame(unit, next()));
        }
        // Slice NAL headers (TRAIL_R, IDR) over noise.
        let mut noise = 0x1234_5678u32;
        for header in [[0x02u8, 0x01], [0x26, 0x01], [0x02, 0x01]] {
            let mut nal = header.to_vec();
            nal.extend((0..3000).map(|_| {
                noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (noise >> 24) as u8
            }));
            let frame = Frame {
                codec: Codec::H265,
                pts: next(),
                dts: 0,
                keyframe: false,
                units: [Chunks::from(Bytes::from(nal))].into_iter().collect(),
            };
            push(&mut t, Arc::new(frame));
        }
        for unit in clip.units() {
            push(&mut t, hevc_frame(unit, next()));
        }
        // The clip's 100 pictures come out at least; concealed corrupt ones
        // may add to them.
        let frames = collect(&rx, clip.len());
        assert!(frames.windows(2).all(|w| w[0].pts < w[1].pts));
        let (size, _) = decode_h264(&frames);
        assert_eq!(size, (640, 360));
    }

    fn hevc_frame(unit: &crate::sim::clip::AccessUnit, pts: i64) -> Arc<Frame> {
        Arc::new(Frame {
            codec: Codec::H265,
            pts,
            dts: pts,
            keyframe: unit.keyframe,
            units: unit.nals.iter().cloned().map(Chunks::from).collect(),
        })
    }

    #[test]
    fn a_decoder_that_dies_ends_the_transcode_with_its_status() {
        // `false` starts, reads nothing and exits 1: as a crashed decoder.
        let config = TranscodeConfig {
            ffmpeg: "false".into(),
            ..TranscodeConfig::default()
        };
        let (_t, rx) = start(Codec::H265, &config);
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Out::Failed(e)) => {
                assert_eq!(e.kind(), "decoder_exit");
                assert!(e.to_string().contains("exit status: 1"), "{e}");
            }
            _ => panic!("no failure reported"),
        }
        let missing = TranscodeConfig {
            ffmpeg: "/nonexistent/ffmpeg".into(),
            ..TranscodeConfig::default()
        };
        let (tx, _rx) = mpsc::channel();
        let e = Transcoder::start(Codec::H265, &missing, Collect(tx))
            .err()
            .unwrap();
        assert_eq!(e.kind(), "decoder_start");
        let (tx, _rx) = mpsc::channel();
        let e = Transcoder::start(Codec::Mpeg4, &missing, Collect(tx))
            .err()
            .unwrap();
        assert_eq!(e.kind(), "unsupported");
    }

    #[test]
    fn annex_b_moves_the_delimiter_to_the_end() {
        let frame = Frame {
            codec: Codec::H265,
            pts: 0,
            dts: 0,
            keyframe: false,
            units: [
                Chunks::from(Bytes::from_static(&[0x46, 0x01, 0x10])),
                Chunks::from(Bytes::from_static(&[0x02, 0x01, 0xaa])),
            ]
            .into_iter()
            .collect(),
        };
        let mut out = Vec::new();
        hevc_annex_b(&frame, &mut out);
        assert_eq!(
            out,
            [0, 0, 0, 1, 0x02, 0x01, 0xaa, 0, 0, 0, 1, 0x46, 0x01, 0x50]
        );
    }
}
