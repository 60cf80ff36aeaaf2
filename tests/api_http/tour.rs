//! One pass over the routes the CRUD cases leave aside (provider, tenant
//! networks, floating IPs, leases, attachments, rule moves and the load
//! balancer's collections, tokens), asserting each success status the OpenAPI
//! document declares, so `every_response_matches_openapi` sees every
//! operation succeed.

use api::provision::{ensure_provider, ProviderPlan, UplinkPlan};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::api::*;

/// `method path body` as admin, expecting `status`; returns the body (or
/// `null` when there is none).
async fn expect(s: &TestServer, method: Method, path: &str, body: Value, status: u16) -> Value {
    let request = if body.is_null() {
        s.req(method.clone(), path)
    } else {
        s.json(method.clone(), path, &body)
    };
    let answer = send(request).await;
    assert_eq!(answer.status, status, "{method} {path}: {}", text(&answer));
    if answer.body.is_empty() {
        Value::Null
    } else {
        answer.json()
    }
}

async fn provisioning(s: &TestServer) {
    let gateway = host(s, &format!("gw-{}", Uuid::new_v4()), "192.0.2.1").await;
    let plan = ProviderPlan {
        uplink: Some(UplinkPlan {
            host_id: gateway.parse().expect("host id"),
            interface: "plexus0".into(),
            address: "100.64.0.2/24".parse().expect("address"),
            gateway: "100.64.0.1".parse().expect("gateway"),
        }),
        ..ProviderPlan::default()
    };
    ensure_provider(&s.nsdb, &plan).await.expect("provider");
    expect(s, Method::GET, "/v1/provider", Value::Null, 200).await;

    let t = tenant(s, "tour").await;
    let network = format!("/v1/tenants/{t}/network");
    let created = expect(s, Method::POST, &network, Value::Null, 201).await;
    expect(s, Method::POST, &network, json!({}), 200).await;
    assert_eq!(get_ok(s, &network).await, created);

    let fip = expect(
        s,
        Method::POST,
        "/v1/floating_ips",
        json!({"tenant_id": t, "fixed_address": "10.128.0.5"}),
        201,
    )
    .await;
    let fip = format!("/v1/floating_ips/{}", id_of(&fip));
    get_ok(s, &fip).await;
    delete_ok(s, &fip).await;

    let leases = format!("/v1/ip_pools/{}/leases", id_of(&created["pool"]));
    let owner = json!({"owner": "tour"});
    expect(s, Method::POST, &leases, owner.clone(), 201).await;
    expect(s, Method::POST, &leases, owner, 200).await;
    let lease = format!("{leases}/tour");
    expect(s, Method::DELETE, &lease, Value::Null, 204).await;

    let pod = "/v1/attachments/tour-net/c0ffee/eth0";
    let request = json!({"host_id": gateway, "interface_name": "vethtour", "tenant": "tour"});
    expect(s, Method::PUT, pod, request.clone(), 201).await;
    expect(s, Method::PUT, pod, request, 200).await;
    get_ok(s, pod).await;
    expect(s, Method::DELETE, pod, Value::Null, 204).await;

    expect(s, Method::DELETE, &network, Value::Null, 204).await;
    expect(s, Method::GET, &network, Value::Null, 404).await;
}

async fn rule_move(s: &TestServer) {
    let t = tenant(s, "mover").await;
    let c = chain(s, &t, "in").await;
    let rules = format!("/v1/chains/{c}/rules");
    let first = create(s, &rules, "rules", json!({"action": "accept"})).await;
    create(s, &rules, "rules", json!({"action": "drop"})).await;
    let moved = expect(
        s,
        Method::PUT,
        &format!("/v1/rules/{}/position", id_of(&first)),
        json!({"position": 7}),
        200,
    )
    .await;
    assert_eq!(moved["position"], 7);
}

async fn load_balancer(s: &TestServer) {
    let t = tenant(s, "balanced").await;
    let r = router(s, &t, "edge").await;
    router_port(s, &r, "10.0.1.1/24").await;
    let lb = create(
        s,
        "/v1/load_balancers",
        "load_balancers",
        json!({"router_id": r, "name": "front"}),
    )
    .await;
    let pool = create(
        s,
        "/v1/pools",
        "pools",
        json!({"load_balancer_id": id_of(&lb), "name": "web"}),
    )
    .await;
    let vip = create(
        s,
        "/v1/vips",
        "vips",
        json!({"load_balancer_id": id_of(&lb), "name": "http", "pool_id": id_of(&pool),
               "address": "10.96.0.10", "protocol": "tcp", "port": 80}),
    )
    .await;
    let member = create(
        s,
        "/v1/members",
        "members",
        json!({"pool_id": id_of(&pool), "address": "10.0.1.10", "port": 8080}),
    )
    .await;
    let monitor = create(
        s,
        "/v1/health_monitors",
        "health_monitors",
        json!({"pool_id": id_of(&pool), "type": "tcp", "interval_ms": 1000, "timeout_ms": 500}),
    )
    .await;
    let objects = [
        ("health_monitors", monitor, json!({"interval_ms": 2000})),
        ("members", member, json!({"weight": 2})),
        ("vips", vip, json!({"port": 8080})),
        ("pools", pool, json!({"name": "web-2"})),
        ("load_balancers", lb, json!({"name": "front-2"})),
    ];
    for (collection, object, change) in objects {
        let path = format!("/v1/{collection}/{}", id_of(&object));
        let patched = patch_ok(s, &path, change.clone()).await;
        assert_patched(&object, &patched, &change);
        delete_ok(s, &path).await;
    }
}

async fn tokens(s: &TestServer) {
    let t = tenant(s, "holder").await;
    let issued = expect(
        s,
        Method::POST,
        &format!("/v1/tenants/{t}/tokens"),
        json!({"description": "tour"}),
        201,
    )
    .await;
    expect(
        s,
        Method::GET,
        &format!("/v1/tokens?tenant_id={t}"),
        Value::Null,
        200,
    )
    .await;
    let token = format!("/v1/tokens/{}", id_of(&issued));
    get_ok(s, &token).await;
    delete_ok(s, &token).await;
}

/// The tour.
pub async fn openapi_tour(s: &TestServer) {
    tokens(s).await;
    provisioning(s).await;
    rule_move(s).await;
    load_balancer(s).await;
}
