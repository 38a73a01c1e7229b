//! GB/T 28181-2016: device registry, MANSCDP, SDP, and the on-demand INVITE.

pub mod invite;
pub mod manscdp;
pub mod platform;
pub mod registrar;
pub mod registry;
pub mod sdp;
pub mod ssrc;
