//! RTSP server (RFC 2326): the egress VLC, ffmpeg, GStreamer and NVRs use.
//!
//! - [`session`]: sans-IO state machine of one connection (requests in,
//!   responses, RTP/RTCP and driver actions out).
//! - [`server`]: the thin tokio driver owning sockets, timers and viewers.
//! - [`sdp`]: the DESCRIBE answer.
//! - [`packetize`]: RTP payload formats (RFC 6184 H.264, RFC 7798 H.265,
//!   RFC 3551 G.711) writing headers only, payload by vectored I/O.
//! - [`rtcp`]: sender reports and the shared A/V clock mapping.
//! - [`fragment_cache`]: each frame packetized once for all its viewers.

pub mod auth;
pub mod fragment_cache;
pub mod packetize;
pub mod receiver_report;
pub mod rtcp;
pub mod sdp;
pub mod server;
pub mod session;
pub mod tokens;

pub use server::{RtspServerConfig, serve};
