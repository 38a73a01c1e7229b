//! Simulated devices: genuine network peers used by `--demo` and the tests.
//!
//! The GB28181 camera is split the way every protocol in camgate is:
//! sans-IO cores ([`sip`], [`gb_device`], [`rtp`], [`clip`])
//! that turn bytes and a `now` into bytes and events, and one thin tokio
//! driver ([`gb_camera`]) that owns the sockets and timers. The PS muxer
//! they use lives in the media core ([`crate::media::ps_mux`]).
//!
//! ```no_run
//! # async fn demo(config: camgate::config::Config) -> anyhow::Result<()> {
//! use camgate::sim::{SimCameraConfig, spawn};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let camera = spawn(SimCameraConfig::from_config(&config), shutdown.clone());
//! // ... later
//! shutdown.cancel();
//! camera.task.await??;
//! # Ok(()) }
//! ```

pub mod aac_track;
pub mod clip;
pub mod ctel_camera;
pub mod ctel_rtsp;
pub mod foscam_camera;
pub mod frame_marker;
pub mod g711;
pub mod gb_camera;
pub mod gb_device;
pub mod gb_device_extra;
pub mod history_stream;
pub mod ps_file;
mod replay;
pub mod rtp;
pub mod rtp_capture;
pub mod rtp_file;
pub mod rtsp_load;
pub mod sip;
pub mod snapshot_upload;
pub mod talk_receive;

pub use gb_camera::{SimCamera, SimCameraConfig, SimStats, run, spawn};
