//! Playback control of a GB28181 history session (GB/T 28181-2016 §9.8):
//! pause, resume, speed and seek, each one MANSRTSP INFO inside the
//! playback INVITE dialog (see [`super::mansrtsp`]).
//!
//! [`GbPlayback`] implements [`crate::streams::PlaybackControl`], the
//! interface the RTSP and WebRTC sides call (RTSP `PAUSE`, `PLAY` with
//! `Scale:` or `Range: npt=N-`), over one GB28181 call. CSeqs count up per
//! session as the standard's examples do.
//!
//! Stream keys: the RTSP path `gb/{dev}/{ch}?start=…&end=…` is named
//! internally `gb/{dev}/{ch}/playback/{start}-{end}` with both times as
//! Unix seconds ([`playback_key`]), so two viewers of the same range share
//! one session and a live viewer of the channel never does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tracing::{info, warn};

use super::gbtime;
use super::mansrtsp::{CONTENT_TYPE, PlaybackCommand, valid_scale};
use crate::metrics::{self, label};
use crate::sip::invite::CallControl;
use crate::streams::{
    ControlFuture, PlaybackCommand as ViewerCommand, PlaybackControl, StartError,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaybackError {
    #[error("scale {0} is not one of 0.25, 0.5, 1, 2, 4, 8")]
    BadScale(String),
    #[error("device answered the INFO with {0}")]
    Refused(u16),
    #[error("INFO failed: {0}")]
    Failed(String),
}

impl PlaybackError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadScale(_) => "bad_scale",
            Self::Refused(_) => "refused",
            Self::Failed(_) => "failed",
        }
    }
}

impl From<PlaybackError> for StartError {
    fn from(e: PlaybackError) -> Self {
        match e {
            PlaybackError::Refused(code) => StartError::Rejected {
                code,
                reason: "playback control refused".into(),
            },
            other => StartError::Failed(other.to_string()),
        }
    }
}

/// Playback control over one GB28181 playback dialog.
pub struct GbPlayback {
    call: CallControl,
    cseq: AtomicU32,
    /// Told to the media session, which then does not take the device's
    /// silence for death.
    paused: Arc<AtomicBool>,
}

impl GbPlayback {
    pub fn new(call: CallControl, paused: Arc<AtomicBool>) -> Self {
        Self {
            call,
            cseq: AtomicU32::new(1),
            paused,
        }
    }

    /// Send one MANSRTSP command in the dialog.
    pub async fn send(&self, cmd: PlaybackCommand) -> Result<(), PlaybackError> {
        if let PlaybackCommand::Scale(s) = cmd
            && !valid_scale(s)
        {
            return Err(PlaybackError::BadScale(s.to_string()));
        }
        let cseq = self.cseq.fetch_add(1, Ordering::Relaxed);
        let body = cmd.body(cseq);
        let outcome = match self.call.info(CONTENT_TYPE, body.into_bytes()).await {
            Ok(code) if (200..300).contains(&code) => Ok(()),
            Ok(code) => Err(PlaybackError::Refused(code)),
            Err(e) => Err(PlaybackError::Failed(e.to_string())),
        };
        if outcome.is_ok() {
            self.paused
                .store(cmd == PlaybackCommand::Pause, Ordering::Relaxed);
        }
        let kind = match &outcome {
            Ok(()) => "ok",
            Err(e) => e.kind(),
        };
        metrics::get()
            .gb_playback_commands
            .get_or_create(&label("outcome", kind))
            .inc();
        match &outcome {
            Ok(()) => info!(?cmd, cseq, "playback control sent"),
            Err(e) => warn!(?cmd, cseq, "playback control failed: {e}"),
        }
        outcome
    }
}

/// A viewer's trick-play request as the MANSRTSP command devices take:
/// seeks are whole seconds from the range start (fractions dropped,
/// negatives are 0); a scale outside 0.25–8 is refused when sent.
pub fn mansrtsp_command(cmd: ViewerCommand) -> PlaybackCommand {
    match cmd {
        ViewerCommand::Pause => PlaybackCommand::Pause,
        ViewerCommand::Resume => PlaybackCommand::Resume,
        ViewerCommand::Scale(s) => PlaybackCommand::Scale(s),
        ViewerCommand::Seek(secs) => {
            PlaybackCommand::Seek(secs.clamp(0.0, f64::from(u32::MAX)) as u32)
        }
    }
}

impl PlaybackControl for GbPlayback {
    fn command(&self, command: ViewerCommand) -> ControlFuture<'_> {
        Box::pin(async move {
            self.send(mansrtsp_command(command))
                .await
                .map_err(StartError::from)
        })
    }
}

/// A requested recording range, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackRange {
    pub start: u64,
    pub end: u64,
}

/// Read `start=…&end=…` (GB times, ISO 8601 without zone) from an RTSP
/// path's query string.
pub fn parse_range(query: &str) -> Option<PlaybackRange> {
    let mut start = None;
    let mut end = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=')?;
        let v = v.replace("%3A", ":").replace("%3a", ":");
        match k {
            "start" => start = gbtime::parse(&v),
            "end" => end = gbtime::parse(&v),
            _ => {}
        }
    }
    let (start, end) = (start?, end?);
    (end > start).then_some(PlaybackRange { start, end })
}

/// The internal stream key of a playback: `gb/{dev}/{ch}/playback/{start}-{end}`.
pub fn playback_key(device: &str, channel: &str, range: PlaybackRange) -> String {
    format!(
        "gb/{device}/{channel}/playback/{}-{}",
        range.start, range.end
    )
}

/// The range back out of a key's last segment.
pub fn range_of_key_segment(segment: &str) -> Option<PlaybackRange> {
    let (a, b) = segment.split_once('-')?;
    let range = PlaybackRange {
        start: a.parse().ok()?,
        end: b.parse().ok()?,
    };
    (range.end > range.start).then_some(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_commands_become_mansrtsp() {
        assert_eq!(
            mansrtsp_command(ViewerCommand::Seek(30.7)),
            PlaybackCommand::Seek(30)
        );
        assert_eq!(
            mansrtsp_command(ViewerCommand::Seek(-3.0)),
            PlaybackCommand::Seek(0)
        );
        assert_eq!(
            mansrtsp_command(ViewerCommand::Scale(2.0)).body(4),
            "PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 2\r\n"
        );
    }

    #[test]
    fn rtsp_query_to_canonical_key_and_back() {
        let r = parse_range("start=2024-05-01T08:00:00&end=2024-05-01T08%3A10%3A00").unwrap();
        assert_eq!(r.end - r.start, 600);
        let key = playback_key("d", "c", r);
        assert_eq!(key, format!("gb/d/c/playback/{}-{}", r.start, r.end));
        assert_eq!(
            range_of_key_segment(key.rsplit('/').next().unwrap()),
            Some(r)
        );
        assert_eq!(
            parse_range("start=2024-05-01T08:10:00&end=2024-05-01T08:00:00"),
            None
        );
        assert_eq!(parse_range("start=x&end=y"), None);
        assert_eq!(range_of_key_segment("5-5"), None);
    }
}
