//! SIP glue over `rsipstack`: transports, digest auth, dialogs.

pub mod digest;
