//! NetworkPolicy → Plexus: two cluster chains every pod port carries (its
//! outbound chain is `ingress`, what leaves toward the pod; its inbound
//! chain is `egress`, what the pod sends) and, per policy and direction, a
//! chain of accept rules and the selector groups they name. Pods' chains
//! never change: which policies apply to a pod is the membership of the
//! policies' selector groups, which follows the pods' labels.
//!
//! The cluster ingress chain, in order: accept replies (established,
//! related); accept from the nodes (kubelet probes); for each policy with
//! an ingress part, jump to its chain when the pod is selected; then, for
//! each such policy, drop when the pod is selected (isolated: no rule of
//! any policy allowed it); else accept. Egress mirrors it. So the allowed
//! traffic of a pod is the union of the rules of every policy selecting it,
//! as upstream says.

use std::collections::BTreeMap;

use nsdb::{
    Chain, Condition, ConnState, IpAddressGroup, IpProto, LabelSelector, PortGroup, PortRange,
    Record, Rule, RuleAction, SelectorOperator, SelectorRequirement, NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
};
use uuid::Uuid;

use crate::types::{IntOrString, NetworkPolicy, Peer, PolicyPort, PolicyRule};

/// The cluster network the policies apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster network's tenant.
    pub tenant: Uuid,
    /// The address group of the nodes' own addresses (traffic from them
    /// always reaches pods), if any.
    pub nodes: Option<Uuid>,
}

impl Cluster {
    fn id(&self, what: &str) -> Uuid {
        Uuid::new_v5(&self.tenant, what.as_bytes())
    }

    /// The chain every pod port has as its outbound chain.
    pub fn ingress_chain(&self) -> Uuid {
        self.id("k8s/ingress")
    }

    /// The chain every pod port has as its inbound chain.
    pub fn egress_chain(&self) -> Uuid {
        self.id("k8s/egress")
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

/// Which way a policy part looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Records being built, with deterministic ids (the same policies give the
/// same records, so reconciling twice changes nothing).
struct Out<'a> {
    cluster: &'a Cluster,
    records: BTreeMap<Uuid, Record>,
}

impl Out<'_> {
    fn chain(&mut self, key: &str, name: String) -> Uuid {
        let id = self.cluster.id(key);
        self.records.insert(
            id,
            Record::Chain(Chain {
                id,
                revision: 0,
                tenant_id: self.cluster.tenant,
                name,
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
                name: format!("k8s {key}"),
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
        let kind = if selector.is_some() {
            "addresses"
        } else {
            "static"
        };
        let id = self.cluster.id(&format!("{kind}/{key}"));
        self.records.insert(
            id,
            Record::IpAddressGroup(IpAddressGroup {
                id,
                revision: 0,
                tenant_id: self.cluster.tenant,
                name: format!("k8s {key}"),
                addresses,
                selector,
            }),
        );
        id
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
            .insert(format!("{NAMESPACE_LABEL_PREFIX}{key}"), value.clone());
    }
    for requirement in &namespaces.match_expressions {
        combined.match_expressions.push(SelectorRequirement {
            key: format!("{NAMESPACE_LABEL_PREFIX}{}", requirement.key),
            ..requirement.clone()
        });
    }
    combined
}

/// The traffic a peer names, as conditions on the packet's other end.
enum Other {
    /// Anyone.
    Anyone,
    /// Pods, by an address group.
    Pods(Uuid),
    /// A block, minus an address group.
    Block(ipnet::IpNet, Option<Uuid>),
}

/// A port condition: protocol and destination ports.
type PortCondition = (IpProto, Option<PortRange>);

fn ports_of(policy: &str, ports: &[PolicyPort]) -> Result<Vec<PortCondition>, Unsupported> {
    if ports.is_empty() {
        return Ok(vec![]);
    }
    ports
        .iter()
        .map(|p| {
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => IpProto::TCP,
                "UDP" => IpProto::UDP,
                "SCTP" => IpProto(132),
                other => {
                    return Err(Unsupported {
                        policy: policy.into(),
                        what: format!("protocol {other}"),
                    })
                }
            };
            let range = match &p.port {
                None => None,
                Some(IntOrString::Int(start)) => Some(PortRange {
                    start: *start,
                    end: p.end_port.unwrap_or(*start),
                }),
                Some(IntOrString::String(name)) => {
                    return Err(Unsupported {
                        policy: policy.into(),
                        what: format!("the named port '{name}' (not translated yet)"),
                    })
                }
            };
            Ok((protocol, range))
        })
        .collect()
}

/// Translates `policies` for `cluster`: the two cluster chains with their
/// rules, and every policy's chains, rules and groups. A policy asking for
/// what is not translated yet is refused as a whole, never half applied.
pub fn translate(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
) -> Result<Vec<Record>, Unsupported> {
    let mut out = Out {
        cluster,
        records: BTreeMap::new(),
    };
    let mut ordered: Vec<&NetworkPolicy> = policies.iter().collect();
    ordered.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut parts: Vec<(Direction, Uuid, Uuid)> = Vec::new();
    for policy in ordered {
        let ns = &policy.metadata.namespace;
        let key = format!("{ns}/{}", policy.metadata.name);
        let spec = &policy.spec;
        let types: Vec<Direction> = match &spec.policy_types {
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
        };
        let selected = out.port_group(
            &format!("{key}/selected"),
            in_namespace(&spec.pod_selector, ns),
        );
        for direction in types {
            let rules = match direction {
                Direction::Ingress => &spec.ingress,
                Direction::Egress => &spec.egress,
            };
            let chain = out.chain(
                &format!("{key}/{}", direction.word()),
                format!("k8s {key} {}", direction.word()),
            );
            let mut position = 1;
            for (r, rule) in rules.iter().enumerate() {
                position = translate_rule(&mut out, &key, ns, direction, chain, position, r, rule)?;
            }
            parts.push((direction, chain, selected));
        }
    }
    for direction in [Direction::Ingress, Direction::Egress] {
        let chain = match direction {
            Direction::Ingress => cluster.ingress_chain(),
            Direction::Egress => cluster.egress_chain(),
        };
        out.chain(
            &format!("k8s/{}", direction.word()),
            format!("k8s {}", direction.word()),
        );
        let mut position = 1;
        out.rule(chain, position, RuleAction::Accept, |r| {
            r.conn_state = vec![ConnState::Established, ConnState::Related];
            r.description = "replies of allowed connections".into();
        });
        position += 1;
        if let (Direction::Ingress, Some(nodes)) = (direction, cluster.nodes) {
            out.rule(chain, position, RuleAction::Accept, |r| {
                r.src_ip_group_id = Some(nodes);
                r.description = "from the nodes (kubelet probes)".into();
            });
            position += 1;
        }
        let mine: Vec<(Uuid, Uuid)> = parts
            .iter()
            .filter(|(d, _, _)| *d == direction)
            .map(|(_, chain, selected)| (*chain, *selected))
            .collect();
        for (policy_chain, selected) in &mine {
            out.rule(chain, position, RuleAction::Jump, |r| {
                r.jump_chain_id = Some(*policy_chain);
                select_pod(r, direction, *selected);
            });
            position += 1;
        }
        for (_, selected) in &mine {
            out.rule(chain, position, RuleAction::Drop, |r| {
                select_pod(r, direction, *selected);
                r.description = "isolated: no policy allowed it".into();
            });
            position += 1;
        }
    }
    Ok(out.records.into_values().collect())
}

/// Conditions the rule on the pod being a member of `selected`: the port
/// toward it (ingress) or the port it sent from (egress).
fn select_pod(rule: &mut Rule, direction: Direction, selected: Uuid) {
    match direction {
        Direction::Ingress => rule.out_port_group_id = Some(selected),
        Direction::Egress => rule.in_port_group_id = Some(selected),
    }
}

/// One ingress or egress rule of a policy: an accept rule per (peer, port).
#[allow(clippy::too_many_arguments)]
fn translate_rule(
    out: &mut Out<'_>,
    key: &str,
    ns: &str,
    direction: Direction,
    chain: Uuid,
    mut position: u32,
    index: usize,
    rule: &PolicyRule,
) -> Result<u32, Unsupported> {
    let peers: &[Peer] = match direction {
        Direction::Ingress => &rule.from,
        Direction::Egress => &rule.to,
    };
    let mut others = Vec::new();
    if peers.is_empty() {
        others.push(Other::Anyone);
    }
    for (p, peer) in peers.iter().enumerate() {
        let peer_key = format!("{key}/{}/{index}/{p}", direction.word());
        let other = match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
            (None, None, Some(block)) => {
                let except = (!block.except.is_empty()).then(|| {
                    out.address_group(&format!("{peer_key}/except"), block.except.clone(), None)
                });
                Other::Block(block.cidr, except)
            }
            (pods, namespaces, None) => {
                let pods = pods.clone().unwrap_or_default();
                let selector = match namespaces {
                    Some(namespaces) => of_namespaces(&pods, namespaces),
                    None => in_namespace(&pods, ns),
                };
                Other::Pods(out.address_group(&peer_key, Vec::new(), Some(selector)))
            }
            _ => {
                return Err(Unsupported {
                    policy: key.into(),
                    what: "a peer with ipBlock and a selector".into(),
                })
            }
        };
        others.push(other);
    }
    let ports = ports_of(key, &rule.ports)?;
    let ports: Vec<Option<PortCondition>> = if ports.is_empty() {
        vec![None]
    } else {
        ports.into_iter().map(Some).collect()
    };
    for other in &others {
        for port in &ports {
            out.rule(chain, position, RuleAction::Accept, |r| {
                match (other, direction) {
                    (Other::Anyone, _) => {}
                    (Other::Pods(group), Direction::Ingress) => r.src_ip_group_id = Some(*group),
                    (Other::Pods(group), Direction::Egress) => r.dst_ip_group_id = Some(*group),
                    (Other::Block(cidr, except), Direction::Ingress) => {
                        r.src_cidr = Some(*cidr);
                        if let Some(except) = except {
                            r.src_ip_group_id = Some(*except);
                            r.invert = vec![Condition::SrcIpGroupId];
                        }
                    }
                    (Other::Block(cidr, except), Direction::Egress) => {
                        r.dst_cidr = Some(*cidr);
                        if let Some(except) = except {
                            r.dst_ip_group_id = Some(*except);
                            r.invert = vec![Condition::DstIpGroupId];
                        }
                    }
                }
                if let Some((protocol, range)) = port {
                    r.protocol = Some(*protocol);
                    r.dst_ports = *range;
                }
                r.description = format!("{key} {} rule {index}", direction.word());
            });
            position += 1;
        }
    }
    Ok(position)
}
