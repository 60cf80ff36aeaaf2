//! Selector groups: members computed from port labels, in rule conditions
//! like any group, following label changes (and invalidating exactly the
//! flows of the groups whose members moved).

use nsdb::{
    IpAddressGroup, LabelSelector, PortGroup, RuleAction, SelectorOperator, SelectorRequirement,
};

use super::policy::{attach, chain, rule};
use super::*;

const WEB: Uuid = Uuid::from_u128(0x5e1);
const WEB_ADDRESSES: Uuid = Uuid::from_u128(0x5e2);
const CHAIN: Uuid = Uuid::from_u128(0xc5);

/// The fixture with pod A1 labelled `app=web`, A2 labelled `labels_a2`, a
/// group selecting `app=web` on bridge A's inbound chain: members of the
/// group may not send to the address group of `tier` pods (none unless
/// labelled).
fn labelled(labels_a2: &[(&str, &str)], tier_b1: bool) -> Topology {
    let mut recs = records(Vec::new());
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            let labels: &[(&str, &str)] = match p.id {
                id if id == POD_A1 => &[("app", "web"), ("plexus.io/namespace", "x")],
                id if id == POD_A2 => labels_a2,
                id if id == POD_B1 && tier_b1 => &[("tier", "db")],
                _ => &[],
            };
            p.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
    }
    let web = LabelSelector {
        match_labels: [("app".to_string(), "web".to_string())].into(),
        ..LabelSelector::default()
    };
    recs.push(Record::PortGroup(PortGroup {
        id: WEB,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "web".into(),
        port_ids: Vec::new(),
        selector: Some(web),
    }));
    recs.push(Record::IpAddressGroup(IpAddressGroup {
        id: WEB_ADDRESSES,
        revision: 1,
        tenant_id: Uuid::nil(),
        name: "db".into(),
        addresses: Vec::new(),
        selector: Some(LabelSelector {
            match_expressions: vec![SelectorRequirement {
                key: "tier".into(),
                operator: SelectorOperator::Exists,
                values: Vec::new(),
            }],
            ..LabelSelector::default()
        }),
    }));
    recs.push(chain(CHAIN));
    recs.push(rule(CHAIN, 1, RuleAction::Drop, |rule| {
        rule.in_port_group_id = Some(WEB);
        rule.dst_ip_group_id = Some(WEB_ADDRESSES);
    }));
    attach(&mut recs, BRIDGE_A, Some(CHAIN), None);
    Topology::build(1, &recs)
}

fn to_b1(topo: &Topology, from: Uuid, mac_n: u8, ip: &str) -> Simulation {
    simulate(
        topo,
        &NothingLearned,
        from,
        &ping(mac(mac_n), mac(0xa1), ip, "10.0.2.10", 64),
    )
}

#[test]
fn selector_groups_follow_labels() {
    let topo = labelled(&[], true);
    assert!(topo.port_groups[&WEB].contains(&POD_A1));
    assert!(!topo.port_groups[&WEB].contains(&POD_A2));
    assert_eq!(
        topo.ip_groups[&WEB_ADDRESSES],
        vec!["10.0.2.10/32".parse().unwrap()],
        "the address group holds the selected ports' addresses"
    );
    let web = to_b1(&topo, POD_A1, 1, "10.0.1.10");
    assert_eq!(web.drops, vec![DropReason::RuleDrop], "{:#?}", web.trace);
    assert!(web.tags.contains(&Tag::Group(WEB)));
    let other = to_b1(&topo, POD_A2, 2, "10.0.1.11");
    assert_eq!(out_ports(&other), vec![POD_B1]);

    // A2 gets the label: it is in the group.
    let relabelled = labelled(&[("app", "web")], true);
    let now = to_b1(&relabelled, POD_A2, 2, "10.0.1.11");
    assert_eq!(now.drops, vec![DropReason::RuleDrop]);
    // B1 loses its tier: the address group is empty, nothing matches.
    let untiered = labelled(&[("app", "web")], false);
    assert!(untiered.ip_groups[&WEB_ADDRESSES].is_empty());
    assert_eq!(
        out_ports(&to_b1(&untiered, POD_A1, 1, "10.0.1.10")),
        vec![POD_B1]
    );
}

#[test]
fn a_label_change_invalidates_the_groups_it_moves() {
    let before = labelled(&[], true);
    let after = labelled(&[("app", "web")], true);
    assert_eq!(
        crate::feed::changed_groups(&before, &after),
        vec![Tag::Group(WEB)]
    );
    let untiered = labelled(&[], false);
    assert_eq!(
        crate::feed::changed_groups(&before, &untiered),
        vec![Tag::Group(WEB_ADDRESSES)]
    );
    assert!(crate::feed::changed_groups(&before, &labelled(&[], true)).is_empty());
}
