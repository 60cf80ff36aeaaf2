//! Rule chains: match a packet against a chain's rules in position order,
//! follow jumps and returns, and report the rule that decided.

use crate::engine::Stage;
use nsdb::{Condition, ConnState, FragmentPolicy, Rule, RuleAction};
use uuid::Uuid;

use super::packet::{Fragment, PacketInfo, L3};
use super::{Simulation, Tag};
use crate::conntrack::Direction;
use crate::snapshot::{Device, Topology};

/// How deep jumps may nest before evaluation is cut (the API refuses jump
/// loops; this is the second line of defence).
pub(crate) const MAX_JUMP_DEPTH: usize = 8;

/// A packet's connection-tracking state at the current device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracked {
    /// The device does not track connections (or this packet cannot be tracked).
    No,
    /// The first packet of a connection.
    New,
    /// A packet of a tracked connection.
    Established(Direction),
    /// An ICMP error about a tracked connection.
    Related(Direction),
}

/// What a rule sees besides the packet.
pub(crate) struct MatchContext<'a> {
    /// The port the packet entered the device by.
    pub(crate) in_port: Uuid,
    /// The port it leaves by (known in outbound chains only).
    pub(crate) out_port: Option<Uuid>,
    /// The devices it has passed, this one included.
    pub(crate) traversed: &'a [Uuid],
    /// Its connection state here.
    pub(crate) tracked: Tracked,
}

/// How a chain evaluation ended.
pub(crate) enum Outcome<'t> {
    /// No rule decided: the packet goes on.
    Fallthrough,
    /// A rule accepted, dropped, rejected or translated the packet.
    Decided(&'t Rule),
}

/// Whether the condition (before inversion) holds.
fn holds(
    topo: &Topology,
    sim: &mut Simulation,
    rule: &Rule,
    c: Condition,
    p: &PacketInfo,
    m: &MatchContext,
) -> bool {
    // IPv4 and IPv6 alike: every IP condition reads the shared fields.
    let ip = p.ip();
    match c {
        Condition::Protocol => ip
            .zip(rule.protocol)
            .is_some_and(|(ip, want)| ip.proto == want.0),
        Condition::EthType => rule.eth_type.is_some_and(|t| t.0 == p.ethertype()),
        Condition::IpVersion => {
            let version = match p.l3 {
                L3::Ipv4(_) => Some(4),
                L3::Ipv6(_) => Some(6),
                _ => None,
            };
            version.is_some() && version == rule.ip_version
        }
        Condition::SrcMac => rule.src_mac.is_some_and(|mac| mac.0 == p.eth_src),
        Condition::DstMac => rule.dst_mac.is_some_and(|mac| mac.0 == p.eth_dst),
        Condition::SrcCidr => ip
            .zip(rule.src_cidr)
            .is_some_and(|(ip, net)| net.contains(&ip.src)),
        Condition::DstCidr => ip
            .zip(rule.dst_cidr)
            .is_some_and(|(ip, net)| net.contains(&ip.dst)),
        Condition::SrcPorts => ip
            .and_then(|ip| ip.ports)
            .zip(rule.src_ports)
            .is_some_and(|((sport, _), range)| range.contains(sport)),
        Condition::DstPorts => ip
            .and_then(|ip| ip.ports)
            .zip(rule.dst_ports)
            .is_some_and(|((_, dport), range)| range.contains(dport)),
        Condition::IcmpType => ip
            .and_then(|ip| ip.icmp)
            .is_some_and(|(t, _)| Some(t) == rule.icmp_type),
        Condition::IcmpCode => ip
            .and_then(|ip| ip.icmp)
            .is_some_and(|(_, code)| Some(code) == rule.icmp_code),
        Condition::InPortIds => rule.in_port_ids.contains(&m.in_port),
        Condition::OutPortIds => m
            .out_port
            .is_some_and(|out| rule.out_port_ids.contains(&out)),
        Condition::InPortGroupId | Condition::OutPortGroupId => {
            let (group, port) = match c {
                Condition::InPortGroupId => (rule.in_port_group_id, Some(m.in_port)),
                _ => (rule.out_port_group_id, m.out_port),
            };
            let Some(group) = group else { return false };
            sim.tag(Tag::Group(group));
            port.is_some_and(|port| {
                topo.port_groups
                    .get(&group)
                    .is_some_and(|g| g.contains(&port))
            })
        }
        Condition::SrcIpGroupId | Condition::DstIpGroupId => {
            let (group, addr) = match c {
                Condition::SrcIpGroupId => (rule.src_ip_group_id, ip.map(|ip| ip.src)),
                _ => (rule.dst_ip_group_id, ip.map(|ip| ip.dst)),
            };
            let Some(group) = group else { return false };
            sim.tag(Tag::Group(group));
            addr.is_some_and(|addr| {
                topo.ip_groups
                    .get(&group)
                    .is_some_and(|nets| nets.iter().any(|net| net.contains(&addr)))
            })
        }
        Condition::ConnState => {
            let states: &[ConnState] = match m.tracked {
                Tracked::No => &[],
                Tracked::New => &[ConnState::New],
                Tracked::Established(Direction::Original) => &[ConnState::Established],
                Tracked::Established(Direction::Reply) => {
                    &[ConnState::Established, ConnState::Reply]
                }
                Tracked::Related(Direction::Original) => &[ConnState::Related],
                Tracked::Related(Direction::Reply) => &[ConnState::Related, ConnState::Reply],
            };
            states.iter().any(|s| rule.conn_state.contains(s))
        }
        Condition::Fragment => {
            let fragment = ip.map_or(Fragment::None, |ip| ip.fragment);
            match rule.fragment {
                FragmentPolicy::Any => true,
                FragmentPolicy::Unfragmented => fragment == Fragment::None,
                FragmentPolicy::Header => fragment != Fragment::Later,
                FragmentPolicy::Nonheader => fragment == Fragment::Later,
            }
        }
        Condition::TraversedDeviceId => rule
            .traversed_device_id
            .is_some_and(|device| m.traversed.contains(&device)),
    }
}

const CONDITIONS: [Condition; 20] = [
    Condition::Protocol,
    Condition::EthType,
    Condition::IpVersion,
    Condition::SrcMac,
    Condition::DstMac,
    Condition::SrcCidr,
    Condition::DstCidr,
    Condition::SrcPorts,
    Condition::DstPorts,
    Condition::IcmpType,
    Condition::IcmpCode,
    Condition::InPortIds,
    Condition::OutPortIds,
    Condition::InPortGroupId,
    Condition::OutPortGroupId,
    Condition::SrcIpGroupId,
    Condition::DstIpGroupId,
    Condition::ConnState,
    Condition::Fragment,
    Condition::TraversedDeviceId,
];

/// Whether every condition the rule sets holds (or, inverted, fails).
pub(crate) fn matches(
    topo: &Topology,
    sim: &mut Simulation,
    rule: &Rule,
    packet: &PacketInfo,
    m: &MatchContext,
) -> bool {
    // Port conditions cannot look into a later fragment, whatever the
    // inversion says.
    let later = packet.ip().is_some_and(|ip| ip.fragment == Fragment::Later);
    if later && (rule.src_ports.is_some() || rule.dst_ports.is_some()) {
        return false;
    }
    CONDITIONS
        .iter()
        .filter(|c| rule.has(**c))
        .all(|c| holds(topo, sim, rule, *c, packet, m) != rule.inverted(*c))
}

/// Where a chain is attached, as a trace names it (formatted only when
/// steps are recorded).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ChainAt {
    /// A port's inbound chain.
    PortIn(Uuid),
    /// A port's outbound chain.
    PortOut(Uuid),
    /// A device's inbound chain (`bridge` or `router`).
    DeviceIn(&'static str),
    /// A device's outbound chain.
    DeviceOut(&'static str),
}

impl std::fmt::Display for ChainAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainAt::PortIn(id) => write!(f, "port {id} inbound"),
            ChainAt::PortOut(id) => write!(f, "port {id} outbound"),
            ChainAt::DeviceIn(kind) => write!(f, "{kind} inbound"),
            ChainAt::DeviceOut(kind) => write!(f, "{kind} outbound"),
        }
    }
}

/// A rule as a trace step names it: where its chain is attached, the
/// chain's id and the rule's id. Ids only, as every step detail: the
/// renderer (topology/) turns each into its name once (`rule 1 (no ssh)`
/// for the rule), so position and description written here as well would
/// show twice.
struct RuleName<'a> {
    what: &'a dyn std::fmt::Display,
    chain: Uuid,
    rule: Uuid,
}

impl std::fmt::Display for RuleName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} chain {} rule {}", self.what, self.chain, self.rule)
    }
}

/// Evaluates chain `chain` for `packet`; `what` names where it is attached
/// (for the trace).
pub(crate) fn evaluate<'t>(
    topo: &'t Topology,
    sim: &mut Simulation,
    device: Device,
    chain: Uuid,
    what: &dyn std::fmt::Display,
    packet: &PacketInfo,
    m: &MatchContext,
) -> Outcome<'t> {
    let mut stack = Vec::new();
    evaluate_inner(topo, sim, device, chain, what, packet, m, &mut stack)
}

#[allow(clippy::too_many_arguments)]
fn evaluate_inner<'t>(
    topo: &'t Topology,
    sim: &mut Simulation,
    device: Device,
    chain: Uuid,
    what: &dyn std::fmt::Display,
    packet: &PacketInfo,
    m: &MatchContext,
    stack: &mut Vec<Uuid>,
) -> Outcome<'t> {
    sim.tag(Tag::Chain(chain));
    let Some(info) = topo.chains.get(&chain) else {
        sim.step(
            Some(device),
            None,
            Stage::Chain,
            format_args!("{what} chain {chain} is missing: skipped"),
        );
        return Outcome::Fallthrough;
    };
    stack.push(chain);
    for rule in &info.rules {
        if !matches(topo, sim, rule, packet, m) {
            continue;
        }
        sim.rules.push(super::RuleHit {
            chain,
            rule: rule.id,
        });
        let head = RuleName {
            what,
            chain,
            rule: rule.id,
        };
        match rule.action {
            RuleAction::Continue => {
                sim.step(
                    Some(device),
                    None,
                    Stage::Chain,
                    format_args!("{head}: continue"),
                );
            }
            RuleAction::Return => {
                sim.step(
                    Some(device),
                    None,
                    Stage::Chain,
                    format_args!("{head}: return"),
                );
                stack.pop();
                return Outcome::Fallthrough;
            }
            RuleAction::Jump => {
                let Some(target) = rule.jump_chain_id else {
                    continue;
                };
                if stack.contains(&target) || stack.len() >= MAX_JUMP_DEPTH {
                    sim.step(
                        Some(device),
                        None,
                        Stage::Chain,
                        format_args!("{head}: jump to chain {target} cut (loop or too deep)"),
                    );
                    continue;
                }
                sim.step(
                    Some(device),
                    None,
                    Stage::Chain,
                    format_args!("{head}: jump to chain {target}"),
                );
                if let Outcome::Decided(rule) =
                    evaluate_inner(topo, sim, device, target, &"jumped-to", packet, m, stack)
                {
                    stack.pop();
                    return Outcome::Decided(rule);
                }
            }
            action => {
                let word = action_word(action);
                sim.step(
                    Some(device),
                    None,
                    Stage::Chain,
                    format_args!("{head}: {word}"),
                );
                stack.pop();
                return Outcome::Decided(rule);
            }
        }
    }
    sim.step(
        Some(device),
        None,
        Stage::Chain,
        format_args!("{what} chain {chain}: no rule decided"),
    );
    stack.pop();
    Outcome::Fallthrough
}

/// A final rule action in the trace's words.
pub(crate) fn action_word(action: RuleAction) -> &'static str {
    match action {
        RuleAction::Accept => "accept",
        RuleAction::Drop => "drop",
        RuleAction::Reject => "reject",
        RuleAction::Continue => "continue",
        RuleAction::Return => "return",
        RuleAction::Jump => "jump",
        RuleAction::Snat => "snat",
        RuleAction::Dnat => "dnat",
        RuleAction::Masquerade => "masquerade",
    }
}
