//! SIP glue over `rsipstack`: transports, digest auth, dialogs.

pub mod digest;
pub mod stack;
pub mod request;
pub mod client;
pub mod invite;
