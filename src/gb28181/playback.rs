//! Playback control of a GB28181 history session (GB/T 28181-2016 §9.8):
//! pause, resume, speed and seek, each one MANSRTSP INFO inside the
//! playback INVITE dialog (see [`super::mansrtsp`]).
//!
//! [`GbPlayback`] implements [`crate::streams::PlaybackControl`], the
//! interface the RTSP and WebRTC sides call (RTSP `PAUSE`, `PLAY` with
//! `Scale:` or `Range: npt=N-`), over one GB28181 call. CSeqs count up per
//! session as the standard's examples do.
//!
//! Ranges and playback stream keys are the stream table's
//! ([`crate::streams::recording`]); they are re-exported here for this
//! module's callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tracing::{info, warn};

use super::mansrtsp::{CONTENT_TYPE, PlaybackCommand, valid_scale};
use crate::metrics::{self, label};
use crate::sip::invite::CallControl;
pub use crate::streams::recording::{
    PlaybackRange, parse_range, playback_key, range_of_key_segment,
};
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
}
