//! The router: ARP and ICMP echo for its own addresses, route lookup,
//! next-hop resolution, TTL handling and ICMP errors (IPv6 in
//! [`super::router6`]).

use crate::engine::Stage;
use std::net::{IpAddr, Ipv4Addr};

use nsdb::RouteKind;
use uuid::Uuid;

use super::bridge::fmt_mac;
use super::packet::{ArpOp, IcmpKind, PacketInfo, L3};
use super::rewrite::EntryFrame;
use super::{frames, Decision, DropReason, Learned, Learning, Rewrite, Tag, Walk, PROBE_PORTS};
use crate::snapshot::{Device, PortInfo};

const BROADCAST: [u8; 6] = [0xff; 6];

/// Decides what `router` does with `packet` (which arrived as `frame`)
/// arriving on `port`.
pub(crate) fn process<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
    frame: &EntryFrame,
) -> Decision {
    let device = Some(Device::Router(router));
    let Some(info) = walk.topo.routers.get(&router) else {
        return Decision::Drop(DropReason::UnknownPort);
    };
    if !info.admin_up {
        return Decision::Drop(DropReason::AdminDown);
    }
    if let L3::Ipv6(ip) = &packet.l3 {
        return super::router6::process(walk, router, port, packet, ip, frame);
    }
    if port.address.is_none() {
        return Decision::Drop(DropReason::Unsupported(
            "router port without an IPv4 address",
        ));
    }
    if packet.eth_dst != port.mac && packet.eth_dst != BROADCAST {
        return Decision::Drop(DropReason::NotForRouter);
    }
    let ip = match &packet.l3 {
        L3::Arp(arp) => {
            let own = port
                .ipv4_addresses()
                .find(|a| a.addr() == arp.target_ip)
                .map(|a| a.addr());
            if arp.op == ArpOp::Reply || own.is_some() {
                // Whoever talks ARP to us tells us its MAC.
                let sender = IpAddr::V4(arp.sender_ip);
                if port.ipv4_addresses().any(|a| a.contains(&arp.sender_ip))
                    && walk.learned.arp(router, sender) != Some(arp.sender_mac)
                {
                    walk.sim.learned.push(Learning::Arp {
                        router,
                        ip: sender,
                        mac: arp.sender_mac,
                    });
                    walk.sim.step(
                        device,
                        Some(port.id),
                        Stage::ArpLearn,
                        format_args!("{} is-at {}", arp.sender_ip, fmt_mac(&arp.sender_mac)),
                    );
                }
            }
            if let (ArpOp::Request, Some(own)) = (arp.op, own) {
                walk.sim.step(
                    device,
                    Some(port.id),
                    Stage::ArpReply,
                    format_args!("{own} is-at {}", fmt_mac(&port.mac)),
                );
                return Decision::Emit(
                    port.id,
                    frames::arp_reply(port.mac, own, arp.sender_mac, arp.sender_ip),
                );
            }
            return Decision::Drop(DropReason::Unsupported("ARP not for this router"));
        }
        L3::Ipv4(ip) => *ip,
        L3::Ipv6(_) | L3::Other(_) => {
            return Decision::Drop(DropReason::Unsupported("not IP or ARP"))
        }
    };
    if packet.eth_dst == BROADCAST {
        return Decision::Drop(DropReason::NotForRouter);
    }
    if !ip.checksum_valid {
        return Decision::Drop(DropReason::Malformed(crate::wire::WireError::BadChecksum));
    }

    // Addressed to the router itself.
    if let Some(own) = info.addresses.get(&ip.dst) {
        return match ip.icmp {
            Some((IcmpKind::EchoRequest, _)) => {
                walk.sim.step(
                    device,
                    Some(*own),
                    Stage::IcmpEcho,
                    format_args!("{} answers echo from {}", ip.dst, ip.src),
                );
                match frames::icmp_echo_reply(&frame.current(), port.mac, packet.eth_src) {
                    Some(reply) => Decision::Emit(port.id, reply),
                    None => Decision::Drop(DropReason::Unsupported(
                        "echo request that cannot be answered",
                    )),
                }
            }
            Some(_) => Decision::Drop(DropReason::Unsupported(
                "only ICMP echo is answered by a router",
            )),
            None => closed_port(walk, router, port, packet, frame),
        };
    }

    if ip.ttl <= 1 {
        walk.sim.step(
            device,
            Some(port.id),
            Stage::Ttl,
            format_args!("TTL {} expires here", ip.ttl),
        );
        return icmp_error(
            walk,
            router,
            port,
            packet,
            frame,
            frames::IcmpError::TimeExceeded,
            DropReason::TtlExpired,
        );
    }

    let Some(route) = info.routes.lookup(ip.src, ip.dst, packet.flow_hash()) else {
        walk.sim.step(
            device,
            Some(port.id),
            Stage::Route,
            format_args!("no route to {}", ip.dst),
        );
        return icmp_error(
            walk,
            router,
            port,
            packet,
            frame,
            frames::IcmpError::NetUnreachable,
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
            return icmp_error(
                walk,
                router,
                port,
                packet,
                frame,
                frames::IcmpError::AdminProhibited,
                DropReason::Rejected,
            );
        }
        RouteKind::Normal => {}
    }
    let Some(out) = route.port.and_then(|p| walk.topo.ports.get(&p)) else {
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
        if walk.learned.arp_failed(router, IpAddr::V4(next_hop)) {
            walk.sim.step(
                device,
                Some(out.id),
                Stage::ArpResolve,
                format_args!("{next_hop} did not answer ARP: host unreachable"),
            );
            return icmp_error(
                walk,
                router,
                port,
                packet,
                frame,
                frames::IcmpError::HostUnreachable,
                DropReason::HostUnreachable,
            );
        }
        walk.sim.held_for = Some((router, IpAddr::V4(next_hop)));
        walk.sim.step(
            device,
            Some(out.id),
            Stage::ArpResolve,
            format_args!("who-has {next_hop}: holding the packet"),
        );
        let Some(src) = out
            .ipv4_addresses()
            .find(|a| a.contains(&next_hop))
            .or(out.address)
        else {
            return Decision::Drop(DropReason::ArpPending);
        };
        return Decision::Emit(out.id, frames::arp_request(out.mac, src.addr(), next_hop));
    };
    forward_to(walk, device, out, next_mac, "ttl", ip.ttl)
}

/// Forwards out of `out` to `next_mac`, the source MAC rewritten to the
/// port's and the TTL (IPv4) or hop limit (IPv6) — `limit`, named
/// `limit_name` in the trace — decremented.
pub(super) fn forward_to<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    device: Option<Device>,
    out: &PortInfo,
    next_mac: [u8; 6],
    limit_name: &str,
    limit: u8,
) -> Decision {
    let rewrite = Rewrite {
        eth_src: Some(out.mac),
        eth_dst: Some(next_mac),
        ttl_decrement: 1,
        ..Rewrite::default()
    };
    walk.sim.step(
        device,
        Some(out.id),
        Stage::Rewrite,
        format_args!(
            "eth.src={} eth.dst={} {limit_name} {}→{}",
            fmt_mac(&out.mac),
            fmt_mac(&next_mac),
            limit,
            limit - 1
        ),
    );
    Decision::Forward(vec![(out.id, rewrite)])
}

/// The MAC of `ip` behind `out`: known to the NSDB through the peer bridge,
/// the peer router port itself, or learned by ARP.
fn resolve<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    out: &PortInfo,
    ip: Ipv4Addr,
) -> Option<[u8; 6]> {
    if let Some(peer) = out.peer.and_then(|p| walk.topo.ports.get(&p)) {
        match peer.device {
            Device::Bridge(bridge) => {
                if let Some(mac) = walk.topo.bridges.get(&bridge).and_then(|b| b.arp.get(&ip)) {
                    return Some(*mac);
                }
            }
            Device::Router(_) => {
                if peer.ipv4_addresses().any(|a| a.addr() == ip) {
                    return Some(peer.mac);
                }
            }
        }
    }
    walk.sim.tag(Tag::Arp(router, IpAddr::V4(ip)));
    walk.learned.arp(router, IpAddr::V4(ip))
}

/// A packet for the router's own address that is not ICMP: nothing listens
/// on a router, so TCP gets a reset and UDP (and any other protocol) an
/// ICMP port (protocol) unreachable from that address, as from a host.
fn closed_port<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
    frame: &EntryFrame,
) -> Decision {
    let Some(ip) = packet.ipv4() else {
        return Decision::Drop(DropReason::Unsupported("not IPv4"));
    };
    let device = Some(Device::Router(router));
    let to_probe = ip.proto == 6
        && ip
            .ports
            .is_some_and(|(_, dport)| PROBE_PORTS.contains(&dport));
    if to_probe {
        walk.sim.step(
            device,
            Some(port.id),
            Stage::Local,
            format_args!("{}: a reply to the local agent's health probe", ip.dst),
        );
        return Decision::Local(frame.current().into_owned());
    }
    let answer = match ip.proto {
        6 | 17 => frames::reject(packet, &frame.current(), ip.dst),
        _ => frames::icmp_error(
            frames::IcmpError::ProtocolUnreachable,
            &frame.current(),
            ip.dst,
            port.mac,
            packet.eth_src,
        ),
    };
    let what = match ip.proto {
        6 => "TCP RST",
        17 => "ICMP port unreachable",
        _ => "ICMP protocol unreachable",
    };
    match answer {
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

/// Answers the sender with an ICMP error from the ingress port's address.
fn icmp_error<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    router: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
    frame: &EntryFrame,
    kind: frames::IcmpError,
    reason: DropReason,
) -> Decision {
    walk.sim.drops.push(reason);
    let Some(addr) = port.address else {
        return Decision::Drop(reason);
    };
    // Never answer an ICMP error with an ICMP error (RFC 1122 3.2.2).
    if let L3::Ipv4(ip) = &packet.l3 {
        if matches!(ip.icmp, Some((IcmpKind::Error, _))) {
            return Decision::Drop(reason);
        }
    }
    match frames::icmp_error(
        kind,
        &frame.current(),
        addr.addr(),
        port.mac,
        packet.eth_src,
    ) {
        Some(error) => {
            walk.sim.step(
                Some(Device::Router(router)),
                Some(port.id),
                Stage::IcmpError,
                format_args!("{kind:?} to the sender"),
            );
            Decision::Emit(port.id, error)
        }
        None => Decision::Drop(reason),
    }
}
