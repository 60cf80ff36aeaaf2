//! A topology whose routes alone changed, built incrementally
//! (`Topology::with_routes`), equals the whole build of the same records,
//! through a chain of changes, and shares everything but the routers; so
//! does one whose ports' bindings alone moved (`Topology::rebind`).

use std::collections::{HashMap, HashSet};

use super::*;
use crate::snapshot::TopologyBase;

const ROUTER2: Uuid = Uuid::from_u128(0x50);
const HOST2: Uuid = Uuid::from_u128(0x4058);
const RP_C: Uuid = Uuid::from_u128(0x51); // router 2's port, 10.0.3.1/24

/// The engine tests' topology, router A's first port also on
/// fd00:1::/64, and a second router with one port.
fn start() -> Vec<Record> {
    let mut recs = records(Vec::new());
    for record in &mut recs {
        if let Record::Port(p) = record {
            if p.id == RP_A {
                p.extra_addresses.push("fd00:1::1/64".parse().unwrap());
            }
        }
    }
    let Some(Record::Router(first)) = recs.iter().find(|r| matches!(r, Record::Router(_))) else {
        unreachable!("the engine tests' records hold a router");
    };
    let mut second = first.clone();
    second.id = ROUTER2;
    recs.push(Record::Router(second));
    recs.push(Record::Port(port(
        RP_C,
        ROUTER2,
        DeviceType::Router,
        0xc1,
        Some("10.0.3.1/24"),
    )));
    recs
}

/// [`start`]'s records as the feed keeps them, by kind and id.
fn start_by_key() -> HashMap<(nsdb::Kind, Uuid), Record> {
    start()
        .into_iter()
        .map(|r| ((r.kind(), r.id()), r))
        .collect()
}

/// Puts `route` (replacing one of the same id), noting its router and the
/// router of the one it replaced.
fn put(recs: &mut Vec<Record>, changed: &mut HashSet<Uuid>, route: Route) {
    remove(recs, changed, route.id);
    changed.insert(route.router_id);
    recs.push(Record::Route(route));
}

/// Deletes route `id`, noting its router.
fn remove(recs: &mut Vec<Record>, changed: &mut HashSet<Uuid>, id: Uuid) {
    recs.retain(|r| match r {
        Record::Route(old) if old.id == id => {
            changed.insert(old.router_id);
            false
        }
        _ => true,
    });
}

/// Route 0x902: fd00:9::/48 out of router A's first port.
fn ipv6_route() -> Route {
    let mut v6 = route(0x902, "fd00:9::/48", Some(RP_A), None, RouteKind::Normal);
    v6.src = "::/0".parse().unwrap();
    v6
}

/// Route 0x901 on the second router, via 10.0.3.7.
fn moved_route() -> Route {
    let mut moved = route(
        0x901,
        "10.9.0.0/16",
        None,
        Some("10.0.3.7"),
        RouteKind::Normal,
    );
    moved.router_id = ROUTER2;
    moved
}

/// Every router's tables, both families, in a comparable form.
fn tables(topo: &Topology) -> Vec<(Uuid, String, String)> {
    let mut out: Vec<_> = topo
        .routers
        .iter()
        .map(|(id, r)| {
            let v4 = format!("{:?}", r.routes.entries());
            let v6 = format!("{:?}", r.routes6.entries());
            (*id, v4, v6)
        })
        .collect();
    out.sort();
    out
}

/// Every port and the tunnel's per-host port lists, in a comparable form.
fn bindings(topo: &Topology) -> (Vec<String>, Vec<String>) {
    let mut ports: Vec<String> = topo.ports.values().map(|p| format!("{p:?}")).collect();
    ports.sort();
    let mut lists: Vec<String> = topo
        .tunnel
        .host_ports
        .iter()
        .map(|(key, ports)| format!("{key:?} {ports:?}"))
        .collect();
    lists.sort();
    (ports, lists)
}

/// Binds port `id` among `recs` to `host` and `interface` (or unbinds it).
fn bind(recs: &mut [Record], id: Uuid, to: Option<(Uuid, &str)>) -> nsdb::Port {
    for record in recs.iter_mut() {
        if let Record::Port(p) = record {
            if p.id == id {
                p.host_id = to.map(|(host, _)| host);
                p.interface_name = to.map(|(_, name)| name.to_string());
                p.revision += 1;
                return p.clone();
            }
        }
    }
    unreachable!("no port {id}");
}

#[test]
fn binding_changes_built_incrementally_equal_the_whole_build() {
    let mut recs = start();
    let mut before = Topology::build(1, &recs);
    type Step<'a> = (&'a str, Uuid, Option<(Uuid, &'a str)>);
    let steps: Vec<Step> = vec![
        ("a pod moved to another host", POD_A1, Some((HOST2, "eth9"))),
        ("a second pod there", POD_A2, Some((HOST2, "eth8"))),
        (
            "a new interface on the same host",
            POD_A2,
            Some((HOST2, "eth7")),
        ),
        ("the first pod back", POD_A1, Some((HOST, "veth1"))),
        ("a pod unbound", POD_A2, None),
        (
            "a pod of the other bridge moved",
            POD_B1,
            Some((HOST2, "eth6")),
        ),
        ("bound again where it was", POD_A2, Some((HOST, "veth2"))),
        (
            "the second pod to the other host first",
            POD_A2,
            Some((HOST2, "eth5")),
        ),
        (
            "the first pod joins it, sorting first",
            POD_A1,
            Some((HOST2, "eth4")),
        ),
        ("only the interface renamed", POD_A1, Some((HOST2, "eth3"))),
    ];
    for (revision, (what, id, to)) in (2..).zip(steps) {
        let port = bind(&mut recs, id, to);
        let refs: Vec<&Record> = recs.iter().collect();
        let mut incremental = before.with_routes(revision, &refs, &HashSet::new());
        incremental.rebind(&port);
        let whole = Topology::build(revision, &recs);
        assert_eq!(bindings(&incremental), bindings(&whole), "{what}");
        assert_eq!(incremental.bridges, whole.bridges, "{what}");
        assert_eq!(tables(&incremental), tables(&whole), "{what}");
        // The routers were not copied.
        for (id, router) in &incremental.routers {
            assert!(
                std::sync::Arc::ptr_eq(router, &before.routers[id]),
                "{what}: router {id}"
            );
        }
        before = incremental;
    }
}

#[test]
fn route_changes_built_incrementally_equal_the_whole_build() {
    let mut recs = start();
    let mut before = Topology::build(1, &recs);
    let gateway = |id, dst, gw| route(id, dst, None, Some(gw), RouteKind::Normal);
    type Step = Box<dyn Fn(&mut Vec<Record>, &mut HashSet<Uuid>)>;
    let steps: Vec<(&str, Step)> = vec![
        (
            "a route added",
            Box::new(move |r, c| put(r, c, gateway(0x901, "10.9.0.0/16", "10.0.2.5"))),
        ),
        (
            "an IPv6 route added",
            Box::new(|r, c| put(r, c, ipv6_route())),
        ),
        (
            "a gateway changed",
            Box::new(move |r, c| put(r, c, gateway(0x901, "10.9.0.0/16", "10.0.1.7"))),
        ),
        (
            "a route on the second router",
            Box::new(|r, c| {
                let mut other = route(
                    0x903,
                    "0.0.0.0/0",
                    None,
                    Some("10.0.3.9"),
                    RouteKind::Normal,
                );
                other.router_id = ROUTER2;
                put(r, c, other)
            }),
        ),
        (
            "a route moved to the second router",
            Box::new(|r, c| put(r, c, moved_route())),
        ),
        (
            "a blackhole and a reject",
            Box::new(|r, c| {
                put(
                    r,
                    c,
                    route(0x904, "192.0.2.0/24", None, None, RouteKind::Blackhole),
                );
                put(
                    r,
                    c,
                    route(0x905, "198.51.100.0/24", None, None, RouteKind::Reject),
                );
            }),
        ),
        (
            "every route deleted",
            Box::new(|r, c| {
                for id in [0x901, 0x902, 0x903, 0x904, 0x905] {
                    remove(r, c, Uuid::from_u128(id));
                }
            }),
        ),
    ];
    for (revision, (what, step)) in (2..).zip(steps) {
        let mut changed = HashSet::new();
        step(&mut recs, &mut changed);
        let refs: Vec<&Record> = recs.iter().collect();
        let incremental = before.with_routes(revision, &refs, &changed);
        let whole = Topology::build(revision, &recs);
        assert_eq!(tables(&incremental), tables(&whole), "{what}");
        assert_eq!(incremental.revision, revision);
        // Nothing but the routers was built again.
        let base = |t: &Topology| -> *const TopologyBase { &**t };
        assert_eq!(
            base(&incremental),
            base(&before),
            "{what}: the base is shared"
        );
        assert_eq!(incremental.ports, whole.ports);
        for (id, router) in &incremental.routers {
            let kept = std::sync::Arc::ptr_eq(router, &before.routers[id]);
            assert_eq!(kept, !changed.contains(id), "{what}: router {id} shared");
        }
        before = incremental;
    }
    // The chain ended where it began: the routers' own networks only.
    let connected = tables(&before);
    assert_eq!(connected, tables(&Topology::build(9, &start())));
}

/// The feed's side: events applied as the watch delivers them, the
/// topology published, against a whole build of the same records; and
/// which kind of build each batch took.
#[test]
fn the_feed_builds_routes_and_bindings_alone_only_when_only_they_changed() {
    use crate::feed::{apply_event, publish, BuildKind, Changes, SharedTopology};
    use nsdb::{Kind, ObjectEvent};

    let mut records = start_by_key();
    let shared = SharedTopology::default();
    publish(&shared, 1, &records, &Changes::everything());
    let mut relabelled = port(RP_C, ROUTER2, DeviceType::Router, 0xc1, Some("10.0.4.1/24"));
    relabelled.revision = 2;
    let put = |r: Route| ObjectEvent::Put(Record::Route(r));
    // The pod ports as the feed holds them now, changed in one respect.
    let current = |id: Uuid| match &records[&(Kind::Port, id)] {
        Record::Port(p) => p.clone(),
        _ => unreachable!("port {id}"),
    };
    let (pod_a1, pod_a2) = (current(POD_A1), current(POD_A2));
    let bound = |port: Uuid, to: Option<(Uuid, &str)>| {
        let mut p = if port == POD_A1 {
            pod_a1.clone()
        } else {
            pod_a2.clone()
        };
        p.host_id = to.map(|(host, _)| host);
        p.interface_name = to.map(|(_, name)| name.to_string());
        p.revision = 3;
        ObjectEvent::Put(Record::Port(p))
    };
    let labelled = |port: Uuid| {
        let mut p = if port == POD_A1 {
            pod_a1.clone()
        } else {
            pod_a2.clone()
        };
        p.host_id = Some(HOST2);
        p.interface_name = Some(if port == POD_A1 { "eth9" } else { "eth8" }.into());
        p.labels.insert("app".into(), "web".into());
        p.revision = 4;
        ObjectEvent::Put(Record::Port(p))
    };
    // Bridge A's side of its router link, bound: not an exterior port.
    let mut linked = current(BP_A);
    linked.host_id = Some(HOST2);
    linked.interface_name = Some("link0".into());
    let linked_bound = move || ObjectEvent::Put(Record::Port(linked.clone()));
    let batches: Vec<(&str, Vec<ObjectEvent>, BuildKind)> = vec![
        (
            "a route added",
            vec![put(route(
                0x901,
                "10.9.0.0/16",
                None,
                Some("10.0.2.5"),
                RouteKind::Normal,
            ))],
            BuildKind::Routes,
        ),
        ("an IPv6 route", vec![put(ipv6_route())], BuildKind::Routes),
        (
            "a route moved to the second router",
            vec![put(moved_route())],
            BuildKind::Routes,
        ),
        (
            "a route and a port's address in one batch",
            vec![
                put(route(
                    0x904,
                    "192.0.2.0/24",
                    None,
                    None,
                    RouteKind::Blackhole,
                )),
                ObjectEvent::Put(Record::Port(relabelled)),
            ],
            BuildKind::Whole,
        ),
        (
            "a pod moved to another host",
            vec![bound(POD_A1, Some((HOST2, "eth9")))],
            BuildKind::Bindings,
        ),
        (
            "a pod unbound, and a route, in one batch",
            vec![
                bound(POD_A2, None),
                put(route(0x905, "192.0.2.0/24", None, None, RouteKind::Reject)),
            ],
            BuildKind::Bindings,
        ),
        ("a pod's labels", vec![labelled(POD_A1)], BuildKind::Whole),
        (
            "a linked bridge port's binding",
            vec![linked_bound()],
            BuildKind::Whole,
        ),
        (
            "a binding, then labels of the same port, in one batch",
            vec![bound(POD_A2, Some((HOST2, "eth8"))), labelled(POD_A2)],
            BuildKind::Whole,
        ),
        (
            "routes deleted",
            [0x901, 0x902, 0x904, 0x905]
                .into_iter()
                .map(|id| ObjectEvent::Deleted {
                    kind: Kind::Route,
                    id: Uuid::from_u128(id),
                })
                .collect(),
            BuildKind::Routes,
        ),
        (
            "a binding, then the port deleted, in one batch",
            vec![
                bound(POD_A1, Some((HOST, "veth1"))),
                ObjectEvent::Deleted {
                    kind: Kind::Port,
                    id: POD_A1,
                },
            ],
            BuildKind::Whole,
        ),
    ];
    for (revision, (what, events, kind)) in (2..).zip(batches) {
        let kinds = [BuildKind::Whole, BuildKind::Routes, BuildKind::Bindings];
        let before = kinds.map(|k| shared.builds(k).0);
        let mut tags = Vec::new();
        let mut changes = Changes::default();
        for event in events {
            apply_event(&mut records, event, &mut tags, &mut changes);
        }
        publish(&shared, revision, &records, &changes);
        let after = kinds.map(|k| shared.builds(k).0);
        let built: Vec<BuildKind> = (0..3)
            .filter(|&k| after[k] > before[k])
            .map(|k| kinds[k])
            .collect();
        assert_eq!(built, vec![kind], "{what}: one build of the kind");
        assert_eq!(
            after.iter().sum::<u64>(),
            before.iter().sum::<u64>() + 1,
            "{what}"
        );
        let list: Vec<&Record> = records.values().collect();
        let whole = Topology::build_from(revision, &list);
        let published = shared.load();
        assert_eq!(tables(&published), tables(&whole), "{what}");
        assert_eq!(bindings(&published), bindings(&whole), "{what}");
        assert_eq!(published.revision, revision);
    }
}

/// A binding change built incrementally still invalidates the flows
/// through the port and the floods of its bridge.
#[test]
fn a_binding_change_still_invalidates_its_port_and_bridge() {
    use crate::feed::{apply_event, Changes};
    use nsdb::{Kind, ObjectEvent};

    let mut records = start_by_key();
    let Record::Port(mut moved) = records[&(Kind::Port, POD_A1)].clone() else {
        unreachable!("a port");
    };
    moved.host_id = Some(HOST2);
    let (mut tags, mut changes) = (Vec::new(), Changes::default());
    apply_event(
        &mut records,
        ObjectEvent::Put(Record::Port(moved)),
        &mut tags,
        &mut changes,
    );
    assert!(tags.contains(&Tag::Port(POD_A1)), "{tags:?}");
    assert!(tags.contains(&Tag::Device(BRIDGE_A)), "{tags:?}");
}
