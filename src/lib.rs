//! camgate: a media gateway from GB28181 (and other Chinese-standard)
//! surveillance cameras to RTSP and WebRTC viewers.
//!
//! Southbound adapters ([`gb28181`], [`sip`], [`ingest`]) produce
//! [`media::frame::Frame`]s into a [`media::hub::Hub`] per stream; egress
//! ([`rtsp`], [`api`]) reads hubs. They meet only in [`media`] and
//! [`streams`], which starts sources on demand and stops them when idle.

pub mod api;
pub mod app;
pub mod config;
pub mod config_env;
pub mod conn_limit;
pub mod ctel;
pub mod foscam;
pub mod gb28181;
pub mod health;
pub mod ingest;
pub mod log_limit;
pub mod media;
pub mod metrics;
pub mod reload;
pub mod rtsp;
pub mod sim;
pub mod sip;
pub mod streams;
pub mod testdata;
pub mod transcode;
pub mod webrtc;
