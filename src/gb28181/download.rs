//! Download jobs (GB/T 28181-2016 §9.9): a recording's time range fetched
//! with an `s=Download` INVITE and `a=downloadspeed:N`, its PS byte
//! stream written to `{gb.download_dir}/{job}.ps` as it arrives, and
//! optionally remuxed to MP4 by `ffmpeg -c copy` when the device reports
//! end of file (`MediaStatus` 121). Progress is the share of the range the
//! received PTS cover; jobs can be cancelled (BYE) and are kept, bounded,
//! for `GET`.
//!
//! The jobs take from the platform only what they need: a
//! [`RecordingFetch`] that starts the `s=Download` session (the platform
//! implements it in [`super::history`]) and the `gb` settings.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::ps_sink::PsSink;
use crate::config::GbConfig;
use crate::media::hub::{Hub, HubConfig};
use crate::metrics::{self, label};
use crate::streams::recording::PlaybackRange;
use crate::streams::{SourceExit, SourceHandle, StartError};

/// A started download session, as [`RecordingFetch`] returns it.
pub type FetchFuture =
    Pin<Box<dyn Future<Output = Result<SourceHandle, StartError>> + Send + 'static>>;

/// What a download job needs of the platform: one `s=Download` session of
/// `range` of `channel` at `speed`, frames into `hub` and the raw PS bytes
/// into `ps`; the session ends with [`SourceExit::Finished`] at end of file.
pub trait RecordingFetch: Send + Sync + 'static {
    fn fetch(
        self: Arc<Self>,
        device: String,
        channel: String,
        range: PlaybackRange,
        speed: u32,
        hub: Arc<Hub>,
        ps: PsSink,
    ) -> FetchFuture;
}

/// A poisoned lock still guards consistent job records (each update is
/// one assignment), so it is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Finished jobs kept for `GET` beyond the running ones.
pub const MAX_KEPT_JOBS: usize = 64;
/// Fastest `a=downloadspeed` asked of a device.
pub const MAX_SPEED: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DownloadFormat {
    #[default]
    Ps,
    Mp4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Remuxing,
    Done,
    Failed,
    Cancelled,
}

/// One job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub device: String,
    pub channel: String,
    pub start: u64,
    pub end: u64,
    pub speed: u32,
    pub format: DownloadFormat,
    pub state: JobState,
    /// 0.0–1.0: the part of the range received, by media timestamps.
    pub progress: f64,
    pub bytes: u64,
    /// The output file once the job is done (PS while running).
    pub file: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    #[error("{0} downloads are running; wait for one to end")]
    Busy(usize),
    #[error("cannot create the download directory {dir}: {reason}")]
    Directory { dir: String, reason: String },
    #[error("mp4 needs ffmpeg, which is not installed")]
    NoFfmpeg,
}

impl DownloadError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Busy(_) => "busy",
            Self::Directory { .. } => "directory",
            Self::NoFfmpeg => "no_ffmpeg",
        }
    }
}

struct Job {
    info: Mutex<JobInfo>,
    bytes: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Job {
    fn snapshot(&self) -> JobInfo {
        let mut info = lock(&self.info).clone();
        info.bytes = self.bytes.load(Ordering::Relaxed);
        info
    }

    fn set(&self, f: impl FnOnce(&mut JobInfo)) {
        f(&mut lock(&self.info));
    }
}

/// The platform's download jobs.
#[derive(Default)]
pub struct DownloadJobs {
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    next: AtomicU64,
}

/// Part of `range` covered by PTS from `first` to `last` (90 kHz).
pub fn progress(range: PlaybackRange, first: i64, last: i64) -> f64 {
    let span = range.end.saturating_sub(range.start).max(1) as f64;
    ((last - first).max(0) as f64 / 90_000.0 / span).clamp(0.0, 1.0)
}

/// Whether `ffmpeg` runs, asked once per process and off the async
/// workers (it spawns a process and waits for it).
async fn ffmpeg_present() -> bool {
    static PRESENT: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *PRESENT
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                std::process::Command::new("ffmpeg")
                    .arg("-version")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .await
            .unwrap_or(false)
        })
        .await
}

impl DownloadJobs {
    /// Start downloading `range` of `channel` through `fetch`, within the
    /// limits of `cfg` (`max_downloads`, `download_dir`); the job runs in
    /// the background.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        &self,
        fetch: Arc<dyn RecordingFetch>,
        cfg: &GbConfig,
        device: &str,
        channel: &str,
        range: PlaybackRange,
        speed: u32,
        format: DownloadFormat,
    ) -> Result<JobInfo, DownloadError> {
        if format == DownloadFormat::Mp4 && !ffmpeg_present().await {
            return Err(DownloadError::NoFfmpeg);
        }
        let dir = cfg.download_dir.clone();
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| DownloadError::Directory {
                dir: cfg.download_dir.display().to_string(),
                reason: e.to_string(),
            })?;
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{n}");
        let ps_path = cfg.download_dir.join(format!("download-{n}.ps"));
        let job = Arc::new(Job {
            info: Mutex::new(JobInfo {
                id: id.clone(),
                device: device.to_owned(),
                channel: channel.to_owned(),
                start: range.start,
                end: range.end,
                speed: speed.clamp(1, MAX_SPEED),
                format,
                state: JobState::Running,
                progress: 0.0,
                bytes: 0,
                file: ps_path.display().to_string(),
                error: None,
            }),
            bytes: Arc::default(),
            cancel: CancellationToken::new(),
        });
        {
            // Counting and inserting under one lock: concurrent requests
            // cannot both see a free slot.
            let mut jobs = lock(&self.jobs);
            let running = jobs
                .values()
                .filter(|j| matches!(lock(&j.info).state, JobState::Running | JobState::Remuxing))
                .count();
            if running >= cfg.max_downloads {
                return Err(DownloadError::Busy(running));
            }
            jobs.insert(n, job.clone());
            // Forget the oldest finished jobs beyond the limit.
            while jobs.len() > MAX_KEPT_JOBS {
                let oldest = jobs
                    .iter()
                    .find(|(_, j)| !matches!(lock(&j.info).state, JobState::Running))
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => jobs.remove(&k),
                    None => break,
                };
            }
        }
        metrics::get()
            .gb_downloads
            .get_or_create(&label("outcome", "started"))
            .inc();
        let info = job.snapshot();
        let span = info_span!("download", job = %id, device = %device, channel = %channel);
        tokio::spawn(run_job(fetch, job, range, ps_path).instrument(span));
        Ok(info)
    }

    pub fn get(&self, id: &str) -> Option<JobInfo> {
        let n: u64 = id.parse().ok()?;
        lock(&self.jobs).get(&n).map(|j| j.snapshot())
    }

    pub fn list(&self) -> Vec<JobInfo> {
        lock(&self.jobs).values().map(|j| j.snapshot()).collect()
    }

    /// Stop a running job (BYE); false when there is no such job.
    pub fn cancel(&self, id: &str) -> bool {
        let Some(n) = id.parse::<u64>().ok() else {
            return false;
        };
        match lock(&self.jobs).get(&n) {
            Some(job) => {
                job.cancel.cancel();
                true
            }
            None => false,
        }
    }
}

async fn run_job(fetch: Arc<dyn RecordingFetch>, job: Arc<Job>, range: PlaybackRange, ps: PathBuf) {
    let (device, channel, speed, format) = {
        let i = lock(&job.info);
        (i.device.clone(), i.channel.clone(), i.speed, i.format)
    };
    let outcome = download(fetch, &job, device, channel, range, speed, &ps).await;
    let outcome = match outcome {
        Ok(()) if format == DownloadFormat::Mp4 => {
            job.set(|i| i.state = JobState::Remuxing);
            let mp4 = ps.with_extension("mp4");
            match remux(ps.clone(), mp4.clone()).await {
                Ok(()) => {
                    job.set(|i| i.file = mp4.display().to_string());
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    let state = match &outcome {
        Ok(()) => JobState::Done,
        Err(_) if job.cancel.is_cancelled() => JobState::Cancelled,
        Err(_) => JobState::Failed,
    };
    match &outcome {
        Ok(()) => info!("download complete"),
        Err(e) => warn!(?state, "download ended: {e}"),
    }
    metrics::get()
        .gb_downloads
        .get_or_create(&label(
            "outcome",
            match state {
                JobState::Done => "done",
                JobState::Cancelled => "cancelled",
                _ => "failed",
            },
        ))
        .inc();
    job.set(|i| {
        i.state = state;
        if state == JobState::Done {
            i.progress = 1.0;
        }
        i.error = outcome.err();
    });
}

async fn download(
    fetch: Arc<dyn RecordingFetch>,
    job: &Job,
    device: String,
    channel: String,
    range: PlaybackRange,
    speed: u32,
    path: &Path,
) -> Result<(), String> {
    let file = {
        let owned = path.to_owned();
        tokio::task::spawn_blocking(move || std::fs::File::create(owned))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| format!("{}: {e}", path.display()))?
    };
    let (tx, mut rx) = PsSink::channel(super::ps_sink::CAPACITY);
    let lost = tx.drop_count();
    let bytes = job.bytes.clone();
    // File writes block; they get their own thread and end when the media
    // session drops its sender.
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(file);
        while let Some(chunk) = rx.blocking_recv() {
            out.write_all(&chunk)?;
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        out.flush()
    });
    let hub = Hub::new(HubConfig::default());
    let mut frames = hub.subscribe();
    let source = fetch
        .fetch(device, channel, range, speed, hub, tx)
        .await
        .map_err(|e| e.to_string())?;
    let mut task = source.task;
    let mut first_pts = None;
    let mut frames_open = true;
    let reason = loop {
        tokio::select! {
            r = &mut task => break r.unwrap_or_else(|e| SourceExit::Failed(format!("download task failed: {e}"))),
            _ = job.cancel.cancelled() => {
                source.cancel.cancel();
                let _ = (&mut task).await;
                break SourceExit::Failed("cancelled".to_owned());
            }
            f = frames.recv(), if frames_open => match f {
                Ok(frame) => {
                    let first = *first_pts.get_or_insert(frame.pts);
                    let p = progress(range, first, frame.pts);
                    job.set(|i| i.progress = i.progress.max(p));
                }
                Err(_) => frames_open = false,
            },
        }
    };
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("writing {}: {e}", path.display())),
        Err(e) => return Err(format!("writer failed: {e}")),
    }
    let dropped = lost.load(Ordering::Relaxed);
    if dropped > 0 {
        return Err(format!(
            "the disk fell behind: {dropped} chunks lost, {} is incomplete",
            path.display()
        ));
    }
    if reason == SourceExit::Finished {
        Ok(())
    } else {
        Err(reason.to_string())
    }
}

/// PS → MP4 without re-encoding.
async fn remux(ps: PathBuf, mp4: PathBuf) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "mpeg", "-i"])
            .arg(&ps)
            .args(["-c", "copy", "-movflags", "+faststart"])
            .arg(&mp4)
            .output()
            .map_err(|e| format!("ffmpeg: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ffmpeg remux failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .await
    .map_err(|e| format!("remux task: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_the_covered_share_of_the_range() {
        let r = PlaybackRange {
            start: 100,
            end: 110,
        };
        assert_eq!(progress(r, 0, 0), 0.0);
        assert_eq!(progress(r, 1_000, 1_000 + 5 * 90_000), 0.5);
        assert_eq!(progress(r, 0, 20 * 90_000), 1.0);
        assert_eq!(progress(r, 500, 0), 0.0);
    }
}
