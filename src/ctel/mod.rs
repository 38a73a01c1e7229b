//! China Telecom 手机看店 (mobile store viewing) devices, platform spec V1.3.
//!
//! camgate stands in for the platform: devices register over HTTP
//! ([`register`]), hold an FA F5 TCP link ([`frame`], [`messages`],
//! [`link`]), and serve RTSP themselves, checking a one-time token
//! ([`token`]) with the platform per viewer; [`source`] pulls that RTSP into
//! a hub for the `ctel` stream scheme.

pub mod channel_control;
pub mod config;
pub mod directory;
pub mod frame;
pub mod messages;
pub mod platform;
pub mod register;
pub mod server;
pub mod source;
pub mod token;
