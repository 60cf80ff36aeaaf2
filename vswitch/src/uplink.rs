//! The host side of the provider uplink: when the agent creates the uplink
//! as a TAP device in the host's own namespace, it gives the device the
//! uplink gateway's address and routes the pod and floating-IP ranges (and
//! every prefix the provider router routes to a tenant) through it, so the
//! host reaches every pod address directly.
//!
//! IPv6 the same way, routed and never NATed: when the uplink port has an
//! IPv6 address (an extra address such as `fd00:100::2/64`), the host side
//! gets the first address of that subnet (the next one when the port holds
//! it), without duplicate address detection, and a route through the port
//! for every IPv6 prefix the provider router routes toward a tenant.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nsdb::RouteKind;
use uuid::Uuid;

use crate::io::netlink;
use crate::snapshot::Topology;

/// What the host side of the uplink should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkHostPlan {
    /// The host side's address (the uplink gateway, on the uplink subnet).
    pub address: Ipv4Net,
    /// The next hop of the host routes (the uplink port's own address).
    pub via: Ipv4Addr,
    /// The prefixes routed through the uplink.
    pub routes: BTreeSet<Ipv4Net>,
    /// The IPv6 side, when the uplink port has an IPv6 address.
    pub ipv6: Option<UplinkHostPlan6>,
}

/// The IPv6 half of the host side of the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkHostPlan6 {
    /// The host side's address, on the uplink port's IPv6 subnet.
    pub address: Ipv6Net,
    /// The next hop of the host routes (the uplink port's IPv6 address).
    pub via: Ipv6Addr,
    /// The IPv6 prefixes routed through the uplink.
    pub routes: BTreeSet<Ipv6Net>,
}

/// The plan for `port` if it is the provider's uplink, from the topology.
pub fn plan(topo: &Topology, port: Uuid) -> Option<UplinkHostPlan> {
    let provider = topo.provider.as_ref()?;
    if provider.uplink_port != Some(port) {
        return None;
    }
    let info = topo.ports.get(&port)?;
    let port_address = info.address?;
    let gateway = provider.uplink_gateway?;
    let address = Ipv4Net::new(gateway, port_address.prefix_len()).ok()?;
    let uplink_subnet = port_address.trunc();
    let mut routes: BTreeSet<Ipv4Net> = [provider.pod_cidr, provider.external_cidr].into();
    if let Some(router) = topo.routers.get(&provider.router) {
        for entry in router.routes.entries() {
            let toward_tenant = entry.port.is_some() && entry.port != Some(port);
            let covered = routes.iter().any(|r| r.contains(&entry.dst));
            if toward_tenant
                && entry.kind == RouteKind::Normal
                && entry.dst.prefix_len() > 0
                && !covered
                && !entry.dst.contains(&uplink_subnet)
                && !uplink_subnet.contains(&entry.dst)
            {
                routes.insert(entry.dst.trunc());
            }
        }
    }
    let ipv6 = info
        .addresses
        .iter()
        .find_map(|a| match a {
            IpNet::V6(a) if !is_link_local(a.addr()) => Some(*a),
            _ => None,
        })
        .and_then(|a| plan6(topo, provider.router, port, a));
    Some(UplinkHostPlan {
        address,
        via: port_address.addr(),
        routes,
        ipv6,
    })
}

fn is_link_local(address: Ipv6Addr) -> bool {
    address.segments()[0] & 0xffc0 == 0xfe80
}

/// The host side's IPv6 address when the uplink port holds `port_address`:
/// the first address of its subnet, the second when the port holds the
/// first; none for a link-local address or a subnet smaller than /126.
pub fn host_address6(port_address: Ipv6Net) -> Option<Ipv6Net> {
    if port_address.prefix_len() > 126 || is_link_local(port_address.addr()) {
        return None;
    }
    let first = Ipv6Addr::from(u128::from(port_address.network()) + 1);
    let host = if first == port_address.addr() {
        Ipv6Addr::from(u128::from(first) + 1)
    } else {
        first
    };
    Ipv6Net::new(host, port_address.prefix_len()).ok()
}

/// The IPv6 half for the uplink `port` (of `router`) holding `port_address`.
fn plan6(
    topo: &Topology,
    router: Uuid,
    port: Uuid,
    port_address: Ipv6Net,
) -> Option<UplinkHostPlan6> {
    let address = host_address6(port_address)?;
    let subnet = port_address.trunc();
    let mut routes: BTreeSet<Ipv6Net> = BTreeSet::new();
    if let Some(router) = topo.routers.get(&router) {
        for entry in router.routes6.entries() {
            let toward_tenant = entry.port.is_some() && entry.port != Some(port);
            let covered = routes.iter().any(|r| r.contains(&entry.dst));
            if toward_tenant
                && entry.kind == RouteKind::Normal
                && entry.dst.prefix_len() > 0
                && !covered
                && !entry.dst.contains(&subnet)
                && !subnet.contains(&entry.dst)
            {
                routes.insert(entry.dst.trunc());
            }
        }
    }
    Some(UplinkHostPlan6 {
        address,
        via: port_address.addr(),
        routes,
    })
}

/// The host-side state of an uplink TAP the agent created.
#[derive(Debug)]
pub struct UplinkHost {
    ifname: String,
    addressed: Option<Ipv4Net>,
    routes: BTreeSet<Ipv4Net>,
    addressed6: Option<Ipv6Net>,
    routes6: BTreeSet<Ipv6Net>,
}

impl UplinkHost {
    /// State for the TAP device `ifname`, not yet configured.
    pub fn new(ifname: &str) -> UplinkHost {
        UplinkHost {
            ifname: ifname.to_owned(),
            addressed: None,
            routes: BTreeSet::new(),
            addressed6: None,
            routes6: BTreeSet::new(),
        }
    }

    /// Brings the device to `plan`: up, addressed, with exactly the planned
    /// routes (IPv4, then IPv6). Does nothing when it already is.
    pub fn apply(&mut self, plan: &UplinkHostPlan) -> io::Result<()> {
        let wanted6 = plan.ipv6.as_ref();
        let v6_done = self.addressed6 == wanted6.map(|p| p.address)
            && wanted6.map_or(self.routes6.is_empty(), |p| self.routes6 == p.routes);
        if self.addressed == Some(plan.address) && self.routes == plan.routes && v6_done {
            return Ok(());
        }
        let index = netlink::link_index(&self.ifname)?;
        if self.addressed != Some(plan.address) {
            netlink::set_link_up(index)?;
            netlink::add_address(index, plan.address)?;
            self.addressed = Some(plan.address);
            self.routes.clear();
        }
        for stale in self.routes.difference(&plan.routes) {
            netlink::delete_route(*stale, index)?;
        }
        for route in &plan.routes {
            netlink::replace_route(*route, plan.via, index)?;
        }
        self.routes = plan.routes.clone();
        self.apply6(index, wanted6)
    }

    /// The IPv6 half of [`UplinkHost::apply`]: a host address once
    /// planned stays (the routes follow the plan).
    fn apply6(&mut self, index: u32, plan: Option<&UplinkHostPlan6>) -> io::Result<()> {
        let empty = BTreeSet::new();
        let wanted = plan.map_or(&empty, |p| &p.routes);
        for stale in self.routes6.difference(wanted) {
            netlink::delete_ip_route(IpNet::V6(*stale), index)?;
        }
        self.routes6.retain(|r| wanted.contains(r));
        let Some(plan) = plan else {
            self.addressed6 = None;
            return Ok(());
        };
        if self.addressed6 != Some(plan.address) {
            netlink::add_ip_address(index, IpNet::V6(plan.address), true)?;
            self.addressed6 = Some(plan.address);
            self.routes6.clear();
        }
        for route in &plan.routes {
            netlink::replace_ip_route(IpNet::V6(*route), IpAddr::V6(plan.via), index)?;
        }
        self.routes6 = plan.routes.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
