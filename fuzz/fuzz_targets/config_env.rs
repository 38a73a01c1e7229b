//! `${NAME}` substitution and the config loader behind it: any text must
//! give a config or a typed error, never a panic; a substituted value never
//! adds lines (the line-break guard).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |name: &str| (name.len() % 3 != 0).then(|| name.repeat(2));
    if let Ok(out) = camgate::config_env::expand(text, lookup) {
        assert_eq!(out.lines().count(), text.lines().count());
    }
    let _ = camgate::config::Config::from_yaml(text, "fuzz");
});
