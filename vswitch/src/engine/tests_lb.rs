//! The load balancer in the engine: VIPs on the fixture's router, members
//! on bridge B, clients on bridge A (and on B, for hairpin).

use std::collections::HashMap;

use nsdb::{
    HealthMonitor, LbAlgorithm, LbProtocol, LoadBalancer, MemberHealth, MonitorType, Pool,
    PoolMember, SessionAffinity, Vip,
};

use super::policy::{learn, syn, synack, trace_has, udp};
use super::*;
use crate::learned::LearnedTables;
use crate::wire::{Ipv4Packet, TcpFlags, TcpPacket};

const LB: Uuid = Uuid::from_u128(0x1b);
const POOL: Uuid = Uuid::from_u128(0x1c);
const VIP: Uuid = Uuid::from_u128(0x1d);
const UDP_VIP: Uuid = Uuid::from_u128(0x1e);
const POD_B2: Uuid = Uuid::from_u128(0x33); // 10.0.2.11
const POD_B3: Uuid = Uuid::from_u128(0x34); // 10.0.2.12
const VIP_ADDRESS: &str = "10.96.0.10";

fn member_id(n: u8) -> Uuid {
    Uuid::from_u128(0x500 + u128::from(n))
}

/// The member on pod B`n` (10.0.2.9+n, port 8080).
fn member(n: u8, weight: u16, health: MemberHealth) -> Record {
    Record::PoolMember(PoolMember {
        id: member_id(n),
        revision: 1,
        tenant_id: Uuid::nil(),
        pool_id: POOL,
        address: format!("10.0.2.{}", 9 + n).parse().unwrap(),
        port: 8080,
        weight,
        admin_state_up: true,
        health,
    })
}

struct Setup {
    algorithm: LbAlgorithm,
    affinity: SessionAffinity,
    members: Vec<Record>,
    monitor: Option<HealthMonitor>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            algorithm: LbAlgorithm::RoundRobin,
            affinity: SessionAffinity::None,
            members: (1..=3).map(|n| member(n, 1, MemberHealth::Up)).collect(),
            monitor: None,
        }
    }
}

fn vip(id: Uuid, address: &str, protocol: LbProtocol, port: u16, setup: &Setup) -> Record {
    Record::Vip(Vip {
        id,
        revision: 1,
        tenant_id: Uuid::nil(),
        load_balancer_id: LB,
        name: format!("vip-{port}"),
        pool_id: POOL,
        address: address.parse().unwrap(),
        protocol,
        port,
        session_affinity: setup.affinity,
        affinity_timeout_s: 60,
        admin_state_up: true,
    })
}

fn balanced(setup: Setup) -> Topology {
    let mut recs = records(Vec::new());
    recs.push(Record::Port(pod(POD_B2, BRIDGE_B, 0x04, "10.0.2.11")));
    recs.push(Record::Port(pod(POD_B3, BRIDGE_B, 0x05, "10.0.2.12")));
    recs.push(Record::LoadBalancer(LoadBalancer {
        id: LB,
        revision: 1,
        tenant_id: Uuid::nil(),
        router_id: ROUTER,
        name: "lb".into(),
        admin_state_up: true,
    }));
    recs.push(Record::Pool(Pool {
        id: POOL,
        revision: 1,
        tenant_id: Uuid::nil(),
        load_balancer_id: LB,
        name: "web".into(),
        algorithm: setup.algorithm,
        admin_state_up: true,
    }));
    recs.push(vip(VIP, VIP_ADDRESS, LbProtocol::Tcp, 80, &setup));
    recs.push(vip(UDP_VIP, "10.0.1.100", LbProtocol::Udp, 53, &setup));
    recs.extend(setup.members);
    recs.extend(setup.monitor.map(Record::HealthMonitor));
    Topology::build(1, &recs)
}

fn pod_of(port: Uuid) -> u8 {
    match port {
        p if p == POD_B1 => 1,
        p if p == POD_B2 => 2,
        p if p == POD_B3 => 3,
        other => panic!("{other} is not a member's port"),
    }
}

fn connect(topo: &Topology, tables: &LearnedTables, sport: u16) -> Simulation {
    simulate(
        topo,
        tables,
        POD_A1,
        &syn(mac(1), mac(0xa1), "10.0.1.10", sport, VIP_ADDRESS, 80),
    )
}

#[test]
fn weighted_connections_to_a_vip_follow_the_weights_and_replies_come_from_the_vip() {
    let topo = balanced(Setup {
        algorithm: LbAlgorithm::Weighted,
        members: vec![
            member(1, 1, MemberHealth::Up),
            member(2, 2, MemberHealth::Up),
            member(3, 3, MemberHealth::Up),
        ],
        ..Setup::default()
    });
    let tables = LearnedTables::default();
    let mut counts: HashMap<u8, u32> = HashMap::new();
    for sport in 30_000..30_300 {
        let sim = connect(&topo, &tables, sport);
        assert_eq!(sim.outputs.len(), 1, "{:#?}", sim.trace);
        let n = pod_of(sim.outputs[0].egress.port);
        let rewrite = sim.outputs[0].rewrite;
        assert_eq!(
            (rewrite.ip_dst, rewrite.dst_port),
            (
                Some(format!("10.0.2.{}", 9 + n).parse().unwrap()),
                Some(8080)
            )
        );
        assert!(trace_has(&sim, "load_balancer", &member_id(n).to_string()));
        assert!(
            !sim.is_cacheable(),
            "a new connection is tracked, not cached"
        );
        *counts.entry(n).or_default() += 1;
    }
    for (n, share) in [(1u8, 50.0), (2, 100.0), (3, 150.0)] {
        let got = f64::from(counts[&n]);
        assert!((got - share).abs() <= share * 0.2, "{counts:?}");
    }

    let mut tables = LearnedTables::default();
    let first = connect(&topo, &tables, 41_000);
    learn(&mut tables, &first);
    let n = pod_of(first.outputs[0].egress.port);
    let member_ip = format!("10.0.2.{}", 9 + n);
    let reply = simulate(
        &topo,
        &tables,
        first.outputs[0].egress.port,
        &synack(mac(2 + n), mac(0xb1), &member_ip, 8080, "10.0.1.10", 41_000),
    );
    assert_eq!(out_ports(&reply), vec![POD_A1], "{:#?}", reply.trace);
    let rewrite = reply.outputs[0].rewrite;
    assert_eq!(
        (rewrite.ip_src, rewrite.src_port),
        (Some(VIP_ADDRESS.parse().unwrap()), Some(80)),
        "the reply comes from the VIP"
    );
    assert!(reply.tags.contains(&Tag::LbMember(member_id(n))));
}

#[test]
fn a_connection_keeps_its_member_when_it_goes_down_and_new_ones_avoid_it() {
    let mut tables = LearnedTables::default();
    let topo = balanced(Setup::default());
    let first = connect(&topo, &tables, 42_000);
    learn(&mut tables, &first);
    let n = pod_of(first.outputs[0].egress.port);
    let down = balanced(Setup {
        members: (1..=3)
            .map(|m| {
                member(
                    m,
                    1,
                    [MemberHealth::Up, MemberHealth::Down][usize::from(m == n)],
                )
            })
            .collect(),
        ..Setup::default()
    });
    let again = connect(&down, &tables, 42_000);
    assert_eq!(
        pod_of(again.outputs[0].egress.port),
        n,
        "{:#?}",
        again.trace
    );
    assert!(again.tags.contains(&Tag::LbMember(member_id(n))));
    for sport in 50_000..50_100 {
        let sim = connect(&down, &tables, sport);
        assert_ne!(pod_of(sim.outputs[0].egress.port), n);
    }
}

#[test]
fn a_vip_without_usable_members_rejects_and_counts() {
    let topo = balanced(Setup {
        members: vec![
            member(1, 1, MemberHealth::Down),
            member(2, 0, MemberHealth::Up),
        ],
        ..Setup::default()
    });
    let sim = connect(&topo, &LearnedTables::default(), 43_000);
    assert!(sim.outputs.is_empty());
    assert_eq!(sim.drops, vec![DropReason::NoMember]);
    assert_eq!(DropReason::NoMember.name(), "no_member");
    assert_eq!(sim.generated.len(), 1, "{:#?}", sim.trace);
    let rst = &sim.generated[0].frame;
    let ip = Ipv4Packet::new_checked(&rst[14..]).unwrap();
    assert_eq!(ip.src_addr().to_string(), VIP_ADDRESS);
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.flags().contains(TcpFlags::RST));
    assert_eq!((tcp.src_port(), tcp.dst_port()), (80, 43_000));
    assert!(trace_has(&sim, "load_balancer", "no member"));
}

#[test]
fn source_ip_affinity_sends_a_clients_new_connections_to_one_member() {
    let topo = balanced(Setup {
        affinity: SessionAffinity::SourceIp,
        ..Setup::default()
    });
    let mut tables = LearnedTables::default();
    let mut members = Vec::new();
    for sport in 44_000..44_050 {
        let sim = connect(&topo, &tables, sport);
        learn(&mut tables, &sim);
        members.push(pod_of(sim.outputs[0].egress.port));
    }
    members.dedup();
    assert_eq!(members.len(), 1, "{members:?}");
    let sim = connect(&topo, &tables, 44_100);
    assert!(trace_has(&sim, "load_balancer", "affinity"));
    // Entries end `affinity_timeout_s` after the client's last connection.
    tables.expire(59_000, |_| None);
    assert!(tables.affinity(VIP, "10.0.1.10".parse().unwrap()).is_some());
    tables.expire(61_000, |_| None);
    assert_eq!(tables.affinity(VIP, "10.0.1.10".parse().unwrap()), None);
}

#[test]
fn a_member_reaching_its_own_vip_is_translated_both_ways() {
    let topo = balanced(Setup {
        members: vec![member(1, 1, MemberHealth::Up)],
        ..Setup::default()
    });
    let mut tables = LearnedTables::default();
    let out = simulate(
        &topo,
        &tables,
        POD_B1,
        &syn(mac(3), mac(0xb1), "10.0.2.10", 45_000, VIP_ADDRESS, 80),
    );
    assert_eq!(out_ports(&out), vec![POD_B1], "{:#?}", out.trace);
    let rewrite = out.outputs[0].rewrite;
    assert_eq!(rewrite.ip_dst, Some("10.0.2.10".parse().unwrap()));
    assert_eq!(
        rewrite.ip_src,
        Some("10.0.2.1".parse().unwrap()),
        "hairpin: the source becomes the router's address"
    );
    assert!(trace_has(&out, "nat", "hairpin"));
    learn(&mut tables, &out);
    let sport = rewrite.src_port.unwrap_or(45_000);
    let back = simulate(
        &topo,
        &tables,
        POD_B1,
        &synack(mac(3), mac(0xb1), "10.0.2.10", 8080, "10.0.2.1", sport),
    );
    assert_eq!(out_ports(&back), vec![POD_B1], "{:#?}", back.trace);
    let rewrite = back.outputs[0].rewrite;
    assert_eq!(
        (rewrite.ip_src, rewrite.src_port),
        (Some(VIP_ADDRESS.parse().unwrap()), Some(80))
    );
    assert_eq!(rewrite.ip_dst, Some("10.0.2.10".parse().unwrap()));
    assert_eq!(rewrite.dst_port, (sport != 45_000).then_some(45_000));
}

#[test]
fn a_client_on_the_members_bridge_keeps_its_address_and_the_bridge_sends_replies_to_the_router() {
    let topo = balanced(Setup {
        members: vec![member(1, 1, MemberHealth::Up)],
        ..Setup::default()
    });
    let mut tables = LearnedTables::default();
    // Pod B2 (10.0.2.11) → the VIP, whose only member is pod B1.
    let out = simulate(
        &topo,
        &tables,
        POD_B2,
        &syn(mac(0x04), mac(0xb1), "10.0.2.11", 45_000, VIP_ADDRESS, 80),
    );
    assert_eq!(out_ports(&out), vec![POD_B1], "{:#?}", out.trace);
    let rewrite = out.outputs[0].rewrite;
    assert_eq!(rewrite.ip_dst, Some("10.0.2.10".parse().unwrap()));
    assert_eq!(rewrite.ip_src, None, "no hairpin NAT: {:#?}", out.trace);
    assert!(!trace_has(&out, "nat", "hairpin"));

    // Before the connection is known, B1 → B2 is plain L2, and the flow
    // depends on what the router knows of that tuple (so learning the
    // connection invalidates it).
    let reply = synack(mac(3), mac(0x04), "10.0.2.10", 8080, "10.0.2.11", 45_000);
    let early = simulate(&topo, &tables, POD_B1, &reply);
    assert_eq!(out_ports(&early), vec![POD_B2]);
    assert_eq!(early.outputs[0].rewrite.ip_src, None);
    assert!(
        early
            .tags
            .iter()
            .any(|t| matches!(t, Tag::Conn(zone, _) if *zone == ROUTER)),
        "tagged with the router's tuple"
    );

    // Once known, the member's reply goes to the router and comes back
    // from the VIP.
    learn(&mut tables, &out);
    let back = simulate(&topo, &tables, POD_B1, &reply);
    assert_eq!(out_ports(&back), vec![POD_B2], "{:#?}", back.trace);
    let rewrite = back.outputs[0].rewrite;
    assert_eq!(
        (rewrite.ip_src, rewrite.src_port),
        (Some(VIP_ADDRESS.parse().unwrap()), Some(80)),
        "{:#?}",
        back.trace
    );
    assert_eq!(rewrite.eth_src, Some(mac(0xb1)), "from the router's port");
    assert!(trace_has(&back, "l2_lookup", "balanced by router"));
}

#[test]
fn an_on_link_udp_vip_answers_arp_and_replies_come_from_it() {
    let topo = balanced(Setup::default());
    let arp = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &arp_request(mac(1), "10.0.1.10", "10.0.1.100"),
    );
    assert_eq!(arp.generated.len(), 1, "{:#?}", arp.trace);
    let answer = parsed(&arp.generated[0].frame);
    let L3::Arp(info) = answer.l3 else {
        panic!("not ARP")
    };
    assert_eq!(info.sender_mac, mac(0xa1), "the router port's MAC");

    let mut tables = LearnedTables::default();
    let query = simulate(
        &topo,
        &tables,
        POD_A1,
        &udp(mac(1), mac(0xa1), "10.0.1.10", 5353, "10.0.1.100", 53),
    );
    assert_eq!(query.outputs.len(), 1, "{:#?}", query.trace);
    let n = pod_of(query.outputs[0].egress.port);
    learn(&mut tables, &query);
    let member_ip = format!("10.0.2.{}", 9 + n);
    let answer = simulate(
        &topo,
        &tables,
        query.outputs[0].egress.port,
        &udp(mac(2 + n), mac(0xb1), &member_ip, 8080, "10.0.1.10", 5353),
    );
    assert_eq!(out_ports(&answer), vec![POD_A1]);
    let rewrite = answer.outputs[0].rewrite;
    assert_eq!(
        (rewrite.ip_src, rewrite.src_port),
        (Some("10.0.1.100".parse().unwrap()), Some(53))
    );
}

#[test]
fn traffic_to_other_ports_of_a_vip_address_is_not_balanced() {
    let topo = balanced(Setup::default());
    let sim = simulate(
        &topo,
        &LearnedTables::default(),
        POD_A1,
        &syn(mac(1), mac(0xa1), "10.0.1.10", 46_000, VIP_ADDRESS, 443),
    );
    assert!(!trace_has(&sim, "load_balancer", ""));
    assert!(sim.outputs.is_empty());
}

fn monitored() -> Topology {
    balanced(Setup {
        monitor: Some(HealthMonitor {
            id: Uuid::from_u128(0x1f),
            revision: 1,
            tenant_id: Uuid::nil(),
            pool_id: POOL,
            kind: MonitorType::Tcp,
            http_path: "/".into(),
            expected_status: 200,
            interval_ms: 1000,
            timeout_ms: 500,
            failures_to_down: 2,
            successes_to_up: 2,
            admin_state_up: true,
        }),
        ..Setup::default()
    })
}

#[test]
fn the_host_of_each_member_probes_it_and_the_router_hands_it_the_answers() {
    let topo = monitored();
    let dry_run = |ingress, frame: &[u8]| simulate(&topo, &NothingLearned, ingress, frame);
    let mut targets = crate::health::targets(&topo, HOST, dry_run);
    targets.sort_by_key(|t| t.member);
    let members: Vec<Uuid> = targets.iter().map(|t| t.member).collect();
    assert_eq!(members, vec![member_id(1), member_id(2), member_id(3)]);
    assert!(crate::health::targets(&topo, Uuid::from_u128(0xbad), dry_run).is_empty());
    let target = &targets[0];
    assert_eq!(target.ingress, RP_B);
    assert_eq!(target.ends.src.to_string(), "10.0.2.1");

    let mut prober = crate::health::prober::Prober::default();
    let unprobed = crate::health::prober::Target {
        health: MemberHealth::Unknown,
        ..target.clone()
    };
    prober.set_targets(vec![unprobed], 0);
    let sent = prober.poll(0);
    let (ingress, syn) = &sent.frames[0];
    let tables = LearnedTables::default();
    let out = simulate(&topo, &tables, *ingress, syn);
    assert_eq!(out_ports(&out), vec![POD_B1], "{:#?}", out.trace);
    let sport = ip_of_tcp_sport(syn);
    let mut tables = tables;
    learn(&mut tables, &out);
    let mut answer = synack(mac(3), mac(0xb1), "10.0.2.10", 8080, "10.0.2.1", sport);
    acknowledge(&mut answer, syn);
    let back = simulate(&topo, &tables, POD_B1, &answer);
    assert_eq!(back.local.len(), 1, "{:#?}", back.trace);
    assert_eq!(back.verdict(), "local");
    assert!(!back.is_cacheable());
    let result = prober.receive(&back.local[0]);
    assert_eq!(result.changes.len(), 1, "{result:?}");
    assert_eq!(result.changes[0].1, MemberHealth::Up);
    assert_eq!(result.frames.len(), 1, "the probe resets its connection");

    // Other ports of the router's address are still closed.
    let stranger = synack(mac(3), mac(0xb1), "10.0.2.10", 8080, "10.0.2.1", 5000);
    let refused = simulate(&topo, &tables, POD_B1, &stranger);
    assert!(refused.local.is_empty());
    assert_eq!(refused.drops, vec![DropReason::ClosedPort]);
}

/// Makes the segment in `frame` acknowledge the SYN `syn`.
fn acknowledge(frame: &mut [u8], syn: &[u8]) {
    let ip = Ipv4Packet::new_checked(&syn[14..]).unwrap();
    let isn = TcpPacket::new_checked(ip.payload()).unwrap().seq_number();
    let mut tcp = TcpPacket::new_unchecked(&mut frame[34..]);
    tcp.set_ack_number(isn.wrapping_add(1));
    tcp.fill_checksum("10.0.2.10".parse().unwrap(), "10.0.2.1".parse().unwrap());
}

fn ip_of_tcp_sport(frame: &[u8]) -> u16 {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    TcpPacket::new_checked(ip.payload()).unwrap().src_port()
}

#[test]
fn a_vip_connection_colliding_with_a_live_one_moves_its_source_port() {
    let topo = balanced(Setup {
        members: vec![member(1, 1, MemberHealth::Up)],
        ..Setup::default()
    });
    let mut tables = LearnedTables::default();
    // A direct connection from the client's port 47000 to the member.
    let direct = simulate(
        &topo,
        &tables,
        POD_A1,
        &syn(mac(1), mac(0xa1), "10.0.1.10", 47_000, "10.0.2.10", 8080),
    );
    learn(&mut tables, &direct);
    // The same client port to the VIP would answer from the same tuple.
    let via_vip = connect(&topo, &tables, 47_000);
    assert_eq!(out_ports(&via_vip), vec![POD_B1], "{:#?}", via_vip.trace);
    let moved = via_vip.outputs[0]
        .rewrite
        .src_port
        .expect("the source port moves");
    assert_ne!(moved, 47_000);
    learn(&mut tables, &via_vip);
    let reply = simulate(
        &topo,
        &tables,
        POD_B1,
        &synack(mac(3), mac(0xb1), "10.0.2.10", 8080, "10.0.1.10", moved),
    );
    let rewrite = reply.outputs[0].rewrite;
    assert_eq!(
        (rewrite.ip_src, rewrite.src_port, rewrite.dst_port),
        (Some(VIP_ADDRESS.parse().unwrap()), Some(80), Some(47_000))
    );

    // A reset connection's tuple is free again: no port moves.
    let direct = simulate(
        &topo,
        &tables,
        POD_A1,
        &syn(mac(1), mac(0xa1), "10.0.1.10", 47_002, "10.0.2.10", 8080),
    );
    learn(&mut tables, &direct);
    let rst = TcpFlags::from_bits(TcpFlags::RST.bits() | TcpFlags::ACK.bits());
    let mut reset = syn(mac(1), mac(0xa1), "10.0.1.10", 47_002, "10.0.2.10", 8080);
    let mut tcp = TcpPacket::new_unchecked(&mut reset[34..]);
    tcp.set_flags(rst);
    tcp.fill_checksum("10.0.1.10".parse().unwrap(), "10.0.2.10".parse().unwrap());
    let closing = simulate(&topo, &tables, POD_A1, &reset);
    learn(&mut tables, &closing);
    let reuse = connect(&topo, &tables, 47_002);
    assert_eq!(out_ports(&reuse), vec![POD_B1], "{:#?}", reuse.trace);
    assert_eq!(
        reuse.outputs[0].rewrite.src_port, None,
        "{:#?}",
        reuse.trace
    );
}
