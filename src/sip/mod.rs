//! SIP glue over `rsipstack`: transports, digest auth, dialogs; and
//! [`mansrtsp`], the playback-control body GB28181 INFO carries, shared by
//! the GB28181 adapter and the cascade.

pub mod answered_requests;
pub mod client;
pub mod dialog_ends;
pub mod digest;
pub mod invite;
pub mod mansrtsp;
pub mod request;
pub mod screen;
pub mod stack;
pub mod stack_warnings;
pub mod stateless;
pub mod tcp_gate;
pub mod throttle;
pub mod udp_screen;
