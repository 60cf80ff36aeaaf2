//! The host side of the provider uplink: when the agent creates the uplink
//! as a TAP device in the host's own namespace, it gives the device the
//! uplink gateway's address and routes the pod and floating-IP ranges (and
//! every prefix the provider router routes to a tenant) through it, so the
//! host reaches every pod address directly.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
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
}

/// The plan for `port` if it is the provider's uplink, from the topology.
pub fn plan(topo: &Topology, port: Uuid) -> Option<UplinkHostPlan> {
    let provider = topo.provider.as_ref()?;
    if provider.uplink_port != Some(port) {
        return None;
    }
    let port_address = topo.ports.get(&port)?.address?;
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
    Some(UplinkHostPlan {
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
}

impl UplinkHost {
    /// State for the TAP device `ifname`, not yet configured.
    pub fn new(ifname: &str) -> UplinkHost {
        UplinkHost {
            ifname: ifname.to_owned(),
            addressed: None,
            routes: BTreeSet::new(),
        }
    }

    /// Brings the device to `plan`: up, addressed, with exactly the planned
    /// routes. Does nothing when it already is.
    pub fn apply(&mut self, plan: &UplinkHostPlan) -> io::Result<()> {
        if self.addressed == Some(plan.address) && self.routes == plan.routes {
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
        Ok(())
    }
}
