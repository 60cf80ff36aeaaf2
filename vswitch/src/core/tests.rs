//! The core driven with a simulated clock and no sockets: three hosts, a
//! router between two bridges, pods spread over the hosts. A core plays
//! one host here; `tests_hosts.rs` moves tunnel datagrams between several.

use std::net::{IpAddr, Ipv4Addr};

use nsdb::{
    Bridge, Chain, ConnState, DeviceType, Host, MacAddr, Port, Record, Router, Rule, RuleAction,
};
use uuid::Uuid;

use super::*;
use crate::engine::{IcmpKind, Learning, L3};
use crate::probe::{Probe, ProbeProtocol};
use crate::wire::{Ipv4Packet, TcpFlags, TcpPacket};

#[path = "tests_alloc.rs"]
mod alloc;
#[path = "tests_held.rs"]
mod held;
#[path = "tests_hosts.rs"]
mod hosts;
#[path = "tests_ipv6.rs"]
mod ipv6;
#[path = "tests_livetrace.rs"]
mod livetrace;

pub(super) const H1: Uuid = Uuid::from_u128(0x4001);
pub(super) const H2: Uuid = Uuid::from_u128(0x4002);
pub(super) const H3: Uuid = Uuid::from_u128(0x4003);
/// A registered host that is not alive.
const H_DEAD: Uuid = Uuid::from_u128(0x4009);
pub(super) const ROUTER: Uuid = Uuid::from_u128(0x10);
pub(super) const BRIDGE_A: Uuid = Uuid::from_u128(0x20);
pub(super) const BRIDGE_B: Uuid = Uuid::from_u128(0x30);
const RP_A: Uuid = Uuid::from_u128(0x11); // 10.0.1.1/24
const RP_B: Uuid = Uuid::from_u128(0x12); // 10.0.2.1/24
const BP_A: Uuid = Uuid::from_u128(0x21);
const BP_B: Uuid = Uuid::from_u128(0x31);
/// Pods on bridge A: 10.0.1.10 on H1, .11 on H2, .12 on H1, .13 on H2.
pub(super) const A1: Uuid = Uuid::from_u128(0x22);
pub(super) const A2: Uuid = Uuid::from_u128(0x23);
pub(super) const A3: Uuid = Uuid::from_u128(0x24);
pub(super) const A4: Uuid = Uuid::from_u128(0x25);
/// Pods on bridge B: 10.0.2.10 on H2; B2 on H3 has no allowed addresses
/// (the NSDB does not know its IP: the router must ARP for 10.0.2.20).
pub(super) const B1: Uuid = Uuid::from_u128(0x32);
pub(super) const B2: Uuid = Uuid::from_u128(0x33);
pub(super) const CHAIN: Uuid = Uuid::from_u128(0xc1);
/// The tunnel keys of the bridges (ports' keys are their MAC's last byte).
const BRIDGE_A_KEY: u32 = 0xa000;

/// The MAC of port / pod `n`.
pub(super) fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

pub(super) fn host_ip(host: Uuid) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, host.as_u128() as u8))
}

fn port(id: Uuid, device: Uuid, kind: DeviceType, n: u8, address: Option<&str>) -> Port {
    Port {
        id,
        revision: 1,
        device_id: device,
        device_type: kind,
        mac: MacAddr(mac(n)),
        address: address.map(|a| a.parse().unwrap()),
        extra_addresses: Vec::new(),
        peer_id: None,
        host_id: None,
        interface_name: None,
        inbound_chain_id: None,
        outbound_chain_id: None,
        allowed_addresses: Vec::new(),
        tunnel_key: u32::from(n),
        vtep: None,
        labels: Default::default(),
    }
}

fn pod(id: Uuid, bridge: Uuid, host: Uuid, n: u8, ip: Option<&str>) -> Port {
    let mut p = port(id, bridge, DeviceType::Bridge, n, None);
    p.host_id = Some(host);
    p.interface_name = Some(format!("veth{n}"));
    if let Some(ip) = ip {
        p.allowed_addresses = vec![nsdb::AllowedAddress {
            mac: MacAddr(mac(n)),
            ip: format!("{ip}/32").parse().unwrap(),
        }];
    }
    p
}

/// The records of the fixture; `edit` adds policy.
pub(super) fn records() -> Vec<Record> {
    let router = Router {
        id: ROUTER,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "r".into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
    };
    let bridge = |id, name: &str, tunnel_key| Bridge {
        id,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: name.into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
        tunnel_key,
    };
    let host = |id: Uuid, alive| Host {
        id,
        revision: 1,
        name: format!("h{}", id.as_u128() & 0xf),
        tunnel_ip: host_ip(id),
        underlay_mtu: 1500,
        alive,
    };
    let mut rp_a = port(RP_A, ROUTER, DeviceType::Router, 0xa1, Some("10.0.1.1/24"));
    let mut rp_b = port(RP_B, ROUTER, DeviceType::Router, 0xb1, Some("10.0.2.1/24"));
    let mut bp_a = port(BP_A, BRIDGE_A, DeviceType::Bridge, 0xa0, None);
    let mut bp_b = port(BP_B, BRIDGE_B, DeviceType::Bridge, 0xb0, None);
    (rp_a.peer_id, bp_a.peer_id) = (Some(BP_A), Some(RP_A));
    (rp_b.peer_id, bp_b.peer_id) = (Some(BP_B), Some(RP_B));
    vec![
        Record::Host(host(H1, true)),
        Record::Host(host(H2, true)),
        Record::Host(host(H3, true)),
        Record::Host(host(H_DEAD, false)),
        Record::Router(router),
        Record::Bridge(bridge(BRIDGE_A, "a", BRIDGE_A_KEY)),
        Record::Bridge(bridge(BRIDGE_B, "b", 0xb000)),
        Record::Port(rp_a),
        Record::Port(rp_b),
        Record::Port(bp_a),
        Record::Port(bp_b),
        Record::Port(pod(A1, BRIDGE_A, H1, 1, Some("10.0.1.10"))),
        Record::Port(pod(A2, BRIDGE_A, H2, 2, Some("10.0.1.11"))),
        Record::Port(pod(A3, BRIDGE_A, H1, 4, Some("10.0.1.12"))),
        Record::Port(pod(A4, BRIDGE_A, H2, 6, Some("10.0.1.13"))),
        Record::Port(pod(B1, BRIDGE_B, H2, 3, Some("10.0.2.10"))),
        Record::Port(pod(B2, BRIDGE_B, H3, 5, None)),
    ]
}

pub(super) fn topology() -> Topology {
    Topology::build(1, &records())
}

/// The fixture with `CHAIN` as the inbound chain of `port` (what its pod
/// sends): established connections pass, anything new is dropped.
pub(super) fn only_established_from(port: Uuid) -> Topology {
    let mut recs = records();
    recs.push(Record::Chain(Chain {
        id: CHAIN,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "established".into(),
    }));
    for (position, action, state) in [
        (1, RuleAction::Accept, ConnState::Established),
        (2, RuleAction::Drop, ConnState::New),
    ] {
        let mut rule = Rule::new(CHAIN, position, action);
        rule.id = Uuid::from_u128(0xc100 + u128::from(position));
        rule.conn_state = vec![state];
        recs.push(Record::Rule(rule));
    }
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            if p.id == port {
                p.inbound_chain_id = Some(CHAIN);
            }
        }
    }
    Topology::build(1, &recs)
}

/// A core for `host` with a 1450-byte tunnel.
pub(super) fn core(host: Uuid) -> DatapathCore {
    let core = DatapathCore::new(host);
    core.set_tunnel_mtu(Some(1450));
    core
}

pub(super) fn probe(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    protocol: ProbeProtocol,
) -> Probe {
    Probe {
        src_mac,
        dst_mac,
        src_ip: src.parse().unwrap(),
        dst_ip: dst.parse().unwrap(),
        protocol,
        src_port: 40000,
        dst_port: 80,
        ttl: 64,
    }
}

/// An ICMP echo request.
pub(super) fn ping(src_mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str) -> Vec<u8> {
    probe(src_mac, dst_mac, src, dst, ProbeProtocol::Icmp)
        .frame()
        .unwrap()
}

/// A TCP segment with `flags`, `src`:40000 → `dst`:80 or, `reply`, back.
pub(super) fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    flags: &[TcpFlags],
    reply: bool,
) -> Vec<u8> {
    let mut p = probe(src_mac, dst_mac, src, dst, ProbeProtocol::Tcp);
    if reply {
        (p.src_port, p.dst_port) = (80, 40000);
    }
    let mut frame = p.frame().unwrap();
    let bits = flags.iter().fold(0, |all, f| all | f.bits());
    let mut segment = TcpPacket::new_unchecked(&mut frame[34..]);
    segment.set_flags(TcpFlags::from_bits(bits));
    segment.fill_checksum(src.parse().unwrap(), dst.parse().unwrap());
    frame
}

/// The IPv4 header fields of `frame`.
pub(super) fn ipv4(frame: &[u8]) -> crate::engine::Ipv4Info {
    match PacketInfo::parse(frame).unwrap().l3 {
        L3::Ipv4(ip) => ip,
        other => panic!("not IPv4: {other:?}"),
    }
}

pub(super) fn forwards(actions: &[Action]) -> Vec<Uuid> {
    let mut ports: Vec<Uuid> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Forward(port) => Some(*port),
            _ => None,
        })
        .collect();
    ports.sort();
    ports
}

pub(super) fn tunnels(actions: &[Action]) -> Vec<(Uuid, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Tunnel { peer, key } => Some((peer.host, *key)),
            _ => None,
        })
        .collect()
}

/// The frames made for each local port, and through the tunnel.
pub(super) fn emitted(actions: &[Action]) -> Vec<(Uuid, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit { port, frame } => Some((*port, frame.clone())),
            Action::EmitTunnel { peer, frame, .. } => Some((peer.host, frame.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_miss_runs_the_engine_and_the_hit_replays_it_in_place() {
    let topo = topology();
    let core = core(H1);
    let mut actions = Vec::new();
    // Across the router to a pod on H2: rewritten, then tunnelled.
    let sent = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10");
    let mut first = sent.clone();
    let fate = core.process(
        &topo,
        A1,
        &mut first,
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Sent, "{actions:#?}");
    assert_eq!(tunnels(&actions), vec![(H2, 3)], "B1's key, to H2");
    assert_eq!((&first[..6], &first[6..12]), (&mac(3)[..], &mac(0xb1)[..]));
    assert_eq!(ipv4(&first).ttl, 63);
    assert_eq!(core.stats().flows.misses, 1);

    actions.clear();
    let mut again = sent.clone();
    let fate = core.process(
        &topo,
        A1,
        &mut again,
        VnetHeader::NONE,
        5,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Sent);
    assert_eq!(
        actions,
        vec![Action::Tunnel {
            peer: Peer {
                host: H2,
                ip: host_ip(H2)
            },
            key: 3,
        }]
    );
    assert_eq!(again, first, "the hit rewrites the same bytes in place");
    let stats = core.stats();
    assert_eq!(
        (stats.flows.hits, stats.flows.misses, stats.flow_count),
        (1, 1, 1)
    );

    // A local pod on the same bridge: forwarded as it is.
    actions.clear();
    let mut local = ping(mac(1), mac(4), "10.0.1.10", "10.0.1.12");
    let unchanged = local.clone();
    core.process(
        &topo,
        A1,
        &mut local,
        VnetHeader::NONE,
        6,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(forwards(&actions), vec![A3]);
    assert_eq!(local, unchanged);

    // A topology change the flow depended on sends the next packet back to
    // the engine.
    assert_eq!(core.invalidate(&[Tag::Device(ROUTER)]), 1);
    actions.clear();
    core.process(
        &topo,
        A1,
        &mut sent.clone(),
        VnetHeader::NONE,
        7,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(core.stats().flows.misses, 3);
}

#[test]
fn a_flood_reaching_every_port_of_a_bridge_on_a_host_travels_once() {
    let topo = topology();
    let core = core(H1);
    let mut actions = Vec::new();
    let mut frame = ping(mac(1), [0xff; 6], "10.0.1.10", "10.0.1.255");
    let fate = core.process(
        &topo,
        A1,
        &mut frame,
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Sent, "{actions:#?}");
    assert_eq!(forwards(&actions), vec![A3]);
    assert_eq!(
        tunnels(&actions),
        vec![(H2, BRIDGE_A_KEY)],
        "A2 and A4 at once"
    );
}

#[test]
fn learnings_are_replicated_to_the_hosts_that_need_them_ahead_of_the_frame() {
    // B1 only sends in established connections: bridge B tracks them.
    let topo = only_established_from(B1);
    let mut actions = Vec::new();
    // From a MAC the NSDB does not know, behind B2 (no port security), on H3.
    let hidden = [0x02, 0xaa, 0, 0, 0, 1];
    let mut syn = tcp(
        hidden,
        mac(0xb1),
        "10.0.2.20",
        "10.0.1.12",
        &[TcpFlags::SYN],
        false,
    );
    let h3 = core(H3);
    let fate = h3.process(
        &topo,
        B2,
        &mut syn,
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Sent, "{actions:#?}");
    let state: Vec<(Uuid, Vec<Learning>)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::State { peer, message } => {
                Some((peer.host, crate::tunnel::state::decode(message).unwrap()))
            }
            _ => None,
        })
        .collect();
    let conn_to: Vec<Uuid> = state
        .iter()
        .filter(|(_, l)| l.iter().any(|l| matches!(l, Learning::Conn(_))))
        .map(|(h, _)| *h)
        .collect();
    assert_eq!(
        conn_to,
        vec![H1],
        "the connection goes where the packet goes"
    );
    let mut mac_to: Vec<Uuid> = state
        .iter()
        .filter(|(_, l)| {
            l.iter()
                .any(|l| matches!(l, Learning::Mac { mac, .. } if *mac == hidden))
        })
        .map(|(h, _)| *h)
        .collect();
    mac_to.sort();
    assert_eq!(
        mac_to,
        vec![H1, H2],
        "a MAC goes to every live host but this one"
    );
    let frame_at = actions
        .iter()
        .position(|a| matches!(a, Action::Tunnel { .. }));
    let last_state = actions
        .iter()
        .rposition(|a| matches!(a, Action::State { .. }));
    assert!(
        last_state < frame_at,
        "state ahead of the frame: {actions:#?}"
    );
    assert_eq!(tunnels(&actions), vec![(H1, 4)]);

    // Without a tunnel nothing is replicated.
    let alone = DatapathCore::new(H3);
    actions.clear();
    let mut syn = tcp(
        hidden,
        mac(0xb1),
        "10.0.2.20",
        "10.0.1.12",
        &[TcpFlags::SYN],
        false,
    );
    alone.process(
        &topo,
        B2,
        &mut syn,
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::State { .. })));
    assert!(actions.contains(&Action::Drop(Reason::TunnelUnavailable)));
}

#[test]
fn too_big_for_the_tunnel_is_answered_with_fragmentation_needed() {
    let topo = topology();
    let core = core(H1);
    let mut actions = Vec::new();
    let mut big = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10");
    big.resize(14 + 1500, 0);
    let mut ip = Ipv4Packet::new_unchecked(&mut big[14..]);
    ip.set_total_len(1500);
    ip.fill_checksum();
    let fate = core.process(
        &topo,
        A1,
        &mut big,
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Answered, "{actions:#?}");
    assert!(tunnels(&actions).is_empty());
    assert!(actions.contains(&Action::Drop(Reason::TunnelFragNeeded)));
    let answers = emitted(&actions);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, A1);
    assert_eq!(ipv4(&answers[0].1).icmp, Some((IcmpKind::Error, (3, 4))));
}

/// A cached flow forwards while another worker is inside the miss path
/// (holding the core's lock): hits on several cores do not wait for it.
#[test]
fn a_cache_hit_does_not_wait_for_a_miss_in_progress() {
    let topo = topology();
    let core = core(H1);
    let routed = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10");
    let mut actions = Vec::new();
    let first = core.process(
        &topo,
        A1,
        &mut routed.clone(),
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(first, Fate::Sent, "{actions:?}");
    let (done, result) = std::sync::mpsc::channel();
    let miss_in_progress = core.state();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut actions = Vec::new();
            let mut frame = routed.clone();
            let fate = core.process(
                &topo,
                A1,
                &mut frame,
                VnetHeader::NONE,
                1,
                &mut CoreScratch::default(),
                &mut actions,
            );
            let _ = done.send((fate, actions));
        });
        let hit = result.recv_timeout(std::time::Duration::from_secs(5));
        drop(miss_in_progress);
        let (fate, actions) = hit.expect("the hit waited for the miss path's lock");
        assert_eq!(fate, Fate::Sent);
        assert!(
            matches!(actions[..], [Action::Tunnel { key: 3, .. }]),
            "routed to B2 on the other host: {actions:?}"
        );
    });
    assert_eq!(core.stats().flows.hits, 1);
}
