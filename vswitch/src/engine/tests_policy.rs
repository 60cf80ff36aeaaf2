//! Engine behaviour with rule chains, connection tracking and NAT, on the
//! two-bridges-behind-a-router fixture of the parent module.

use nsdb::{
    Chain, ConnState, IpAddressGroup, IpProto, NatTarget, PortGroup, PortRange, Rule, RuleAction,
};

use super::*;
use crate::learned::LearnedTables;
use crate::probe::{Probe, ProbeProtocol};
use crate::wire::{IcmpErrorKind, Ipv4Packet, TcpFlags, TcpPacket};

const CHAIN_1: Uuid = Uuid::from_u128(0xc1);
const CHAIN_2: Uuid = Uuid::from_u128(0xc2);

pub(super) fn chain(id: Uuid) -> Record {
    Record::Chain(Chain {
        id,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: format!("chain-{}", id.as_u128()),
    })
}

pub(super) fn rule(
    chain: Uuid,
    position: u32,
    action: RuleAction,
    edit: impl FnOnce(&mut Rule),
) -> Record {
    let mut rule = Rule::new(chain, position, action);
    rule.id = Uuid::from_u128(chain.as_u128() << 8 | u128::from(position));
    edit(&mut rule);
    Record::Rule(rule)
}

/// Attaches `inbound`/`outbound` to the port or router `id`.
pub(super) fn attach(
    records: &mut [Record],
    id: Uuid,
    inbound: Option<Uuid>,
    outbound: Option<Uuid>,
) {
    for record in records.iter_mut() {
        match record {
            Record::Port(p) if p.id == id => {
                p.inbound_chain_id = inbound.or(p.inbound_chain_id);
                p.outbound_chain_id = outbound.or(p.outbound_chain_id);
            }
            Record::Router(r) if r.id == id => {
                r.inbound_chain_id = inbound.or(r.inbound_chain_id);
                r.outbound_chain_id = outbound.or(r.outbound_chain_id);
            }
            Record::Bridge(b) if b.id == id => {
                b.inbound_chain_id = inbound.or(b.inbound_chain_id);
                b.outbound_chain_id = outbound.or(b.outbound_chain_id);
            }
            _ => {}
        }
    }
}

fn with_policy(edit: impl FnOnce(&mut Vec<Record>)) -> Topology {
    let mut recs = records(Vec::new());
    edit(&mut recs);
    Topology::build(1, &recs)
}

#[allow(clippy::too_many_arguments)]
fn segment(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    protocol: ProbeProtocol,
    tcp_flags: Option<TcpFlags>,
) -> Vec<u8> {
    let (src_ip, dst_ip): (Ipv4Addr, Ipv4Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut frame = Probe {
        src_mac,
        dst_mac,
        src_ip: src_ip.into(),
        dst_ip: dst_ip.into(),
        protocol,
        src_port: sport,
        dst_port: dport,
        ttl: 64,
    }
    .frame()
    .unwrap();
    if let Some(flags) = tcp_flags {
        let mut tcp = TcpPacket::new_unchecked(&mut frame[34..]);
        tcp.set_flags(flags);
        tcp.set_seq_number(1000);
        tcp.set_ack_number(5000);
        tcp.fill_checksum(src_ip, dst_ip);
    }
    frame
}

pub(super) fn syn(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
) -> Vec<u8> {
    segment(
        src_mac,
        dst_mac,
        src,
        sport,
        dst,
        dport,
        ProbeProtocol::Tcp,
        Some(TcpFlags::SYN),
    )
}

pub(super) fn synack(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
) -> Vec<u8> {
    let flags = TcpFlags::from_bits(TcpFlags::SYN.bits() | TcpFlags::ACK.bits());
    segment(
        src_mac,
        dst_mac,
        src,
        sport,
        dst,
        dport,
        ProbeProtocol::Tcp,
        Some(flags),
    )
}

pub(super) fn udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
) -> Vec<u8> {
    segment(
        src_mac,
        dst_mac,
        src,
        sport,
        dst,
        dport,
        ProbeProtocol::Udp,
        None,
    )
}

pub(super) fn learn(tables: &mut LearnedTables, sim: &Simulation) {
    for learning in &sim.learned {
        tables.learn(learning, 0);
    }
}

pub(super) fn trace_has(sim: &Simulation, stage: &str, text: &str) -> bool {
    sim.trace
        .iter()
        .any(|s| s.stage.as_str() == stage && s.detail.contains(text))
}

pub(super) fn ip_of(frame: &[u8]) -> Ipv4Info {
    match parsed(frame).l3 {
        L3::Ipv4(ip) => ip,
        other => panic!("not IPv4: {other:?}"),
    }
}

#[test]
fn a_port_chain_drops_tcp_22_and_names_the_rule() {
    let topo = with_policy(|r| {
        r.push(chain(CHAIN_1));
        r.push(rule(CHAIN_1, 1, RuleAction::Drop, |rule| {
            rule.protocol = Some(IpProto::TCP);
            rule.dst_ports = Some(PortRange { start: 22, end: 22 });
            rule.description = "no ssh".into();
        }));
        attach(r, POD_A2, None, Some(CHAIN_1));
    });
    let ssh = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &syn(mac(1), mac(2), "10.0.1.10", 40000, "10.0.1.11", 22),
    );
    assert!(ssh.outputs.is_empty());
    assert_eq!(ssh.drops, vec![DropReason::RuleDrop]);
    // Ids only: the renderer names the chain and the rule (position and
    // description) once; naming them here too printed them twice.
    let rule_id = Uuid::from_u128(0xc1 << 8 | 1);
    let chain_steps: Vec<&str> = ssh
        .trace
        .iter()
        .filter(|s| s.stage.as_str() == "chain")
        .map(|s| s.detail.as_str())
        .collect();
    assert_eq!(
        chain_steps,
        vec![format!(
            "port {POD_A2} outbound chain {CHAIN_1} rule {rule_id}: drop"
        )],
    );
    assert!(
        ssh.tags.contains(&Tag::Chain(CHAIN_1)),
        "a rule change must invalidate it"
    );
    let web = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &syn(mac(1), mac(2), "10.0.1.10", 40000, "10.0.1.11", 80),
    );
    assert_eq!(out_ports(&web), vec![POD_A2]);
    assert!(trace_has(&web, "chain", "no rule decided"));
    assert!(
        web.is_cacheable(),
        "a stateless chain keeps flows cacheable"
    );
    assert!(!topo.stateful.contains(&BRIDGE_A));
}

#[test]
fn established_passes_and_new_inbound_is_dropped() {
    let topo = with_policy(|r| {
        r.push(chain(CHAIN_1));
        r.push(rule(CHAIN_1, 1, RuleAction::Accept, |rule| {
            rule.conn_state = vec![ConnState::Established];
        }));
        r.push(rule(CHAIN_1, 2, RuleAction::Drop, |rule| {
            rule.conn_state = vec![ConnState::New];
        }));
        attach(r, POD_A2, None, Some(CHAIN_1));
    });
    assert!(topo.stateful.contains(&BRIDGE_A));
    let mut tables = LearnedTables::default();
    let inbound = simulate(
        &topo,
        &tables,
        POD_A1,
        &syn(mac(1), mac(2), "10.0.1.10", 40000, "10.0.1.11", 80),
    );
    assert_eq!(
        inbound.drops,
        vec![DropReason::RuleDrop],
        "{:#?}",
        inbound.trace
    );
    assert!(trace_has(&inbound, "conntrack", "new tcp 10.0.1.10:40000"));

    let outbound = simulate(
        &topo,
        &tables,
        POD_A2,
        &syn(mac(2), mac(1), "10.0.1.11", 50000, "10.0.1.10", 80),
    );
    assert_eq!(out_ports(&outbound), vec![POD_A1]);
    assert!(
        !outbound.is_cacheable(),
        "a new connection is recorded first"
    );
    assert!(outbound
        .learned
        .iter()
        .any(|l| matches!(l, Learning::Conn(c) if c.zone == BRIDGE_A)));
    learn(&mut tables, &outbound);

    let reply = simulate(
        &topo,
        &tables,
        POD_A1,
        &synack(mac(1), mac(2), "10.0.1.10", 80, "10.0.1.11", 50000),
    );
    assert_eq!(out_ports(&reply), vec![POD_A2], "{:#?}", reply.trace);
    assert!(trace_has(&reply, "conntrack", "(reply direction)"));
    assert!(reply
        .tags
        .iter()
        .any(|t| matches!(t, Tag::Conn(zone, _) if *zone == BRIDGE_A)));
}

#[test]
fn reject_answers_tcp_with_rst_and_udp_with_port_unreachable() {
    let topo = with_policy(|r| {
        r.push(chain(CHAIN_1));
        r.push(rule(CHAIN_1, 1, RuleAction::Reject, |rule| {
            rule.protocol = Some(IpProto::TCP)
        }));
        r.push(rule(CHAIN_1, 2, RuleAction::Reject, |rule| {
            rule.protocol = Some(IpProto::UDP)
        }));
        attach(r, POD_A2, None, Some(CHAIN_1));
    });
    let sim = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &syn(mac(1), mac(2), "10.0.1.10", 40000, "10.0.1.11", 22),
    );
    assert!(sim.outputs.is_empty());
    assert_eq!(sim.drops, vec![DropReason::RuleReject]);
    assert_eq!(sim.generated.len(), 1, "{:#?}", sim.trace);
    assert_eq!(sim.generated[0].egress.port, POD_A1);
    let rst = &sim.generated[0].frame;
    let ip = Ipv4Packet::new_checked(&rst[14..]).unwrap();
    assert_eq!(
        (ip.src_addr().to_string(), ip.dst_addr().to_string()),
        ("10.0.1.11".into(), "10.0.1.10".into())
    );
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((tcp.src_port(), tcp.dst_port()), (22, 40000));
    assert!(tcp.flags().contains(TcpFlags::RST) && tcp.flags().contains(TcpFlags::ACK));
    assert_eq!(tcp.ack_number(), 1001, "acknowledges the SYN");
    assert!(tcp.verify_checksum(ip.src_addr(), ip.dst_addr()));
    assert_eq!(&rst[0..6], &mac(1));

    let sim = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &udp(mac(1), mac(2), "10.0.1.10", 40000, "10.0.1.11", 53),
    );
    assert_eq!(sim.generated.len(), 1);
    let icmp = ip_of(&sim.generated[0].frame);
    assert_eq!(
        icmp.icmp,
        Some((IcmpKind::Error, (3, 3))),
        "port unreachable"
    );
    assert_eq!(icmp.src.to_string(), "10.0.1.11");
    assert_eq!(icmp.icmp_quoted.map(|k| k.dport), Some(53));
}

pub(super) fn masquerading() -> Topology {
    with_policy(|r| {
        r.push(chain(CHAIN_1));
        r.push(rule(CHAIN_1, 1, RuleAction::Masquerade, |rule| {
            rule.out_port_ids = vec![RP_B]
        }));
        attach(r, ROUTER, None, Some(CHAIN_1));
    })
}

#[test]
fn masquerade_translates_without_collisions_and_replies_come_back() {
    let topo = masquerading();
    let mut tables = LearnedTables::default();
    let first = simulate(
        &topo,
        &tables,
        POD_A1,
        &udp(mac(1), mac(0xa1), "10.0.1.10", 40000, "10.0.2.10", 53),
    );
    assert_eq!(out_ports(&first), vec![POD_B1], "{:#?}", first.trace);
    let rewrite = first.outputs[0].rewrite;
    assert_eq!(rewrite.ip_src, Some("10.0.2.1".parse().unwrap()));
    assert_eq!(
        rewrite.src_port, None,
        "the source port is kept when it is free"
    );
    assert!(trace_has(&first, "nat", "masquerade udp 10.0.1.10:40000"));
    // The bytes the datapath sends are right.
    let mut bytes = udp(mac(1), mac(0xa1), "10.0.1.10", 40000, "10.0.2.10", 53);
    assert!(apply_rewrite(&mut bytes, &rewrite, false));
    let sent = ip_of(&bytes);
    assert_eq!(sent.src.to_string(), "10.0.2.1");
    assert!(sent.checksum_valid);
    learn(&mut tables, &first);

    let second = simulate(
        &topo,
        &tables,
        POD_A2,
        &udp(mac(2), mac(0xa1), "10.0.1.11", 40000, "10.0.2.10", 53),
    );
    let port = second.outputs[0]
        .rewrite
        .src_port
        .expect("the taken port is not reused");
    assert_ne!(port, 40000);
    learn(&mut tables, &second);

    let back = simulate(
        &topo,
        &tables,
        POD_B1,
        &udp(mac(3), mac(0xb1), "10.0.2.10", 53, "10.0.2.1", 40000),
    );
    assert_eq!(out_ports(&back), vec![POD_A1], "{:#?}", back.trace);
    assert_eq!(
        back.outputs[0].rewrite.ip_dst,
        Some("10.0.1.10".parse().unwrap())
    );
    let back2 = simulate(
        &topo,
        &tables,
        POD_B1,
        &udp(mac(3), mac(0xb1), "10.0.2.10", 53, "10.0.2.1", port),
    );
    assert_eq!(out_ports(&back2), vec![POD_A2]);
    assert_eq!(back2.outputs[0].rewrite.dst_port, Some(40000));
    assert!(
        !back2.is_cacheable(),
        "the first reply marks the connection replied"
    );
    learn(&mut tables, &back2);
    let again = simulate(
        &topo,
        &tables,
        POD_B1,
        &udp(mac(3), mac(0xb1), "10.0.2.10", 53, "10.0.2.1", port),
    );
    assert!(
        again.is_cacheable(),
        "later replies are plain cached forwarding"
    );
}

#[test]
fn dnat_forwards_a_port_and_translates_replies_back() {
    let topo = with_policy(|r| {
        r.push(chain(CHAIN_1));
        r.push(rule(CHAIN_1, 1, RuleAction::Dnat, |rule| {
            rule.protocol = Some(IpProto::TCP);
            rule.dst_cidr = Some("10.0.1.1/32".parse().unwrap());
            rule.dst_ports = Some(PortRange {
                start: 8080,
                end: 8080,
            });
            rule.nat_targets = vec![NatTarget {
                address_from: "10.0.2.10".parse().unwrap(),
                address_to: None,
                port_from: Some(80),
                port_to: None,
            }];
        }));
        attach(r, ROUTER, Some(CHAIN_1), None);
    });
    let mut tables = LearnedTables::default();
    let forward = simulate(
        &topo,
        &tables,
        POD_A1,
        &syn(mac(1), mac(0xa1), "10.0.1.10", 5555, "10.0.1.1", 8080),
    );
    assert_eq!(out_ports(&forward), vec![POD_B1], "{:#?}", forward.trace);
    let rewrite = forward.outputs[0].rewrite;
    assert_eq!(
        (rewrite.ip_dst, rewrite.dst_port),
        (Some("10.0.2.10".parse().unwrap()), Some(80))
    );
    learn(&mut tables, &forward);
    let reply = simulate(
        &topo,
        &tables,
        POD_B1,
        &synack(mac(3), mac(0xb1), "10.0.2.10", 80, "10.0.1.10", 5555),
    );
    assert_eq!(out_ports(&reply), vec![POD_A1], "{:#?}", reply.trace);
    let rewrite = reply.outputs[0].rewrite;
    assert_eq!(
        (rewrite.ip_src, rewrite.src_port),
        (Some("10.0.1.1".parse().unwrap()), Some(8080))
    );
}

#[test]
fn icmp_errors_about_a_translated_flow_are_translated_back() {
    let topo = masquerading();
    let mut tables = LearnedTables::default();
    let request = udp(mac(1), mac(0xa1), "10.0.1.10", 40000, "10.0.2.10", 33434);
    let first = simulate(&topo, &tables, POD_A1, &request);
    learn(&mut tables, &first);
    // What B1 received, and its port unreachable about it.
    let mut received = request.clone();
    assert!(apply_rewrite(
        &mut received,
        &first.outputs[0].rewrite,
        false
    ));
    let mut error = vec![0u8; 14 + 128];
    let len = wire::emit_error(
        IcmpErrorKind::PortUnreachable,
        &received[14..],
        "10.0.2.10".parse().unwrap(),
        &mut error[14..],
    )
    .unwrap();
    wire::emit_ethernet(
        EthernetAddress(mac(0xb1)),
        EthernetAddress(mac(3)),
        EtherType::Ipv4,
        len,
        &mut error,
    )
    .unwrap();
    error.truncate(14 + len);
    let sim = simulate(&topo, &tables, POD_B1, &error);
    assert!(
        sim.outputs.is_empty(),
        "translated errors are whole new bytes"
    );
    assert_eq!(sim.generated.len(), 1, "{:#?}", sim.trace);
    assert_eq!(sim.generated[0].egress.port, POD_A1);
    let frame = &sim.generated[0].frame;
    let outer = ip_of(frame);
    assert_eq!(outer.dst.to_string(), "10.0.1.10");
    assert_eq!(
        outer.src.to_string(),
        "10.0.2.10",
        "the reporting address stays visible"
    );
    assert!(outer.checksum_valid);
    let quoted = outer.icmp_quoted.unwrap();
    assert_eq!(
        (quoted.src.to_string().as_str(), quoted.sport),
        ("10.0.1.10", 40000)
    );
    let icmp = wire::Icmpv4Packet::new_checked(&frame[34..]).unwrap();
    assert!(icmp.verify_checksum());
    assert!(trace_has(&sim, "conntrack", "related"));
}

#[test]
fn jump_loops_are_cut_and_jumps_return() {
    let topo = with_policy(|r| {
        r.push(chain(CHAIN_1));
        r.push(chain(CHAIN_2));
        r.push(rule(CHAIN_1, 1, RuleAction::Jump, |rule| {
            rule.jump_chain_id = Some(CHAIN_2)
        }));
        r.push(rule(CHAIN_2, 1, RuleAction::Jump, |rule| {
            rule.jump_chain_id = Some(CHAIN_1)
        }));
        r.push(rule(CHAIN_2, 2, RuleAction::Return, |rule| {
            rule.protocol = Some(IpProto::UDP)
        }));
        r.push(rule(CHAIN_2, 3, RuleAction::Drop, |_| {}));
        attach(r, POD_A2, None, Some(CHAIN_1));
    });
    let tcp = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &syn(mac(1), mac(2), "10.0.1.10", 1, "10.0.1.11", 2),
    );
    assert_eq!(tcp.drops, vec![DropReason::RuleDrop]);
    assert!(trace_has(&tcp, "chain", "cut"), "{:#?}", tcp.trace);
    let udp = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &udp(mac(1), mac(2), "10.0.1.10", 1, "10.0.1.11", 2),
    );
    assert_eq!(
        out_ports(&udp),
        vec![POD_A2],
        "return goes back to the caller, which accepts"
    );
}

#[test]
fn groups_inversion_and_traversed_devices_match() {
    let group = Uuid::from_u128(0x9a);
    let addresses = Uuid::from_u128(0x9b);
    let topo = with_policy(|r| {
        r.push(Record::PortGroup(PortGroup {
            id: group,
            revision: 1,
            tenant_id: Uuid::nil(),
            name: "g".into(),
            port_ids: vec![POD_A1],
            selector: None,
        }));
        r.push(Record::IpAddressGroup(IpAddressGroup {
            id: addresses,
            revision: 1,
            tenant_id: Uuid::nil(),
            name: "a".into(),
            addresses: vec!["10.0.2.0/24".parse().unwrap()],
            selector: None,
        }));
        r.push(chain(CHAIN_1));
        // Bridge A: members of the group may only talk to 10.0.2.0/24.
        r.push(rule(CHAIN_1, 1, RuleAction::Drop, |rule| {
            rule.in_port_group_id = Some(group);
            rule.dst_ip_group_id = Some(addresses);
            rule.invert = vec![nsdb::Condition::DstIpGroupId];
        }));
        r.push(chain(CHAIN_2));
        // The router: nothing that came through bridge B goes on.
        r.push(rule(CHAIN_2, 1, RuleAction::Drop, |rule| {
            rule.traversed_device_id = Some(BRIDGE_B)
        }));
        attach(r, BRIDGE_A, Some(CHAIN_1), None);
        attach(r, ROUTER, Some(CHAIN_2), None);
    });
    let local = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping(mac(1), mac(2), "10.0.1.10", "10.0.1.11", 64),
    );
    assert_eq!(
        local.drops,
        vec![DropReason::RuleDrop],
        "not to 10.0.2.0/24: dropped"
    );
    assert!(local.tags.contains(&Tag::Group(group)) && local.tags.contains(&Tag::Group(addresses)));
    let other = simulate(
        &topo,
        &NothingLearned,
        POD_A2,
        &ping(mac(2), mac(1), "10.0.1.11", "10.0.1.10", 64),
    );
    assert_eq!(out_ports(&other), vec![POD_A1], "A2 is not in the group");
    let routed = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10", 64),
    );
    assert_eq!(out_ports(&routed), vec![POD_B1], "{:#?}", routed.trace);
    let from_b = simulate(
        &topo,
        &NothingLearned,
        POD_B1,
        &ping(mac(3), mac(0xb1), "10.0.2.10", "10.0.1.10", 64),
    );
    assert_eq!(from_b.drops, vec![DropReason::RuleDrop]);
}
