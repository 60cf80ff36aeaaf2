//! IPv6 through a bridge: rule conditions, connection tracking and port
//! security see IPv6 exactly as they see IPv4.

use nsdb::{
    AllowedAddress, Chain, ConnState, IpAddressGroup, IpProto, PortRange, Rule, RuleAction,
};

use super::*;
use crate::learned::LearnedTables;
use crate::wire::{Ipv6Packet, IPV6_HEADER_LEN};

const CHAIN: Uuid = Uuid::from_u128(0xc6);
const GROUP: Uuid = Uuid::from_u128(0x96);
const A1: &str = "fd00:1::10";
const A2: &str = "fd00:1::11";

/// The fixture with IPv6 addresses allowed on the two pods of bridge A and
/// `edit` applied.
fn v6_topology(edit: impl FnOnce(&mut Vec<Record>)) -> Topology {
    let mut recs = records(Vec::new());
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            let v6 = match p.id {
                POD_A1 => A1,
                POD_A2 => A2,
                _ => continue,
            };
            p.allowed_addresses.push(AllowedAddress {
                mac: p.mac,
                ip: format!("{v6}/128").parse().unwrap(),
            });
        }
    }
    edit(&mut recs);
    Topology::build(1, &recs)
}

fn drop_chain(recs: &mut Vec<Record>, port: Uuid, rules: Vec<Rule>) {
    recs.push(Record::Chain(Chain {
        id: CHAIN,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "v6".into(),
    }));
    for mut rule in rules {
        rule.id = Uuid::from_u128(0xc600 + u128::from(rule.position));
        recs.push(Record::Rule(rule));
    }
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            if p.id == port {
                p.outbound_chain_id = Some(CHAIN);
            }
        }
    }
}

fn rule(position: u32, action: RuleAction, edit: impl FnOnce(&mut Rule)) -> Rule {
    let mut rule = Rule::new(CHAIN, position, action);
    edit(&mut rule);
    rule
}

/// Ethernet / IPv6 with next header `next` and payload `l4`.
pub(super) fn v6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    next: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + IPV6_HEADER_LEN];
    frame[..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    let mut ip = Ipv6Packet::new_unchecked(&mut frame[14..]);
    ip.set_version_defaults();
    ip.set_payload_len(l4.len() as u16);
    ip.set_next_header(next);
    ip.set_hop_limit(64);
    ip.set_src_addr(src.parse().unwrap());
    ip.set_dst_addr(dst.parse().unwrap());
    frame.extend_from_slice(l4);
    frame
}

/// A TCP segment with `flags` (0x02 SYN, 0x12 SYN+ACK).
pub(super) fn tcp6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = flags;
    v6_frame(src_mac, dst_mac, src, dst, 6, &tcp)
}

/// An NDP message of `msg_type` about `target` with a link-layer option.
fn ndp(src_mac: [u8; 6], src: &str, msg_type: u8, target: &str, link: [u8; 6]) -> Vec<u8> {
    let mut icmp = vec![msg_type, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.parse::<std::net::Ipv6Addr>().unwrap().octets());
    icmp.extend_from_slice(&[if msg_type == 136 { 2 } else { 1 }, 1]);
    icmp.extend_from_slice(&link);
    let dst_mac = [0x33, 0x33, 0xff, 0, 0, 0x11];
    v6_frame(src_mac, dst_mac, src, "ff02::1:ff00:11", 58, &icmp)
}

fn drops_tcp_22(recs: &mut Vec<Record>) {
    drop_chain(
        recs,
        POD_A2,
        vec![rule(1, RuleAction::Drop, |r| {
            r.protocol = Some(IpProto::TCP);
            r.dst_ports = Some(PortRange { start: 22, end: 22 });
        })],
    );
}

#[test]
fn a_tcp_22_rule_drops_ipv6_and_lets_8080_through() {
    let topo = v6_topology(drops_tcp_22);
    let ssh = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &tcp6(mac(1), mac(2), A1, 40000, A2, 22, 0x02),
    );
    assert_eq!(ssh.drops, vec![DropReason::RuleDrop], "{:#?}", ssh.trace);
    assert!(ssh.outputs.is_empty());
    let web = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &tcp6(mac(1), mac(2), A1, 40000, A2, 8080, 0x02),
    );
    assert_eq!(out_ports(&web), vec![POD_A2], "{:#?}", web.trace);
    // Different ports are different flows: the cache cannot mix them up.
    let key = |f: &[u8]| PacketInfo::parse(f).unwrap();
    assert_ne!(
        key(&tcp6(mac(1), mac(2), A1, 40000, A2, 22, 0x02)),
        key(&tcp6(mac(1), mac(2), A1, 40000, A2, 8080, 0x02))
    );
}

#[test]
fn cidrs_and_groups_match_their_own_family_only() {
    let v6_cidr = v6_topology(|recs| {
        drop_chain(
            recs,
            POD_A2,
            vec![rule(1, RuleAction::Drop, |r| {
                r.src_cidr = Some("fd00:1::/64".parse().unwrap())
            })],
        );
    });
    let v4_cidr = v6_topology(|recs| {
        drop_chain(
            recs,
            POD_A2,
            vec![rule(1, RuleAction::Drop, |r| {
                r.src_cidr = Some("0.0.0.0/0".parse().unwrap())
            })],
        );
    });
    let grouped = v6_topology(|recs| {
        recs.push(Record::IpAddressGroup(IpAddressGroup {
            id: GROUP,
            revision: 1,
            tenant_id: Uuid::nil(),
            name: "v6".into(),
            addresses: vec![format!("{A1}/128").parse().unwrap()],
            selector: None,
        }));
        drop_chain(
            recs,
            POD_A2,
            vec![rule(1, RuleAction::Drop, |r| {
                r.src_ip_group_id = Some(GROUP)
            })],
        );
    });
    let frame = tcp6(mac(1), mac(2), A1, 40000, A2, 443, 0x02);
    assert_eq!(
        simulate(&v6_cidr, &NothingLearned, POD_A1, &frame).drops,
        vec![DropReason::RuleDrop]
    );
    assert_eq!(
        simulate(&grouped, &NothingLearned, POD_A1, &frame).drops,
        vec![DropReason::RuleDrop]
    );
    let passed = simulate(&v4_cidr, &NothingLearned, POD_A1, &frame);
    assert_eq!(
        out_ports(&passed),
        vec![POD_A2],
        "an IPv4 CIDR never matches IPv6"
    );
}

#[test]
fn ipv6_is_connection_tracked_and_ndp_is_not() {
    let topo = v6_topology(|recs| {
        drop_chain(
            recs,
            POD_A2,
            vec![
                rule(1, RuleAction::Accept, |r| {
                    r.conn_state = vec![ConnState::Established]
                }),
                rule(2, RuleAction::Drop, |r| r.conn_state = vec![ConnState::New]),
            ],
        );
    });
    let mut tables = LearnedTables::default();
    let inbound = simulate(
        &topo,
        &tables,
        POD_A1,
        &tcp6(mac(1), mac(2), A1, 40000, A2, 80, 0x02),
    );
    assert_eq!(
        inbound.drops,
        vec![DropReason::RuleDrop],
        "{:#?}",
        inbound.trace
    );
    assert!(inbound
        .trace
        .iter()
        .any(|s| s.detail.contains("new tcp [fd00:1::10]:40000")));

    let outbound = simulate(
        &topo,
        &tables,
        POD_A2,
        &tcp6(mac(2), mac(1), A2, 50000, A1, 80, 0x02),
    );
    assert_eq!(out_ports(&outbound), vec![POD_A1], "{:#?}", outbound.trace);
    for learning in &outbound.learned {
        tables.learn(learning, 0);
    }
    let reply = simulate(
        &topo,
        &tables,
        POD_A1,
        &tcp6(mac(1), mac(2), A1, 80, A2, 50000, 0x12),
    );
    assert_eq!(out_ports(&reply), vec![POD_A2], "{:#?}", reply.trace);

    // Neighbor Discovery is link signalling: never "new", so a drop-new
    // rule does not break address resolution.
    let solicit = simulate(&topo, &tables, POD_A1, &ndp(mac(1), A1, 135, A2, mac(1)));
    assert!(
        out_ports(&solicit).contains(&POD_A2),
        "{:#?}",
        solicit.trace
    );
}

#[test]
fn port_security_checks_ipv6_sources_and_ndp_claims() {
    let topo = v6_topology(|_| {});
    let spoofed = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &tcp6(mac(1), mac(2), "fd00:1::99", 1, A2, 80, 0x02),
    );
    assert_eq!(spoofed.drops, vec![DropReason::Spoofed]);
    let owned = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &tcp6(mac(1), mac(2), A1, 1, A2, 80, 0x02),
    );
    assert_eq!(out_ports(&owned), vec![POD_A2]);
    // The link-local address derived from the allowed MAC is the port's.
    let link_local = wire::link_local_from_mac(mac(1)).to_string();
    let ll = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &tcp6(mac(1), mac(2), &link_local, 1, "fe80::2", 80, 0x02),
    );
    assert_eq!(out_ports(&ll), vec![POD_A2]);
    let other_ll = wire::link_local_from_mac(mac(9)).to_string();
    let stolen_ll = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &tcp6(mac(1), mac(2), &other_ll, 1, "fe80::2", 80, 0x02),
    );
    assert_eq!(stolen_ll.drops, vec![DropReason::Spoofed]);

    // Advertising someone else's address, or another MAC for one's own.
    let stolen = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ndp(mac(1), A1, 136, A2, mac(1)),
    );
    assert_eq!(
        stolen.drops,
        vec![DropReason::Spoofed],
        "{:#?}",
        stolen.trace
    );
    let wrong_mac = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ndp(mac(1), A1, 136, A1, mac(7)),
    );
    assert_eq!(wrong_mac.drops, vec![DropReason::Spoofed]);
    let wrong_sll = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ndp(mac(1), A1, 135, A2, mac(7)),
    );
    assert_eq!(wrong_sll.drops, vec![DropReason::Spoofed]);
    let honest = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ndp(mac(1), A1, 136, A1, mac(1)),
    );
    assert!(out_ports(&honest).contains(&POD_A2), "{:#?}", honest.trace);

    // Duplicate-address detection comes from ::; nothing else may.
    let mut dad = v6_frame(
        mac(1),
        [0x33, 0x33, 0xff, 0, 0, 0x10],
        "::",
        "ff02::1:ff00:10",
        58,
        &[135, 0, 0, 0, 0, 0, 0, 0],
    );
    dad.extend_from_slice(&A1.parse::<std::net::Ipv6Addr>().unwrap().octets());
    let len = (dad.len() - 14 - IPV6_HEADER_LEN) as u16;
    Ipv6Packet::new_unchecked(&mut dad[14..]).set_payload_len(len);
    assert!(out_ports(&simulate(&topo, &NothingLearned, POD_A1, &dad)).contains(&POD_A2));
    let unspecified = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &tcp6(mac(1), mac(2), "::", 1, A2, 80, 0x02),
    );
    assert_eq!(unspecified.drops, vec![DropReason::Spoofed]);

    // A port does not advertise itself as a router.
    let advert = v6_frame(
        mac(1),
        [0x33, 0x33, 0, 0, 0, 1],
        &link_local,
        "ff02::1",
        58,
        &[134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    assert_eq!(
        simulate(&topo, &NothingLearned, POD_A1, &advert).drops,
        vec![DropReason::Spoofed]
    );
}
