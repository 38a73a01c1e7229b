//! Audio the gateway produces itself (voice broadcast): uploads in, G.711
//! out.

pub mod g711;
pub mod wav;
