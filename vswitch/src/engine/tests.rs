//! Engine behaviour without any I/O: a tenant with two bridges behind one
//! router, frames in, decisions out.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use nsdb::{Bridge, DeviceType, MacAddr, Port, Record, Route, RouteKind, Router};
use uuid::Uuid;

use super::*;

#[path = "tests_ageing.rs"]
mod ageing;
#[path = "tests_fragments.rs"]
mod fragments;
#[path = "tests_incremental.rs"]
mod incremental;
#[path = "tests_ipv6.rs"]
mod ipv6;
#[path = "tests_ipv6_router.rs"]
mod ipv6_router;
#[path = "tests_ipv6_router_policy.rs"]
mod ipv6_router_policy;
#[path = "tests_lb.rs"]
mod lb;
#[path = "tests_nat66.rs"]
mod nat66;
#[path = "tests_policy.rs"]
mod policy;
#[path = "tests_selectors.rs"]
mod selectors;
#[path = "tests_unreachable.rs"]
mod unreachable;
use crate::snapshot::Topology;
use crate::wire::{
    self, EtherType, EthernetAddress, Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Repr,
};

const HOST: Uuid = Uuid::from_u128(0x4057);
const ROUTER: Uuid = Uuid::from_u128(0x10);
const BRIDGE_A: Uuid = Uuid::from_u128(0x20);
const BRIDGE_B: Uuid = Uuid::from_u128(0x30);
const RP_A: Uuid = Uuid::from_u128(0x11); // router port on net A, 10.0.1.1/24
const RP_B: Uuid = Uuid::from_u128(0x12); // router port on net B, 10.0.2.1/24
const BP_A: Uuid = Uuid::from_u128(0x21); // bridge A side of the link
const BP_B: Uuid = Uuid::from_u128(0x31);
const POD_A1: Uuid = Uuid::from_u128(0x22); // 10.0.1.10
const POD_A2: Uuid = Uuid::from_u128(0x23); // 10.0.1.11
const POD_B1: Uuid = Uuid::from_u128(0x32); // 10.0.2.10

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

fn port(id: Uuid, device: Uuid, device_type: DeviceType, mac_n: u8, address: Option<&str>) -> Port {
    Port {
        id,
        revision: 1,
        device_id: device,
        device_type,
        mac: MacAddr(mac(mac_n)),
        address: address.map(|a| a.parse().unwrap()),
        extra_addresses: Vec::new(),
        peer_id: None,
        host_id: None,
        interface_name: None,
        inbound_chain_id: None,
        outbound_chain_id: None,
        allowed_addresses: Vec::new(),
        tunnel_key: mac_n as u32,
        vtep: None,
        labels: Default::default(),
    }
}

fn pod(id: Uuid, bridge: Uuid, mac_n: u8, ip: &str) -> Port {
    let mut p = port(id, bridge, DeviceType::Bridge, mac_n, None);
    p.host_id = Some(HOST);
    p.interface_name = Some(format!("veth{mac_n}"));
    p.allowed_addresses = vec![nsdb::AllowedAddress {
        mac: MacAddr(mac(mac_n)),
        ip: format!("{ip}/32").parse().unwrap(),
    }];
    p
}

fn route(id: u128, dst: &str, port: Option<Uuid>, gateway: Option<&str>, kind: RouteKind) -> Route {
    Route {
        id: Uuid::from_u128(id),
        revision: 1,
        router_id: ROUTER,
        dst: dst.parse().unwrap(),
        src: "0.0.0.0/0".parse().unwrap(),
        next_hop_port_id: port,
        next_hop_gateway: gateway.map(|g| g.parse().unwrap()),
        weight: 0,
        kind,
    }
}

fn records(extra_routes: Vec<Route>) -> Vec<Record> {
    let device = |id, name: &str| (id, name.to_string());
    let (r, _) = device(ROUTER, "r");
    let router = Router {
        id: r,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "r".into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
    };
    let bridge = |id, name: &str| Bridge {
        id,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: name.into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
        tunnel_key: 0,
    };
    let mut rp_a = port(RP_A, ROUTER, DeviceType::Router, 0xa1, Some("10.0.1.1/24"));
    let mut rp_b = port(RP_B, ROUTER, DeviceType::Router, 0xb1, Some("10.0.2.1/24"));
    let mut bp_a = port(BP_A, BRIDGE_A, DeviceType::Bridge, 0xa0, None);
    let mut bp_b = port(BP_B, BRIDGE_B, DeviceType::Bridge, 0xb0, None);
    rp_a.peer_id = Some(BP_A);
    bp_a.peer_id = Some(RP_A);
    rp_b.peer_id = Some(BP_B);
    bp_b.peer_id = Some(RP_B);
    let mut out = vec![
        Record::Router(router),
        Record::Bridge(bridge(BRIDGE_A, "a")),
        Record::Bridge(bridge(BRIDGE_B, "b")),
        Record::Port(rp_a),
        Record::Port(rp_b),
        Record::Port(bp_a),
        Record::Port(bp_b),
        Record::Port(pod(POD_A1, BRIDGE_A, 0x01, "10.0.1.10")),
        Record::Port(pod(POD_A2, BRIDGE_A, 0x02, "10.0.1.11")),
        Record::Port(pod(POD_B1, BRIDGE_B, 0x03, "10.0.2.10")),
    ];
    out.extend(extra_routes.into_iter().map(Record::Route));
    out
}

fn topology() -> Topology {
    Topology::build(1, &records(Vec::new()))
}

/// The same topology with no allowed addresses: no port security, so any
/// source MAC may enter (and be learned).
fn open_topology() -> Topology {
    let mut recs = records(Vec::new());
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            p.allowed_addresses.clear();
        }
    }
    Topology::build(1, &recs)
}

#[derive(Default)]
struct Memory {
    macs: HashMap<(Uuid, [u8; 6]), Uuid>,
    arp: HashMap<(Uuid, std::net::IpAddr), [u8; 6]>,
}

impl Learned for Memory {
    fn mac_port(&self, bridge: Uuid, mac: [u8; 6]) -> Option<Uuid> {
        self.macs.get(&(bridge, mac)).copied()
    }
    fn arp(&self, router: Uuid, ip: std::net::IpAddr) -> Option<[u8; 6]> {
        self.arp.get(&(router, ip)).copied()
    }
}

fn ipv4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    ttl: u8,
    protocol: IpProtocol,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; 14 + 20 + payload.len()];
    let repr = Ipv4Repr {
        src_addr: src.parse().unwrap(),
        dst_addr: dst.parse().unwrap(),
        protocol,
        ttl,
        ident: 7,
        dont_frag: true,
        payload_len: payload.len(),
    };
    let len = repr.emit(&mut buf[14..]).unwrap();
    buf[34..].copy_from_slice(payload);
    wire::emit_ethernet(
        EthernetAddress(dst_mac),
        EthernetAddress(src_mac),
        EtherType::Ipv4,
        len,
        &mut buf,
    )
    .unwrap();
    buf
}

fn ping(src_mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str, ttl: u8) -> Vec<u8> {
    let mut icmp = vec![0u8; 8 + 16];
    let mut packet = Icmpv4Packet::new_unchecked(&mut icmp[..]);
    packet.set_msg_type(Icmpv4Message::EchoRequest);
    packet.set_code(0);
    packet.set_echo_ident(0x1234);
    packet.set_echo_seq_no(1);
    packet.fill_checksum();
    ipv4_frame(src_mac, dst_mac, src, dst, ttl, IpProtocol::Icmp, &icmp)
}

fn arp_request(src_mac: [u8; 6], src: &str, target: &str) -> Vec<u8> {
    frames::arp_request(src_mac, src.parse().unwrap(), target.parse().unwrap())
}

fn out_ports(sim: &Simulation) -> Vec<Uuid> {
    let mut ports: Vec<Uuid> = sim.outputs.iter().map(|o| o.egress.port).collect();
    ports.sort();
    ports
}

fn parsed(frame: &[u8]) -> PacketInfo {
    PacketInfo::parse(frame).unwrap()
}

#[test]
fn bridge_forwards_to_a_known_mac_and_learns_the_source() {
    let topo = topology();
    let frame = ping(mac(0x01), mac(0x02), "10.0.1.10", "10.0.1.11", 64);
    let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
    assert_eq!(out_ports(&sim), vec![POD_A2]);
    assert!(
        sim.outputs[0].rewrite.is_identity(),
        "L2 forwarding rewrites nothing"
    );
    assert_eq!(sim.outputs[0].egress.host, Some(HOST));
    assert!(sim.tags.contains(&Tag::Device(BRIDGE_A)));
    assert!(sim.is_cacheable());
    assert_eq!(sim.verdict(), "deliver");
}

#[test]
fn bridge_floods_unknown_and_broadcast_and_uses_learned_macs() {
    let topo = open_topology();
    let stranger = [0x02, 9, 9, 9, 9, 9];
    let frame = ping(
        stranger,
        [0x02, 8, 8, 8, 8, 8],
        "10.0.1.99",
        "10.0.1.98",
        64,
    );
    let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
    // Flooded to the other pod; the router port drops it (not its MAC).
    assert_eq!(out_ports(&sim), vec![POD_A2]);
    assert!(sim.drops.contains(&DropReason::NotForRouter));
    assert!(sim.learned.contains(&Learning::Mac {
        bridge: BRIDGE_A,
        mac: stranger,
        port: POD_A1
    }));
    assert!(
        sim.tags
            .contains(&Tag::Mac(BRIDGE_A, [0x02, 8, 8, 8, 8, 8])),
        "learning the MAC later must invalidate the flood"
    );

    let mut memory = Memory::default();
    memory
        .macs
        .insert((BRIDGE_A, [0x02, 8, 8, 8, 8, 8]), POD_A2);
    let sim = simulate(&topo, &memory, POD_A1, &frame);
    assert_eq!(out_ports(&sim), vec![POD_A2]);
    assert!(
        sim.drops.is_empty(),
        "a learned MAC is not flooded: {:?}",
        sim.drops
    );
}

#[test]
fn bridge_answers_arp_for_addresses_the_nsdb_knows() {
    let topo = topology();
    for (target, expected) in [("10.0.1.1", mac(0xa1)), ("10.0.1.11", mac(0x02))] {
        let sim = simulate(
            &topo,
            &NothingLearned,
            POD_A1,
            &arp_request(mac(0x01), "10.0.1.10", target),
        );
        assert!(sim.outputs.is_empty(), "suppressed, not flooded");
        assert_eq!(sim.generated.len(), 1);
        assert_eq!(sim.generated[0].egress.port, POD_A1);
        let reply = parsed(&sim.generated[0].frame);
        let L3::Arp(arp) = reply.l3 else {
            panic!("not ARP")
        };
        assert_eq!(
            (arp.op, arp.sender_ip, arp.sender_mac),
            (ArpOp::Reply, target.parse().unwrap(), expected)
        );
        assert_eq!(reply.eth_dst, mac(0x01));
    }
    // Unknown addresses are flooded.
    let sim = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &arp_request(mac(0x01), "10.0.1.10", "10.0.1.77"),
    );
    assert_eq!(out_ports(&sim), vec![POD_A2]);
}

#[test]
fn router_answers_ping_to_its_port_address() {
    let topo = topology();
    let sim = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping(mac(0x01), mac(0xa1), "10.0.1.10", "10.0.1.1", 64),
    );
    assert_eq!(sim.generated.len(), 1, "{:#?}", sim.trace);
    let reply = &sim.generated[0];
    assert_eq!(
        reply.egress.port, POD_A1,
        "the reply walks back through the bridge"
    );
    let info = parsed(&reply.frame);
    let L3::Ipv4(ip) = info.l3 else {
        panic!("not IPv4")
    };
    assert_eq!(
        (ip.src, ip.dst),
        ("10.0.1.1".parse().unwrap(), "10.0.1.10".parse().unwrap())
    );
    assert_eq!(ip.icmp.map(|i| i.0), Some(IcmpKind::EchoReply));
    assert_eq!((info.eth_src, info.eth_dst), (mac(0xa1), mac(0x01)));
}

#[test]
fn router_forwards_between_bridges_rewriting_macs_and_ttl() {
    let topo = topology();
    let sim = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping(mac(0x01), mac(0xa1), "10.0.1.10", "10.0.2.10", 64),
    );
    assert_eq!(out_ports(&sim), vec![POD_B1], "{:#?}", sim.trace);
    let rewrite = sim.outputs[0].rewrite;
    assert_eq!(
        rewrite,
        Rewrite {
            eth_src: Some(mac(0xb1)),
            eth_dst: Some(mac(0x03)),
            ttl_decrement: 1,
            ..Rewrite::default()
        }
    );
    for tag in [
        Tag::Device(BRIDGE_A),
        Tag::Device(ROUTER),
        Tag::Device(BRIDGE_B),
        Tag::Port(POD_B1),
    ] {
        assert!(sim.tags.contains(&tag), "missing {tag:?}");
    }
    assert!(sim.is_cacheable());
}

#[test]
fn router_sends_icmp_errors() {
    let cases = [
        (1, "10.0.2.10", Vec::new(), (11, 0), DropReason::TtlExpired),
        (64, "192.168.9.9", Vec::new(), (3, 0), DropReason::NoRoute),
        (
            64,
            "172.16.0.1",
            vec![route(0x99, "172.16.0.0/12", None, None, RouteKind::Reject)],
            (3, 13),
            DropReason::Rejected,
        ),
    ];
    for (ttl, dst, routes, (icmp_type, icmp_code), reason) in cases {
        let topo = Topology::build(1, &records(routes));
        let sim = simulate(
            &topo,
            &NothingLearned,
            POD_A1,
            &ping(mac(0x01), mac(0xa1), "10.0.1.10", dst, ttl),
        );
        assert!(sim.outputs.is_empty());
        assert!(sim.drops.contains(&reason), "{dst}: {:?}", sim.drops);
        assert_eq!(sim.generated.len(), 1, "{dst}: {:#?}", sim.trace);
        let error = parsed(&sim.generated[0].frame);
        let L3::Ipv4(ip) = error.l3 else {
            panic!("not IPv4")
        };
        assert_eq!(
            ip.src,
            "10.0.1.1".parse::<Ipv4Addr>().unwrap(),
            "errors come from the router port"
        );
        assert_eq!(ip.icmp.map(|i| i.1), Some((icmp_type, icmp_code)), "{dst}");
        assert_eq!(sim.generated[0].egress.port, POD_A1);
    }
}

#[test]
fn blackhole_drops_silently() {
    let topo = Topology::build(
        1,
        &records(vec![route(
            0x98,
            "172.16.0.0/12",
            None,
            None,
            RouteKind::Blackhole,
        )]),
    );
    let sim = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping(mac(0x01), mac(0xa1), "10.0.1.10", "172.16.0.1", 64),
    );
    assert!(sim.outputs.is_empty() && sim.generated.is_empty());
    assert_eq!(sim.drops, vec![DropReason::Blackhole]);
    assert!(sim.tags.contains(&Tag::Route(Uuid::from_u128(0x98))));
}

#[test]
fn unknown_next_hop_is_resolved_by_arp_and_the_packet_held() {
    let gw = route(
        0x97,
        "0.0.0.0/0",
        Some(RP_B),
        Some("10.0.2.254"),
        RouteKind::Normal,
    );
    // The gateway sits behind POD_B1, which here has no port security.
    let mut recs = records(vec![gw]);
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            if p.id == POD_B1 {
                p.allowed_addresses.clear();
            }
        }
    }
    let topo = Topology::build(1, &recs);
    let frame = ping(mac(0x01), mac(0xa1), "10.0.1.10", "8.8.8.8", 64);
    let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
    assert_eq!(sim.held_for, Some((ROUTER, "10.0.2.254".parse().unwrap())));
    // The router's ARP request is flooded on bridge B.
    let request = sim
        .generated
        .iter()
        .find(|g| g.egress.port == POD_B1)
        .expect("ARP request reaches bridge B");
    let L3::Arp(arp) = parsed(&request.frame).l3 else {
        panic!("not ARP")
    };
    assert_eq!(
        (arp.op, arp.target_ip),
        (ArpOp::Request, "10.0.2.254".parse().unwrap())
    );
    assert!(!sim.is_cacheable());

    // The gateway answers; the router learns it; the held packet now goes.
    let reply = frames::arp_reply(
        [0x02, 7, 7, 7, 7, 7],
        "10.0.2.254".parse().unwrap(),
        mac(0xb1),
        "10.0.2.1".parse().unwrap(),
    );
    let answered = simulate(&topo, &NothingLearned, POD_B1, &reply);
    let learned = Learning::Arp {
        router: ROUTER,
        ip: "10.0.2.254".parse().unwrap(),
        mac: [0x02, 7, 7, 7, 7, 7],
    };
    assert!(answered.learned.contains(&learned), "{:#?}", answered.trace);
    let mut memory = Memory::default();
    memory.arp.insert(
        (ROUTER, "10.0.2.254".parse().unwrap()),
        [0x02, 7, 7, 7, 7, 7],
    );
    memory
        .macs
        .insert((BRIDGE_B, [0x02, 7, 7, 7, 7, 7]), POD_B1);
    let sim = simulate(&topo, &memory, POD_A1, &frame);
    assert_eq!(out_ports(&sim), vec![POD_B1]);
    assert_eq!(sim.outputs[0].rewrite.eth_dst, Some([0x02, 7, 7, 7, 7, 7]));
    assert!(sim
        .tags
        .contains(&Tag::Arp(ROUTER, "10.0.2.254".parse().unwrap())));
}

#[test]
fn loops_are_cut_and_garbage_is_a_counted_drop() {
    let topo = topology();
    let sim = simulate(&topo, &NothingLearned, POD_A1, &[0u8; 7]);
    assert!(matches!(sim.drops[..], [DropReason::Malformed(_)]));
    let sim = simulate(
        &topo,
        &NothingLearned,
        Uuid::from_u128(0xdead),
        &ping(mac(1), mac(2), "1.1.1.1", "2.2.2.2", 9),
    );
    assert_eq!(sim.drops, vec![DropReason::UnknownPort]);
    // A pathological topology: two routers routing a prefix at each other.
    let mut recs = records(Vec::new());
    let r2 = Uuid::from_u128(0x40);
    recs.push(Record::Router(Router {
        id: r2,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "r2".into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
    }));
    let (l1, l2) = (Uuid::from_u128(0x13), Uuid::from_u128(0x41));
    let mut p1 = port(l1, ROUTER, DeviceType::Router, 0xc1, Some("10.9.0.1/30"));
    let mut p2 = port(l2, r2, DeviceType::Router, 0xc2, Some("10.9.0.2/30"));
    p1.peer_id = Some(l2);
    p2.peer_id = Some(l1);
    recs.push(Record::Port(p1));
    recs.push(Record::Port(p2));
    recs.push(Record::Route(route(
        0x96,
        "172.16.0.0/12",
        Some(l1),
        Some("10.9.0.2"),
        RouteKind::Normal,
    )));
    let mut back = route(
        0x95,
        "172.16.0.0/12",
        Some(l2),
        Some("10.9.0.1"),
        RouteKind::Normal,
    );
    back.router_id = r2;
    recs.push(Record::Route(back));
    let topo = Topology::build(1, &recs);
    let sim = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping(mac(0x01), mac(0xa1), "10.0.1.10", "172.16.0.1", 255),
    );
    assert!(
        sim.drops.contains(&DropReason::TooManyDevices),
        "{:?}",
        sim.drops
    );
}

/// A tenant router behind a second router: packets cross the router ↔
/// router link, each router decrements the TTL once.
#[test]
fn router_to_router_links_forward_in_both_directions() {
    let mut recs = records(Vec::new());
    let upstream = Uuid::from_u128(0x50);
    recs.push(Record::Router(Router {
        id: upstream,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "provider".into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
    }));
    let (down_if, up_if, up_out) = (
        Uuid::from_u128(0x14),
        Uuid::from_u128(0x51),
        Uuid::from_u128(0x52),
    );
    let mut down = port(
        down_if,
        ROUTER,
        DeviceType::Router,
        0xd1,
        Some("100.64.0.2/30"),
    );
    let mut up = port(
        up_if,
        upstream,
        DeviceType::Router,
        0xd2,
        Some("100.64.0.1/30"),
    );
    down.peer_id = Some(up_if);
    up.peer_id = Some(down_if);
    // The provider's exterior side: an uplink port bound on this host.
    let mut uplink = port(
        up_out,
        upstream,
        DeviceType::Router,
        0xd3,
        Some("198.51.100.1/24"),
    );
    uplink.host_id = Some(HOST);
    uplink.interface_name = Some("uplink".into());
    recs.extend([Record::Port(down), Record::Port(up), Record::Port(uplink)]);
    recs.push(Record::Route(route(
        0x90,
        "0.0.0.0/0",
        Some(down_if),
        Some("100.64.0.1"),
        RouteKind::Normal,
    )));
    let mut back = route(
        0x91,
        "10.0.0.0/8",
        Some(up_if),
        Some("100.64.0.2"),
        RouteKind::Normal,
    );
    back.router_id = upstream;
    recs.push(Record::Route(back));
    let topo = Topology::build(1, &recs);

    let mut memory = Memory::default();
    memory.arp.insert(
        (upstream, "198.51.100.7".parse().unwrap()),
        [0x02, 9, 9, 9, 9, 9],
    );
    let out = simulate(
        &topo,
        &memory,
        POD_A1,
        &ping(mac(0x01), mac(0xa1), "10.0.1.10", "198.51.100.7", 64),
    );
    assert_eq!(out_ports(&out), vec![up_out], "{:#?}", out.trace);
    assert_eq!(
        out.outputs[0].rewrite,
        Rewrite {
            eth_src: Some(mac(0xd3)),
            eth_dst: Some([0x02, 9, 9, 9, 9, 9]),
            ttl_decrement: 2,
            ..Rewrite::default()
        }
    );

    let back = simulate(
        &topo,
        &NothingLearned,
        up_out,
        &ping(
            [0x02, 9, 9, 9, 9, 9],
            mac(0xd3),
            "198.51.100.7",
            "10.0.2.10",
            64,
        ),
    );
    assert_eq!(out_ports(&back), vec![POD_B1], "{:#?}", back.trace);
    assert_eq!(back.outputs[0].rewrite.ttl_decrement, 2);
}

/// Mutated frames of every kind go through the whole engine without a
/// panic (the fuzz target's property, run on every test run).
#[test]
fn mutated_frames_never_panic_the_engine() {
    let topo = topology();
    let samples = [
        ping(mac(0x01), mac(0xa1), "10.0.1.10", "10.0.2.10", 64),
        ping(mac(0x01), mac(0x02), "10.0.1.10", "10.0.1.11", 1),
        arp_request(mac(0x01), "10.0.1.10", "10.0.1.1"),
        ping(mac(0x01), mac(0xa1), "10.0.1.10", "10.0.1.1", 64),
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut delivered = 0;
    for round in 0..50_000 {
        let mut frame = samples[round % samples.len()].clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % frame.len();
            frame[at] = next() as u8;
        }
        if next() % 8 == 0 {
            frame.truncate((next() as usize) % frame.len());
        }
        let ingress = [POD_A1, POD_A2, POD_B1, RP_A][(next() % 4) as usize];
        let sim = simulate(&topo, &NothingLearned, ingress, &frame);
        delivered += usize::from(!sim.outputs.is_empty());
    }
    assert!(
        delivered > 1000,
        "the mutations still exercise forwarding, not just parsing: {delivered}"
    );
}

#[test]
fn ports_with_allowed_addresses_drop_spoofed_frames() {
    let topo = topology();
    // The pod's own MAC and address pass.
    let fine = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping(mac(0x01), mac(0x02), "10.0.1.10", "10.0.1.11", 64),
    );
    assert_eq!(out_ports(&fine), vec![POD_A2]);
    let cases = [
        ping(
            [0x02, 6, 6, 6, 6, 6],
            mac(0x02),
            "10.0.1.10",
            "10.0.1.11",
            64,
        ), // another MAC
        ping(mac(0x01), mac(0x02), "10.0.1.99", "10.0.1.11", 64), // another IP
        arp_request(mac(0x01), "10.0.1.11", "10.0.1.1"),          // ARP claiming B's address
    ];
    for frame in cases {
        let sim = simulate(&topo, &NothingLearned, POD_A1, &frame);
        assert_eq!(sim.drops, vec![DropReason::Spoofed], "{:#?}", sim.trace);
        assert!(sim.outputs.is_empty() && sim.generated.is_empty() && sim.learned.is_empty());
        assert!(
            sim.trace.iter().any(|s| s.stage == Stage::PortSecurity),
            "the trace says why"
        );
    }
    // An ARP probe (sender 0.0.0.0) claims nothing and passes.
    let probe = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &arp_request(mac(0x01), "0.0.0.0", "10.0.1.77"),
    );
    assert!(
        !probe.drops.contains(&DropReason::Spoofed),
        "{:?}",
        probe.drops
    );
    assert_eq!(out_ports(&probe), vec![POD_A2], "the probe is flooded");
}

#[test]
fn skipping_the_steps_decides_the_same_and_records_none() {
    let topo = topology();
    let frames = [
        (
            POD_A1,
            ping(mac(0x01), mac(0xa1), "10.0.1.10", "10.0.2.10", 64),
        ),
        (
            POD_A1,
            ping(mac(0x01), mac(0xa1), "10.0.1.10", "10.0.2.10", 1),
        ),
        (
            POD_A1,
            ping(mac(0x01), mac(0xa1), "10.0.1.10", "10.0.1.1", 64),
        ),
        (
            POD_A1,
            ping(mac(0x01), mac(0xa1), "10.0.1.10", "192.0.2.1", 64),
        ),
        (POD_A1, arp_request(mac(0x01), "10.0.1.10", "10.0.1.1")),
        (POD_A1, vec![0xff; 20]),
    ];
    for (ingress, frame) in frames {
        let recorded = simulate_with(&topo, &NothingLearned, ingress, &frame, Steps::Record);
        let skipped = simulate_with(&topo, &NothingLearned, ingress, &frame, Steps::Skip);
        assert!(!recorded.trace.is_empty());
        assert!(skipped.trace.is_empty() && skipped.skip_steps);
        assert_eq!(
            Simulation {
                trace: Vec::new(),
                skip_steps: true,
                ..recorded
            },
            skipped
        );
    }
}
