//! The router for IPv6: Neighbor Discovery for its own addresses (NS → NA,
//! RS → RA), ICMPv6 echo, route lookup, next-hop resolution by Neighbor
//! Solicitation (the packet is held meanwhile, as for ARP), hop limit and
//! ICMPv6 errors. Routers never fragment IPv6: packet-too-big comes from
//! where the MTU is known (the tunnel, in the datapath core).

use crate::engine::Stage;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::Ipv6Net;
use nsdb::RouteKind;
use uuid::Uuid;

use super::bridge::fmt_mac;
use super::frames6::{self, Icmp6Error, ALL_NODES, ND_HOP_LIMIT};
use super::packet::{IcmpKind, Ipv6Info, NdInfo, PacketInfo};
use super::rewrite::EntryFrame;
use super::{Decision, DropReason, Learned, Learning, Tag, Walk};
use crate::snapshot::{Device, PortInfo};

const ROUTER_SOLICIT: u8 = 133;
const NEIGHBOR_SOLICIT: u8 = 135;
const NEIGHBOR_ADVERT: u8 = 136;

fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Decides what `router` does with the IPv6 `packet` (`ip`, arrived as
/// `frame`) on `port`.
pub(crate) fn process<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
    ip: &Ipv6Info,
    frame: &EntryFrame,
) -> Decision {
    let device = Some(Device::Router(router));
    let multicast = packet.eth_dst[..2] == [0x33, 0x33];
    if packet.eth_dst != port.mac && !multicast {
        return Decision::Drop(DropReason::NotForRouter);
    }
    if let Some(nd) = ip.nd {
        return neighbor_discovery(walk, router, port, packet, ip, &nd);
    }
    if multicast || ip.dst.is_multicast() {
        return Decision::Drop(DropReason::NotForRouter);
    }
    let own = walk
        .topo
        .routers
        .get(&router)
        .is_some_and(|r| r.addresses6.contains_key(&ip.dst));
    if own && (!is_link_local(&ip.dst) || port.owns6(&ip.dst)) {
        return local(walk, router, port, packet, ip, frame);
    }
    if is_link_local(&ip.dst) || is_link_local(&ip.src) {
        walk.sim.step(
            device,
            Some(port.id),
            Stage::Route,
            format_args!("{} → {}: link-local scope is not forwarded", ip.src, ip.dst),
        );
        return Decision::Drop(DropReason::Unsupported("link-local IPv6 is not routed"));
    }
    if ip.hop_limit <= 1 {
        walk.sim.step(
            device,
            Some(port.id),
            Stage::Ttl,
            format_args!("hop limit {} expires here", ip.hop_limit),
        );
        return error(
            walk,
            router,
            port,
            packet,
            frame,
            Icmp6Error::TimeExceeded,
            DropReason::TtlExpired,
        );
    }
    forward(walk, router, port, packet, ip, frame)
}

/// Route lookup, next-hop resolution and rewrite.
fn forward<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
    ip: &Ipv6Info,
    frame: &EntryFrame,
) -> Decision {
    let device = Some(Device::Router(router));
    let topo = walk.topo;
    let Some(info) = topo.routers.get(&router) else {
        return Decision::Drop(DropReason::UnknownPort);
    };
    let Some(route) = info.routes6.lookup(ip.src, ip.dst, packet.flow_hash()) else {
        walk.sim.step(
            device,
            Some(port.id),
            Stage::Route,
            format_args!("no route to {}", ip.dst),
        );
        return error(
            walk,
            router,
            port,
            packet,
            frame,
            Icmp6Error::NoRoute,
            DropReason::NoRoute,
        );
    };
    if let Some(id) = route.id {
        walk.sim.tag(Tag::Route(id));
    }
    let route_name = super::RouteName(route.id, route.dst);
    match route.kind {
        RouteKind::Blackhole => {
            walk.sim.step(
                device,
                Some(port.id),
                Stage::Route,
                format_args!("{route_name} blackhole"),
            );
            return Decision::Drop(DropReason::Blackhole);
        }
        RouteKind::Reject => {
            walk.sim.step(
                device,
                Some(port.id),
                Stage::Route,
                format_args!("{route_name} reject"),
            );
            return error(
                walk,
                router,
                port,
                packet,
                frame,
                Icmp6Error::AdminProhibited,
                DropReason::Rejected,
            );
        }
        RouteKind::Normal => {}
    }
    let Some(out) = route.port.and_then(|p| topo.ports.get(&p)) else {
        return Decision::Drop(DropReason::DanglingLink);
    };
    let next_hop = route.gateway.unwrap_or(ip.dst);
    walk.sim.step(
        device,
        Some(port.id),
        Stage::Route,
        format_args!("{route_name} port {} next hop {next_hop}", out.id),
    );
    let Some(next_mac) = resolve(walk, router, out, next_hop) else {
        if walk.learned.arp_failed(router, IpAddr::V6(next_hop)) {
            walk.sim.step(
                device,
                Some(out.id),
                Stage::NdResolve,
                format_args!(
                    "{next_hop} did not answer neighbor solicitation: address unreachable"
                ),
            );
            return error(
                walk,
                router,
                port,
                packet,
                frame,
                Icmp6Error::AddressUnreachable,
                DropReason::HostUnreachable,
            );
        }
        walk.sim.held_for = Some((router, IpAddr::V6(next_hop)));
        walk.sim.step(
            device,
            Some(out.id),
            Stage::NdResolve,
            format_args!("neighbor solicitation for {next_hop}: holding the packet"),
        );
        let source = out.ipv6_source_for(&next_hop);
        return match frames6::neighbor_solicit(out.mac, source, next_hop) {
            Some(solicit) => Decision::Emit(out.id, solicit),
            None => Decision::Drop(DropReason::ArpPending),
        };
    };
    super::router::forward_to(walk, device, out, next_mac, "hop limit", ip.hop_limit)
}

/// The MAC of `ip` behind `out`: known to the NSDB through the peer bridge,
/// the peer router port itself, or learned by Neighbor Discovery.
fn resolve<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    out: &PortInfo,
    ip: Ipv6Addr,
) -> Option<[u8; 6]> {
    if let Some(peer) = out.peer.and_then(|p| walk.topo.ports.get(&p)) {
        match peer.device {
            Device::Bridge(bridge) => {
                if let Some(mac) = walk.topo.bridges.get(&bridge).and_then(|b| b.nd.get(&ip)) {
                    return Some(*mac);
                }
            }
            Device::Router(_) => {
                if peer.owns6(&ip) {
                    return Some(peer.mac);
                }
            }
        }
    }
    walk.sim.tag(Tag::Arp(router, IpAddr::V6(ip)));
    walk.learned.arp(router, IpAddr::V6(ip))
}

/// Records that `ip` is at `mac` on `port` when the address belongs on the
/// port's link and is news.
fn learn<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    ip: Ipv6Addr,
    mac: [u8; 6],
) {
    let on_link = is_link_local(&ip) || port.ipv6_addresses().any(|a| a.contains(&ip));
    if !on_link || port.owns6(&ip) || mac[0] & 1 != 0 {
        return;
    }
    if walk.learned.arp(router, IpAddr::V6(ip)) == Some(mac) {
        return;
    }
    walk.sim.learned.push(Learning::Arp {
        router,
        ip: IpAddr::V6(ip),
        mac,
    });
    walk.sim.step(
        Some(Device::Router(router)),
        Some(port.id),
        Stage::NdLearn,
        format_args!("{ip} is-at {}", fmt_mac(&mac)),
    );
}

/// Neighbor and router solicitations to the router, and advertisements
/// from its neighbours (RFC 4861).
fn neighbor_discovery<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
    ip: &Ipv6Info,
    nd: &NdInfo,
) -> Decision {
    let device = Some(Device::Router(router));
    if ip.hop_limit != ND_HOP_LIMIT {
        return Decision::Drop(DropReason::Unsupported(
            "neighbor discovery with a hop limit below 255",
        ));
    }
    let from = (!ip.src.is_unspecified()).then_some(ip.src);
    match nd.msg_type {
        NEIGHBOR_SOLICIT => {
            let Some(target) = nd.target.filter(|t| port.owns6(t)) else {
                return Decision::Drop(DropReason::NotForRouter);
            };
            if let (Some(src), Some(mac)) = (from, nd.link_addr) {
                learn(walk, router, port, src, mac);
            }
            let to = match from {
                Some(src) => (packet.eth_src, src),
                None => (frames6::multicast_mac(&ALL_NODES), ALL_NODES),
            };
            walk.sim.step(
                device,
                Some(port.id),
                Stage::NdAdvert,
                format_args!("{target} is-at {}", fmt_mac(&port.mac)),
            );
            match frames6::neighbor_advert(port.mac, target, to, true, from.is_some()) {
                Some(advert) => Decision::Emit(port.id, advert),
                None => Decision::Drop(DropReason::Unsupported("unanswerable solicitation")),
            }
        }
        NEIGHBOR_ADVERT => {
            if let Some(target) = nd.target {
                learn(
                    walk,
                    router,
                    port,
                    target,
                    nd.link_addr.unwrap_or(packet.eth_src),
                );
            }
            Decision::Drop(DropReason::Unsupported("neighbor advertisement (learned)"))
        }
        ROUTER_SOLICIT => {
            if let (Some(src), Some(mac)) = (from, nd.link_addr) {
                learn(walk, router, port, src, mac);
            }
            let to = match from {
                Some(src) => (packet.eth_src, src),
                None => (frames6::multicast_mac(&ALL_NODES), ALL_NODES),
            };
            let prefixes: Vec<Ipv6Net> = port.ipv6_addresses().map(|a| a.trunc()).collect();
            walk.sim.step(
                device,
                Some(port.id),
                Stage::RouterAdvert,
                format_args!(
                    "router advertisement from {} to {}, prefixes {prefixes:?}",
                    port.link_local(),
                    to.1
                ),
            );
            match frames6::router_advert(port.mac, port.link_local(), to, &prefixes) {
                Some(advert) => Decision::Emit(port.id, advert),
                None => Decision::Drop(DropReason::Unsupported("unanswerable solicitation")),
            }
        }
        _ => Decision::Drop(DropReason::Unsupported(
            "neighbor discovery message a router ignores",
        )),
    }
}

/// A packet to one of the router's own addresses: echo is answered, TCP
/// reset, anything else answered port unreachable.
fn local<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
    ip: &Ipv6Info,
    frame: &EntryFrame,
) -> Decision {
    let device = Some(Device::Router(router));
    match ip.icmp {
        Some((IcmpKind::EchoRequest, _)) => {
            walk.sim.step(
                device,
                Some(port.id),
                Stage::IcmpEcho,
                format_args!("{} answers echo from {}", ip.dst, ip.src),
            );
            match frames6::echo_reply(&frame.current(), port.mac, packet.eth_src) {
                Some(reply) => Decision::Emit(port.id, reply),
                None => Decision::Drop(DropReason::Unsupported(
                    "echo request that cannot be answered",
                )),
            }
        }
        Some(_) => Decision::Drop(DropReason::Unsupported(
            "only ICMPv6 echo is answered by a router",
        )),
        None => {
            let what = if ip.proto == 6 {
                "TCP RST"
            } else {
                "ICMPv6 port unreachable"
            };
            match frames6::reject(
                packet,
                &frame.current(),
                ip.dst,
                Icmp6Error::PortUnreachable,
            ) {
                Some(answer) => {
                    walk.sim.drops.push(DropReason::ClosedPort);
                    walk.sim.step(
                        device,
                        Some(port.id),
                        Stage::Local,
                        format_args!("nothing listens on {}: {what} to the sender", ip.dst),
                    );
                    Decision::Emit(port.id, answer)
                }
                None => Decision::Drop(DropReason::ClosedPort),
            }
        }
    }
}

/// Answers the sender with an ICMPv6 error from the ingress port (never
/// about an ICMPv6 error, nor to a multicast or unspecified source).
fn error<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
    frame: &EntryFrame,
    kind: Icmp6Error,
    reason: DropReason,
) -> Decision {
    walk.sim.drops.push(reason);
    let Some(ip) = packet.ipv6() else {
        return Decision::Drop(reason);
    };
    let source = port.ipv6_source_for(&ip.src);
    match frames6::error(kind, &frame.current(), source, port.mac, packet.eth_src) {
        Some(error) => {
            walk.sim.step(
                Some(Device::Router(router)),
                Some(port.id),
                Stage::IcmpError,
                format_args!("ICMPv6 {kind:?} from {source} to the sender"),
            );
            Decision::Emit(port.id, error)
        }
        None => Decision::Drop(reason),
    }
}
