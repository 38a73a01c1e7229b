//! Recorded media from a device (GB/T 28181-2016 §9.8 playback and §9.9
//! download): the INVITE differs from a live one only in its SDP offer —
//! `s=Playback` or `s=Download`, `u={channel}:0`, `t={start} {end}` in Unix
//! seconds, `a=downloadspeed:N` for downloads — and in an SSRC whose first
//! digit is 1 (history). The media path is the live one; the session ends
//! when the device reports end of file (`MediaStatus` 121) as well as on
//! BYE, silence or cancellation.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::invite::{EndOfFile, MediaSession, answered_ssrc, send_invite};
use super::platform::GbPlatform;
use super::playback::PlaybackRange;
use super::sdp::{GbSdp, SessionName};
use super::ssrc::SsrcKind;
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
    /// Shared with the media session: set while paused (see [`GbPlayback`]).
    ///
    /// [`GbPlayback`]: super::playback::GbPlayback
    pub paused: Arc<AtomicBool>,
}

/// INVITE `channel` of `device` for `range` and pump the media into `hub`
/// (and, for downloads, the raw PS into `ps_sink`).
pub async fn start_history(
    platform: Arc<GbPlatform>,
    device: &str,
    channel: &str,
    range: PlaybackRange,
    kind: HistoryKind,
    hub: Arc<Hub>,
    ps_sink: Option<tokio::sync::mpsc::Sender<Bytes>>,
) -> Result<HistorySession, StartError> {
    let route = platform.route_for_channel(device, channel)?;
    let ports = platform
        .ports
        .bind_pair()
        .await
        .map_err(|_| StartError::NoPort)?;
    let ssrc = platform.allocate_ssrc(SsrcKind::History)?;
    let config = platform.config();
    let offer = history_offer(
        &config.sip.server_id,
        &config.advertised_ip().to_string(),
        ports.port,
        ssrc.as_str(),
        channel,
        range,
        kind,
    );
    // Subscribe before the INVITE: a short recording may end at once.
    let reports = platform.report_tx.subscribe();
    let sent_at = Instant::now();
    let call = send_invite(&platform, &route, channel, ssrc, offer.build()).await?;
    let expect = answered_ssrc(&call, ssrc);
    let control = call.control();
    let paused = Arc::new(AtomicBool::new(false));
    let session = MediaSession {
        platform: platform.clone(),
        hub,
        ports,
        expect_ssrc: expect,
        ssrc,
        sent_at,
        rtp_timeout: config.media.rtp_timeout,
        end_of_file: Some(EndOfFile {
            device: device.to_owned(),
            channel: channel.to_owned(),
            reports,
        }),
        ps_sink,
        paused: Some(paused.clone()),
    };
    let cancel = CancellationToken::new();
    let span = tracing::Span::current();
    let task = tokio::spawn(session.run(call, cancel.clone()).instrument(span));
    Ok(HistorySession {
        source: SourceHandle { cancel, task },
        control,
        paused,
    })
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
