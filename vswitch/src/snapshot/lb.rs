//! The load-balancer part of a snapshot: per router, its VIPs by
//! (address, protocol, port) with their pool's members in a fixed order,
//! which members may take new connections, and the VIP addresses the
//! router answers ARP for.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use nsdb::{LbAlgorithm, MemberHealth, Record, SessionAffinity};
use uuid::Uuid;

use super::{BalancerLink, Device, Topology};

/// (address, IP protocol, port): what a VIP answers on.
pub type VipKey = (Ipv4Addr, u8, u16);

/// A pool member as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's id.
    pub id: Uuid,
    /// Its address.
    pub address: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Its share of new connections (1 for every member under
    /// round-robin).
    pub weight: u16,
    /// Whether it takes new connections: enabled, weight above 0, not
    /// found down by its monitor.
    pub usable: bool,
    /// What its monitor last found (as the NSDB holds it).
    pub health: MemberHealth,
}

/// A VIP and the pool behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipInfo {
    /// The VIP's id.
    pub id: Uuid,
    /// The VIP's name.
    pub name: String,
    /// Its pool's id.
    pub pool: Uuid,
    /// Whether the pool takes connections.
    pub pool_up: bool,
    /// The pool's members, sorted by id (the order shares are laid out in).
    pub members: Vec<MemberInfo>,
    /// Session affinity by source address: how long an entry lives after
    /// the client's last new connection, in milliseconds.
    pub affinity_ms: Option<u64>,
}

/// A router's load balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbInfo {
    /// The load balancer's id.
    pub id: Uuid,
    /// Its enabled VIPs.
    pub vips: HashMap<VipKey, VipInfo>,
    /// The member (id) behind each backend address, port and protocol, for
    /// tagging established connections with the member they use.
    pub backends: HashMap<VipKey, Vec<Uuid>>,
}

impl LbInfo {
    /// Whether `address` is the address of one of its VIPs.
    pub fn has_vip_address(&self, address: Ipv4Addr) -> bool {
        self.vips.keys().any(|(vip, _, _)| *vip == address)
    }
}

fn v4(address: IpAddr) -> Option<Ipv4Addr> {
    match address {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

impl Topology {
    /// Indexes load balancers by router; a router with one tracks
    /// connections, and bridges linked to it answer ARP for VIP addresses
    /// inside their subnet with the router port's MAC.
    pub(super) fn index_load_balancers(&mut self, records: &[&Record]) {
        let mut routers: HashMap<Uuid, (Uuid, bool)> = HashMap::new();
        let mut pools = HashMap::new();
        let mut members: HashMap<Uuid, Vec<MemberInfo>> = HashMap::new();
        for record in records {
            match record {
                Record::LoadBalancer(lb) => {
                    routers.insert(lb.id, (lb.router_id, lb.admin_state_up));
                }
                Record::Pool(p) => {
                    pools.insert(p.id, (p.algorithm, p.admin_state_up));
                }
                Record::HealthMonitor(h) if h.admin_state_up => {
                    self.monitors.insert(h.pool_id, h.clone());
                }
                _ => {}
            }
        }
        for record in records {
            let Record::PoolMember(m) = record else {
                continue;
            };
            let (Some(address), Some((algorithm, _))) = (v4(m.address), pools.get(&m.pool_id))
            else {
                continue;
            };
            members.entry(m.pool_id).or_default().push(MemberInfo {
                id: m.id,
                address,
                port: m.port,
                weight: match algorithm {
                    LbAlgorithm::RoundRobin => 1,
                    LbAlgorithm::Weighted => m.weight,
                },
                usable: m.usable(),
                health: m.health,
            });
        }
        for list in members.values_mut() {
            list.sort_by_key(|m| m.id);
        }
        for record in records {
            let Record::Vip(vip) = record else { continue };
            let (Some(&(router, lb_up)), Some(address)) =
                (routers.get(&vip.load_balancer_id), v4(vip.address))
            else {
                continue;
            };
            if !lb_up || !vip.admin_state_up || !self.routers.contains_key(&router) {
                continue;
            }
            let pool_members = members.get(&vip.pool_id).cloned().unwrap_or_default();
            let lb = self.load_balancers.entry(router).or_default();
            lb.id = vip.load_balancer_id;
            let proto = vip.protocol.number();
            for member in &pool_members {
                let backends = lb
                    .backends
                    .entry((member.address, proto, member.port))
                    .or_default();
                if !backends.contains(&member.id) {
                    backends.push(member.id);
                }
            }
            lb.vips.insert(
                (address, proto, vip.port),
                VipInfo {
                    id: vip.id,
                    name: vip.name.clone(),
                    pool: vip.pool_id,
                    pool_up: pools.get(&vip.pool_id).is_some_and(|p| p.1),
                    members: pool_members,
                    affinity_ms: (vip.session_affinity == SessionAffinity::SourceIp)
                        .then_some(u64::from(vip.affinity_timeout_s) * 1000),
                },
            );
        }
        for (lb, (router, up)) in routers {
            if up && self.routers.contains_key(&router) {
                self.load_balancers.entry(router).or_default().id = lb;
                self.stateful.insert(router);
            }
        }
        self.answer_arp_for_vips();
    }

    /// Bridges linked to a router port whose subnet holds a VIP answer ARP
    /// for the VIP with that port's MAC, so on-link clients reach it.
    fn answer_arp_for_vips(&mut self) {
        let mut answers = Vec::new();
        for port in self.ports.values() {
            let (Device::Router(router), Some(net), Some(peer)) =
                (port.device, port.address, port.peer)
            else {
                continue;
            };
            let Some(lb) = self.load_balancers.get(&router) else {
                continue;
            };
            let Some(Device::Bridge(bridge)) = self.ports.get(&peer).map(|p| p.device) else {
                continue;
            };
            for (address, _, _) in lb.vips.keys() {
                if net.contains(address) && *address != net.addr() {
                    answers.push((bridge, *address, port.mac));
                }
            }
        }
        for (bridge, address, mac) in answers {
            if let Some(info) = self.bridges.get_mut(&bridge) {
                info.arp.entry(address).or_insert(mac);
            }
        }
        self.link_balancers();
    }

    /// Each bridge learns the routers linked to it that balance
    /// connections, so it can send them their members' replies.
    fn link_balancers(&mut self) {
        let mut links = Vec::new();
        for port in self.ports.values() {
            let (Device::Router(router), Some(peer)) = (port.device, port.peer) else {
                continue;
            };
            if !self.load_balancers.contains_key(&router) {
                continue;
            }
            if let Some(Device::Bridge(bridge)) = self.ports.get(&peer).map(|p| p.device) {
                links.push((
                    bridge,
                    BalancerLink {
                        bridge_port: peer,
                        router,
                        mac: port.mac,
                    },
                ));
            }
        }
        links.sort_by_key(|(bridge, link)| (*bridge, link.bridge_port));
        for (bridge, link) in links {
            if let Some(info) = self.bridges.get_mut(&bridge) {
                info.balancers.push(link);
            }
        }
    }
}
