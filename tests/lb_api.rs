//! The load balancer's REST API on a real server, over the embedded store
//! and a real etcd: CRUD of load balancers, pools, VIPs, members and
//! health monitors; what is refused (each a 4xx naming the field, with
//! nothing written); and tenant scoping.

mod support;

use reqwest::Method;
use serde_json::{json, Value};

use support::api::*;

/// A tenant with a router on 10.0.1.0/24 and 10.0.2.0/24 (and a route to
/// 192.168.50.0/24), and a load balancer on it.
struct Lb {
    tenant: String,
    router: String,
    lb: String,
}

async fn lb_fixture(s: &TestServer, name: &str) -> Lb {
    let tenant = tenant(s, name).await;
    let router = router(s, &tenant, "edge").await;
    let port = router_port(s, &router, "10.0.1.1/24").await;
    router_port(s, &router, "10.0.2.1/24").await;
    create(
        s,
        &format!("/v1/routers/{router}/routes"),
        "routes",
        json!({ "dst": "192.168.50.0/24", "next_hop_port": port, "next_hop_gateway": "10.0.1.254" }),
    )
    .await;
    let lb = create(
        s,
        "/v1/load_balancers",
        "load_balancers",
        json!({ "router_id": router, "name": "front" }),
    )
    .await;
    assert_eq!(lb["tenant_id"], json!(tenant), "the router's tenant: {lb}");
    Lb {
        tenant,
        router,
        lb: id_of(&lb),
    }
}

async fn new_pool(s: &TestServer, lb: &str, name: &str) -> String {
    id_of(
        &create(
            s,
            "/v1/pools",
            "pools",
            json!({ "load_balancer_id": lb, "name": name, "algorithm": "weighted" }),
        )
        .await,
    )
}

async fn lb_crud(s: &TestServer) {
    let f = lb_fixture(s, "acme").await;
    let pool = new_pool(s, &f.lb, "web").await;
    let vip = create(
        s,
        "/v1/vips",
        "vips",
        json!({ "load_balancer_id": f.lb, "name": "http", "pool_id": pool, "address": "10.96.0.10", "protocol": "tcp", "port": 80 }),
    )
    .await;
    assert_members(
        &vip,
        &[
            "id",
            "revision",
            "tenant_id",
            "load_balancer_id",
            "name",
            "pool_id",
            "address",
            "protocol",
            "port",
            "session_affinity",
            "affinity_timeout_s",
            "admin_state_up",
        ],
    );
    assert_eq!(vip["session_affinity"], "none");
    let member = create(
        s,
        "/v1/members",
        "members",
        json!({ "pool_id": pool, "address": "10.0.2.10", "port": 8080, "weight": 3 }),
    )
    .await;
    assert_eq!(member["health"], "unknown", "{member}");
    assert_eq!(member["tenant_id"], json!(f.tenant));
    let routed = create(
        s,
        "/v1/members",
        "members",
        json!({ "pool_id": pool, "address": "192.168.50.7", "port": 8080 }),
    )
    .await;
    assert_eq!(routed["weight"], 1, "weight defaults to 1");
    let monitor = create(
        s,
        "/v1/health_monitors",
        "health_monitors",
        json!({ "pool_id": pool, "type": "http", "http_path": "/healthz", "interval_ms": 1000, "timeout_ms": 500 }),
    )
    .await;
    assert_eq!(
        (
            &monitor["expected_status"],
            &monitor["failures_to_down"],
            &monitor["successes_to_up"]
        ),
        (&json!(200), &json!(3), &json!(2))
    );
    let patched = patch_ok(
        s,
        &format!("/v1/vips/{}", id_of(&vip)),
        json!({ "session_affinity": "source_ip", "affinity_timeout_s": 30 }),
    )
    .await;
    assert_patched(
        &vip,
        &patched,
        &json!({ "session_affinity": "source_ip", "affinity_timeout_s": 30 }),
    );
    let drained = patch_ok(
        s,
        &format!("/v1/members/{}", id_of(&member)),
        json!({ "weight": 0 }),
    )
    .await;
    assert_patched(&member, &drained, &json!({ "weight": 0 }));
    for (path, filter, expected) in [
        ("/v1/pools", format!("load_balancer_id={}", f.lb), 1),
        ("/v1/vips", format!("load_balancer_id={}", f.lb), 1),
        ("/v1/members", format!("pool_id={pool}"), 2),
        ("/v1/health_monitors", format!("pool_id={pool}"), 1),
        ("/v1/load_balancers", format!("router_id={}", f.router), 1),
    ] {
        let listed = list_ids(s, ADMIN_TOKEN, &format!("{path}?{filter}")).await;
        assert_eq!(listed.len(), expected, "{path}?{filter}");
    }

    // A pool in use is not deleted from under its VIP.
    s.refuse(
        "deleting a pool a VIP serves",
        s.req(Method::DELETE, &format!("/v1/pools/{pool}")),
        &[409],
        None,
    )
    .await;
    delete_ok(s, &format!("/v1/vips/{}", id_of(&vip))).await;
    delete_ok(s, &format!("/v1/health_monitors/{}", id_of(&monitor))).await;
    delete_ok(s, &format!("/v1/members/{}", id_of(&member))).await;
    delete_ok(s, &format!("/v1/members/{}", id_of(&routed))).await;
    delete_ok(s, &format!("/v1/pools/{pool}")).await;
    delete_ok(s, &format!("/v1/load_balancers/{}", f.lb)).await;
}

/// What is refused, the request (path and body), the statuses allowed and
/// the field the problem must name.
type Refusal = (
    &'static str,
    (&'static str, Value),
    &'static [u16],
    &'static str,
);

async fn lb_refusals(s: &TestServer) {
    let f = lb_fixture(s, "acme").await;
    let pool = new_pool(s, &f.lb, "web").await;
    let vip = json!({ "load_balancer_id": f.lb, "name": "http", "pool_id": pool, "address": "10.96.0.10", "protocol": "tcp", "port": 80 });
    create(s, "/v1/vips", "vips", vip.clone()).await;
    let mut no_pool = vip.clone();
    no_pool.as_object_mut().unwrap().remove("pool_id");
    no_pool["name"] = json!("other");
    let post = |path: &'static str, body: Value| (path, body);
    let cases: Vec<Refusal> = vec![
        (
            "a VIP without a pool",
            post("/v1/vips", no_pool),
            &[400, 422],
            "pool_id",
        ),
        (
            "a duplicate VIP address, protocol and port",
            post(
                "/v1/vips",
                json!({ "load_balancer_id": f.lb, "name": "again", "pool_id": pool, "address": "10.96.0.10", "protocol": "tcp", "port": 80 }),
            ),
            &[409],
            "address",
        ),
        (
            "a VIP with port 0",
            post(
                "/v1/vips",
                json!({ "load_balancer_id": f.lb, "name": "zero", "pool_id": pool, "address": "10.96.0.11", "protocol": "udp", "port": 0 }),
            ),
            &[400, 422],
            "port",
        ),
        (
            "an IPv6 VIP",
            post(
                "/v1/vips",
                json!({ "load_balancer_id": f.lb, "name": "six", "pool_id": pool, "address": "fd00::10", "protocol": "tcp", "port": 80 }),
            ),
            &[400, 422],
            "address",
        ),
        (
            "a member with port 0",
            post(
                "/v1/members",
                json!({ "pool_id": pool, "address": "10.0.2.10", "port": 0 }),
            ),
            &[400, 422],
            "port",
        ),
        (
            "a member outside every subnet the router reaches",
            post(
                "/v1/members",
                json!({ "pool_id": pool, "address": "172.16.9.9", "port": 80 }),
            ),
            &[422],
            "address",
        ),
        (
            "a member whose health is given",
            post(
                "/v1/members",
                json!({ "pool_id": pool, "address": "10.0.2.10", "port": 80, "health": "up" }),
            ),
            &[400],
            "health",
        ),
        (
            "a member weight above 256",
            post(
                "/v1/members",
                json!({ "pool_id": pool, "address": "10.0.2.10", "port": 80, "weight": 1000 }),
            ),
            &[400, 422],
            "weight",
        ),
        (
            "a monitor whose timeout exceeds its interval",
            post(
                "/v1/health_monitors",
                json!({ "pool_id": pool, "type": "tcp", "interval_ms": 1000, "timeout_ms": 2000 }),
            ),
            &[400, 422],
            "timeout_ms",
        ),
        (
            "an HTTP monitor with a relative path",
            post(
                "/v1/health_monitors",
                json!({ "pool_id": pool, "type": "http", "http_path": "healthz", "interval_ms": 1000, "timeout_ms": 500 }),
            ),
            &[400, 422],
            "http_path",
        ),
        (
            "a second load balancer on the router",
            post(
                "/v1/load_balancers",
                json!({ "router_id": f.router, "name": "second" }),
            ),
            &[409],
            "router_id",
        ),
        (
            "a pool of a load balancer that does not exist",
            post(
                "/v1/pools",
                json!({ "load_balancer_id": uuid(), "name": "ghost" }),
            ),
            &[422],
            "load_balancer_id",
        ),
    ];
    for (what, (path, body), statuses, field) in cases {
        let problem = s
            .refuse_json(what, Method::POST, path, &body, statuses, Some(field))
            .await;
        if what.contains("outside every subnet") {
            assert!(
                problem.detail.contains("172.16.9.9") && problem.detail.contains("10.0.2.0/24"),
                "the refusal names the member and what the router reaches: {problem:?}"
            );
        }
    }

    // A VIP may only serve a pool of its own load balancer.
    let other = lb_fixture(s, "globex").await;
    let foreign_pool = new_pool(s, &other.lb, "theirs").await;
    s.refuse_json(
        "a VIP serving another load balancer's pool",
        Method::POST,
        "/v1/vips",
        &json!({ "load_balancer_id": f.lb, "tenant_id": f.tenant, "name": "x", "pool_id": foreign_pool, "address": "10.96.0.12", "protocol": "tcp", "port": 80 }),
        &[422],
        Some("pool_id"),
    )
    .await;

    // Members' health is the agents' to write.
    let member = create(
        s,
        "/v1/members",
        "members",
        json!({ "pool_id": pool, "address": "10.0.2.10", "port": 8080 }),
    )
    .await;
    s.refuse_json(
        "changing a member's health",
        Method::PATCH,
        &format!("/v1/members/{}", id_of(&member)),
        &json!({ "health": "down" }),
        &[400, 422],
        Some("health"),
    )
    .await;
}

async fn lb_tenant_scope(s: &TestServer) {
    let mine = lb_fixture(s, "acme").await;
    let theirs = lb_fixture(s, "globex").await;
    let token = token(s, &mine.tenant).await;
    let created = send(s.json_as(
        &token,
        Method::POST,
        "/v1/pools",
        &json!({ "load_balancer_id": mine.lb, "name": "own" }),
    ))
    .await;
    assert_eq!(created.status, 201, "{}", text(&created));
    s.refuse(
        "a pool in another tenant's load balancer",
        s.json_as(
            &token,
            Method::POST,
            "/v1/pools",
            &json!({ "load_balancer_id": theirs.lb, "name": "sneaky" }),
        ),
        &[403, 404, 422],
        None,
    )
    .await;
    s.refuse(
        "a load balancer on another tenant's router",
        s.json_as(
            &token,
            Method::POST,
            "/v1/load_balancers",
            &json!({ "router_id": theirs.router, "name": "sneaky" }),
        ),
        &[403, 404, 422],
        None,
    )
    .await;
    let listed = list_ids(s, &token, "/v1/load_balancers").await;
    assert_eq!(
        listed.into_iter().collect::<Vec<_>>(),
        vec![mine.lb.clone()]
    );
    let hidden = send(s.as_token(
        &token,
        Method::GET,
        &format!("/v1/load_balancers/{}", theirs.lb),
    ))
    .await;
    hidden.problem(404, None);
}

both_backends!(lb_crud, lb_refusals, lb_tenant_scope);
