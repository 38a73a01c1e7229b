//! On-demand stream lifecycle: `StreamKey` → hub, single-flight start,
//! restart while watched, idle teardown.
//!
//! Each stream has one supervisor task that owns its source. Viewers only
//! touch an atomic count and a `Notify`; the supervisor decides when to
//! start, restart and stop. The viewer count is changed under the table
//! lock so that "last viewer left, remove the stream" and "a new viewer
//! arrived" can never interleave badly.

pub mod directory;
pub mod recording;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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
/// the task finishes on its own the source died, with the reason it returns.
pub struct SourceHandle {
    pub cancel: CancellationToken,
    pub task: JoinHandle<String>,
}

/// What a source task returns when its media ended by design (a recording
/// played to its end): the stream ends for its viewers and is not
/// restarted, unlike any other return, which means the source died.
pub const SOURCE_FINISHED: &str = "end of stream";

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
    Failed(StartError),
}

#[derive(Clone, Debug)]
pub struct StreamsConfig {
    pub idle_timeout: Duration,
    /// Upper bound on a start; providers should time out sooner themselves.
    pub start_timeout: Duration,
    pub restart_attempts: u32,
    pub restart_backoff: Duration,
    pub hub: HubConfig,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(6),
            restart_attempts: 3,
            restart_backoff: Duration::from_secs(1),
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

/// One row of `GET /api/v1/streams`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamSummary {
    pub key: StreamKey,
    pub state: &'static str,
    pub viewers: usize,
    pub bitrate_bps: u64,
    pub frames: u64,
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
            }),
        }
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
            Ok(Phase::Running) => Ok(viewer),
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
        let mut rows: Vec<StreamSummary> = table
            .values()
            .map(|e| StreamSummary {
                key: e.key.clone(),
                state: match *e.phase.borrow() {
                    Phase::Starting => "starting",
                    Phase::Running => "running",
                    Phase::Failed(_) => "failed",
                },
                viewers: e.viewers.load(Ordering::SeqCst),
                bitrate_bps: e.hub.stats.bitrate_bps(),
                frames: e
                    .hub
                    .stats
                    .frames_in
                    .load(std::sync::atomic::Ordering::Relaxed),
                since: e
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
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
    Died(String),
}

async fn supervise(inner: Arc<Inner>, entry: Arc<Entry>, provider: Arc<dyn SourceProvider>) {
    let cfg = inner.config.clone();
    let mut attempt = 0u32;
    loop {
        let started_at = Instant::now();
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
                warn!(error = %e, attempt, "stream start failed");
                if attempt > 0
                    && attempt < cfg.restart_attempts
                    && entry.viewers.load(Ordering::SeqCst) > 0
                    && !inner.shutdown.is_cancelled()
                {
                    attempt += 1;
                    tokio::time::sleep(cfg.restart_backoff).await;
                    continue;
                }
                inner.remove(&entry);
                entry.phase.send_replace(Phase::Failed(e));
                entry.hub.close();
                return;
            }
        };
        metrics::get().stream_starts.inc();
        metrics::get().streams_active.inc();
        info!(
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            "stream started"
        );
        entry.phase.send_replace(Phase::Running);

        let stop = watch_viewers(&inner, &entry, &mut handle.task, &cfg).await;
        metrics::get().streams_active.dec();
        match stop {
            Stop::Died(reason) if reason == SOURCE_FINISHED => {
                metrics::get()
                    .stream_stops
                    .get_or_create(&label("reason", "finished"))
                    .inc();
                info!("source finished");
                inner.remove(&entry);
                entry.hub.close();
                return;
            }
            Stop::Died(reason) => {
                metrics::get()
                    .stream_stops
                    .get_or_create(&label("reason", "failed"))
                    .inc();
                warn!(%reason, "source ended");
                if entry.viewers.load(Ordering::SeqCst) > 0
                    && attempt < cfg.restart_attempts
                    && !inner.shutdown.is_cancelled()
                {
                    attempt += 1;
                    entry.phase.send_replace(Phase::Starting);
                    tokio::time::sleep(cfg.restart_backoff).await;
                    continue;
                }
                inner.remove(&entry);
                entry.hub.close();
                return;
            }
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
                inner.remove(&entry);
                entry.hub.close();
                return;
            }
        }
    }
}

/// Run until the source dies, shutdown, or nobody has watched for
/// `idle_timeout`.
async fn watch_viewers(
    inner: &Inner,
    entry: &Arc<Entry>,
    task: &mut JoinHandle<String>,
    cfg: &StreamsConfig,
) -> Stop {
    loop {
        // Register interest before reading the count so no change is missed.
        let changed = entry.viewers_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let watched = entry.viewers.load(Ordering::SeqCst) > 0;
        tokio::select! {
            r = &mut *task => {
                return Stop::Died(r.unwrap_or_else(|e| format!("source task failed: {e}")));
            }
            _ = inner.shutdown.cancelled() => return Stop::Shutdown,
            _ = &mut changed => continue,
            _ = tokio::time::sleep(cfg.idle_timeout), if !watched => {
                if inner.remove_if_unwatched(entry) {
                    return Stop::Idle;
                }
            }
        }
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
                    "stopped".to_owned()
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
