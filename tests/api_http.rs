//! HTTP-level end-to-end tests of the REST API: a real server on a real
//! socket, over the embedded store and over a real etcd, driven through the
//! typed client and through raw HTTP.
//!
//! Every case is an `async fn case(server: &TestServer)` instantiated for
//! both backends by `api_cases!` at the bottom; the `plexus serve` restart
//! tests at the very end start the real binary.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use nsdb::{
    Bridge, Chain, Host, IpAddressGroup, IpLease, IpPool, MacAddr, Port, PortGroup, Route, Router,
    Rule, Tenant,
};
use rand::{Rng, SeedableRng};
use reqwest::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, IF_MATCH, WWW_AUTHENTICATE,
};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use support::api::*;
use tour::openapi_tour;
use trace_counters::{live_trace_requests_over_http, port_counters_over_http, trace_over_http};

#[path = "api_http/tour.rs"]
mod tour;

#[path = "api_http/trace_counters.rs"]
mod trace_counters;

// ---------------------------------------------------------------------------
// 1. CRUD of every resource
// ---------------------------------------------------------------------------

async fn tenants_crud(s: &TestServer) {
    let created = create(s, "/v1/tenants", "tenants", json!({ "name": "acme" })).await;
    assert_members(&created, &["id", "revision", "name"]);
    let id = id_of(&created);
    let other = tenant(s, "globex").await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, "/v1/tenants").await,
        [id.clone(), other.clone()].into_iter().collect()
    );
    let patched = patch_ok(s, &format!("/v1/tenants/{id}"), json!({ "name": "acme-2" })).await;
    assert_patched(&created, &patched, &json!({ "name": "acme-2" }));
    assert_eq!(get_ok(s, &format!("/v1/tenants/{id}")).await, patched);
    // The typed client agrees with the raw answers.
    let typed: Tenant = s.admin.get(&format!("/v1/tenants/{id}")).await.unwrap();
    assert_eq!(typed.name, "acme-2");
    // A client-chosen id is kept.
    let chosen = uuid();
    let with_id = create(
        s,
        "/v1/tenants",
        "tenants",
        json!({ "id": chosen, "name": "chosen" }),
    )
    .await;
    assert_eq!(id_of(&with_id), chosen);
    delete_ok(s, &format!("/v1/tenants/{id}")).await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, "/v1/tenants").await,
        [other, chosen].into_iter().collect()
    );
}

/// Routers and bridges have the same shape (bridges also have a flood
/// tunnel key).
async fn device_crud(s: &TestServer, collection: &str) {
    let t = tenant(s, "acme").await;
    let t2 = tenant(s, "globex").await;
    let c = chain(s, &t, "in").await;
    let plain = create(
        s,
        &format!("/v1/{collection}"),
        collection,
        json!({ "tenant_id": t, "name": "edge" }),
    )
    .await;
    let mut members = vec![
        "id",
        "revision",
        "tenant_id",
        "name",
        "admin_state_up",
        "inbound_chain_id",
        "outbound_chain_id",
    ];
    if collection == "bridges" {
        members.push("tunnel_key");
        let key = plain["tunnel_key"].as_u64().unwrap_or(0);
        assert!(
            (1..=u64::from(nsdb::MAX_TUNNEL_KEY)).contains(&key),
            "a bridge gets a tunnel key: {plain}"
        );
    }
    assert_members(&plain, &members);
    assert_eq!(
        plain["admin_state_up"], true,
        "admin_state_up defaults to up"
    );
    assert!(plain["inbound_chain_id"].is_null() && plain["outbound_chain_id"].is_null());
    let full = create(
        s,
        &format!("/v1/{collection}"),
        collection,
        json!({
            "tenant_id": t,
            "name": "core",
            "admin_state_up": false,
            "inbound_chain_id": c,
            "outbound_chain_id": c,
        }),
    )
    .await;
    let elsewhere = create(
        s,
        &format!("/v1/{collection}"),
        collection,
        json!({ "tenant_id": t2, "name": "edge" }),
    )
    .await;
    let (plain_id, full_id, elsewhere_id) = (id_of(&plain), id_of(&full), id_of(&elsewhere));
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/{collection}")).await,
        [plain_id.clone(), full_id.clone(), elsewhere_id.clone()]
            .into_iter()
            .collect()
    );
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/{collection}?tenant_id={t}")).await,
        [plain_id.clone(), full_id.clone()].into_iter().collect(),
        "tenant_id filters"
    );
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/{collection}?tenant_id={t2}")).await,
        [elsewhere_id.clone()].into_iter().collect()
    );
    assert!(list_ids(
        s,
        ADMIN_TOKEN,
        &format!("/v1/{collection}?tenant_id={}", uuid())
    )
    .await
    .is_empty());

    // PATCH changes only the given fields.
    let path = format!("/v1/{collection}/{full_id}");
    let renamed = patch_ok(s, &path, json!({ "name": "core-1" })).await;
    assert_patched(&full, &renamed, &json!({ "name": "core-1" }));
    let up = patch_ok(s, &path, json!({ "admin_state_up": true })).await;
    assert_patched(&renamed, &up, &json!({ "admin_state_up": true }));
    let cleared = patch_ok(s, &path, json!({ "inbound_chain_id": null })).await;
    assert_patched(&up, &cleared, &json!({ "inbound_chain_id": null }));
    let empty = patch_ok(s, &path, json!({})).await;
    assert_eq!(empty["name"], "core-1");
    assert_eq!(get_ok(s, &path).await, empty);

    // Fields that cannot change.
    s.refuse_json(
        "moving to another tenant",
        Method::PATCH,
        &path,
        &json!({ "tenant_id": t2 }),
        &[400],
        Some("tenant_id"),
    )
    .await;
    s.refuse_json(
        "changing the id",
        Method::PATCH,
        &path,
        &json!({ "id": uuid() }),
        &[400],
        Some("id"),
    )
    .await;
    // The same tenant_id is not a change.
    patch_ok(s, &path, json!({ "tenant_id": t })).await;

    let typed: Value = s.admin.get(&path).await.unwrap();
    assert_eq!(typed["name"], "core-1");
    delete_ok(s, &path).await;
    delete_ok(s, &format!("/v1/{collection}/{plain_id}")).await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/{collection}")).await,
        [elsewhere_id].into_iter().collect()
    );
}

async fn routers_crud(s: &TestServer) {
    device_crud(s, "routers").await;
    // The typed shape decodes.
    let t = tenant(s, "typed").await;
    let r: Router = s
        .admin
        .create_router(t.parse().unwrap(), "typed")
        .await
        .unwrap();
    assert!(r.admin_state_up && r.revision > 0);
}

async fn bridges_crud(s: &TestServer) {
    device_crud(s, "bridges").await;
    let t = tenant(s, "typed").await;
    let b: Bridge = s
        .admin
        .create_bridge(t.parse().unwrap(), "typed")
        .await
        .unwrap();
    assert!(b.admin_state_up && b.revision > 0);
}

const PORT_MEMBERS: &[&str] = &[
    "id",
    "revision",
    "device_id",
    "device_type",
    "mac",
    "address",
    "peer_id",
    "host_id",
    "interface_name",
    "inbound_chain_id",
    "outbound_chain_id",
    "allowed_addresses",
    "tunnel_key",
    "vtep",
];

async fn ports_crud(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let b = bridge(s, &t, "web").await;
    let b2 = bridge(s, &t, "db").await;
    let r = router(s, &t, "edge").await;
    let c = chain(s, &t, "filter").await;

    // A bridge port with nothing given: MAC and tunnel key are generated.
    let generated = create(s, &format!("/v1/bridges/{b}/ports"), "ports", json!({})).await;
    assert_members(&generated, PORT_MEMBERS);
    assert_eq!(generated["device_id"], b.as_str());
    assert_eq!(generated["device_type"], "bridge");
    assert!(generated["address"].is_null() && generated["peer_id"].is_null());
    assert!(generated["host_id"].is_null() && generated["interface_name"].is_null());
    assert_eq!(generated["allowed_addresses"], json!([]));
    let mac: MacAddr = generated["mac"].as_str().unwrap().parse().unwrap();
    assert!(
        !mac.is_multicast() && !mac.is_zero(),
        "a generated MAC is unicast"
    );
    assert_eq!(
        mac.0[0] & 0x02,
        0x02,
        "a generated MAC is locally administered"
    );
    let key = generated["tunnel_key"].as_u64().unwrap();
    assert!((1..=0x00ff_ffff).contains(&key), "tunnel key {key}");

    // Another generated port gets another MAC and key.
    let second = create(s, &format!("/v1/bridges/{b}/ports"), "ports", json!({})).await;
    assert_ne!(second["mac"], generated["mac"]);
    assert_ne!(second["tunnel_key"], generated["tunnel_key"]);

    // Everything given.
    let given = create(
        s,
        &format!("/v1/bridges/{b}/ports"),
        "ports",
        json!({
            "mac": "02:00:00:00:00:aa",
            "inbound_chain_id": c,
            "allowed_addresses": [{"mac": "02:00:00:00:00:aa", "ip": "10.0.0.5/32"}],
            "device_id": b,
            "device_type": "bridge",
        }),
    )
    .await;
    let other_bridge = create(s, &format!("/v1/bridges/{b2}/ports"), "ports", json!({})).await;

    // A router port.
    let rport = create(
        s,
        &format!("/v1/routers/{r}/ports"),
        "ports",
        json!({ "address": "10.0.1.1/24" }),
    )
    .await;
    assert_members(&rport, PORT_MEMBERS);
    assert_eq!(rport["device_type"], "router");
    assert_eq!(rport["device_id"], r.as_str());
    assert!(rport["mac"].as_str().unwrap().parse::<MacAddr>().is_ok());

    // Listings: per device, and all ports filtered by device.
    let on_b: BTreeSet<String> = [id_of(&generated), id_of(&second), id_of(&given)]
        .into_iter()
        .collect();
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/bridges/{b}/ports")).await,
        on_b
    );
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/ports?device_id={b}")).await,
        on_b
    );
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/routers/{r}/ports")).await,
        [id_of(&rport)].into_iter().collect()
    );
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/ports?device_id={r}")).await,
        [id_of(&rport)].into_iter().collect()
    );
    assert_eq!(list_ids(s, ADMIN_TOKEN, "/v1/ports").await.len(), 5);
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/ports?device_id={b2}")).await,
        [id_of(&other_bridge)].into_iter().collect()
    );

    // PATCH changes only the given fields (MAC and tunnel key stay).
    let path = format!("/v1/ports/{}", id_of(&generated));
    let change = json!({
        "allowed_addresses": [{"mac": generated["mac"], "ip": "10.0.0.9/32"}],
        "outbound_chain_id": c,
    });
    let patched = patch_ok(s, &path, change.clone()).await;
    assert_patched(&generated, &patched, &change);
    let new_mac = json!({ "mac": "02:00:00:00:00:bb" });
    let remac = patch_ok(s, &path, new_mac.clone()).await;
    assert_patched(&patched, &remac, &new_mac);
    let readdress = json!({ "address": "10.0.2.1/24" });
    let rpath = format!("/v1/ports/{}", id_of(&rport));
    let moved = patch_ok(s, &rpath, readdress.clone()).await;
    assert_patched(&rport, &moved, &readdress);
    let typed: Port = s.admin.get(&rpath).await.unwrap();
    assert_eq!(typed.address, Some("10.0.2.1/24".parse().unwrap()));

    // Fields a PATCH cannot change, each naming the field.
    for (field, value) in [
        ("device_id", json!(b2)),
        ("device_type", json!("router")),
        ("peer_id", json!(id_of(&second))),
        ("host_id", json!(uuid())),
        ("interface_name", json!("tap0")),
        ("tunnel_key", json!(key + 1)),
    ] {
        let mut body = serde_json::Map::new();
        body.insert(field.to_string(), value);
        s.refuse_json(
            &format!("PATCH {field}"),
            Method::PATCH,
            &path,
            &Value::Object(body),
            &[400],
            Some(field),
        )
        .await;
    }
    // A create body that contradicts the URL, or sets a link or binding.
    for (field, value) in [
        ("device_id", json!(b2)),
        ("device_type", json!("router")),
        ("peer_id", json!(id_of(&second))),
        ("host_id", json!(uuid())),
        ("interface_name", json!("tap0")),
    ] {
        let mut body = serde_json::Map::new();
        body.insert(field.to_string(), value);
        s.refuse_json(
            &format!("create with {field}"),
            Method::POST,
            &format!("/v1/bridges/{b}/ports"),
            &Value::Object(body),
            &[400],
            Some(field),
        )
        .await;
    }

    delete_ok(s, &path).await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/bridges/{b}/ports")).await,
        [id_of(&second), id_of(&given)].into_iter().collect()
    );
    delete_ok(s, &rpath).await;
    assert!(list_ids(s, ADMIN_TOKEN, &format!("/v1/routers/{r}/ports"))
        .await
        .is_empty());
}

async fn routes_crud(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let r = router(s, &t, "edge").await;
    let r2 = router(s, &t, "core").await;
    let p = router_port(s, &r, "10.0.1.1/24").await;
    let p2 = router_port(s, &r, "10.0.2.1/24").await;
    let normal = create(
        s,
        &format!("/v1/routers/{r}/routes"),
        "routes",
        json!({ "dst": "10.2.0.0/16", "next_hop_port": p, "next_hop_gateway": "10.0.1.254" }),
    )
    .await;
    assert_members(
        &normal,
        &[
            "id",
            "revision",
            "router_id",
            "dst",
            "src",
            "next_hop_port",
            "next_hop_gateway",
            "weight",
            "type",
        ],
    );
    assert_eq!(normal["router_id"], r.as_str());
    assert_eq!(normal["src"], "0.0.0.0/0", "src defaults to any");
    assert_eq!(normal["weight"], 0);
    assert_eq!(normal["type"], "normal");
    let blackhole = create(
        s,
        &format!("/v1/routers/{r}/routes"),
        "routes",
        json!({ "dst": "192.168.0.0/16", "type": "blackhole", "weight": 5 }),
    )
    .await;
    let v6 = create(
        s,
        &format!("/v1/routers/{r}/routes"),
        "routes",
        json!({ "dst": "::/0", "src": "::/0", "next_hop_port": p2, "type": "normal" }),
    )
    .await;
    let elsewhere = create(
        s,
        &format!("/v1/routers/{r2}/routes"),
        "routes",
        json!({ "dst": "0.0.0.0/0", "type": "reject" }),
    )
    .await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/routers/{r}/routes")).await,
        [id_of(&normal), id_of(&blackhole), id_of(&v6)]
            .into_iter()
            .collect()
    );
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/routers/{r2}/routes")).await,
        [id_of(&elsewhere)].into_iter().collect()
    );
    let path = format!("/v1/routes/{}", id_of(&normal));
    let change = json!({ "weight": 10 });
    let patched = patch_ok(s, &path, change.clone()).await;
    assert_patched(&normal, &patched, &change);
    let change = json!({ "next_hop_port": p2, "next_hop_gateway": "10.0.2.254" });
    let repointed = patch_ok(s, &path, change.clone()).await;
    assert_patched(&patched, &repointed, &change);
    let typed: Route = s.admin.get(&path).await.unwrap();
    assert_eq!(typed.weight, 10);
    s.refuse_json(
        "moving a route",
        Method::PATCH,
        &path,
        &json!({ "router_id": r2 }),
        &[400],
        Some("router_id"),
    )
    .await;
    s.refuse_json(
        "a route body contradicting the URL",
        Method::POST,
        &format!("/v1/routers/{r}/routes"),
        &json!({ "router_id": r2, "dst": "10.9.0.0/16", "type": "blackhole" }),
        &[400],
        Some("router_id"),
    )
    .await;
    delete_ok(s, &path).await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/routers/{r}/routes")).await,
        [id_of(&blackhole), id_of(&v6)].into_iter().collect()
    );
}

async fn chains_crud(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let t2 = tenant(s, "globex").await;
    let c = create(
        s,
        "/v1/chains",
        "chains",
        json!({ "tenant_id": t, "name": "in" }),
    )
    .await;
    assert_members(&c, &["id", "revision", "tenant_id", "name"]);
    let c2 = chain(s, &t2, "in").await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/chains?tenant_id={t}")).await,
        [id_of(&c)].into_iter().collect()
    );
    assert_eq!(list_ids(s, ADMIN_TOKEN, "/v1/chains").await.len(), 2);
    let path = format!("/v1/chains/{}", id_of(&c));
    let renamed = patch_ok(s, &path, json!({ "name": "ingress" })).await;
    assert_patched(&c, &renamed, &json!({ "name": "ingress" }));
    let typed: Chain = s.admin.get(&path).await.unwrap();
    assert_eq!(typed.name, "ingress");
    delete_ok(s, &path).await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, "/v1/chains").await,
        [c2].into_iter().collect()
    );
}

async fn rule_positions(s: &TestServer, chain: &str) -> Vec<(String, u64)> {
    let rules = walk(s, ADMIN_TOKEN, &format!("/v1/chains/{chain}/rules"), 1000).await;
    rules
        .iter()
        .map(|r| (id_of(r), r["position"].as_u64().unwrap()))
        .collect()
}

async fn rules_crud(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let c = chain(s, &t, "in").await;
    let target = chain(s, &t, "target").await;
    let rules_path = format!("/v1/chains/{c}/rules");
    // Appended when no position is given: 1, 2, 3.
    let mut appended = Vec::new();
    for action in ["accept", "drop", "reject"] {
        let rule = create(s, &rules_path, "rules", json!({ "action": action })).await;
        appended.push(rule);
    }
    assert_members(
        &appended[0],
        &["id", "revision", "chain_id", "position", "action"],
    );
    assert_eq!(appended[0]["chain_id"], c.as_str());
    let (a, b, d) = (
        id_of(&appended[0]),
        id_of(&appended[1]),
        id_of(&appended[2]),
    );
    let positions = rule_positions(s, &c).await;
    assert_eq!(
        positions,
        vec![(a.clone(), 1), (b.clone(), 2), (d.clone(), 3)],
        "appended rules take the next positions, listed in order"
    );

    // Insert at position 2: the rules at 2 and after shift down by one.
    let inserted = create(
        s,
        &rules_path,
        "rules",
        json!({
            "action": "jump",
            "jump_chain_id": target,
            "position": 2,
            "dst_cidr": "10.0.0.0/8", "protocol": "tcp",
        }),
    )
    .await;
    let i = id_of(&inserted);
    assert_eq!(
        rule_positions(s, &c).await,
        vec![
            (a.clone(), 1),
            (i.clone(), 2),
            (b.clone(), 3),
            (d.clone(), 4)
        ],
        "an insert shifts the rules at and after its position"
    );
    // The shifted rules read back at their new positions.
    let moved = get_ok(s, &format!("/v1/rules/{b}")).await;
    assert_eq!(moved["position"], 3);
    assert!(revision_of(&moved) > revision_of(&appended[1]));

    // Insert at the top.
    let top = create(
        s,
        &rules_path,
        "rules",
        json!({ "action": "continue", "position": 1 }),
    )
    .await;
    let top_id = id_of(&top);
    // Append after everything.
    let last = create(s, &rules_path, "rules", json!({ "action": "return" })).await;
    assert_eq!(last["position"], 6);
    let last_id = id_of(&last);
    assert_eq!(
        rule_positions(s, &c).await,
        vec![
            (top_id.clone(), 1),
            (a.clone(), 2),
            (i.clone(), 3),
            (b.clone(), 4),
            (d.clone(), 5),
            (last_id.clone(), 6)
        ]
    );
    // The list pages in position order.
    let paged = walk(s, ADMIN_TOKEN, &rules_path, 4).await;
    assert_eq!(
        ids(&paged),
        vec![
            top_id.clone(),
            a.clone(),
            i.clone(),
            b.clone(),
            d.clone(),
            last_id
        ]
    );

    // PATCH: only the given fields; position and chain are fixed.
    let path = format!("/v1/rules/{a}");
    let current = get_ok(s, &path).await;
    let change = json!({ "action": "drop", "src_cidr": "192.0.2.0/24" });
    let patched = patch_ok(s, &path, change.clone()).await;
    assert_patched(&current, &patched, &change);
    let typed: Rule = s.admin.get(&path).await.unwrap();
    assert_eq!(typed.position, 2);
    s.refuse_json(
        "moving a rule",
        Method::PATCH,
        &path,
        &json!({ "position": 9 }),
        &[400],
        Some("position"),
    )
    .await;
    s.refuse_json(
        "moving a rule to another chain",
        Method::PATCH,
        &path,
        &json!({ "chain_id": target }),
        &[400],
        Some("chain_id"),
    )
    .await;
    s.refuse_json(
        "a rule body contradicting the URL",
        Method::POST,
        &rules_path,
        &json!({ "chain_id": target, "action": "accept" }),
        &[400],
        Some("chain_id"),
    )
    .await;
    delete_ok(s, &path).await;
    assert_eq!(
        rule_positions(s, &c)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec![top_id, i, b, d, id_of(&last)]
    );
}

async fn port_groups_crud(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let b = bridge(s, &t, "web").await;
    let p1 = bridge_port(s, &b).await;
    let p2 = bridge_port(s, &b).await;
    let g = create(
        s,
        "/v1/port_groups",
        "port_groups",
        json!({ "tenant_id": t, "name": "web", "port_ids": [p1] }),
    )
    .await;
    assert_members(&g, &["id", "revision", "tenant_id", "name", "port_ids"]);
    let gid = id_of(&g);
    let empty = create(
        s,
        "/v1/port_groups",
        "port_groups",
        json!({ "tenant_id": t, "name": "empty" }),
    )
    .await;
    assert_eq!(empty["port_ids"], json!([]));
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/port_groups?tenant_id={t}")).await,
        [gid.clone(), id_of(&empty)].into_iter().collect()
    );

    // Add a member.
    let member_path = format!("/v1/port_groups/{gid}/ports/{p2}");
    let added = send(s.req(Method::PUT, &member_path)).await;
    assert_eq!(added.status, 200, "{}", text(&added));
    let added_json = added.json();
    assert_eq!(added_json["port_ids"], json!([p1, p2]));
    assert_eq!(added.etag(), format!("\"{}\"", revision_of(&added_json)));
    // Again: nothing changes.
    let again = send(s.req(Method::PUT, &member_path)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), added_json);
    assert_eq!(
        get_ok(s, &format!("/v1/port_groups/{gid}")).await,
        added_json
    );
    // A missing port is refused.
    s.refuse(
        "adding a missing port",
        s.req(
            Method::PUT,
            &format!("/v1/port_groups/{gid}/ports/{}", uuid()),
        ),
        &[404, 422],
        None,
    )
    .await;
    // Remove a member, and removing a non-member is a no-op.
    let removed = send(s.req(Method::DELETE, &format!("/v1/port_groups/{gid}/ports/{p1}"))).await;
    assert_eq!(removed.status, 200, "{}", text(&removed));
    let removed_json = removed.json();
    assert_eq!(removed_json["port_ids"], json!([p2]));
    let noop = send(s.req(Method::DELETE, &format!("/v1/port_groups/{gid}/ports/{p1}"))).await;
    assert_eq!(noop.status, 200);
    assert_eq!(noop.json(), removed_json);

    let typed: PortGroup = s
        .admin
        .get(&format!("/v1/port_groups/{gid}"))
        .await
        .unwrap();
    assert_eq!(typed.port_ids, vec![p2.parse::<Uuid>().unwrap()]);
    let renamed = patch_ok(
        s,
        &format!("/v1/port_groups/{gid}"),
        json!({ "name": "front" }),
    )
    .await;
    assert_patched(&removed_json, &renamed, &json!({ "name": "front" }));
    let change = json!({ "port_ids": [p1, p2] });
    let replaced = patch_ok(s, &format!("/v1/port_groups/{gid}"), change.clone()).await;
    assert_patched(&renamed, &replaced, &change);
    delete_ok(s, &format!("/v1/port_groups/{gid}")).await;
}

async fn ip_address_groups_crud(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let g = create(
        s,
        "/v1/ip_address_groups",
        "ip_address_groups",
        json!({ "tenant_id": t, "name": "office", "addresses": ["10.0.0.0/24"] }),
    )
    .await;
    assert_members(&g, &["id", "revision", "tenant_id", "name", "addresses"]);
    let gid = id_of(&g);
    let addresses = format!("/v1/ip_address_groups/{gid}/addresses");
    let mut current = g.clone();
    for (address, expected) in [
        ("10.1.0.0/16", json!(["10.0.0.0/24", "10.1.0.0/16"])),
        ("10.1.0.0/16", json!(["10.0.0.0/24", "10.1.0.0/16"])),
        (
            "192.0.2.7/32",
            json!(["10.0.0.0/24", "10.1.0.0/16", "192.0.2.7/32"]),
        ),
        (
            "fd00::/64",
            json!(["10.0.0.0/24", "10.1.0.0/16", "192.0.2.7/32", "fd00::/64"]),
        ),
    ] {
        let answer = send(s.json(Method::POST, &addresses, &json!({ "address": address }))).await;
        assert_eq!(answer.status, 200, "add {address}: {}", text(&answer));
        let group = answer.json();
        assert_eq!(group["addresses"], expected, "after adding {address}");
        assert_eq!(answer.etag(), format!("\"{}\"", revision_of(&group)));
        current = group;
    }
    assert_eq!(
        get_ok(s, &format!("/v1/ip_address_groups/{gid}")).await,
        current
    );
    // Remove with the '/' URL-encoded; a host address may be given bare.
    for (encoded, expected) in [
        (
            "10.1.0.0%2F16",
            json!(["10.0.0.0/24", "192.0.2.7/32", "fd00::/64"]),
        ),
        ("fd00::%2F64", json!(["10.0.0.0/24", "192.0.2.7/32"])),
        ("192.0.2.7", json!(["10.0.0.0/24"])),
        ("10.9.9.0%2F24", json!(["10.0.0.0/24"])),
    ] {
        let answer = send(s.req(Method::DELETE, &format!("{addresses}/{encoded}"))).await;
        assert_eq!(answer.status, 200, "remove {encoded}: {}", text(&answer));
        assert_eq!(
            answer.json()["addresses"],
            expected,
            "after removing {encoded}"
        );
    }
    s.refuse_json(
        "adding a non-address",
        Method::POST,
        &addresses,
        &json!({ "address": "not-an-address" }),
        &[400],
        Some("address"),
    )
    .await;
    s.refuse(
        "removing a non-address",
        s.req(Method::DELETE, &format!("{addresses}/not-an-address")),
        &[400],
        Some("address"),
    )
    .await;
    let typed: IpAddressGroup = s
        .admin
        .get(&format!("/v1/ip_address_groups/{gid}"))
        .await
        .unwrap();
    assert_eq!(typed.addresses, vec!["10.0.0.0/24".parse().unwrap()]);
    let before = get_ok(s, &format!("/v1/ip_address_groups/{gid}")).await;
    let change = json!({ "name": "hq" });
    let renamed = patch_ok(s, &format!("/v1/ip_address_groups/{gid}"), change.clone()).await;
    assert_patched(&before, &renamed, &change);
    assert_eq!(
        list_ids(
            s,
            ADMIN_TOKEN,
            &format!("/v1/ip_address_groups?tenant_id={t}")
        )
        .await,
        [gid.clone()].into_iter().collect()
    );
    delete_ok(s, &format!("/v1/ip_address_groups/{gid}")).await;
}

async fn hosts_crud(s: &TestServer) {
    let h = create(
        s,
        "/v1/hosts",
        "hosts",
        json!({ "name": "node-1", "tunnel_ip": "192.0.2.1" }),
    )
    .await;
    assert_members(
        &h,
        &[
            "id",
            "revision",
            "name",
            "tunnel_ip",
            "underlay_mtu",
            "alive",
        ],
    );
    assert_eq!(h["alive"], false, "no agent holds a lease");
    let h2 = host(s, "node-2", "2001:db8::2").await;
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, "/v1/hosts").await,
        [id_of(&h), h2].into_iter().collect()
    );
    let path = format!("/v1/hosts/{}", id_of(&h));
    let change = json!({ "tunnel_ip": "192.0.2.11" });
    let patched = patch_ok(s, &path, change.clone()).await;
    assert_patched(&h, &patched, &change);
    s.refuse_json(
        "setting liveness",
        Method::PATCH,
        &path,
        &json!({ "alive": true }),
        &[400],
        Some("alive"),
    )
    .await;
    let typed: Host = s.admin.get(&path).await.unwrap();
    assert_eq!(typed.tunnel_ip.to_string(), "192.0.2.11");
    delete_ok(s, &path).await;
}

async fn ip_pools_crud(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let b = bridge(s, &t, "web").await;
    let provider = create(
        s,
        "/v1/ip_pools",
        "ip_pools",
        json!({ "name": "public", "cidr": "198.51.100.0/24" }),
    )
    .await;
    assert_members(
        &provider,
        &[
            "id",
            "revision",
            "tenant_id",
            "name",
            "cidr",
            "gateway",
            "bridge_id",
        ],
    );
    assert_eq!(
        provider["gateway"], "198.51.100.1",
        "the gateway defaults to the first host address"
    );
    assert!(provider["tenant_id"].is_null() && provider["bridge_id"].is_null());
    let owned = create(
        s,
        "/v1/ip_pools",
        "ip_pools",
        json!({
            "name": "acme-web",
            "cidr": "10.60.0.0/24",
            "gateway": "10.60.0.254",
            "tenant_id": t,
            "bridge_id": b,
        }),
    )
    .await;
    let (pid, oid) = (id_of(&provider), id_of(&owned));
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, "/v1/ip_pools").await,
        [pid.clone(), oid.clone()].into_iter().collect()
    );
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/ip_pools?tenant_id={t}")).await,
        [oid.clone()].into_iter().collect()
    );

    // Leases: none, then the one allocated through the NSDB.
    let leases_path = format!("/v1/ip_pools/{oid}/leases");
    assert_eq!(get_ok(s, &leases_path).await["items"], json!([]));
    let lease = s
        .nsdb
        .allocate_ip(oid.parse().unwrap(), "container-1/eth0")
        .await
        .unwrap();
    let second = s
        .nsdb
        .allocate_ip(oid.parse().unwrap(), "container-2/eth0")
        .await
        .unwrap();
    let listed = get_ok(s, &leases_path).await;
    let leases: Vec<IpLease> = serde_json::from_value(listed["items"].clone()).unwrap();
    let mut expected = vec![lease.clone(), second.clone()];
    expected.sort_by_key(|l| l.address.to_string());
    let mut got = leases.clone();
    got.sort_by_key(|l| l.address.to_string());
    assert_eq!(got, expected);
    assert!(listed.get("next_after").is_none_or(Value::is_null));
    assert_eq!(
        get_ok(s, &format!("/v1/ip_pools/{pid}/leases")).await["items"],
        json!([])
    );
    s.refuse(
        "a query on leases",
        s.req(Method::GET, &format!("{leases_path}?limit=1")),
        &[400],
        Some("limit"),
    )
    .await;

    let path = format!("/v1/ip_pools/{oid}");
    let change = json!({ "name": "acme-web-1" });
    let renamed = patch_ok(s, &path, change.clone()).await;
    assert_patched(&owned, &renamed, &change);
    for (field, value) in [("cidr", "10.61.0.0/24"), ("gateway", "10.60.0.2")] {
        let mut body = serde_json::Map::new();
        body.insert(field.into(), json!(value));
        s.refuse_json(
            &format!("changing a pool's {field}"),
            Method::PATCH,
            &path,
            &Value::Object(body),
            &[400],
            Some(field),
        )
        .await;
    }
    let typed: IpPool = s.admin.get(&path).await.unwrap();
    assert_eq!(typed.name, "acme-web-1");
    // A pool with leases cannot go; once released it can.
    let problem = s
        .refuse(
            "deleting a pool with leases",
            s.req(Method::DELETE, &path),
            &[409],
            None,
        )
        .await;
    assert!(
        problem
            .referrers
            .iter()
            .any(|r| r.contains("container-1/eth0")),
        "the leases are named: {problem:?}"
    );
    for owner in ["container-1/eth0", "container-2/eth0"] {
        s.nsdb
            .release_ip(oid.parse().unwrap(), owner)
            .await
            .unwrap();
    }
    delete_ok(s, &path).await;
    delete_ok(s, &format!("/v1/ip_pools/{pid}")).await;
}

async fn pagination(s: &TestServer) {
    let t1 = tenant(s, "one").await;
    let t2 = tenant(s, "two").await;
    let mut mine = BTreeSet::new();
    for i in 0..7 {
        mine.insert(router(s, &t1, &format!("r{i}")).await);
    }
    let mut theirs = BTreeSet::new();
    for i in 0..3 {
        theirs.insert(router(s, &t2, &format!("r{i}")).await);
    }
    let all: BTreeSet<String> = mine.union(&theirs).cloned().collect();
    for limit in [1, 2, 3, 7, 100] {
        let items = walk(
            s,
            ADMIN_TOKEN,
            &format!("/v1/routers?tenant_id={t1}"),
            limit,
        )
        .await;
        assert_eq!(id_set(&items), mine, "limit {limit}");
        let ordered = ids(&items);
        let mut sorted = ordered.clone();
        sorted.sort_by_key(|id| id.parse::<Uuid>().unwrap());
        assert_eq!(ordered, sorted, "items come in id order");
        let items = walk(s, ADMIN_TOKEN, "/v1/routers", limit).await;
        assert_eq!(id_set(&items), all, "limit {limit}");
    }
    // An exact multiple of the limit ends without a dangling page.
    let page = get_ok(s, &format!("/v1/routers?tenant_id={t1}&limit=7")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 7);
    assert!(page.get("next_after").is_none_or(Value::is_null));
    // The default page holds them all.
    let page = get_ok(s, "/v1/routers").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 10);

    // A tenant token walks only its own.
    let tok = token(s, &t2).await;
    assert_eq!(id_set(&walk(s, &tok, "/v1/routers", 1).await), theirs);
    assert_eq!(id_set(&walk(s, &tok, "/v1/routers", 2).await), theirs);
    // The typed client follows pages too.
    let typed: Vec<Router> = s
        .admin
        .list(&format!("/v1/routers?tenant_id={t1}&limit=2"))
        .await
        .unwrap();
    assert_eq!(typed.len(), 7);

    // Ports under a device page as well.
    let b = bridge(s, &t1, "web").await;
    let mut ports = BTreeSet::new();
    for _ in 0..5 {
        ports.insert(bridge_port(s, &b).await);
    }
    for limit in [1, 2, 5] {
        assert_eq!(
            id_set(&walk(s, ADMIN_TOKEN, &format!("/v1/bridges/{b}/ports"), limit).await),
            ports
        );
        assert_eq!(
            id_set(&walk(s, ADMIN_TOKEN, &format!("/v1/ports?device_id={b}"), limit).await),
            ports
        );
    }

    // Bad query parameters, each naming itself.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("after=xyz", "after"),
        ("tenant_id=xyz", "tenant_id"),
        ("colour=red", "colour"),
    ] {
        s.refuse(
            &format!("GET /v1/routers?{query}"),
            s.req(Method::GET, &format!("/v1/routers?{query}")),
            &[400],
            Some(field),
        )
        .await;
    }
    s.refuse(
        "a tenant filter on ports",
        s.req(
            Method::GET,
            &format!("/v1/bridges/{b}/ports?tenant_id={t1}"),
        ),
        &[400],
        Some("tenant_id"),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 2. Links and bindings
// ---------------------------------------------------------------------------

async fn links(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let r1 = router(s, &t, "r1").await;
    let r2 = router(s, &t, "r2").await;
    let b = bridge(s, &t, "web").await;
    let rp = router_port(s, &r1, "10.0.1.1/24").await;
    let bp = bridge_port(s, &b).await;
    let up = router_port(s, &r1, "10.0.9.1/30").await;
    let down = router_port(s, &r2, "10.0.9.2/30").await;

    // router ↔ bridge: both sides point at each other.
    let before = get_ok(s, &format!("/v1/ports/{rp}")).await;
    let answer = send(s.json(
        Method::PUT,
        &format!("/v1/ports/{rp}/link"),
        &json!({ "peer_id": bp }),
    ))
    .await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let linked = answer.json();
    assert_eq!(answer.etag(), format!("\"{}\"", revision_of(&linked)));
    assert_patched(&before, &linked, &json!({ "peer_id": bp }));
    assert_eq!(
        get_ok(s, &format!("/v1/ports/{bp}")).await["peer_id"],
        rp.as_str()
    );
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/ports?peer_id={bp}")).await,
        [rp.clone()].into_iter().collect()
    );
    // Linking again to the same peer is a no-op.
    let again = link(s, &rp, &bp).await;
    assert_eq!(again, get_ok(s, &format!("/v1/ports/{rp}")).await);

    // router ↔ router, from the typed client.
    let typed = s
        .admin
        .link(up.parse().unwrap(), down.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(typed.peer_id, Some(down.parse().unwrap()));
    assert_eq!(
        get_ok(s, &format!("/v1/ports/{down}")).await["peer_id"],
        up.as_str()
    );

    // Unlink: both sides are cleared; unlinking an unlinked port is a no-op.
    let answer = send(s.req(Method::DELETE, &format!("/v1/ports/{bp}/link"))).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert!(answer.json()["peer_id"].is_null());
    assert!(get_ok(s, &format!("/v1/ports/{rp}")).await["peer_id"].is_null());
    let unlinked = get_ok(s, &format!("/v1/ports/{bp}")).await;
    let answer = send(s.req(Method::DELETE, &format!("/v1/ports/{bp}/link"))).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(answer.json(), unlinked);
    // Linked again from the bridge side.
    let relinked = link(s, &bp, &rp).await;
    assert_eq!(relinked["peer_id"], rp.as_str());
    let answer = send(s.req(Method::DELETE, &format!("/v1/ports/{down}/link"))).await;
    assert_eq!(answer.status, 200);
    assert!(get_ok(s, &format!("/v1/ports/{up}")).await["peer_id"].is_null());
}

async fn link_refusals(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let r1 = router(s, &t, "r1").await;
    let b1 = bridge(s, &t, "b1").await;
    let b2 = bridge(s, &t, "b2").await;
    let rp = router_port(s, &r1, "10.0.1.1/24").await;
    let rp2 = router_port(s, &r1, "10.0.2.1/24").await;
    let bp1 = bridge_port(s, &b1).await;
    let bp2 = bridge_port(s, &b2).await;
    let bp3 = bridge_port(s, &b2).await;
    let link_req = |port: &str, peer: &str| {
        s.json(
            Method::PUT,
            &format!("/v1/ports/{port}/link"),
            &json!({ "peer_id": peer }),
        )
    };

    // bridge ↔ bridge.
    s.refuse(
        "a bridge-to-bridge link",
        link_req(&bp1, &bp2),
        &[400, 409, 422],
        Some("peer_id"),
    )
    .await;
    // Two ports of one router.
    s.refuse(
        "linking two ports of one device",
        link_req(&rp, &rp2),
        &[400, 409, 422],
        Some("peer_id"),
    )
    .await;
    // Already-linked ports, from either side.
    link(s, &rp, &bp1).await;
    s.refuse(
        "linking to an already-linked port",
        link_req(&rp2, &bp1),
        &[409, 422],
        Some("peer_id"),
    )
    .await;
    s.refuse(
        "linking an already-linked port elsewhere",
        link_req(&rp, &bp3),
        &[409, 422],
        Some("peer_id"),
    )
    .await;
    // Missing peer and missing port.
    s.refuse(
        "linking to a missing port",
        link_req(&rp2, &uuid()),
        &[404, 422],
        Some("peer_id"),
    )
    .await;
    s.refuse(
        "linking a missing port",
        link_req(&uuid(), &rp2),
        &[404],
        None,
    )
    .await;
    // Bad bodies.
    s.refuse(
        "a peer that is not a UUID",
        link_req(&rp2, "port-7"),
        &[400],
        Some("peer_id"),
    )
    .await;
    s.refuse_json(
        "a link without a peer",
        Method::PUT,
        &format!("/v1/ports/{rp2}/link"),
        &json!({}),
        &[400],
        Some("peer_id"),
    )
    .await;
    // The linked pair still points at each other; a linked port cannot be deleted.
    assert_eq!(
        get_ok(s, &format!("/v1/ports/{bp1}")).await["peer_id"],
        rp.as_str()
    );
    let problem = s
        .refuse(
            "deleting a linked port",
            s.req(Method::DELETE, &format!("/v1/ports/{bp1}")),
            &[409],
            None,
        )
        .await;
    assert!(
        problem.referrers.iter().any(|r| r.contains(&rp)),
        "the peer is named: {problem:?}"
    );
}

/// A port linked to itself is refused naming `peer_id` (the model's own
/// rule: "a port cannot be linked to itself").
async fn self_link_names_peer_id(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let r = router(s, &t, "r").await;
    let rp = router_port(s, &r, "10.0.1.1/24").await;
    s.refuse_json(
        "linking a port to itself",
        Method::PUT,
        &format!("/v1/ports/{rp}/link"),
        &json!({ "peer_id": rp }),
        &[400, 409, 422],
        Some("peer_id"),
    )
    .await;
}

async fn bindings(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let b = bridge(s, &t, "web").await;
    let r = router(s, &t, "edge").await;
    let p = bridge_port(s, &b).await;
    let p2 = bridge_port(s, &b).await;
    let h = host(s, "node-1", "192.0.2.1").await;
    let binding = format!("/v1/ports/{p}/binding");

    let before = get_ok(s, &format!("/v1/ports/{p}")).await;
    let answer = send(s.json(
        Method::PUT,
        &binding,
        &json!({ "host_id": h, "interface_name": "tap0" }),
    ))
    .await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let bound = answer.json();
    assert_eq!(answer.etag(), format!("\"{}\"", revision_of(&bound)));
    assert_patched(
        &before,
        &bound,
        &json!({ "host_id": h, "interface_name": "tap0" }),
    );
    assert_eq!(get_ok(s, &format!("/v1/ports/{p}")).await, bound);
    assert_eq!(
        list_ids(s, ADMIN_TOKEN, &format!("/v1/ports?host_id={h}")).await,
        [p.clone()].into_iter().collect()
    );
    // Rebinding to another interface.
    let typed = s
        .admin
        .bind(p.parse().unwrap(), h.parse().unwrap(), "tap1")
        .await
        .unwrap();
    assert_eq!(typed.interface_name.as_deref(), Some("tap1"));

    // Refusals.
    s.refuse_json(
        "the same interface twice on one host",
        Method::PUT,
        &format!("/v1/ports/{p2}/binding"),
        &json!({ "host_id": h, "interface_name": "tap1" }),
        &[409],
        Some("interface_name"),
    )
    .await;
    s.refuse_json(
        "binding to a missing host",
        Method::PUT,
        &format!("/v1/ports/{p2}/binding"),
        &json!({ "host_id": uuid(), "interface_name": "tap2" }),
        &[404, 422],
        Some("host_id"),
    )
    .await;
    s.refuse_json(
        "an invalid interface name",
        Method::PUT,
        &format!("/v1/ports/{p2}/binding"),
        &json!({ "host_id": h, "interface_name": "much-too-long-for-linux" }),
        &[400],
        Some("interface_name"),
    )
    .await;
    s.refuse_json(
        "a binding without an interface",
        Method::PUT,
        &format!("/v1/ports/{p2}/binding"),
        &json!({ "host_id": h }),
        &[400],
        Some("interface_name"),
    )
    .await;
    // A linked (interior) port cannot also be bound.
    let rp = router_port(s, &r, "10.0.1.1/24").await;
    link(s, &rp, &p2).await;
    s.refuse_json(
        "binding a linked port",
        Method::PUT,
        &format!("/v1/ports/{p2}/binding"),
        &json!({ "host_id": h, "interface_name": "tap2" }),
        &[400, 409, 422],
        None,
    )
    .await;
    // A host with bound ports cannot go.
    let problem = s
        .refuse(
            "deleting a host with bound ports",
            s.req(Method::DELETE, &format!("/v1/hosts/{h}")),
            &[409],
            None,
        )
        .await;
    assert!(
        problem.referrers.iter().any(|r| r.contains(&p)),
        "{problem:?}"
    );
    // A stale If-Match.
    let current = get_ok(s, &format!("/v1/ports/{p}")).await;
    s.refuse(
        "unbinding at a stale revision",
        s.req(Method::DELETE, &binding)
            .header(IF_MATCH, format!("\"{}\"", revision_of(&current) - 1)),
        &[412],
        None,
    )
    .await;

    // Unbind.
    let answer = send(
        s.req(Method::DELETE, &binding)
            .header(IF_MATCH, format!("\"{}\"", revision_of(&current))),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let unbound = answer.json();
    assert!(unbound["host_id"].is_null() && unbound["interface_name"].is_null());
    assert_eq!(unbound["mac"], current["mac"]);
    assert!(list_ids(s, ADMIN_TOKEN, &format!("/v1/ports?host_id={h}"))
        .await
        .is_empty());
    delete_ok(s, &format!("/v1/hosts/{h}")).await;
}

// ---------------------------------------------------------------------------
// 3. Authentication and tenant scoping
// ---------------------------------------------------------------------------

/// One tenant's objects, one of each kind.
struct World {
    tenant: String,
    router: String,
    bridge: String,
    bport: String,
    rport: String,
    route: String,
    chain: String,
    rule: String,
    port_group: String,
    address_group: String,
}

impl World {
    /// (item path, PATCH body) of every object.
    fn objects(&self) -> Vec<(String, Value)> {
        vec![
            (format!("/v1/routers/{}", self.router), json!({"name": "x"})),
            (format!("/v1/bridges/{}", self.bridge), json!({"name": "x"})),
            (
                format!("/v1/ports/{}", self.bport),
                json!({"allowed_addresses": []}),
            ),
            (
                format!("/v1/ports/{}", self.rport),
                json!({"address": "10.99.0.1/24"}),
            ),
            (format!("/v1/routes/{}", self.route), json!({"weight": 3})),
            (format!("/v1/chains/{}", self.chain), json!({"name": "x"})),
            (
                format!("/v1/rules/{}", self.rule),
                json!({"action": "drop"}),
            ),
            (
                format!("/v1/port_groups/{}", self.port_group),
                json!({"name": "x"}),
            ),
            (
                format!("/v1/ip_address_groups/{}", self.address_group),
                json!({"name": "x"}),
            ),
        ]
    }
}

async fn world(s: &TestServer, name: &str) -> World {
    let tenant = tenant(s, name).await;
    let router = router(s, &tenant, "edge").await;
    let bridge = bridge(s, &tenant, "web").await;
    let bport = bridge_port(s, &bridge).await;
    let rport = router_port(s, &router, "10.0.1.1/24").await;
    let route = id_of(
        &create(
            s,
            &format!("/v1/routers/{router}/routes"),
            "routes",
            json!({ "dst": "0.0.0.0/0", "next_hop_port": rport }),
        )
        .await,
    );
    let chain = chain(s, &tenant, "in").await;
    let rule = id_of(
        &create(
            s,
            &format!("/v1/chains/{chain}/rules"),
            "rules",
            json!({ "action": "accept" }),
        )
        .await,
    );
    let port_group = id_of(
        &create(
            s,
            "/v1/port_groups",
            "port_groups",
            json!({ "tenant_id": tenant, "name": "g", "port_ids": [bport] }),
        )
        .await,
    );
    let address_group = id_of(
        &create(
            s,
            "/v1/ip_address_groups",
            "ip_address_groups",
            json!({ "tenant_id": tenant, "name": "g", "addresses": ["10.0.0.0/8"] }),
        )
        .await,
    );
    World {
        tenant,
        router,
        bridge,
        bport,
        rport,
        route,
        chain,
        rule,
        port_group,
        address_group,
    }
}

async fn tenant_tokens_are_scoped(s: &TestServer) {
    let a = world(s, "a").await;
    let b = world(s, "b").await;
    let token_a = token(s, &a.tenant).await;
    let token_b = token(s, &b.tenant).await;
    let mut a_before = Vec::new();
    for (path, _) in a.objects() {
        a_before.push(get_ok(s, &path).await);
    }

    // GET of A's objects with B's token: 404, as for objects that do not exist.
    for (path, _) in a.objects() {
        let answer = send(s.as_token(&token_b, Method::GET, &path)).await;
        answer.problem(404, None);
        // A's own token sees them.
        let own = send(s.as_token(&token_a, Method::GET, &path)).await;
        assert_eq!(own.status, 200, "A reads {path}: {}", text(&own));
    }
    send(s.as_token(&token_b, Method::GET, &format!("/v1/tenants/{}", a.tenant)))
        .await
        .problem(404, None);
    let own = send(s.as_token(&token_b, Method::GET, &format!("/v1/tenants/{}", b.tenant))).await;
    assert_eq!(own.status, 200);

    // Listings show only B's objects.
    let b_lists: Vec<(&str, BTreeSet<String>)> = vec![
        ("/v1/tenants", [b.tenant.clone()].into()),
        ("/v1/routers", [b.router.clone()].into()),
        ("/v1/bridges", [b.bridge.clone()].into()),
        ("/v1/ports", [b.bport.clone(), b.rport.clone()].into()),
        ("/v1/chains", [b.chain.clone()].into()),
        ("/v1/port_groups", [b.port_group.clone()].into()),
        ("/v1/ip_address_groups", [b.address_group.clone()].into()),
    ];
    for (path, expected) in &b_lists {
        assert_eq!(
            &list_ids(s, &token_b, path).await,
            expected,
            "B lists {path}"
        );
    }
    for path in [
        format!("/v1/routers?tenant_id={}", a.tenant),
        format!("/v1/bridges?tenant_id={}", a.tenant),
        format!("/v1/chains?tenant_id={}", a.tenant),
        format!("/v1/ports?device_id={}", a.bridge),
        format!("/v1/ports?device_id={}", a.router),
    ] {
        assert!(
            list_ids(s, &token_b, &path).await.is_empty(),
            "B lists nothing of A at {path}"
        );
    }
    assert_eq!(
        list_ids(s, &token_b, &format!("/v1/routers/{}/routes", b.router)).await,
        [b.route.clone()].into()
    );
    assert_eq!(
        list_ids(s, &token_b, &format!("/v1/chains/{}/rules", b.chain)).await,
        [b.rule.clone()].into()
    );
    // A's nested collections are 404 to B.
    for path in [
        format!("/v1/routers/{}/ports", a.router),
        format!("/v1/bridges/{}/ports", a.bridge),
        format!("/v1/routers/{}/routes", a.router),
        format!("/v1/chains/{}/rules", a.chain),
    ] {
        send(s.as_token(&token_b, Method::GET, &path))
            .await
            .problem(404, None);
    }

    // PATCH and DELETE of A's objects: 404, and nothing changes.
    for (path, fields) in a.objects() {
        s.refuse(
            &format!("B patches {path}"),
            s.json_as(&token_b, Method::PATCH, &path, &fields),
            &[404],
            None,
        )
        .await;
        s.refuse(
            &format!("B deletes {path}"),
            s.as_token(&token_b, Method::DELETE, &path),
            &[404],
            None,
        )
        .await;
    }
    // Writes under A's objects: 404.
    for (path, method, body) in [
        (
            format!("/v1/bridges/{}/ports", a.bridge),
            Method::POST,
            json!({}),
        ),
        (
            format!("/v1/routers/{}/ports", a.router),
            Method::POST,
            json!({"address": "10.5.0.1/24"}),
        ),
        (
            format!("/v1/routers/{}/routes", a.router),
            Method::POST,
            json!({"dst": "10.7.0.0/16", "type": "blackhole"}),
        ),
        (
            format!("/v1/chains/{}/rules", a.chain),
            Method::POST,
            json!({"action": "drop"}),
        ),
        (
            format!("/v1/ports/{}/link", a.bport),
            Method::PUT,
            json!({"peer_id": b.rport}),
        ),
        (
            format!("/v1/ip_address_groups/{}/addresses", a.address_group),
            Method::POST,
            json!({"address": "10.1.0.0/16"}),
        ),
    ] {
        s.refuse(
            &format!("B writes {method} {path}"),
            s.json_as(&token_b, method.clone(), &path, &body),
            &[404],
            None,
        )
        .await;
    }
    for (path, method) in [
        (format!("/v1/ports/{}/link", a.bport), Method::DELETE),
        (
            format!("/v1/port_groups/{}/ports/{}", a.port_group, b.bport),
            Method::PUT,
        ),
        (
            format!("/v1/port_groups/{}/ports/{}", a.port_group, a.bport),
            Method::DELETE,
        ),
        (
            format!("/v1/port_groups/{}/ports/{}", b.port_group, a.bport),
            Method::PUT,
        ),
        (
            format!(
                "/v1/ip_address_groups/{}/addresses/10.0.0.0%2F8",
                a.address_group
            ),
            Method::DELETE,
        ),
    ] {
        s.refuse(
            &format!("B writes {method} {path}"),
            s.as_token(&token_b, method.clone(), &path),
            &[404],
            None,
        )
        .await;
    }
    // Linking B's port to A's port: the peer is not visible.
    s.refuse(
        "B links to A's port",
        s.json_as(
            &token_b,
            Method::PUT,
            &format!("/v1/ports/{}/link", b.bport),
            &json!({"peer_id": a.rport}),
        ),
        &[404, 422],
        Some("peer_id"),
    )
    .await;

    // Creating for A: 403; without a tenant_id: B's own.
    for path in [
        "/v1/routers",
        "/v1/bridges",
        "/v1/chains",
        "/v1/port_groups",
        "/v1/ip_address_groups",
    ] {
        s.refuse(
            &format!("B creates in {path} for A"),
            s.json_as(
                &token_b,
                Method::POST,
                path,
                &json!({"tenant_id": a.tenant, "name": "intruder"}),
            ),
            &[403],
            Some("tenant_id"),
        )
        .await;
    }
    let client_b = s.client(&token_b);
    let own: Router = client_b
        .post("/v1/routers", &json!({"name": "mine"}))
        .await
        .unwrap();
    assert_eq!(own.tenant_id.to_string(), b.tenant);
    let own: Value = client_b
        .post(&format!("/v1/bridges/{}/ports", b.bridge), &json!({}))
        .await
        .unwrap();
    assert_eq!(own["device_id"], b.bridge.as_str());

    // A's objects are exactly as before (B changed nothing of A's).
    for ((path, _), before) in a.objects().into_iter().zip(&a_before) {
        let answer = send(s.as_token(&token_a, Method::GET, &path)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.json(), before, "{path} changed");
    }
    assert_eq!(
        list_ids(s, &token_a, "/v1/routers").await,
        [a.router.clone()].into()
    );
}

async fn admin_only_operations(s: &TestServer) {
    let a = world(s, "a").await;
    let token_a = token(s, &a.tenant).await;
    let h = host(s, "node-1", "192.0.2.1").await;
    let pool = id_of(
        &create(
            s,
            "/v1/ip_pools",
            "ip_pools",
            json!({"name": "p", "cidr": "10.70.0.0/24", "tenant_id": a.tenant}),
        )
        .await,
    );
    let forbidden: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/hosts".into(), None),
        (Method::GET, format!("/v1/hosts/{h}"), None),
        (
            Method::POST,
            "/v1/hosts".into(),
            Some(json!({"name": "n", "tunnel_ip": "192.0.2.9"})),
        ),
        (
            Method::PATCH,
            format!("/v1/hosts/{h}"),
            Some(json!({"name": "n"})),
        ),
        (Method::DELETE, format!("/v1/hosts/{h}"), None),
        (Method::GET, "/v1/ip_pools".into(), None),
        (Method::GET, format!("/v1/ip_pools/{pool}"), None),
        (Method::GET, format!("/v1/ip_pools/{pool}/leases"), None),
        (
            Method::POST,
            "/v1/ip_pools".into(),
            Some(json!({"name": "n", "cidr": "10.71.0.0/24"})),
        ),
        (
            Method::PATCH,
            format!("/v1/ip_pools/{pool}"),
            Some(json!({"name": "n"})),
        ),
        (Method::DELETE, format!("/v1/ip_pools/{pool}"), None),
        (
            Method::POST,
            "/v1/tenants".into(),
            Some(json!({"name": "n"})),
        ),
        (
            Method::PATCH,
            format!("/v1/tenants/{}", a.tenant),
            Some(json!({"name": "n"})),
        ),
        (Method::DELETE, format!("/v1/tenants/{}", a.tenant), None),
        (
            Method::POST,
            format!("/v1/tenants/{}/tokens", a.tenant),
            Some(json!({"description": "more"})),
        ),
        (
            Method::PUT,
            format!("/v1/ports/{}/binding", a.bport),
            Some(json!({"host_id": h, "interface_name": "tap0"})),
        ),
        (
            Method::DELETE,
            format!("/v1/ports/{}/binding", a.bport),
            None,
        ),
    ];
    for (method, path, body) in forbidden {
        let request = match &body {
            Some(body) => s.json_as(&token_a, method.clone(), &path, body),
            None => s.as_token(&token_a, method.clone(), &path),
        };
        s.refuse(
            &format!("a tenant token: {method} {path}"),
            request,
            &[403],
            None,
        )
        .await;
    }
    // The typed client sees the same.
    let client_a = s.client(&token_a);
    refused(
        client_a
            .issue_tenant_token(a.tenant.parse().unwrap(), "x")
            .await,
        &[403],
        None,
    );
    refused(client_a.create_tenant("new").await, &[403], None);
    refused(client_a.list::<Host>("/v1/hosts").await, &[403], None);
}

async fn authentication(s: &TestServer) {
    let a = world(s, "a").await;
    // Issuing: 201, the secret shown once, and only its hash stored.
    let answer = send(s.json(
        Method::POST,
        &format!("/v1/tenants/{}/tokens", a.tenant),
        &json!({"description": "ci"}),
    ))
    .await;
    assert_eq!(answer.status, 201, "{}", text(&answer));
    let issued = answer.json();
    assert_eq!(issued["tenant_id"], a.tenant.as_str());
    assert_eq!(issued["description"], "ci");
    let tok = issued["token"].as_str().expect("the token").to_string();
    assert!(tok.len() >= 32, "a long random token: {tok}");
    let secret = tok.as_bytes();
    let stored_in_clear = s
        .dump()
        .await
        .into_iter()
        .filter(|e| e.value.windows(secret.len()).any(|w| w == secret))
        .map(|e| e.key)
        .collect::<Vec<_>>();
    assert!(
        stored_in_clear.is_empty(),
        "the secret is stored in clear at {stored_in_clear:?}"
    );
    let protected = [
        (Method::GET, "/v1/tenants".to_string()),
        (Method::GET, format!("/v1/routers/{}", a.router)),
        (Method::GET, format!("/v1/ports/{}", a.bport)),
        (Method::GET, "/v1/hosts".to_string()),
        (Method::DELETE, format!("/v1/routers/{}", a.router)),
    ];
    for (method, path) in &protected {
        // No token.
        s.refuse(
            &format!("no token: {method} {path}"),
            s.anonymous(method.clone(), path),
            &[401],
            None,
        )
        .await;
        // Wrong tokens and malformed headers.
        for header in [
            "Bearer wrong-token".to_string(),
            format!("Bearer {ADMIN_TOKEN}x"),
            format!("Bearer {}", &tok[..tok.len() - 1]),
            format!("Basic {ADMIN_TOKEN}"),
            ADMIN_TOKEN.to_string(),
            "Bearer ".to_string(),
            "Bearer".to_string(),
        ] {
            s.refuse(
                &format!("Authorization '{header}': {method} {path}"),
                s.anonymous(method.clone(), path)
                    .header(AUTHORIZATION, header.clone()),
                &[401],
                None,
            )
            .await;
        }
    }
    // A write without a token: 401, and nothing is written.
    s.refuse(
        "creating without a token",
        s.anonymous(Method::POST, "/v1/tenants")
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"name":"anon"}"#),
        &[401],
        None,
    )
    .await;
    let problem = problem_of(s.client("nope").get::<Value>("/v1/tenants").await);
    assert_eq!(problem.status, 401);
    // The good tokens work.
    assert_eq!(
        send(s.as_token(&tok, Method::GET, "/v1/routers"))
            .await
            .status,
        200
    );
    assert_eq!(send(s.req(Method::GET, "/v1/routers")).await.status, 200);
}

/// RFC 9110 §15.5.2: a 401 answer MUST carry `WWW-Authenticate`.
async fn unauthorized_names_the_scheme(s: &TestServer) {
    let answer = send(s.anonymous(Method::GET, "/v1/tenants")).await;
    answer.problem(401, None);
    let challenge = answer
        .headers
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "a 401 must send 'WWW-Authenticate: Bearer ...', got {:?}",
        answer.headers
    );
}

async fn deleting_a_tenant_revokes_its_tokens(s: &TestServer) {
    let t = tenant(s, "short-lived").await;
    let other = tenant(s, "other").await;
    let r = router(s, &t, "edge").await;
    let tok = token(s, &t).await;
    let tok2 = token(s, &t).await;
    let other_tok = token(s, &other).await;
    // Still referenced by the router: refused, and the tokens keep working.
    let problem = s
        .refuse(
            "deleting a tenant that owns a router",
            s.req(Method::DELETE, &format!("/v1/tenants/{t}")),
            &[409],
            None,
        )
        .await;
    assert!(
        problem.referrers.iter().any(|x| x.contains(&r)),
        "{problem:?}"
    );
    assert_eq!(
        send(s.as_token(&tok, Method::GET, "/v1/routers"))
            .await
            .status,
        200
    );
    delete_ok(s, &format!("/v1/routers/{r}")).await;
    delete_ok(s, &format!("/v1/tenants/{t}")).await;
    for token in [&tok, &tok2] {
        send(s.as_token(token, Method::GET, "/v1/routers"))
            .await
            .problem(401, None);
    }
    assert_eq!(
        send(s.as_token(&other_tok, Method::GET, "/v1/routers"))
            .await
            .status,
        200
    );
    // No token record of the deleted tenant is left behind.
    let dump = s.dump().await;
    let leftover: Vec<_> = dump
        .iter()
        .filter(|e| e.key.starts_with("obj/api_token/"))
        .filter(|e| String::from_utf8_lossy(&e.value).contains(&t))
        .map(|e| e.key.clone())
        .collect();
    assert!(leftover.is_empty(), "tokens left: {leftover:?}");
}

// ---------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------

/// A tenant with one of each device, for the bad-input cases.
struct Base {
    tenant: String,
    router: String,
    bridge: String,
    bport: String,
    rport: String,
    chain: String,
    host: String,
    address_group: String,
}

async fn base(s: &TestServer) -> Base {
    let tenant = tenant(s, "acme").await;
    let router = router(s, &tenant, "edge").await;
    let bridge = bridge(s, &tenant, "web").await;
    let bport = bridge_port(s, &bridge).await;
    let rport = router_port(s, &router, "10.0.1.1/24").await;
    let chain = chain(s, &tenant, "in").await;
    let host = host(s, "node-1", "192.0.2.1").await;
    let address_group = id_of(
        &create(
            s,
            "/v1/ip_address_groups",
            "ip_address_groups",
            json!({"tenant_id": tenant, "name": "g"}),
        )
        .await,
    );
    Base {
        tenant,
        router,
        bridge,
        bport,
        rport,
        chain,
        host,
        address_group,
    }
}

async fn malformed_json(s: &TestServer) {
    let w = base(s).await;
    let cases: Vec<(Method, String, &str)> = vec![
        (Method::POST, "/v1/tenants".into(), r#"{"name": "#),
        (Method::POST, "/v1/tenants".into(), "not json"),
        (Method::POST, "/v1/tenants".into(), ""),
        (Method::POST, "/v1/tenants".into(), r#"{"name": "x",}"#),
        (Method::POST, "/v1/tenants".into(), r#"{'name': 'x'}"#),
        (
            Method::POST,
            "/v1/tenants".into(),
            r#"{"name": "x"} {"name": "y"}"#,
        ),
        (Method::POST, "/v1/tenants".into(), r#"["name", "x"]"#),
        (Method::POST, "/v1/tenants".into(), r#""x""#),
        (Method::POST, "/v1/tenants".into(), "null"),
        (Method::POST, "/v1/routers".into(), r#"{"tenant_id": "#),
        (
            Method::PATCH,
            format!("/v1/routers/{}", w.router),
            r#"{"name":}"#,
        ),
        (Method::PUT, format!("/v1/ports/{}/link", w.rport), "{"),
        (
            Method::PUT,
            format!("/v1/ports/{}/binding", w.bport),
            r#"{"host_id": "x", "#,
        ),
        (
            Method::POST,
            format!("/v1/bridges/{}/ports", w.bridge),
            r#"{"mac": "02:00:00:00:00:01""#,
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", w.chain),
            r#"{"action": "accept", "src_cidr": }"#,
        ),
        (
            Method::POST,
            format!("/v1/ip_address_groups/{}/addresses", w.address_group),
            "{,}",
        ),
        (
            Method::POST,
            format!("/v1/tenants/{}/tokens", w.tenant),
            r#"{"description": "unterminated}"#,
        ),
    ];
    for (method, path, body) in cases {
        s.refuse(
            &format!("{method} {path} with {body:?}"),
            raw_json(s, method.clone(), &path, body),
            &[400],
            None,
        )
        .await;
    }
    // Invalid UTF-8 in a JSON string.
    s.refuse(
        "invalid UTF-8",
        raw_json(
            s,
            Method::POST,
            "/v1/tenants",
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
        ),
        &[400],
        None,
    )
    .await;
}

async fn unknown_fields(s: &TestServer) {
    let w = base(s).await;
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/v1/tenants".into(),
            json!({"name": "x", "color": "red"}),
            "color",
        ),
        (
            Method::POST,
            "/v1/routers".into(),
            json!({"tenant_id": w.tenant, "name": "x", "ha": true}),
            "ha",
        ),
        (
            Method::POST,
            "/v1/bridges".into(),
            json!({"tenant_id": w.tenant, "name": "x", "vlan": 5}),
            "vlan",
        ),
        (
            Method::POST,
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"vlan": 5}),
            "vlan",
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/ports", w.router),
            json!({"address": "10.0.2.1/24", "mtu": 9000}),
            "mtu",
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/routes", w.router),
            json!({"dst": "10.9.0.0/16", "type": "blackhole", "metric": 1}),
            "metric",
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "accept", "priority": 1}),
            "priority",
        ),
        (
            Method::POST,
            "/v1/chains".into(),
            json!({"tenant_id": w.tenant, "name": "x", "policy": "drop"}),
            "policy",
        ),
        (
            Method::POST,
            "/v1/port_groups".into(),
            json!({"tenant_id": w.tenant, "name": "x", "members": []}),
            "members",
        ),
        (
            Method::POST,
            "/v1/ip_address_groups".into(),
            json!({"tenant_id": w.tenant, "name": "x", "cidrs": []}),
            "cidrs",
        ),
        (
            Method::POST,
            "/v1/hosts".into(),
            json!({"name": "h", "tunnel_ip": "192.0.2.5", "rack": 4}),
            "rack",
        ),
        (
            Method::POST,
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.80.0.0/24", "dns": "1.1.1.1"}),
            "dns",
        ),
        (
            Method::PATCH,
            format!("/v1/routers/{}", w.router),
            json!({"nmae": "typo"}),
            "nmae",
        ),
        (
            Method::PATCH,
            format!("/v1/ports/{}", w.bport),
            json!({"vlan": 5}),
            "vlan",
        ),
        (
            Method::PUT,
            format!("/v1/ports/{}/link", w.rport),
            json!({"peer_id": w.bport, "mode": "trunk"}),
            "mode",
        ),
        (
            Method::PUT,
            format!("/v1/ports/{}/binding", w.bport),
            json!({"host_id": w.host, "interface_name": "tap0", "mtu": 1500}),
            "mtu",
        ),
        (
            Method::POST,
            format!("/v1/tenants/{}/tokens", w.tenant),
            json!({"description": "x", "scope": "all"}),
            "scope",
        ),
        (
            Method::POST,
            format!("/v1/ip_address_groups/{}/addresses", w.address_group),
            json!({"address": "10.0.0.0/8", "comment": "x"}),
            "comment",
        ),
    ];
    for (method, path, body, field) in cases {
        s.refuse_json(
            &format!("{method} {path} {body}"),
            method.clone(),
            &path,
            &body,
            &[400],
            Some(field),
        )
        .await;
    }
}

/// An unknown field inside a nested object is named by its full path, as
/// a type error there is (`allowed_addresses[0].mac`).
async fn nested_unknown_field_is_named_by_path(s: &TestServer) {
    let w = base(s).await;
    s.refuse_json(
        "an unknown field in allowed_addresses",
        Method::POST,
        &format!("/v1/bridges/{}/ports", w.bridge),
        &json!({"allowed_addresses": [{"mac": "02:00:00:00:00:01", "ip": "10.0.0.1/32", "vlan": 1}]}),
        &[400],
        Some("allowed_addresses[0].vlan"),
    )
    .await;
}

async fn wrong_types(s: &TestServer) {
    let w = base(s).await;
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/v1/tenants".into(),
            json!({"name": 5}),
            "name",
        ),
        (
            Method::POST,
            "/v1/tenants".into(),
            json!({"name": null}),
            "name",
        ),
        (Method::POST, "/v1/tenants".into(), json!({}), "name"),
        (
            Method::POST,
            "/v1/tenants".into(),
            json!({"name": "x", "id": "not-a-uuid"}),
            "id",
        ),
        (
            Method::POST,
            "/v1/routers".into(),
            json!({"tenant_id": "not-a-uuid", "name": "x"}),
            "tenant_id",
        ),
        (
            Method::POST,
            "/v1/routers".into(),
            json!({"tenant_id": 42, "name": "x"}),
            "tenant_id",
        ),
        (
            Method::POST,
            "/v1/routers".into(),
            json!({"tenant_id": w.tenant}),
            "name",
        ),
        (
            Method::POST,
            "/v1/routers".into(),
            json!({"tenant_id": w.tenant, "name": "x", "admin_state_up": "yes"}),
            "admin_state_up",
        ),
        (
            Method::POST,
            "/v1/bridges".into(),
            json!({"tenant_id": w.tenant, "name": ["x"]}),
            "name",
        ),
        (
            Method::POST,
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"allowed_addresses": "10.0.0.1"}),
            "allowed_addresses",
        ),
        (
            Method::POST,
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"tunnel_key": -1}),
            "tunnel_key",
        ),
        (
            Method::POST,
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"tunnel_key": "7"}),
            "tunnel_key",
        ),
        (
            Method::POST,
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"inbound_chain_id": true}),
            "inbound_chain_id",
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/ports", w.router),
            json!({"address": 167772417}),
            "address",
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/routes", w.router),
            json!({"dst": 10, "type": "blackhole"}),
            "dst",
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/routes", w.router),
            json!({"type": "blackhole"}),
            "dst",
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/routes", w.router),
            json!({"dst": "10.9.0.0/16", "type": "blackhole", "weight": 1.5}),
            "weight",
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/routes", w.router),
            json!({"dst": "10.9.0.0/16", "type": "sideways"}),
            "type",
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/routes", w.router),
            json!({"dst": "10.9.0.0/16", "next_hop_port": w.rport, "next_hop_gateway": "gw"}),
            "next_hop_gateway",
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "explode"}),
            "action",
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", w.chain),
            json!({}),
            "action",
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "accept", "position": "first"}),
            "position",
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "accept", "position": -1}),
            "position",
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "accept", "protocol": "tcp", "dst_ports": [1]}),
            "dst_ports",
        ),
        (
            Method::POST,
            "/v1/port_groups".into(),
            json!({"tenant_id": w.tenant, "name": "g", "port_ids": ["x"]}),
            "port_ids[0]",
        ),
        (
            Method::POST,
            "/v1/ip_address_groups".into(),
            json!({"tenant_id": w.tenant, "name": "g", "addresses": "10.0.0.0/8"}),
            "addresses",
        ),
        (
            Method::POST,
            "/v1/hosts".into(),
            json!({"name": "h", "tunnel_ip": "banana"}),
            "tunnel_ip",
        ),
        (
            Method::POST,
            "/v1/hosts".into(),
            json!({"name": "h"}),
            "tunnel_ip",
        ),
        (
            Method::POST,
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.80.0.0/24", "gateway": 1}),
            "gateway",
        ),
        (
            Method::PATCH,
            format!("/v1/routers/{}", w.router),
            json!({"admin_state_up": null}),
            "admin_state_up",
        ),
        (
            Method::PATCH,
            format!("/v1/routers/{}", w.router),
            json!({"name": {"first": "x"}}),
            "name",
        ),
        (
            Method::PATCH,
            format!("/v1/ports/{}", w.bport),
            json!({"allowed_addresses": [{"mac": "02:00:00:00:00:01"}]}),
            "allowed_addresses[0]",
        ),
        (
            Method::PUT,
            format!("/v1/ports/{}/binding", w.bport),
            json!({"host_id": w.host, "interface_name": 0}),
            "interface_name",
        ),
        (
            Method::POST,
            format!("/v1/tenants/{}/tokens", w.tenant),
            json!({"description": 7}),
            "description",
        ),
        (
            Method::POST,
            format!("/v1/ip_address_groups/{}/addresses", w.address_group),
            json!({}),
            "address",
        ),
    ];
    for (method, path, body, field) in cases {
        s.refuse_json(
            &format!("{method} {path} {body}"),
            method.clone(),
            &path,
            &body,
            &[400],
            Some(field),
        )
        .await;
    }
}

async fn invalid_macs(s: &TestServer) {
    let w = base(s).await;
    let ports = format!("/v1/bridges/{}/ports", w.bridge);
    for mac in [
        "zz:zz:zz:zz:zz:zz",
        "02:00:00:00:00",
        "02:00:00:00:00:00:00",
        "2:0:0:0:0:1",
        "",
        "0200.0000.0001",
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
    ] {
        s.refuse_json(
            &format!("mac {mac:?}"),
            Method::POST,
            &ports,
            &json!({ "mac": mac }),
            &[400],
            Some("mac"),
        )
        .await;
        s.refuse_json(
            &format!("PATCH mac {mac:?}"),
            Method::PATCH,
            &format!("/v1/ports/{}", w.bport),
            &json!({ "mac": mac }),
            &[400],
            Some("mac"),
        )
        .await;
    }
    s.refuse_json(
        "a bad allowed-address MAC",
        Method::POST,
        &ports,
        &json!({ "allowed_addresses": [{"mac": "nope", "ip": "10.0.0.1/32"}] }),
        &[400],
        Some("allowed_addresses[0].mac"),
    )
    .await;
    s.refuse_json(
        "a bad router-port MAC",
        Method::POST,
        &format!("/v1/routers/{}/ports", w.router),
        &json!({ "address": "10.0.5.1/24", "mac": "02:00:00:00:00:0g" }),
        &[400],
        Some("mac"),
    )
    .await;
}

async fn invalid_cidrs_and_addresses(s: &TestServer) {
    let w = base(s).await;
    let rports = format!("/v1/routers/{}/ports", w.router);
    let routes = format!("/v1/routers/{}/routes", w.router);
    let cases: Vec<(String, Value, &str)> = vec![
        // Not CIDRs at all.
        (rports.clone(), json!({"address": "10.0.2.1/33"}), "address"),
        (rports.clone(), json!({"address": "10.0.2.1"}), "address"),
        (rports.clone(), json!({"address": "banana"}), "address"),
        (rports.clone(), json!({"address": "10.0.2/24"}), "address"),
        (
            routes.clone(),
            json!({"dst": "10.0.0.0/33", "type": "blackhole"}),
            "dst",
        ),
        (
            routes.clone(),
            json!({"dst": "10.0.0.0/8", "src": "::/200", "type": "blackhole"}),
            "src",
        ),
        (
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.0.0.0/8/8"}),
            "cidr",
        ),
        (
            "/v1/ip_address_groups".into(),
            json!({"tenant_id": w.tenant, "name": "x", "addresses": ["300.0.0.0/8"]}),
            "addresses[0]",
        ),
        (
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"allowed_addresses": [{"mac": "02:00:00:00:00:01", "ip": "10.0.0.1/40"}]}),
            "allowed_addresses[0].ip",
        ),
        (
            format!("/v1/ip_address_groups/{}/addresses", w.address_group),
            json!({"address": "10.0.0.0/99"}),
            "address",
        ),
        // CIDRs that are wrong for what they are used for.
        (rports.clone(), json!({"address": "10.0.2.0/24"}), "address"),
        (rports.clone(), json!({"address": "fd00::/64"}), "address"),
        (
            routes.clone(),
            json!({"dst": "10.1.2.3/16", "type": "blackhole"}),
            "dst",
        ),
        (
            routes.clone(),
            json!({"dst": "10.0.0.0/8", "src": "192.168.1.1/24", "type": "blackhole"}),
            "src",
        ),
        (
            routes.clone(),
            json!({"dst": "10.0.0.0/8", "src": "fd00::/8", "type": "blackhole"}),
            "src",
        ),
        (
            routes.clone(),
            json!({"dst": "10.9.0.0/16", "next_hop_port": w.rport, "next_hop_gateway": "fd00::1"}),
            "next_hop_gateway",
        ),
        (
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.1.2.3/24"}),
            "cidr",
        ),
        (
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.1.2.0/31"}),
            "cidr",
        ),
        (
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.50.0.0/24", "gateway": "10.9.0.1"}),
            "gateway",
        ),
        (
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.50.0.0/24", "gateway": "10.50.0.0"}),
            "gateway",
        ),
        (
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.50.0.0/24", "gateway": "10.50.0.255"}),
            "gateway",
        ),
        (
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.50.0.0/24", "gateway": "fd00::1"}),
            "gateway",
        ),
        (
            "/v1/hosts".into(),
            json!({"name": "h", "tunnel_ip": "0.0.0.0"}),
            "tunnel_ip",
        ),
        (
            "/v1/hosts".into(),
            json!({"name": "h", "tunnel_ip": "224.0.0.1"}),
            "tunnel_ip",
        ),
        (
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"address": "10.0.7.1/24"}),
            "address",
        ),
    ];
    for (path, body, field) in cases {
        s.refuse_json(
            &format!("POST {path} {body}"),
            Method::POST,
            &path,
            &body,
            &[400],
            Some(field),
        )
        .await;
    }
    // The same through PATCH.
    s.refuse_json(
        "PATCH a router port to its network address",
        Method::PATCH,
        &format!("/v1/ports/{}", w.rport),
        &json!({"address": "10.0.1.0/24"}),
        &[400],
        Some("address"),
    )
    .await;
    s.refuse_json(
        "PATCH a router port address away",
        Method::PATCH,
        &format!("/v1/ports/{}", w.rport),
        &json!({"address": null}),
        &[400],
        Some("address"),
    )
    .await;
    // Other static rules.
    let long = "n".repeat(256);
    for (path, body, field) in [
        ("/v1/tenants".to_string(), json!({"name": ""}), "name"),
        ("/v1/tenants".to_string(), json!({"name": "   "}), "name"),
        ("/v1/tenants".to_string(), json!({"name": long}), "name"),
        ("/v1/tenants".to_string(), json!({"name": "a\nb"}), "name"),
        (
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "jump"}),
            "jump_chain_id",
        ),
        (
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "jump", "jump_chain_id": w.chain}),
            "jump_chain_id",
        ),
        (
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "accept", "jump_chain_id": w.chain}),
            "jump_chain_id",
        ),
        (
            routes.clone(),
            json!({"dst": "10.9.0.0/16"}),
            "next_hop_port",
        ),
        (
            routes.clone(),
            json!({"dst": "10.9.0.0/16", "type": "reject", "next_hop_port": w.rport}),
            "next_hop_port",
        ),
        (
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"tunnel_key": 16_777_216}),
            "tunnel_key",
        ),
    ] {
        s.refuse_json(
            &format!("POST {path} {body}"),
            Method::POST,
            &path,
            &body,
            &[400],
            Some(field),
        )
        .await;
    }
}

async fn missing_references(s: &TestServer) {
    let w = base(s).await;
    let missing = uuid();
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            format!("/v1/routers/{}/routes", w.router),
            json!({"dst": "10.9.0.0/16", "next_hop_port": missing}),
            "next_hop_port",
        ),
        (
            Method::POST,
            "/v1/routers".into(),
            json!({"tenant_id": w.tenant, "name": "x", "inbound_chain_id": missing}),
            "inbound_chain_id",
        ),
        (
            Method::POST,
            "/v1/routers".into(),
            json!({"tenant_id": missing, "name": "x"}),
            "tenant_id",
        ),
        (
            Method::POST,
            "/v1/bridges".into(),
            json!({"tenant_id": w.tenant, "name": "x", "outbound_chain_id": missing}),
            "outbound_chain_id",
        ),
        (
            Method::POST,
            "/v1/chains".into(),
            json!({"tenant_id": missing, "name": "x"}),
            "tenant_id",
        ),
        (
            Method::POST,
            format!("/v1/bridges/{}/ports", w.bridge),
            json!({"inbound_chain_id": missing}),
            "inbound_chain_id",
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", w.chain),
            json!({"action": "jump", "jump_chain_id": missing}),
            "jump_chain_id",
        ),
        (
            Method::POST,
            "/v1/port_groups".into(),
            json!({"tenant_id": w.tenant, "name": "g", "port_ids": [missing]}),
            "port_ids",
        ),
        (
            Method::POST,
            "/v1/ip_address_groups".into(),
            json!({"tenant_id": missing, "name": "g"}),
            "tenant_id",
        ),
        (
            Method::POST,
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.80.0.0/24", "bridge_id": missing}),
            "bridge_id",
        ),
        (
            Method::POST,
            "/v1/ip_pools".into(),
            json!({"name": "p", "cidr": "10.80.0.0/24", "tenant_id": missing}),
            "tenant_id",
        ),
        (
            Method::PATCH,
            format!("/v1/routers/{}", w.router),
            json!({"inbound_chain_id": missing}),
            "inbound_chain_id",
        ),
        (
            Method::PATCH,
            format!("/v1/ports/{}", w.bport),
            json!({"outbound_chain_id": missing}),
            "outbound_chain_id",
        ),
        (
            Method::PUT,
            format!("/v1/ports/{}/link", w.rport),
            json!({"peer_id": missing}),
            "peer_id",
        ),
        (
            Method::PUT,
            format!("/v1/ports/{}/binding", w.bport),
            json!({"host_id": missing, "interface_name": "tap0"}),
            "host_id",
        ),
    ];
    for (method, path, body, field) in cases {
        s.refuse_json(
            &format!("{method} {path} {body}"),
            method.clone(),
            &path,
            &body,
            &[404, 422],
            Some(field),
        )
        .await;
    }
    // Missing objects in the path: 404.
    for (method, path) in [
        (Method::POST, format!("/v1/bridges/{missing}/ports")),
        (Method::POST, format!("/v1/routers/{missing}/ports")),
        (Method::POST, format!("/v1/routers/{missing}/routes")),
        (Method::POST, format!("/v1/chains/{missing}/rules")),
        (Method::POST, format!("/v1/tenants/{missing}/tokens")),
        (Method::PATCH, format!("/v1/routers/{missing}")),
        (Method::PATCH, format!("/v1/ports/{missing}")),
        (
            Method::POST,
            format!("/v1/ip_address_groups/{missing}/addresses"),
        ),
    ] {
        s.refuse(
            &format!("{method} {path}"),
            s.json(method.clone(), &path, &json!({"address": "10.0.0.0/8"})),
            &[404],
            None,
        )
        .await;
    }
}

async fn conflicts(s: &TestServer) {
    let w = base(s).await;
    let other = tenant(s, "other").await;
    // The same router name in another tenant, and the same subnet on
    // another router, are fine.
    router(s, &other, "edge").await;
    let r3 = router(s, &w.tenant, "r3").await;
    let r3_port = router_port(s, &r3, "10.0.1.1/24").await;
    let other_chain = chain(s, &other, "theirs").await;
    let bport = get_ok(s, &format!("/v1/ports/{}", w.bport)).await;
    let mac = bport["mac"].as_str().unwrap().to_string();

    // Duplicate MAC on one bridge (but fine on another).
    s.refuse_json(
        "a duplicate MAC on one bridge",
        Method::POST,
        &format!("/v1/bridges/{}/ports", w.bridge),
        &json!({"mac": mac}),
        &[409, 422],
        Some("mac"),
    )
    .await;
    let elsewhere_bridge = bridge(s, &w.tenant, "db").await;
    create(
        s,
        &format!("/v1/bridges/{elsewhere_bridge}/ports"),
        "ports",
        json!({"mac": mac}),
    )
    .await;
    let second = bridge_port(s, &w.bridge).await;
    s.refuse_json(
        "PATCHing a duplicate MAC",
        Method::PATCH,
        &format!("/v1/ports/{second}"),
        &json!({"mac": mac}),
        &[409, 422],
        Some("mac"),
    )
    .await;

    // Duplicate names: router within a tenant, tenant globally.
    s.refuse_json(
        "a duplicate router name",
        Method::POST,
        "/v1/routers",
        &json!({"tenant_id": w.tenant, "name": "edge"}),
        &[409, 422],
        Some("name"),
    )
    .await;
    s.refuse_json(
        "renaming a router to a taken name",
        Method::PATCH,
        &format!("/v1/routers/{r3}"),
        &json!({"name": "edge"}),
        &[409, 422],
        Some("name"),
    )
    .await;
    s.refuse_json(
        "a duplicate tenant name",
        Method::POST,
        "/v1/tenants",
        &json!({"name": "acme"}),
        &[409, 422],
        Some("name"),
    )
    .await;
    s.refuse_json(
        "a duplicate host name",
        Method::POST,
        "/v1/hosts",
        &json!({"name": "node-1", "tunnel_ip": "192.0.2.2"}),
        &[409, 422],
        Some("name"),
    )
    .await;
    s.refuse_json(
        "an id that is taken",
        Method::POST,
        "/v1/tenants",
        &json!({"id": w.tenant, "name": "fresh"}),
        &[409],
        Some("id"),
    )
    .await;

    // Overlapping router-port subnets on one router.
    for address in ["10.0.1.129/25", "10.0.0.1/16", "10.0.1.2/24"] {
        s.refuse_json(
            &format!("an overlapping subnet {address}"),
            Method::POST,
            &format!("/v1/routers/{}/ports", w.router),
            &json!({"address": address}),
            &[409, 422],
            Some("address"),
        )
        .await;
    }
    let sibling = router_port(s, &w.router, "10.0.2.1/24").await;
    s.refuse_json(
        "PATCHing into an overlapping subnet",
        Method::PATCH,
        &format!("/v1/ports/{sibling}"),
        &json!({"address": "10.0.1.5/24"}),
        &[409, 422],
        Some("address"),
    )
    .await;

    // A route via a port of another router.
    s.refuse_json(
        "a route via another router's port",
        Method::POST,
        &format!("/v1/routers/{}/routes", w.router),
        &json!({"dst": "10.9.0.0/16", "next_hop_port": r3_port}),
        &[409, 422],
        Some("next_hop_port"),
    )
    .await;
    s.refuse_json(
        "a route via a bridge port",
        Method::POST,
        &format!("/v1/routers/{}/routes", w.router),
        &json!({"dst": "10.9.0.0/16", "next_hop_port": w.bport}),
        &[409, 422],
        Some("next_hop_port"),
    )
    .await;
    s.refuse_json(
        "a gateway outside the port's subnet",
        Method::POST,
        &format!("/v1/routers/{}/routes", w.router),
        &json!({"dst": "10.9.0.0/16", "next_hop_port": w.rport, "next_hop_gateway": "10.7.0.1"}),
        &[409, 422],
        Some("next_hop_gateway"),
    )
    .await;

    // Linking an already-linked port.
    link(s, &w.rport, &w.bport).await;
    s.refuse_json(
        "linking an already-linked port",
        Method::PUT,
        &format!("/v1/ports/{sibling}/link"),
        &json!({"peer_id": w.bport}),
        &[409, 422],
        Some("peer_id"),
    )
    .await;

    // Chains never cross tenants.
    s.refuse_json(
        "another tenant's chain on a router",
        Method::PATCH,
        &format!("/v1/routers/{}", w.router),
        &json!({"inbound_chain_id": other_chain}),
        &[404, 409, 422],
        Some("inbound_chain_id"),
    )
    .await;
    s.refuse_json(
        "a jump to another tenant's chain",
        Method::POST,
        &format!("/v1/chains/{}/rules", w.chain),
        &json!({"action": "jump", "jump_chain_id": other_chain}),
        &[404, 409, 422],
        Some("jump_chain_id"),
    )
    .await;
    // Port groups and pools never cross tenants either.
    let their_bridge = bridge(s, &other, "theirs").await;
    let their_port = bridge_port(s, &their_bridge).await;
    let group = id_of(
        &create(
            s,
            "/v1/port_groups",
            "port_groups",
            json!({"tenant_id": w.tenant, "name": "g"}),
        )
        .await,
    );
    s.refuse(
        "another tenant's port in a group",
        s.req(
            Method::PUT,
            &format!("/v1/port_groups/{group}/ports/{their_port}"),
        ),
        &[404, 409, 422],
        None,
    )
    .await;
    s.refuse_json(
        "another tenant's port in a group (PATCH)",
        Method::PATCH,
        &format!("/v1/port_groups/{group}"),
        &json!({"port_ids": [their_port]}),
        &[404, 409, 422],
        Some("port_ids"),
    )
    .await;
    s.refuse_json(
        "a tenant pool on another tenant's bridge",
        Method::POST,
        "/v1/ip_pools",
        &json!({"name": "p", "cidr": "10.90.0.0/24", "tenant_id": w.tenant, "bridge_id": their_bridge}),
        &[404, 409, 422],
        Some("bridge_id"),
    )
    .await;
    // A tunnel key that is taken.
    let key = bport["tunnel_key"].clone();
    s.refuse_json(
        "a taken tunnel key",
        Method::POST,
        &format!("/v1/bridges/{elsewhere_bridge}/ports"),
        &json!({"tunnel_key": key}),
        &[409],
        Some("tunnel_key"),
    )
    .await;
}

/// A route's gateway must lie in its next-hop port's subnet; re-addressing
/// the port must not silently break that for routes already using it.
async fn readdressing_a_port_keeps_its_routes_valid(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let r = router(s, &t, "edge").await;
    let p = router_port(s, &r, "10.0.1.1/24").await;
    create(
        s,
        &format!("/v1/routers/{r}/routes"),
        "routes",
        json!({"dst": "0.0.0.0/0", "next_hop_port": p, "next_hop_gateway": "10.0.1.254"}),
    )
    .await;
    s.refuse_json(
        "moving a port's subnet away from its routes' gateway",
        Method::PATCH,
        &format!("/v1/ports/{p}"),
        &json!({"address": "10.0.5.1/24"}),
        &[409, 422],
        Some("address"),
    )
    .await;
}

/// A tenant token that references another tenant's object gets the very
/// answer it gets for an object that does not exist: "another tenant's
/// object answers 404 (its existence does not leak)".
async fn references_do_not_leak_other_tenants(s: &TestServer) {
    let a = world(s, "a").await;
    let b = world(s, "b").await;
    let token_b = token(s, &b.tenant).await;
    // (method, path, body with {target} standing for the referenced id)
    let cases: Vec<(Method, String, Value, String)> = vec![
        (
            Method::POST,
            "/v1/routers".into(),
            json!({"id": uuid(), "name": "r", "inbound_chain_id": "{target}"}),
            a.chain.clone(),
        ),
        (
            Method::PATCH,
            format!("/v1/bridges/{}", b.bridge),
            json!({"outbound_chain_id": "{target}"}),
            a.chain.clone(),
        ),
        (
            Method::POST,
            format!("/v1/chains/{}/rules", b.chain),
            json!({"id": uuid(), "action": "jump", "jump_chain_id": "{target}"}),
            a.chain.clone(),
        ),
        (
            Method::POST,
            format!("/v1/routers/{}/routes", b.router),
            json!({"id": uuid(), "dst": "10.9.0.0/16", "next_hop_port": "{target}"}),
            a.rport.clone(),
        ),
        (
            Method::PATCH,
            format!("/v1/port_groups/{}", b.port_group),
            json!({"port_ids": ["{target}"]}),
            a.bport.clone(),
        ),
        (
            Method::PUT,
            format!("/v1/ports/{}/link", b.rport),
            json!({"peer_id": "{target}"}),
            a.bport.clone(),
        ),
    ];
    let mut leaks = Vec::new();
    for (method, path, body, existing) in cases {
        let missing = uuid();
        let mut answers = Vec::new();
        for target in [&existing, &missing] {
            let body: Value =
                serde_json::from_str(&body.to_string().replace("{target}", target)).unwrap();
            let problem = s
                .refuse(
                    &format!("B: {method} {path} {body}"),
                    s.json_as(&token_b, method.clone(), &path, &body),
                    &[400, 403, 404, 409, 422],
                    None,
                )
                .await;
            let mut value = serde_json::to_value(&problem).unwrap();
            value["detail"] = json!(problem.detail.replace(target.as_str(), "<target>"));
            answers.push(value);
        }
        if answers[0] != answers[1] {
            leaks.push(format!(
                "{method} {path}: another tenant's object answers {}, a missing one {}",
                answers[0], answers[1]
            ));
        }
    }
    assert!(leaks.is_empty(), "existence leaks:\n{}", leaks.join("\n"));
}

/// RFC 9110 §11.1: the authentication scheme is case-insensitive.
async fn bearer_scheme_is_case_insensitive(s: &TestServer) {
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let answer = send(
            s.anonymous(Method::GET, "/v1/tenants")
                .header(AUTHORIZATION, format!("{scheme} {ADMIN_TOKEN}")),
        )
        .await;
        assert_eq!(answer.status, 200, "scheme '{scheme}': {}", text(&answer));
    }
}

async fn still_referenced(s: &TestServer) {
    let w = base(s).await;
    let route = id_of(
        &create(
            s,
            &format!("/v1/routers/{}/routes", w.router),
            "routes",
            json!({"dst": "10.9.0.0/16", "next_hop_port": w.rport}),
        )
        .await,
    );
    let rule = id_of(
        &create(
            s,
            &format!("/v1/chains/{}/rules", w.chain),
            "rules",
            json!({"action": "accept"}),
        )
        .await,
    );
    patch_ok(
        s,
        &format!("/v1/bridges/{}", w.bridge),
        json!({"inbound_chain_id": w.chain}),
    )
    .await;
    let group = id_of(
        &create(
            s,
            "/v1/port_groups",
            "port_groups",
            json!({"tenant_id": w.tenant, "name": "g", "port_ids": [w.bport]}),
        )
        .await,
    );
    let bport2 = bridge_port(s, &w.bridge).await;
    s.admin
        .bind(bport2.parse().unwrap(), w.host.parse().unwrap(), "tap0")
        .await
        .unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("/v1/routers/{}", w.router),
            vec![w.rport.as_str(), route.as_str()],
        ),
        (
            format!("/v1/bridges/{}", w.bridge),
            vec![w.bport.as_str(), bport2.as_str()],
        ),
        (format!("/v1/ports/{}", w.rport), vec![route.as_str()]),
        (format!("/v1/ports/{}", w.bport), vec![group.as_str()]),
        (
            format!("/v1/chains/{}", w.chain),
            vec![rule.as_str(), w.bridge.as_str()],
        ),
        (
            format!("/v1/tenants/{}", w.tenant),
            vec![
                w.router.as_str(),
                w.bridge.as_str(),
                w.chain.as_str(),
                group.as_str(),
                w.address_group.as_str(),
            ],
        ),
        (format!("/v1/hosts/{}", w.host), vec![bport2.as_str()]),
    ];
    for (path, referrers) in cases {
        let problem = s
            .refuse(
                &format!("DELETE {path}"),
                s.req(Method::DELETE, &path),
                &[409],
                None,
            )
            .await;
        for referrer in referrers {
            assert!(
                problem.referrers.iter().any(|r| r.contains(referrer)),
                "DELETE {path}: referrers should name {referrer}: {problem:?}"
            );
        }
    }
    // Deleted in order, everything goes.
    delete_ok(s, &format!("/v1/routes/{route}")).await;
    delete_ok(s, &format!("/v1/ports/{}", w.rport)).await;
    delete_ok(s, &format!("/v1/routers/{}", w.router)).await;
    delete_ok(s, &format!("/v1/port_groups/{group}")).await;
    delete_ok(s, &format!("/v1/ports/{}", w.bport)).await;
}

async fn oversize_body(s: &TestServer) {
    let w = base(s).await;
    let big_name = "x".repeat(300 * 1024);
    for (method, path) in [
        (Method::POST, "/v1/tenants".to_string()),
        (Method::PATCH, format!("/v1/routers/{}", w.router)),
        (Method::POST, format!("/v1/bridges/{}/ports", w.bridge)),
    ] {
        let problem = s
            .refuse(
                &format!("an oversize {method} {path}"),
                s.json(method.clone(), &path, &json!({ "name": big_name })),
                &[413],
                None,
            )
            .await;
        assert_eq!(problem.status, 413);
        s.assert_healthy().await;
    }
    // A body just under the limit is read (and refused for what it says).
    let near = "y".repeat(250 * 1024);
    s.refuse_json(
        "a large but acceptable body",
        Method::POST,
        "/v1/tenants",
        &json!({ "name": near }),
        &[400],
        Some("name"),
    )
    .await;
    // The server still serves writes.
    tenant(s, "after-the-flood").await;
}

async fn wrong_content_type(s: &TestServer) {
    let w = base(s).await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        Some("application/jsonx"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/tenants".to_string(),
                r#"{"name":"t"}"#.to_string(),
            ),
            (
                Method::PATCH,
                format!("/v1/routers/{}", w.router),
                r#"{"name":"t"}"#.to_string(),
            ),
            (
                Method::PUT,
                format!("/v1/ports/{}/link", w.rport),
                format!(r#"{{"peer_id":"{}"}}"#, w.bport),
            ),
        ] {
            let mut request = s.req(method.clone(), &path).body(body);
            if let Some(content_type) = content_type {
                request = request.header(CONTENT_TYPE, content_type);
            }
            s.refuse(
                &format!("{method} {path} as {content_type:?}"),
                request,
                &[415],
                None,
            )
            .await;
        }
    }
    // JSON with parameters, in any case, and +json types, are JSON.
    for (i, content_type) in ["application/json; charset=utf-8", "Application/JSON"]
        .iter()
        .enumerate()
    {
        let answer = send(
            s.req(Method::POST, "/v1/tenants")
                .header(CONTENT_TYPE, *content_type)
                .body(format!(r#"{{"name":"charset-{i}"}}"#)),
        )
        .await;
        assert_eq!(answer.status, 201, "{content_type}: {}", text(&answer));
    }
    let answer = send(
        s.req(Method::PATCH, &format!("/v1/routers/{}", w.router))
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(r#"{"name":"merged"}"#),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
}

async fn if_match(s: &TestServer) {
    let w = base(s).await;
    let r = router(s, &w.tenant, "cas").await;
    let path = format!("/v1/routers/{r}");
    let current = get_ok(s, &path).await;
    let rev = revision_of(&current);
    let etag = format!("\"{rev}\"");

    // Stale: 412, nothing written.
    for stale in [
        format!("\"{}\"", rev - 1),
        format!("\"{}\"", rev + 1000),
        "\"0\"".into(),
    ] {
        s.refuse(
            &format!("PATCH with If-Match {stale}"),
            s.json(Method::PATCH, &path, &json!({"name": "x"}))
                .header(IF_MATCH, stale.clone()),
            &[412],
            None,
        )
        .await;
        s.refuse(
            &format!("DELETE with If-Match {stale}"),
            s.req(Method::DELETE, &path).header(IF_MATCH, stale.clone()),
            &[412],
            None,
        )
        .await;
    }
    // Malformed: 400 naming the header.
    for bad in ["\"abc\"", "yesterday", "\"1.5\""] {
        s.refuse(
            &format!("If-Match {bad}"),
            s.json(Method::PATCH, &path, &json!({"name": "x"}))
                .header(IF_MATCH, bad),
            &[400],
            Some("If-Match"),
        )
        .await;
    }
    // Matching: applied, with the new ETag; the old one is now stale.
    let answer = send(
        s.json(Method::PATCH, &path, &json!({"name": "edge-1"}))
            .header(IF_MATCH, etag.clone()),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let patched = answer.json();
    let new_etag = answer.etag().to_string();
    assert_eq!(new_etag, format!("\"{}\"", revision_of(&patched)));
    s.refuse(
        "PATCH with the previous ETag",
        s.json(Method::PATCH, &path, &json!({"name": "edge-2"}))
            .header(IF_MATCH, etag.clone()),
        &[412],
        None,
    )
    .await;
    // The typed client's If-Match.
    let typed: Router = s
        .admin
        .patch(
            &path,
            &json!({"name": "edge-2"}),
            Some(revision_of(&patched)),
        )
        .await
        .unwrap();
    assert_eq!(typed.name, "edge-2");
    refused(
        s.admin
            .patch::<Router>(
                &path,
                &json!({"name": "edge-3"}),
                Some(revision_of(&patched)),
            )
            .await,
        &[412],
        None,
    );
    // A weak validator carries the same revision.
    let answer = send(
        s.json(Method::PATCH, &path, &json!({"name": "edge-4"}))
            .header(IF_MATCH, format!("W/\"{}\"", typed.revision)),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let latest = answer.json();
    // Other resources and DELETE honour it too.
    let tpath = format!("/v1/tenants/{}", w.tenant);
    let t = get_ok(s, &tpath).await;
    s.refuse(
        "PATCH a tenant at a stale revision",
        s.json(Method::PATCH, &tpath, &json!({"name": "x"}))
            .header(IF_MATCH, format!("\"{}\"", revision_of(&t) - 1)),
        &[412],
        None,
    )
    .await;
    let answer = send(
        s.req(Method::DELETE, &path)
            .header(IF_MATCH, format!("\"{}\"", revision_of(&latest))),
    )
    .await;
    assert_eq!(answer.status, 204, "{}", text(&answer));
    s.refuse(
        "DELETE a tenant at a stale revision",
        s.req(Method::DELETE, &tpath)
            .header(IF_MATCH, format!("\"{}\"", revision_of(&t) - 1)),
        &[412],
        None,
    )
    .await;
}

async fn unknown_path_and_wrong_method(s: &TestServer) {
    let id = uuid();
    for path in [
        "/".to_string(),
        "/v2/routers".into(),
        "/v1".into(),
        "/v1/".into(),
        "/v1/routerz".into(),
        "/v1/routers/".into(),
        format!("/v1/routers/{id}/nonsense"),
        format!("/v1/ports/{id}/link/extra"),
        "/healthz/deep".into(),
    ] {
        for token in [Some(ADMIN_TOKEN), None] {
            let request = match token {
                Some(token) => s.as_token(token, Method::GET, &path),
                None => s.anonymous(Method::GET, &path),
            };
            let problem = s
                .refuse(&format!("GET {path}"), request, &[404], None)
                .await;
            assert_eq!(problem.problem_type, "/problems/no-such-route", "{path}");
        }
    }
    for (method, path) in [
        (Method::PUT, "/v1/routers".to_string()),
        (Method::DELETE, "/v1/routers".into()),
        (Method::PATCH, "/v1/tenants".into()),
        (Method::POST, format!("/v1/routers/{id}")),
        (Method::PUT, format!("/v1/routers/{id}")),
        (Method::POST, format!("/v1/ports/{id}")),
        (Method::GET, format!("/v1/ports/{id}/link")),
        (Method::POST, format!("/v1/ports/{id}/link")),
        (Method::GET, format!("/v1/tenants/{id}/tokens")),
        (Method::POST, "/v1/ports".into()),
        (Method::POST, "/healthz".into()),
        (Method::DELETE, "/openapi.json".into()),
    ] {
        let answer = send(s.req(method.clone(), &path)).await;
        let problem = answer.problem(405, None);
        assert_eq!(
            problem.problem_type, "/problems/method-not-allowed",
            "{method} {path}"
        );
    }
}

/// RFC 9110 §15.5.6: a 405 answer MUST list the allowed methods.
async fn method_not_allowed_lists_allow(s: &TestServer) {
    let answer = send(s.req(Method::PUT, "/v1/routers")).await;
    answer.problem(405, None);
    let allow = answer
        .headers
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let methods: BTreeSet<&str> = allow.split(',').map(str::trim).collect();
    assert!(
        methods.contains("GET") && methods.contains("POST"),
        "a 405 must send 'Allow: GET, POST' for /v1/routers, got {:?}",
        answer.headers
    );
}

/// Path parameters that are not UTF-8 once decoded: still a problem+json.
async fn undecodable_path_parameters(s: &TestServer) {
    for path in [
        "/v1/routers/%FF",
        "/v1/ports/%C3%28/link",
        "/v1/port_groups/%80/ports/%80",
        "/v1/ip_address_groups/%FE/addresses/10.0.0.0%2F8",
    ] {
        let method = if path.starts_with("/v1/routers/") {
            Method::GET
        } else {
            Method::DELETE
        };
        s.refuse(
            &format!("{method} {path}"),
            s.req(method.clone(), path),
            &[400, 404],
            None,
        )
        .await;
    }
}

/// Rule positions at the top of `u32`: an insert that would push a rule
/// past the end, or an append after the last position, is refused (4xx),
/// not a 500.
async fn rule_positions_at_the_top(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let c = chain(s, &t, "in").await;
    let rules = format!("/v1/chains/{c}/rules");
    let top = create(
        s,
        &rules,
        "rules",
        json!({"action": "accept", "position": u32::MAX}),
    )
    .await;
    assert_eq!(top["position"], u32::MAX);
    for (what, body) in [
        ("append after the last position", json!({"action": "drop"})),
        (
            "insert that shifts a rule past the last position",
            json!({"action": "drop", "position": u32::MAX}),
        ),
    ] {
        let before = s.dump().await;
        let answer = send(s.json(Method::POST, &rules, &body)).await;
        assert!(
            (400..500).contains(&answer.status),
            "{what}: expected a 4xx problem, got {}: {}",
            answer.status,
            text(&answer)
        );
        answer.problem_in(&[400, 409, 422], None);
        s.assert_unchanged(&before, what).await;
    }
    s.assert_healthy().await;
}

async fn garbage(s: &TestServer) {
    let w = base(s).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut failures: Vec<String> = Vec::new();
    let mut check = |what: String, answer: &Answer| {
        if answer.status >= 500 {
            failures.push(format!("{what}: {} {}", answer.status, text(answer)));
        } else if answer.status >= 400
            && !answer
                .content_type()
                .starts_with("application/problem+json")
        {
            failures.push(format!(
                "{what}: {} answered as '{}': {}",
                answer.status,
                answer.content_type(),
                text(answer)
            ));
        }
    };
    let writes: Vec<(Method, String)> = vec![
        (Method::POST, "/v1/tenants".into()),
        (Method::POST, "/v1/routers".into()),
        (Method::POST, "/v1/bridges".into()),
        (Method::POST, format!("/v1/bridges/{}/ports", w.bridge)),
        (Method::POST, format!("/v1/routers/{}/ports", w.router)),
        (Method::POST, format!("/v1/routers/{}/routes", w.router)),
        (Method::POST, "/v1/chains".into()),
        (Method::POST, format!("/v1/chains/{}/rules", w.chain)),
        (Method::POST, "/v1/port_groups".into()),
        (Method::POST, "/v1/ip_address_groups".into()),
        (
            Method::POST,
            format!("/v1/ip_address_groups/{}/addresses", w.address_group),
        ),
        (Method::POST, "/v1/hosts".into()),
        (Method::POST, "/v1/ip_pools".into()),
        (Method::POST, format!("/v1/tenants/{}/tokens", w.tenant)),
        (Method::PATCH, format!("/v1/routers/{}", w.router)),
        (Method::PATCH, format!("/v1/ports/{}", w.bport)),
        (Method::PATCH, format!("/v1/tenants/{}", w.tenant)),
        (Method::PUT, format!("/v1/ports/{}/link", w.rport)),
        (Method::PUT, format!("/v1/ports/{}/binding", w.bport)),
    ];

    // Random bytes.
    for (method, path) in &writes {
        for round in 0..4 {
            let len = rng.random_range(0..512);
            let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let answer = send(raw_json(s, method.clone(), path, body)).await;
            check(format!("{method} {path} random bytes #{round}"), &answer);
        }
    }
    // Hostile JSON.
    let nested_arrays = "[".repeat(10_000);
    let nested_objects = "{\"a\":".repeat(10_000);
    let deep_ok = format!(
        "{{\"action\":\"accept\",\"description\":{}1{}}}",
        "[".repeat(120),
        "]".repeat(120)
    );
    let hostile: Vec<String> = vec![
        nested_arrays.clone(),
        nested_objects.clone(),
        format!("{{\"name\":{nested_arrays}"),
        deep_ok,
        r#"{"name":"x","tunnel_key":1e400}"#.into(),
        r#"{"name":"x","weight":18446744073709551616}"#.into(),
        r#"{"name":"x","position":-9223372036854775809}"#.into(),
        r#"{"position":4294967296,"action":"accept"}"#.into(),
        r#"{"position":99999999999999999999999999999,"action":"accept"}"#.into(),
        r#"{"tunnel_key":4294967295}"#.into(),
        r#"{"tunnel_key":16777215}"#.into(),
        r#"{"weight":4294967295,"dst":"0.0.0.0/0","type":"blackhole"}"#.into(),
        r#"{"dst":"255.255.255.255/32","type":"reject"}"#.into(),
        r#"{"name":"\u0000"}"#.into(),
        r#"{"name":"\ud800"}"#.into(),
        r#"{"name":"名前🚀","tenant_id":null}"#.into(),
        format!("{{\"name\":\"{}\"}}", "é".repeat(200)),
        r#"{"name":"a/b%2F..\\c"}"#.into(),
        r#"{"":""}"#.into(),
        r#"{"__proto__":{"admin":true}}"#.into(),
        r#"{"address":"10.0.0.1/24","address":"10.0.0.2/24"}"#.into(),
        r#"{"peer_id":"00000000-0000-0000-0000-000000000000"}"#.into(),
        r#"{"host_id":"00000000-0000-0000-0000-000000000000","interface_name":"../../x"}"#.into(),
        r#"{"cidr":"::/0","name":"everything"}"#.into(),
        r#"{"cidr":"0.0.0.0/0","name":"everything-v4"}"#.into(),
        r#"{"address":"::/0"}"#.into(),
        r#"{"address":"255.255.255.255/32"}"#.into(),
        r#"{"address":"10.0.0.1/31"}"#.into(),
        r#"{"tunnel_ip":"::","name":"h0"}"#.into(),
        r#"{"name":"x","tenant_id":"00000000-0000-0000-0000-000000000000"}"#.into(),
        format!("{{\"name\":\"{}\"}}", "z".repeat(100_000)),
        "\u{feff}{\"name\":\"bom\"}".into(),
        "{\"name\":\"x\"}\u{0}".into(),
    ];
    for (method, path) in &writes {
        for (i, body) in hostile.iter().enumerate() {
            let answer = send(raw_json(s, method.clone(), path, body.clone())).await;
            check(format!("{method} {path} hostile #{i}"), &answer);
        }
    }
    // Unicode names are fine.
    for (i, name) in [
        "路由器",
        "🚀 launch",
        "שלום",
        "zero\u{200b}width",
        "Ωmega-∑",
    ]
    .iter()
    .enumerate()
    {
        let answer = send(s.json(
            Method::POST,
            "/v1/routers",
            &json!({"tenant_id": w.tenant, "name": name}),
        ))
        .await;
        assert_eq!(answer.status, 201, "unicode name #{i}: {}", text(&answer));
        assert_eq!(answer.json()["name"], *name);
    }
    // Garbage in paths and queries.
    let ids = [
        "abc",
        "%00",
        "..%2F..%2Fetc%2Fpasswd",
        "00000000-0000-0000-0000-00000000000g",
        "{id}",
        "%7Bid%7D",
        "%F0%9F%9A%80",
        "%20",
        "-1",
        "99999999999999999999999999999999999999",
    ];
    let long_id = "a".repeat(10_000);
    let templates = [
        "/v1/routers/{}",
        "/v1/bridges/{}/ports",
        "/v1/routers/{}/ports",
        "/v1/routers/{}/routes",
        "/v1/ports/{}",
        "/v1/ports/{}/link",
        "/v1/ports/{}/binding",
        "/v1/chains/{}/rules",
        "/v1/rules/{}",
        "/v1/routes/{}",
        "/v1/tenants/{}",
        "/v1/tenants/{}/tokens",
        "/v1/port_groups/{}/ports/{}",
        "/v1/ip_address_groups/{}/addresses/{}",
        "/v1/ip_pools/{}/leases",
        "/v1/hosts/{}",
    ];
    for template in templates {
        for id in ids.iter().copied().chain([long_id.as_str()]) {
            let path = template.replace("{}", id);
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ] {
                let answer = send(raw_json(s, method.clone(), &path, "{}")).await;
                check(format!("{method} {path}"), &answer);
            }
        }
    }
    for query in [
        "limit=-1",
        "limit=1e3",
        "limit=99999999999999999999999",
        "after=%FF",
        "after=",
        "tenant_id=%F0%9F%9A%80",
        "limit=1&limit=2",
        "&&&",
        "=",
        "%",
        "tenant_id",
    ] {
        for path in ["/v1/routers", "/v1/ports", "/v1/tenants", "/v1/hosts"] {
            let answer = send(s.req(Method::GET, &format!("{path}?{query}"))).await;
            check(format!("GET {path}?{query}"), &answer);
        }
    }
    // Odd headers.
    for (name, value) in [
        (IF_MATCH, "99999999999999999999999999"),
        (IF_MATCH, "\"-1\""),
        (IF_MATCH, "*"),
        (IF_MATCH, ""),
        (AUTHORIZATION, "Bearer \u{e9}t\u{e9}"),
        (IF_MATCH, "\"\u{e9}\""),
    ] {
        let value = HeaderValue::from_bytes(&value.chars().map(|c| c as u8).collect::<Vec<u8>>())
            .expect("an obs-text header value");
        let answer = send(
            s.json(
                Method::PATCH,
                &format!("/v1/routers/{}", w.router),
                &json!({}),
            )
            .header(name.clone(), value.clone()),
        )
        .await;
        check(format!("PATCH with {name}: {value:?}"), &answer);
    }
    assert!(
        failures.is_empty(),
        "{} garbage requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
    s.assert_healthy().await;
    // And the server still does real work.
    tenant(s, "still-alive").await;
}

// ---------------------------------------------------------------------------
// 5. OpenAPI, health, metrics
// ---------------------------------------------------------------------------

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{address}" => "10.0.0.0%2F24".to_string(),
            s if s.starts_with('{') && s.ends_with('}') => uuid(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn openapi_matches_what_is_served(s: &TestServer) {
    let answer = send(s.anonymous(Method::GET, "/openapi.json")).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert!(answer.content_type().starts_with("application/json"));
    let doc = answer.json();
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = api::api_routes()
        .routes()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_string(), path.to_string()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
    for (method, path) in &documented {
        let operation = &paths[path][method.to_ascii_lowercase()];
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} documents its responses"
        );
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .map(|params| {
                params
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_path, "{method} {path}: path parameters");
    }
    // Every schema reference resolves.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => refs(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the components: {target}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling schema reference {target}"
        );
    }

    // Every documented (method, path) is served: the answer is never the
    // router's own 404 or 405.
    let mut failures = Vec::new();
    for (method, path) in &documented {
        let method: Method = method.parse().unwrap();
        let url = concrete(path);
        let request = match method {
            Method::POST | Method::PUT | Method::PATCH => raw_json(s, method.clone(), &url, "{}"),
            _ => s.req(method.clone(), &url),
        };
        let answer = send(request).await;
        if answer.status >= 500 {
            failures.push(format!(
                "{method} {url}: {} {}",
                answer.status,
                text(&answer)
            ));
            continue;
        }
        if answer
            .content_type()
            .starts_with("application/problem+json")
        {
            let problem = answer.json();
            let kind = problem["type"].as_str().unwrap_or("");
            if kind == "/problems/no-such-route" || kind == "/problems/method-not-allowed" {
                failures.push(format!("{method} {url} ({path}) is not served: {problem}"));
            }
        } else if answer.status == 404 || answer.status == 405 {
            failures.push(format!("{method} {url}: bare {}", answer.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // And the methods a documented path does not list are not served.
    for (path, item) in paths {
        let listed: HashSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if listed.contains(method.as_str()) {
                continue;
            }
            let answer = send(raw_json(s, method.clone(), &concrete(path), "{}")).await;
            let problem = answer.problem(405, None);
            assert_eq!(
                problem.problem_type, "/problems/method-not-allowed",
                "{method} {path} is not documented, so it must not be served"
            );
        }
    }
}

async fn health_and_metrics(s: &TestServer) {
    let answer = send(s.anonymous(Method::GET, "/healthz")).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let health = answer.json();
    assert_eq!(health["status"], "ok");
    assert!(health["nsdb_revision"].as_i64().is_some());

    // Some traffic for the counters: a 401, a 404, a 201.
    send(s.anonymous(Method::GET, "/v1/tenants")).await;
    send(s.req(Method::GET, &format!("/v1/tenants/{}", uuid()))).await;
    tenant(s, "counted").await;

    let answer = send(s.anonymous(Method::GET, "/metrics")).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert!(
        answer.content_type().starts_with("text/plain"),
        "Prometheus text format, got {}",
        answer.content_type()
    );
    let metrics = text(&answer);
    assert!(
        metrics.contains("# TYPE plexus_api_requests_total counter"),
        "{metrics}"
    );
    let counters: BTreeMap<(String, String), f64> = metrics
        .lines()
        .filter(|l| l.starts_with("plexus_api_requests_total{"))
        .map(|line| {
            let (labels, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample without a value: {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            let label = |name: &str| {
                labels
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_else(|| panic!("no {name} label: {line}"))
                    .to_string()
            };
            ((label("method"), label("code")), value)
        })
        .collect();
    for (method, code) in [
        ("GET", "401"),
        ("GET", "404"),
        ("POST", "201"),
        ("GET", "200"),
    ] {
        assert!(
            counters
                .get(&(method.to_string(), code.to_string()))
                .is_some_and(|v| *v >= 1.0),
            "no count for {method} {code}: {metrics}"
        );
    }
    let answer = send(s.anonymous(Method::GET, "/openapi.json")).await;
    assert_eq!(answer.status, 200);
    // Public endpoints ignore a bad token rather than refusing.
    let answer = send(s.as_token("wrong", Method::GET, "/healthz")).await;
    assert_eq!(answer.status, 200);
}

// ---------------------------------------------------------------------------
// Every listing pages; concurrent writers
// ---------------------------------------------------------------------------

async fn every_listing_paginates(s: &TestServer) {
    let t = tenant(s, "acme").await;
    tenant(s, "globex").await;
    tenant(s, "initech").await;
    let r = router(s, &t, "r0").await;
    let b = bridge(s, &t, "b0").await;
    let c = chain(s, &t, "c0").await;
    for i in 1..3 {
        router(s, &t, &format!("r{i}")).await;
        bridge(s, &t, &format!("b{i}")).await;
        chain(s, &t, &format!("c{i}")).await;
    }
    for i in 0..3 {
        bridge_port(s, &b).await;
        let port = router_port(s, &r, &format!("10.0.{i}.1/24")).await;
        create(
            s,
            &format!("/v1/routers/{r}/routes"),
            "routes",
            json!({"dst": format!("10.{}.0.0/16", 100 + i), "next_hop_port": port}),
        )
        .await;
        create(
            s,
            &format!("/v1/chains/{c}/rules"),
            "rules",
            json!({"action": "accept"}),
        )
        .await;
        create(
            s,
            "/v1/port_groups",
            "port_groups",
            json!({"tenant_id": t, "name": format!("g{i}")}),
        )
        .await;
        create(
            s,
            "/v1/ip_address_groups",
            "ip_address_groups",
            json!({"tenant_id": t, "name": format!("a{i}")}),
        )
        .await;
        host(s, &format!("h{i}"), &format!("192.0.2.{}", i + 1)).await;
        create(
            s,
            "/v1/ip_pools",
            "ip_pools",
            json!({"name": format!("p{i}"), "cidr": format!("10.{}.0.0/24", 200 + i)}),
        )
        .await;
    }
    let listings = [
        ("/v1/tenants".to_string(), 3),
        ("/v1/routers".into(), 3),
        ("/v1/bridges".into(), 3),
        ("/v1/chains".into(), 3),
        ("/v1/ports".into(), 6),
        (format!("/v1/bridges/{b}/ports"), 3),
        (format!("/v1/routers/{r}/ports"), 3),
        (format!("/v1/routers/{r}/routes"), 3),
        (format!("/v1/chains/{c}/rules"), 3),
        ("/v1/port_groups".into(), 3),
        ("/v1/ip_address_groups".into(), 3),
        ("/v1/hosts".into(), 3),
        ("/v1/ip_pools".into(), 3),
    ];
    for (path, count) in listings {
        let everything = list_ids(s, ADMIN_TOKEN, &path).await;
        assert_eq!(everything.len(), count, "{path}");
        for limit in [1, 2, count] {
            assert_eq!(
                id_set(&walk(s, ADMIN_TOKEN, &path, limit).await),
                everything,
                "{path} with limit {limit}"
            );
        }
    }
}

/// Concurrent PATCHes of different fields without `If-Match`: each either
/// applies (and stays applied) or is refused with 409; none is lost.
async fn concurrent_patches_lose_nothing(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let c1 = chain(s, &t, "in").await;
    let c2 = chain(s, &t, "out").await;
    for round in 0..4 {
        let r = router(s, &t, &format!("r{round}")).await;
        let path = format!("/v1/routers/{r}");
        let changes = [
            json!({"name": format!("renamed{round}")}),
            json!({"admin_state_up": false}),
            json!({"inbound_chain_id": c1}),
            json!({"outbound_chain_id": c2}),
        ];
        let answers = futures::future::join_all(
            changes
                .iter()
                .map(|change| send(s.json(Method::PATCH, &path, change))),
        )
        .await;
        let last = get_ok(s, &path).await;
        for (change, answer) in changes.iter().zip(&answers) {
            match answer.status {
                200 => {
                    for (field, value) in change.as_object().unwrap() {
                        assert_eq!(
                            &last[field], value,
                            "round {round}: the applied PATCH {change} was lost: {last}"
                        );
                    }
                }
                _ => {
                    answer.problem(409, None);
                }
            }
        }
        assert!(answers.iter().any(|a| a.status == 200), "round {round}");
    }
}

/// Concurrent appends to one chain all land, at distinct positions
/// 1..=n: an append names no position, so it cannot collide on one. (Five
/// appends: with the server's five insert attempts, each failed attempt
/// means another append landed, so the last one still lands.)
async fn concurrent_rule_appends(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let c = chain(s, &t, "in").await;
    let rules = format!("/v1/chains/{c}/rules");
    let answers = futures::future::join_all(
        (0..5).map(|_| send(s.json(Method::POST, &rules, &json!({"action": "accept"})))),
    )
    .await;
    let refused: Vec<String> = answers
        .iter()
        .filter(|a| a.status != 201)
        .map(|a| format!("{} {}", a.status, text(a)))
        .collect();
    assert!(
        refused.is_empty(),
        "every concurrent append should land; refused: {refused:#?}"
    );
    let positions: Vec<u64> = rule_positions(s, &c)
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(positions, (1..=5).collect::<Vec<u64>>());
}

/// Concurrent member adds to one group without `If-Match`: each applies or
/// is refused with 409 (not 412, which is for a stale `If-Match`), and the
/// group holds every member that was reported added.
async fn concurrent_group_member_adds(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let b = bridge(s, &t, "web").await;
    let mut ports = Vec::new();
    for _ in 0..6 {
        ports.push(bridge_port(s, &b).await);
    }
    let g = id_of(
        &create(
            s,
            "/v1/port_groups",
            "port_groups",
            json!({"tenant_id": t, "name": "g"}),
        )
        .await,
    );
    let answers = futures::future::join_all(
        ports
            .iter()
            .map(|p| send(s.req(Method::PUT, &format!("/v1/port_groups/{g}/ports/{p}")))),
    )
    .await;
    let group = get_ok(s, &format!("/v1/port_groups/{g}")).await;
    let members: HashSet<String> = group["port_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut statuses = Vec::new();
    for (port, answer) in ports.iter().zip(&answers) {
        statuses.push(answer.status);
        if answer.status == 200 {
            assert!(members.contains(port), "an added member was lost");
        }
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "statuses {statuses:?}: {:?}",
        answers.iter().map(text).collect::<Vec<_>>()
    );
}

/// Two links of one port to two peers at once: one wins, the other is
/// refused as a conflict (409/422, not 412), and both sides agree.
async fn concurrent_links(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let r = router(s, &t, "r").await;
    let b1 = bridge(s, &t, "b1").await;
    let b2 = bridge(s, &t, "b2").await;
    let p = router_port(s, &r, "10.0.1.1/24").await;
    let q1 = bridge_port(s, &b1).await;
    let q2 = bridge_port(s, &b2).await;
    for round in 0..4 {
        let (from_p, peers) = (round % 2 == 0, [&q1, &q2]);
        let answers = futures::future::join_all(peers.iter().map(|q| {
            let (port, peer) = if from_p { (&p, *q) } else { (*q, &p) };
            send(s.json(
                Method::PUT,
                &format!("/v1/ports/{port}/link"),
                &json!({"peer_id": peer}),
            ))
        }))
        .await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        let winners: Vec<usize> = (0..2).filter(|i| statuses[*i] == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one link wins: {statuses:?} {:?}",
            answers.iter().map(text).collect::<Vec<_>>()
        );
        let (winner, loser) = (peers[winners[0]], peers[1 - winners[0]]);
        answers[1 - winners[0]].problem_in(&[409, 422], None);
        assert_eq!(
            get_ok(s, &format!("/v1/ports/{p}")).await["peer_id"],
            winner.as_str()
        );
        assert_eq!(
            get_ok(s, &format!("/v1/ports/{winner}")).await["peer_id"],
            p.as_str()
        );
        assert!(get_ok(s, &format!("/v1/ports/{loser}")).await["peer_id"].is_null());
        let answer = send(s.req(Method::DELETE, &format!("/v1/ports/{p}/link"))).await;
        assert_eq!(answer.status, 200);
    }
}

// ---------------------------------------------------------------------------
// Both backends
// ---------------------------------------------------------------------------

macro_rules! api_cases {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = super::TestServer::embedded().await;
                    super::$case(&server).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = super::TestServer::etcd().await;
                    super::$case(&server).await
                }
            )*
        }
    };
}

api_cases!(
    openapi_tour,
    trace_over_http,
    live_trace_requests_over_http,
    port_counters_over_http,
    tenants_crud,
    routers_crud,
    bridges_crud,
    ports_crud,
    routes_crud,
    chains_crud,
    rules_crud,
    port_groups_crud,
    ip_address_groups_crud,
    hosts_crud,
    ip_pools_crud,
    pagination,
    links,
    link_refusals,
    self_link_names_peer_id,
    bindings,
    tenant_tokens_are_scoped,
    admin_only_operations,
    authentication,
    unauthorized_names_the_scheme,
    deleting_a_tenant_revokes_its_tokens,
    malformed_json,
    unknown_fields,
    nested_unknown_field_is_named_by_path,
    wrong_types,
    invalid_macs,
    invalid_cidrs_and_addresses,
    missing_references,
    conflicts,
    still_referenced,
    oversize_body,
    wrong_content_type,
    if_match,
    unknown_path_and_wrong_method,
    method_not_allowed_lists_allow,
    undecodable_path_parameters,
    rule_positions_at_the_top,
    garbage,
    openapi_matches_what_is_served,
    health_and_metrics,
    every_listing_paginates,
    concurrent_patches_lose_nothing,
    concurrent_rule_appends,
    concurrent_group_member_adds,
    concurrent_links,
    readdressing_a_port_keeps_its_routes_valid,
    bearer_scheme_is_case_insensitive,
    references_do_not_leak_other_tenants,
);

// ---------------------------------------------------------------------------
// The OpenAPI document describes every answer
// ---------------------------------------------------------------------------

/// Runs every other test of this binary in a child process with the report
/// on: every answer their servers gave (status, content type, body) must
/// match the OpenAPI document, and the suite must exercise nearly every
/// documented operation.
#[test]
fn every_response_matches_openapi() {
    let report = support::openapi_check::run_this_binary("every_response_matches_openapi");
    assert!(
        report.violations.is_empty(),
        "{} of {} answers differ from the OpenAPI document:\n  {}",
        report.violations.len(),
        report.responses,
        report.violations.join("\n  ")
    );
    let documented = support::openapi_check::operations(&support::openapi_check::document());
    let answered = report.operations(|_| true);
    let succeeded = report.operations(|status| (200..300).contains(&status));
    let missed: Vec<&String> = documented.difference(&succeeded).collect();
    println!(
        "{} answers checked; of {} documented operations, {} answered, {} succeeded; \
         never succeeded: {missed:?}",
        report.responses,
        documented.len(),
        answered.len(),
        succeeded.len()
    );
    assert!(
        report.responses > 1000,
        "too few answers: {}",
        report.responses
    );
    assert_eq!(
        answered, documented,
        "every operation answers at least once"
    );
    assert!(
        succeeded.len() * 10 >= documented.len() * 9,
        "the API suite saw only {} of {} operations succeed; never: {missed:?}",
        succeeded.len(),
        documented.len()
    );
}

// ---------------------------------------------------------------------------
// 6. `plexus serve` restarts keep everything
// ---------------------------------------------------------------------------

/// A running `plexus serve`, killed on drop (so a failing test leaks nothing).
struct Serve {
    child: std::process::Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

async fn start_serve(args: &[String]) -> Serve {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--no-uplink")
        .args(args)
        .env_remove("PLEXUS_NSDB")
        .env_remove("PLEXUS_ADMIN_TOKEN")
        .env_remove("PLEXUS_ADMIN_TOKEN_FILE")
        .env_remove("PLEXUS_DATA")
        .env_remove("PLEXUS_LISTEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run plexus serve");
    let mut serve = Serve {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = serve.child.try_wait().expect("poll plexus serve") {
            panic!("plexus serve {args:?} exited during start-up: {status}");
        }
        if let Ok(response) = http.get(format!("{}/healthz", serve.base)).send().await {
            if response.status() == 200 {
                return serve;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = serve.child.kill();
    panic!("plexus serve {args:?} never became healthy");
}

async fn stop_serve(mut serve: Serve) {
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = serve.child.try_wait().expect("poll plexus serve") {
            assert!(
                status.success(),
                "plexus serve exited with {status} on SIGTERM"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("plexus serve ignored SIGTERM");
}

/// Everything the API can show of the store (of the hosts, only `hosts`:
/// `plexus serve` also runs an agent, which registers its own host and
/// keeps it alive).
async fn everything(
    client: &api::Client,
    routers: &[Uuid],
    chains: &[Uuid],
    hosts: &[Uuid],
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for collection in [
        "tenants",
        "routers",
        "bridges",
        "ports",
        "chains",
        "port_groups",
        "ip_address_groups",
        "hosts",
        "ip_pools",
    ] {
        let mut items: Vec<Value> = client
            .list(&format!("/v1/{collection}"))
            .await
            .unwrap_or_else(|e| panic!("list {collection}: {e}"));
        if collection == "hosts" {
            items.retain(|h| hosts.iter().any(|id| h["id"] == id.to_string()));
        }
        out.insert(collection.to_string(), Value::Array(items));
    }
    for router in routers {
        let routes: Vec<Value> = client
            .list(&format!("/v1/routers/{router}/routes"))
            .await
            .unwrap();
        out.insert(format!("routes of {router}"), Value::Array(routes));
    }
    for chain in chains {
        let rules: Vec<Value> = client
            .list(&format!("/v1/chains/{chain}/rules"))
            .await
            .unwrap();
        out.insert(format!("rules of {chain}"), Value::Array(rules));
    }
    out
}

async fn restart_keeps_everything(args: Vec<String>, admin_token: &str) {
    let serve = start_serve(&args).await;
    let admin = api::Client::new(&serve.base, admin_token).unwrap();
    let t = admin.create_tenant("durable").await.unwrap();
    let issued = admin.issue_tenant_token(t.id, "kept").await.unwrap();
    let r = admin.create_router(t.id, "edge").await.unwrap();
    let r2 = admin.create_router(t.id, "core").await.unwrap();
    let b = admin.create_bridge(t.id, "web").await.unwrap();
    let bp = admin
        .create_bridge_port(b.id, json!({"mac": "02:00:00:00:00:01"}))
        .await
        .unwrap();
    let bp2 = admin.create_bridge_port(b.id, json!({})).await.unwrap();
    let rp = admin.create_router_port(r.id, "10.0.1.1/24").await.unwrap();
    let up = admin.create_router_port(r.id, "10.0.9.1/30").await.unwrap();
    let down = admin
        .create_router_port(r2.id, "10.0.9.2/30")
        .await
        .unwrap();
    admin.link(rp.id, bp.id).await.unwrap();
    admin.link(up.id, down.id).await.unwrap();
    let route = admin
        .create_route(
            r.id,
            json!({"dst": "0.0.0.0/0", "next_hop_port": rp.id, "next_hop_gateway": "10.0.1.254"}),
        )
        .await
        .unwrap();
    let c = admin.create_chain(t.id, "in").await.unwrap();
    admin
        .create_rule(c.id, json!({"action": "accept", "dst_cidr": "10.0.1.0/24"}))
        .await
        .unwrap();
    admin
        .create_rule(c.id, json!({"action": "drop", "position": 1}))
        .await
        .unwrap();
    let _: Router = admin
        .patch(
            &format!("/v1/routers/{}", r.id),
            &json!({"inbound_chain_id": c.id}),
            None,
        )
        .await
        .unwrap();
    let h = admin
        .create_host("restart-test-host", "192.0.2.1")
        .await
        .unwrap();
    admin.bind(bp2.id, h.id, "tap0").await.unwrap();
    let _: Value = admin
        .post(
            "/v1/port_groups",
            &json!({"tenant_id": t.id, "name": "g", "port_ids": [bp.id, bp2.id]}),
        )
        .await
        .unwrap();
    let _: Value = admin
        .post(
            "/v1/ip_address_groups",
            &json!({"tenant_id": t.id, "name": "a", "addresses": ["10.0.0.0/8"]}),
        )
        .await
        .unwrap();
    admin
        .create_ip_pool("public", "198.51.100.0/24")
        .await
        .unwrap();

    let routers = [r.id, r2.id];
    let chains = [c.id];
    let hosts = [h.id];
    let before = everything(&admin, &routers, &chains, &hosts).await;
    assert_eq!(before["hosts"].as_array().map(Vec::len), Some(1));
    let route_before: Value = admin
        .get(&format!("/v1/routes/{}", route.id))
        .await
        .unwrap();
    let health_before: Value = admin.get("/healthz").await.unwrap();
    stop_serve(serve).await;

    let serve = start_serve(&args).await;
    let admin = api::Client::new(&serve.base, admin_token).unwrap();
    let after = everything(&admin, &routers, &chains, &hosts).await;
    for (what, items) in &before {
        assert_eq!(
            Some(items),
            after.get(what),
            "{what} changed across the restart"
        );
    }
    assert_eq!(before, after);
    assert_eq!(
        route_before,
        admin
            .get::<Value>(&format!("/v1/routes/{}", route.id))
            .await
            .unwrap()
    );
    let health_after: Value = admin.get("/healthz").await.unwrap();
    assert!(
        health_after["nsdb_revision"].as_i64() >= health_before["nsdb_revision"].as_i64(),
        "the restarted server sees the same store: {health_before} -> {health_after}"
    );
    // The linked pairs, the binding and the tenant token survived too.
    let port: Port = admin.get(&format!("/v1/ports/{}", bp.id)).await.unwrap();
    assert_eq!(port.peer_id, Some(rp.id));
    let port: Port = admin.get(&format!("/v1/ports/{}", bp2.id)).await.unwrap();
    assert_eq!(port.host_id, Some(h.id));
    let tenant_client = api::Client::new(&serve.base, &issued.token).unwrap();
    let mine: Vec<Router> = tenant_client.list("/v1/routers").await.unwrap();
    assert_eq!(mine.len(), 2);
    // And it still takes writes.
    admin.create_tenant("after-restart").await.unwrap();
    stop_serve(serve).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restart_keeps_everything_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let token = "restart-admin-token";
    let args = vec![
        "--data".to_string(),
        dir.path().join("data").to_str().unwrap().to_string(),
        "--admin-token".to_string(),
        token.to_string(),
    ];
    restart_keeps_everything(args, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restart_keeps_everything_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let token = "restart-admin-token";
    let args = vec![
        "--data".to_string(),
        dir.path().join("data").to_str().unwrap().to_string(),
        "--nsdb".to_string(),
        format!(
            "etcd://{}/plexus-api-restart-{}/",
            support::etcd::shared(),
            Uuid::new_v4()
        ),
        "--admin-token".to_string(),
        token.to_string(),
    ];
    restart_keeps_everything(args, token).await;
}
