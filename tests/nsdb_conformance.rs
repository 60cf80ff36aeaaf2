//! The NSDB conformance suite: every case runs against the embedded store
//! and against a real etcd, and must behave identically on both.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nsdb::*;
use support::Fixture;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn tenant(name: &str) -> Tenant {
    Tenant {
        id: Uuid::new_v4(),
        revision: 0,
        name: name.into(),
        network: None,
    }
}

fn router(tenant: Uuid, name: &str) -> Router {
    Router {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant,
        name: name.into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
    }
}

fn bridge(tenant: Uuid, name: &str) -> Bridge {
    Bridge {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant,
        name: name.into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
        tunnel_key: 0,
    }
}

fn bridge_port(bridge: Uuid) -> Port {
    Port {
        id: Uuid::new_v4(),
        revision: 0,
        device_id: bridge,
        device_type: DeviceType::Bridge,
        mac: MacAddr::random_local(),
        address: None,
        extra_addresses: Vec::new(),
        peer_id: None,
        host_id: None,
        interface_name: None,
        inbound_chain_id: None,
        outbound_chain_id: None,
        allowed_addresses: Vec::new(),
        tunnel_key: 0,
        vtep: None,
        labels: Default::default(),
    }
}

fn router_port(router: Uuid, address: &str) -> Port {
    Port {
        device_type: DeviceType::Router,
        address: Some(address.parse().unwrap()),
        extra_addresses: Vec::new(),
        ..bridge_port(router)
    }
}

fn route(router: Uuid, dst: &str, port: Uuid) -> Route {
    Route {
        id: Uuid::new_v4(),
        revision: 0,
        router_id: router,
        dst: dst.parse().unwrap(),
        src: "0.0.0.0/0".parse().unwrap(),
        next_hop_port_id: Some(port),
        next_hop_gateway: None,
        weight: 100,
        kind: RouteKind::Normal,
    }
}

fn chain(tenant: Uuid, name: &str) -> Chain {
    Chain {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant,
        name: name.into(),
    }
}

fn rule(chain: Uuid, position: u32, action: RuleAction, jump: Option<Uuid>) -> Rule {
    Rule {
        jump_chain_id: jump,
        ..Rule::new(chain, position, action)
    }
}

fn host(name: &str, ip: &str) -> Host {
    Host {
        id: Uuid::new_v4(),
        revision: 0,
        name: name.into(),
        tunnel_ip: ip.parse().unwrap(),
        underlay_mtu: 1500,
        alive: false,
    }
}

fn pool(name: &str, cidr: &str) -> IpPool {
    IpPool {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: None,
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        gateway: None,
        bridge_id: None,
    }
}

/// Every key under the store's prefix (records, indexes, leases) with its
/// value and mod revision: what "unchanged" means. (The revision counter
/// itself is global to an etcd shared by parallel tests, so it is not part
/// of it.)
type RawState = Vec<(String, Vec<u8>, Revision)>;

async fn state(nsdb: &Nsdb) -> RawState {
    let range = nsdb.backend().range("").await.unwrap();
    range
        .entries
        .into_iter()
        .map(|e| (e.key, e.value, e.mod_revision))
        .collect()
}

/// Asserts that `result` is an error and that the store did not change.
async fn assert_rejected<T: std::fmt::Debug>(
    nsdb: &Nsdb,
    before: &RawState,
    result: Result<T, NsdbError>,
) -> NsdbError {
    let error = result.expect_err("the write should have been rejected");
    assert_eq!(
        &state(nsdb).await,
        before,
        "a rejected write ({error}) changed the store"
    );
    error
}

async fn next_commit(watch: &mut NsdbWatch) -> (Revision, Vec<ObjectEvent>) {
    match tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("watch stalled")
    {
        Some(WatchItem::Commit { revision, events }) => (revision, events),
        other => panic!("expected a commit, got {other:?}"),
    }
}

// ---------------------------------------------------------------- cases

async fn crud_round_trip(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("acme")).await.unwrap();
    assert!(t.revision > 0);
    assert_eq!(db.fetch::<Tenant>(t.id).await.unwrap(), t);
    let r = db.create(router(t.id, "r1")).await.unwrap();
    let b = db.create(bridge(t.id, "b1")).await.unwrap();
    let rp = db.create(router_port(r.id, "10.0.1.1/24")).await.unwrap();
    assert!(rp.tunnel_key > 0, "a tunnel key is allocated");
    let bp1 = db.create(bridge_port(b.id)).await.unwrap();
    let bp2 = db.create(bridge_port(b.id)).await.unwrap();
    assert_ne!(bp1.tunnel_key, bp2.tunnel_key);
    let rt = db
        .create(route(r.id, "192.168.0.0/16", rp.id))
        .await
        .unwrap();
    let c = db.create(chain(t.id, "in")).await.unwrap();
    let c2 = db.create(chain(t.id, "sub")).await.unwrap();
    db.create(rule(c.id, 10, RuleAction::Jump, Some(c2.id)))
        .await
        .unwrap();
    let h = db.create(host("node1", "192.0.2.10")).await.unwrap();
    let p = db.create(pool("pods", "10.0.1.0/24")).await.unwrap();
    assert_eq!(
        p.gateway,
        Some("10.0.1.1".parse().unwrap()),
        "gateway defaults to the first host"
    );
    let pg = PortGroup {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: t.id,
        name: "web".into(),
        port_ids: vec![bp1.id],
        selector: None,
    };
    db.create(pg).await.unwrap();
    let ag = IpAddressGroup {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: t.id,
        name: "ops".into(),
        addresses: vec!["10.9.0.0/16".parse().unwrap()],
        selector: None,
    };
    db.create(ag).await.unwrap();

    let mut ports: Vec<Uuid> = db
        .list_by_parent::<Port>(b.id)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    ports.sort();
    let mut expected = vec![bp1.id, bp2.id];
    expected.sort();
    assert_eq!(ports, expected);
    assert_eq!(db.list::<Port>().await.unwrap().len(), 3);
    assert_eq!(
        db.list_by_parent::<Route>(r.id).await.unwrap(),
        vec![rt.clone()]
    );
    assert_eq!(db.list::<Host>().await.unwrap(), vec![h.clone()]);

    // Bind a port, change a field, observe the new revision.
    let mut bound = bp1.clone();
    bound.host_id = Some(h.id);
    bound.interface_name = Some("veth-a".into());
    let bound = db.update(bound, Some(bp1.revision)).await.unwrap();
    assert!(bound.revision > bp1.revision);
    assert_eq!(
        bound.tunnel_key, bp1.tunnel_key,
        "the tunnel key survives updates"
    );
    assert_eq!(db.fetch::<Port>(bp1.id).await.unwrap(), bound);

    let rev = db.delete::<Route>(rt.id, Some(rt.revision)).await.unwrap();
    assert!(rev > bound.revision);
    assert_eq!(db.get::<Route>(rt.id).await.unwrap(), None);
    assert!(matches!(
        db.delete::<Route>(rt.id, None).await,
        Err(NsdbError::NotFound { .. })
    ));
}

async fn cas_conflict(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("cas")).await.unwrap();
    let mut first = t.clone();
    first.name = "cas-1".into();
    let first = db.update(first, Some(t.revision)).await.unwrap();
    let before = state(db).await;
    let mut stale = t.clone();
    stale.name = "cas-2".into();
    let error = assert_rejected(db, &before, db.update(stale, Some(t.revision)).await).await;
    assert!(
        matches!(error, NsdbError::RevisionConflict { expected, actual, .. } if expected == t.revision && actual == first.revision),
        "{error}"
    );
    let error = assert_rejected(
        db,
        &before,
        db.delete::<Tenant>(t.id, Some(t.revision)).await,
    )
    .await;
    assert!(
        matches!(error, NsdbError::RevisionConflict { .. }),
        "{error}"
    );
    let error = assert_rejected(db, &before, db.create(first.clone()).await).await;
    assert!(matches!(error, NsdbError::AlreadyExists { .. }), "{error}");
    db.delete::<Tenant>(t.id, Some(first.revision))
        .await
        .unwrap();
}

async fn transaction_atomicity(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("atomic")).await.unwrap();
    db.create(router(t.id, "taken")).await.unwrap();
    let before = state(db).await;
    let fresh = router(t.id, "fresh");
    let fresh_bridge = bridge(t.id, "fresh-bridge");
    let batch = vec![
        Mutation::Create(Record::Router(fresh.clone())),
        Mutation::Create(Record::Bridge(fresh_bridge.clone())),
        Mutation::Create(Record::Router(router(t.id, "taken"))),
    ];
    let error = assert_rejected(db, &before, db.apply(batch).await).await;
    assert!(matches!(error, NsdbError::Duplicate { .. }), "{error}");
    assert_eq!(db.get::<Router>(fresh.id).await.unwrap(), None);

    // The same batch without the bad write commits as one revision.
    let batch = vec![
        Mutation::Create(Record::Router(fresh.clone())),
        Mutation::Create(Record::Bridge(fresh_bridge.clone())),
    ];
    let applied = db.apply(batch).await.unwrap();
    assert_eq!(
        db.fetch::<Router>(fresh.id).await.unwrap().revision,
        applied.revision
    );
    assert_eq!(
        db.fetch::<Bridge>(fresh_bridge.id).await.unwrap().revision,
        applied.revision
    );

    // A batch may depend on its own earlier writes (bridge + port together).
    let b = bridge(t.id, "with-port");
    let p = bridge_port(b.id);
    db.apply(vec![
        Mutation::Create(Record::Bridge(b)),
        Mutation::Create(Record::Port(p.clone())),
    ])
    .await
    .unwrap();
    assert!(db.fetch::<Port>(p.id).await.unwrap().tunnel_key > 0);
}

async fn referential_integrity(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("ri")).await.unwrap();
    let r1 = db.create(router(t.id, "r1")).await.unwrap();
    let r2 = db.create(router(t.id, "r2")).await.unwrap();
    let b = db.create(bridge(t.id, "b")).await.unwrap();
    let r1p = db.create(router_port(r1.id, "10.0.0.1/24")).await.unwrap();
    let r2p = db.create(router_port(r2.id, "10.1.0.1/24")).await.unwrap();
    let bp = db.create(bridge_port(b.id)).await.unwrap();
    let bp2 = db.create(bridge_port(b.id)).await.unwrap();
    let c = db.create(chain(t.id, "c")).await.unwrap();
    let before = state(db).await;

    // No port on a missing device.
    let e = assert_rejected(db, &before, db.create(bridge_port(Uuid::new_v4())).await).await;
    assert!(
        matches!(&e, NsdbError::MissingReference { field, .. } if field == "device_id"),
        "{e}"
    );
    // No link to a missing port.
    let e = assert_rejected(db, &before, db.link_ports(r1p.id, Uuid::new_v4()).await).await;
    assert!(matches!(e, NsdbError::NotFound { .. }), "{e}");
    let mut dangling = r1p.clone();
    dangling.peer_id = Some(Uuid::new_v4());
    let e = assert_rejected(db, &before, db.update(dangling, None).await).await;
    assert!(
        matches!(&e, NsdbError::MissingReference { field, .. } if field == "peer_id"),
        "{e}"
    );
    // A one-sided link is refused: both ends must point at each other.
    let mut one_sided = r1p.clone();
    one_sided.peer_id = Some(bp.id);
    let e = assert_rejected(db, &before, db.update(one_sided, None).await).await;
    assert!(
        matches!(&e, NsdbError::Rejected { field, .. } if field == "peer_id"),
        "{e}"
    );
    // Bridge-to-bridge links are refused.
    let e = assert_rejected(db, &before, db.link_ports(bp.id, bp2.id).await).await;
    assert!(e.to_string().contains("bridge-to-bridge"), "{e}");
    // No route via a port of another router.
    let e = assert_rejected(
        db,
        &before,
        db.create(route(r1.id, "0.0.0.0/0", r2p.id)).await,
    )
    .await;
    assert!(
        matches!(&e, NsdbError::Rejected { field, .. } if field == "next_hop_port"),
        "{e}"
    );
    // No rule jumping to a missing chain.
    let e = assert_rejected(
        db,
        &before,
        db.create(rule(c.id, 1, RuleAction::Jump, Some(Uuid::new_v4())))
            .await,
    )
    .await;
    assert!(
        matches!(&e, NsdbError::MissingReference { field, .. } if field == "jump_chain_id"),
        "{e}"
    );
    // No router on a missing tenant; no chain of a missing tenant.
    let e = assert_rejected(
        db,
        &before,
        db.create(router(Uuid::new_v4(), "orphan")).await,
    )
    .await;
    assert!(matches!(e, NsdbError::MissingReference { .. }), "{e}");
    // Static rules: a router port needs an address; routes need a next hop.
    let mut no_addr = router_port(r1.id, "10.5.0.1/24");
    no_addr.address = None;
    let e = assert_rejected(db, &before, db.create(no_addr).await).await;
    assert!(
        matches!(&e, NsdbError::Invalid { field, .. } if field == "address"),
        "{e}"
    );
    // Extra addresses (either family) are checked like the address.
    for (extra, why) in [
        (vec!["2001:db8::/64"], "network address"),
        (vec!["10.5.0.1/24"], "listed twice"),
        (vec!["2001:db8::1/64", "2001:db8::1/64"], "listed twice"),
    ] {
        let mut bad = router_port(r1.id, "10.5.0.1/24");
        bad.extra_addresses = extra.iter().map(|a| a.parse().unwrap()).collect();
        let e = assert_rejected(db, &before, db.create(bad).await).await;
        assert!(
            matches!(&e, NsdbError::Invalid { field, .. } if field == "extra_addresses")
                && e.to_string().contains(why),
            "{e}"
        );
    }
    let mut bridged = bridge_port(b.id);
    bridged.extra_addresses = vec!["2001:db8::1/64".parse().unwrap()];
    assert_rejected(db, &before, db.create(bridged).await).await;

    // Linking works, and then the link cannot be taken over.
    db.link_ports(r1p.id, bp.id).await.unwrap();
    assert_eq!(db.fetch::<Port>(bp.id).await.unwrap().peer_id, Some(r1p.id));
    let before = state(db).await;
    let e = assert_rejected(db, &before, db.link_ports(r2p.id, bp.id).await).await;
    assert!(e.to_string().contains("already linked"), "{e}");
    db.unlink_port(bp.id).await.unwrap();
    assert_eq!(db.fetch::<Port>(r1p.id).await.unwrap().peer_id, None);
    // Router-to-router links work.
    db.link_ports(r1p.id, r2p.id).await.unwrap();
}

/// A route's gateway may sit on any of its port's subnets (an IPv6 gateway
/// on a dual-stack port's extra address), and that address then stays.
async fn gateway_on_an_extra_address(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("gw6")).await.unwrap();
    let r = db.create(router(t.id, "r")).await.unwrap();
    let mut dual = router_port(r.id, "10.7.0.1/24");
    dual.extra_addresses = vec!["fd00:7::1/64".parse().unwrap()];
    let dual = db.create(dual).await.unwrap();
    let mut via6 = route(r.id, "fd00:8::/64", dual.id);
    via6.next_hop_gateway = Some("fd00:7::2".parse().unwrap());
    db.create(via6).await.unwrap();
    let before = state(db).await;
    let mut off_link = route(r.id, "fd00:9::/64", dual.id);
    off_link.next_hop_gateway = Some("fd00:6::2".parse().unwrap());
    let e = assert_rejected(db, &before, db.create(off_link).await).await;
    assert!(e.to_string().contains("is not within"), "{e}");
    let mut dropped = db.fetch::<Port>(dual.id).await.unwrap();
    let revision = dropped.revision;
    dropped.extra_addresses.clear();
    let e = assert_rejected(db, &before, db.update(dropped, Some(revision)).await).await;
    assert!(e.to_string().contains("uses gateway fd00:7::2"), "{e}");
}

async fn delete_names_referrers(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("refs")).await.unwrap();
    let b = db.create(bridge(t.id, "b")).await.unwrap();
    let p1 = db.create(bridge_port(b.id)).await.unwrap();
    let p2 = db.create(bridge_port(b.id)).await.unwrap();
    let c = db.create(chain(t.id, "target")).await.unwrap();
    let caller = db.create(chain(t.id, "caller")).await.unwrap();
    let jump = db
        .create(rule(caller.id, 1, RuleAction::Jump, Some(c.id)))
        .await
        .unwrap();
    let before = state(db).await;

    let e = assert_rejected(db, &before, db.delete::<Bridge>(b.id, None).await).await;
    let NsdbError::StillReferenced { referrers, .. } = &e else {
        panic!("{e}")
    };
    let ids: HashSet<String> = referrers.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, HashSet::from([p1.id.to_string(), p2.id.to_string()]));
    assert!(
        e.to_string().contains(&p1.id.to_string()),
        "the message names the referrers: {e}"
    );
    let e = assert_rejected(db, &before, db.delete::<Chain>(c.id, None).await).await;
    assert!(
        e.to_string().contains(&jump.id.to_string()) && e.to_string().contains("jump_chain_id"),
        "{e}"
    );
    let e = assert_rejected(db, &before, db.delete::<Tenant>(t.id, None).await).await;
    assert!(matches!(e, NsdbError::StillReferenced { .. }), "{e}");

    // Deleting the referrers in the same batch is fine.
    let batch = vec![
        Mutation::Delete {
            kind: Kind::Port,
            id: p1.id,
            expected_revision: None,
        },
        Mutation::Delete {
            kind: Kind::Port,
            id: p2.id,
            expected_revision: None,
        },
        Mutation::Delete {
            kind: Kind::Bridge,
            id: b.id,
            expected_revision: None,
        },
    ];
    db.apply(batch).await.unwrap();
    assert_eq!(db.get::<Bridge>(b.id).await.unwrap(), None);
}

async fn uniqueness(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("uniq")).await.unwrap();
    let other = db.create(tenant("uniq-other")).await.unwrap();
    let r = db.create(router(t.id, "r")).await.unwrap();
    let b = db.create(bridge(t.id, "b")).await.unwrap();
    let h = db.create(host("h1", "192.0.2.1")).await.unwrap();
    let p = db.create(router_port(r.id, "10.0.0.1/24")).await.unwrap();
    let mut bp = bridge_port(b.id);
    bp.host_id = Some(h.id);
    bp.interface_name = Some("tap0".into());
    let bp = db.create(bp).await.unwrap();
    let before = state(db).await;

    let e = assert_rejected(db, &before, db.create(tenant("uniq")).await).await;
    assert!(
        matches!(&e, NsdbError::Duplicate { owner, .. } if *owner == t.id.to_string()),
        "{e}"
    );
    assert_rejected(db, &before, db.create(router(t.id, "r")).await).await;
    let mut same_mac = bridge_port(b.id);
    same_mac.mac = bp.mac;
    let e = assert_rejected(db, &before, db.create(same_mac).await).await;
    assert!(e.to_string().contains("mac"), "{e}");
    let e = assert_rejected(
        db,
        &before,
        db.create(router_port(r.id, "10.0.0.129/25")).await,
    )
    .await;
    assert!(e.to_string().contains("overlaps"), "{e}");
    let mut same_if = bridge_port(b.id);
    same_if.host_id = Some(h.id);
    same_if.interface_name = Some("tap0".into());
    assert_rejected(db, &before, db.create(same_if).await).await;
    let mut same_key = bridge_port(b.id);
    same_key.tunnel_key = p.tunnel_key;
    assert_rejected(db, &before, db.create(same_key).await).await;
    assert_rejected(db, &before, db.create(host("h1", "192.0.2.2")).await).await;

    // Names are unique per tenant only; a freed name can be reused.
    db.create(router(other.id, "r")).await.unwrap();
    db.create(router_port(r.id, "10.0.1.1/24")).await.unwrap();
    let mut renamed = t.clone();
    renamed.name = "uniq-renamed".into();
    db.update(renamed, None).await.unwrap();
    db.create(tenant("uniq")).await.unwrap();
}

async fn watch_in_commit_order(f: Fixture) {
    let db = &f.nsdb;
    let start = db.current_revision().await.unwrap() + 1;
    let mut watch = db.watch(start).await.unwrap();
    let t = db.create(tenant("watched")).await.unwrap();
    let b = bridge(t.id, "b");
    let p = bridge_port(b.id);
    let applied = db
        .apply(vec![
            Mutation::Create(Record::Bridge(b.clone())),
            Mutation::Create(Record::Port(p.clone())),
        ])
        .await
        .unwrap();
    db.delete::<Port>(p.id, None).await.unwrap();

    let (rev1, events) = next_commit(&mut watch).await;
    assert_eq!(rev1, t.revision);
    assert_eq!(events, vec![ObjectEvent::Put(Record::Tenant(t.clone()))]);
    let (rev2, events) = next_commit(&mut watch).await;
    assert_eq!(rev2, applied.revision, "a batch is one commit");
    let kinds: Vec<Kind> = events
        .iter()
        .map(|e| match e {
            ObjectEvent::Put(r) => r.kind(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&Kind::Bridge) && kinds.contains(&Kind::Port));
    let (rev3, events) = next_commit(&mut watch).await;
    assert!(rev3 > rev2);
    assert_eq!(
        events,
        vec![ObjectEvent::Deleted {
            kind: Kind::Port,
            id: p.id
        }]
    );
}

async fn watch_resumes_without_loss_or_repeat(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("resume")).await.unwrap();
    let mut watch = db.watch(t.revision + 1).await.unwrap();
    let mut created = Vec::new();
    for i in 0..10 {
        created.push(db.create(chain(t.id, &format!("c{i}"))).await.unwrap());
    }
    let mut last = 0;
    for expected in &created[..4] {
        let (rev, events) = next_commit(&mut watch).await;
        assert_eq!(
            events,
            vec![ObjectEvent::Put(Record::Chain(expected.clone()))]
        );
        last = rev;
    }
    drop(watch); // the watcher goes away (disconnect) ...
    for i in 10..15 {
        created.push(db.create(chain(t.id, &format!("c{i}"))).await.unwrap());
    }
    // ... and comes back from the revision after the last one it saw.
    let mut watch = db.watch(last + 1).await.unwrap();
    for expected in &created[4..] {
        let (_, events) = next_commit(&mut watch).await;
        assert_eq!(
            events,
            vec![ObjectEvent::Put(Record::Chain(expected.clone()))]
        );
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(quiet.is_err(), "no event may be repeated: {quiet:?}");
}

/// `try_next` hands over the commits that have arrived, never waits, and
/// says so when none is waiting (how the agent's feed catches up).
async fn watch_try_next_takes_what_arrived(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("try-next")).await.unwrap();
    let mut watch = db.watch(t.revision + 1).await.unwrap();
    assert!(watch.try_next().is_none(), "nothing committed since");
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(db.create(chain(t.id, &format!("c{i}"))).await.unwrap());
    }
    let (_, events) = next_commit(&mut watch).await;
    assert_eq!(
        events,
        vec![ObjectEvent::Put(Record::Chain(created[0].clone()))]
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut rest = Vec::new();
    while rest.len() < created.len() - 1 {
        match watch.try_next() {
            Some(WatchItem::Commit { events, .. }) => rest.extend(events),
            Some(other) => panic!("unexpected {other:?}"),
            None => {
                assert!(tokio::time::Instant::now() < deadline, "watch stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let expected: Vec<ObjectEvent> = created[1..]
        .iter()
        .map(|c| ObjectEvent::Put(Record::Chain(c.clone())))
        .collect();
    assert_eq!(rest, expected, "in commit order, none lost or repeated");
    assert!(watch.try_next().is_none(), "nothing more is waiting");
}

async fn compaction_forces_relist(f: Fixture) {
    let db = &f.nsdb;
    let t = db.create(tenant("compact")).await.unwrap();
    for i in 0..5 {
        db.create(chain(t.id, &format!("c{i}"))).await.unwrap();
    }
    let current = db.current_revision().await.unwrap();
    db.compact(current).await.unwrap();
    let mut stale = db.watch(t.revision).await.unwrap();
    match tokio::time::timeout(WAIT, stale.next())
        .await
        .expect("watch stalled")
    {
        Some(WatchItem::Compacted { compact_revision }) => assert!(compact_revision > t.revision),
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The recovery path: re-list, then watch from the snapshot's revision.
    let snapshot = db.snapshot().await.unwrap();
    assert_eq!(
        snapshot
            .records
            .iter()
            .filter(|r| r.kind() == Kind::Chain)
            .count(),
        5
    );
    let mut watch = db.watch(snapshot.revision + 1).await.unwrap();
    let c = db.create(chain(t.id, "after")).await.unwrap();
    let (_, events) = next_commit(&mut watch).await;
    assert_eq!(events, vec![ObjectEvent::Put(Record::Chain(c))]);
}

/// Increments a counter kept in a tenant's name with compare-and-swap,
/// retrying on conflict with jittered exponential backoff. The cap has to
/// grow to about (contenders x commit time), or a thousand retrying tasks
/// saturate the store with attempts that cannot win.
async fn cas_increment(db: Nsdb, id: Uuid) {
    let mut attempt = 0u32;
    loop {
        let mut t = db.fetch::<Tenant>(id).await.unwrap();
        let n: u64 = t.name.trim_start_matches("counter-").parse().unwrap();
        let revision = t.revision;
        t.name = format!("counter-{}", n + 1);
        match db.update(t, Some(revision)).await {
            Ok(_) => return,
            Err(NsdbError::RevisionConflict { .. }) => {
                attempt += 1;
                let cap_ms = 1u64 << attempt.min(12);
                tokio::time::sleep(Duration::from_micros(rand::random_range(0..cap_ms * 1000)))
                    .await;
            }
            Err(e) => panic!("increment failed: {e}"),
        }
    }
}

async fn concurrent_cas_increments(f: Fixture) {
    let t = f.nsdb.create(tenant("counter-0")).await.unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(cas_increment(f.nsdb.clone(), t.id)))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        f.nsdb.fetch::<Tenant>(t.id).await.unwrap().name,
        "counter-1000"
    );
}

async fn concurrent_ip_allocations(f: Fixture) {
    let p = f.nsdb.create(pool("conc", "10.20.0.0/24")).await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let db = f.nsdb.clone();
            tokio::spawn(async move {
                db.allocate_ip(p.id, &format!("pod-{i}/eth0"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut addresses = HashSet::new();
    for task in tasks {
        let lease = task.await.unwrap();
        assert!(p.cidr.contains(&lease.address));
        assert_ne!(lease.address, p.cidr.network());
        assert_ne!(lease.address, p.cidr.broadcast());
        assert_ne!(Some(lease.address), p.gateway);
        assert!(
            addresses.insert(lease.address),
            "{} handed out twice",
            lease.address
        );
    }
    assert_eq!(addresses.len(), 200);
    assert_eq!(f.nsdb.leases(p.id).await.unwrap().len(), 200);
}

async fn ipam_idempotence_exhaustion_reuse(f: Fixture) {
    let db = &f.nsdb;
    let p = db.create(pool("small", "10.30.0.0/29")).await.unwrap();
    let a = db.allocate_ip(p.id, "owner-a").await.unwrap();
    assert_eq!(
        db.allocate_ip(p.id, "owner-a").await.unwrap().address,
        a.address,
        "idempotent per owner"
    );
    for i in 0..4 {
        db.allocate_ip(p.id, &format!("filler-{i}")).await.unwrap();
    }
    // .0 network, .1 gateway, .7 broadcast: five usable, all taken.
    let before = state(db).await;
    let e = assert_rejected(db, &before, db.allocate_ip(p.id, "one-too-many").await).await;
    assert!(matches!(e, NsdbError::PoolExhausted { .. }), "{e}");
    assert!(e.to_string().contains("10.30.0.0/29"), "{e}");

    let released = db.release_ip(p.id, "owner-a").await.unwrap().unwrap();
    assert_eq!(released.address, a.address);
    assert_eq!(
        db.release_ip(p.id, "owner-a").await.unwrap(),
        None,
        "release is idempotent"
    );
    assert_eq!(
        db.allocate_ip(p.id, "newcomer").await.unwrap().address,
        a.address,
        "released addresses are reused"
    );

    let before = state(db).await;
    let e = assert_rejected(db, &before, db.delete::<IpPool>(p.id, None).await).await;
    assert!(
        e.to_string().contains("newcomer"),
        "deleting a pool names its leases: {e}"
    );
    let e = db.allocate_ip(Uuid::new_v4(), "x").await.unwrap_err();
    assert!(
        matches!(
            e,
            NsdbError::NotFound {
                kind: Kind::IpPool,
                ..
            }
        ),
        "{e}"
    );
}

async fn host_liveness(f: Fixture) {
    let db = &f.nsdb;
    let h = db.create(host("live-1", "192.0.2.50")).await.unwrap();
    assert!(!db.fetch::<Host>(h.id).await.unwrap().alive);
    let mut watch = db
        .watch(db.current_revision().await.unwrap() + 1)
        .await
        .unwrap();
    let alive = db
        .keep_host_alive(h.id, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(db.fetch::<Host>(h.id).await.unwrap().alive);
    assert!(db.list::<Host>().await.unwrap()[0].alive);
    let (_, events) = next_commit(&mut watch).await;
    assert_eq!(
        events,
        vec![ObjectEvent::HostLiveness {
            host_id: h.id,
            alive: true
        }]
    );
    // Renewals keep it alive past its TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        db.fetch::<Host>(h.id).await.unwrap().alive,
        "keep-alives must renew the lease"
    );
    alive.stop().await.unwrap();
    let (_, events) = next_commit(&mut watch).await;
    assert_eq!(
        events,
        vec![ObjectEvent::HostLiveness {
            host_id: h.id,
            alive: false
        }]
    );
    assert!(!db.fetch::<Host>(h.id).await.unwrap().alive);

    // An agent that just stops renewing is declared dead when the TTL runs out.
    let silent = db
        .keep_host_alive(h.id, Duration::from_secs(1))
        .await
        .unwrap();
    let _ = next_commit(&mut watch).await;
    drop(silent);
    let (_, events) = next_commit(&mut watch).await;
    assert_eq!(
        events,
        vec![ObjectEvent::HostLiveness {
            host_id: h.id,
            alive: false
        }]
    );
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::embedded()).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::etcd_shared().await).await
                }
            )*
        }
    };
}

conformance!(
    crud_round_trip,
    cas_conflict,
    transaction_atomicity,
    referential_integrity,
    gateway_on_an_extra_address,
    delete_names_referrers,
    uniqueness,
    watch_in_commit_order,
    watch_resumes_without_loss_or_repeat,
    watch_try_next_takes_what_arrived,
    concurrent_cas_increments,
    concurrent_ip_allocations,
    ipam_idempotence_exhaustion_reuse,
    host_liveness,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_compaction_forces_relist() {
    compaction_forces_relist(support::embedded()).await
}

/// Compaction is global to an etcd cluster, so this case gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_forces_relist() {
    compaction_forces_relist(support::etcd_private().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nsdb.redb");
    // Background helpers (lease reaper, aborted tasks) may hold the file for
    // a moment after the last handle is dropped.
    let open = || {
        for _ in 0..40 {
            if let Ok(backend) = EmbeddedBackend::open(&path) {
                return Nsdb::new(Arc::new(backend));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Nsdb::new(Arc::new(EmbeddedBackend::open(&path).unwrap()))
    };
    let db = open();
    let t = db.create(tenant("durable")).await.unwrap();
    let b = db.create(bridge(t.id, "b")).await.unwrap();
    let p = db.create(bridge_port(b.id)).await.unwrap();
    let pool = db
        .create(pool("durable-pool", "10.40.0.0/24"))
        .await
        .unwrap();
    let lease = db.allocate_ip(pool.id, "kept").await.unwrap();
    let h = db.create(host("durable-host", "192.0.2.9")).await.unwrap();
    let liveness = db
        .keep_host_alive(h.id, Duration::from_secs(30))
        .await
        .unwrap();
    let before = db.snapshot().await.unwrap();
    drop(liveness);
    drop(db);

    let db = open();
    let after = db.snapshot().await.unwrap();
    assert!(
        after.revision > before.revision,
        "the dead agent's liveness is expired on open"
    );
    let without_hosts = |s: &Snapshot| {
        s.records
            .iter()
            .filter(|r| r.kind() != Kind::Host)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(without_hosts(&after), without_hosts(&before));
    assert_eq!(db.fetch::<Port>(p.id).await.unwrap(), p);
    assert!(!db.fetch::<Host>(h.id).await.unwrap().alive);
    assert_eq!(
        db.allocate_ip(pool.id, "kept").await.unwrap().address,
        lease.address
    );
    // Integrity indexes survived too.
    assert!(matches!(
        db.create(tenant("durable")).await,
        Err(NsdbError::Duplicate { .. })
    ));
    assert!(matches!(
        db.delete::<Bridge>(b.id, None).await,
        Err(NsdbError::StillReferenced { .. })
    ));
    // And history: a watch can replay commits made before the restart.
    let mut watch = db.watch(t.revision).await.unwrap();
    let (_, events) = next_commit(&mut watch).await;
    assert_eq!(events, vec![ObjectEvent::Put(Record::Tenant(t))]);
}

/// A watch on etcd survives the server going away and coming back: the
/// backend resumes after the last delivered revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_survives_server_restart() {
    let mut f = support::etcd_private().await;
    let db = f.nsdb.clone();
    let t = db.create(tenant("restart")).await.unwrap();
    let mut watch = db.watch(t.revision + 1).await.unwrap();
    let c1 = db.create(chain(t.id, "before")).await.unwrap();
    assert_eq!(
        next_commit(&mut watch).await.1,
        vec![ObjectEvent::Put(Record::Chain(c1))]
    );

    f.etcd.as_mut().unwrap().restart();
    let mut created = Vec::new();
    for i in 0..3 {
        let mut attempt = 0;
        let c = loop {
            match db.create(chain(t.id, &format!("after-{i}"))).await {
                Ok(c) => break c,
                Err(NsdbError::Store(e)) if attempt < 100 => {
                    attempt += 1;
                    eprintln!("waiting for etcd: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        created.push(c);
    }
    for c in created {
        assert_eq!(
            next_commit(&mut watch).await.1,
            vec![ObjectEvent::Put(Record::Chain(c))]
        );
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(quiet.is_err(), "no event may be repeated: {quiet:?}");
}
