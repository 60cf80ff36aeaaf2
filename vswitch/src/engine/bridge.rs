//! The bridge: L2 forwarding by destination MAC, learning, flooding, and ARP
//! suppression for addresses the NSDB knows.

use crate::engine::Stage;
use uuid::Uuid;

use super::packet::{ArpOp, PacketInfo, L3};
use super::{frames, frames6, Decision, DropReason, Learned, Learning, Rewrite, Tag, Walk};
use crate::conntrack::Direction;
use crate::snapshot::{BalancerLink, Device, PortInfo};

fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 0x01 != 0
}

/// Decides what `bridge` does with `packet` arriving on `port`.
pub(crate) fn process<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    bridge: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
) -> Decision {
    let device = Some(Device::Bridge(bridge));
    let Some(info) = walk.topo.bridges.get(&bridge) else {
        return Decision::Drop(DropReason::UnknownPort);
    };
    if !info.admin_up {
        return Decision::Drop(DropReason::AdminDown);
    }

    // Learn the source, unless the NSDB already places that MAC elsewhere.
    // A flow from a learned MAC carries its tag: using the flow is seeing
    // the MAC again, which keeps the entry from ageing out.
    let src = packet.eth_src;
    let learnable = !is_group(&src) && !info.static_macs.contains_key(&src);
    if learnable {
        walk.sim.tag(Tag::Mac(bridge, src));
    }
    if learnable && walk.learned.mac_port(bridge, src) != Some(port.id) {
        walk.sim.learned.push(Learning::Mac {
            bridge,
            mac: src,
            port: port.id,
        });
        walk.sim.step(
            device,
            Some(port.id),
            Stage::Learn,
            format_args!("{} is behind port {}", fmt_mac(&src), port.id),
        );
    }

    // ARP suppression: answer for addresses the NSDB knows.
    if let L3::Arp(arp) = &packet.l3 {
        if arp.op == ArpOp::Request && arp.target_ip != arp.sender_ip {
            if let Some(mac) = info.arp.get(&arp.target_ip) {
                walk.sim.step(
                    device,
                    Some(port.id),
                    Stage::ArpSuppression,
                    format_args!(
                        "{} is-at {} (known to the NSDB), answered by the bridge",
                        arp.target_ip,
                        fmt_mac(mac)
                    ),
                );
                return Decision::Emit(
                    port.id,
                    frames::arp_reply(*mac, arp.target_ip, arp.sender_mac, arp.sender_ip),
                );
            }
        }
    }

    if let Some(decision) = neighbor_suppression(walk, bridge, port, packet) {
        return decision;
    }

    if let Some(decision) = reply_to_balancer(walk, bridge, &info.balancers, port, packet) {
        return decision;
    }

    let dst = packet.eth_dst;
    if is_group(&dst) {
        walk.sim.step(
            device,
            Some(port.id),
            Stage::L2Lookup,
            format_args!("{} is a group address: flood", fmt_mac(&dst)),
        );
        return flood(walk, bridge, port.id);
    }
    let (out, how) = match info.static_macs.get(&dst) {
        Some(out) => (Some(*out), "known to the NSDB"),
        None => {
            walk.sim.tag(Tag::Mac(bridge, dst));
            (walk.learned.mac_port(bridge, dst), "learned")
        }
    };
    match out {
        Some(out) if out == port.id => Decision::Drop(DropReason::Hairpin),
        Some(out) => {
            walk.sim.step(
                device,
                Some(port.id),
                Stage::L2Lookup,
                format_args!("{} → port {out} ({how})", fmt_mac(&dst)),
            );
            Decision::Forward(vec![(out, Rewrite::default())])
        }
        None => {
            walk.sim.step(
                device,
                Some(port.id),
                Stage::L2Lookup,
                format_args!("{} unknown: flood", fmt_mac(&dst)),
            );
            flood(walk, bridge, port.id)
        }
    }
}

/// The IPv6 twin of ARP suppression: a Neighbor Solicitation for an
/// address the NSDB knows is answered by the bridge. Duplicate address
/// detection (an unspecified source) and a host asking about its own
/// address go on unanswered.
fn neighbor_suppression<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    bridge: Uuid,
    port: &PortInfo,
    packet: &PacketInfo,
) -> Option<Decision> {
    let ip = packet.ipv6()?;
    let nd = ip.nd?;
    if nd.msg_type != 135 || ip.hop_limit != 255 || ip.src.is_unspecified() {
        return None;
    }
    let target = nd.target?;
    let info = walk.topo.bridges.get(&bridge)?;
    let mac = *info.nd.get(&target)?;
    if mac == packet.eth_src {
        return None;
    }
    let router = info
        .static_macs
        .get(&mac)
        .and_then(|p| walk.topo.ports.get(p))
        .is_some_and(|p| p.peer.is_some());
    let answer = frames6::neighbor_advert(mac, target, (packet.eth_src, ip.src), router, true)?;
    walk.sim.step(
        Some(Device::Bridge(bridge)),
        Some(port.id),
        Stage::NdSuppression,
        format_args!(
            "{target} is-at {} (known to the NSDB), answered by the bridge",
            fmt_mac(&mac)
        ),
    );
    Some(Decision::Emit(port.id, answer))
}

/// A member's reply to a client its router balanced to it (the
/// connection's destination translated there) goes to that router, not
/// straight to the client on this bridge: the router translates it back to
/// the VIP. So a client and a member on one bridge need no source NAT, and
/// the member sees the client's own address.
fn reply_to_balancer<L: Learned + ?Sized>(
    walk: &mut Walk<'_, L>,
    bridge: Uuid,
    balancers: &[BalancerLink],
    port: &PortInfo,
    packet: &PacketInfo,
) -> Option<Decision> {
    if balancers.is_empty() || is_group(&packet.eth_dst) {
        return None;
    }
    let key = packet.conn_key()?;
    for link in balancers.iter().filter(|l| l.bridge_port != port.id) {
        walk.sim.tag(Tag::Conn(link.router, key));
        let Some((Direction::Reply, entry)) = walk.learned.conn(link.router, &key) else {
            continue;
        };
        if (entry.orig.dst, entry.orig.dport) == (entry.reply.src, entry.reply.sport) {
            continue; // not balanced: the router forwards it untranslated
        }
        walk.sim.step(
            Some(Device::Bridge(bridge)),
            Some(port.id),
            Stage::L2Lookup,
            format_args!(
                "reply of {} balanced by router {}: to the router (port {})",
                entry.orig, link.router, link.bridge_port
            ),
        );
        let rewrite = Rewrite {
            eth_dst: Some(link.mac),
            ..Rewrite::default()
        };
        return Some(Decision::Forward(vec![(link.bridge_port, rewrite)]));
    }
    None
}

fn flood<L: Learned + ?Sized>(walk: &mut Walk<'_, L>, bridge: Uuid, ingress: Uuid) -> Decision {
    let Some(info) = walk.topo.bridges.get(&bridge) else {
        return Decision::Drop(DropReason::UnknownPort);
    };
    let ports: Vec<(Uuid, Rewrite)> = info
        .ports
        .iter()
        .filter(|p| **p != ingress)
        .map(|p| (*p, Rewrite::default()))
        .collect();
    if ports.is_empty() {
        Decision::Drop(DropReason::NoPorts)
    } else {
        Decision::Forward(ports)
    }
}

/// Formats a MAC the usual way.
pub(crate) fn fmt_mac(mac: &[u8; 6]) -> String {
    nsdb::MacAddr(*mac).to_string()
}
