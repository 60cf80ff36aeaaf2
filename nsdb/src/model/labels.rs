//! Labels on ports and label selectors on groups, with Kubernetes'
//! syntax and semantics (`matchLabels` and `matchExpressions` with `In`,
//! `NotIn`, `Exists`, `DoesNotExist`; every requirement must hold).
//!
//! A group with a selector has no listed members: its members are the
//! tenant's ports whose labels the selector matches, computed wherever the
//! group is read (the agents' snapshots), so they follow label changes.
//! Kubernetes namespaces' labels reach selectors as port labels too: the
//! controller gives each pod's port its namespace as
//! [`NAMESPACE_LABEL`] and each namespace label `k=v` as
//! `namespace.plexus.io/k=v` (as Cilium folds namespace labels into an
//! endpoint's identity), so one selector can say "these pods of those
//! namespaces".

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::constraints::Violation;

/// A port's labels.
pub type Labels = BTreeMap<String, String>;

/// The label naming a pod's Kubernetes namespace.
pub const NAMESPACE_LABEL: &str = "plexus.io/namespace";

/// The prefix under which a namespace's own labels appear on its pods'
/// ports.
pub const NAMESPACE_LABEL_PREFIX: &str = "namespace.plexus.io/";

/// The port label key under which a namespace's label `key` appears: an
/// unprefixed `k` as `namespace.plexus.io/k`, a prefixed `p/k` (such as
/// `kubernetes.io/metadata.name`) as `p.ns.plexus.io/k`, so every key stays
/// a valid label key.
pub fn namespace_label_key(key: &str) -> String {
    match key.split_once('/') {
        Some((prefix, name)) => format!("{prefix}.ns.plexus.io/{name}"),
        None => format!("{NAMESPACE_LABEL_PREFIX}{key}"),
    }
}

/// Whether `key` is one Plexus sets itself (prefix `plexus.io` or a
/// subdomain of it): a pod's own labels may not carry such keys, or a pod
/// could claim another namespace's labels.
pub fn is_reserved_label(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(prefix, _)| prefix == "plexus.io" || prefix.ends_with(".plexus.io"))
}

/// How a requirement compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label is set to one of `values`.
    In,
    /// The label is not set, or set to none of `values`.
    NotIn,
    /// The label is set (to anything).
    Exists,
    /// The label is not set.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: SelectorOperator,
    /// The values (`In`/`NotIn`: at least one; `Exists`/`DoesNotExist`:
    /// none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A Kubernetes label selector. The empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be set to exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Checks keys, values and operators against Kubernetes' rules.
    pub fn validate(&self, field: &'static str) -> Result<(), Violation> {
        for (key, value) in &self.match_labels {
            check_key(field, key)?;
            check_value(field, value)?;
        }
        for r in &self.match_expressions {
            check_key(field, &r.key)?;
            let needs_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values == r.values.is_empty() {
                return Err((
                    field,
                    format!(
                        "{:?} on '{}' {} values",
                        r.operator,
                        r.key,
                        if needs_values { "needs" } else { "takes no" }
                    ),
                ));
            }
            for value in &r.values {
                check_value(field, value)?;
            }
        }
        Ok(())
    }
}

fn is_name(part: &str) -> bool {
    let bytes = part.as_bytes();
    !part.is_empty()
        && part.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(prefix: &str) -> bool {
    prefix.len() <= 253
        && prefix.split('.').all(|label| {
            let b = label.as_bytes();
            !label.is_empty()
                && label.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
fn check_key(field: &'static str, key: &str) -> Result<(), Violation> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name(name),
        None => is_name(key),
    };
    if valid {
        Ok(())
    } else {
        Err((field, format!("'{key}' is not a valid label key")))
    }
}

/// A label value: empty, or a name of at most 63 characters.
fn check_value(field: &'static str, value: &str) -> Result<(), Violation> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err((field, format!("'{value}' is not a valid label value")))
    }
}

/// Checks a port's labels.
pub(super) fn validate_labels(field: &'static str, labels: &Labels) -> Result<(), Violation> {
    for (key, value) in labels {
        check_key(field, key)?;
        check_value(field, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        assert!(LabelSelector::default().matches(&pod), "empty selects all");
        assert!(LabelSelector::default().matches(&Labels::new()));
        let by_label = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            ..LabelSelector::default()
        };
        assert!(by_label.matches(&pod));
        assert!(!by_label.matches(&labels(&[("app", "db")])));
        let cases = [
            (
                requirement("tier", SelectorOperator::In, &["front", "back"]),
                true,
            ),
            (requirement("tier", SelectorOperator::In, &["back"]), false),
            (
                requirement("tier", SelectorOperator::NotIn, &["back"]),
                true,
            ),
            (
                requirement("tier", SelectorOperator::NotIn, &["front"]),
                false,
            ),
            (requirement("zone", SelectorOperator::NotIn, &["a"]), true),
            (requirement("app", SelectorOperator::Exists, &[]), true),
            (requirement("zone", SelectorOperator::Exists, &[]), false),
            (
                requirement("zone", SelectorOperator::DoesNotExist, &[]),
                true,
            ),
            (
                requirement("app", SelectorOperator::DoesNotExist, &[]),
                false,
            ),
        ];
        for (r, expected) in cases {
            let selector = LabelSelector {
                match_expressions: vec![r.clone()],
                ..LabelSelector::default()
            };
            assert_eq!(selector.matches(&pod), expected, "{r:?}");
        }
        let both = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![requirement("tier", SelectorOperator::In, &["back"])],
        };
        assert!(!both.matches(&pod), "every requirement must hold");
    }

    #[test]
    fn keys_values_and_operators_are_checked() {
        let ok = LabelSelector {
            match_labels: labels(&[("kubernetes.io/metadata.name", "x"), ("a_b.c-d", "")]),
            match_expressions: vec![requirement("app", SelectorOperator::Exists, &[])],
        };
        assert_eq!(ok.validate("selector"), Ok(()));
        for bad in [
            LabelSelector {
                match_labels: labels(&[("-bad", "x")]),
                ..LabelSelector::default()
            },
            LabelSelector {
                match_labels: labels(&[("Upper.Case/x", "y")]),
                ..LabelSelector::default()
            },
            LabelSelector {
                match_labels: labels(&[("ok", "not ok")]),
                ..LabelSelector::default()
            },
            LabelSelector {
                match_expressions: vec![requirement("a", SelectorOperator::In, &[])],
                ..LabelSelector::default()
            },
            LabelSelector {
                match_expressions: vec![requirement("a", SelectorOperator::Exists, &["x"])],
                ..LabelSelector::default()
            },
        ] {
            assert!(bad.validate("selector").is_err(), "{bad:?}");
        }
        assert!(validate_labels("labels", &labels(&[(&"x".repeat(64), "y")])).is_err());
    }

    #[test]
    fn selectors_speak_kubernetes_json() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }))
        .unwrap();
        assert_eq!(
            selector.match_expressions[0].operator,
            SelectorOperator::NotIn
        );
        assert_eq!(
            serde_json::to_value(LabelSelector::default()).unwrap(),
            serde_json::json!({})
        );
    }
}
