//! Labels on ports and selector groups through the API: labels are set and
//! changed like any field, a selector group lists no members (adding one is
//! refused), and bad keys, values or operators are refused naming the
//! field, with nothing written.

mod support;

use reqwest::Method;
use serde_json::json;

use support::api::*;

async fn labels_and_selector_groups(s: &TestServer) {
    let t = tenant(s, "acme").await;
    let b = bridge(s, &t, "net").await;
    let port = create(
        s,
        &format!("/v1/bridges/{b}/ports"),
        "ports",
        json!({ "labels": { "app": "web", "plexus.io/namespace": "x" } }),
    )
    .await;
    let port_id = id_of(&port);
    let relabelled = patch_ok(
        s,
        &format!("/v1/ports/{port_id}"),
        json!({ "labels": { "app": "db" } }),
    )
    .await;
    assert_patched(&port, &relabelled, &json!({ "labels": { "app": "db" } }));
    let group = create(
        s,
        "/v1/port_groups",
        "port_groups",
        json!({ "tenant_id": t, "name": "web", "selector": {
            "matchLabels": { "app": "web" },
            "matchExpressions": [{ "key": "tier", "operator": "NotIn", "values": ["db"] }]
        }}),
    )
    .await;
    create(
        s,
        "/v1/ip_address_groups",
        "ip_address_groups",
        json!({ "tenant_id": t, "name": "dbs", "selector": { "matchLabels": { "app": "db" } } }),
    )
    .await;
    s.refuse(
        "adding a port to a selector group",
        s.req(
            Method::PUT,
            &format!("/v1/port_groups/{}/ports/{port_id}", id_of(&group)),
        ),
        &[400, 422],
        Some("port_ids"),
    )
    .await;
    for (what, body, field) in [
        (
            "a bad label key",
            json!({ "labels": { "-app": "web" } }),
            "labels",
        ),
        (
            "a bad label value",
            json!({ "labels": { "app": "two words" } }),
            "labels",
        ),
    ] {
        s.refuse_json(
            what,
            Method::PATCH,
            &format!("/v1/ports/{port_id}"),
            &body,
            &[400, 422],
            Some(field),
        )
        .await;
    }
    s.refuse_json(
        "In without values",
        Method::POST,
        "/v1/port_groups",
        &json!({ "tenant_id": t, "name": "bad", "selector": {
            "matchExpressions": [{ "key": "app", "operator": "In" }]
        }}),
        &[400, 422],
        Some("selector"),
    )
    .await;
    s.refuse_json(
        "a selector with listed members",
        Method::POST,
        "/v1/port_groups",
        &json!({ "tenant_id": t, "name": "both", "port_ids": [port_id], "selector": {} }),
        &[400, 422],
        Some("port_ids"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_selector_groups_embedded() {
    labels_and_selector_groups(&TestServer::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_selector_groups_etcd() {
    labels_and_selector_groups(&TestServer::etcd().await).await;
}
