//! Rules: the entries of a chain, with their match conditions, action and
//! NAT targets.
//!
//! The JSON of a rule is flat: `position`, `action`, `jump_chain_id`,
//! `nat_targets` and one field per condition (`protocol`, `src_cidr`,
//! `dst_ports`, `conn_state`, …), with `invert` naming the conditions to
//! negate. Every condition is optional; the set ones are AND-ed.

use std::net::IpAddr;

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

/// Where a NAT rule translates to: an address range (IPv4 or IPv6, one
/// family per range) and optionally a port range. A target translates
/// packets of its own family only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatTarget {
    /// The first address of the range.
    pub address_from: IpAddr,
    /// The last address of the range (default: `address_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_to: Option<IpAddr>,
    /// The first port (default: keep the port, or pick any free one for SNAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_from: Option<u16>,
    /// The last port (default: `port_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_to: Option<u16>,
}

impl NatTarget {
    /// The inclusive address range.
    pub fn addresses(&self) -> (IpAddr, IpAddr) {
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

    /// The one IP version the rule can match, when its conditions say so:
    /// `ip_version` (negated: the other one), else the family of a
    /// source or destination prefix that is not negated.
    pub fn matched_ip_version(&self) -> Option<u8> {
        if let Some(version) = self.ip_version {
            return Some(match self.inverted(Condition::IpVersion) {
                true => 10 - version,
                false => version,
            });
        }
        let family = |net: &IpNet| if net.addr().is_ipv4() { 4 } else { 6 };
        [
            (Condition::SrcCidr, self.src_cidr),
            (Condition::DstCidr, self.dst_cidr),
        ]
        .into_iter()
        .find_map(|(condition, net)| net.filter(|_| !self.inverted(condition)))
        .map(|net| family(&net))
    }

    /// Whether matching the rule needs connection tracking (a state
    /// condition or a NAT action).
    pub fn needs_conntrack(&self) -> bool {
        !self.conn_state.is_empty() || self.action.is_nat()
    }
}
