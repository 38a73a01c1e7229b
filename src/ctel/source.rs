//! The `ctel` stream scheme (手机看店 spec V1.3 §15): a first viewer of
//! `ctel/{devId}/{channel}` (main stream, StreamType 1) or
//! `ctel/{devId}/{channel}/sub` (sub stream, StreamType 2) leads here. We
//! mint a one-time token and pull
//! `rtsp://{ip}:{port}/realplay?devid=…&channelno=…&streamtype=…&hashtoken=…`
//! from the device with retina over TCP interleaved, trying its LocalIP,
//! then UpnpIP, then TurnRelayIP address, and publish the H.264 access
//! units into the stream's hub.
//!
//! The sub stream is a path segment rather than `?streamtype=2` because a
//! [`StreamKey`] is the URL path only: the query never reaches providers,
//! and keying on the path keeps main and sub as two distinct hubs.
//!
//! Each address attempt gets its own token, so a device that consumed a
//! token and then failed cannot make the next attempt look like a replay.
//! The stream ends when the viewers go (cancel → retina sends TEARDOWN as
//! it drops the session) or when the device's link goes.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::platform::{CommandError, CtelPlatform};
use crate::media::hub::Hub;
use crate::media::rtsp_pull::{Pump, open};
use crate::metrics::{self, label};
use crate::streams::{SourceHandle, SourceProvider, StartError, StartFuture, StreamKey};

pub struct CtelSources {
    platform: Arc<CtelPlatform>,
}

impl CtelSources {
    pub fn new(platform: Arc<CtelPlatform>) -> Self {
        Self { platform }
    }
}

impl SourceProvider for CtelSources {
    fn start<'a>(&'a self, key: &'a StreamKey, hub: Arc<Hub>) -> StartFuture<'a> {
        Box::pin(start_live(self.platform.clone(), key, hub))
    }
}

/// `ctel/{devId}/{channel}[/sub]` → (device, channel, StreamType).
pub fn parse_key(key: &StreamKey) -> Option<(&str, u16, u8)> {
    let mut seg = key.segments();
    let dev = seg.next()?;
    let channel: u16 = seg.next()?.parse().ok()?;
    let stream_type = match seg.next() {
        None => 1,
        Some("sub") => 2,
        Some("main") => 1,
        Some(_) => return None,
    };
    if seg.next().is_some() || dev.is_empty() || !dev.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((dev, channel, stream_type))
}

fn pull_error(kind: &'static str) {
    metrics::get()
        .ctel_pull_errors
        .get_or_create(&label("kind", kind))
        .inc();
}

async fn start_live(
    platform: Arc<CtelPlatform>,
    key: &StreamKey,
    hub: Arc<Hub>,
) -> Result<SourceHandle, StartError> {
    let Some((dev_id, channel, stream_type)) = parse_key(key) else {
        return Err(StartError::NotFound(format!(
            "{key}: expected ctel/{{devId}}/{{channel}} or ctel/{{devId}}/{{channel}}/sub"
        )));
    };
    let budget = platform.config.rtsp_connect_timeout;
    let mut last_error = StartError::Offline(dev_id.to_owned());
    let mut tried = 0;
    loop {
        let ticket = platform
            .ticket_live(
                dev_id,
                channel,
                stream_type,
                Instant::now(),
                SystemTime::now(),
                rand::random(),
            )
            .map_err(|e| match e {
                CommandError::UnknownDevice(d) => StartError::NotFound(d),
                _ => {
                    pull_error("offline");
                    StartError::Offline(dev_id.to_owned())
                }
            })?;
        let Some(&addr) = ticket.addresses.get(tried) else {
            if tried == 0 {
                pull_error("no_address");
                return Err(StartError::Failed(format!(
                    "device {dev_id} gave no RTSP address"
                )));
            }
            return Err(last_error);
        };
        tried += 1;
        let url = format!(
            "rtsp://{addr}/realplay?devid={dev_id}&channelno={channel}&streamtype={stream_type}&hashtoken={}",
            ticket.token
        );
        let Ok(url) = url::Url::parse(&url) else {
            return Err(StartError::Failed(format!("bad device address {addr}")));
        };
        debug!(%addr, "pulling device RTSP");
        match tokio::time::timeout(budget, open(url)).await {
            Ok(Ok(session)) => {
                info!(%addr, "device RTSP playing");
                let cancel = CancellationToken::new();
                let pump = Pump {
                    hub,
                    gone: ticket.gone,
                    on_error: pull_error,
                    what: "telecom pull",
                };
                let span = tracing::Span::current();
                let task = tokio::spawn(pump.run(session, cancel.clone()).instrument(span));
                return Ok(SourceHandle { cancel, task });
            }
            Ok(Err(e)) => {
                pull_error("rtsp");
                warn!(%addr, error = %e, "device RTSP refused");
                last_error = e;
            }
            Err(_) => {
                pull_error("connect");
                warn!(%addr, "device RTSP did not answer within {budget:?}");
                last_error = StartError::Timeout(budget);
            }
        }
    }
}

/// DESCRIBE, SETUP (TCP interleaved) and PLAY the device's first video stream.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = |s| StreamKey::from_path(s).unwrap();
        assert_eq!(
            parse_key(&k("ctel/81200000001/0")),
            Some(("81200000001", 0, 1))
        );
        assert_eq!(
            parse_key(&k("ctel/81200000001/3/sub")),
            Some(("81200000001", 3, 2))
        );
        assert_eq!(parse_key(&k("ctel/81200000001/x")), None);
        assert_eq!(parse_key(&k("ctel/81200000001/0/hd")), None);
        assert_eq!(parse_key(&k("ctel/abc/0")), None);
        assert_eq!(parse_key(&k("ctel/81200000001/0/sub/x")), None);
    }
}
