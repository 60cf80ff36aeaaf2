//! A write made for a tenant is checked against the tenant inside its NSDB
//! transaction, once: it may only create, change and delete the tenant's
//! records and reference the tenant's records. On both backends, directly
//! through `Nsdb::scoped`, and through the API while an admin swaps the
//! referenced object for another tenant's under it.

mod support;

use nsdb::{
    Bridge, Chain, MacAddr, Nsdb, NsdbError, Port, Router, Rule, RuleAction, Scope, Tenant,
};
use serde_json::json;
use uuid::Uuid;

use support::api::{token, TestServer};

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
