//! On-demand stream lifecycle: `StreamKey` → hub, single-flight start,
//! restart while watched, idle teardown.
//!
//! Each stream has one supervisor task that owns its source. Viewers only
//! touch an atomic count and a `Notify`; the supervisor decides when to
//! start, restart and stop. The viewer count is changed under the table
//! lock so that "last viewer left, remove the stream" and "a new viewer
//! arrived" can never interleave badly.

pub mod alarms;
pub mod control;
pub mod directory;
pub mod owners;
pub mod recording;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

// The tokio clock, so the restart schedule follows paused time in tests.
use tokio::time::Instant;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::media::hub::{Hub, HubConfig, Subscription};
use crate::metrics::{self, label};

/// Names a stream: `gb/{device}/{channel}`, `foscam/{name}`, …
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct StreamKey(String);

impl StreamKey {
    /// From a URL path such as `/gb/340200…/340200…` (query not included).
    /// Empty segments and dot segments are refused, so a key is canonical.
    pub fn from_path(path: &str) -> Option<Self> {
        let trimmed = path.trim_matches('/');
        if trimmed.is_empty()
            || trimmed
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".." || s.len() > 64)
        {
            return None;
        }
        Some(Self(trimmed.to_owned()))
    }

    /// From a request path and its query: `?start=…&end=…` (ISO 8601
    /// times, the recorded-media convention of every scheme) names the
    /// recording `{path}/playback/{start}-{end}` in Unix seconds, so
    /// viewers of one range share one source and never a live one.
    pub fn from_path_and_query(path: &str, query: Option<&str>) -> Option<Self> {
        match query.and_then(recording::parse_range) {
            Some(r) => Self::from_path(&format!(
                "{}/playback/{}-{}",
                path.trim_end_matches('/'),
                r.start,
                r.end
            )),
            None => Self::from_path(path),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path segment: which kind of source serves this key.
    pub fn scheme(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }

    /// The path segments after the scheme.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').skip(1)
    }
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Options a viewer's request carries for the source (the query of an
/// RTSP URL, e.g. `?transport=tcp_active`). They are not part of the
/// [`StreamKey`]: one key is one stream, so the first viewer's options
/// start it and later viewers join it as it runs, whatever they ask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceOptions {
    params: Vec<(String, String)>,
}

impl SourceOptions {
    /// Most parameters kept from a query; the rest are ignored.
    pub const MAX_PARAMS: usize = 16;
    const MAX_LEN: usize = 256;

    /// From a URL query (`a=1&b=2`, without `?`). Over-long or surplus
    /// parameters are dropped.
    pub fn from_query(query: &str) -> Self {
        let params = query
            .split('&')
            .filter(|p| !p.is_empty() && p.len() <= Self::MAX_LEN)
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (p.to_owned(), String::new()),
            })
            .take(Self::MAX_PARAMS)
            .collect();
        Self { params }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a stream could not be started. Egress maps these to its own status
/// codes (RTSP 404 / 453 / 503 / 504).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("no such stream: {0}")]
    NotFound(String),
    #[error("device offline: {0}")]
    Offline(String),
    #[error("device did not answer within {0:?}")]
    Timeout(Duration),
    #[error("device refused: {code} {reason}")]
    Rejected { code: u16, reason: String },
    #[error("no free RTP port")]
    NoPort,
    /// The device refused our credentials (RTSP 401).
    #[error("device refused our credentials: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Failed(String),
}

/// A running source: cancel it to stop (it sends its BYE and returns); if
/// the task finishes on its own the source died, and its [`SourceExit`]
/// says why, which decides whether the stream is restarted.
pub struct SourceHandle {
    pub cancel: CancellationToken,
    pub task: JoinHandle<SourceExit>,
}

/// Why a source task returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceExit {
    /// Cancelled by the stream table (idle, shutdown).
    Stopped,
    /// The media ended by design (a recording played to its end): the
    /// stream ends for its viewers and is not restarted.
    Finished,
    /// No media was accepted for this long: restarted with backoff while
    /// viewers remain, up to `streams.reconnect_window`.
    NoMedia(Duration),
    /// The device went offline or unregistered: the stream ends at once.
    DeviceGone(String),
    /// The device restarted and lost its calls: the stream is restarted at
    /// once while viewers remain.
    DeviceRestarted,
    /// Anything else (the device's BYE, a broken connection): restarted
    /// like [`SourceExit::NoMedia`].
    Failed(String),
}

impl SourceExit {
    /// The `reason` label of `camgate_stream_stops_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Finished => "finished",
            Self::NoMedia(_) => "no_media",
            Self::DeviceGone(_) => "device_gone",
            Self::DeviceRestarted => "device_restarted",
            Self::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for SourceExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stopped => f.write_str("stopped"),
            Self::Finished => f.write_str("end of stream"),
            Self::NoMedia(d) => write!(f, "no media for {d:?}"),
            Self::DeviceGone(why) => write!(f, "device gone: {why}"),
            Self::DeviceRestarted => f.write_str("device restarted"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

impl From<String> for SourceExit {
    fn from(reason: String) -> Self {
        Self::Failed(reason)
    }
}

pub type StartFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SourceHandle, StartError>> + Send + 'a>>;

/// Starts sources of one scheme (`gb`, `foscam`, …).
pub trait SourceProvider: Send + Sync + 'static {
    /// Start the source for `key`, publishing into `hub`. Resolves once the
    /// device has accepted (media may follow a little later).
    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a>;

    /// [`start`](Self::start) with the first viewer's [`SourceOptions`];
    /// providers without options need not implement it.
    fn start_with<'a>(
        &'a self,
        key: &'a StreamKey,
        hub: Arc<Hub>,
        options: &'a SourceOptions,
    ) -> StartFuture<'a> {
        let _ = options;
        self.start(key, hub)
    }
    /// Trick-play control of `key` when it is a recording being played
    /// back; `None` (the default) for live streams, which cannot pause,
    /// seek or change speed.
    fn playback(&self, _key: &StreamKey) -> Option<Arc<dyn PlaybackControl>> {
        None
    }
}

/// A trick-play request from a viewer of a playback stream (RTSP PLAY
/// with Range/Scale, PAUSE), for the source to pass on to the device
/// (GB28181: MANSRTSP in a SIP INFO).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlaybackCommand {
    Pause,
    Resume,
    /// Playback speed; negative plays backwards (RFC 2326 §12.34).
    Scale(f32),
    /// Jump to this many seconds from the start of the recording.
    Seek(f64),
}

pub type ControlFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StartError>> + Send + 'a>>;

/// Implemented by sources that play recordings back.
pub trait PlaybackControl: Send + Sync + 'static {
    fn command(&self, command: PlaybackCommand) -> ControlFuture<'_>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    /// The source died; viewers stay attached while it is restarted.
    Restarting,
    Failed(StartError),
}

#[derive(Clone, Debug)]
pub struct StreamsConfig {
    pub idle_timeout: Duration,
    /// Upper bound on a start; providers should time out sooner themselves.
    pub start_timeout: Duration,
    /// How long a dead source is restarted while viewers remain, from
    /// the moment it last delivered media; 0 = never restarted.
    pub reconnect_window: Duration,
    /// First wait between restarts; doubled each time up to
    /// `restart_backoff_max`.
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    pub hub: HubConfig,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(6),
            reconnect_window: Duration::from_secs(60),
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(30),
            hub: HubConfig::default(),
        }
    }
}

struct Entry {
    key: StreamKey,
    hub: Arc<Hub>,
    viewers: AtomicUsize,
    viewers_changed: Notify,
    phase: watch::Sender<Phase>,
    since: SystemTime,
    options: SourceOptions,
}

struct Inner {
    config: StreamsConfig,
    providers: HashMap<String, Arc<dyn SourceProvider>>,
    table: Mutex<HashMap<StreamKey, Arc<Entry>>>,
    shutdown: CancellationToken,
    supervisors: tokio_util::task::TaskTracker,
    /// Cluster: which node serves a key (none on a single node).
    owners: Option<Arc<dyn owners::StreamOwners>>,
}

/// The table of live streams.
#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

/// A viewer's hold on a stream; dropping it is how a viewer leaves.
pub struct Viewer {
    entry: Arc<Entry>,
    inner: Arc<Inner>,
}

impl Viewer {
    pub fn hub(&self) -> &Arc<Hub> {
        &self.entry.hub
    }

    pub fn key(&self) -> &StreamKey {
        &self.entry.key
    }

    pub fn subscribe(&self) -> Subscription {
        self.entry.hub.subscribe()
    }

    /// Trick-play control, when the stream is a playback.
    pub fn playback(&self) -> Option<Arc<dyn PlaybackControl>> {
        self.inner
            .providers
            .get(self.entry.key.scheme())
            .and_then(|p| p.playback(&self.entry.key))
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _table = self.inner.lock_table();
        self.entry.viewers.fetch_sub(1, Ordering::SeqCst);
        self.entry.viewers_changed.notify_waiters();
        metrics::get().viewers.dec();
    }
}

/// A running stream whose last frame is older than this is `stalled`.
pub const STALLED_AFTER: Duration = Duration::from_secs(2);

/// One row of `GET /api/v1/streams`: what is true now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamSummary {
    pub key: StreamKey,
    /// `starting | running | stalled | restarting` (or `failed`).
    pub state: &'static str,
    pub viewers: usize,
    /// Over the last second; 0 once no frame came for a second.
    pub bitrate_bps: u64,
    pub frames: u64,
    /// Milliseconds since the last frame; `null` before the first.
    pub last_frame_age_ms: Option<u64>,
    pub since: u64,
}

impl Streams {
    pub fn new(config: StreamsConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                providers: HashMap::new(),
                table: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                supervisors: tokio_util::task::TaskTracker::new(),
                owners: None,
            }),
        }
    }

    /// Cluster placement: who serves which key. Call before sharing.
    pub fn with_owners(mut self, owners: Arc<dyn owners::StreamOwners>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("owners are set before the table is shared")
            .owners = Some(owners);
        self
    }

    /// The other node that serves `key`, when a cluster routes it there.
    pub fn remote_owner(&self, key: &StreamKey) -> Option<owners::RemoteNode> {
        self.inner.owners.as_ref()?.remote_owner(key.as_str())
    }

    /// Register the provider for a scheme. Call before sharing `Streams`.
    pub fn with_provider(mut self, scheme: &str, provider: Arc<dyn SourceProvider>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("providers are added before the table is shared")
            .providers
            .insert(scheme.to_owned(), provider);
        self
    }

    /// Join a stream, starting its source if this is the first viewer.
    /// Concurrent first viewers share one start.
    pub async fn open(&self, key: &StreamKey) -> Result<Viewer, StartError> {
        self.open_with(key, SourceOptions::default()).await
    }

    /// [`open`](Self::open) with request options; they apply only if this
    /// viewer is the one that starts the stream (see [`SourceOptions`]).
    pub async fn open_with(
        &self,
        key: &StreamKey,
        options: SourceOptions,
    ) -> Result<Viewer, StartError> {
        let Some(provider) = self.inner.providers.get(key.scheme()).cloned() else {
            return Err(StartError::NotFound(key.to_string()));
        };
        if self.inner.shutdown.is_cancelled() {
            return Err(StartError::Failed("shutting down".into()));
        }
        let entry = {
            let mut table = self.inner.lock_table();
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| self.spawn_supervisor(key.clone(), provider, options))
                .clone();
            entry.viewers.fetch_add(1, Ordering::SeqCst);
            entry.viewers_changed.notify_waiters();
            entry
        };
        metrics::get().viewers.inc();
        let viewer = Viewer {
            entry: entry.clone(),
            inner: self.inner.clone(),
        };
        let mut phase = entry.phase.subscribe();
        let outcome = phase
            .wait_for(|p| *p != Phase::Starting)
            .await
            .map(|p| p.clone());
        match outcome {
            // A restarting stream is joined as it is: its viewers wait for
            // the media to come back.
            Ok(Phase::Running | Phase::Restarting) => Ok(viewer),
            Ok(Phase::Failed(e)) => Err(e),
            _ => Err(StartError::Failed("stream supervisor ended".into())),
        }
    }

    fn spawn_supervisor(
        &self,
        key: StreamKey,
        provider: Arc<dyn SourceProvider>,
        options: SourceOptions,
    ) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            hub: Hub::new(self.inner.config.hub.clone()),
            key: key.clone(),
            viewers: AtomicUsize::new(0),
            viewers_changed: Notify::new(),
            phase: watch::Sender::new(Phase::Starting),
            since: SystemTime::now(),
            options,
        });
        let inner = self.inner.clone();
        let span = info_span!(parent: None, "stream", key = %key);
        self.inner
            .supervisors
            .spawn(supervise(inner, entry.clone(), provider).instrument(span));
        entry
    }

    /// Trick-play control of `key` when it is a running playback (what
    /// [`Viewer::playback`] gives a viewer, for callers holding only the
    /// key, e.g. the API driving a WebRTC viewer's recording).
    pub fn playback(&self, key: &StreamKey) -> Option<Arc<dyn PlaybackControl>> {
        self.inner
            .providers
            .get(key.scheme())
            .and_then(|p| p.playback(key))
    }

    pub fn list(&self) -> Vec<StreamSummary> {
        let table = self.inner.lock_table();
        let now = Instant::now();
        let mut rows: Vec<StreamSummary> = table
            .values()
            .map(|e| {
                let age = e
                    .hub
                    .last_frame_at()
                    .map(|t| now.saturating_duration_since(t));
                StreamSummary {
                    key: e.key.clone(),
                    state: match *e.phase.borrow() {
                        Phase::Starting => "starting",
                        // Stalled: running but silent (the source has not yet
                        // given up on its inactivity deadline).
                        Phase::Running if age.is_none() => "starting",
                        Phase::Running if age.is_some_and(|a| a >= STALLED_AFTER) => "stalled",
                        Phase::Running => "running",
                        Phase::Restarting => "restarting",
                        Phase::Failed(_) => "failed",
                    },
                    viewers: e.viewers.load(Ordering::SeqCst),
                    bitrate_bps: e.hub.bitrate_bps_at(now),
                    last_frame_age_ms: age.map(|a| a.as_millis() as u64),
                    frames: e
                        .hub
                        .stats
                        .frames_in
                        .load(std::sync::atomic::Ordering::Relaxed),
                    since: e
                        .since
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows
    }

    /// Stop every source (each sends its BYE) and wait for them, up to
    /// `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        self.inner.supervisors.close();
        if tokio::time::timeout(grace, self.inner.supervisors.wait())
            .await
            .is_err()
        {
            warn!("some streams did not stop within {grace:?}");
        }
    }
}

impl Inner {
    fn lock_table(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, Arc<Entry>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove the entry if nobody watches it. Viewers join under the same
    /// lock, so after this returns true nobody can join this entry.
    fn remove_if_unwatched(&self, entry: &Arc<Entry>) -> bool {
        let mut table = self.lock_table();
        if entry.viewers.load(Ordering::SeqCst) != 0 {
            return false;
        }
        if table.get(&entry.key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            table.remove(&entry.key);
        }
        true
    }

    fn remove(&self, entry: &Arc<Entry>) {
        let mut table = self.lock_table();
        if table.get(&entry.key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            table.remove(&entry.key);
        }
    }
}

enum Stop {
    Idle,
    Shutdown,
    Died(SourceExit),
}

/// The restart schedule of one outage: exponential backoff from
/// `restart_backoff` to `restart_backoff_max`, for at most
/// `reconnect_window` from the moment the source last delivered media.
struct Outage {
    deadline: Instant,
    next_wait: Duration,
}

impl Outage {
    fn new(cfg: &StreamsConfig, last_media: Instant) -> Self {
        Self {
            deadline: last_media + cfg.reconnect_window,
            next_wait: cfg.restart_backoff,
        }
    }

    /// How long the next call should wait for media before it is given up:
    /// the next step of the schedule, within the window. A call that is
    /// up listens through its backoff step instead of leaving a gap, so
    /// media that returns is taken at once.
    fn patience(&self, now: Instant) -> Duration {
        self.next_wait
            .min(self.deadline.saturating_duration_since(now))
    }

    /// How long to wait before the next attempt, or `None` when the window
    /// is spent. The wait never runs past the window's end.
    fn next(&mut self, cfg: &StreamsConfig, now: Instant) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        let wait = self.next_wait.min(left);
        self.next_wait = (self.next_wait * 2).min(cfg.restart_backoff_max);
        Some(wait)
    }
}

/// What the supervisor does after a source died.
enum Then {
    Restart(Duration),
    End,
}

async fn supervise(inner: Arc<Inner>, entry: Arc<Entry>, provider: Arc<dyn SourceProvider>) {
    let cfg = inner.config.clone();
    // Set while the stream is down and being restarted.
    let mut outage: Option<Outage> = None;
    loop {
        let started_at = Instant::now();
        let restarting = outage.is_some();
        entry
            .hub
            .set_restart_patience(outage.as_ref().map(|o| o.patience(started_at)));
        let start = tokio::time::timeout(
            cfg.start_timeout,
            provider.start_with(&entry.key, entry.hub.clone(), &entry.options),
        );
        let result = tokio::select! {
            r = start => r.unwrap_or(Err(StartError::Timeout(cfg.start_timeout))),
            _ = inner.shutdown.cancelled() => Err(StartError::Failed("shutting down".into())),
        };
        let mut handle = match result {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, restarting = outage.is_some(), "stream start failed");
                // A device no longer registered will not come back by
                // retrying; anything else is retried within the window.
                let retry = match (&mut outage, &e) {
                    (_, StartError::NotFound(_)) => None,
                    (Some(o), _) => o.next(&cfg, Instant::now()),
                    (None, _) => None,
                };
                if let Some(wait) = retry
                    && wait_to_restart(&inner, &entry, wait).await
                {
                    continue;
                }
                end_stream(&inner, &entry, Phase::Failed(e));
                return;
            }
        };
        metrics::get().stream_starts.inc();
        metrics::get().streams_active.inc();
        info!(
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            restart = outage.is_some(),
            "stream started"
        );
        if outage.is_none() {
            entry.phase.send_replace(Phase::Running);
        }
        let stop = watch_viewers(
            &inner,
            &entry,
            &mut handle.task,
            &cfg,
            &mut outage,
            started_at,
        )
        .await;
        metrics::get().streams_active.dec();
        let exit = match stop {
            Stop::Died(exit) => exit,
            Stop::Idle | Stop::Shutdown => {
                let reason = if matches!(stop, Stop::Idle) {
                    "idle"
                } else {
                    "shutdown"
                };
                metrics::get()
                    .stream_stops
                    .get_or_create(&label("reason", reason))
                    .inc();
                info!(reason, "stopping source");
                handle.cancel.cancel();
                // The source sends its BYE; bound the wait so a dead device
                // cannot hold the stream forever.
                if tokio::time::timeout(Duration::from_secs(5), &mut handle.task)
                    .await
                    .is_err()
                {
                    handle.task.abort();
                }
                end_stream(
                    &inner,
                    &entry,
                    Phase::Failed(StartError::Failed(reason.into())),
                );
                return;
            }
        };
        metrics::get()
            .stream_stops
            .get_or_create(&label("reason", exit.label()))
            .inc();
        let now = Instant::now();
        // Media flowed during this run: a new outage starts now.
        let last_media = entry.hub.last_frame_at().filter(|t| *t >= started_at);
        if let Some(t) = last_media {
            outage = Some(Outage::new(&cfg, t));
        }
        let watched = entry.viewers.load(Ordering::SeqCst) > 0 && !inner.shutdown.is_cancelled();
        let then = match &exit {
            SourceExit::Finished | SourceExit::Stopped | SourceExit::DeviceGone(_) => Then::End,
            _ if !watched => Then::End,
            SourceExit::DeviceRestarted => {
                // Its old call is gone with it: call again at once.
                outage.get_or_insert_with(|| Outage::new(&cfg, now));
                Then::Restart(Duration::ZERO)
            }
            // A restarted call that listened through its step in vain:
            // call again at once (the schedule still advances).
            SourceExit::NoMedia(_) if restarting && last_media.is_none() => outage
                .as_mut()
                .and_then(|o| o.next(&cfg, now))
                .map_or(Then::End, |_| Then::Restart(Duration::ZERO)),
            SourceExit::NoMedia(_) | SourceExit::Failed(_) => {
                let o = outage.get_or_insert_with(|| Outage::new(&cfg, started_at));
                o.next(&cfg, now).map_or(Then::End, Then::Restart)
            }
        };
        match then {
            Then::Restart(wait) => {
                warn!(reason = %exit, ?wait, "source ended; restarting");
                if wait_to_restart(&inner, &entry, wait).await {
                    continue;
                }
                end_stream(
                    &inner,
                    &entry,
                    Phase::Failed(StartError::Failed(exit.to_string())),
                );
                return;
            }
            Then::End => {
                if exit == SourceExit::Finished {
                    info!("source finished");
                } else {
                    warn!(reason = %exit, "source ended; ending the stream");
                }
                end_stream(
                    &inner,
                    &entry,
                    Phase::Failed(StartError::Failed(exit.to_string())),
                );
                return;
            }
        }
    }
}

/// Show the stream as restarting and wait `wait` before the next start.
/// False when there is nobody left to restart for (every viewer left, or
/// shutdown): the caller ends the stream.
async fn wait_to_restart(inner: &Inner, entry: &Arc<Entry>, wait: Duration) -> bool {
    entry.phase.send_replace(Phase::Restarting);
    let until = Instant::now() + wait;
    loop {
        let changed = entry.viewers_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if inner.shutdown.is_cancelled() || inner.remove_if_unwatched(entry) {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return true,
            _ = &mut changed => {}
            _ = inner.shutdown.cancelled() => return false,
        }
    }
}

/// The stream is over: forget it, and end every viewer (they drain what
/// they have, then see the hub closed). Viewers still waiting on the
/// first start see `outcome`.
fn end_stream(inner: &Inner, entry: &Arc<Entry>, outcome: Phase) {
    inner.remove(entry);
    entry.phase.send_replace(outcome);
    entry.hub.close();
}

/// Run until the source dies, shutdown, or nobody has watched for
/// `idle_timeout`. During a restart, the stream turns `running` again
/// once media flows.
async fn watch_viewers(
    inner: &Inner,
    entry: &Arc<Entry>,
    task: &mut JoinHandle<SourceExit>,
    cfg: &StreamsConfig,
    outage: &mut Option<Outage>,
    started_at: Instant,
) -> Stop {
    // While restarting: look for the first frame of this run.
    let mut media_check = tokio::time::interval(Duration::from_millis(200));
    // The idle deadline counts from when the last viewer left.
    let mut unwatched_since: Option<Instant> = None;
    loop {
        // Register interest before reading the count so no change is missed.
        let changed = entry.viewers_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let watched = entry.viewers.load(Ordering::SeqCst) > 0;
        let idle_at = if watched {
            unwatched_since = None;
            None
        } else {
            Some(*unwatched_since.get_or_insert_with(Instant::now) + cfg.idle_timeout)
        };
        tokio::select! {
            r = &mut *task => {
                return Stop::Died(r.unwrap_or_else(|e| SourceExit::Failed(format!("source task failed: {e}"))));
            }
            _ = inner.shutdown.cancelled() => return Stop::Shutdown,
            _ = &mut changed => continue,
            _ = media_check.tick(), if outage.is_some() => {
                if entry.hub.last_frame_at().is_some_and(|t| t >= started_at) {
                    // Media is back: the outage is over.
                    *outage = None;
                    entry.hub.set_restart_patience(None);
                    entry.phase.send_replace(Phase::Running);
                    info!("media resumed");
                }
            }
            _ = sleep_until(idle_at) => {
                if inner.remove_if_unwatched(entry) {
                    return Stop::Idle;
                }
                unwatched_since = None;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The recorded span a playback key names.
impl StreamKey {
    /// `(start, end)` in Unix seconds when the key names a recording
    /// (`…/playback/{start}-{end}`, see [`StreamKey::from_path_and_query`]).
    pub fn playback_range(&self) -> Option<recording::PlaybackRange> {
        let mut rev = self.0.rsplit('/');
        let range = rev.next()?;
        (rev.next()? == "playback")
            .then(|| recording::range_of_key_segment(range))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[derive(Default)]
    struct CountingProvider {
        starts: AtomicU32,
        stops: Arc<AtomicU32>,
        fail: bool,
    }

    impl SourceProvider for CountingProvider {
        fn start<'a>(&'a self, _key: &'a StreamKey, _hub: Arc<Hub>) -> StartFuture<'a> {
            Box::pin(async move {
                self.starts.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.fail {
                    return Err(StartError::Timeout(Duration::from_millis(50)));
                }
                let cancel = CancellationToken::new();
                let stops = self.stops.clone();
                let c = cancel.clone();
                let task = tokio::spawn(async move {
                    c.cancelled().await;
                    stops.fetch_add(1, Ordering::SeqCst);
                    SourceExit::Stopped
                });
                Ok(SourceHandle { cancel, task })
            })
        }
    }

    fn streams(provider: Arc<CountingProvider>, idle: Duration) -> Streams {
        Streams::new(StreamsConfig {
            idle_timeout: idle,
            ..Default::default()
        })
        .with_provider("gb", provider)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_viewers_share_one_start_and_idle_stops_once() {
        let provider = Arc::new(CountingProvider::default());
        let s = streams(provider.clone(), Duration::from_secs(30));
        let key = StreamKey::from_path("/gb/dev/ch").unwrap();
        let (a, b) = tokio::join!(s.open(&key), s.open(&key));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(provider.starts.load(Ordering::SeqCst), 1);
        assert_eq!(s.list()[0].viewers, 2);
        drop(a);
        drop(b);
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(provider.stops.load(Ordering::SeqCst), 0, "still in grace");
        // A viewer arriving during the grace period reuses the source.
        let c = s.open(&key).await.unwrap();
        assert_eq!(provider.starts.load(Ordering::SeqCst), 1);
        drop(c);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(provider.stops.load(Ordering::SeqCst), 1);
        assert!(s.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_start_reaches_every_waiter_and_clears_entry() {
        let provider = Arc::new(CountingProvider {
            fail: true,
            ..Default::default()
        });
        let s = streams(provider.clone(), Duration::ZERO);
        let key = StreamKey::from_path("gb/dev/ch").unwrap();
        let (a, b) = tokio::join!(s.open(&key), s.open(&key));
        assert!(matches!(a, Err(StartError::Timeout(_))));
        assert!(matches!(b, Err(StartError::Timeout(_))));
        assert!(s.list().is_empty());
        assert_eq!(provider.starts.load(Ordering::SeqCst), 1);
    }

    fn keyframe() -> crate::media::frame::Frame {
        use crate::media::frame::{Chunks, Codec, Frame};
        Frame {
            codec: Codec::H264,
            pts: 0,
            dts: 0,
            keyframe: true,
            units: [Chunks::from(bytes::Bytes::from_static(&[0x65; 8]))]
                .into_iter()
                .collect(),
        }
    }

    /// A source that publishes one frame, then dies with `exit` after
    /// `life`; starts after the first fail with `restart_error` if set.
    struct DyingProvider {
        starts: AtomicU32,
        exit: SourceExit,
        life: Duration,
        restart_error: Option<StartError>,
    }

    impl DyingProvider {
        fn new(exit: SourceExit) -> Arc<Self> {
            Arc::new(Self {
                starts: AtomicU32::new(0),
                exit,
                life: Duration::from_secs(10),
                restart_error: None,
            })
        }
    }

    impl SourceProvider for DyingProvider {
        fn start<'a>(&'a self, _key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
            Box::pin(async move {
                let n = self.starts.fetch_add(1, Ordering::SeqCst);
                if n > 0
                    && let Some(e) = &self.restart_error
                {
                    return Err(e.clone());
                }
                let (exit, life) = (self.exit.clone(), self.life);
                let task = tokio::spawn(async move {
                    hub.publish(keyframe());
                    tokio::time::sleep(life).await;
                    exit
                });
                Ok(SourceHandle {
                    cancel: CancellationToken::new(),
                    task,
                })
            })
        }
    }

    fn dying_streams(provider: Arc<DyingProvider>, window: Duration) -> Streams {
        Streams::new(StreamsConfig {
            reconnect_window: window,
            ..Default::default()
        })
        .with_provider("gb", provider)
    }

    #[tokio::test(start_paused = true)]
    async fn silent_source_restarts_with_backoff_within_the_window() {
        let provider = DyingProvider::new(SourceExit::NoMedia(Duration::from_secs(10)));
        let s = dying_streams(provider.clone(), Duration::from_secs(60));
        let key = StreamKey::from_path("gb/dev/ch").unwrap();
        let viewer = s.open(&key).await.unwrap();
        let mut sub = viewer.subscribe();
        // Each run publishes a frame: every death starts a new outage, so
        // the wait stays at the first step (1 s) and it runs on and on.
        tokio::time::sleep(Duration::from_secs(10) + Duration::from_millis(500)).await;
        assert_eq!(s.list()[0].state, "restarting");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(provider.starts.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(provider.starts.load(Ordering::SeqCst), 3);
        assert!(sub.recv().await.is_ok(), "the viewer stayed attached");
        let stops = metrics::get().encode();
        assert!(stops.contains("camgate_stream_stops_total{reason=\"no_media\"}"));
    }

    /// First run: one frame, then 2 s of silence. Restarts: silent, each
    /// listening as long as the stream table's patience asks (at least
    /// 2 s). Records when each start happened and the patience it got.
    #[derive(Default)]
    struct PatientProvider {
        starts: std::sync::Mutex<Vec<(Instant, Option<Duration>)>>,
    }

    impl SourceProvider for PatientProvider {
        fn start<'a>(&'a self, _key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
            Box::pin(async move {
                let patience = hub.restart_patience();
                let mut starts = self.starts.lock().unwrap();
                let first = starts.is_empty();
                starts.push((Instant::now(), patience));
                let rtp_timeout = Duration::from_secs(2);
                let task = tokio::spawn(async move {
                    if first {
                        hub.publish(keyframe());
                    }
                    let waited = patience.map_or(rtp_timeout, |p| p.max(rtp_timeout));
                    tokio::time::sleep(waited).await;
                    SourceExit::NoMedia(waited)
                });
                Ok(SourceHandle {
                    cancel: CancellationToken::new(),
                    task,
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn restarted_calls_listen_through_their_backoff_step() {
        let provider = Arc::new(PatientProvider::default());
        let s = Streams::new(StreamsConfig {
            reconnect_window: Duration::from_secs(40),
            ..Default::default()
        })
        .with_provider("gb", provider.clone());
        let key = StreamKey::from_path("gb/dev/ch").unwrap();
        let t0 = Instant::now();
        let viewer = s.open(&key).await.unwrap();
        let mut sub = viewer.subscribe();
        assert!(sub.recv().await.is_ok());
        assert!(sub.recv().await.is_err(), "ended when the window is spent");
        let starts: Vec<(u64, Option<u64>)> = provider
            .starts
            .lock()
            .unwrap()
            .iter()
            .map(|(t, p)| (t.duration_since(t0).as_secs(), p.map(|p| p.as_secs())))
            .collect();
        // Silent at 2 s; 1 s gap; then calls back to back, each listening
        // 2, 4, 8, 16 s, the last cut to the window's end (40 s).
        assert_eq!(
            starts,
            [
                (0, None),
                (3, Some(2)),
                (5, Some(4)),
                (9, Some(8)),
                (17, Some(16)),
                (33, Some(7))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_stop_when_the_window_is_spent_and_viewers_are_ended() {
        // Restarts that never deliver media: 1, 2, 4, 8 … s apart, until
        // 30 s after the last frame; then the viewer is ended.
        let provider = Arc::new(DyingProvider {
            starts: AtomicU32::new(0),
            exit: SourceExit::NoMedia(Duration::from_secs(2)),
            life: Duration::from_secs(2),
            restart_error: Some(StartError::Timeout(Duration::from_secs(1))),
        });
        let s = dying_streams(provider.clone(), Duration::from_secs(30));
        let key = StreamKey::from_path("gb/dev/ch").unwrap();
        let viewer = s.open(&key).await.unwrap();
        let mut sub = viewer.subscribe();
        assert!(sub.recv().await.is_ok());
        let t0 = tokio::time::Instant::now();
        assert!(sub.recv().await.is_err(), "viewer ended");
        let ended = t0.elapsed();
        // Dies at 2 s; retries at 3, 5, 9, 17, 32 (clamped to the window end).
        assert!(ended >= Duration::from_secs(30), "{ended:?}");
        assert!(ended <= Duration::from_secs(33), "{ended:?}");
        assert_eq!(provider.starts.load(Ordering::SeqCst), 6);
        assert!(s.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_window_a_silent_source_ends_its_viewers_at_once() {
        let provider = DyingProvider::new(SourceExit::NoMedia(Duration::from_secs(2)));
        let s = dying_streams(provider.clone(), Duration::ZERO);
        let key = StreamKey::from_path("gb/dev/ch").unwrap();
        let viewer = s.open(&key).await.unwrap();
        let mut sub = viewer.subscribe();
        assert!(sub.recv().await.is_ok());
        let t0 = tokio::time::Instant::now();
        assert!(sub.recv().await.is_err());
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        assert_eq!(provider.starts.load(Ordering::SeqCst), 1);
        assert!(s.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_device_ends_and_a_restarted_one_is_called_again() {
        let gone = DyingProvider::new(SourceExit::DeviceGone("offline".into()));
        let s = dying_streams(gone.clone(), Duration::from_secs(60));
        let key = StreamKey::from_path("gb/dev/ch").unwrap();
        let viewer = s.open(&key).await.unwrap();
        let mut sub = viewer.subscribe();
        assert!(sub.recv().await.is_ok());
        assert!(sub.recv().await.is_err(), "ended, not restarted");
        assert_eq!(gone.starts.load(Ordering::SeqCst), 1);

        let restarted = DyingProvider::new(SourceExit::DeviceRestarted);
        let s = dying_streams(restarted.clone(), Duration::from_secs(60));
        let _viewer = s.open(&key).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10) + Duration::from_millis(10)).await;
        assert_eq!(
            restarted.starts.load(Ordering::SeqCst),
            2,
            "called again at once"
        );
    }

    #[test]
    fn options_from_query() {
        let o = SourceOptions::from_query("transport=tcp_active&flag&&x=1=2");
        assert_eq!(o.get("transport"), Some("tcp_active"));
        assert_eq!(o.get("flag"), Some(""));
        assert_eq!(o.get("x"), Some("1=2"));
        assert_eq!(o.get("y"), None);
        let many = "a=1&".repeat(40);
        assert_eq!(SourceOptions::from_query(&many).params.len(), 16);
    }

    #[test]
    fn keys_are_canonical() {
        let k = StreamKey::from_path("/gb/a/b/").unwrap();
        assert_eq!(k.as_str(), "gb/a/b");
        assert_eq!(k.scheme(), "gb");
        assert_eq!(k.segments().collect::<Vec<_>>(), ["a", "b"]);
        assert!(StreamKey::from_path("/gb//b").is_none());
        assert!(StreamKey::from_path("/gb/../b").is_none());
        assert!(StreamKey::from_path("/").is_none());
        let k = StreamKey::from_path_and_query(
            "/gb/a/b",
            Some("start=2024-05-01T08:00:00&end=2024-05-01T08:10:00"),
        )
        .unwrap();
        assert_eq!(k.as_str(), "gb/a/b/playback/1714550400-1714551000");
        let r = k.playback_range().unwrap();
        assert_eq!((r.start, r.end), (1_714_550_400, 1_714_551_000));
        let live = StreamKey::from_path_and_query("/gb/a/b", Some("token=x")).unwrap();
        assert_eq!(live.as_str(), "gb/a/b");
        assert_eq!(live.playback_range(), None);
        assert_eq!(
            StreamKey::from_path("/x/1-2").unwrap().playback_range(),
            None
        );
    }
}
