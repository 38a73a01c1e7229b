//! Recorded media from a device (GB/T 28181-2016 §9.8 playback and §9.9
//! download): the INVITE differs from a live one only in its SDP offer —
//! `s=Playback` or `s=Download`, `u={channel}:0`, `t={start} {end}` in Unix
//! seconds, `a=downloadspeed:N` for downloads — and in an SSRC whose first
//! digit is 1 (history). The media path is the live one; the session ends
//! when the device reports end of file (`MediaStatus` 121) as well as on
//! BYE, silence or cancellation.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::download::{FetchFuture, RecordingFetch};
use super::invite::{HistoryParams, start_session};
use super::platform::GbPlatform;
use super::playback::PlaybackRange;
use super::sdp::{GbSdp, SessionName};
use crate::media::hub::Hub;
use crate::sip::invite::CallControl;
use crate::streams::{SourceHandle, StartError};

/// Playback (real-time, controllable) or download (as fast as asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    Playback,
    /// `speed`: the `a=downloadspeed` factor (1–32 on real devices).
    Download {
        speed: u32,
    },
}

/// The offer of a history session: the live offer's media with the
/// session name, `u=` and `t=` of the recording.
pub fn history_offer(
    server_id: &str,
    ip: &str,
    port: u16,
    ssrc: &str,
    channel: &str,
    range: PlaybackRange,
    kind: HistoryKind,
) -> GbSdp {
    let mut sdp = GbSdp::live_offer(server_id, ip, port, ssrc);
    sdp.uri = Some(format!("{channel}:0"));
    sdp.time = (range.start, range.end);
    match kind {
        HistoryKind::Playback => sdp.session_name = SessionName::Playback,
        HistoryKind::Download { speed } => {
            sdp.session_name = SessionName::Download;
            for m in &mut sdp.media {
                m.download_speed = Some(speed.max(1));
            }
        }
    }
    sdp
}

/// A started history session: its task and the dialog for MANSRTSP INFO.
pub struct HistorySession {
    pub source: SourceHandle,
    pub control: CallControl,
    /// Set while paused (see [`super::playback::GbPlayback`]).
    pub paused: Arc<AtomicBool>,
}

/// INVITE `channel` of `device` for `range` and pump the media into `hub`
/// (and, for downloads, the raw PS into `ps_sink`), over
/// `media.transport` (`udp_shared` is used as `udp`).
pub async fn start_history(
    platform: Arc<GbPlatform>,
    device: &str,
    channel: &str,
    range: PlaybackRange,
    kind: HistoryKind,
    hub: Arc<Hub>,
    ps_sink: Option<super::ps_sink::PsSink>,
) -> Result<HistorySession, StartError> {
    let params = HistoryParams::new(&platform, device, channel, range, kind, ps_sink);
    let paused = params.paused.clone();
    let (source, control) =
        start_session(&platform, None, device, channel, hub, None, Some(params)).await?;
    Ok(HistorySession {
        source,
        control,
        paused,
    })
}

/// Download jobs fetch their recordings through the platform's INVITE.
impl RecordingFetch for GbPlatform {
    fn fetch(
        self: Arc<Self>,
        device: String,
        channel: String,
        range: PlaybackRange,
        speed: u32,
        hub: Arc<Hub>,
        ps: super::ps_sink::PsSink,
    ) -> FetchFuture {
        Box::pin(async move {
            let kind = HistoryKind::Download { speed };
            start_history(self, &device, &channel, range, kind, hub, Some(ps))
                .await
                .map(|session| session.source)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_and_download_offers() {
        let range = PlaybackRange {
            start: 1_714_550_400,
            end: 1_714_554_000,
        };
        let text = history_offer(
            "34020000002000000001",
            "127.0.0.1",
            30_000,
            "1340200001",
            "34020000001310000001",
            range,
            HistoryKind::Playback,
        )
        .build();
        assert!(text.contains("s=Playback\r\n"), "{text}");
        assert!(text.contains("u=34020000001310000001:0\r\n"), "{text}");
        assert!(text.contains("t=1714550400 1714554000\r\n"), "{text}");
        assert!(text.contains("y=1340200001\r\n"), "{text}");
        assert!(!text.contains("downloadspeed"), "{text}");

        let text = history_offer(
            "34020000002000000001",
            "127.0.0.1",
            30_000,
            "1340200002",
            "34020000001310000001",
            range,
            HistoryKind::Download { speed: 4 },
        )
        .build();
        assert!(text.contains("s=Download\r\n"), "{text}");
        assert!(text.contains("a=downloadspeed:4\r\n"), "{text}");
        let parsed = GbSdp::parse(&text).unwrap();
        assert_eq!(parsed.time, (range.start, range.end));
        assert_eq!(parsed.video().unwrap().download_speed, Some(4));
    }
}
