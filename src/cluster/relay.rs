//! `cluster.viewer_routing: relay` (origin/edge): a viewer on a node that
//! does not own the device is served from a local hub that pulls the
//! stream once from the owner over RTSP (retina, TCP interleaved) and fans
//! it out here, so a popular camera's audience spreads over nodes while
//! the device sends one stream. Only the owner holds the device's SIP
//! registration, and its stream table starts each stream once however
//! many nodes relay it: that is what makes two viewers on two nodes cause
//! one INVITE.
//!
//! A relay ends (and the stream table restarts it while viewers remain)
//! when the device's owner changes, so after a failover viewers follow the
//! device to its new owner, or to this node if it is the one.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::Cluster;
use crate::media::hub::Hub;
use crate::media::rtsp_pull::{Pump, open};
use crate::metrics;
use crate::streams::{
    SourceHandle, SourceOptions, SourceProvider, StartError, StartFuture, StreamKey,
};

/// How often a running relay checks that its origin still owns the device.
const OWNER_CHECK: Duration = Duration::from_secs(1);

/// The `gb` scheme's provider in relay mode: relays another node's
/// devices, starts this node's own through `local`.
pub struct RelaySources {
    local: Arc<dyn SourceProvider>,
    cluster: Cluster,
    connect_timeout: Duration,
}

impl RelaySources {
    pub fn new(
        local: Arc<dyn SourceProvider>,
        cluster: Cluster,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            local,
            cluster,
            connect_timeout,
        }
    }
}

fn pull_error(kind: &'static str) {
    metrics::get()
        .cluster_relay_errors
        .get_or_create(&metrics::label("kind", kind))
        .inc();
}

impl SourceProvider for RelaySources {
    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        match self.cluster.relay_origin(key.as_str()) {
            Some(origin) => Box::pin(self.relay(key, hub, origin)),
            None => self.local.start(key, hub),
        }
    }

    fn start_with<'a>(
        &'a self,
        key: &'a StreamKey,
        hub: Arc<Hub>,
        options: &'a SourceOptions,
    ) -> StartFuture<'a> {
        match self.cluster.relay_origin(key.as_str()) {
            Some(origin) => Box::pin(self.relay(key, hub, origin)),
            None => self.local.start_with(key, hub, options),
        }
    }

    fn playback(&self, key: &StreamKey) -> Option<Arc<dyn crate::streams::PlaybackControl>> {
        self.local.playback(key)
    }
}

impl RelaySources {
    async fn relay(
        &self,
        key: &StreamKey,
        hub: Arc<Hub>,
        origin: crate::streams::owners::RemoteNode,
    ) -> Result<SourceHandle, StartError> {
        let url = format!("rtsp://{}/{}", origin.rtsp, key.as_str());
        let url = url::Url::parse(&url)
            .map_err(|e| StartError::Failed(format!("relay URL {url}: {e}")))?;
        let session = match tokio::time::timeout(self.connect_timeout, open(url.clone())).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                pull_error("rtsp");
                warn!(%url, error = %e, "cluster relay: the owner refused the stream");
                return Err(e);
            }
            Err(_) => {
                pull_error("connect");
                return Err(StartError::Timeout(self.connect_timeout));
            }
        };
        info!(%url, node = %origin.node, "cluster relay: pulling from the owner");
        let cancel = CancellationToken::new();
        let gone = CancellationToken::new();
        // The device moved (failover, rebalancing): end this relay so the
        // stream table starts the stream again where the device now is.
        {
            let cluster = self.cluster.clone();
            let key = key.as_str().to_owned();
            let (cancel, gone) = (cancel.clone(), gone.clone());
            let node = origin.node.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(OWNER_CHECK);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    if cluster.relay_origin(&key).is_none_or(|o| o.node != node) {
                        gone.cancel();
                        break;
                    }
                }
            });
        }
        let pump = Pump {
            hub,
            gone,
            on_error: pull_error,
            what: "cluster relay",
        };
        let span = tracing::Span::current();
        let run = pump.run(session, cancel.clone());
        let task = tokio::spawn(
            async move {
                metrics::get().cluster_relays.inc();
                let exit = run.await;
                metrics::get().cluster_relays.dec();
                exit
            }
            .instrument(span),
        );
        Ok(SourceHandle { cancel, task })
    }
}
