//! The immutable topology snapshot the simulation engine reads.
//!
//! An agent builds a [`Topology`] from the NSDB's records at one revision,
//! swaps it in atomically, and never mutates it: every packet simulated
//! against it sees one consistent state. Lookups the engine needs on every
//! packet (a bridge's static MAC table, its ARP-suppression table, a
//! router's own addresses and routes) are precomputed here, once per
//! topology change, instead of per packet.

mod lb;
mod policy;
mod routes;
mod tunnel;

pub use lb::{LbInfo, MemberInfo, VipInfo, VipKey};
pub use policy::{ChainInfo, IpGroups, ProviderInfo};
pub use routes::{Prefix, RouteEntry, RouteTable};
pub use tunnel::{KeyTarget, TunnelIndex};

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nsdb::{DeviceType, Record, Revision, RouteKind};
use uuid::Uuid;

/// A 48-bit MAC address as bytes.
pub type Mac = [u8; 6];

/// The device a port belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// A bridge.
    Bridge(Uuid),
    /// A router.
    Router(Uuid),
}

/// What the engine knows about a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's id.
    pub id: Uuid,
    /// Its device.
    pub device: Device,
    /// Its MAC (for bridge ports: the MAC of the workload behind it).
    pub mac: Mac,
    /// Router ports: the (first) IPv4 address and its network.
    pub address: Option<Ipv4Net>,
    /// Router ports: every address with its network, either family, the
    /// NSDB's `address` first.
    pub addresses: Vec<IpNet>,
    /// The linked peer port (interior ports).
    pub peer: Option<Uuid>,
    /// The host an exterior port is bound on.
    pub host: Option<Uuid>,
    /// The interface it is bound to there.
    pub interface: Option<String>,
    /// MAC/IP pairs the port may send from.
    pub allowed: Vec<(Mac, IpNet)>,
    /// The deployment-wide key (the VNI of tunnelled frames).
    pub tunnel_key: u32,
    /// Chains: inbound and outbound.
    pub chains: (Option<Uuid>, Option<Uuid>),
}

/// What the engine knows about a bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeInfo {
    /// Whether it forwards.
    pub admin_up: bool,
    /// Its ports, sorted by id (the flood order).
    pub ports: Vec<Uuid>,
    /// MACs known from the NSDB, no learning needed: each port's own MAC,
    /// its allowed MACs, and the MAC of a router port linked to it.
    pub static_macs: HashMap<Mac, Uuid>,
    /// ARP suppression: addresses the NSDB knows, answered by the bridge.
    pub arp: HashMap<Ipv4Addr, Mac>,
    /// Neighbor Solicitations answered by the bridge: the IPv6 addresses
    /// the NSDB knows (the IPv6 twin of `arp`).
    pub nd: HashMap<Ipv6Addr, Mac>,
    /// Chains: inbound and outbound.
    pub chains: (Option<Uuid>, Option<Uuid>),
    /// Routers linked to it that carry a load balancer.
    pub balancers: Vec<BalancerLink>,
}

/// A router with a load balancer, linked to a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalancerLink {
    /// The bridge's port linked to the router.
    pub bridge_port: Uuid,
    /// The router.
    pub router: Uuid,
    /// The MAC of the router's port.
    pub mac: Mac,
}

/// What the engine knows about a router.
#[derive(Debug, Clone, Default)]
pub struct RouterInfo {
    /// Whether it forwards.
    pub admin_up: bool,
    /// Its ports, sorted by id.
    pub ports: Vec<Uuid>,
    /// Its own addresses and the port holding each.
    pub addresses: HashMap<Ipv4Addr, Uuid>,
    /// Its own IPv6 addresses (each port's link-local one included) and
    /// the port holding each.
    pub addresses6: HashMap<Ipv6Addr, Uuid>,
    /// Its forwarding table, connected networks included.
    pub routes: RouteTable,
    /// Its IPv6 forwarding table, connected networks included.
    pub routes6: RouteTable<Ipv6Net>,
    /// Chains: inbound and outbound.
    pub chains: (Option<Uuid>, Option<Uuid>),
}

/// One consistent view of the virtual topology: its routers, and the rest
/// in a [`TopologyBase`] that snapshots share (an `Arc`, copied only when
/// changed), so a change of routes alone builds only the routers' tables
/// again ([`Topology::with_routes`]). The base's fields read as the
/// topology's own (`Deref`).
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// The NSDB revision it was built from.
    pub revision: Revision,
    /// Its place in the agent's sequence of snapshots (set when it comes
    /// into force): flows decided on an older one are not cached once a
    /// newer one's invalidations were applied.
    pub generation: u64,
    /// Routers by id (each shared until it changes).
    pub routers: HashMap<Uuid, Arc<RouterInfo>>,
    /// Everything else.
    base: Arc<TopologyBase>,
}

/// The part of a [`Topology`] that a change of routes leaves as it is.
#[derive(Debug, Clone, Default)]
pub struct TopologyBase {
    /// Ports by id.
    pub ports: HashMap<Uuid, PortInfo>,
    /// Bridges by id.
    pub bridges: HashMap<Uuid, BridgeInfo>,
    /// Hosts by id: tunnel address and liveness.
    pub hosts: HashMap<Uuid, (IpAddr, bool)>,
    /// Chains by id, with their rules in order.
    pub chains: HashMap<Uuid, ChainInfo>,
    /// Port group members, by group.
    pub port_groups: HashMap<Uuid, HashSet<Uuid>>,
    /// IP address group members, by group.
    pub ip_groups: IpGroups,
    /// Devices that track connections (their chains match on state or NAT).
    pub stateful: HashSet<Uuid>,
    /// The deployment's provider settings.
    pub provider: Option<ProviderInfo>,
    /// The tunnel's lookups.
    pub tunnel: TunnelIndex,
    /// Load balancers, by the router they serve.
    pub load_balancers: HashMap<Uuid, LbInfo>,
    /// Enabled health monitors, by the pool they probe.
    pub monitors: HashMap<Uuid, nsdb::HealthMonitor>,
}

impl Deref for Topology {
    type Target = TopologyBase;

    /// The shared part.
    fn deref(&self) -> &TopologyBase {
        &self.base
    }
}

impl DerefMut for Topology {
    /// The shared part, copied first if another snapshot shares it.
    fn deref_mut(&mut self) -> &mut TopologyBase {
        Arc::make_mut(&mut self.base)
    }
}

fn v4(net: IpNet) -> Option<Ipv4Net> {
    match net {
        IpNet::V4(n) => Some(n),
        IpNet::V6(_) => None,
    }
}

fn v6(net: IpNet) -> Option<Ipv6Net> {
    match net {
        IpNet::V6(n) => Some(n),
        IpNet::V4(_) => None,
    }
}

fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

impl PortInfo {
    /// The port's IPv4 addresses.
    pub fn ipv4_addresses(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.addresses.iter().copied().filter_map(v4)
    }

    /// The port's IPv6 addresses (not its link-local one).
    pub fn ipv6_addresses(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        self.addresses.iter().copied().filter_map(v6)
    }

    /// The port's IPv6 link-local address (from its MAC, EUI-64).
    pub fn link_local(&self) -> Ipv6Addr {
        crate::wire::link_local_from_mac(self.mac)
    }

    /// Whether `ip` is one of the port's own IPv6 addresses.
    pub fn owns6(&self, ip: &Ipv6Addr) -> bool {
        *ip == self.link_local() || self.ipv6_addresses().any(|a| a.addr() == *ip)
    }

    /// The address an IPv6 masquerade toward `dst` translates to: the
    /// port's global (not link-local) IPv6 address on `dst`'s network,
    /// else its first one; `None` without one.
    pub fn masquerade_ipv6_for(&self, dst: &Ipv6Addr) -> Option<Ipv6Addr> {
        let global = || {
            self.ipv6_addresses()
                .filter(|a| !is_link_local(&a.addr()) && !a.addr().is_multicast())
        };
        global()
            .find(|a| a.contains(dst))
            .or_else(|| global().next())
            .map(|a| a.addr())
    }

    /// The port's IPv6 address to speak to `peer` from: one on the peer's
    /// network, else the first global one, else the link-local one.
    pub fn ipv6_source_for(&self, peer: &Ipv6Addr) -> Ipv6Addr {
        if is_link_local(peer) {
            return self.link_local();
        }
        self.ipv6_addresses()
            .find(|a| a.contains(peer))
            .or_else(|| self.ipv6_addresses().next())
            .map_or(self.link_local(), |a| a.addr())
    }
}

/// The implicit route to the network of `port`'s address `addr`.
fn connected<N: Prefix>(port: &PortInfo, addr: N) -> RouteEntry<N> {
    RouteEntry {
        id: None,
        dst: addr.truncated(),
        src: N::default(),
        port: Some(port.id),
        gateway: None,
        weight: 0,
        kind: RouteKind::Normal,
    }
}

/// The table entry of the NSDB route `r`.
fn configured<N: Prefix>(
    r: &nsdb::Route,
    dst: N,
    src: N,
    gateway: Option<N::Addr>,
) -> RouteEntry<N> {
    RouteEntry {
        id: Some(r.id),
        dst,
        src,
        port: r.next_hop_port_id,
        gateway,
        weight: r.weight,
        kind: r.kind,
    }
}

impl Topology {
    /// Builds the snapshot of `records` (all records at `revision`).
    pub fn build(revision: Revision, records: &[Record]) -> Topology {
        let records: Vec<&Record> = records.iter().collect();
        Self::build_from(revision, &records)
    }

    /// [`Topology::build`] from references to the records.
    pub fn build_from(revision: Revision, records: &[&Record]) -> Topology {
        let mut topo = Topology {
            revision,
            ..Topology::default()
        };
        for record in records {
            match record {
                Record::Bridge(b) => {
                    topo.bridges.insert(
                        b.id,
                        BridgeInfo {
                            admin_up: b.admin_state_up,
                            chains: (b.inbound_chain_id, b.outbound_chain_id),
                            ..BridgeInfo::default()
                        },
                    );
                }
                Record::Router(r) => {
                    topo.routers.insert(
                        r.id,
                        Arc::new(RouterInfo {
                            admin_up: r.admin_state_up,
                            chains: (r.inbound_chain_id, r.outbound_chain_id),
                            ..RouterInfo::default()
                        }),
                    );
                }
                Record::Host(h) => {
                    topo.hosts.insert(h.id, (h.tunnel_ip, h.alive));
                }
                Record::Provider(p) => {
                    topo.provider = Some(ProviderInfo {
                        router: p.router_id,
                        uplink_port: p.uplink_port_id,
                        uplink_gateway: p.uplink_gateway,
                        pod_cidr: p.pod_cidr,
                        external_cidr: p.external_cidr,
                    });
                }
                Record::Port(p) => {
                    let device = match p.device_type {
                        DeviceType::Bridge => Device::Bridge(p.device_id),
                        DeviceType::Router => Device::Router(p.device_id),
                    };
                    let addresses: Vec<IpNet> = p
                        .address
                        .iter()
                        .chain(&p.extra_addresses)
                        .copied()
                        .collect();
                    topo.ports.insert(
                        p.id,
                        PortInfo {
                            id: p.id,
                            device,
                            mac: p.mac.0,
                            address: addresses.iter().copied().find_map(v4),
                            addresses,
                            peer: p.peer_id,
                            host: p.host_id,
                            interface: p.interface_name.clone(),
                            allowed: p
                                .allowed_addresses
                                .iter()
                                .map(|a| (a.mac.0, a.ip))
                                .collect(),
                            tunnel_key: p.tunnel_key,
                            chains: (p.inbound_chain_id, p.outbound_chain_id),
                        },
                    );
                }
                _ => {}
            }
        }
        topo.index_ports();
        topo.index_routes(records, None);
        topo.index_policy(records);
        topo.index_load_balancers(records);
        topo.index_tunnel(records);
        topo
    }

    fn index_ports(&mut self) {
        let Topology { routers, base, .. } = self;
        let TopologyBase {
            ports: all,
            bridges,
            ..
        } = Arc::make_mut(base);
        let mut ports: Vec<&PortInfo> = all.values().collect();
        ports.sort_by_key(|p| p.id);
        for port in ports {
            match port.device {
                Device::Bridge(bridge) => {
                    let Some(info) = bridges.get_mut(&bridge) else {
                        continue;
                    };
                    info.ports.push(port.id);
                    // The workload behind an exterior port owns the port's MAC;
                    // behind an interior port sits the peer router port.
                    let peer = port.peer.and_then(|p| all.get(&p));
                    match peer {
                        Some(router_port) => {
                            info.static_macs.insert(router_port.mac, port.id);
                            for addr in router_port.ipv4_addresses() {
                                info.arp.insert(addr.addr(), router_port.mac);
                            }
                            if matches!(router_port.device, Device::Router(_)) {
                                info.nd.insert(router_port.link_local(), router_port.mac);
                                for addr in router_port.ipv6_addresses() {
                                    info.nd.insert(addr.addr(), router_port.mac);
                                }
                            }
                        }
                        None => {
                            info.static_macs.insert(port.mac, port.id);
                        }
                    }
                    for (mac, ip) in &port.allowed {
                        info.static_macs.insert(*mac, port.id);
                        match ip {
                            IpNet::V4(net) if net.prefix_len() == 32 => {
                                info.arp.insert(net.addr(), *mac);
                            }
                            IpNet::V6(net) if net.prefix_len() == 128 => {
                                info.nd.insert(net.addr(), *mac);
                            }
                            _ => {}
                        }
                    }
                }
                Device::Router(router) => {
                    let Some(info) = routers.get_mut(&router).map(Arc::make_mut) else {
                        continue;
                    };
                    info.ports.push(port.id);
                    for addr in port.ipv4_addresses() {
                        info.addresses.insert(addr.addr(), port.id);
                    }
                    info.addresses6.insert(port.link_local(), port.id);
                    for addr in port.ipv6_addresses() {
                        info.addresses6.insert(addr.addr(), port.id);
                    }
                }
            }
        }
    }

    /// Builds the route tables of every router, or only of the routers in
    /// `only` (the others keep theirs), from their ports' networks and the
    /// routes among `records`.
    fn index_routes(&mut self, records: &[&Record], only: Option<&HashSet<Uuid>>) {
        let mut tables: HashMap<Uuid, Vec<RouteEntry>> = HashMap::new();
        let mut tables6: HashMap<Uuid, Vec<RouteEntry<Ipv6Net>>> = HashMap::new();
        let ports: Vec<&PortInfo> = match only {
            None => self.ports.values().collect(),
            Some(routers) => routers
                .iter()
                .filter_map(|r| self.routers.get(r))
                .flat_map(|info| &info.ports)
                .filter_map(|id| self.ports.get(id))
                .collect(),
        };
        let wanted = |router: &Uuid| only.is_none_or(|routers| routers.contains(router));
        for port in ports {
            let Device::Router(router) = port.device else {
                continue;
            };
            for addr in &port.addresses {
                match *addr {
                    IpNet::V4(addr) => tables
                        .entry(router)
                        .or_default()
                        .push(connected(port, addr)),
                    IpNet::V6(addr) => tables6
                        .entry(router)
                        .or_default()
                        .push(connected(port, addr)),
                }
            }
        }
        for record in records {
            let Record::Route(r) = record else { continue };
            if !wanted(&r.router_id) {
                continue;
            }
            match (r.dst, r.next_hop_gateway) {
                (IpNet::V4(dst), None | Some(IpAddr::V4(_))) => {
                    let gateway = match r.next_hop_gateway {
                        Some(IpAddr::V4(gw)) => Some(gw),
                        _ => None,
                    };
                    let src = v4(r.src).unwrap_or_default();
                    tables
                        .entry(r.router_id)
                        .or_default()
                        .push(configured(r, dst, src, gateway));
                }
                (IpNet::V6(dst), None | Some(IpAddr::V6(_))) => {
                    let gateway = match r.next_hop_gateway {
                        Some(IpAddr::V6(gw)) => Some(gw),
                        _ => None,
                    };
                    // The NSDB's default source is any IPv4 source: for an
                    // IPv6 route it means any source too.
                    let src = v6(r.src).unwrap_or_default();
                    tables6
                        .entry(r.router_id)
                        .or_default()
                        .push(configured(r, dst, src, gateway));
                }
                _ => {}
            }
        }
        if let Some(routers) = only {
            // A router whose last route went away has an empty table.
            for router in routers {
                tables.entry(*router).or_default();
                tables6.entry(*router).or_default();
            }
        }
        for (router, entries) in tables {
            if let Some(info) = self.routers.get_mut(&router).map(Arc::make_mut) {
                info.routes = RouteTable::new(entries);
            }
        }
        for (router, entries) in tables6 {
            if let Some(info) = self.routers.get_mut(&router).map(Arc::make_mut) {
                info.routes6 = RouteTable::new(entries);
            }
        }
    }

    /// This topology at `revision` with the route tables of `routers`
    /// built again from `records` (every record at `revision`): what
    /// [`Topology::build_from`] makes of them when nothing but routes of
    /// those routers changed. Everything else, the other routers
    /// included, is shared, not copied.
    pub fn with_routes(
        &self,
        revision: Revision,
        records: &[&Record],
        routers: &HashSet<Uuid>,
    ) -> Topology {
        let mut topo = Topology {
            revision,
            generation: 0,
            routers: self.routers.clone(),
            base: self.base.clone(),
        };
        if !routers.is_empty() {
            topo.index_routes(records, Some(routers));
        }
        topo
    }

    /// The port bound to `interface` on `host`, if any.
    pub fn port_bound_to(&self, host: Uuid, interface: &str) -> Option<&PortInfo> {
        self.ports
            .values()
            .find(|p| p.host == Some(host) && p.interface.as_deref() == Some(interface))
    }

    /// Every port bound on `host`.
    pub fn ports_on_host(&self, host: Uuid) -> impl Iterator<Item = &PortInfo> {
        self.ports.values().filter(move |p| p.host == Some(host))
    }
}
