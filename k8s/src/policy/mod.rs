//! NetworkPolicy → Plexus. Every pod port carries the cluster's two chains:
//! its outbound chain is `ingress` (what leaves toward the pod), its
//! inbound chain is `egress` (what the pod sends). Pods' chains never
//! change: which policies apply to a pod is the membership of the
//! policies' selector groups, which follows the pods' labels.
//!
//! The cluster ingress chain: accept replies (established, related);
//! accept from the nodes (kubelet probes); jump to the *allow* chain, which
//! holds, per policy with an ingress part, a jump to the policy's chain
//! when the pod is selected (the policy chain accepts what its rules
//! allow, else returns); jump to the *isolation* chain, which holds, per
//! such policy, a drop when the pod is selected; else accept. So a pod's
//! allowed traffic is the union of the rules of every policy selecting it,
//! and a pod selected by none is not isolated, as upstream says. Egress
//! mirrors it.
//!
//! Each policy owns its records (chains, rules, groups, and its one rule in
//! each of the allow and isolation chains, at a position derived from its
//! name), so a policy is written, changed and removed in one transaction
//! without touching any other policy's records.

mod rules;

use std::collections::{BTreeMap, BTreeSet};

use nsdb::{
    namespace_label_key, Chain, ConnState, EthType, IpAddressGroup, LabelSelector, PortGroup,
    Record, Rule, RuleAction, SelectorOperator, SelectorRequirement, NAMESPACE_LABEL,
};
use uuid::Uuid;

use crate::objects::Pod;
use crate::types::NetworkPolicy;

/// The prefix of the port labels that publish a pod's named container
/// ports: `ports.plexus.io/<protocol>.<name>` = the number.
pub const NAMED_PORT_PREFIX: &str = "ports.plexus.io/";

/// The label key publishing named port `name` of `protocol` (`TCP`, …).
pub fn named_port_label(protocol: &str, name: &str) -> String {
    format!(
        "{NAMED_PORT_PREFIX}{}.{name}",
        protocol.to_ascii_lowercase()
    )
}

/// The name prefix of every object the translation owns.
pub const OWNED_PREFIX: &str = "k8s ";

/// The cluster network the policies apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster network's tenant.
    pub tenant: Uuid,
    /// The address group of the nodes' own addresses (traffic from them
    /// always reaches pods), if any.
    pub nodes: Option<Uuid>,
    /// The address group of the Services' ClusterIPs, if any: a pod's
    /// egress toward them is decided after the load balancer's
    /// translation, on the cluster router's port toward the pods (the
    /// chain [`Cluster::deferred_chain`]).
    pub services: Option<Uuid>,
}

impl Cluster {
    fn id(&self, what: &str) -> Uuid {
        Uuid::new_v5(&self.tenant, what.as_bytes())
    }

    /// The chain every pod port has as its outbound chain.
    pub fn ingress_chain(&self) -> Uuid {
        self.id("cluster:ingress")
    }

    /// The chain every pod port has as its inbound chain.
    pub fn egress_chain(&self) -> Uuid {
        self.id("cluster:egress")
    }

    /// The address group of the nodes' addresses, by its fixed id.
    pub fn nodes_group(&self) -> Uuid {
        self.id("cluster:nodes")
    }

    /// The address group of the Services' ClusterIPs, by its fixed id.
    pub fn services_group(&self) -> Uuid {
        self.id("cluster:services")
    }

    /// The chains whose rules make a policy apply (its hooks): the allow
    /// and isolation chains of ingress, egress and deferred egress.
    pub fn hook_chains(&self) -> Vec<Uuid> {
        ["ingress", "egress", "deferred"]
            .into_iter()
            .flat_map(|word| {
                let own = hooks(self, word);
                [own.allow, own.isolation]
            })
            .collect()
    }

    /// The outbound chain of the cluster router's port toward the pods:
    /// egress policies of Service traffic, after the translation.
    pub fn deferred_chain(&self) -> Uuid {
        self.id("cluster:deferred")
    }
}

/// What cannot be translated (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The policy, `namespace/name`.
    pub policy: String,
    /// What it asks that is not translated.
    pub what: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetworkPolicy {}: {}", self.policy, self.what)
    }
}

/// Which way a policy part looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn word(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// The translation: the cluster's records, and each policy's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// The cluster chains and their fixed rules (written first, never
    /// removed).
    pub cluster: Vec<Record>,
    /// Per policy (`namespace/name`), every record it owns.
    pub policies: BTreeMap<String, Vec<Record>>,
    /// Policies not translated, and why (they are left out as a whole).
    pub refused: Vec<Unsupported>,
}

impl Translation {
    /// Every record, cluster first.
    pub fn records(&self) -> Vec<Record> {
        let mut all = self.cluster.clone();
        all.extend(self.policies.values().flatten().cloned());
        all
    }
}

/// Records being built, with deterministic ids (the same policies give the
/// same records, so reconciling twice changes nothing).
struct Out<'a> {
    cluster: &'a Cluster,
    records: BTreeMap<Uuid, Record>,
}

impl Out<'_> {
    fn new(cluster: &Cluster) -> Out<'_> {
        Out {
            cluster,
            records: BTreeMap::new(),
        }
    }

    fn chain(&mut self, key: &str) -> Uuid {
        let id = self.cluster.id(key);
        self.records.insert(
            id,
            Record::Chain(Chain {
                id,
                revision: 0,
                tenant_id: self.cluster.tenant,
                name: format!("{OWNED_PREFIX}{key}"),
            }),
        );
        id
    }

    fn rule(
        &mut self,
        chain: Uuid,
        position: u32,
        action: RuleAction,
        edit: impl FnOnce(&mut Rule),
    ) {
        let mut rule = Rule::new(chain, position, action);
        rule.id = Uuid::new_v5(&chain, &position.to_be_bytes());
        edit(&mut rule);
        self.records.insert(rule.id, Record::Rule(rule));
    }

    /// The port group of the pods `selector` selects.
    fn port_group(&mut self, key: &str, selector: LabelSelector) -> Uuid {
        let id = self.cluster.id(&format!("ports/{key}"));
        self.records.insert(
            id,
            Record::PortGroup(PortGroup {
                id,
                revision: 0,
                tenant_id: self.cluster.tenant,
                name: format!("{OWNED_PREFIX}{key}"),
                port_ids: Vec::new(),
                selector: Some(selector),
            }),
        );
        id
    }

    /// An address group: the addresses of the pods `selector` selects, or
    /// the listed `addresses` (an `ipBlock`'s exceptions).
    fn address_group(
        &mut self,
        key: &str,
        addresses: Vec<ipnet::IpNet>,
        selector: Option<LabelSelector>,
    ) -> Uuid {
        let id = self.cluster.id(&format!("addresses/{key}"));
        self.records.insert(
            id,
            Record::IpAddressGroup(IpAddressGroup {
                id,
                revision: 0,
                tenant_id: self.cluster.tenant,
                name: format!("{OWNED_PREFIX}{key}"),
                addresses,
                selector,
            }),
        );
        id
    }

    fn into_records(self) -> Vec<Record> {
        self.records.into_values().collect()
    }
}

/// `selector` restricted to pods of `namespace`.
fn in_namespace(selector: &LabelSelector, namespace: &str) -> LabelSelector {
    let mut restricted = selector.clone();
    restricted.match_expressions.push(SelectorRequirement {
        key: NAMESPACE_LABEL.into(),
        operator: SelectorOperator::In,
        values: vec![namespace.into()],
    });
    restricted
}

/// `pods` (of the namespaces `namespaces` selects) as one selector over
/// port labels: the namespace selector's keys under the namespace prefix.
fn of_namespaces(pods: &LabelSelector, namespaces: &LabelSelector) -> LabelSelector {
    let mut combined = pods.clone();
    for (key, value) in &namespaces.match_labels {
        combined
            .match_labels
            .insert(namespace_label_key(key), value.clone());
    }
    for requirement in &namespaces.match_expressions {
        combined.match_expressions.push(SelectorRequirement {
            key: namespace_label_key(&requirement.key),
            ..requirement.clone()
        });
    }
    combined
}

/// The chains a direction's policies hang off.
struct Hooks {
    allow: Uuid,
    isolation: Uuid,
}

fn hooks(cluster: &Cluster, word: &str) -> Hooks {
    Hooks {
        allow: cluster.id(&format!("cluster:{word}:allow")),
        isolation: cluster.id(&format!("cluster:{word}:isolation")),
    }
}

/// The cluster chains: the two every pod port carries, and the allow and
/// isolation chains they jump to.
fn cluster_records(cluster: &Cluster) -> Vec<Record> {
    const ETHERTYPE_ARP: u16 = 0x0806;
    let mut out = Out::new(cluster);
    for direction in [Direction::Ingress, Direction::Egress] {
        let word = direction.word();
        let chain = out.chain(&format!("cluster:{word}"));
        let allow = out.chain(&format!("cluster:{word}:allow"));
        let isolation = out.chain(&format!("cluster:{word}:isolation"));
        let mut position = 1;
        out.rule(chain, position, RuleAction::Accept, |r| {
            r.conn_state = vec![ConnState::Established, ConnState::Related];
            r.description = "replies of allowed connections".into();
        });
        position += 1;
        // Policies are about IP: an isolated pod still resolves and
        // answers addresses (the isolation rules match any frame).
        out.rule(chain, position, RuleAction::Accept, |r| {
            r.eth_type = Some(EthType(ETHERTYPE_ARP));
            r.description = "ARP (policies are about IP)".into();
        });
        position += 1;
        if let (Direction::Ingress, Some(nodes)) = (direction, cluster.nodes) {
            out.rule(chain, position, RuleAction::Accept, |r| {
                r.src_ip_group_id = Some(nodes);
                r.description = "from the nodes (kubelet probes)".into();
            });
            position += 1;
        }
        if let (Direction::Egress, Some(services)) = (direction, cluster.services) {
            out.rule(chain, position, RuleAction::Accept, |r| {
                r.dst_ip_group_id = Some(services);
                r.description = "to a Service: decided after the translation, at the router".into();
            });
            position += 1;
        }
        out.rule(chain, position, RuleAction::Jump, |r| {
            r.jump_chain_id = Some(allow);
            r.description = "what the policies selecting the pod allow".into();
        });
        out.rule(chain, position + 1, RuleAction::Jump, |r| {
            r.jump_chain_id = Some(isolation);
            r.description = "pods selected by a policy are isolated".into();
        });
    }
    // Service traffic leaving the cluster router toward the pods, after
    // the load balancer's translation: the sender's egress policies, the
    // sender known by its address.
    let deferred = out.chain("cluster:deferred");
    let allow = out.chain("cluster:deferred:allow");
    let isolation = out.chain("cluster:deferred:isolation");
    out.rule(deferred, 1, RuleAction::Accept, |r| {
        r.conn_state = vec![ConnState::Established, ConnState::Related];
        r.description = "replies of allowed connections".into();
    });
    out.rule(deferred, 2, RuleAction::Jump, |r| {
        r.jump_chain_id = Some(allow);
        r.description = "what the sender's egress policies allow".into();
    });
    out.rule(deferred, 3, RuleAction::Jump, |r| {
        r.jump_chain_id = Some(isolation);
        r.description = "senders selected by an egress policy are isolated".into();
    });
    out.into_records()
}

/// The first position of a policy's rules in the allow and isolation
/// chains: derived from its key (FNV-1a), so it stays when other policies
/// come and go.
fn slot_of(key: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    1 + hash % 0x7fff_0000
}

/// Translates `policies` for `cluster`; `pods` resolve named ports. A
/// policy asking what is not translated is left out as a whole (and
/// reported), never half translated.
pub fn translate(cluster: &Cluster, policies: &[NetworkPolicy], pods: &[Pod]) -> Translation {
    let mut ordered: Vec<&NetworkPolicy> = policies.iter().collect();
    ordered.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut translation = Translation {
        cluster: cluster_records(cluster),
        ..Translation::default()
    };
    let mut taken = BTreeSet::new();
    for policy in ordered {
        let key = format!("{}/{}", policy.metadata.namespace, policy.metadata.name);
        let mut slot = slot_of(&key);
        while taken.contains(&slot) {
            slot = slot % 0x7fff_0000 + 1;
        }
        match translate_policy(cluster, policy, &key, slot, pods) {
            Ok(records) => {
                taken.insert(slot);
                translation.policies.insert(key, records);
            }
            Err(unsupported) => translation.refused.push(Unsupported {
                policy: key,
                ..unsupported
            }),
        }
    }
    translation
}

/// A digest of what a policy's translation depends on: its spec and the
/// numbers its named ports resolve to.
fn generation(policy: &NetworkPolicy, pods: &[Pod]) -> String {
    let mut input = serde_json::to_string(&policy.spec).unwrap_or_default();
    let mut names = BTreeSet::new();
    for rule in policy.spec.ingress.iter().chain(&policy.spec.egress) {
        for port in &rule.ports {
            if let Some(crate::types::IntOrString::String(name)) = &port.port {
                names.insert((port.protocol.clone().unwrap_or_else(|| "TCP".into()), name));
            }
        }
    }
    for (protocol, name) in names {
        let numbers: BTreeSet<u16> = pods
            .iter()
            .filter_map(|pod| pod.named_port(name, &protocol))
            .collect();
        input.push_str(&format!("|{protocol}/{name}={numbers:?}"));
    }
    let digest = Uuid::new_v5(&Uuid::NAMESPACE_OID, input.as_bytes());
    digest.simple().to_string()[..12].to_string()
}

/// The directions a policy isolates.
fn directions(policy: &NetworkPolicy) -> Vec<Direction> {
    let spec = &policy.spec;
    match &spec.policy_types {
        Some(types) => types
            .iter()
            .filter_map(|t| match t.as_str() {
                "Ingress" => Some(Direction::Ingress),
                "Egress" => Some(Direction::Egress),
                _ => None,
            })
            .collect(),
        None if spec.egress.is_empty() => vec![Direction::Ingress],
        None => vec![Direction::Ingress, Direction::Egress],
    }
}

fn translate_policy(
    cluster: &Cluster,
    policy: &NetworkPolicy,
    key: &str,
    slot: u32,
    pods: &[Pod],
) -> Result<Vec<Record>, Unsupported> {
    let mut out = Out::new(cluster);
    let ns = &policy.metadata.namespace;
    let spec = &policy.spec;
    // Everything but the hooks is keyed by the policy's generation, so a
    // changed policy is built beside the old one and switched to by
    // changing its hooks alone (see `crate::reconcile`).
    let key = &format!("{key}@{}", generation(policy, pods));
    let selected = out.port_group(
        &format!("{key}/selected"),
        in_namespace(&spec.pod_selector, ns),
    );
    for direction in directions(policy) {
        let policy_rules = match direction {
            Direction::Ingress => &spec.ingress,
            Direction::Egress => &spec.egress,
        };
        let chain = out.chain(&format!("{key} {}", direction.word()));
        let mut position = 1;
        for (index, rule) in policy_rules.iter().enumerate() {
            let context = rules::Context {
                key,
                ns,
                direction,
                chain,
                index,
                pods,
            };
            position = rules::translate_rule(&mut out, &context, position, rule)?;
        }
        let own = hooks(cluster, direction.word());
        let name = key.split('@').next().unwrap_or(key);
        out.rule(own.allow, slot, RuleAction::Jump, |r| {
            r.jump_chain_id = Some(chain);
            select_pod(r, direction, selected);
            r.description = format!("{name}: what it allows");
        });
        out.rule(own.isolation, slot, RuleAction::Drop, |r| {
            select_pod(r, direction, selected);
            r.description = format!("{name}: isolated, nothing allowed it");
        });
        if direction == Direction::Egress && cluster.services.is_some() {
            // The same, for Service traffic after its translation: the
            // sender by its address.
            let senders = out.address_group(
                &format!("{key}/selected"),
                Vec::new(),
                Some(in_namespace(&spec.pod_selector, ns)),
            );
            let deferred = hooks(cluster, "deferred");
            out.rule(deferred.allow, slot, RuleAction::Jump, |r| {
                r.jump_chain_id = Some(chain);
                r.src_ip_group_id = Some(senders);
                r.description = format!("{name}: what it allows (Service traffic)");
            });
            out.rule(deferred.isolation, slot, RuleAction::Drop, |r| {
                r.src_ip_group_id = Some(senders);
                r.description = format!("{name}: isolated, nothing allowed it (Service traffic)");
            });
        }
    }
    Ok(out.into_records())
}

/// Conditions the rule on the pod being a member of `selected`: the port
/// toward it (ingress) or the port it sent from (egress).
fn select_pod(rule: &mut Rule, direction: Direction, selected: Uuid) {
    match direction {
        Direction::Ingress => rule.out_port_group_id = Some(selected),
        Direction::Egress => rule.in_port_group_id = Some(selected),
    }
}

/// The policy (`namespace/name`) an owned object's name belongs to, or
/// `None` for the cluster's own objects.
pub fn owner_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix(OWNED_PREFIX)?;
    if rest.starts_with("cluster:") {
        return None;
    }
    let rest = rest.split([' ', '@']).next()?;
    let mut parts = rest.split('/');
    let (ns, policy) = (parts.next()?, parts.next()?);
    Some(format!("{ns}/{policy}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_names() {
        assert_eq!(owner_of("k8s x/deny ingress").as_deref(), Some("x/deny"));
        assert_eq!(
            owner_of("k8s x/deny@0a1b/selected").as_deref(),
            Some("x/deny")
        );
        assert_eq!(
            owner_of("k8s x/deny/ingress/0/1").as_deref(),
            Some("x/deny")
        );
        assert_eq!(owner_of("k8s cluster:ingress:allow"), None);
        assert_eq!(
            owner_of("k8s k8s/ingress ingress").as_deref(),
            Some("k8s/ingress")
        );
        assert_eq!(owner_of("web"), None);
    }

    #[test]
    fn slots_are_stable_and_distinct() {
        assert_eq!(slot_of("x/a"), slot_of("x/a"));
        assert_ne!(slot_of("x/a"), slot_of("x/b"));
        assert!(slot_of("x/a") >= 1);
    }
}
