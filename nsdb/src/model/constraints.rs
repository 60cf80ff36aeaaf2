//! Per-kind integrity facts: what a record references, what must be unique,
//! and the rules a record must satisfy on its own.

use ipnet::IpNet;
use std::net::IpAddr;
use uuid::Uuid;

use super::{DeviceType, Kind, Record, RouteKind};

/// An outgoing reference from a record to another record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The field holding the reference.
    pub field: &'static str,
    /// The kind the target must be.
    pub kind: Kind,
    /// The target's id.
    pub id: Uuid,
}

/// A value that at most one record may hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueKey {
    /// Human-readable constraint name, e.g. "name within tenant".
    pub constraint: &'static str,
    /// The index key (relative) that holds the owner's id.
    pub key: String,
    /// The value as a person would write it.
    pub value: String,
}

fn reference(field: &'static str, kind: Kind, id: Uuid) -> Reference {
    Reference { field, kind, id }
}

fn optional(field: &'static str, kind: Kind, id: Option<Uuid>) -> Option<Reference> {
    id.map(|id| reference(field, kind, id))
}

/// Escapes a free-form value for use as one key segment.
pub fn key_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b':') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The unique key of `name` among the `kind` records of `scope`.
pub(super) fn name_key(kind: &'static str, scope: &str, name: &str) -> UniqueKey {
    UniqueKey {
        constraint: "name",
        key: format!("uniq/name/{kind}/{scope}/{}", key_segment(name)),
        value: name.to_string(),
    }
}

/// A static rule violation: the field and what is wrong with it.
pub type Violation = (&'static str, String);

/// Checks a record's name: not empty, at most 255 bytes, printable.
pub(super) fn check_name(name: &str) -> Result<(), Violation> {
    if name.trim().is_empty() {
        return Err(("name", "must not be empty".into()));
    }
    if name.len() > 255 {
        return Err(("name", "must be at most 255 bytes".into()));
    }
    if name.chars().any(char::is_control) {
        return Err(("name", "must not contain control characters".into()));
    }
    Ok(())
}

pub(super) fn check_network(field: &'static str, net: &IpNet) -> Result<(), Violation> {
    if net.trunc() != *net {
        return Err((
            field,
            format!("{net} has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(())
}

fn same_family(a: &IpNet, b: &IpAddr) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_))
    )
}

impl Record {
    /// Every record this one references.
    pub fn references(&self) -> Vec<Reference> {
        let mut refs = Vec::new();
        let chains = |refs: &mut Vec<Reference>, inbound: Option<Uuid>, outbound: Option<Uuid>| {
            refs.extend(optional("inbound_chain_id", Kind::Chain, inbound));
            refs.extend(optional("outbound_chain_id", Kind::Chain, outbound));
        };
        match self {
            Record::Host(_) => {}
            Record::Tenant(t) => {
                if let Some(network) = &t.network {
                    refs.push(reference(
                        "network.router_id",
                        Kind::Router,
                        network.router_id,
                    ));
                    refs.push(reference(
                        "network.bridge_id",
                        Kind::Bridge,
                        network.bridge_id,
                    ));
                }
            }
            Record::Provider(p) => {
                refs.push(reference("tenant_id", Kind::Tenant, p.tenant_id));
                refs.push(reference("router_id", Kind::Router, p.router_id));
                refs.extend(optional("uplink_port_id", Kind::Port, p.uplink_port_id));
            }
            Record::FloatingIp(f) => {
                refs.push(reference("tenant_id", Kind::Tenant, f.tenant_id));
                refs.push(reference("router_id", Kind::Router, f.router_id));
                refs.push(reference("dnat_rule_id", Kind::Rule, f.dnat_rule_id));
                refs.push(reference("snat_rule_id", Kind::Rule, f.snat_rule_id));
                refs.push(reference("route_id", Kind::Route, f.route_id));
            }
            Record::ApiToken(t) => refs.push(reference("tenant_id", Kind::Tenant, t.tenant_id)),
            Record::Router(r) => {
                refs.push(reference("tenant_id", Kind::Tenant, r.tenant_id));
                chains(&mut refs, r.inbound_chain_id, r.outbound_chain_id);
            }
            Record::Bridge(b) => {
                refs.push(reference("tenant_id", Kind::Tenant, b.tenant_id));
                chains(&mut refs, b.inbound_chain_id, b.outbound_chain_id);
            }
            Record::Port(p) => {
                let device_kind = match p.device_type {
                    DeviceType::Bridge => Kind::Bridge,
                    DeviceType::Router => Kind::Router,
                };
                refs.push(reference("device_id", device_kind, p.device_id));
                refs.extend(optional("peer_id", Kind::Port, p.peer_id));
                refs.extend(optional("host_id", Kind::Host, p.host_id));
                chains(&mut refs, p.inbound_chain_id, p.outbound_chain_id);
            }
            Record::Route(r) => {
                refs.push(reference("router_id", Kind::Router, r.router_id));
                refs.extend(optional("next_hop_port", Kind::Port, r.next_hop_port_id));
            }
            Record::Chain(c) => refs.push(reference("tenant_id", Kind::Tenant, c.tenant_id)),
            Record::Rule(r) => {
                refs.push(reference("chain_id", Kind::Chain, r.chain_id));
                refs.extend(optional("jump_chain_id", Kind::Chain, r.jump_chain_id));
                refs.extend(
                    r.in_port_ids
                        .iter()
                        .map(|id| reference("in_port_ids", Kind::Port, *id)),
                );
                refs.extend(
                    r.out_port_ids
                        .iter()
                        .map(|id| reference("out_port_ids", Kind::Port, *id)),
                );
                refs.extend(optional(
                    "in_port_group_id",
                    Kind::PortGroup,
                    r.in_port_group_id,
                ));
                refs.extend(optional(
                    "out_port_group_id",
                    Kind::PortGroup,
                    r.out_port_group_id,
                ));
                refs.extend(optional(
                    "src_ip_group_id",
                    Kind::IpAddressGroup,
                    r.src_ip_group_id,
                ));
                refs.extend(optional(
                    "dst_ip_group_id",
                    Kind::IpAddressGroup,
                    r.dst_ip_group_id,
                ));
            }
            Record::PortGroup(g) => {
                refs.push(reference("tenant_id", Kind::Tenant, g.tenant_id));
                refs.extend(
                    g.port_ids
                        .iter()
                        .map(|id| reference("port_ids", Kind::Port, *id)),
                );
            }
            Record::IpAddressGroup(g) => {
                refs.push(reference("tenant_id", Kind::Tenant, g.tenant_id))
            }
            Record::IpPool(p) => {
                refs.extend(optional("tenant_id", Kind::Tenant, p.tenant_id));
                refs.extend(optional("bridge_id", Kind::Bridge, p.bridge_id));
            }
            Record::LoadBalancer(lb) => {
                refs.push(reference("tenant_id", Kind::Tenant, lb.tenant_id));
                refs.push(reference("router_id", Kind::Router, lb.router_id));
            }
            Record::Pool(p) => {
                refs.push(reference("tenant_id", Kind::Tenant, p.tenant_id));
                let lb = p.load_balancer_id;
                refs.push(reference("load_balancer_id", Kind::LoadBalancer, lb));
            }
            Record::Vip(v) => {
                refs.push(reference("tenant_id", Kind::Tenant, v.tenant_id));
                let lb = v.load_balancer_id;
                refs.push(reference("load_balancer_id", Kind::LoadBalancer, lb));
                refs.push(reference("pool_id", Kind::Pool, v.pool_id));
            }
            Record::PoolMember(m) => {
                refs.push(reference("tenant_id", Kind::Tenant, m.tenant_id));
                refs.push(reference("pool_id", Kind::Pool, m.pool_id));
            }
            Record::HealthMonitor(h) => {
                refs.push(reference("tenant_id", Kind::Tenant, h.tenant_id));
                refs.push(reference("pool_id", Kind::Pool, h.pool_id));
            }
        }
        refs
    }

    /// Every unique value this record holds.
    pub fn unique_keys(&self) -> Vec<UniqueKey> {
        match self {
            Record::Tenant(t) => vec![name_key("tenant", "all", &t.name)],
            Record::Router(r) => vec![name_key("router", &r.tenant_id.to_string(), &r.name)],
            Record::Bridge(b) => vec![
                name_key("bridge", &b.tenant_id.to_string(), &b.name),
                tunnel_key_of(b.tunnel_key),
            ],
            Record::Chain(c) => vec![name_key("chain", &c.tenant_id.to_string(), &c.name)],
            Record::PortGroup(g) => vec![name_key("port_group", &g.tenant_id.to_string(), &g.name)],
            Record::IpAddressGroup(g) => {
                vec![name_key(
                    "ip_address_group",
                    &g.tenant_id.to_string(),
                    &g.name,
                )]
            }
            Record::Host(h) => vec![name_key("host", "all", &h.name)],
            Record::IpPool(p) => vec![name_key("ip_pool", "all", &p.name)],
            Record::Port(p) => {
                let mut keys = vec![
                    UniqueKey {
                        constraint: "mac on device",
                        key: format!("uniq/mac/{}/{}", p.device_id, p.mac),
                        value: p.mac.to_string(),
                    },
                    tunnel_key_of(p.tunnel_key),
                ];
                if let (Some(host), Some(ifname)) = (p.host_id, &p.interface_name) {
                    keys.push(UniqueKey {
                        constraint: "interface binding on host",
                        key: format!("uniq/binding/{host}/{}", key_segment(ifname)),
                        value: ifname.clone(),
                    });
                }
                keys
            }
            Record::Rule(r) => vec![UniqueKey {
                constraint: "position in chain",
                key: format!("uniq/rule_position/{}/{}", r.chain_id, r.position),
                value: r.position.to_string(),
            }],
            Record::Provider(_) => vec![UniqueKey {
                constraint: "one provider per deployment",
                key: "uniq/provider".into(),
                value: "provider".into(),
            }],
            Record::FloatingIp(f) => vec![
                UniqueKey {
                    constraint: "floating address",
                    key: format!("uniq/floating_address/{}", f.floating_address),
                    value: f.floating_address.to_string(),
                },
                UniqueKey {
                    constraint: "fixed address on router",
                    key: format!("uniq/floating_fixed/{}/{}", f.router_id, f.fixed_address),
                    value: f.fixed_address.to_string(),
                },
            ],
            Record::Route(_) | Record::ApiToken(_) => Vec::new(),
            Record::LoadBalancer(_)
            | Record::Pool(_)
            | Record::Vip(_)
            | Record::PoolMember(_)
            | Record::HealthMonitor(_) => super::lb::lb_unique_keys(self),
        }
    }

    /// Checks the rules a record must satisfy on its own.
    pub fn validate(&self) -> Result<(), Violation> {
        match self {
            Record::Tenant(t) => check_name(&t.name),
            Record::Router(r) => check_name(&r.name),
            Record::Bridge(b) => {
                check_name(&b.name)?;
                check_tunnel_key(b.tunnel_key)
            }
            Record::Chain(c) => check_name(&c.name),
            Record::PortGroup(g) => {
                check_name(&g.name)?;
                check_selector(g.selector.as_ref(), !g.port_ids.is_empty(), "port_ids")
            }
            Record::IpAddressGroup(g) => {
                check_name(&g.name)?;
                check_selector(g.selector.as_ref(), !g.addresses.is_empty(), "addresses")
            }
            Record::ApiToken(t) => {
                let hex = t.secret_sha256.len() == 64
                    && t.secret_sha256.bytes().all(|b| b.is_ascii_hexdigit());
                if hex {
                    Ok(())
                } else {
                    Err(("secret_sha256", "must be 64 hex digits".into()))
                }
            }
            Record::Host(h) => {
                check_name(&h.name)?;
                if h.tunnel_ip.is_unspecified() || h.tunnel_ip.is_multicast() {
                    return Err((
                        "tunnel_ip",
                        format!("{} is not a unicast address", h.tunnel_ip),
                    ));
                }
                if !(1280..=65535).contains(&h.underlay_mtu) {
                    return Err((
                        "underlay_mtu",
                        format!("{} is outside 1280..=65535", h.underlay_mtu),
                    ));
                }
                Ok(())
            }
            Record::Port(p) => validate_port(p),
            Record::Route(r) => validate_route(r),
            Record::Rule(r) => super::rule_check::validate_rule(r),
            Record::Provider(p) => super::provider_check::validate_provider(p),
            Record::LoadBalancer(lb) => super::lb::validate_load_balancer(lb),
            Record::Pool(p) => super::lb::validate_pool(p),
            Record::Vip(v) => super::lb::validate_vip(v),
            Record::PoolMember(m) => super::lb::validate_member(m),
            Record::HealthMonitor(h) => super::lb::validate_monitor(h),
            Record::FloatingIp(f) => {
                if f.floating_address.is_unspecified() || f.floating_address.is_broadcast() {
                    return Err((
                        "floating_address",
                        format!("{} is not a unicast address", f.floating_address),
                    ));
                }
                Ok(())
            }
            Record::IpPool(p) => {
                check_name(&p.name)?;
                check_network("cidr", &p.cidr)?;
                let usable = match p.cidr {
                    IpNet::V4(n) => n.prefix_len() <= 30,
                    IpNet::V6(n) => n.prefix_len() <= 126,
                };
                if !usable {
                    return Err(("cidr", format!("{} leaves no allocatable address", p.cidr)));
                }
                if let Some(gw) = p.gateway {
                    if !p.cidr.contains(&gw) || gw == p.cidr.network() || gw == p.cidr.broadcast() {
                        return Err((
                            "gateway",
                            format!("{gw} is not a host address of {}", p.cidr),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A group lists its members or selects them, not both.
fn check_selector(
    selector: Option<&super::LabelSelector>,
    listed: bool,
    members: &'static str,
) -> Result<(), Violation> {
    let Some(selector) = selector else {
        return Ok(());
    };
    if listed {
        return Err((
            members,
            "a group with a selector computes its members; list none".into(),
        ));
    }
    selector.validate("selector")
}

fn validate_port(p: &super::Port) -> Result<(), Violation> {
    super::labels::validate_labels("labels", &p.labels)?;
    if p.mac.is_zero() || p.mac.is_multicast() {
        return Err(("mac", format!("{} is not a unicast address", p.mac)));
    }
    match (p.device_type, p.address) {
        (DeviceType::Router, None) => {
            return Err((
                "address",
                "a router port needs an address with prefix".into(),
            ))
        }
        (DeviceType::Router, Some(addr)) => {
            if addr.addr() == addr.network() && addr.prefix_len() < addr.max_prefix_len() - 1 {
                return Err(("address", format!("{addr} is the network address")));
            }
        }
        (DeviceType::Bridge, Some(_)) => {
            return Err((
                "address",
                "bridge ports have no address; use allowed_addresses".into(),
            ))
        }
        (DeviceType::Bridge, None) => {}
    }
    if p.device_type == DeviceType::Bridge && !p.extra_addresses.is_empty() {
        return Err((
            "extra_addresses",
            "bridge ports have no address; use allowed_addresses".into(),
        ));
    }
    for (i, addr) in p.extra_addresses.iter().enumerate() {
        if addr.addr() == addr.network() && addr.prefix_len() < addr.max_prefix_len() - 1 {
            return Err(("extra_addresses", format!("{addr} is the network address")));
        }
        if p.address.map(|a| a.addr()) == Some(addr.addr())
            || p.extra_addresses[..i]
                .iter()
                .any(|a| a.addr() == addr.addr())
        {
            return Err((
                "extra_addresses",
                format!("{} is listed twice", addr.addr()),
            ));
        }
    }
    if p.peer_id == Some(p.id) {
        return Err(("peer_id", "a port cannot be linked to itself".into()));
    }
    if p.peer_id.is_some() && (p.host_id.is_some() || p.interface_name.is_some()) {
        return Err((
            "peer_id",
            "an interior (linked) port cannot also be bound to a host".into(),
        ));
    }
    match (&p.host_id, &p.interface_name) {
        (Some(_), None) => return Err(("interface_name", "is required with host_id".into())),
        (None, Some(_)) => return Err(("host_id", "is required with interface_name".into())),
        (Some(_), Some(name)) => {
            let valid = !name.is_empty()
                && name.len() < 16
                && !name.contains(['/', ' ', ':'])
                && name != "."
                && name != ".."
                && name.chars().all(|c| c.is_ascii_graphic());
            if !valid {
                return Err((
                    "interface_name",
                    format!("'{name}' is not a valid interface name"),
                ));
            }
        }
        (None, None) => {}
    }
    if let Some(vtep) = &p.vtep {
        if p.device_type != DeviceType::Bridge {
            return Err(("vtep", "only bridge ports reach a VTEP".into()));
        }
        if vtep.vni == 0 || vtep.vni > 0x00ff_ffff {
            return Err(("vtep", format!("vni {} is outside 1..=16777215", vtep.vni)));
        }
        if vtep.remote_ip.is_unspecified() || vtep.remote_ip.is_multicast() {
            return Err((
                "vtep",
                format!("{} is not a unicast endpoint address", vtep.remote_ip),
            ));
        }
        if vtep.remote_port == 0 {
            return Err(("vtep", "remote_port 0 is not a port".into()));
        }
    }
    check_tunnel_key(p.tunnel_key)
}

/// The largest tunnel key a port or bridge may hold: the keys above it are
/// reserved for Plexus's own control traffic on the tunnel.
pub const MAX_TUNNEL_KEY: u32 = 0x00ff_feff;

fn check_tunnel_key(key: u32) -> Result<(), Violation> {
    if key == 0 || key > MAX_TUNNEL_KEY {
        return Err((
            "tunnel_key",
            format!("{key} is outside 1..={MAX_TUNNEL_KEY}"),
        ));
    }
    Ok(())
}

fn tunnel_key_of(key: u32) -> UniqueKey {
    UniqueKey {
        constraint: "tunnel key",
        key: format!("uniq/tunnel_key/{key}"),
        value: key.to_string(),
    }
}

fn validate_route(r: &super::Route) -> Result<(), Violation> {
    check_network("dst", &r.dst)?;
    check_network("src", &r.src)?;
    let family_mismatch = matches!(
        (r.dst, r.src),
        (IpNet::V4(_), IpNet::V6(_)) | (IpNet::V6(_), IpNet::V4(_))
    );
    if family_mismatch && r.src.prefix_len() != 0 {
        return Err(("src", "must be the same address family as dst".into()));
    }
    if let Some(gw) = r.next_hop_gateway {
        if !same_family(&r.dst, &gw) {
            return Err((
                "next_hop_gateway",
                "must be the same address family as dst".into(),
            ));
        }
    }
    match (r.kind, r.next_hop_port_id) {
        (RouteKind::Normal, None) => {
            Err(("next_hop_port", "is required for a normal route".into()))
        }
        (RouteKind::Blackhole | RouteKind::Reject, Some(_)) => Err((
            "next_hop_port",
            "must be empty for blackhole and reject routes".into(),
        )),
        _ => Ok(()),
    }
}
