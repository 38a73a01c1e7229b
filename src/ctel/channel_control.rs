//! Telecom channels acted on through the neutral
//! [`crate::streams::control`] commands: pan/tilt by `VIDEO_PTZ_REQ`
//! direction codes (the spec has up, down, left, right and stop, no
//! speed, zoom or presets) and recordings by `FILE_QUERY_REQ`, its pages
//! gathered and its minute stamps turned into ISO 8601 times.
//!
//! Stream keys are `ctel/{devId}/{channel}`.

use super::messages as m;
use super::platform::{CommandError, CtelPlatform};
use crate::media::datetime;
use crate::streams::StreamKey;
use crate::streams::control::{
    ChannelCommand, ChannelControl, ControlError, ControlFuture, PanTilt, RecordEntry,
};

/// Most `FILE_QUERY` pages read for one search (the device sends
/// [`m::FILES_PER_PAGE`] files per page).
const MAX_PAGES: u32 = 32;

fn device_channel(key: &StreamKey) -> Result<(&str, u16), ControlError> {
    let mut parts = key.segments();
    match (parts.next(), parts.next().map(str::parse), parts.next()) {
        (Some(d), Some(Ok(c)), None) if key.scheme() == "ctel" => Ok((d, c)),
        _ => Err(ControlError::UnknownChannel(key.to_string())),
    }
}

/// The `PtzDirection` code for `command`, if the protocol has one.
pub fn direction_code(command: ChannelCommand) -> Result<u8, ControlError> {
    let d = match command {
        ChannelCommand::Stop => m::PtzDirection::Stop,
        ChannelCommand::Move { direction, .. } => match direction {
            PanTilt::Up => m::PtzDirection::Up,
            PanTilt::Down => m::PtzDirection::Down,
            PanTilt::Left => m::PtzDirection::Left,
            PanTilt::Right => m::PtzDirection::Right,
            _ => return Err(ControlError::Unsupported("move diagonally")),
        },
        other => return Err(ControlError::Unsupported(other.name())),
    };
    Ok(d.code())
}

/// `YYYY-MM-DDTHH:MM:SS` → `YYYYMMDDHHMM` (the request's minute stamp).
fn minute_stamp(secs: u64) -> String {
    datetime::format(secs)
        .bytes()
        .filter(u8::is_ascii_digit)
        .take(12)
        .map(char::from)
        .collect()
}

/// A file's `YYYYMMDDHHMM[SS]` back to ISO 8601; anything else is kept.
fn iso_time(stamp: &str) -> String {
    let digits = stamp.len() == 12 || stamp.len() == 14;
    if !digits || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return stamp.to_owned();
    }
    let seconds = stamp.get(12..14).unwrap_or("00");
    format!(
        "{}-{}-{}T{}:{}:{seconds}",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[8..10],
        &stamp[10..12]
    )
}

fn entry(f: m::RecordFile) -> RecordEntry {
    RecordEntry {
        name: Some(f.file_name.clone()),
        file_path: Some(f.file_name),
        start_time: iso_time(&f.start_time),
        end_time: iso_time(&f.end_time),
        record_type: Some("time".into()),
        file_size: Some(f.file_size),
        ..RecordEntry::default()
    }
}

fn control_error(e: CommandError) -> ControlError {
    match e {
        CommandError::UnknownDevice(d) => ControlError::UnknownChannel(d),
        CommandError::Refused(r) => ControlError::Refused(format!("Result {r}")),
        other => ControlError::Unreachable(other.to_string()),
    }
}

impl ChannelControl for CtelPlatform {
    fn scheme(&self) -> &'static str {
        "ctel"
    }

    fn command<'a>(&'a self, key: &'a StreamKey, command: ChannelCommand) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            let (dev, channel) = device_channel(key)?;
            let req = m::VideoPtzReq {
                dev_id: dev.to_owned(),
                channel_no: channel,
                ptz_direction: direction_code(command)?,
            };
            let res: m::VideoPtzRes = CtelPlatform::command(self, dev, &req)
                .await
                .map_err(control_error)?;
            if res.result == m::RESULT_OK {
                Ok(())
            } else {
                Err(ControlError::Refused(format!("Result {}", res.result)))
            }
        })
    }

    fn records<'a>(
        &'a self,
        key: &'a StreamKey,
        start: u64,
        end: u64,
    ) -> ControlFuture<'a, Vec<RecordEntry>> {
        Box::pin(async move {
            let (dev, channel) = device_channel(key)?;
            let mut files = Vec::new();
            for page_no in 1..=MAX_PAGES {
                let req = m::FileQueryReq {
                    dev_id: dev.to_owned(),
                    channel_no: channel,
                    start_time: minute_stamp(start),
                    end_time: minute_stamp(end),
                    page_no,
                };
                let res: m::FileQueryRes = CtelPlatform::command(self, dev, &req)
                    .await
                    .map_err(control_error)?;
                if res.result != m::RESULT_OK {
                    return Err(ControlError::Refused(format!("Result {}", res.result)));
                }
                let got = res.file.len();
                files.extend(res.file.into_iter().map(entry));
                if got == 0 || files.len() >= res.total_record_num as usize {
                    break;
                }
            }
            Ok(files)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_directions_and_times() {
        let key = StreamKey::from_path("ctel/81200000001/1").unwrap();
        assert_eq!(device_channel(&key), Ok(("81200000001", 1)));
        assert!(device_channel(&StreamKey::from_path("ctel/x/y").unwrap()).is_err());
        let left = ChannelCommand::Move {
            direction: PanTilt::Left,
            speed: 9,
        };
        assert_eq!(direction_code(left), Ok(3));
        assert_eq!(direction_code(ChannelCommand::Stop), Ok(0));
        assert!(direction_code(ChannelCommand::PresetCall(1)).is_err());
        assert!(direction_code(ChannelCommand::ZoomIn { speed: 1 }).is_err());
        let t = datetime::parse("2026-01-01T08:30:45").unwrap();
        assert_eq!(minute_stamp(t), "202601010830");
        assert_eq!(iso_time("202601010830"), "2026-01-01T08:30:00");
        assert_eq!(iso_time("20260101083015"), "2026-01-01T08:30:15");
        assert_eq!(iso_time("junk"), "junk");
    }
}
