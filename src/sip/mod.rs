//! SIP glue over `rsipstack`: transports, digest auth, dialogs.

pub mod client;
pub mod digest;
pub mod invite;
pub mod request;
pub mod stack;
pub mod throttle;
