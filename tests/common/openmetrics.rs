//! A strict parser of the OpenMetrics 1.0 text exposition format
//! (OpenMetrics specification, "Text format": ABNF for metricset,
//! metricfamily, metric-descriptor and sample), for tests that check what
//! `/metrics` exposes. It rejects what Prometheus' OpenMetrics parser
//! rejects: samples before their family's `# TYPE`, sample names with a
//! suffix the type does not allow, families split or repeated, malformed
//! labels or values, buckets without `+Inf`, and a missing `# EOF`.

use std::collections::BTreeSet;

/// A sample's label pairs, in exposition order.
pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

const TYPES: [&str; 8] = [
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "stateset",
    "info",
    "summary",
    "unknown",
];

fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Suffixes a sample name may add to its family name, by type.
fn allowed_suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        _ => &[""],
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// `{a="x",b="y"}` → pairs; `rest` starts just after `{`. Returns the pairs
/// and what follows the closing brace.
fn parse_labels(mut rest: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut seen = BTreeSet::new();
    if let Some(after) = rest.strip_prefix('}') {
        return Ok((labels, after));
    }
    loop {
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if !seen.insert(name.to_owned()) {
            return Err(format!("repeated label {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("line break in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        rest = rest.strip_prefix(',').ok_or("expected ',' or '}'")?;
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("sample without value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad sample name {name:?}"));
    }
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(after) => parse_labels(after)?,
        None => (Vec::new(), &line[name_end..]),
    };
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    // Value, optional timestamp, optional exemplar after " # ".
    let rest = rest.split(" # ").next().unwrap_or(rest);
    let mut parts = rest.split(' ');
    let value_text = parts.next().ok_or("missing value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("bad value {value_text:?}"))?;
    if let Some(ts) = parts.next() {
        parse_value(ts).ok_or_else(|| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing text after the sample".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn check_histogram(f: &Family) -> Result<(), String> {
    // Bucket (bound, count) pairs per series, keyed by the labels other than le.
    let mut series: std::collections::BTreeMap<Labels, Vec<(f64, f64)>> = Default::default();
    for s in f.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let le = s
            .labels
            .iter()
            .find(|(k, _)| k == "le")
            .ok_or_else(|| format!("{}: bucket without le", f.name))?;
        let bound = parse_value(&le.1).ok_or_else(|| format!("{}: bad le {:?}", f.name, le.1))?;
        let rest: Vec<_> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        series.entry(rest).or_default().push((bound, s.value));
    }
    for buckets in series.values() {
        if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
            return Err(format!("{}: last bucket is not le=\"+Inf\"", f.name));
        }
        if buckets
            .windows(2)
            .any(|w| w[1].0 <= w[0].0 || w[1].1 < w[0].1)
        {
            return Err(format!("{}: buckets not increasing and cumulative", f.name));
        }
    }
    Ok(())
}

/// Parse a whole exposition; the error names the line.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let mut families: Vec<Family> = Vec::new();
    let mut names = BTreeSet::new();
    let mut eof = false;
    for (i, line) in text.split_terminator('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if eof {
            return Err(at("text after # EOF".into()));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                return Err(at("short metadata line".into()));
            };
            let arg = parts.next().unwrap_or("");
            if !is_metric_name(name) {
                return Err(at(format!("bad family name {name:?}")));
            }
            // Metadata opens a family unless it continues the current one.
            if families.last().is_none_or(|f| f.name != name) {
                if !names.insert(name.to_owned()) {
                    return Err(at(format!("family {name} appears twice")));
                }
                families.push(Family {
                    name: name.to_owned(),
                    kind: "unknown".into(),
                    help: None,
                    unit: None,
                    samples: Vec::new(),
                });
            }
            let f = families.last_mut().expect("pushed above");
            if !f.samples.is_empty() {
                return Err(at("metadata after samples".into()));
            }
            match keyword {
                "TYPE" if TYPES.contains(&arg) => f.kind = arg.to_owned(),
                "TYPE" => return Err(at(format!("unknown type {arg:?}"))),
                "HELP" => f.help = Some(arg.to_owned()),
                "UNIT" if name.ends_with(&format!("_{arg}")) || arg.is_empty() => {
                    f.unit = Some(arg.to_owned())
                }
                "UNIT" => return Err(at("family name does not end with its unit".into())),
                _ => return Err(at(format!("unknown metadata {keyword:?}"))),
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(at("comments and blank lines are not OpenMetrics".into()));
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = families
            .last_mut()
            .filter(|f| {
                sample
                    .name
                    .strip_prefix(f.name.as_str())
                    .is_some_and(|suffix| allowed_suffixes(&f.kind).contains(&suffix))
            })
            .ok_or_else(|| at("sample outside its family (no # TYPE, or a bad suffix)".into()))?;
        family.samples.push(sample);
    }
    if !eof {
        return Err("no # EOF at the end".into());
    }
    for f in families.iter().filter(|f| f.kind == "histogram") {
        check_histogram(f)?;
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_wellformed_and_rejects_broken() {
        let good = "# HELP a_seconds A.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\na_seconds_sum 1.5\na_seconds_count 2\na_seconds_bucket{le=\"1.0\"} 1\na_seconds_bucket{le=\"+Inf\"} 2\n# TYPE b counter\nb_total{k=\"x\\\"y\"} 3\n# EOF\n";
        let fams = parse(good).unwrap();
        assert_eq!(fams.len(), 2);
        assert_eq!(fams[1].samples[0].labels[0].1, "x\"y");
        for bad in [
            "# TYPE b counter\nb 3\n# EOF\n",
            "# TYPE b counter\nb_total 3\n",
            "b_total 3\n# EOF\n",
            "# TYPE b counter\nb_total{k=x} 3\n# EOF\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n# EOF\n",
            "# TYPE b gauge\nb 1\n# TYPE c gauge\nc 1\n# TYPE b gauge\n# EOF\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
