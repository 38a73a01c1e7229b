//! Where the third-party captures live: `$CAMGATE_TESTDATA`, or
//! `../shared/testdata` beside the checkout. They are not redistributed in
//! this repository, so tests that need them say so and skip when absent.

use std::path::PathBuf;

/// The directory holding the captures, if present.
pub fn dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CAMGATE_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"));
    dir.is_dir().then_some(dir)
}

/// A capture by file name; prints why and returns `None` when it is absent,
/// so the calling test can return early.
pub fn file(name: &str) -> Option<PathBuf> {
    match dir().map(|d| d.join(name)) {
        Some(p) if p.is_file() => Some(p),
        _ => {
            eprintln!(
                "SKIPPED: capture {name} not found (set CAMGATE_TESTDATA to the shared testdata directory)"
            );
            None
        }
    }
}
