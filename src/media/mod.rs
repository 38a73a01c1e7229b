//! The media core: frames, hubs, and the sans-IO parsers of the media path.

pub mod audio;
pub mod datetime;
pub mod frame;
pub mod h264;
pub mod h265;
pub mod hub;
pub mod jitter;
pub mod jpeg;
pub mod mapped_file;
pub mod probe;
pub mod ps;
pub mod ps_mux;
pub mod rtcp_rr;
pub mod rtp;
pub mod rtp_ps;
pub mod rtsp_pull;
