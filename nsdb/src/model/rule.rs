//! Rules: the entries of a chain, with their match conditions, action and
//! NAT targets.
//!
//! The JSON of a rule is flat: `position`, `action`, `jump_chain_id`,
//! `nat_targets` and one field per condition (`protocol`, `src_cidr`,
//! `dst_ports`, `conn_state`, …), with `invert` naming the conditions to
//! negate. Every condition is optional; the set ones are AND-ed.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::kv::Revision;
use crate::mac::MacAddr;

use super::rule_values::{ConnState, EthType, FragmentPolicy, IpProto, PortRange};

/// What a rule does when all its conditions match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Let the packet through; stop evaluating the chain.
    Accept,
    /// Drop the packet silently.
    Drop,
    /// Drop and answer (TCP RST for TCP, ICMP port unreachable otherwise).
    Reject,
    /// Evaluate `jump_chain_id`; come back here unless it decided.
    Jump,
    /// Return to the calling chain (accept when in the top chain).
    Return,
    /// Go on with the next rule (only useful to count or trace a match).
    Continue,
    /// Source NAT of new connections to `nat_targets`, then accept.
    Snat,
    /// Destination NAT of new connections to `nat_targets`, then accept.
    Dnat,
    /// Source NAT to the egress router port's address, then accept.
    Masquerade,
}

impl RuleAction {
    /// Whether the action translates addresses.
    pub fn is_nat(self) -> bool {
        matches!(
            self,
            RuleAction::Snat | RuleAction::Dnat | RuleAction::Masquerade
        )
    }
}

/// The name of one condition, as listed in `invert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// `protocol`.
    Protocol,
    /// `eth_type`.
    EthType,
    /// `ip_version`.
    IpVersion,
    /// `src_mac`.
    SrcMac,
    /// `dst_mac`.
    DstMac,
    /// `src_cidr`.
    SrcCidr,
    /// `dst_cidr`.
    DstCidr,
    /// `src_ports`.
    SrcPorts,
    /// `dst_ports`.
    DstPorts,
    /// `icmp_type`.
    IcmpType,
    /// `icmp_code`.
    IcmpCode,
    /// `in_port_ids`.
    InPortIds,
    /// `out_port_ids`.
    OutPortIds,
    /// `in_port_group_id`.
    InPortGroupId,
    /// `out_port_group_id`.
    OutPortGroupId,
    /// `src_ip_group_id`.
    SrcIpGroupId,
    /// `dst_ip_group_id`.
    DstIpGroupId,
    /// `conn_state`.
    ConnState,
    /// `fragment`.
    Fragment,
    /// `traversed_device_id`.
    TraversedDeviceId,
}

impl Condition {
    /// The condition's field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Protocol => "protocol",
            Condition::EthType => "eth_type",
            Condition::IpVersion => "ip_version",
            Condition::SrcMac => "src_mac",
            Condition::DstMac => "dst_mac",
            Condition::SrcCidr => "src_cidr",
            Condition::DstCidr => "dst_cidr",
            Condition::SrcPorts => "src_ports",
            Condition::DstPorts => "dst_ports",
            Condition::IcmpType => "icmp_type",
            Condition::IcmpCode => "icmp_code",
            Condition::InPortIds => "in_port_ids",
            Condition::OutPortIds => "out_port_ids",
            Condition::InPortGroupId => "in_port_group_id",
            Condition::OutPortGroupId => "out_port_group_id",
            Condition::SrcIpGroupId => "src_ip_group_id",
            Condition::DstIpGroupId => "dst_ip_group_id",
            Condition::ConnState => "conn_state",
            Condition::Fragment => "fragment",
            Condition::TraversedDeviceId => "traversed_device_id",
        }
    }
}

/// Where a NAT rule translates to: an address range and optionally a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatTarget {
    /// The first address of the range.
    pub address_from: Ipv4Addr,
    /// The last address of the range (default: `address_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_to: Option<Ipv4Addr>,
    /// The first port (default: keep the port, or pick any free one for SNAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_from: Option<u16>,
    /// The last port (default: `port_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_to: Option<u16>,
}

impl NatTarget {
    /// The inclusive address range.
    pub fn addresses(&self) -> (Ipv4Addr, Ipv4Addr) {
        (
            self.address_from,
            self.address_to.unwrap_or(self.address_from),
        )
    }

    /// The inclusive port range, when one is given.
    pub fn ports(&self) -> Option<(u16, u16)> {
        let from = self.port_from.or(self.port_to)?;
        Some((from, self.port_to.unwrap_or(from)))
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// One rule of a chain. See the module documentation for the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// The chain the rule belongs to.
    pub chain_id: Uuid,
    /// Evaluation order within the chain (ascending).
    pub position: u32,
    /// What happens on a match.
    pub action: RuleAction,
    /// The chain to evaluate for `jump`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump_chain_id: Option<Uuid>,
    /// Where `snat` and `dnat` translate to (one target picked per connection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_targets: Vec<NatTarget>,
    /// Free-form note shown in traces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Condition: the IP protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<IpProto>,
    /// Condition: the ethertype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eth_type: Option<EthType>,
    /// Condition: the IP version, 4 or 6 (ARP and other ethertypes match
    /// neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    /// Condition: the source MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<MacAddr>,
    /// Condition: the destination MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<MacAddr>,
    /// Condition: the source address lies in this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_cidr: Option<IpNet>,
    /// Condition: the destination address lies in this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_cidr: Option<IpNet>,
    /// Condition: the TCP/UDP source port lies in this range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<PortRange>,
    /// Condition: the TCP/UDP destination port lies in this range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<PortRange>,
    /// Condition: the ICMP type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// Condition: the ICMP code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Condition: the packet entered the device by one of these ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_port_ids: Vec<Uuid>,
    /// Condition: the packet leaves the device by one of these ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_port_ids: Vec<Uuid>,
    /// Condition: the packet entered the device by a member of this port group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_port_group_id: Option<Uuid>,
    /// Condition: the packet leaves the device by a member of this port group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_port_group_id: Option<Uuid>,
    /// Condition: the source address is in this IP address group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip_group_id: Option<Uuid>,
    /// Condition: the destination address is in this IP address group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip_group_id: Option<Uuid>,
    /// Condition: the connection state is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conn_state: Vec<ConnState>,
    /// Condition: which fragments match (default: any).
    #[serde(default, skip_serializing_if = "is_default")]
    pub fragment: FragmentPolicy,
    /// Condition: the packet has traversed this device (bridge or router) on its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traversed_device_id: Option<Uuid>,
    /// The conditions to negate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invert: Vec<Condition>,
}

impl Rule {
    /// A rule with this action and no conditions (it matches every packet).
    pub fn new(chain_id: Uuid, position: u32, action: RuleAction) -> Rule {
        Rule {
            id: Uuid::new_v4(),
            revision: 0,
            chain_id,
            position,
            action,
            jump_chain_id: None,
            nat_targets: Vec::new(),
            description: String::new(),
            protocol: None,
            eth_type: None,
            ip_version: None,
            src_mac: None,
            dst_mac: None,
            src_cidr: None,
            dst_cidr: None,
            src_ports: None,
            dst_ports: None,
            icmp_type: None,
            icmp_code: None,
            in_port_ids: Vec::new(),
            out_port_ids: Vec::new(),
            in_port_group_id: None,
            out_port_group_id: None,
            src_ip_group_id: None,
            dst_ip_group_id: None,
            conn_state: Vec::new(),
            fragment: FragmentPolicy::Any,
            traversed_device_id: None,
            invert: Vec::new(),
        }
    }

    /// Whether the condition is set on this rule.
    pub fn has(&self, condition: Condition) -> bool {
        match condition {
            Condition::Protocol => self.protocol.is_some(),
            Condition::EthType => self.eth_type.is_some(),
            Condition::IpVersion => self.ip_version.is_some(),
            Condition::SrcMac => self.src_mac.is_some(),
            Condition::DstMac => self.dst_mac.is_some(),
            Condition::SrcCidr => self.src_cidr.is_some(),
            Condition::DstCidr => self.dst_cidr.is_some(),
            Condition::SrcPorts => self.src_ports.is_some(),
            Condition::DstPorts => self.dst_ports.is_some(),
            Condition::IcmpType => self.icmp_type.is_some(),
            Condition::IcmpCode => self.icmp_code.is_some(),
            Condition::InPortIds => !self.in_port_ids.is_empty(),
            Condition::OutPortIds => !self.out_port_ids.is_empty(),
            Condition::InPortGroupId => self.in_port_group_id.is_some(),
            Condition::OutPortGroupId => self.out_port_group_id.is_some(),
            Condition::SrcIpGroupId => self.src_ip_group_id.is_some(),
            Condition::DstIpGroupId => self.dst_ip_group_id.is_some(),
            Condition::ConnState => !self.conn_state.is_empty(),
            Condition::Fragment => self.fragment != FragmentPolicy::Any,
            Condition::TraversedDeviceId => self.traversed_device_id.is_some(),
        }
    }

    /// Whether `condition` is negated.
    pub fn inverted(&self, condition: Condition) -> bool {
        self.invert.contains(&condition)
    }

    /// Whether matching the rule needs connection tracking (a state
    /// condition or a NAT action).
    pub fn needs_conntrack(&self) -> bool {
        !self.conn_state.is_empty() || self.action.is_nat()
    }
}

fn check_prefix(field: &'static str, net: &IpNet) -> Result<(), (&'static str, String)> {
    if net.trunc() != *net {
        return Err((
            field,
            format!("{net} has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(())
}

fn no_duplicates<T: PartialEq + fmt::Debug>(
    field: &'static str,
    items: &[T],
) -> Result<(), (&'static str, String)> {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err((field, format!("{item:?} is listed twice")));
        }
    }
    Ok(())
}

/// Checks the rules a rule must satisfy on its own.
pub(crate) fn validate_rule(r: &Rule) -> Result<(), (&'static str, String)> {
    if let Some(version) = r.ip_version.filter(|v| *v != 4 && *v != 6) {
        return Err(("ip_version", format!("{version} is neither 4 nor 6")));
    }
    match (r.action, r.jump_chain_id) {
        (RuleAction::Jump, None) => return Err(("jump_chain_id", "is required for jump".into())),
        (RuleAction::Jump, Some(target)) if target == r.chain_id => {
            return Err((
                "jump_chain_id",
                format!(
                    "a chain cannot jump to itself (loop: {} → {})",
                    r.chain_id, r.chain_id
                ),
            ))
        }
        (RuleAction::Jump, Some(_)) => {}
        (_, Some(_)) => return Err(("jump_chain_id", "is only allowed for jump".into())),
        (_, None) => {}
    }
    match r.action {
        RuleAction::Snat | RuleAction::Dnat if r.nat_targets.is_empty() => {
            return Err((
                "nat_targets",
                format!("{:?} needs at least one target", r.action).to_lowercase(),
            ));
        }
        RuleAction::Snat | RuleAction::Dnat => {}
        _ if !r.nat_targets.is_empty() => {
            return Err((
                "nat_targets",
                "is only allowed for snat and dnat (masquerade uses the egress port's address)"
                    .into(),
            ))
        }
        _ => {}
    }
    for target in &r.nat_targets {
        let (from, to) = target.addresses();
        if from > to {
            return Err((
                "nat_targets",
                format!("address range {from}-{to} ends before it starts"),
            ));
        }
        if from.is_unspecified() || from.is_broadcast() || from.is_multicast() {
            return Err(("nat_targets", format!("{from} is not a unicast address")));
        }
        if let Some((pf, pt)) = target.ports() {
            if pf == 0 || pf > pt {
                return Err((
                    "nat_targets",
                    format!("port range {pf}-{pt} must be within 1-65535 and ascending"),
                ));
            }
        }
    }
    if let Some(net) = &r.src_cidr {
        check_prefix("src_cidr", net)?;
    }
    if let Some(net) = &r.dst_cidr {
        check_prefix("dst_cidr", net)?;
    }
    let transport = matches!(
        r.protocol,
        Some(IpProto::TCP | IpProto::UDP) | Some(IpProto(132))
    );
    for (field, set) in [
        ("src_ports", r.src_ports.is_some()),
        ("dst_ports", r.dst_ports.is_some()),
    ] {
        if set && !transport {
            return Err((field, "needs protocol tcp, udp or sctp".into()));
        }
    }
    for (field, set) in [
        ("icmp_type", r.icmp_type.is_some()),
        ("icmp_code", r.icmp_code.is_some()),
    ] {
        if set && !matches!(r.protocol, Some(IpProto::ICMP | IpProto::ICMPV6)) {
            return Err((field, "needs protocol icmp or icmpv6".into()));
        }
    }
    no_duplicates("in_port_ids", &r.in_port_ids)?;
    no_duplicates("out_port_ids", &r.out_port_ids)?;
    no_duplicates("conn_state", &r.conn_state)?;
    no_duplicates("invert", &r.invert)?;
    for condition in &r.invert {
        if !r.has(*condition) {
            return Err((
                "invert",
                format!(
                    "names {} but the rule has no {} condition to negate",
                    condition.as_str(),
                    condition.as_str()
                ),
            ));
        }
    }
    if r.description.len() > 1024 || r.description.chars().any(char::is_control) {
        return Err((
            "description",
            "must be at most 1024 bytes without control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> Result<Rule, String> {
        let mut base = serde_json::json!({
            "id": Uuid::from_u128(1), "chain_id": Uuid::from_u128(2), "position": 1
        });
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        let rule: Rule = serde_json::from_value(base).map_err(|e| e.to_string())?;
        validate_rule(&rule).map_err(|(f, e)| format!("{f}: {e}"))?;
        Ok(rule)
    }

    #[test]
    fn conditions_parse_from_names_numbers_and_ranges() {
        let r = rule(serde_json::json!({
            "action": "drop", "protocol": "tcp", "dst_ports": "1000-2000", "src_ports": 22,
            "eth_type": "0x0800", "conn_state": ["new"], "invert": ["dst_ports"]
        }))
        .unwrap();
        assert_eq!(r.protocol, Some(IpProto::TCP));
        assert_eq!(
            r.dst_ports,
            Some(PortRange {
                start: 1000,
                end: 2000
            })
        );
        assert_eq!(r.src_ports, Some(PortRange { start: 22, end: 22 }));
        assert_eq!(r.eth_type, Some(EthType(0x0800)));
        assert!(r.inverted(Condition::DstPorts));
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["protocol"], "tcp");
        assert_eq!(back["dst_ports"], "1000-2000");
        assert_eq!(back["eth_type"], "ipv4");
        assert!(
            back.get("nat_targets").is_none(),
            "empty fields are left out"
        );
        assert_eq!(
            rule(serde_json::json!({"action":"accept","protocol":132}))
                .unwrap()
                .protocol,
            Some(IpProto(132))
        );
    }

    #[test]
    fn ip_version_is_4_or_6() {
        let r = rule(serde_json::json!({"action": "drop", "ip_version": 6})).unwrap();
        assert!(r.has(Condition::IpVersion));
        assert_eq!(serde_json::to_value(&r).unwrap()["ip_version"], 6);
        let err = rule(serde_json::json!({"action": "drop", "ip_version": 5})).unwrap_err();
        assert!(err.starts_with("ip_version:"), "{err}");
    }

    #[test]
    fn bad_rules_name_the_field() {
        let cases = [
            (
                serde_json::json!({"action": "drop", "dst_ports": "22"}),
                "dst_ports",
            ),
            (
                serde_json::json!({"action": "drop", "protocol": "tcp", "dst_ports": "30-20"}),
                "ends before",
            ),
            (
                serde_json::json!({"action": "drop", "protocol": "tcpx"}),
                "not an IP protocol",
            ),
            (
                serde_json::json!({"action": "drop", "protocol": 300}),
                "0-255",
            ),
            (
                serde_json::json!({"action": "drop", "invert": ["src_cidr"]}),
                "invert",
            ),
            (
                serde_json::json!({"action": "drop", "src_cidr": "10.0.0.1/8"}),
                "host bits",
            ),
            (serde_json::json!({"action": "snat"}), "nat_targets"),
            (
                serde_json::json!({"action": "accept", "nat_targets": [{"address_from": "1.2.3.4"}]}),
                "nat_targets",
            ),
            (
                serde_json::json!({"action": "dnat", "nat_targets": [{"address_from": "1.2.3.9", "address_to": "1.2.3.4"}]}),
                "ends before",
            ),
            (
                serde_json::json!({"action": "drop", "icmp_type": 8}),
                "icmp",
            ),
            (
                serde_json::json!({"action": "drop", "conn_state": ["new", "new"]}),
                "twice",
            ),
            (
                serde_json::json!({"action": "drop", "conn_state": ["sideways"]}),
                "unknown variant",
            ),
        ];
        for (json, expected) in cases {
            let error = rule(json.clone()).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
