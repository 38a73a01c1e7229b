//! GB/T 28181-2016: device registry, MANSCDP, SDP, and the on-demand INVITE.

pub mod accepted_registers;
pub mod aggregate;
pub mod catalog_notify;
pub mod channel_control;
pub mod control;
pub mod directory;
pub mod download;
pub mod events;
pub mod exchanges;
/// The GB `dateTime` format, kept under its old name for this module's
/// own code; it lives in [`crate::media::datetime`].
pub use crate::media::datetime as gbtime;
pub mod history;
pub mod invite;
pub mod manscdp;
pub mod mansrtsp;
pub mod operations;
pub mod platform;
pub mod playback;
pub mod ps_sink;
pub mod ptz;
pub mod registrar;
pub mod registry;
pub mod reports;
pub mod sdp;
pub mod snapshot;
pub mod ssrc;
pub mod subscriptions;
pub mod talk;
pub mod webhook;
