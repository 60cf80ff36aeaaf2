//! What a router answers when it cannot deliver: host unreachable for a
//! next hop that never answered ARP, and a reset or port unreachable for
//! TCP and UDP to its own addresses.

use super::*;
use crate::learned::LearnedTables;
use crate::probe::{Probe, ProbeProtocol};
use crate::wire::{Icmpv4Packet, Ipv4Packet, TcpFlags, TcpPacket};

fn probe(protocol: ProbeProtocol, dst: &str, dport: u16) -> Vec<u8> {
    Probe {
        src_mac: mac(1),
        dst_mac: mac(0xa1),
        src_ip: "10.0.1.10".parse().unwrap(),
        dst_ip: dst.parse().unwrap(),
        protocol,
        src_port: 40000,
        dst_port: dport,
        ttl: 64,
    }
    .frame()
    .unwrap()
}

/// The one frame generated back to POD_A1, as (source IP, IPv4 payload).
fn answer(sim: &Simulation) -> (Ipv4Addr, Vec<u8>) {
    assert!(sim.outputs.is_empty(), "{:#?}", sim.trace);
    let [generated] = &sim.generated[..] else {
        panic!("one answer expected: {:#?}", sim.trace);
    };
    assert_eq!(generated.egress.port, POD_A1);
    let ip = Ipv4Packet::new_checked(&generated.frame[14..]).unwrap();
    assert_eq!(ip.dst_addr(), "10.0.1.10".parse::<Ipv4Addr>().unwrap());
    (ip.src_addr(), ip.payload().to_vec())
}

#[test]
fn a_next_hop_that_never_answered_arp_is_host_unreachable() {
    let topo = open_topology();
    let mut tables = LearnedTables::default();
    let frame = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10", 64);
    let b1: std::net::IpAddr = "10.0.2.10".parse().unwrap();
    // First the router resolves and holds the packet.
    let held = simulate(&topo, &tables, POD_A1, &frame);
    assert_eq!(held.held_for, Some((ROUTER, b1)), "{:#?}", held.trace);
    // The hold timed out: the same packet now gets host unreachable.
    tables.arp_gave_up(ROUTER, b1, 0);
    let failed = simulate(&topo, &tables, POD_A1, &frame);
    assert_eq!(failed.held_for, None);
    assert!(failed.drops.contains(&DropReason::HostUnreachable));
    let (src, icmp) = answer(&failed);
    assert_eq!(
        src,
        "10.0.1.1".parse::<Ipv4Addr>().unwrap(),
        "from the ingress port"
    );
    let icmp = Icmpv4Packet::new_checked(&icmp[..]).unwrap();
    assert_eq!((u8::from(icmp.msg_type()), icmp.code()), (3, 1));
    // After the failure period the router tries again.
    tables.expire(crate::learned::ARP_FAILED_MS, |_| None);
    let again = simulate(&topo, &tables, POD_A1, &frame);
    assert_eq!(again.held_for, Some((ROUTER, b1)));
}

#[test]
fn tcp_and_udp_to_a_router_address_are_refused_like_a_host_would() {
    let topo = topology();
    let tcp = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &probe(ProbeProtocol::Tcp, "10.0.1.1", 22),
    );
    assert_eq!(tcp.drops, vec![DropReason::ClosedPort]);
    let (src, segment) = answer(&tcp);
    assert_eq!(src, "10.0.1.1".parse::<Ipv4Addr>().unwrap());
    let rst = TcpPacket::new_checked(&segment[..]).unwrap();
    assert!(rst.flags().contains(TcpFlags::RST), "{:?}", rst.flags());
    assert_eq!((rst.src_port(), rst.dst_port()), (22, 40000));

    // The router's address on the other network answers the same way.
    let udp = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &probe(ProbeProtocol::Udp, "10.0.2.1", 53),
    );
    assert_eq!(udp.drops, vec![DropReason::ClosedPort]);
    let (src, icmp) = answer(&udp);
    assert_eq!(src, "10.0.2.1".parse::<Ipv4Addr>().unwrap());
    let icmp = Icmpv4Packet::new_checked(&icmp[..]).unwrap();
    assert_eq!((u8::from(icmp.msg_type()), icmp.code()), (3, 3));
}
