//! IPv6 through the core: frames held for Neighbor Discovery like ARP,
//! and packet-too-big for what the tunnel cannot carry.

use super::*;
use crate::wire::Ipv6Packet;

/// The fixture with IPv6 beside IPv4 on the router ports and pods A1, B1.
pub(super) fn dual_stack() -> Topology {
    Topology::build(1, &dual_stack_records())
}

/// [`dual_stack`] with the router masquerading IPv6 (`ip_version` 6) out
/// of its port on bridge B.
pub(super) fn masquerading6() -> Topology {
    let mut recs = dual_stack_records();
    recs.push(Record::Chain(Chain {
        id: CHAIN,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "masquerade6".into(),
    }));
    let mut rule = Rule::new(CHAIN, 1, RuleAction::Masquerade);
    rule.id = Uuid::from_u128(0xc166);
    rule.ip_version = Some(6);
    rule.out_port_ids = vec![RP_B];
    recs.push(Record::Rule(rule));
    for record in recs.iter_mut() {
        if let Record::Router(r) = record {
            r.outbound_chain_id = Some(CHAIN);
        }
    }
    Topology::build(1, &recs)
}

/// The records of [`dual_stack`].
fn dual_stack_records() -> Vec<Record> {
    let mut recs = records();
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            match p.id {
                RP_A => p.extra_addresses.push("2001:db8:1::1/64".parse().unwrap()),
                RP_B => p.extra_addresses.push("2001:db8:2::1/64".parse().unwrap()),
                A1 | B1 => {
                    let ip = if p.id == A1 {
                        "2001:db8:1::10"
                    } else {
                        "2001:db8:2::10"
                    };
                    p.allowed_addresses.push(nsdb::AllowedAddress {
                        mac: p.mac,
                        ip: format!("{ip}/128").parse().unwrap(),
                    });
                }
                _ => {}
            }
        }
    }
    recs
}

/// An ICMPv6 echo request of `len` bytes of IPv6 packet.
pub(super) fn ping6(src: &str, dst: &str, len: usize) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + len];
    frame[..6].copy_from_slice(&mac(0xa1));
    frame[6..12].copy_from_slice(&mac(1));
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    let mut ip = Ipv6Packet::new_unchecked(&mut frame[14..]);
    ip.set_version_defaults();
    ip.set_payload_len((len - 40) as u16);
    ip.set_next_header(58);
    ip.set_hop_limit(64);
    ip.set_src_addr(src.parse().unwrap());
    ip.set_dst_addr(dst.parse().unwrap());
    frame[54] = 128;
    frame
}

fn icmp6_of(frame: &[u8]) -> (u8, u8, u32) {
    let icmp = &frame[54..];
    let rest = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]);
    (icmp[0], icmp[1], rest)
}

#[test]
fn too_big_for_the_tunnel_is_answered_with_packet_too_big() {
    let topo = dual_stack();
    let core = core(H1);
    let mut actions = Vec::new();
    let mut big = ping6("2001:db8:1::10", "2001:db8:2::10", 1500);
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
    let answers = emitted(&actions);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, A1);
    assert_eq!(
        icmp6_of(&answers[0].1),
        (2, 0, 1450),
        "packet too big, MTU 1450"
    );

    // What fits goes through the tunnel, the hop limit decremented.
    actions.clear();
    let mut small = ping6("2001:db8:1::10", "2001:db8:2::10", 1400);
    let fate = core.process(
        &topo,
        A1,
        &mut small,
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Sent, "{actions:#?}");
    assert_eq!(tunnels(&actions).len(), 1);
    assert_eq!(
        Ipv6Packet::new_checked(&small[14..]).unwrap().hop_limit(),
        63
    );
}

#[test]
fn a_frame_held_for_neighbor_discovery_goes_when_the_answer_is_imported_or_is_answered_unreachable()
{
    let topo = dual_stack();
    let core = core(H1);
    let mut actions = Vec::new();
    let sent = ping6("2001:db8:1::10", "2001:db8:2::20", 100);
    let fate = core.process(
        &topo,
        A1,
        &mut sent.clone(),
        VnetHeader::NONE,
        0,
        &mut CoreScratch::default(),
        &mut actions,
    );
    assert_eq!(fate, Fate::Held, "{actions:#?}");
    assert_eq!(core.stats().held_frames, 1);
    let solicits = emitted(&actions);
    assert!(!solicits.is_empty());
    assert!(solicits
        .iter()
        .all(|(_, f)| icmp6_of(f).0 == 135 && f[..3] == [0x33, 0x33, 0xff]));

    actions.clear();
    let answer = Learning::Arp {
        router: ROUTER,
        ip: "2001:db8:2::20".parse().unwrap(),
        mac: mac(5),
    };
    core.import(&topo, &[answer], 40, &mut actions);
    assert_eq!(core.stats().held_frames, 0);
    let released = emitted(&actions);
    assert_eq!(released.len(), 1, "{actions:#?}");
    assert_eq!(&released[0].1[..6], &mac(5));

    // A neighbour that never answers: address unreachable.
    actions.clear();
    let silent = ping6("2001:db8:1::10", "2001:db8:2::30", 100);
    core.process(
        &topo,
        A1,
        &mut silent.clone(),
        VnetHeader::NONE,
        100,
        &mut CoreScratch::default(),
        &mut actions,
    );
    actions.clear();
    core.tick(&topo, 100 + HELD_FOR_MS, &mut actions);
    let answers = emitted(&actions);
    assert_eq!(answers.len(), 1, "{actions:#?}");
    assert_eq!(answers[0].0, A1);
    assert_eq!(icmp6_of(&answers[0].1), (1, 3, 0), "address unreachable");
}
