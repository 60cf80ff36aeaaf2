//! The parts of Kubernetes' NetworkPolicy the translation reads, in the API
//! server's JSON shape (so manifests and watch events deserialize as they
//! are).

use std::collections::BTreeMap;

use nsdb::LabelSelector;
use serde::{Deserialize, Serialize};

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The object's name.
    pub name: String,
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// What it says.
    pub spec: NetworkPolicySpec,
}

/// `spec` of a NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// The pods of the policy's namespace it selects (`{}`: all).
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// `Ingress`, `Egress`; when absent, `Ingress` plus `Egress` if there
    /// are egress rules.
    #[serde(default)]
    pub policy_types: Option<Vec<String>>,
    /// Allowed incoming traffic.
    #[serde(default)]
    pub ingress: Vec<PolicyRule>,
    /// Allowed outgoing traffic.
    #[serde(default)]
    pub egress: Vec<PolicyRule>,
}

/// One ingress (`from`) or egress (`to`) rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// Ingress peers (absent or empty: every source).
    #[serde(default)]
    pub from: Vec<Peer>,
    /// Egress peers (absent or empty: every destination).
    #[serde(default)]
    pub to: Vec<Peer>,
    /// Ports (absent or empty: every port).
    #[serde(default)]
    pub ports: Vec<PolicyPort>,
}

/// A peer: pods (of namespaces), or an address block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Pods by label (of the policy's namespace unless `namespaceSelector`).
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces by label.
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses.
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

/// `ipBlock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    /// The block.
    pub cidr: ipnet::IpNet,
    /// Parts of it that are not allowed.
    #[serde(default)]
    pub except: Vec<ipnet::IpNet>,
}

/// A port, by number or name, optionally a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// A number or a named container port (absent: every port).
    #[serde(default)]
    pub port: Option<IntOrString>,
    /// The end of a range starting at `port`.
    #[serde(default)]
    pub end_port: Option<u16>,
}

/// Kubernetes' `IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(u16),
    /// A name.
    String(String),
}
