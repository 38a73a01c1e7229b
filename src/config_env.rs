//! `${NAME}` substitution in the configuration text, before YAML parsing.
//!
//! Container platforms hand a process its environment-specific values as
//! variables (Kubernetes: the downward API's `status.hostIP`, Secrets as
//! env). The syntax follows the POSIX shell's parameter expansion subset
//! (IEEE Std 1003.1, Shell Command Language §2.6.2) that docker-compose and
//! Kubernetes users already know:
//!
//! - `${NAME}` — the variable's value; an unset variable is an error.
//! - `${NAME:-default}` — the default when unset or empty.
//! - `$${` — a literal `${`.
//!
//! Comment lines (first non-blank character `#`) are left alone, so prose
//! about the syntax cannot fail a load.

/// Longest value substituted; anything longer is not a config value.
const MAX_VALUE_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("line {line}: environment variable {name} is not set (use ${{{name}:-default}})")]
    Unset { line: usize, name: String },
    #[error("line {line}: unterminated ${{…}}")]
    Unterminated { line: usize },
    #[error("line {line}: {name:?} is not a variable name")]
    BadName { line: usize, name: String },
    #[error("line {line}: the value of {name} has a line break or is over {MAX_VALUE_BYTES} bytes")]
    BadValue { line: usize, name: String },
}

impl ExpandError {
    /// Metrics/log label.
    pub fn kind(&self) -> &'static str {
        match self {
            ExpandError::Unset { .. } => "unset",
            ExpandError::Unterminated { .. } => "unterminated",
            ExpandError::BadName { .. } => "bad_name",
            ExpandError::BadValue { .. } => "bad_value",
        }
    }
}

fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Substitute every `${…}` in `text`, looking variables up with `lookup`.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(tail) = after.strip_prefix("${") {
                let Some(end) = tail.find('}') else {
                    return Err(ExpandError::Unterminated { line: line_no });
                };
                let inner = &tail[..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                if !is_name(name) {
                    return Err(ExpandError::BadName {
                        line: line_no,
                        name: name.to_owned(),
                    });
                }
                let value = match (lookup(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_owned(),
                    (None, None) if lookup(name).is_some() => String::new(),
                    (None, None) => {
                        return Err(ExpandError::Unset {
                            line: line_no,
                            name: name.to_owned(),
                        });
                    }
                };
                // A line break in a value would let the environment inject
                // YAML structure, not just a value.
                if value.contains(['\n', '\r']) || value.len() > MAX_VALUE_BYTES {
                    return Err(ExpandError::BadValue {
                        line: line_no,
                        name: name.to_owned(),
                    });
                }
                out.push_str(&value);
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST_IP" => Some("10.0.0.7".into()),
            "EMPTY" => Some(String::new()),
            "EVIL" => Some("x\"\nhttp: {}".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let text = "sip:\n  external_ip: \"${HOST_IP}\"\n  realm: \"${REALM:-3402000000}\"\n  x: \"${EMPTY:-d}\"\n";
        assert_eq!(
            expand(text, env).unwrap(),
            "sip:\n  external_ip: \"10.0.0.7\"\n  realm: \"3402000000\"\n  x: \"d\"\n"
        );
    }

    #[test]
    fn set_but_empty_without_default_is_empty() {
        assert_eq!(expand("a: \"${EMPTY}\"", env).unwrap(), "a: \"\"");
    }

    #[test]
    fn unset_names_variable_and_line() {
        let err = expand("a: 1\nb: ${NOPE}\n", env).unwrap_err();
        assert_eq!(
            err,
            ExpandError::Unset {
                line: 2,
                name: "NOPE".into()
            }
        );
        assert!(err.to_string().contains("NOPE"), "{err}");
    }

    #[test]
    fn comments_escapes_and_lone_dollars_are_kept() {
        let text = "# use ${UNSET_IN_COMMENT}\npassword: \"pa$$w$rd $${HOST_IP}\"\n";
        assert_eq!(
            expand(text, env).unwrap(),
            "# use ${UNSET_IN_COMMENT}\npassword: \"pa$$w$rd ${HOST_IP}\"\n"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(
            expand("a: ${HOST_IP", env).unwrap_err().kind(),
            "unterminated"
        );
        assert_eq!(expand("a: ${1X}", env).unwrap_err().kind(), "bad_name");
        assert_eq!(expand("a: ${EVIL}", env).unwrap_err().kind(), "bad_value");
    }
}
