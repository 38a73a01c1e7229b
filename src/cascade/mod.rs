//! GB/T 28181 cascade (级联, §5 networking): camgate as a lower platform
//! registering to upper platforms.
//!
//! An egress like RTSP: the upper platform is one more viewer, one that
//! speaks SIP. [`register`] is the sans-IO registration and keepalive
//! client (§9.1.2, §9.6), [`wire`] the SIP text it reads and writes,
//! [`answers`] the MANSCDP answers to the upper platform's queries,
//! [`channel_ids`] the stable ids of non-GB28181 channels, [`media`] the
//! INVITE's SDP and PS-over-RTP packing, [`playback`] recorded media
//! (Playback/Download INVITEs, MANSRTSP INFO, MediaStatus 121),
//! [`session`] one upward stream, [`control`] and [`records`] the
//! DeviceControl and RecordInfo requests for one channel, carried out on
//! the camera by [`forward`],
//! [`alarms`] camera alarms told upward (§9.4) and sent by
//! [`alarm_driver`],
//! [`driver`] the tokio task owning each upstream's [`link`] and timer,
//! serving the upper platform's [`requests`] ([`invite`] for media,
//! [`playback_control`] for MANSRTSP INFO, [`catalog_subscribe`] for
//! catalog subscriptions) over the channels of [`catalog`], and
//! [`status`] what `GET /api/v1/cascade` and the metrics show.

pub mod alarm_driver;
pub mod alarms;
pub mod answers;
mod catalog;
mod catalog_subscribe;
pub mod channel_ids;
pub mod config;
pub mod control;
pub mod driver;
pub mod forward;
mod invite;
pub mod link;
pub mod media;
pub mod playback;
mod playback_control;
pub mod records;
pub mod register;
mod requests;
pub mod retransmit;
pub mod session;
pub mod status;
pub mod subscription;
pub mod wire;
