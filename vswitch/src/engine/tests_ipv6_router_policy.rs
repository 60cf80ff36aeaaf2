//! IPv6 through the router, continued: rule chains and connection
//! tracking in the router's zone, the `ip_version` condition, and mangled
//! frames.

use super::ipv6::tcp6;
use super::ipv6_router::{dual_stack, nd, ping6, solicit, udp6, A1, A2, B1, RA, RB};
use super::*;

/// The dual-stack fixture with a chain of `rules` on `port` (inbound when
/// `inbound`, else outbound).
fn with_chain(port: Uuid, inbound: bool, rules: Vec<nsdb::Rule>) -> Topology {
    const CHAIN: Uuid = Uuid::from_u128(0xc6c6);
    dual_stack(|recs| {
        recs.push(Record::Chain(nsdb::Chain {
            id: CHAIN,
            revision: 1,
            tenant_id: Uuid::nil(),
            name: "v6-router".into(),
        }));
        for (n, mut rule) in rules.into_iter().enumerate() {
            rule.chain_id = CHAIN;
            rule.id = Uuid::from_u128(0xc6c600 + n as u128);
            rule.position = n as u32 + 1;
            recs.push(Record::Rule(rule));
        }
        for record in recs.iter_mut() {
            if let Record::Port(p) = record {
                if p.id == port && inbound {
                    p.inbound_chain_id = Some(CHAIN);
                } else if p.id == port {
                    p.outbound_chain_id = Some(CHAIN);
                }
            }
        }
    })
}

fn rule_with(action: nsdb::RuleAction, edit: impl FnOnce(&mut nsdb::Rule)) -> nsdb::Rule {
    let mut rule = nsdb::Rule::new(Uuid::nil(), 0, action);
    edit(&mut rule);
    rule
}

#[test]
fn an_ip_version_rule_matches_its_family_only() {
    let topo = with_chain(
        RP_B,
        false,
        vec![rule_with(nsdb::RuleAction::Drop, |r| {
            r.ip_version = Some(6)
        })],
    );
    let v6 = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping6(mac(1), mac(0xa1), A1, B1, 64),
    );
    assert_eq!(v6.drops, vec![DropReason::RuleDrop], "{:#?}", v6.trace);
    let v4 = simulate(
        &topo,
        &NothingLearned,
        POD_A1,
        &ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10", 64),
    );
    assert_eq!(out_ports(&v4), vec![POD_B1], "{:#?}", v4.trace);
}

#[test]
fn ipv6_across_the_router_is_tracked_in_its_zone() {
    // What enters the router from bridge B: replies only.
    let topo = with_chain(
        RP_B,
        true,
        vec![
            rule_with(nsdb::RuleAction::Accept, |r| {
                r.conn_state = vec![nsdb::ConnState::Established]
            }),
            rule_with(nsdb::RuleAction::Drop, |r| {
                r.conn_state = vec![nsdb::ConnState::New]
            }),
        ],
    );
    let mut tables = crate::learned::LearnedTables::default();
    let syn = tcp6(mac(1), mac(0xa1), A1, 40000, B1, 22, 0x02);
    let sim = simulate(&topo, &tables, POD_A1, &syn);
    assert_eq!(out_ports(&sim), vec![POD_B1], "{:#?}", sim.trace);
    let conns: Vec<_> = sim
        .learned
        .iter()
        .filter_map(|l| match l {
            Learning::Conn(entry) => Some(entry.zone),
            _ => None,
        })
        .collect();
    assert!(
        conns.contains(&ROUTER),
        "tracked in the router's zone: {conns:?}"
    );
    for learning in &sim.learned {
        tables.learn(learning, 0);
    }
    let syn_ack = tcp6(mac(3), mac(0xb1), B1, 22, A1, 40000, 0x12);
    let reply = simulate(&topo, &tables, POD_B1, &syn_ack);
    assert_eq!(out_ports(&reply), vec![POD_A1], "{:#?}", reply.trace);
    let new = simulate(
        &topo,
        &tables,
        POD_B1,
        &tcp6(mac(3), mac(0xb1), B1, 40001, A1, 22, 0x02),
    );
    assert_eq!(new.drops, vec![DropReason::RuleDrop], "{:#?}", new.trace);
}

#[test]
fn mangled_ipv6_frames_never_panic_the_router() {
    let topo = dual_stack(|_| ());
    let ll = crate::wire::link_local_from_mac(mac(1)).to_string();
    let mut rs_body = vec![1, 1];
    rs_body.extend_from_slice(&mac(1));
    let samples = [
        ping6(mac(1), mac(0xa1), A1, B1, 2),
        ping6(mac(1), mac(0xa1), A1, "2001:db8:55::1", 64),
        solicit(mac(1), A1, RA),
        solicit(mac(1), "::", A2),
        nd(
            mac(1),
            &ll,
            ("ff02::2", [0x33, 0x33, 0, 0, 0, 2]),
            133,
            &rs_body,
        ),
        udp6(mac(1), mac(0xa1), A1, RA),
        tcp6(mac(1), mac(0xa1), A1, 40000, RB, 22, 0x02),
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut answered = 0;
    for round in 0..20_000 {
        let mut frame = samples[round % samples.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % frame.len();
            frame[at] = next() as u8;
        }
        if next() % 2 == 0 {
            frame.truncate(14 + (next() as usize) % (frame.len() - 13));
        }
        for ingress in [POD_A1, RP_A] {
            let sim = simulate(&topo, &NothingLearned, ingress, &frame);
            answered += sim.generated.len();
            for generated in &sim.generated {
                assert!(PacketInfo::parse(&generated.frame).is_ok());
            }
        }
    }
    assert!(
        answered > 1_000,
        "the mangling leaves work for the router: {answered}"
    );
}

#[test]
fn an_icmpv6_error_about_a_tracked_connection_is_related() {
    // What enters the router from bridge B: established or related only.
    let topo = with_chain(
        RP_B,
        true,
        vec![
            rule_with(nsdb::RuleAction::Accept, |r| {
                r.conn_state = vec![nsdb::ConnState::Established, nsdb::ConnState::Related]
            }),
            rule_with(nsdb::RuleAction::Drop, |_| ()),
        ],
    );
    let mut tables = crate::learned::LearnedTables::default();
    let datagram = udp6(mac(1), mac(0xa1), A1, B1);
    // B1 answers port unreachable, quoting the datagram as it arrived.
    let mut quoted = datagram[14..].to_vec();
    quoted[7] = 63;
    let error = |src_mac| {
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&quoted);
        let mut icmp = vec![1, 4, 0, 0];
        icmp.extend_from_slice(&body);
        super::ipv6::v6_frame(src_mac, mac(0xb1), B1, A1, 58, &icmp)
    };
    let before = simulate(&topo, &tables, POD_B1, &error(mac(3)));
    assert_eq!(
        before.drops,
        vec![DropReason::RuleDrop],
        "no connection yet"
    );
    let sim = simulate(&topo, &tables, POD_A1, &datagram);
    assert_eq!(out_ports(&sim), vec![POD_B1], "{:#?}", sim.trace);
    for learning in &sim.learned {
        tables.learn(learning, 0);
    }
    let after = simulate(&topo, &tables, POD_B1, &error(mac(3)));
    assert_eq!(out_ports(&after), vec![POD_A1], "{:#?}", after.trace);
}
