//! camgate: a media gateway from GB28181 (and other Chinese-standard)
//! surveillance cameras to RTSP and WebRTC viewers.
//!
//! Southbound adapters ([`gb28181`], [`foscam`], [`ctel`]) produce
//! [`media::frame::Frame`]s into a [`media::hub::Hub`] per stream; egress
//! ([`rtsp`], [`webrtc`], [`api`]) reads hubs. They meet only in [`media`]
//! and [`streams`], which starts sources on demand and stops them when idle.
//!
//! # The import rule
//!
//! Layers import only downward:
//!
//! - **Core** — [`streams`], [`media`], [`ingest`] — and **egress** —
//!   [`rtsp`], [`webrtc`], [`api`] — never import a southbound adapter
//!   ([`gb28181`], [`foscam`], [`ctel`]) nor the simulator ([`sim`]).
//!   The exception is the part of [`api`] that *is* an adapter's HTTP face
//!   (`api/gb_*.rs`, `api/foscam.rs`, `api/ctel.rs`, `api/events.rs`) and
//!   the route wiring in `api/mod.rs`.
//! - Adapters never import each other; [`app`] wires them together.
//! - Within [`gb28181`], subsystems the platform holds take narrow handles
//!   rather than the platform: snapshots are a store
//!   ([`gb28181::snapshot::Snapshots`]), download jobs fetch through
//!   [`gb28181::download::RecordingFetch`].
//! - A concept two layers need lives in the lower one: stream keys and
//!   recording ranges in [`streams`] ([`streams::recording`]), the
//!   wall-clock time format in [`media::datetime`], the G.711 packet size
//!   in [`media::audio::g711`], duration settings in [`config_secs`], the
//!   MANSRTSP playback-control body (GB28181 adapter and [`cascade`]) in
//!   [`sip::mansrtsp`].
//!
//! The unit test in `module_graph.rs` scans every `crate::…` path under
//! `src/` and fails on an import that breaks this rule.

pub mod api;
pub mod app;
pub mod cascade;
pub mod cluster;
pub mod config;
pub mod config_env;
pub mod config_secs;
pub mod conn_limit;
pub mod ctel;
pub mod foscam;
pub mod gb28181;
pub mod health;
pub mod heap_trim;
pub mod ingest;
pub mod log_limit;
pub mod media;
pub mod metrics;
#[cfg(test)]
mod module_graph;
pub mod reload;
pub mod rtsp;
pub mod secret;
pub mod sim;
pub mod sip;
pub mod streams;
pub mod testdata;
pub mod transcode;
pub mod webrtc;
