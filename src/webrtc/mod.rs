//! WebRTC egress for WHEP viewers (draft-ietf-wish-whep), on `str0m`.
//!
//! Why str0m: it is sans-IO like the rest of camgate (datagrams and time
//! in, datagrams out), so every peer shares one UDP port and runs as a
//! plain task; webrtc-rs owns sockets and timers per peer instead.
//!
//! The server is ICE-lite (RFC 8445 §2.5): the SDP answer lists every local
//! candidate (a host candidate per configured IP, announced under its
//! `nat_1to1_ips` entry when there is one) and the browser does the checks, so there is no
//! trickle ICE and the WHEP resource answers PATCH with 405.
//!
//! Media is passed through: H.264 from the camera goes to the browser as
//! it came (see [`codec`] for profile negotiation), G.711 likewise when the
//! browser accepts it. H.265 and MJPEG sources are transcoded to H.264
//! Constrained Baseline, one transcode per stream shared by its browsers
//! ([`crate::transcode`]); other video codecs are refused.
//!
//! - [`udp`]: the shared port and datagram routing by ICE ufrag / address
//! - [`peer`]: one browser (sans-IO wrapper over `str0m::Rtc`)
//! - [`session`]: the tokio task driving a peer
//! - [`annexb`]: frames as the one buffer str0m wants, shared per stream
//! - [`whep_auth`]: who may open a session (the RTSP path rules)
//! - [`talk`], [`talk_audio`]: the browser's microphone to a device's speaker

pub mod annexb;
pub mod codec;
pub mod peer;
mod session;
pub mod talk;
pub mod talk_audio;
pub mod udp;
pub mod whep_auth;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::metrics::{self, label};
use crate::streams::{StartError, StreamKey, Streams};
use crate::transcode::{TranscodeError, Transcodes};
use annexb::FrameCache;
use peer::{LocalAddr, Peer, PeerError};
use udp::UdpMux;

/// Datagrams queued for one peer before new ones are dropped.
const INBOX_DATAGRAMS: usize = 256;

#[derive(Clone, Debug)]
pub struct WebRtcConfig {
    pub udp_port: u16,
    /// Local IPs to bind and announce.
    pub ips: Vec<IpAddr>,
    /// Public IPs announced instead, one per entry of `ips` (or none).
    pub nat_1to1_ips: Vec<IpAddr>,
    pub connect_timeout: Duration,
    pub max_peers: usize,
    /// How long a WHEP POST waits for the source to reveal its codec.
    pub describe_timeout: Duration,
    /// Audio with no video for this long is offered as audio only.
    pub audio_only_after: Duration,
    /// Transcoding of H.265 and MJPEG sources for browsers.
    pub transcode: crate::transcode::TranscodeConfig,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            udp_port: 0,
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            nat_1to1_ips: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            max_peers: 2000,
            describe_timeout: Duration::from_secs(5),
            audio_only_after: crate::media::hub::DEFAULT_AUDIO_ONLY_AFTER,
            transcode: crate::transcode::TranscodeConfig::default(),
        }
    }
}

/// Why a WHEP request failed; the HTTP layer maps it to a status.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the stream sent no video description in time")]
    NotDescribed,
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("too many WebRTC viewers ({0})")]
    TooMany(usize),
    #[error(transparent)]
    Transcode(#[from] TranscodeError),
}

impl WhepError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            WhepError::Start(StartError::NotFound(_)) => "not_found",
            WhepError::Start(_) => "start_failed",
            WhepError::NotDescribed => "not_described",
            WhepError::Peer(e) => e.kind(),
            WhepError::TooMany(_) => "too_many",
            WhepError::Transcode(e) => match e {
                TranscodeError::Disabled | TranscodeError::Unsupported(_) => "source_codec",
                TranscodeError::TooMany(_) => "too_many_transcodes",
                _ => "transcode_failed",
            },
        }
    }
}

/// A started WHEP session: its resource id and the SDP answer.
#[derive(Debug)]
pub struct WhepSession {
    pub id: String,
    pub answer: String,
}

struct Resource {
    cancel: CancellationToken,
    key: StreamKey,
    created: Instant,
}

struct Inner {
    config: WebRtcConfig,
    mux: Arc<UdpMux>,
    locals: Vec<LocalAddr>,
    resources: Mutex<HashMap<String, Resource>>,
    /// One gathered-frame cache per stream, shared by its peers.
    caches: Mutex<HashMap<StreamKey, Weak<FrameCache>>>,
    /// Browser talk sessions ([`talk`]) by id.
    talks: Mutex<HashMap<String, CancellationToken>>,
    /// H.265 and MJPEG streams being transcoded for browsers.
    transcodes: Transcodes,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Offers past the `max_peers` check and not yet in `resources`: they
    /// hold a slot through their awaits, so concurrent offers cannot all
    /// pass the check before any of them is counted.
    reserved: std::sync::atomic::AtomicUsize,
}

/// A peer slot held by an offer being answered; released on drop (by
/// then the peer is in `resources`, or the offer failed).
struct PeerSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The WebRTC engine: shared UDP port, live peers, WHEP resources.
#[derive(Clone)]
pub struct WebRtc {
    inner: Arc<Inner>,
}

/// One row of the WHEP session list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WhepSummary {
    pub id: String,
    pub stream: StreamKey,
    pub seconds: u64,
}

impl WebRtc {
    /// Bind the shared port and start receiving; peers end on `shutdown`.
    pub async fn start(config: WebRtcConfig, shutdown: CancellationToken) -> std::io::Result<Self> {
        let mux = UdpMux::bind(&config.ips, config.udp_port).await?;
        let bound = mux.local_addrs();
        let locals = bound
            .iter()
            .enumerate()
            .map(|(i, b)| LocalAddr {
                bound: *b,
                announced: config
                    .nat_1to1_ips
                    .get(i)
                    .map_or(*b, |ip| SocketAddr::new(*ip, b.port())),
            })
            .collect();
        tokio::spawn(mux.clone().run(shutdown.clone()));
        let transcodes = Transcodes::new(config.transcode.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                mux,
                locals,
                resources: Mutex::new(HashMap::new()),
                caches: Mutex::new(HashMap::new()),
                talks: Mutex::new(HashMap::new()),
                transcodes,
                tasks: TaskTracker::new(),
                shutdown,
                reserved: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    /// The local addresses of the shared port.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.mux.local_addrs()
    }

    pub fn peers(&self) -> usize {
        self.resources().len()
    }

    /// Take one of `max_peers` slots, counting offers still being set up.
    fn reserve_slot(&self) -> Option<PeerSlot<'_>> {
        use std::sync::atomic::Ordering;
        let max = self.inner.config.max_peers;
        let reserved = &self.inner.reserved;
        let mut current = reserved.load(Ordering::Acquire);
        loop {
            if self.peers() + current >= max {
                return None;
            }
            match reserved.compare_exchange(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(PeerSlot(reserved)),
                Err(now) => current = now,
            }
        }
    }

    pub fn sessions(&self) -> Vec<WhepSummary> {
        let mut list: Vec<_> = self
            .resources()
            .iter()
            .map(|(id, r)| WhepSummary {
                id: id.clone(),
                stream: r.key.clone(),
                seconds: r.created.elapsed().as_secs(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    fn resources(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resource>> {
        self.inner
            .resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Answer a WHEP offer for `key`: start (or join) the stream, set up
    /// the peer, and run it until DELETE, ICE loss or the stream's end.
    pub async fn play(
        &self,
        streams: &Streams,
        key: StreamKey,
        offer: &str,
    ) -> Result<WhepSession, WhepError> {
        let result = self.try_play(streams, key.clone(), offer).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::get()
            .webrtc_sessions
            .get_or_create(&label("outcome", outcome))
            .inc();
        if let Err(e) = &result {
            warn!(stream = %key, error = %e, "WHEP offer refused");
        }
        result
    }

    async fn try_play(
        &self,
        streams: &Streams,
        key: StreamKey,
        offer: &str,
    ) -> Result<WhepSession, WhepError> {
        let max = self.inner.config.max_peers;
        let _slot = self.reserve_slot().ok_or(WhepError::TooMany(max))?;
        let viewer = streams.open(&key).await?;
        let info = viewer
            .hub()
            .wait_described_or_audio_only(
                self.inner.config.describe_timeout,
                self.inner.config.audio_only_after,
            )
            .await;
        // Audio only (an intercom, an audio channel) is served as such.
        if info.video.is_none() && info.audio.is_none() {
            return Err(WhepError::NotDescribed);
        }
        // H.265 and MJPEG reach browsers through the stream's transcode,
        // whose output is what the peer is set up for.
        let transcode = self.inner.transcodes.join(&key, viewer.hub(), &info)?;
        let (info, preferred) = match &transcode {
            Some(t) => (
                t.wait_ready(self.inner.config.describe_timeout).await?,
                Some(codec::CONSTRAINED_BASELINE_31),
            ),
            None => (info, None),
        };
        let (peer, answer) =
            Peer::accept_preferring(offer, &info, &self.inner.locals, Instant::now(), preferred)?;
        let id = format!("{:032x}", rand::random::<u128>());
        let (inbox_tx, inbox) = mpsc::channel(INBOX_DATAGRAMS);
        self.inner
            .mux
            .register(peer.ufrag(), peer.ice_pwd(), inbox_tx);
        let cancel = self.inner.shutdown.child_token();
        self.resources().insert(
            id.clone(),
            Resource {
                cancel: cancel.clone(),
                key: key.clone(),
                created: Instant::now(),
            },
        );
        metrics::get().webrtc_peers.inc();
        info!(%id, stream = %key, "WebRTC viewer offered");
        let session = session::Session {
            id: id.clone(),
            peer,
            viewer,
            inbox,
            mux: self.inner.mux.clone(),
            cache: self.cache_for(&key),
            transcode,
            cancel,
            connect_timeout: self.inner.config.connect_timeout,
            owner: self.clone(),
        };
        let span = info_span!("whep", %id, stream = %key);
        self.inner.tasks.spawn(session.run().instrument(span));
        Ok(WhepSession { id, answer })
    }

    fn cache_for(&self, key: &StreamKey) -> Arc<FrameCache> {
        let mut caches = self.inner.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|_, c| c.strong_count() > 0);
        if let Some(c) = caches.get(key).and_then(Weak::upgrade) {
            return c;
        }
        let c = Arc::new(FrameCache::default());
        caches.insert(key.clone(), Arc::downgrade(&c));
        c
    }

    /// The stream session `id` plays, if there is such a session.
    pub fn stream_of(&self, id: &str) -> Option<StreamKey> {
        self.resources().get(id).map(|r| r.key.clone())
    }

    /// End the session `id` (WHEP DELETE); false when there is none.
    pub fn stop(&self, id: &str) -> bool {
        match self.resources().get(id) {
            Some(r) => {
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Called by a session as it ends.
    fn forget(&self, id: &str) {
        if self.resources().remove(id).is_some() {
            metrics::get().webrtc_peers.dec();
        }
    }

    /// Wait for every session to end (after `shutdown`).
    pub async fn wait(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}
