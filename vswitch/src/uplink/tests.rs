//! The uplink host plan, IPv4 and IPv6, from a small provider topology: the
//! provider router with its uplink port and one tenant link.

use nsdb::{DeviceType, MacAddr, Port, Provider, Record, Route, RouteKind, Router};

use super::*;

const PROVIDER_ROUTER: Uuid = Uuid::from_u128(0x1);
const UPLINK: Uuid = Uuid::from_u128(0x2);
const LINK: Uuid = Uuid::from_u128(0x3);

fn port(id: Uuid, n: u8, address: &str, extra: &[&str]) -> Port {
    Port {
        id,
        revision: 1,
        device_id: PROVIDER_ROUTER,
        device_type: DeviceType::Router,
        mac: MacAddr([0x02, 0, 0, 0, 0, n]),
        address: Some(address.parse().unwrap()),
        extra_addresses: extra.iter().map(|a| a.parse().unwrap()).collect(),
        peer_id: None,
        host_id: None,
        interface_name: None,
        inbound_chain_id: None,
        outbound_chain_id: None,
        allowed_addresses: Vec::new(),
        tunnel_key: n as u32,
        vtep: None,
        labels: Default::default(),
    }
}

fn route(n: u128, dst: &str, port: Uuid, gateway: Option<&str>, kind: RouteKind) -> Route {
    Route {
        id: Uuid::from_u128(0x100 + n),
        revision: 1,
        router_id: PROVIDER_ROUTER,
        dst: dst.parse().unwrap(),
        src: "0.0.0.0/0".parse().unwrap(),
        next_hop_port_id: Some(port),
        next_hop_gateway: gateway.map(|g| g.parse().unwrap()),
        weight: 0,
        kind,
    }
}

/// The provider with its uplink port holding `uplink6` (if any) beside
/// 100.64.0.2/24 and a dual-stack tenant link; plus `routes`.
fn topology(uplink6: &[&str], routes: Vec<Route>) -> Topology {
    let mut records = vec![
        Record::Router(Router {
            id: PROVIDER_ROUTER,
            revision: 1,
            tenant_id: Uuid::from_u128(0x9),
            name: "provider".into(),
            admin_state_up: true,
            inbound_chain_id: None,
            outbound_chain_id: None,
        }),
        Record::Port(port(UPLINK, 2, "100.64.0.2/24", uplink6)),
        Record::Port(port(LINK, 3, "169.254.0.1/30", &["fd00:1ff::1/64"])),
        Record::Provider(Provider {
            id: Uuid::from_u128(0x8),
            revision: 1,
            tenant_id: Uuid::from_u128(0x9),
            router_id: PROVIDER_ROUTER,
            uplink_port_id: Some(UPLINK),
            uplink_gateway: Some("100.64.0.1".parse().unwrap()),
            link_cidr: "169.254.0.0/16".parse().unwrap(),
            pod_cidr: "10.128.0.0/12".parse().unwrap(),
            pod_prefix_len: 24,
            external_cidr: "100.64.1.0/24".parse().unwrap(),
            pod_mtu: 1450,
            ipv6: None,
        }),
    ];
    records.extend(routes.into_iter().map(Record::Route));
    Topology::build(1, &records)
}

fn tenant_routes() -> Vec<Route> {
    vec![
        route(
            1,
            "10.128.0.0/24",
            LINK,
            Some("169.254.0.2"),
            RouteKind::Normal,
        ),
        route(
            2,
            "fd00:10::/64",
            LINK,
            Some("fd00:1ff::2"),
            RouteKind::Normal,
        ),
        route(
            3,
            "fd00:10:1::/64",
            LINK,
            Some("fd00:1ff::2"),
            RouteKind::Normal,
        ),
        // Neither a blackhole nor the way out nor the uplink subnet itself
        // is routed back into the uplink.
        route(4, "fd00:dead::/64", LINK, None, RouteKind::Blackhole),
        route(5, "::/0", UPLINK, Some("fd00:100::1"), RouteKind::Normal),
        route(
            6,
            "fd00:100::/120",
            LINK,
            Some("fd00:1ff::2"),
            RouteKind::Normal,
        ),
    ]
}

fn nets6(list: &[&str]) -> BTreeSet<Ipv6Net> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn an_ipv4_only_uplink_plans_no_ipv6() {
    let plan = plan(&topology(&[], tenant_routes()), UPLINK).unwrap();
    assert_eq!(plan.address, "100.64.0.1/24".parse().unwrap());
    assert_eq!(plan.via, Ipv4Addr::new(100, 64, 0, 2));
    assert!(plan.routes.contains(&"10.128.0.0/12".parse().unwrap()));
    assert_eq!(plan.ipv6, None);
}

#[test]
fn an_ipv6_uplink_routes_the_tenant_prefixes_to_the_host() {
    let topo = topology(&["fd00:100::2/64"], tenant_routes());
    let plan = plan(&topo, UPLINK).unwrap();
    assert_eq!(
        plan.address,
        "100.64.0.1/24".parse().unwrap(),
        "IPv4 as before"
    );
    let v6 = plan.ipv6.expect("the uplink has an IPv6 address");
    assert_eq!(v6.address, "fd00:100::1/64".parse().unwrap());
    assert_eq!(v6.via, "fd00:100::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(
        v6.routes,
        nets6(&["fd00:10::/64", "fd00:10:1::/64", "fd00:1ff::/64"]),
        "the tenants' prefixes and the link subnet, nothing else"
    );
}

#[test]
fn the_host_takes_the_next_address_when_the_port_has_the_first() {
    let topo = topology(&["fe80::2/64", "fd00:100::1/64"], Vec::new());
    let v6 = plan(&topo, UPLINK).unwrap().ipv6.unwrap();
    assert_eq!(v6.address, "fd00:100::2/64".parse().unwrap());
    assert_eq!(v6.via, "fd00:100::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(v6.routes, nets6(&["fd00:1ff::/64"]), "the connected link");
}

#[test]
fn a_link_local_or_tiny_ipv6_uplink_plans_no_ipv6() {
    let topo = topology(&["fe80::2/64"], Vec::new());
    assert_eq!(plan(&topo, UPLINK).unwrap().ipv6, None);
    let topo = topology(&["fd00:100::2/127"], Vec::new());
    assert_eq!(plan(&topo, UPLINK).unwrap().ipv6, None);
    assert!(plan(&topo, LINK).is_none(), "only the uplink has a plan");
}
