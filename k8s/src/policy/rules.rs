//! One rule of a policy: an accept rule in the policy's chain per (peer,
//! port). A named port resolves against the pod that serves it (the
//! selected pod for ingress, the destination pod for egress): one rule per
//! number the name resolves to, restricted to the pods that resolve it so,
//! through the port labels that publish named ports.

use nsdb::{Condition, IpProto, LabelSelector, PortRange, RuleAction};
use uuid::Uuid;

use super::{in_namespace, named_port_label, of_namespaces, Direction, Out, Unsupported};
use crate::objects::Pod;
use crate::types::{IntOrString, Peer, PolicyPort, PolicyRule};

/// Where a rule is translated.
pub(super) struct Context<'a> {
    /// The policy, `namespace/name`.
    pub key: &'a str,
    /// The policy's namespace.
    pub ns: &'a str,
    /// Ingress or egress.
    pub direction: Direction,
    /// The policy's chain for the direction.
    pub chain: Uuid,
    /// The rule's index in the policy.
    pub index: usize,
    /// The cluster's pods (named ports resolve against them).
    pub pods: &'a [Pod],
}

impl Context<'_> {
    fn unsupported(&self, what: impl Into<String>) -> Unsupported {
        Unsupported {
            policy: self.key.into(),
            what: what.into(),
        }
    }
}

/// The traffic a peer names, at the packet's other end.
enum Other {
    /// Anyone.
    Anyone,
    /// Pods, by a selector over port labels (group key, selector).
    Pods(String, LabelSelector),
    /// A block, minus an address group.
    Block(ipnet::IpNet, Option<Uuid>),
}

/// A port condition.
struct PortSpec {
    protocol: IpProto,
    range: Option<PortRange>,
    /// A named port's label and the number it resolves to.
    named: Option<(String, u16)>,
}

fn protocol_of(context: &Context<'_>, port: &PolicyPort) -> Result<(IpProto, String), Unsupported> {
    let name = port.protocol.clone().unwrap_or_else(|| "TCP".into());
    let protocol = match name.as_str() {
        "TCP" => IpProto::TCP,
        "UDP" => IpProto::UDP,
        "SCTP" => IpProto(132),
        other => return Err(context.unsupported(format!("protocol {other}"))),
    };
    Ok((protocol, name))
}

/// The port conditions of a rule; an empty list means every port, and a
/// named port no pod declares adds nothing (it matches no traffic).
fn ports_of(
    context: &Context<'_>,
    ports: &[PolicyPort],
) -> Result<Option<Vec<PortSpec>>, Unsupported> {
    if ports.is_empty() {
        return Ok(None);
    }
    let mut specs = Vec::new();
    for port in ports {
        let (protocol, protocol_name) = protocol_of(context, port)?;
        match &port.port {
            None => specs.push(PortSpec {
                protocol,
                range: None,
                named: None,
            }),
            Some(IntOrString::Int(start)) => {
                let end = port.end_port.unwrap_or(*start);
                if end < *start {
                    return Err(context.unsupported(format!("endPort {end} below port {start}")));
                }
                specs.push(PortSpec {
                    protocol,
                    range: Some(PortRange { start: *start, end }),
                    named: None,
                });
            }
            Some(IntOrString::String(name)) => {
                if port.end_port.is_some() {
                    return Err(
                        context.unsupported(format!("endPort with the named port '{name}'"))
                    );
                }
                let mut numbers: Vec<u16> = context
                    .pods
                    .iter()
                    .filter_map(|pod| pod.named_port(name, &protocol_name))
                    .collect();
                numbers.sort_unstable();
                numbers.dedup();
                for number in numbers {
                    specs.push(PortSpec {
                        protocol,
                        range: Some(PortRange {
                            start: number,
                            end: number,
                        }),
                        named: Some((named_port_label(&protocol_name, name), number)),
                    });
                }
            }
        }
    }
    Ok(Some(specs))
}

fn other_of(
    out: &mut Out<'_>,
    context: &Context<'_>,
    peer_key: &str,
    peer: &Peer,
) -> Result<Other, Unsupported> {
    match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
        (None, None, Some(block)) => {
            let except = (!block.except.is_empty()).then(|| {
                out.address_group(&format!("{peer_key}/except"), block.except.clone(), None)
            });
            Ok(Other::Block(block.cidr, except))
        }
        (pods, namespaces, None) => {
            let pods = pods.clone().unwrap_or_default();
            let selector = match namespaces {
                Some(namespaces) => of_namespaces(&pods, namespaces),
                None => in_namespace(&pods, context.ns),
            };
            Ok(Other::Pods(peer_key.to_string(), selector))
        }
        _ => Err(context.unsupported("a peer with ipBlock and a selector")),
    }
}

/// Translates one rule of a policy at `position` on; answers the next
/// free position.
pub(super) fn translate_rule(
    out: &mut Out<'_>,
    context: &Context<'_>,
    mut position: u32,
    rule: &PolicyRule,
) -> Result<u32, Unsupported> {
    let direction = context.direction;
    let peers: &[Peer] = match direction {
        Direction::Ingress => &rule.from,
        Direction::Egress => &rule.to,
    };
    let rule_key = format!("{}/{}/{}", context.key, direction.word(), context.index);
    let mut others = Vec::new();
    if peers.is_empty() {
        others.push(Other::Anyone);
    }
    for (p, peer) in peers.iter().enumerate() {
        others.push(other_of(out, context, &format!("{rule_key}/{p}"), peer)?);
    }
    let ports: Vec<Option<PortSpec>> = match ports_of(context, &rule.ports)? {
        None => vec![None],
        Some(specs) => specs.into_iter().map(Some).collect(),
    };
    for other in &others {
        for port in &ports {
            let named = port.as_ref().and_then(|p| p.named.as_ref());
            // The conditions on the other end, and on a named port.
            let mut src_group = None;
            let mut dst_group = None;
            let mut cidr = None;
            let mut invert = Vec::new();
            let mut out_port_group = None;
            match (other, direction) {
                (Other::Anyone, _) => {}
                (Other::Pods(key, selector), Direction::Ingress) => {
                    src_group = Some(out.address_group(key, Vec::new(), Some(selector.clone())));
                }
                (Other::Pods(key, selector), Direction::Egress) => {
                    let (key, selector) = match named {
                        Some((label, number)) => {
                            let mut narrowed = selector.clone();
                            narrowed
                                .match_labels
                                .insert(label.clone(), number.to_string());
                            (format!("{key}/{label}={number}"), narrowed)
                        }
                        None => (key.clone(), selector.clone()),
                    };
                    dst_group = Some(out.address_group(&key, Vec::new(), Some(selector)));
                }
                (Other::Block(block, except), _) => {
                    cidr = Some(*block);
                    if let Some(except) = except {
                        match direction {
                            Direction::Ingress => {
                                src_group = Some(*except);
                                invert.push(Condition::SrcIpGroupId);
                            }
                            Direction::Egress => {
                                dst_group = Some(*except);
                                invert.push(Condition::DstIpGroupId);
                            }
                        }
                    }
                }
            }
            if let Some((label, number)) = named {
                let serving = LabelSelector {
                    match_labels: [(label.clone(), number.to_string())].into_iter().collect(),
                    ..LabelSelector::default()
                };
                let key = format!("{}/{label}={number}", context.key);
                match direction {
                    Direction::Ingress => {
                        out_port_group = Some(out.port_group(&key, serving));
                    }
                    Direction::Egress if dst_group.is_none() => {
                        dst_group = Some(out.address_group(&key, Vec::new(), Some(serving)));
                    }
                    Direction::Egress => {
                        if !matches!(other, Other::Pods(..)) {
                            return Err(context
                                .unsupported("an egress ipBlock with except and a named port"));
                        }
                    }
                }
            }
            out.rule(context.chain, position, RuleAction::Accept, |r| {
                r.src_ip_group_id = src_group;
                r.dst_ip_group_id = dst_group;
                r.out_port_group_id = out_port_group;
                r.invert = invert;
                match direction {
                    Direction::Ingress => r.src_cidr = cidr,
                    Direction::Egress => r.dst_cidr = cidr,
                }
                if let Some(port) = port {
                    r.protocol = Some(port.protocol);
                    r.dst_ports = port.range;
                }
                r.description = format!(
                    "{} {} rule {}",
                    context.key,
                    direction.word(),
                    context.index
                );
            });
            position += 1;
        }
    }
    Ok(position)
}
