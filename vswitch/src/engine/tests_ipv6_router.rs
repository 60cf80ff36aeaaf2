//! IPv6 through the router: dual-stack ports, routing with hop limit,
//! Neighbor Discovery (answers, resolution, learning), Router
//! Advertisements, ICMPv6 errors, and the bridge's NS responder.

use std::net::{IpAddr, Ipv6Addr};

use nsdb::AllowedAddress;

use super::ipv6::{tcp6, v6_frame};
use super::*;
use crate::engine::frames6::upper_checksum_valid;
use crate::wire::{Ipv6Packet, IPV6_HEADER_LEN};

pub(super) const RA: &str = "2001:db8:1::1"; // router port A
pub(super) const RB: &str = "2001:db8:2::1"; // router port B
pub(super) const A1: &str = "2001:db8:1::10";
pub(super) const A2: &str = "2001:db8:1::11";
pub(super) const B1: &str = "2001:db8:2::10";

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The fixture made dual-stack: each router port gets an IPv6 address
/// beside its IPv4 one, pods an IPv6 address beside theirs; then `edit`.
pub(super) fn dual_stack(edit: impl FnOnce(&mut Vec<Record>)) -> Topology {
    let mut recs = records(Vec::new());
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            let (extra, allowed) = match p.id {
                RP_A => (Some(format!("{RA}/64")), None),
                RP_B => (Some(format!("{RB}/64")), None),
                POD_A1 => (None, Some(A1)),
                POD_A2 => (None, Some(A2)),
                POD_B1 => (None, Some(B1)),
                _ => (None, None),
            };
            if let Some(extra) = extra {
                p.extra_addresses.push(extra.parse().unwrap());
            }
            if let Some(ip) = allowed {
                p.allowed_addresses.push(AllowedAddress {
                    mac: p.mac,
                    ip: format!("{ip}/128").parse().unwrap(),
                });
            }
        }
    }
    edit(&mut recs);
    Topology::build(1, &recs)
}

fn route6(
    id: u128,
    dst: &str,
    port: Option<Uuid>,
    gateway: Option<&str>,
    kind: RouteKind,
) -> Route {
    route(id, dst, port, gateway, kind)
}

/// An ICMPv6 echo request with `hop_limit`.
pub(super) fn ping6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    hop_limit: u8,
) -> Vec<u8> {
    let icmp = [128, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut frame = v6_frame(src_mac, dst_mac, src, dst, 58, &icmp);
    Ipv6Packet::new_unchecked(&mut frame[14..]).set_hop_limit(hop_limit);
    frame
}

pub(super) fn udp6(src_mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str) -> Vec<u8> {
    let udp = [0x9c, 0x40, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4];
    v6_frame(src_mac, dst_mac, src, dst, 17, &udp)
}

/// An NDP message from `src` (hop limit 255) to `dst` at `dst_mac`.
pub(super) fn nd(
    src_mac: [u8; 6],
    src: &str,
    dst: (&str, [u8; 6]),
    msg_type: u8,
    body: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![msg_type, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(body);
    let mut frame = v6_frame(src_mac, dst.1, src, dst.0, 58, &icmp);
    Ipv6Packet::new_unchecked(&mut frame[14..]).set_hop_limit(255);
    frame
}

/// A neighbor solicitation for `target` with a source link-layer option.
pub(super) fn solicit(src_mac: [u8; 6], src: &str, target: &str) -> Vec<u8> {
    let group = frames6::solicited_node(&v6(target));
    let mut body = v6(target).octets().to_vec();
    if src != "::" {
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&src_mac);
    }
    nd(
        src_mac,
        src,
        (&group.to_string(), frames6::multicast_mac(&group)),
        135,
        &body,
    )
}

/// The one generated frame, its IPv6 header and its ICMPv6 message.
fn generated(sim: &Simulation) -> (Uuid, PacketInfo, Vec<u8>) {
    assert_eq!(sim.generated.len(), 1, "{:#?}", sim.trace);
    let frame = &sim.generated[0].frame;
    assert!(upper_checksum_valid(frame), "checksum of {frame:02x?}");
    let icmp = frame[14 + IPV6_HEADER_LEN..].to_vec();
    (sim.generated[0].egress.port, parsed(frame), icmp)
}

fn learned6(entries: &[(&str, [u8; 6])]) -> Memory {
    let mut memory = Memory::default();
    for (ip, mac) in entries {
        memory.arp.insert((ROUTER, IpAddr::V6(v6(ip))), *mac);
    }
    memory
}

#[test]
fn the_snapshot_keeps_ipv6_addresses_and_routes_beside_ipv4() {
    let topo = dual_stack(|recs| {
        recs.push(Record::Route(route6(
            0x600,
            "2001:db8:99::/48",
            Some(RP_B),
            Some("2001:db8:2::fe"),
            RouteKind::Normal,
        )));
    });
    let router = &topo.routers[&ROUTER];
    assert_eq!(router.addresses[&"10.0.1.1".parse().unwrap()], RP_A);
    assert_eq!(router.addresses6[&v6(RA)], RP_A);
    assert_eq!(
        router.addresses6[&crate::wire::link_local_from_mac(mac(0xb1))],
        RP_B
    );
    assert_eq!(topo.ports[&RP_A].addresses.len(), 2);
    let route = router
        .routes6
        .lookup(v6(A1), v6("2001:db8:99::5"), 0)
        .unwrap();
    assert_eq!(route.gateway, Some(v6("2001:db8:2::fe")));
    let connected = router.routes6.lookup(v6(A1), v6(B1), 0).unwrap();
    assert_eq!((connected.id, connected.port), (None, Some(RP_B)));
    assert_eq!(router.routes.entries().len(), 2, "IPv4 routes unchanged");
    let bridge = &topo.bridges[&BRIDGE_A];
    assert_eq!(bridge.nd[&v6(RA)], mac(0xa1));
    assert_eq!(bridge.nd[&v6(A2)], mac(2));
}

#[test]
fn the_router_forwards_ipv6_decrementing_the_hop_limit() {
    let topo = dual_stack(|_| ());
    let frame = ping6(mac(1), mac(0xa1), A1, B1, 64);
    let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
    assert_eq!(out_ports(&sim), vec![POD_B1], "{:#?}", sim.trace);
    let rewrite = sim.outputs[0].rewrite;
    assert_eq!(
        (rewrite.eth_src, rewrite.eth_dst, rewrite.ttl_decrement),
        (Some(mac(0xb1)), Some(mac(3)), 1),
        "the pod's MAC is known to the NSDB"
    );
    assert!(sim.is_cacheable());
    let mut out = frame.clone();
    assert!(apply_rewrite(&mut out, &rewrite, false));
    let ip = Ipv6Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(ip.hop_limit(), 63);
    assert_eq!(&out[..6], &mac(3));
}

#[test]
fn dual_stack_ports_still_route_ipv4() {
    let topo = dual_stack(|_| ());
    let frame = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10", 64);
    let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
    assert_eq!(out_ports(&sim), vec![POD_B1], "{:#?}", sim.trace);
}

#[test]
fn the_router_answers_neighbor_solicitations_for_its_addresses() {
    let topo = dual_stack(|_| ());
    // From a pod, the bridge answers for the router (it knows its address)...
    let sim = simulate(&topo, &NothingLearned, POD_A1, &solicit(mac(1), A1, RA));
    let (port, _, icmp) = generated(&sim);
    assert_eq!((port, icmp[0], icmp[4] & 0xe0), (POD_A1, 136, 0xe0));
    // ...and the router itself when the solicitation reaches it (as from
    // behind its port A).
    let sim = simulate(&topo, &NothingLearned, RP_A, &solicit(mac(1), A1, RA));
    let (port, info, icmp) = generated(&sim);
    assert_eq!(port, POD_A1, "back through bridge A to the asker");
    let ip = info.ipv6().unwrap();
    assert_eq!((ip.src, ip.dst, ip.hop_limit), (v6(RA), v6(A1), 255));
    assert_eq!(info.eth_dst, mac(1));
    assert_eq!(icmp[0], 136);
    assert_eq!(icmp[4] & 0xe0, 0xe0, "router, solicited and override flags");
    assert_eq!(&icmp[8..24], &v6(RA).octets());
    assert_eq!(
        &icmp[24..32],
        &[2, 1, 2, 0, 0, 0, 0, 0xa1],
        "target link-layer"
    );
    assert!(
        sim.learned.contains(&Learning::Arp {
            router: ROUTER,
            ip: IpAddr::V6(v6(A1)),
            mac: mac(1)
        }),
        "the solicitation's source link-layer option is learned"
    );

    // The link-local address too; not another router port's address.
    let ll = crate::wire::link_local_from_mac(mac(0xa1)).to_string();
    let sim = simulate(&topo, &NothingLearned, RP_A, &solicit(mac(1), A1, &ll));
    assert_eq!(generated(&sim).2[0], 136);
    let sim = simulate(&topo, &NothingLearned, RP_A, &solicit(mac(1), A1, RB));
    assert!(sim.generated.is_empty());
}

#[test]
fn the_router_answers_router_solicitations_with_its_prefixes() {
    let topo = dual_stack(|_| ());
    let ll = crate::wire::link_local_from_mac(mac(1)).to_string();
    let mut body = vec![1, 1];
    body.extend_from_slice(&mac(1));
    let rs = nd(
        mac(1),
        &ll,
        ("ff02::2", [0x33, 0x33, 0, 0, 0, 2]),
        133,
        &body,
    );
    let sim = simulate(&topo, &NothingLearned, POD_A1, &rs);
    let (_, info, icmp) = generated(&sim);
    let ip = info.ipv6().unwrap();
    assert_eq!(ip.src, crate::wire::link_local_from_mac(mac(0xa1)));
    assert_eq!(ip.dst.to_string(), ll);
    assert_eq!(icmp[0], 134);
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        1_800,
        "router lifetime"
    );
    // Source link-layer option, then the prefix information.
    assert_eq!(&icmp[16..18], &[1, 1]);
    assert_eq!(&icmp[24..28], &[3, 4, 64, 0x80]);
    assert_eq!(&icmp[40..56], &v6("2001:db8:1::").octets());
}

#[test]
fn an_unknown_next_hop_is_solicited_and_the_packet_held() {
    let topo = dual_stack(|recs| {
        recs.push(Record::Route(route6(
            0x601,
            "2001:db8:99::/48",
            Some(RP_B),
            Some("2001:db8:2::fe"),
            RouteKind::Normal,
        )));
    });
    let frame = ping6(mac(1), mac(0xa1), A1, "2001:db8:99::5", 64);
    let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
    let gateway = IpAddr::V6(v6("2001:db8:2::fe"));
    assert_eq!(sim.held_for, Some((ROUTER, gateway)), "{:#?}", sim.trace);
    assert!(sim.tags.contains(&Tag::Arp(ROUTER, gateway)));
    let (_, info, icmp) = generated(&sim);
    let ip = info.ipv6().unwrap();
    assert_eq!(ip.dst, v6("ff02::1:ff00:fe"), "solicited-node multicast");
    assert_eq!(ip.src, v6(RB));
    assert_eq!(info.eth_dst, [0x33, 0x33, 0xff, 0, 0, 0xfe]);
    assert_eq!(
        (icmp[0], &icmp[8..24]),
        (135, &v6("2001:db8:2::fe").octets()[..])
    );
    assert_eq!(&icmp[24..32], &[1, 1, 2, 0, 0, 0, 0, 0xb1]);

    // The advertisement is learned; with it the packet goes on.
    let mut body = v6("2001:db8:2::fe").octets().to_vec();
    body.extend_from_slice(&[2, 1, 2, 0, 0, 0, 0, 0xfe]);
    let mut na = nd(
        [2, 0, 0, 0, 0, 0xfe],
        "2001:db8:2::fe",
        (RB, mac(0xb1)),
        136,
        &body,
    );
    na[14 + IPV6_HEADER_LEN + 4] = 0x60;
    // (As if from behind the router's port B: the gateway has no port.)
    let answer = simulate(&topo, &NothingLearned, RP_B, &na);
    assert!(
        answer.learned.contains(&Learning::Arp {
            router: ROUTER,
            ip: gateway,
            mac: [2, 0, 0, 0, 0, 0xfe],
        }),
        "{:#?}",
        answer.trace
    );
    let memory = learned6(&[("2001:db8:2::fe", [2, 0, 0, 0, 0, 0xfe])]);
    let sim = simulate(&topo, &memory, POD_A1, &frame);
    assert_eq!(out_ports(&sim), vec![POD_B1]);
    assert_eq!(sim.outputs[0].rewrite.eth_dst, Some([2, 0, 0, 0, 0, 0xfe]));
}

#[test]
fn a_neighbor_that_never_answers_is_address_unreachable() {
    let topo = dual_stack(|_| ());
    let mut tables = crate::learned::LearnedTables::default();
    let silent = "2001:db8:2::77";
    tables.arp_gave_up(ROUTER, IpAddr::V6(v6(silent)), 0);
    let sim = simulate(
        &topo,
        &tables,
        POD_A1,
        &ping6(mac(1), mac(0xa1), A1, silent, 64),
    );
    assert_eq!(sim.held_for, None);
    let (_, info, icmp) = generated(&sim);
    assert_eq!((icmp[0], icmp[1]), (1, 3));
    assert_eq!(info.ipv6().unwrap().src, v6(RA));
    assert!(sim.drops.contains(&DropReason::HostUnreachable));
}

#[test]
fn hop_limit_one_gets_time_exceeded_quoting_the_packet() {
    let topo = dual_stack(|_| ());
    let frame = ping6(mac(1), mac(0xa1), A1, B1, 1);
    let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
    assert!(sim.outputs.is_empty());
    assert!(sim.drops.contains(&DropReason::TtlExpired));
    let (port, info, icmp) = generated(&sim);
    assert_eq!(port, POD_A1);
    let ip = info.ipv6().unwrap();
    assert_eq!((ip.src, ip.dst), (v6(RA), v6(A1)));
    assert_eq!((icmp[0], icmp[1]), (3, 0));
    assert_eq!(&icmp[8..], &frame[14..], "the whole invoking packet");
    assert_eq!(
        info.icmp_quoted().map(|k| k.dst),
        Some(IpAddr::V6(v6(B1))),
        "conntrack maps it to the echo's connection"
    );

    // Never an error about an error.
    let mut error = sim.generated[0].frame.clone();
    error[..6].copy_from_slice(&mac(0xa1));
    Ipv6Packet::new_unchecked(&mut error[14..]).set_hop_limit(1);
    let sim = simulate(&topo, &NothingLearned, POD_A1, &error);
    assert!(sim.generated.is_empty(), "{:#?}", sim.trace);
}

#[test]
fn an_icmpv6_error_is_cut_to_the_minimum_mtu() {
    let topo = dual_stack(|_| ());
    let mut payload = vec![0u8; 1400];
    payload[..6].copy_from_slice(&[0x9c, 0x40, 0, 53, 0x05, 0x78]);
    let mut frame = v6_frame(mac(1), mac(0xa1), A1, B1, 17, &payload);
    Ipv6Packet::new_unchecked(&mut frame[14..]).set_hop_limit(1);
    let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
    let error = &sim.generated[0].frame;
    assert_eq!(error.len() - 14, frames6::MIN_MTU);
    assert!(upper_checksum_valid(error));
}

#[test]
fn no_route_reject_and_blackhole() {
    let topo = dual_stack(|recs| {
        recs.push(Record::Route(route6(
            0x602,
            "2001:db8:66::/48",
            None,
            None,
            RouteKind::Reject,
        )));
        recs.push(Record::Route(route6(
            0x603,
            "2001:db8:77::/48",
            None,
            None,
            RouteKind::Blackhole,
        )));
    });
    let to = |dst: &str| {
        simulate(
            &topo,
            &NothingLearned,
            POD_A1,
            &ping6(mac(1), mac(0xa1), A1, dst, 64),
        )
    };
    let none = to("2001:db8:55::1");
    assert_eq!(generated(&none).2[..2], [1, 0]);
    assert!(none.drops.contains(&DropReason::NoRoute));
    let rejected = to("2001:db8:66::1");
    assert_eq!(generated(&rejected).2[..2], [1, 1]);
    let blackholed = to("2001:db8:77::1");
    assert!(blackholed.generated.is_empty());
    assert!(blackholed.drops.contains(&DropReason::Blackhole));
}

#[test]
fn the_routers_own_addresses_answer_echo_and_refuse_udp_and_tcp() {
    let topo = dual_stack(|_| ());
    let echo = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping6(mac(1), mac(0xa1), A1, RB, 64),
    );
    let (_, info, icmp) = generated(&echo);
    assert_eq!(icmp[0], 129);
    assert_eq!(info.ipv6().unwrap().src, v6(RB));
    let udp = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &udp6(mac(1), mac(0xa1), A1, RA),
    );
    assert_eq!(generated(&udp).2[..2], [1, 4], "port unreachable");
    let tcp = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &tcp6(mac(1), mac(0xa1), A1, 40000, RA, 22, 0x02),
    );
    let (_, info, _) = generated(&tcp);
    assert_eq!(info.tcp_flags() & 0x04, 0x04, "a reset");
}

#[test]
fn the_bridge_answers_solicitations_for_addresses_the_nsdb_knows() {
    let topo = dual_stack(|_| ());
    let sim = simulate(&topo, &NothingLearned, POD_A1, &solicit(mac(1), A1, A2));
    let (port, info, icmp) = generated(&sim);
    assert_eq!(port, POD_A1);
    assert!(sim.outputs.is_empty(), "answered, not flooded");
    assert_eq!(info.ipv6().unwrap().src, v6(A2));
    assert_eq!(icmp[4] & 0xe0, 0x60, "solicited and override, not a router");
    assert_eq!(&icmp[24..32], &[2, 1, 2, 0, 0, 0, 0, 2]);
    // Duplicate address detection is not answered: it floods.
    let dad = simulate(&topo, &NothingLearned, POD_A1, &solicit(mac(1), "::", A1));
    assert!(dad.generated.is_empty());
}

#[test]
fn link_local_traffic_is_not_routed() {
    let topo = dual_stack(|_| ());
    let ll = crate::wire::link_local_from_mac(mac(1)).to_string();
    let sim = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping6(mac(1), mac(0xa1), &ll, B1, 64),
    );
    assert!(sim.outputs.is_empty() && sim.generated.is_empty());
}
