#![no_main]
//! Catalog NOTIFY bodies on arbitrary bytes: parsing and applying the
//! events to a channel list must never panic, and DEL never grows it.
use camgate::gb28181::catalog_notify::{CatalogEvent, apply, is_catalog_notify, parse};
use camgate::gb28181::manscdp::decode_tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = decode_tree(data) else { return };
    let _ = is_catalog_notify(&tree);
    let Ok(items) = parse(&tree) else { return };
    let mut channels = Vec::new();
    for (item, event) in &items {
        let before = channels.len();
        apply(&mut channels, item, *event);
        if *event == CatalogEvent::Del {
            assert!(channels.len() <= before);
        }
    }
});
