//! Recorded media for an upper platform (GB/T 28181-2016 §9.8 playback,
//! §9.9 download): what an INVITE with `s=Playback` or `s=Download` asks
//! for, the MANSRTSP INFO (§9.8.2, Annex B) that controls it inside the
//! dialog, and what ends it — the `MediaStatus` 121 notify (A.2.5) we send
//! upward when the recording is over, then our BYE if the upper platform
//! does not hang up itself.
//!
//! Sans-IO: offers, bodies and headers in; stream keys, commands and SIP
//! text out. The driver (`super::driver`) owns sockets and timers.

use crate::sip::mansrtsp::{self, MansrtspError, PlaybackCommand as Mansrtsp};
use crate::streams::recording::{PlaybackRange, SCALES};
use crate::streams::{PlaybackCommand, StreamKey};

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// What an offer's `s=` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Play,
    Playback,
    /// `speed`: the `a=downloadspeed:` factor (1 when absent).
    Download {
        speed: u32,
    },
}

impl SessionKind {
    /// From `s=` (case-insensitive) and the offer's download speed.
    pub fn from_sdp(name: &str, download_speed: Option<u32>) -> Option<Self> {
        if name.eq_ignore_ascii_case("Play") {
            Some(Self::Play)
        } else if name.eq_ignore_ascii_case("Playback") {
            Some(Self::Playback)
        } else if name.eq_ignore_ascii_case("Download") {
            Some(Self::Download {
                speed: download_speed.unwrap_or(1).max(1),
            })
        } else {
            None
        }
    }

    /// The `s=` line's value in our answer (echoing the offer's).
    pub fn sdp_name(self) -> &'static str {
        match self {
            Self::Play => "Play",
            Self::Playback => "Playback",
            Self::Download { .. } => "Download",
        }
    }

    pub fn is_recorded(self) -> bool {
        self != Self::Play
    }
}

/// One `t=` time as Unix seconds. GB/T 28181 offers carry Unix seconds
/// (the standard's examples, and what camgate's own upper side sends);
/// RFC 4566 says NTP seconds, which some platforms follow. Values past the
/// NTP offset (Unix year 2040) can only be NTP and are converted.
pub fn unix_from_sdp_time(t: u64) -> u64 {
    if t >= NTP_UNIX_OFFSET {
        t - NTP_UNIX_OFFSET
    } else {
        t
    }
}

/// The range of a `t=` line's value (`{start} {stop}`), when both are
/// given and the stop is after the start (`t=0 0` is live: none).
pub fn range_of_t(value: &str) -> Option<PlaybackRange> {
    let mut parts = value.split_whitespace();
    let start = unix_from_sdp_time(parts.next()?.parse().ok()?);
    let end = unix_from_sdp_time(parts.next()?.parse().ok()?);
    (start > 0 && end > start).then_some(PlaybackRange { start, end })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordedError {
    /// Only GB28181 channels have recordings the stream table can play
    /// (Foscam and telecom channels are live only through the cascade).
    #[error("channel {0:?} has no recordings reachable through the cascade")]
    NotRecorded(String),
    #[error("stream key for {0:?} is not valid")]
    BadKey(String),
}

/// The stream key of `range` of the channel whose live stream is
/// `stream`: `gb/{dev}/{ch}/playback/{start}-{end}`, the key an RTSP
/// viewer of `?start=…&end=…` gets, so both share one device session.
pub fn recorded_key(stream: &str, range: PlaybackRange) -> Result<StreamKey, RecordedError> {
    if !stream.starts_with("gb/") {
        return Err(RecordedError::NotRecorded(stream.to_owned()));
    }
    let path = format!("{stream}/playback/{}-{}", range.start, range.end);
    StreamKey::from_path(&path).ok_or(RecordedError::BadKey(path))
}

/// The playback speed a download runs at. The stream table has no faster
/// than real-time fetch for viewers (download jobs write files), so a
/// download is a playback at the largest speed devices take that is not
/// above the asked one: `downloadspeed:4` plays at 4, `:16` at 8, `:3` at
/// 2. None at 1 (no command needed).
pub fn download_scale(speed: u32) -> Option<f32> {
    let scale = SCALES
        .iter()
        .copied()
        .filter(|s| *s >= 1.0 && *s <= speed as f32)
        .fold(1.0f32, f32::max);
    (scale > 1.0).then_some(scale)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    #[error("INFO content type {0:?} is not Application/MANSRTSP")]
    ContentType(String),
    #[error(transparent)]
    Body(#[from] MansrtspError),
}

impl InfoError {
    /// The `kind` label of `camgate_cascade_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ContentType(_) => "info_content_type",
            Self::Body(e) => e.kind(),
        }
    }
}

/// Read a playback INFO: its content type must be MANSRTSP (any case, as
/// platforms write `Application/MANSRTSP`); the body gives the command
/// for the stream table and the MANSRTSP CSeq.
pub fn parse_info(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(PlaybackCommand, u32), InfoError> {
    let ct = content_type.unwrap_or_default();
    let base = ct.split(';').next().unwrap_or_default().trim();
    if !base.eq_ignore_ascii_case(mansrtsp::CONTENT_TYPE) {
        return Err(InfoError::ContentType(ct.chars().take(64).collect()));
    }
    let (cmd, cseq) = Mansrtsp::parse(body)?;
    let cmd = match cmd {
        Mansrtsp::Pause => PlaybackCommand::Pause,
        Mansrtsp::Resume => PlaybackCommand::Resume,
        Mansrtsp::Scale(s) => PlaybackCommand::Scale(s),
        Mansrtsp::Seek(secs) => PlaybackCommand::Seek(f64::from(secs)),
    };
    Ok((cmd, cseq))
}

/// The A.2.5 notify that the recording of `channel_id` played to its end.
/// IDs are digits, so the GB2312 declaration holds for ASCII text.
pub fn media_status_end(sn: u32, channel_id: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n\
         <CmdType>MediaStatus</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel_id}</DeviceID>\r\n\
         <NotifyType>121</NotifyType>\r\n</Notify>\r\n"
    )
    .into_bytes()
}

/// The URI inside a `From`/`To`/`Contact` value: `<sip:a@b>;tag=x` and
/// `sip:a@b;tag=x` both give `sip:a@b`.
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or_default().trim(),
    }
}

/// Our side of an upper platform's INVITE dialog (RFC 3261 §12.1.1), for
/// a BYE of ours: we are the callee, so the INVITE's To is our From (with
/// the tag our 200 gave) and its From is our To.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalleeDialog {
    pub call_id: String,
    /// Their Contact (the remote target), else their From URI.
    pub remote_target: String,
    pub remote_uri: String,
    pub remote_tag: String,
    pub local_uri: String,
    pub local_tag: String,
}

impl CalleeDialog {
    /// From the INVITE's headers; `local_tag` is the To tag of our 200.
    pub fn from_invite(message: &super::wire::Message, local_tag: &str) -> Option<Self> {
        let from = message.header("From")?;
        let to = message.header("To")?;
        let remote_uri = uri_of(from).to_owned();
        let remote_target = message
            .header("Contact")
            .map(uri_of)
            .filter(|u| !u.is_empty())
            .unwrap_or(&remote_uri)
            .to_owned();
        Some(Self {
            call_id: message.call_id().ok()?.to_owned(),
            remote_target,
            remote_tag: super::wire::param(from, "tag")?.to_owned(),
            remote_uri,
            local_uri: uri_of(to).to_owned(),
            local_tag: local_tag.to_owned(),
        })
    }

    /// Our BYE. The dialog had no request of ours before, so CSeq 1 starts
    /// our side's sequence (§12.2.1.1).
    pub fn bye(
        &self,
        transport: super::wire::Transport,
        local: std::net::SocketAddr,
        branch: &str,
    ) -> Vec<u8> {
        super::wire::request(&super::wire::RequestParts {
            method: "BYE",
            transport,
            uri: &self.remote_target,
            local,
            branch,
            from: &self.local_uri,
            from_tag: &self.local_tag,
            to: &self.remote_uri,
            to_tag: Some(&self.remote_tag),
            call_id: &self.call_id,
            cseq: 1,
            extra: &[],
            body: None,
        })
    }
}

/// Which INFOs of a dialog have been acted on (RFC 3261 §17.2.2, a
/// non-INVITE server transaction): a retransmission (same SIP CSeq) is
/// never forwarded twice; while the first is at the device it is not
/// answered (the final answer is on its way), afterwards it gets that
/// same answer again.
#[derive(Debug, Default)]
pub struct InfoSequence {
    last: Option<u32>,
    /// The final answer to `last`, once sent.
    answer: Option<Vec<u8>>,
}

/// What to do with an INFO, by [`InfoSequence::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoTurn {
    /// A new INFO: forward it.
    Forward,
    /// A repeat of the one at the device: wait for its answer.
    InFlight,
    /// A repeat of one answered: send this again.
    Repeat(Vec<u8>),
    /// Older than the last one: dropped.
    Stale,
}

impl InfoSequence {
    pub fn admit(&mut self, cseq: u32) -> InfoTurn {
        match self.last {
            Some(l) if cseq < l => InfoTurn::Stale,
            Some(l) if cseq == l => match &self.answer {
                Some(a) => InfoTurn::Repeat(a.clone()),
                None => InfoTurn::InFlight,
            },
            _ => {
                self.last = Some(cseq);
                self.answer = None;
                InfoTurn::Forward
            }
        }
    }

    /// The final answer sent to the INFO with SIP CSeq `cseq`.
    pub fn answered(&mut self, cseq: u32, answer: Vec<u8>) {
        if self.last == Some(cseq) {
            self.answer = Some(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::wire::Message;

    #[test]
    fn t_line_in_unix_or_ntp_seconds() {
        let unix = range_of_t("1714550430 1714550434").unwrap();
        assert_eq!((unix.start, unix.end), (1_714_550_430, 1_714_550_434));
        let ntp = range_of_t("3923539230 3923539234").unwrap();
        assert_eq!(ntp, unix);
        assert_eq!(range_of_t("0 0"), None);
        assert_eq!(range_of_t("1714550434 1714550430"), None);
        assert_eq!(range_of_t("1714550430"), None);
        assert_eq!(range_of_t("x y"), None);
    }

    #[test]
    fn session_kinds_and_keys() {
        assert_eq!(SessionKind::from_sdp("play", None), Some(SessionKind::Play));
        assert_eq!(
            SessionKind::from_sdp("Download", Some(0)),
            Some(SessionKind::Download { speed: 1 })
        );
        assert_eq!(SessionKind::from_sdp("Talk", None), None);
        let r = PlaybackRange { start: 10, end: 20 };
        assert_eq!(
            recorded_key("gb/1/2", r).unwrap().as_str(),
            "gb/1/2/playback/10-20"
        );
        assert_eq!(
            recorded_key("foscam/demo", r),
            Err(RecordedError::NotRecorded("foscam/demo".into()))
        );
    }

    #[test]
    fn download_speed_becomes_a_device_scale() {
        assert_eq!(download_scale(1), None);
        assert_eq!(download_scale(2), Some(2.0));
        assert_eq!(download_scale(3), Some(2.0));
        assert_eq!(download_scale(4), Some(4.0));
        assert_eq!(download_scale(32), Some(8.0));
    }

    #[test]
    fn info_bodies_become_commands() {
        let ct = Some("Application/MANSRTSP");
        let (cmd, cseq) =
            parse_info(ct, b"PAUSE RTSP/1.0\r\nCSeq: 3\r\nPauseTime: now\r\n").unwrap();
        assert_eq!((cmd, cseq), (PlaybackCommand::Pause, 3));
        let (cmd, _) = parse_info(ct, b"PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 2.0\r\n").unwrap();
        assert_eq!(cmd, PlaybackCommand::Scale(2.0));
        let (cmd, _) = parse_info(ct, b"PLAY RTSP/1.0\r\nCSeq: 5\r\nRange: npt=now-\r\n").unwrap();
        assert_eq!(cmd, PlaybackCommand::Resume);
        let (cmd, _) = parse_info(ct, b"PLAY RTSP/1.0\r\nCSeq: 6\r\nRange: npt=30-\r\n").unwrap();
        assert_eq!(cmd, PlaybackCommand::Seek(30.0));
        assert!(matches!(
            parse_info(Some("application/sdp"), b"PAUSE RTSP/1.0\r\nCSeq: 1\r\n"),
            Err(InfoError::ContentType(_))
        ));
        assert!(matches!(
            parse_info(None, b"PAUSE RTSP/1.0\r\nCSeq: 1\r\n"),
            Err(InfoError::ContentType(_))
        ));
        let bad = parse_info(ct, b"PLAY RTSP/1.0\r\nCSeq: 7\r\nScale: 3\r\n").unwrap_err();
        assert_eq!(bad.kind(), "mansrtsp_scale");
    }

    #[test]
    fn end_notify_names_the_channel() {
        let body = String::from_utf8(media_status_end(9, "34020000001310000001")).unwrap();
        assert!(body.contains("<CmdType>MediaStatus</CmdType>"), "{body}");
        assert!(body.contains("<SN>9</SN>"), "{body}");
        assert!(
            body.contains("<DeviceID>34020000001310000001</DeviceID>"),
            "{body}"
        );
        assert!(body.contains("<NotifyType>121</NotifyType>"), "{body}");
    }

    #[test]
    fn our_bye_swaps_the_invite_dialog() {
        let invite = "INVITE sip:34020000001310000001@127.0.0.1:5070 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
            From: <sip:34020000002000000001@3402000000>;tag=up1\r\n\
            To: <sip:34020000001310000001@3402000000>\r\n\
            Call-ID: abc@up\r\nCSeq: 20 INVITE\r\n\
            Contact: <sip:34020000002000000001@127.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(invite.as_bytes()).unwrap();
        let d = CalleeDialog::from_invite(&m, "camgate").unwrap();
        let bye = String::from_utf8(d.bye(
            super::super::wire::Transport::Udp,
            "127.0.0.1:5070".parse().unwrap(),
            "z9hG4bKb",
        ))
        .unwrap();
        assert!(
            bye.starts_with("BYE sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\n"),
            "{bye}"
        );
        assert!(
            bye.contains("From: <sip:34020000001310000001@3402000000>;tag=camgate\r\n"),
            "{bye}"
        );
        assert!(
            bye.contains("To: <sip:34020000002000000001@3402000000>;tag=up1\r\n"),
            "{bye}"
        );
        assert!(bye.contains("Call-ID: abc@up\r\nCSeq: 1 BYE\r\n"), "{bye}");
        assert_eq!(uri_of("sip:a@b;tag=x"), "sip:a@b");
    }

    #[test]
    fn retransmitted_infos_are_forwarded_once() {
        let mut seq = InfoSequence::default();
        assert_eq!(seq.admit(5), InfoTurn::Forward);
        assert_eq!(seq.admit(5), InfoTurn::InFlight);
        seq.answered(5, b"200".to_vec());
        assert_eq!(seq.admit(5), InfoTurn::Repeat(b"200".to_vec()));
        assert_eq!(seq.admit(4), InfoTurn::Stale);
        assert_eq!(seq.admit(6), InfoTurn::Forward);
        // A late answer to an older INFO does not stand for the new one.
        seq.answered(5, b"500".to_vec());
        assert_eq!(seq.admit(6), InfoTurn::InFlight);
    }

    #[test]
    fn odd_input_is_refused_not_panicked_on() {
        assert_eq!(
            range_of_t("18446744073709551615 18446744073709551615"),
            None
        );
        assert_eq!(range_of_t("99999999999999999999999 1"), None);
        assert_eq!(range_of_t("-1 5"), None);
        assert!(parse_info(Some("Application/MANSRTSP"), &[0xff; 2000]).is_err());
        assert!(parse_info(Some("Application/MANSRTSP; x=中"), b"PLAY").is_err());
        assert_eq!(uri_of("<>"), "");
        assert_eq!(uri_of(">sip:a<"), ">sip:a<");
    }
}
