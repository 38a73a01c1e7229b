//! Foscam MJPEG cameras: the MO_O / MO_V binary protocol as a stream
//! source (`foscam/{name}`), with PTZ, alarms and talk.
//!
//! [`proto`] is the sans-IO frame codec, [`adpcm`] and [`g711`] the audio
//! conversions, [`ptz`] the `decoder_control` codes, [`client`] the tokio
//! driver that keeps each camera logged in, and [`source`] the
//! [`crate::streams::SourceProvider`] that asks for media only while
//! viewers watch.

pub mod adpcm;
pub mod channel_control;
pub mod client;
pub mod directory;
pub mod events;
pub mod g711;
pub mod proto;
pub mod ptz;
pub mod source;

pub use client::{CameraStatus, FoscamCamera, Refusal};
pub use source::FoscamSources;
