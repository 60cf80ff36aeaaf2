//! The tenant network plan without a store: what an IPv4-only and a
//! dual-stack provider make, and which ranges a plan avoids.

use std::net::IpAddr;

use ipnet::IpNet;
use nsdb::{
    IpPool, Mutation, Port, Provider, ProviderIpv6, Record, Route, Rule, RuleAction, Tenant,
};
use uuid::Uuid;

use super::{plan, Inputs, Plan, Request};
use crate::provision::new_port;

fn provider(ipv6: bool) -> Provider {
    Provider {
        id: Uuid::new_v4(),
        revision: 1,
        tenant_id: Uuid::new_v4(),
        router_id: Uuid::new_v4(),
        uplink_port_id: Some(Uuid::new_v4()),
        uplink_gateway: Some("100.64.0.1".parse().unwrap()),
        link_cidr: "169.254.0.0/16".parse().unwrap(),
        pod_cidr: "10.128.0.0/12".parse().unwrap(),
        pod_prefix_len: 24,
        external_cidr: "100.64.1.0/24".parse().unwrap(),
        pod_mtu: 1450,
        ipv6: ipv6.then(|| ProviderIpv6 {
            link_cidr: "fd00:1::/64".parse().unwrap(),
            pod_cidr: "fd00:8000::/33".parse().unwrap(),
            pod_prefix_len: 64,
            uplink_gateway: Some("fd00::1".parse().unwrap()),
        }),
    }
}

fn tenant() -> Tenant {
    Tenant {
        id: Uuid::new_v4(),
        revision: 3,
        name: "acme".into(),
        network: None,
    }
}

fn empty() -> Inputs {
    Inputs {
        provider_ports: Vec::new(),
        pools: Vec::new(),
    }
}

fn created<T>(plan: &Plan, pick: impl Fn(&Record) -> Option<T>) -> Vec<T> {
    plan.batch
        .iter()
        .filter_map(|m| match m {
            Mutation::Create(r) => pick(r),
            _ => None,
        })
        .collect()
}

fn ports(plan: &Plan) -> Vec<Port> {
    created(plan, |r| match r {
        Record::Port(p) => Some(p.clone()),
        _ => None,
    })
}

fn routes(plan: &Plan) -> Vec<(String, String)> {
    created(plan, |r| match r {
        Record::Route(Route {
            dst,
            next_hop_gateway,
            ..
        }) => Some((dst.to_string(), next_hop_gateway.unwrap().to_string())),
        _ => None,
    })
}

fn rules(plan: &Plan) -> Vec<Rule> {
    created(plan, |r| match r {
        Record::Rule(rule) => Some(rule.clone()),
        _ => None,
    })
}

fn pools(plan: &Plan) -> Vec<IpPool> {
    created(plan, |r| match r {
        Record::IpPool(p) => Some(p.clone()),
        _ => None,
    })
}

fn strings(nets: &[IpNet]) -> Vec<String> {
    nets.iter().map(|n| n.to_string()).collect()
}

#[test]
fn without_an_ipv6_plan_the_network_is_ipv4_only() {
    let plan = plan(&tenant(), &provider(false), &empty(), Request::default()).unwrap();
    assert!(plan.pool6.is_none());
    assert!(ports(&plan).iter().all(|p| p.extra_addresses.is_empty()));
    assert_eq!(pools(&plan).len(), 1);
    assert_eq!(pools(&plan)[0].cidr.to_string(), "10.128.0.0/24");
    assert_eq!(
        routes(&plan),
        [
            ("0.0.0.0/0".into(), "169.254.0.1".into()),
            ("10.128.0.0/24".into(), "169.254.0.2".into()),
        ]
    );
    let sources: Vec<Option<String>> = rules(&plan)
        .iter()
        .map(|r| r.src_cidr.or(r.dst_cidr).map(|c| c.to_string()))
        .collect();
    assert_eq!(
        sources,
        [
            None,
            Some("100.64.0.1/32".into()),
            None,
            Some("100.64.0.1/32".into()),
            None
        ]
    );
    let Some(Mutation::Update {
        record: Record::Tenant(t),
        ..
    }) = plan.batch.last()
    else {
        panic!("the tenant update comes last");
    };
    let network = t.network.unwrap();
    assert_eq!(network.pod_cidr6, None);
    // What an IPv4-only network stores is what it stored before IPv6.
    let json = serde_json::to_value(network).unwrap();
    assert!(json.get("pod_cidr6").is_none(), "{json}");
}

#[test]
fn an_ipv6_plan_makes_the_network_dual_stack_in_the_same_batch() {
    let provider = provider(true);
    let plan = plan(&tenant(), &provider, &empty(), Request::default()).unwrap();
    let ports = ports(&plan);
    let extra = |id: Uuid| strings(&ports.iter().find(|p| p.id == id).unwrap().extra_addresses);
    assert_eq!(extra(plan.link.id), ["fd00:1::2/126"]);
    assert_eq!(extra(plan.link.peer_id.unwrap()), ["fd00:1::1/126"]);
    assert_eq!(extra(plan.gateway_port.id), ["fd00:8000::1/64"]);
    assert_eq!(
        extra(plan.gateway_port.peer_id.unwrap()),
        Vec::<String>::new()
    );
    let pool6 = plan.pool6.clone().expect("an IPv6 pool");
    assert_eq!(pool6.cidr.to_string(), "fd00:8000::/64");
    assert_eq!(pool6.gateway, Some("fd00:8000::1".parse().unwrap()));
    assert_eq!(pool6.bridge_id, Some(plan.bridge.id));
    assert_eq!(pools(&plan), [plan.pool.clone(), pool6]);
    assert_eq!(
        routes(&plan),
        [
            ("0.0.0.0/0".into(), "169.254.0.1".into()),
            ("::/0".into(), "fd00:1::1".into()),
            ("10.128.0.0/24".into(), "169.254.0.2".into()),
            ("fd00:8000::/64".into(), "fd00:1::2".into()),
        ]
    );
    let rules = rules(&plan);
    let inbound = plan.router.inbound_chain_id.unwrap();
    let host_in: Vec<(u32, String)> = rules
        .iter()
        .filter(|r| r.chain_id == inbound && r.action == RuleAction::Accept)
        .filter_map(|r| Some((r.position, r.src_cidr?.to_string())))
        .collect();
    assert_eq!(
        host_in,
        [(2, "100.64.0.1/32".into()), (3, "fd00::1/128".into())]
    );
    let drop = rules.iter().find(|r| r.action == RuleAction::Drop).unwrap();
    assert_eq!(drop.position, 4, "the host rules come before the drop");
    let masquerade = rules
        .iter()
        .find(|r| r.action == RuleAction::Masquerade)
        .unwrap();
    assert_eq!(masquerade.position, 3, "after both host accepts");
    assert_eq!(
        masquerade.ip_version, None,
        "IPv4's: without ip_version 6 it leaves IPv6 routed"
    );
    assert_eq!(masquerade.src_cidr, None);
    let Some(Mutation::Update {
        record: Record::Tenant(t),
        ..
    }) = plan.batch.last()
    else {
        panic!("the tenant update comes last");
    };
    let network = t.network.unwrap();
    assert_eq!(
        network.pod_cidr6.map(|c| c.to_string()).as_deref(),
        Some("fd00:8000::/64")
    );
}

#[test]
fn a_nat_only_dual_stack_network_routes_and_lets_in_nothing() {
    let request = Request {
        nat_only: true,
        ..Request::default()
    };
    let plan = plan(&tenant(), &provider(true), &empty(), request).unwrap();
    assert!(plan.pool6.is_some(), "its pods still get IPv6 addresses");
    assert_eq!(
        routes(&plan),
        [
            ("0.0.0.0/0".into(), "169.254.0.1".into()),
            ("::/0".into(), "fd00:1::1".into()),
        ]
    );
    assert!(rules(&plan)
        .iter()
        .all(|r| r.src_cidr.is_none() && r.dst_cidr.is_none()));
}

#[test]
fn the_ipv6_link_follows_the_ipv4_link_and_prefixes_skip_used_pools() {
    let provider = provider(true);
    let taken = new_port(
        provider.router_id,
        nsdb::DeviceType::Router,
        Some("169.254.0.1/30".parse().unwrap()),
    );
    let pool = |cidr: &str| IpPool {
        id: Uuid::new_v4(),
        revision: 1,
        tenant_id: None,
        name: cidr.into(),
        cidr: cidr.parse().unwrap(),
        gateway: None,
        bridge_id: None,
    };
    let inputs = Inputs {
        provider_ports: vec![taken],
        pools: vec![pool("fd00:8000::/63"), pool("10.128.0.0/23")],
    };
    let plan = plan(&tenant(), &provider, &inputs, Request::default()).unwrap();
    assert_eq!(
        plan.link.address.map(|a| a.to_string()).as_deref(),
        Some("169.254.0.6/30")
    );
    assert_eq!(strings(&plan.link.extra_addresses), ["fd00:1::6/126"]);
    assert_eq!(plan.pool.cidr.to_string(), "10.128.2.0/24");
    let pool6 = plan.pool6.unwrap();
    assert_eq!(pool6.cidr.to_string(), "fd00:8000:0:2::/64");
    assert_eq!(
        pool6.gateway,
        Some(IpAddr::V6("fd00:8000:0:2::1".parse().unwrap()))
    );
    // A requested prefix is taken as given and named after the tenant too.
    let request = Request {
        pod_cidr6: Some("fd99::/56".parse().unwrap()),
        ..Request::default()
    };
    let t = tenant();
    let plan = super::plan(&t, &provider, &inputs, request).unwrap();
    let pool6 = plan.pool6.unwrap();
    assert_eq!(pool6.cidr.to_string(), "fd99::/56");
    assert_eq!(pool6.name, format!("pods fd99::/56 {}", t.id));
}

#[test]
fn a_full_ipv6_link_range_is_exhausted() {
    let mut provider = provider(true);
    if let Some(v6) = provider.ipv6.as_mut() {
        v6.link_cidr = "fd00:1::/126".parse().unwrap();
    }
    let taken = new_port(
        provider.router_id,
        nsdb::DeviceType::Router,
        Some("169.254.0.1/30".parse().unwrap()),
    );
    let inputs = Inputs {
        provider_ports: vec![taken],
        pools: Vec::new(),
    };
    let problem = plan(&tenant(), &provider, &inputs, Request::default())
        .err()
        .expect("one /126 holds one link");
    assert!(problem.detail.contains("fd00:1::/126"), "{problem:?}");
}
