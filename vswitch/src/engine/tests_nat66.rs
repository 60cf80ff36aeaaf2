//! IPv6 address translation where it is configured: masquerade rules for
//! IPv6 (`ip_version` 6), SNAT and DNAT to IPv6 targets; replies and
//! ICMPv6 errors translated back; masquerade rules without `ip_version`
//! leave IPv6 routed. Checksums are verified by recomputation.

use std::net::IpAddr;

use nsdb::{NatTarget, Rule, RuleAction};

use super::ipv6::{tcp6, v6_frame};
use super::ipv6_router::{dual_stack, A1, A2, B1, RA, RB};
use super::policy::{attach, chain, learn, rule, trace_has};
use super::*;
use crate::engine::frames6::{upper_checksum, upper_checksum_valid};
use crate::learned::LearnedTables;
use crate::wire::{Ipv6Packet, IPV6_HEADER_LEN};

const CHAIN: Uuid = Uuid::from_u128(0xc66);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The dual-stack fixture with one rule, made by `edit`, in the router's
/// outbound chain (inbound when `inbound`).
fn with_router_chain(inbound: bool, edit: impl FnOnce(&mut Rule)) -> Topology {
    dual_stack(|recs| {
        recs.push(chain(CHAIN));
        recs.push(rule(CHAIN, 1, RuleAction::Accept, edit));
        let (i, o) = if inbound {
            (Some(CHAIN), None)
        } else {
            (None, Some(CHAIN))
        };
        attach(recs, ROUTER, i, o);
    })
}

/// A masquerade toward bridge B (`ip_version` as given).
fn masquerading(ip_version: Option<u8>) -> Topology {
    with_router_chain(false, move |r: &mut Rule| {
        r.action = RuleAction::Masquerade;
        r.out_port_ids = vec![RP_B];
        r.ip_version = ip_version;
    })
}

/// `frame` (Ethernet + IPv6, no extension headers) with its transport
/// checksum filled.
fn checksummed(mut frame: Vec<u8>) -> Vec<u8> {
    let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
    let (src, dst, next) = (ip.src_addr(), ip.dst_addr(), ip.next_header());
    let at = 14
        + IPV6_HEADER_LEN
        + match next {
            6 => 16,
            17 => 6,
            _ => 2,
        };
    frame[at..at + 2].fill(0);
    let sum = upper_checksum(&src, &dst, next, &frame[14 + IPV6_HEADER_LEN..]);
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    frame
}

fn syn6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
) -> Vec<u8> {
    checksummed(tcp6(src_mac, dst_mac, src, sport, dst, dport, 0x02))
}

fn udp6(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&12u16.to_be_bytes());
    udp.extend_from_slice(b"ping");
    checksummed(v6_frame(mac(1), mac(0xa1), src, dst, 17, &udp))
}

/// An ICMPv6 echo request (128) or reply (129) with `ident`.
fn echo6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    kind: u8,
    ident: u16,
) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(&ident.to_be_bytes());
    icmp.extend_from_slice(&[0, 1, 0xab, 0xcd]);
    checksummed(v6_frame(src_mac, dst_mac, src, dst, 58, &icmp))
}

/// `frame` as the datapath sends it out of `sim`'s one output.
fn sent(sim: &Simulation, frame: &[u8]) -> Vec<u8> {
    assert_eq!(sim.outputs.len(), 1, "{:#?}", sim.trace);
    let mut bytes = frame.to_vec();
    assert!(apply_rewrite(&mut bytes, &sim.outputs[0].rewrite, false));
    assert!(
        upper_checksum_valid(&bytes),
        "checksum after {:?}",
        sim.outputs[0].rewrite
    );
    bytes
}

fn ip6(frame: &[u8]) -> Ipv6Info {
    *parsed(frame).ipv6().expect("IPv6")
}

#[test]
fn ipv6_masquerade_translates_tcp_and_the_reply_comes_back() {
    let topo = masquerading(Some(6));
    let mut tables = LearnedTables::default();
    let syn = syn6(mac(1), mac(0xa1), A1, 40000, B1, 80);
    let out = simulate(&topo, &tables, POD_A1, &syn);
    assert_eq!(out_ports(&out), vec![POD_B1], "{:#?}", out.trace);
    assert_eq!(out.outputs[0].rewrite.ip_src, Some(ip(RB)));
    assert_eq!(
        out.outputs[0].rewrite.src_port, None,
        "the free port is kept"
    );
    assert!(
        trace_has(&out, "nat", "masquerade tcp [2001:db8:1::10]:40000 → [2001:db8:2::10]:80 → tcp [2001:db8:2::1]:40000"),
        "{:#?}",
        out.trace
    );
    let wire = ip6(&sent(&out, &syn));
    assert_eq!((wire.src, wire.hop_limit), (RB.parse().unwrap(), 63));
    learn(&mut tables, &out);

    let syn_ack = checksummed(tcp6(mac(3), mac(0xb1), B1, 80, RB, 40000, 0x12));
    let back = simulate(&topo, &tables, POD_B1, &syn_ack);
    assert_eq!(out_ports(&back), vec![POD_A1], "{:#?}", back.trace);
    assert_eq!(back.outputs[0].rewrite.ip_dst, Some(ip(A1)));
    let wire = ip6(&sent(&back, &syn_ack));
    assert_eq!(wire.dst, A1.parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(wire.ports, Some((80, 40000)));

    // A second pod's connection from the same port gets another one.
    let other = syn6(mac(2), mac(0xa1), A2, 40000, B1, 80);
    let second = simulate(&topo, &tables, POD_A2, &other);
    let port = second.outputs[0].rewrite.src_port.expect("40000 is taken");
    assert_ne!(port, 40000);
    sent(&second, &other);
}

#[test]
fn a_masquerade_rule_without_ip_version_leaves_ipv6_routed() {
    let topo = masquerading(None);
    let syn = syn6(mac(1), mac(0xa1), A1, 40000, B1, 80);
    let v6 = simulate(&topo, &LearnedTables::default(), POD_A1, &syn);
    assert_eq!(out_ports(&v6), vec![POD_B1], "{:#?}", v6.trace);
    let rewrite = v6.outputs[0].rewrite;
    assert_eq!((rewrite.ip_src, rewrite.src_port), (None, None));
    assert!(
        trace_has(&v6, "nat", "leaves IPv6 routed"),
        "{:#?}",
        v6.trace
    );
    assert_eq!(
        ip6(&sent(&v6, &syn)).src,
        A1.parse::<std::net::Ipv6Addr>().unwrap()
    );
    // IPv4 through the same rule is masqueraded as ever.
    let v4 = simulate(
        &topo,
        &LearnedTables::default(),
        POD_A1,
        &super::policy::udp(mac(1), mac(0xa1), "10.0.1.10", 40000, "10.0.2.10", 53),
    );
    assert_eq!(v4.outputs[0].rewrite.ip_src, Some(ip("10.0.2.1")));
    // And a rule for IPv6 leaves IPv4 alone: it does not match it.
    let only6 = masquerading(Some(6));
    let v4 = simulate(
        &only6,
        &LearnedTables::default(),
        POD_A1,
        &super::policy::udp(mac(1), mac(0xa1), "10.0.1.10", 40000, "10.0.2.10", 53),
    );
    assert_eq!(v4.outputs[0].rewrite.ip_src, None);
}

#[test]
fn masquerade_needs_a_global_ipv6_address_on_the_egress_port() {
    let topo = masquerading(Some(6));
    let port_b = topo.ports.get(&RP_B).unwrap();
    assert_eq!(
        port_b.masquerade_ipv6_for(&B1.parse().unwrap()),
        Some(RB.parse().unwrap())
    );
    let link_local_only = dual_stack(|recs| {
        for record in recs.iter_mut() {
            if let Record::Port(p) = record {
                if p.id == RP_B {
                    p.extra_addresses = vec!["fe80::99/64".parse().unwrap()];
                }
            }
        }
    });
    let port_b = link_local_only.ports.get(&RP_B).unwrap();
    assert_eq!(
        port_b.masquerade_ipv6_for(&B1.parse().unwrap()),
        None,
        "never a link-local address"
    );
    let mut rule = Rule::new(CHAIN, 1, RuleAction::Masquerade);
    rule.ip_version = Some(6);
    let key = crate::conntrack::ConnKey {
        proto: 6,
        src: ip(A1),
        dst: ip(B1),
        sport: 40000,
        dport: 80,
    };
    assert_eq!(
        nat::choose(&NothingLearned, ROUTER, &rule, key, None),
        Err(nat::Untranslated::NoEgressAddress)
    );
    assert_eq!(
        nat::choose(&NothingLearned, ROUTER, &rule, key, Some(ip("10.0.2.1"))),
        Err(nat::Untranslated::NoEgressAddress),
        "nor one of the other family"
    );
}

#[test]
fn icmpv6_echo_is_masqueraded_by_its_identifier() {
    let topo = masquerading(Some(6));
    let mut tables = LearnedTables::default();
    let first = echo6(mac(1), mac(0xa1), A1, B1, 128, 0x1234);
    let a = simulate(&topo, &tables, POD_A1, &first);
    assert_eq!(out_ports(&a), vec![POD_B1], "{:#?}", a.trace);
    assert_eq!(a.outputs[0].rewrite.ip_src, Some(ip(RB)));
    assert_eq!(ip6(&sent(&a, &first)).icmp_ident, Some(0x1234));
    learn(&mut tables, &a);
    let second = echo6(mac(2), mac(0xa1), A2, B1, 128, 0x1234);
    let b = simulate(&topo, &tables, POD_A2, &second);
    let ident = b.outputs[0].rewrite.src_port.expect("a new identifier");
    assert_ne!(ident, 0x1234);
    assert_eq!(ip6(&sent(&b, &second)).icmp_ident, Some(ident));
    learn(&mut tables, &b);

    for (id, pod, addr) in [(0x1234, POD_A1, A1), (ident, POD_A2, A2)] {
        let reply = echo6(mac(3), mac(0xb1), B1, RB, 129, id);
        let back = simulate(&topo, &tables, POD_B1, &reply);
        assert_eq!(out_ports(&back), vec![pod], "{:#?}", back.trace);
        let wire = ip6(&sent(&back, &reply));
        assert_eq!(wire.dst, addr.parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(wire.icmp_ident, Some(0x1234));
    }
}

#[test]
fn an_icmpv6_error_about_a_masqueraded_flow_is_translated_back() {
    let topo = masquerading(Some(6));
    let mut tables = LearnedTables::default();
    let request = udp6(A1, 40000, B1, 33434);
    let out = simulate(&topo, &tables, POD_A1, &request);
    let received = sent(&out, &request);
    learn(&mut tables, &out);
    // B1's port unreachable, quoting what it received, to the router port.
    let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&received[14..]);
    let error = checksummed(v6_frame(mac(3), mac(0xb1), B1, RB, 58, &icmp));
    let sim = simulate(&topo, &tables, POD_B1, &error);
    assert!(
        sim.outputs.is_empty(),
        "translated errors are whole new bytes"
    );
    assert_eq!(sim.generated.len(), 1, "{:#?}", sim.trace);
    assert_eq!(sim.generated[0].egress.port, POD_A1);
    let frame = &sim.generated[0].frame;
    assert!(
        upper_checksum_valid(frame),
        "the ICMPv6 checksum over the new pseudo-header"
    );
    let outer = ip6(frame);
    assert_eq!(
        outer.src,
        B1.parse::<std::net::Ipv6Addr>().unwrap(),
        "the reporter stays visible"
    );
    assert_eq!(outer.dst, A1.parse::<std::net::Ipv6Addr>().unwrap());
    let quoted = outer.icmp_quoted.unwrap();
    assert_eq!((quoted.src, quoted.sport), (ip(A1), 40000));
    // The quoted datagram is the pod's own again, its UDP checksum too.
    let quote = &frame[14 + IPV6_HEADER_LEN + 8..];
    assert_eq!(&quote[8..], &request[14 + 8..], "all but the hop limit");
    assert!(trace_has(&sim, "conntrack", "related"));
    assert!(trace_has(&sim, "nat", "ICMP error translated"));
}

#[test]
fn snat_and_dnat_translate_ipv6_to_ipv6_targets_only() {
    let target = |from: &str, to: Option<&str>, ports: Option<(u16, u16)>| NatTarget {
        address_from: ip(from),
        address_to: to.map(ip),
        port_from: ports.map(|p| p.0),
        port_to: ports.map(|p| p.1),
    };
    let snat = target(
        "2001:db8:ff::1",
        Some("2001:db8:ff::2"),
        Some((20000, 20099)),
    );
    let topo = with_router_chain(false, move |r: &mut Rule| {
        r.action = RuleAction::Snat;
        r.out_port_ids = vec![RP_B];
        r.nat_targets = vec![snat];
    });
    let mut tables = LearnedTables::default();
    let syn = syn6(mac(1), mac(0xa1), A1, 40000, B1, 80);
    let out = simulate(&topo, &tables, POD_A1, &syn);
    let rewrite = out.outputs[0].rewrite;
    let src = rewrite.ip_src.expect("translated");
    assert!(
        src == ip("2001:db8:ff::1") || src == ip("2001:db8:ff::2"),
        "{src}"
    );
    let port = rewrite.src_port.expect("into the port range");
    assert!((20000..=20099).contains(&port));
    sent(&out, &syn);
    learn(&mut tables, &out);
    let IpAddr::V6(public) = src else {
        unreachable!()
    };
    let syn_ack = checksummed(tcp6(
        mac(3),
        mac(0xb1),
        B1,
        80,
        &public.to_string(),
        port,
        0x12,
    ));
    let back = simulate(&topo, &tables, POD_B1, &syn_ack);
    assert_eq!(out_ports(&back), vec![POD_A1], "{:#?}", back.trace);
    assert_eq!(
        (
            back.outputs[0].rewrite.ip_dst,
            back.outputs[0].rewrite.dst_port
        ),
        (Some(ip(A1)), Some(40000))
    );
    // IPv4 through the same rule: no target of its family, untranslated.
    let v4 = simulate(
        &topo,
        &tables,
        POD_A1,
        &super::policy::udp(mac(1), mac(0xa1), "10.0.1.10", 40000, "10.0.2.10", 53),
    );
    assert_eq!(v4.outputs[0].rewrite.ip_src, None);
    assert!(trace_has(
        &v4,
        "nat",
        "no nat target of the packet's family"
    ));

    // DNAT: port 8080 on router port A's address to B1 port 80.
    let dnat = target(B1, None, Some((80, 80)));
    let topo = with_router_chain(true, move |r: &mut Rule| {
        r.action = RuleAction::Dnat;
        r.protocol = Some(nsdb::IpProto::TCP);
        r.dst_cidr = Some(format!("{RA}/128").parse().unwrap());
        r.dst_ports = Some(nsdb::PortRange {
            start: 8080,
            end: 8080,
        });
        r.nat_targets = vec![target("192.0.2.99", None, None), dnat];
    });
    let mut tables = LearnedTables::default();
    let syn = syn6(mac(1), mac(0xa1), A1, 5555, RA, 8080);
    let forward = simulate(&topo, &tables, POD_A1, &syn);
    assert_eq!(out_ports(&forward), vec![POD_B1], "{:#?}", forward.trace);
    let rewrite = forward.outputs[0].rewrite;
    assert_eq!((rewrite.ip_dst, rewrite.dst_port), (Some(ip(B1)), Some(80)));
    sent(&forward, &syn);
    learn(&mut tables, &forward);
    let syn_ack = checksummed(tcp6(mac(3), mac(0xb1), B1, 80, A1, 5555, 0x12));
    let reply = simulate(&topo, &tables, POD_B1, &syn_ack);
    assert_eq!(out_ports(&reply), vec![POD_A1], "{:#?}", reply.trace);
    let rewrite = reply.outputs[0].rewrite;
    assert_eq!(
        (rewrite.ip_src, rewrite.src_port),
        (Some(ip(RA)), Some(8080))
    );
    sent(&reply, &syn_ack);
}

#[test]
fn mangled_frames_through_an_ipv6_masquerade_never_panic() {
    let topo = masquerading(Some(6));
    let mut tables = LearnedTables::default();
    let request = udp6(A1, 40000, B1, 33434);
    let out = simulate(&topo, &tables, POD_A1, &request);
    let received = sent(&out, &request);
    learn(&mut tables, &out);
    let ping = echo6(mac(1), mac(0xa1), A1, B1, 128, 7);
    let pinged = simulate(&topo, &tables, POD_A1, &ping);
    learn(&mut tables, &pinged);
    let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&received[14..]);
    let samples = [
        (POD_A1, syn6(mac(1), mac(0xa1), A1, 40001, B1, 80)),
        (POD_A1, request),
        (POD_A1, ping),
        (POD_B1, echo6(mac(3), mac(0xb1), B1, RB, 129, 7)),
        (POD_B1, udp6(B1, 33434, RB, 40000)),
        (
            POD_B1,
            checksummed(v6_frame(mac(3), mac(0xb1), B1, RB, 58, &icmp)),
        ),
    ];
    let mut state = 0x853c_49e6_748f_ea9b_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut translated = 0;
    for round in 0..20_000 {
        let (ingress, sample) = &samples[round % samples.len()];
        let mut frame = sample.clone();
        for _ in 0..1 + next() % 3 {
            let at = 14 + (next() as usize) % (frame.len() - 14);
            frame[at] = next() as u8;
        }
        if next() % 3 == 0 {
            frame.truncate(14 + (next() as usize) % (frame.len() - 13));
        }
        let sim = simulate(&topo, &tables, *ingress, &frame);
        for output in &sim.outputs {
            let mut bytes = frame.clone();
            if output.rewrite.ip_src.is_some() || output.rewrite.ip_dst.is_some() {
                translated += 1;
            }
            let _ = apply_rewrite(&mut bytes, &output.rewrite, next() % 2 == 0);
        }
        for generated in &sim.generated {
            assert!(PacketInfo::parse(&generated.frame).is_ok());
        }
    }
    assert!(
        translated > 1_000,
        "the mangling leaves work for NAT: {translated}"
    );
}

/// A fragment of a UDP datagram from A1 to B1: fragment header at
/// `offset` (bytes) with `more`, then `data`.
fn fragment6(offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
    let mut body = vec![17, 0];
    body.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
    body.extend_from_slice(&0x6666_u32.to_be_bytes());
    body.extend_from_slice(data);
    v6_frame(mac(1), mac(0xa1), A1, B1, 44, &body)
}

#[test]
fn later_ipv6_fragments_are_masqueraded_with_their_first() {
    let topo = masquerading(Some(6));
    let mut tables = LearnedTables::default();
    let mut udp = vec![0x9c, 0x40, 0, 53, 0, 32, 0x12, 0x34];
    udp.extend_from_slice(&[7; 8]);
    let first = simulate(&topo, &tables, POD_A1, &fragment6(0, true, &udp));
    assert_eq!(out_ports(&first), vec![POD_B1], "{:#?}", first.trace);
    assert_eq!(first.outputs[0].rewrite.ip_src, Some(ip(RB)));
    learn(&mut tables, &first);
    let later_frame = fragment6(16, false, &[0xab; 16]);
    let later = simulate(&topo, &tables, POD_A1, &later_frame);
    assert_eq!(out_ports(&later), vec![POD_B1], "{:#?}", later.trace);
    assert_eq!(later.outputs[0].rewrite.ip_src, Some(ip(RB)));
    let mut bytes = later_frame.clone();
    assert!(apply_rewrite(&mut bytes, &later.outputs[0].rewrite, false));
    assert_eq!(ip6(&bytes).src, RB.parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(
        &bytes[bytes.len() - 16..],
        &[0xab; 16],
        "the data untouched"
    );
}
