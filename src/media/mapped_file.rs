//! A file's contents as [`Bytes`] without reading them into the heap: a
//! read-only memory map, for `camgate probe`. Reading a large capture with
//! `read(2)` spends as long copying pages out of the page cache as the
//! demuxer spends on the data; mapping them costs a page fault per few
//! dozen pages instead.

use std::fs::File;
use std::io;
use std::path::Path;

use bytes::Bytes;

/// Map `path` read-only. Fails for what cannot be mapped (pipes, empty
/// files, some special files): read those instead.
pub fn map(path: &Path) -> io::Result<Bytes> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty file"));
    }
    // SAFETY: the mapping is read-only and private; undefined behaviour
    // would need another process to truncate or rewrite the file while it
    // is mapped. That is accepted for a diagnostic command reading a
    // capture (the worst realistic outcome is SIGBUS on truncation), and the
    // gateway itself never maps files.
    let mmap = unsafe { memmap2::Mmap::map(&file)? };
    // Pages are read in order once; ask for read-ahead. Advice is only a hint.
    let _ = mmap.advise(memmap2::Advice::Sequential);
    Ok(Bytes::from_owner(mmap))
}
