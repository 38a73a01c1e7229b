//! The metrics catalogue in README.md and the live `/metrics` agree: every
//! catalogued metric is exposed with its type and only its catalogued
//! labels, and every exposed `camgate_*` family is catalogued. `/metrics`
//! is read with the strict OpenMetrics parser in tests/common.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::openmetrics::{self, Family};
use common::*;

struct Row {
    name: String,
    kind: String,
    labels: Vec<String>,
}

/// Rows of the table under `## Metrics`: `| \`name\` | type | labels | … |`.
fn catalogue() -> Vec<Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("README has a ## Metrics section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| `camgate_"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert!(cells.len() >= 4, "malformed catalogue row: {l}");
            let labels = cells[2]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            Row {
                name: cells[0].trim_matches('`').to_owned(),
                kind: cells[1].to_owned(),
                labels,
            }
        })
        .collect()
}

/// The exposed family a catalogue name refers to: counters are catalogued
/// by their sample name (`…_total`), other types by family name.
fn family_for<'a>(families: &'a BTreeMap<String, Family>, name: &str) -> Option<&'a Family> {
    families.get(name).or_else(|| {
        name.strip_suffix("_total")
            .and_then(|base| families.get(base))
            .filter(|f| f.kind == "counter")
    })
}

#[test]
fn every_catalogued_metric_is_exposed_with_its_type_and_labels() {
    let mut rig = Rig::start(Options {
        extra_yaml: "metrics:\n  per_device_labels: true\n".into(),
        ..Options::default()
    });
    // A registered device fills the per-device family and the SIP families.
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    // Registry gauges are refreshed by the platform's one-second tick.
    assert!(
        wait_until(Duration::from_secs(5), || rig
            .metric("camgate_devices_online")
            == 1.0),
        "{}",
        rig.logs()
    );
    let text = rig.metrics();
    let parsed = openmetrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let families: BTreeMap<String, Family> =
        parsed.into_iter().map(|f| (f.name.clone(), f)).collect();

    let rows = catalogue();
    assert!(rows.len() >= 30, "catalogue has only {} rows", rows.len());
    for row in &rows {
        let family = family_for(&families, &row.name)
            .unwrap_or_else(|| panic!("{} is catalogued but not exposed\n{text}", row.name));
        assert_eq!(family.kind, row.kind, "type of {}", row.name);
        assert!(
            family.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{} has no HELP",
            row.name
        );
        for sample in &family.samples {
            for (label, _) in &sample.labels {
                let histogram_bound = family.kind == "histogram" && label == "le";
                assert!(
                    histogram_bound || row.labels.contains(label),
                    "{}: label {label} is not catalogued ({:?})",
                    row.name,
                    row.labels
                );
            }
        }
    }
    for name in families.keys().filter(|n| n.starts_with("camgate_")) {
        let catalogued = rows
            .iter()
            .any(|r| r.name == *name || r.name.strip_suffix("_total") == Some(name.as_str()));
        assert!(
            catalogued,
            "{name} is exposed but not in README's catalogue"
        );
    }

    // Values that could only be right if the families are wired up.
    let value = |family: &str, labels: &[(&str, &str)]| {
        families[family]
            .samples
            .iter()
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    };
    assert_eq!(value("camgate_ready", &[]), Some(1.0));
    assert_eq!(
        value(
            "camgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        value("camgate_device_online", &[("device", DEVICE)]),
        Some(1.0)
    );
    assert_eq!(value("camgate_devices_registered", &[]), Some(1.0));
    assert!(
        value("camgate_sip_registrations", &[("outcome", "ok")]).is_some_and(|v| v >= 1.0),
        "{text}"
    );

    // Without the flag no per-device series exist (prometheus-client omits
    // a family with no series).
    let mut plain = Rig::start(Options::default());
    plain.add_camera(DEVICE, CHANNEL, &[]);
    plain.wait_channel(DEVICE, CHANNEL);
    assert!(
        wait_until(Duration::from_secs(5), || plain
            .metric("camgate_devices_online")
            == 1.0),
        "{}",
        plain.logs()
    );
    let text = plain.metrics();
    let parsed = openmetrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        parsed
            .iter()
            .filter(|f| f.name == "camgate_device_online")
            .all(|f| f.samples.is_empty()),
        "{text}"
    );
}

/// Every metric the Grafana dashboard queries is catalogued (and so, by the
/// test above, exposed): a renamed metric cannot leave a blank panel.
#[test]
fn dashboard_queries_only_catalogued_metrics() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/camgate-dashboard.json"
    ))
    .expect("dashboard JSON");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let rows = catalogue();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for (at, _) in expr.match_indices("camgate_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(
                    rows.iter().any(|r| r.name == base),
                    "panel {:?} queries {name}, which is not catalogued",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "dashboard queries only {queried} metrics");
}
