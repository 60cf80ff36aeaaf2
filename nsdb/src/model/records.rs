//! The typed records of the network state database.
//!
//! Every record carries a UUID `id` and the `revision` it was last written at
//! (filled in from the store on every read; ignored on write).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use uuid::Uuid;

use crate::kv::Revision;
use crate::mac::MacAddr;

fn default_true() -> bool {
    true
}

fn default_any_v4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::default())
}

/// A tenant: the owner of a set of virtual devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Name, unique across tenants.
    pub name: String,
    /// The tenant's default network, once initialised
    /// (`POST /v1/tenants/{id}/network`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<TenantNetworkRef>,
}

/// The devices of a tenant's default network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantNetworkRef {
    /// The tenant router, linked to the provider router.
    pub router_id: Uuid,
    /// The default bridge, holding the pods.
    pub bridge_id: Uuid,
    /// The pod subnet. Unless `nat_only`, no other tenant's routed pod
    /// subnet overlaps it (checked in the writing transaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<IpNet>,
    /// The IPv6 pod prefix of a dual-stack network. Unless `nat_only`, no
    /// other tenant's routed pod prefix overlaps it either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr6: Option<IpNet>,
    /// The host reaches these pods only through NAT: no route from the
    /// provider to the pod subnet, pod traffic to the host masqueraded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_only: bool,
}

/// A virtual L3 router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Name, unique among the tenant's routers.
    pub name: String,
    /// Whether the router forwards.
    #[serde(default = "default_true")]
    pub admin_state_up: bool,
    /// Chain applied to packets entering the router.
    #[serde(default)]
    pub inbound_chain_id: Option<Uuid>,
    /// Chain applied to packets leaving the router.
    #[serde(default)]
    pub outbound_chain_id: Option<Uuid>,
}

/// A virtual L2 bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Name, unique among the tenant's bridges.
    pub name: String,
    /// Whether the bridge forwards.
    #[serde(default = "default_true")]
    pub admin_state_up: bool,
    /// Chain applied to packets entering the bridge.
    #[serde(default)]
    pub inbound_chain_id: Option<Uuid>,
    /// Chain applied to packets leaving the bridge.
    #[serde(default)]
    pub outbound_chain_id: Option<Uuid>,
    /// Deployment-wide unique key (the VNI of frames flooded to every port
    /// of the bridge on one host); 0 on create means "allocate one".
    #[serde(default)]
    pub tunnel_key: u32,
}

/// The kind of device a port belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// The port is on a bridge.
    Bridge,
    /// The port is on a router.
    Router,
}

/// A MAC/IP pair a port may send from (anti-spoofing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedAddress {
    /// The allowed source MAC.
    pub mac: MacAddr,
    /// The allowed source addresses (a host address is a /32 or /128).
    pub ip: IpNet,
}

/// A port on a bridge or router: interior when linked to a peer port,
/// exterior when bound to an interface on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// The bridge or router the port belongs to.
    pub device_id: Uuid,
    /// Whether `device_id` is a bridge or a router.
    pub device_type: DeviceType,
    /// The port's MAC, unique on its device.
    pub mac: MacAddr,
    /// Router ports only: the port's address with its prefix, e.g. `10.0.1.1/24`.
    #[serde(default)]
    pub address: Option<IpNet>,
    /// Router ports only: further addresses with their prefixes, of either
    /// family (e.g. `2001:db8:1::1/64` beside `10.0.1.1/24`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_addresses: Vec<IpNet>,
    /// The peer port of an interior link.
    #[serde(default)]
    pub peer_id: Option<Uuid>,
    /// The host an exterior port is bound on.
    #[serde(default)]
    pub host_id: Option<Uuid>,
    /// The interface on `host_id` the port is bound to.
    #[serde(default)]
    pub interface_name: Option<String>,
    /// Chain applied to packets entering through this port.
    #[serde(default)]
    pub inbound_chain_id: Option<Uuid>,
    /// Chain applied to packets leaving through this port.
    #[serde(default)]
    pub outbound_chain_id: Option<Uuid>,
    /// MAC/IP pairs the port may send from.
    #[serde(default)]
    pub allowed_addresses: Vec<AllowedAddress>,
    /// Deployment-wide unique key (the VNI of tunnelled frames to this port);
    /// 0 on create means "allocate one".
    #[serde(default)]
    pub tunnel_key: u32,
    /// Bridge ports only: the port extends the bridge to an external VXLAN
    /// tunnel endpoint (served by the agent of the host it is bound on).
    #[serde(default)]
    pub vtep: Option<VtepEndpoint>,
    /// Labels (Kubernetes pod labels, its namespace as
    /// `plexus.io/namespace`, and the namespace's labels under
    /// `namespace.plexus.io/`), matched by selector groups.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: super::Labels,
}

/// An external VXLAN tunnel endpoint a bridge port reaches (a standard
/// VXLAN device, e.g. Linux's `vxlan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VtepEndpoint {
    /// The VNI the endpoint uses for this segment.
    pub vni: u32,
    /// The endpoint's address.
    pub remote_ip: IpAddr,
    /// The endpoint's UDP port (default 4789).
    #[serde(default = "default_vxlan_port")]
    pub remote_port: u16,
}

fn default_vxlan_port() -> u16 {
    4789
}

/// What a route does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Forward through the next-hop port.
    #[default]
    Normal,
    /// Drop silently.
    Blackhole,
    /// Drop and answer ICMP administratively prohibited.
    Reject,
}

/// A route in a router's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// The router whose table holds the route.
    pub router_id: Uuid,
    /// Destination prefix.
    pub dst: IpNet,
    /// Source prefix (default: any IPv4 source).
    #[serde(default = "default_any_v4")]
    pub src: IpNet,
    /// The router port packets leave through (normal routes).
    #[serde(default, rename = "next_hop_port")]
    pub next_hop_port_id: Option<Uuid>,
    /// The gateway to forward to; none means the destination is on-link.
    #[serde(default)]
    pub next_hop_gateway: Option<IpAddr>,
    /// Preference among equal prefixes: lower wins, equal weights share (ECMP).
    #[serde(default)]
    pub weight: u32,
    /// Normal, blackhole or reject.
    #[serde(default, rename = "type")]
    pub kind: RouteKind,
}

/// A named, ordered list of rules, attachable as a device or port filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Name, unique among the tenant's chains.
    pub name: String,
}

/// A named set of ports that rules can match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortGroup {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Name, unique among the tenant's port groups.
    pub name: String,
    /// Member ports (none when `selector` is set).
    #[serde(default)]
    pub port_ids: Vec<Uuid>,
    /// When set, the members are the tenant's ports whose labels it
    /// matches, kept current as labels change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<super::LabelSelector>,
}

/// A named set of addresses that rules can match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpAddressGroup {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Name, unique among the tenant's address groups.
    pub name: String,
    /// Member prefixes (host addresses as /32 or /128; none when
    /// `selector` is set).
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// When set, the members are the allowed addresses of the tenant's
    /// ports whose labels it matches, kept current as labels change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<super::LabelSelector>,
}

/// A host running a Plexus agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Name, unique across hosts.
    pub name: String,
    /// The underlay address tunnels to this host are sent to.
    pub tunnel_ip: IpAddr,
    /// The MTU of the host's underlay; pods on tunnelled bridges get 50
    /// bytes less (the VXLAN overhead).
    #[serde(default = "default_underlay_mtu")]
    pub underlay_mtu: u32,
    /// Whether the host's agent holds a live lease (derived on read).
    #[serde(default)]
    pub alive: bool,
}

fn default_underlay_mtu() -> u32 {
    1500
}

/// A CIDR pool that IPAM allocates addresses from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpPool {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant; none for provider pools.
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    /// Name, unique across pools.
    pub name: String,
    /// The prefix addresses are drawn from.
    pub cidr: IpNet,
    /// The gateway address, never allocated (default: the first host address).
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// The bridge whose ports use this pool, if any.
    #[serde(default)]
    pub bridge_id: Option<Uuid>,
}

/// An address handed out from a pool to an owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpLease {
    /// The pool the address is from.
    pub pool_id: Uuid,
    /// The allocated address.
    pub address: IpAddr,
    /// Who holds it (e.g. a container id and interface name).
    pub owner: String,
    /// Revision of the allocation.
    #[serde(default)]
    pub revision: Revision,
}

/// A tenant-scoped API credential. Only a hash of the secret is stored; the
/// id is derived from that hash, so a presented token is found by one get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Derived from the token's hash.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// The tenant the token acts for.
    pub tenant_id: Uuid,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// Free-form label (who or what holds the token).
    #[serde(default)]
    pub description: String,
    /// When it was issued, in seconds since the Unix epoch (0: issued before
    /// this was recorded).
    #[serde(default)]
    pub created_at: u64,
    /// When it stops working, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// When it last authenticated a request (kept to the minute), in
    /// seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
}

impl ApiToken {
    /// Whether the token is past its expiry at `now` (seconds since the
    /// Unix epoch).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// The deployment's provider settings (one record per deployment): the
/// admin-owned provider router that links every tenant router to the
/// outside, and the address plans tenant networks are carved from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// The admin-owned tenant holding the provider devices.
    pub tenant_id: Uuid,
    /// The provider router.
    pub router_id: Uuid,
    /// The provider router's uplink port (bound to a host interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_port_id: Option<Uuid>,
    /// The next hop beyond the uplink (the host side of the uplink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_gateway: Option<Ipv4Addr>,
    /// Per-tenant link subnets (a /30 each) come from here.
    pub link_cidr: Ipv4Net,
    /// Default tenant pod subnets come from here.
    pub pod_cidr: Ipv4Net,
    /// The prefix length of a default tenant pod subnet.
    pub pod_prefix_len: u8,
    /// Floating IPs come from here.
    pub external_cidr: Ipv4Net,
    /// The MTU pods get (fits the underlay when tunnelled).
    pub pod_mtu: u16,
    /// The IPv6 plan: tenant networks are dual-stack when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<ProviderIpv6>,
}

/// The IPv6 half of the provider settings. IPv6 is routed to the host,
/// never translated, so there is no IPv6 external range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderIpv6 {
    /// Per-tenant IPv6 link subnets (a /126 each) come from here.
    pub link_cidr: Ipv6Net,
    /// Default tenant IPv6 pod prefixes come from here.
    pub pod_cidr: Ipv6Net,
    /// The prefix length of a default tenant IPv6 pod prefix.
    pub pod_prefix_len: u8,
    /// The host side of the uplink's IPv6 subnet: the next hop of the
    /// provider's IPv6 default route, and the address tenant routers let in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_gateway: Option<Ipv6Addr>,
}

/// A floating IP: static 1:1 NAT on a tenant router between an external
/// address and a pod's address. The rules and the provider route that
/// implement it are created and removed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatingIp {
    /// Unique id.
    pub id: Uuid,
    /// Revision of the last write.
    #[serde(default)]
    pub revision: Revision,
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// The tenant router doing the translation.
    pub router_id: Uuid,
    /// The external address, unique in the deployment.
    pub floating_address: Ipv4Addr,
    /// The pod address it maps to.
    pub fixed_address: Ipv4Addr,
    /// The inbound DNAT rule it installed.
    pub dnat_rule_id: Uuid,
    /// The outbound SNAT rule it installed.
    pub snat_rule_id: Uuid,
    /// The provider route it installed.
    pub route_id: Uuid,
}
