//! The import rule of `lib.rs`'s module doc, checked on the source text:
//! every `crate::…` path in a file under `src/` names the top-level module
//! it reaches, and some (file, module) pairs are forbidden.
//!
//! A scan of the text rather than of the compiler's view: it is cheap, it
//! runs with the unit tests, and it catches the forms this codebase uses
//! (`use crate::a::b`, `use crate::{a, b::c}`, inline `crate::a::f()`).
//! Comments are skipped so prose may mention any module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Southbound adapters and the device simulator.
const ADAPTERS: [&str; 4] = ["gb28181", "foscam", "ctel", "sim"];
/// The media core and the stream table.
const CORE: [&str; 3] = ["streams", "media", "ingest"];
/// Northbound egress. `cascade` (registering to an upper GB28181
/// platform) is egress too: the upper platform is a viewer that speaks SIP,
/// reached through the stream table and device directories like the rest.
const EGRESS: [&str; 4] = ["rtsp", "webrtc", "api", "cascade"];

/// Files of `api/` that are the adapters' own HTTP faces and the route
/// wiring that merges them: they may import the adapter they serve.
/// Every other `api/` file (devices, streams, WHEP, console, OpenAPI…)
/// is egress and may not.
const API_ADAPTER_ROUTES: [&str; 10] = [
    "api/mod.rs",
    "api/ctel.rs",
    "api/events.rs",
    "api/foscam.rs",
    "api/gb_control.rs",
    "api/gb_downloads.rs",
    "api/gb_queries.rs",
    "api/gb_snapshots.rs",
    "api/gb_talk.rs",
    "api/gb_talk_webrtc.rs",
];

/// GB28181 subsystems the platform holds that take narrow handles (a
/// store, a [`crate::gb28181::download::RecordingFetch`], a
/// [`crate::gb28181::talk::TalkHost`]) instead of the whole platform: they
/// may not name it, so the platform ↔ subsystem cycle cannot come back.
const NARROW_GB_SUBSYSTEMS: [&str; 3] = [
    "gb28181/download.rs",
    "gb28181/snapshot.rs",
    "gb28181/talk.rs",
];

/// Lines of code (comments stripped) in `text` that name the GB28181
/// platform, for a file that must not.
pub fn names_the_platform(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or_default();
            code.contains("GbPlatform") || code.contains("platform::")
        })
        .map(|(n, _)| n + 1)
        .collect()
}

/// One forbidden import found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// Path relative to `src/`, with `/` separators.
    pub file: String,
    pub line: usize,
    /// The top-level module imported.
    pub target: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "src/{}:{} imports crate::{}",
            self.file, self.line, self.target
        )
    }
}

/// The top-level module a file under `src/` belongs to (`rtsp/session.rs`
/// → `rtsp`, `streams.rs` → `streams`, `streams/recording.rs` → `streams`).
fn module_of(file: &str) -> &str {
    let first = file.split('/').next().unwrap_or(file);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// Whether `file` may import top-level module `target`.
fn allowed(file: &str, target: &str) -> bool {
    let from = module_of(file);
    // The cluster is placement and shared state: adapters and egress ask
    // it, it asks none of them (it sees devices through the directory).
    if from == "cluster" && (ADAPTERS.contains(&target) || EGRESS.contains(&target)) {
        return false;
    }
    if from == target || !ADAPTERS.contains(&target) {
        return true;
    }
    if CORE.contains(&from) {
        return false;
    }
    if EGRESS.contains(&from) {
        return API_ADAPTER_ROUTES.contains(&file);
    }
    // Adapters never import each other; the simulator may imitate any.
    if ADAPTERS.contains(&from) && from != "sim" {
        return false;
    }
    true
}

/// The top-level modules named by `crate::` paths on one line of code.
fn crate_targets(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `foo_crate::x` is not `crate::x`.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c}`: the first identifier of each item at
            // depth 0 (a group spanning lines is read up to the line end).
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphabetic() || c == '_') => {
                        out.push(ident_at(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let ident = ident_at(rest);
            if !ident.is_empty() {
                out.push(ident);
            }
        }
    }
    out
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The forbidden imports in one file's text.
pub fn check_source(file: &str, text: &str) -> Vec<Violation> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for target in crate_targets(code) {
            if !allowed(file, &target) {
                found.push(Violation {
                    file: file.to_owned(),
                    line: n + 1,
                    target,
                });
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every forbidden import under `src/`, and how many files were read.
pub fn check_tree(src: &Path) -> (Vec<Violation>, usize) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = BTreeSet::new();
    for path in &files {
        let rel = path
            .strip_prefix(src)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        found.extend(check_source(&rel, &text));
        if NARROW_GB_SUBSYSTEMS.contains(&rel.as_str()) {
            found.extend(names_the_platform(&text).into_iter().map(|line| Violation {
                file: rel.clone(),
                line,
                target: "gb28181::platform".to_owned(),
            }));
        }
    }
    (found.into_iter().collect(), files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_tree_keeps_the_import_rule() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let (violations, files) = check_tree(&src);
        assert!(files > 100, "read only {files} files under {src:?}");
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert!(
            list.is_empty(),
            "forbidden imports (see lib.rs):\n{}",
            list.join("\n")
        );
    }

    #[test]
    fn a_forbidden_import_is_found_in_every_form() {
        let text = "use crate::media::hub::Hub;\n\
                    use crate::gb28181::playback::PlaybackRange;\n\
                    use crate::{metrics, foscam::ptz};\n\
                    let t = crate::ctel::frame::MAX_BODY; // crate::sim in a comment\n\
                    // use crate::sim::clip;\n\
                    use other_crate::gb28181;\n";
        let v = check_source("streams.rs", text);
        let got: Vec<(usize, &str)> = v.iter().map(|v| (v.line, v.target.as_str())).collect();
        assert_eq!(got, [(2, "gb28181"), (3, "foscam"), (4, "ctel")]);
    }

    #[test]
    fn narrow_subsystems_may_not_name_the_platform() {
        assert_eq!(
            names_the_platform(
                "use super::platform::lock;\n// GbPlatform in prose\nfn f(p: &GbPlatform) {}\n"
            ),
            [1, 3]
        );
        assert!(names_the_platform("use super::history::start;\n").is_empty());
        // A renamed or moved subsystem must not drop out of the check.
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for file in NARROW_GB_SUBSYSTEMS {
            assert!(src.join(file).is_file(), "{file} is not under src/");
        }
    }

    #[test]
    fn who_may_import_what() {
        let imports = |file: &str, target: &str| {
            check_source(file, &format!("use crate::{target}::x;\n")).is_empty()
        };
        assert!(!imports("rtsp/session.rs", "gb28181"));
        assert!(!imports("cluster/sync.rs", "gb28181"));
        assert!(!imports("cluster/mod.rs", "rtsp"));
        assert!(imports("cluster/mod.rs", "streams"));
        assert!(imports("gb28181/platform.rs", "cluster"));
        assert!(!imports("webrtc/talk.rs", "gb28181"));
        assert!(!imports("media/ps.rs", "sim"));
        assert!(!imports("streams/recording.rs", "gb28181"));
        assert!(!imports("api/devices.rs", "foscam"));
        assert!(!imports("ctel/platform.rs", "gb28181"));
        assert!(!imports("gb28181/invite.rs", "sim"));
        assert!(!imports("cascade/register.rs", "gb28181"));
        assert!(!imports("cascade/driver.rs", "sim"));
        assert!(imports("cascade/register.rs", "sip"));
        assert!(imports("cascade/driver.rs", "media"));
        assert!(imports("api/gb_control.rs", "gb28181"));
        assert!(imports("gb28181/invite.rs", "streams"));
        assert!(imports("app.rs", "ctel"));
        assert!(imports("sim/foscam_camera.rs", "foscam"));
        assert!(imports("rtsp/session.rs", "media"));
    }
}
