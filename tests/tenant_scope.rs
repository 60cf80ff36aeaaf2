//! A write made for a tenant is checked against the tenant inside its NSDB
//! transaction, once: it may only create, change and delete the tenant's
//! records and reference the tenant's records. On both backends, directly
//! through `Nsdb::scoped`, and through the API while an admin swaps the
//! object written into, or referenced, for another tenant's under it.

mod support;

use std::time::Duration;

use nsdb::{
    Bridge, Chain, MacAddr, Nsdb, NsdbError, Port, Router, Rule, RuleAction, Scope, Tenant,
};
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use support::api::{token, TestServer};
use support::racing::SlowLink;

async fn tenant(nsdb: &Nsdb, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    nsdb.create(Tenant {
        id,
        revision: 0,
        name: name.into(),
        network: None,
    })
    .await
    .unwrap();
    id
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

fn chain(tenant: Uuid, name: &str) -> Chain {
    Chain {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant,
        name: name.into(),
    }
}

fn port(bridge: Uuid, mac: u8) -> Port {
    Port {
        id: Uuid::new_v4(),
        revision: 0,
        device_id: bridge,
        device_type: nsdb::DeviceType::Bridge,
        mac: MacAddr([2, 0, 0, 0, 9, mac]),
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

async fn scoped_writes_stay_in_their_tenant(nsdb: Nsdb) {
    let (a, b) = (tenant(&nsdb, "a").await, tenant(&nsdb, "b").await);
    let a_bridge = nsdb.create(bridge(a, "net")).await.unwrap();
    let b_bridge = nsdb.create(bridge(b, "net")).await.unwrap();
    let a_chain = nsdb.create(chain(a, "in")).await.unwrap();
    let b_chain = nsdb.create(chain(b, "in")).await.unwrap();
    let as_a = nsdb.scoped(Scope::Tenant(a));
    assert_eq!(as_a.scope(), Scope::Tenant(a));

    // Its own records: fine.
    let own_port = as_a.create(port(a_bridge.id, 1)).await.unwrap();
    let mut accept = Rule::new(a_chain.id, 1, RuleAction::Accept);
    accept.in_port_ids = vec![own_port.id];
    as_a.create(accept).await.unwrap();

    // A record of another tenant, or one that would become one: refused.
    let foreign_port = as_a.create(port(b_bridge.id, 2)).await;
    assert!(
        matches!(foreign_port, Err(NsdbError::OutOfScope { tenant, .. }) if tenant == a),
        "{foreign_port:?}"
    );
    let router = Router {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: b,
        name: "r".into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
    };
    assert!(matches!(
        as_a.create(router).await,
        Err(NsdbError::OutOfScope { .. })
    ));
    let mut renamed = b_bridge.clone();
    renamed.name = "mine now".into();
    assert!(matches!(
        as_a.update(renamed, None).await,
        Err(NsdbError::NotFound { .. })
    ));
    assert!(matches!(
        as_a.delete::<Bridge>(b_bridge.id, None).await,
        Err(NsdbError::NotFound { .. })
    ));

    // A reference to another tenant's record reads as a missing one.
    let mut to_foreign = Rule::new(a_chain.id, 2, RuleAction::Jump);
    to_foreign.jump_chain_id = Some(b_chain.id);
    let refused = as_a.create(to_foreign).await;
    assert!(
        matches!(&refused, Err(NsdbError::MissingReference { field, .. }) if field == "jump_chain_id"),
        "{refused:?}"
    );
    let mut pointed = own_port.clone();
    pointed.inbound_chain_id = Some(b_chain.id);
    assert!(matches!(
        as_a.update(pointed, None).await,
        Err(NsdbError::MissingReference { .. })
    ));

    // Nothing of that was written; the admin may do all of it.
    assert_eq!(
        nsdb.list_by_parent::<Port>(b_bridge.id)
            .await
            .unwrap()
            .len(),
        0
    );
    nsdb.create(port(b_bridge.id, 3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_writes_stay_in_their_tenant_embedded() {
    let fixture = support::embedded();
    scoped_writes_stay_in_their_tenant(fixture.nsdb.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_writes_stay_in_their_tenant_etcd() {
    let fixture = support::etcd_shared().await;
    scoped_writes_stay_in_their_tenant(fixture.nsdb.clone()).await;
}

/// Through the API, a tenant token's writes are scoped the same way: a
/// link to another tenant's port reads as a missing peer, a port on another
/// tenant's bridge as forbidden, and neither writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_writes_are_checked_in_the_transaction_scope() {
    let s = TestServer::etcd().await;
    let nsdb = s.nsdb.clone();
    let (a, b) = (tenant(&nsdb, "a").await, tenant(&nsdb, "b").await);
    let a_bridge = nsdb.create(bridge(a, "net")).await.unwrap();
    let b_bridge = nsdb.create(bridge(b, "net")).await.unwrap();
    let client = s.client(&token(&s, &a.to_string()).await);
    let theirs = nsdb.create(port(b_bridge.id, 250)).await.unwrap();
    let mine = nsdb.create(port(a_bridge.id, 251)).await.unwrap();
    let before = s.dump().await;
    let refused = support::api::problem_of(client.link(mine.id, theirs.id).await);
    assert!(matches!(refused.status, 404 | 422), "{refused:?}");
    let problem = support::api::problem_of(
        client
            .post::<Port>(&format!("/v1/bridges/{}/ports", b_bridge.id), &json!({}))
            .await,
    );
    assert!(matches!(problem.status, 403 | 404), "{problem:?}");
    let problem = support::api::problem_of(
        client
            .post::<Chain>("/v1/chains", &json!({"tenant_id": b, "name": "x"}))
            .await,
    );
    assert_eq!(problem.status, 403, "{problem:?}");
    assert_eq!(problem.field.as_deref(), Some("tenant_id"));
    s.assert_unchanged(&before, "refused tenant writes").await;
}

/// Rounds of each race: the swap lands at a different point of the
/// tenant's requests in each.
const ROUNDS: u32 = 12;

/// Requests the tenant has in flight per round, spread over one request's
/// duration so that the swap lands inside some request's window whatever
/// the machine's speed.
const REQUESTS: u32 = 8;

/// How long the API server's etcd traffic takes each way.
const SLOW: Duration = Duration::from_millis(10);

/// An API server on the same etcd keyspace as `s`, whose store is behind a
/// slow link: its reads and its commit are far apart, the admin's direct
/// writes fast.
async fn slow_peer(s: &TestServer) -> (SlowLink, TestServer) {
    let link = SlowLink::to(support::etcd::shared(), SLOW).await;
    let slow = s.peer_via(&link.endpoint).await;
    (link, slow)
}

/// How long `request` takes, once.
async fn time<F: std::future::Future<Output = ()>>(request: F) -> Duration {
    let start = Instant::now();
    request.await;
    start.elapsed()
}

/// One round: `REQUESTS` copies of `request` start one `took / REQUESTS`
/// apart, `swap` begins `at` after the first. Answers how many requests
/// straddled the swap (sent before it began, answered after it ended).
async fn race<R, F, S>(took: Duration, at: Duration, request: R, swap: S) -> usize
where
    R: Fn() -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
    S: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let request = request();
            tokio::spawn(async move {
                tokio::time::sleep_until(start + took * i / REQUESTS).await;
                let sent = Instant::now();
                request.await;
                (sent, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep_until(start + at).await;
    let began = Instant::now();
    swap.await;
    let ended = Instant::now();
    let mut straddled = 0;
    for request in requests {
        let (sent, answered) = request.await.expect("request task");
        if sent < began && answered > ended {
            straddled += 1;
        }
    }
    straddled
}

/// Where round `round` lands its swap: swept across the second half of a
/// request's duration, after the first requests have read what they check.
fn swap_at(took: Duration, round: u32) -> Duration {
    took / 2 + took * round / (2 * ROUNDS)
}

/// Deletes the record `id` (first whatever `clear` removes that still
/// references it) and creates `recreated` under the same id: the object
/// changes tenant as far as any write in flight can tell.
async fn swap<C, F>(nsdb: &Nsdb, kind: nsdb::Kind, id: Uuid, recreated: nsdb::Record, clear: C)
where
    C: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    loop {
        clear().await;
        match nsdb
            .apply(vec![nsdb::Mutation::Delete {
                kind,
                id,
                expected_revision: None,
            }])
            .await
        {
            Ok(_) => break,
            Err(NsdbError::StillReferenced { .. }) => continue,
            Err(other) => panic!("deleting {kind} {id}: {other}"),
        }
    }
    nsdb.apply(vec![nsdb::Mutation::Create(recreated)])
        .await
        .expect("recreate under the same id");
}

/// A tenant creates ports on its bridge while the admin deletes the bridge
/// and recreates it, same id, for another tenant. The tenant's API server
/// reaches etcd over a slow link, so some of its requests read the bridge
/// as the tenant's and commit after the swap. Checked inside the
/// transaction, none of them puts a port on the other tenant's bridge;
/// checked before it (as the API did), they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_swapped_mid_write_never_gets_the_tenants_port() {
    let s = TestServer::etcd().await;
    let (_link, slow) = slow_peer(&s).await;
    let nsdb = s.nsdb.clone();
    let (a, b) = (tenant(&nsdb, "a").await, tenant(&nsdb, "b").await);
    let client = slow.client(&token(&s, &a.to_string()).await);
    let post_port = |bridge: Uuid| {
        let client = client.clone();
        async move {
            let _ = client
                .post::<Port>(&format!("/v1/bridges/{bridge}/ports"), &json!({}))
                .await;
        }
    };
    let spare = nsdb.create(bridge(a, "spare")).await.unwrap().id;
    let took = time(post_port(spare)).await;
    let mut raced = 0;
    for round in 0..ROUNDS {
        let id = nsdb
            .create(bridge(a, &format!("net-{round}")))
            .await
            .unwrap()
            .id;
        let mut theirs = bridge(b, &format!("net-{round}"));
        theirs.id = id;
        let clear = || async {
            for port in nsdb.list_by_parent::<Port>(id).await.unwrap() {
                let _ = nsdb.delete::<Port>(port.id, None).await;
            }
        };
        let swapped = swap(
            &nsdb,
            nsdb::Kind::Bridge,
            id,
            nsdb::Record::Bridge(theirs),
            clear,
        );
        raced += race(took, swap_at(took, round), || post_port(id), swapped).await;
        let landed = nsdb.list_by_parent::<Port>(id).await.unwrap();
        assert!(
            landed.is_empty(),
            "round {round}: tenant {a}'s port(s) {:?} landed on tenant {b}'s bridge",
            landed.iter().map(|p| p.id).collect::<Vec<_>>()
        );
    }
    assert!(raced >= 3, "only {raced} requests straddled a swap");
}

/// The same race for a reference no other rule guards: a tenant links its
/// router port to a port of its bridge while the admin swaps that port for
/// one, same id, on another tenant's bridge. The tenant's router is never
/// left linked to the other tenant's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_swapped_mid_link_is_never_linked() {
    let s = TestServer::etcd().await;
    let (_link, slow) = slow_peer(&s).await;
    let nsdb = s.nsdb.clone();
    let (a, b) = (tenant(&nsdb, "a").await, tenant(&nsdb, "b").await);
    let a_bridge = nsdb.create(bridge(a, "net")).await.unwrap().id;
    let b_bridge = nsdb.create(bridge(b, "net")).await.unwrap().id;
    let a_router = support::api::router(&s, &a.to_string(), "edge").await;
    let mine: Uuid = support::api::router_port(&s, &a_router, "10.9.0.1/24")
        .await
        .parse()
        .unwrap();
    let client = slow.client(&token(&s, &a.to_string()).await);
    let link_to = |peer: Uuid| {
        let client = client.clone();
        async move {
            let _ = client.link(mine, peer).await;
        }
    };
    let unlink = |port: Uuid| {
        let nsdb = nsdb.clone();
        async move {
            let linked = nsdb.get::<Port>(port).await.unwrap();
            if linked.is_some_and(|p| p.peer_id.is_some()) {
                nsdb.unlink_port(port).await.unwrap();
            }
        }
    };
    let spare = nsdb.create(port(a_bridge, 99)).await.unwrap().id;
    let took = time(link_to(spare)).await;
    unlink(mine).await;
    let mut raced = 0;
    for round in 0..ROUNDS {
        let peer = nsdb.create(port(a_bridge, round as u8)).await.unwrap().id;
        let mut theirs = port(b_bridge, round as u8);
        theirs.id = peer;
        let clear = || unlink(peer);
        let swapped = swap(
            &nsdb,
            nsdb::Kind::Port,
            peer,
            nsdb::Record::Port(theirs),
            clear,
        );
        raced += race(took, swap_at(took, round), || link_to(peer), swapped).await;
        let theirs = nsdb.get::<Port>(peer).await.unwrap().expect("swapped port");
        assert_eq!(
            theirs.peer_id, None,
            "round {round}: tenant {b}'s port {peer} was linked by tenant {a}"
        );
        unlink(mine).await;
    }
    assert!(raced >= 3, "only {raced} requests straddled a swap");
}
