//! The tokio driver of one peer: feeds it datagrams from the shared
//! socket, frames from the stream's hub and timer ticks, and sends what it
//! produces.
//!
//! Frames are read one at a time and written before the next is read, so
//! a peer that cannot keep up falls behind in the hub, which skips it to
//! the next key frame (and counts it) rather than buffering here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::WebRtc;
use super::annexb::FrameCache;
use super::peer::{Peer, PeerError, PeerOutput};
use super::udp::{Datagram, UdpMux};
use crate::media::frame::Frame;
use crate::media::hub::{StreamEnded, Subscription};
use crate::metrics::{self, label};
use crate::streams::Viewer;
use crate::transcode::SharedTranscode;

pub(super) struct Session {
    pub id: String,
    pub peer: Peer,
    pub viewer: Viewer,
    pub inbox: mpsc::Receiver<Datagram>,
    pub mux: Arc<UdpMux>,
    pub cache: Arc<FrameCache>,
    /// The stream's transcode when its video is not H.264: frames come
    /// from it instead of the source.
    pub transcode: Option<Arc<SharedTranscode>>,
    pub cancel: CancellationToken,
    pub connect_timeout: Duration,
    pub owner: WebRtc,
}

/// Why a session ended, as a metric label.
fn end_label(reason: &str) -> &'static str {
    match reason {
        "deleted" => "deleted",
        "ice_closed" => "ice_closed",
        "connect_timeout" => "connect_timeout",
        "stream_ended" => "stream_ended",
        _ => "error",
    }
}

async fn next_frame(sub: &mut Option<Subscription>) -> Result<Arc<Frame>, StreamEnded> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn count_error(e: &PeerError) {
    metrics::get()
        .webrtc_errors
        .get_or_create(&label("kind", e.kind()))
        .inc();
}

impl Session {
    pub(super) async fn run(mut self) {
        let started = Instant::now();
        let connect_deadline = started + self.connect_timeout;
        let mut sub: Option<Subscription> = None;
        let reason: &str = loop {
            let wait = match self.flush(&mut sub).await {
                Ok(Some(wait)) => wait,
                Ok(None) => break "ice_closed",
                Err(e) => {
                    count_error(&e);
                    warn!(error = %e, "WebRTC peer failed");
                    break "error";
                }
            };
            if !self.peer.is_alive() {
                break "ice_closed";
            }
            let deadline = if self.peer.is_connected() {
                wait
            } else {
                wait.min(connect_deadline)
            };
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    self.peer.close();
                    // Let the close_notify out; the peer is not waited for.
                    let _ = self.flush(&mut sub).await;
                    break "deleted";
                }
                datagram = self.inbox.recv() => {
                    let Some(d) = datagram else { break "deleted" };
                    if let Err(e) = self.peer.handle_datagram(Instant::now(), d.source, d.destination, &d.data) {
                        // One bad datagram is the sender's problem, not the
                        // session's; str0m keeps its state consistent.
                        count_error(&e);
                        debug!(error = %e, from = %d.source, "WebRTC datagram rejected");
                    }
                }
                frame = next_frame(&mut sub) => {
                    let Ok(frame) = frame else {
                        // The source is gone for good: close the peer
                        // connection so the browser learns at once.
                        self.peer.close();
                        let _ = self.flush(&mut sub).await;
                        break "stream_ended";
                    };
                    let cache = &self.cache;
                    match self.peer.send_frame(Instant::now(), &frame, || cache.get(&frame)) {
                        Ok(true) => {
                            metrics::get().webrtc_frames_sent.inc();
                        }
                        Ok(false) => {}
                        Err(e) => {
                            count_error(&e);
                            debug!(error = %e, "WebRTC frame not written");
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if !self.peer.is_connected() && now >= connect_deadline {
                        break "connect_timeout";
                    }
                    if let Err(e) = self.peer.handle_timeout(now) {
                        count_error(&e);
                        warn!(error = %e, "WebRTC peer timer failed");
                        break "error";
                    }
                }
            }
        };
        info!(
            id = %self.id,
            stream = %self.viewer.key(),
            reason,
            seconds = started.elapsed().as_secs_f64(),
            "WebRTC viewer left"
        );
        metrics::get()
            .webrtc_sessions_ended
            .get_or_create(&label("reason", end_label(reason)))
            .inc();
        self.mux.unregister(self.peer.ufrag());
        self.owner.forget(&self.id);
    }

    /// Send everything the peer has queued. `Ok(None)` when it closed,
    /// else the time it next wants a tick.
    async fn flush(
        &mut self,
        sub: &mut Option<Subscription>,
    ) -> Result<Option<Instant>, PeerError> {
        let mut bytes = 0u64;
        let result = loop {
            match self.peer.poll() {
                Ok(PeerOutput::Transmit {
                    source,
                    destination,
                    data,
                }) => {
                    let Some(socket) = self.mux.socket_for(source) else {
                        continue;
                    };
                    // try_send_to first: the common case needs no await.
                    let sent = match socket.try_send_to(&data, destination) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            socket.send_to(&data, destination).await
                        }
                        other => other,
                    };
                    // A lost datagram is UDP's normal failure; ICE consent
                    // decides whether the peer is still there.
                    if let Ok(n) = sent {
                        bytes += n as u64;
                    }
                }
                Ok(PeerOutput::Connected) => {
                    info!(id = %self.id, stream = %self.viewer.key(), pt = ?self.peer.video_choice().map(|c| c.pt), "WebRTC viewer connected");
                    // Subscribing now, not earlier: str0m drops media written
                    // before DTLS is up, and the GOP cache gives a key frame.
                    *sub = Some(match &self.transcode {
                        Some(t) => t.subscribe(),
                        None => self.viewer.subscribe(),
                    });
                }
                Ok(PeerOutput::KeyframeRequested) => {
                    metrics::get().webrtc_keyframe_requests.inc();
                    if let Some(t) = &self.transcode {
                        t.request_keyframe();
                    }
                }
                Ok(PeerOutput::Closed) => break Ok(None),
                Ok(PeerOutput::Wait(t)) => break Ok(Some(t)),
                Err(e) => break Err(e),
            }
        };
        if bytes > 0 {
            metrics::get().webrtc_bytes_sent.inc_by(bytes);
        }
        result
    }
}
