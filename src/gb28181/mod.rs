//! GB/T 28181-2016: device registry, MANSCDP, SDP, and the on-demand INVITE.

pub mod aggregate;
pub mod catalog_notify;
pub mod control;
pub mod download;
pub mod events;
pub mod exchanges;
pub mod gbtime;
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
