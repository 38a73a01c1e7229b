//! MANSRTSP, the playback control GB28181 carries in SIP INFO (§9.8.2,
//! Annex B). The reader and writer live in [`crate::sip::mansrtsp`], below
//! both this adapter (which sends it to devices) and the cascade (which
//! receives it from upper platforms); this module keeps the adapter's
//! path to them.

pub use crate::sip::mansrtsp::*;
