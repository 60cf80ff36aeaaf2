//! `POST /v1/batch` on a real server, over the embedded store and a real
//! etcd: puts and deletes of several objects commit together or not at all
//! (a refused operation is named and nothing is written), a batch can be
//! sent again, fields a PATCH may not change stay, and a tenant token
//! reaches only its own objects.

mod support;

use reqwest::Method;
use serde_json::{json, Value};

use support::api::*;

fn put(collection: &str, record: Value) -> Value {
    json!({ "op": "put", "collection": collection, "record": record })
}

fn delete(collection: &str, id: &str) -> Value {
    json!({ "op": "delete", "collection": collection, "id": id })
}

async fn batch_ok(s: &TestServer, token: Option<&str>, operations: Vec<Value>) -> Value {
    let body = json!({ "operations": operations });
    let request = match token {
        Some(token) => s.json_as(token, Method::POST, "/v1/batch", &body),
        None => s.json(Method::POST, "/v1/batch", &body),
    };
    let answer = send(request).await;
    assert_eq!(answer.status, 200, "batch: {}", text(&answer));
    answer.json()
}

/// A chain with two rules, a selector port group and a static address
/// group the rules name: ids chosen by the client.
fn policy_objects(tenant: &str, chain: &str, group: &str, addresses: &str) -> Vec<Value> {
    vec![
        put(
            "port_groups",
            json!({ "id": group, "tenant_id": tenant, "name": "web",
                    "selector": { "matchLabels": { "app": "web" } } }),
        ),
        put(
            "ip_address_groups",
            json!({ "id": addresses, "tenant_id": tenant, "name": "clients",
                    "addresses": ["10.9.0.0/24"] }),
        ),
        put(
            "chains",
            json!({ "id": chain, "tenant_id": tenant, "name": "policy" }),
        ),
        put(
            "rules",
            json!({ "id": uuid(), "chain_id": chain, "position": 1, "action": "accept",
                    "src_ip_group_id": addresses, "out_port_group_id": group }),
        ),
        put(
            "rules",
            json!({ "id": uuid(), "chain_id": chain, "position": 2, "action": "drop",
                    "out_port_group_id": group }),
        ),
    ]
}

async fn batch_commits_together(s: &TestServer) {
    let tenant = tenant(s, "batched").await;
    let (chain, group, addresses) = (uuid(), uuid(), uuid());
    let operations = policy_objects(&tenant, &chain, &group, &addresses);
    let answer = batch_ok(s, None, operations.clone()).await;
    let records = answer["records"].as_array().expect("records");
    assert_eq!(records.len(), 5, "{answer}");
    let revision = answer["revision"].as_i64().expect("a revision");
    for record in records {
        assert_eq!(record["revision"].as_i64(), Some(revision), "{answer}");
    }
    let rules = get_ok(s, &format!("/v1/chains/{chain}/rules")).await;
    assert_eq!(rules["items"].as_array().map(Vec::len), Some(2), "{rules}");
    assert_eq!(
        get_ok(s, &format!("/v1/port_groups/{group}")).await["selector"]["matchLabels"]["app"],
        "web"
    );

    // Sent again, the same batch replaces every record with itself.
    let again = batch_ok(s, None, operations.clone()).await;
    assert!(again["revision"].as_i64() > Some(revision), "{again}");
    let rules = get_ok(s, &format!("/v1/chains/{chain}/rules")).await;
    assert_eq!(rules["items"].as_array().map(Vec::len), Some(2), "{rules}");

    // A put replaces every field: the address group loses its addresses
    // and the selector changes, in one commit with a rule's removal.
    let rule_two = rules["items"][1]["id"].as_str().unwrap().to_string();
    let changed = batch_ok(
        s,
        None,
        vec![
            put(
                "ip_address_groups",
                json!({ "id": addresses, "tenant_id": tenant, "name": "clients" }),
            ),
            put(
                "port_groups",
                json!({ "id": group, "tenant_id": tenant, "name": "web",
                        "selector": { "matchLabels": { "app": "api" } } }),
            ),
            delete("rules", &rule_two),
        ],
    )
    .await;
    assert_eq!(changed["records"][2], Value::Null, "{changed}");
    let stored = get_ok(s, &format!("/v1/ip_address_groups/{addresses}")).await;
    assert_eq!(stored["addresses"], json!([]), "{stored}");
    let rules = get_ok(s, &format!("/v1/chains/{chain}/rules")).await;
    assert_eq!(rules["items"].as_array().map(Vec::len), Some(1), "{rules}");

    // Deleting what is gone does nothing; a chain goes with its rules.
    let rule_one = rules["items"][0]["id"].as_str().unwrap().to_string();
    let gone = batch_ok(
        s,
        None,
        vec![
            delete("rules", &rule_two),
            delete("rules", &rule_one),
            delete("chains", &chain),
            delete("port_groups", &group),
            delete("ip_address_groups", &addresses),
        ],
    )
    .await;
    assert!(gone["revision"].is_i64(), "{gone}");
    let answer = send(s.req(Method::GET, &format!("/v1/chains/{chain}"))).await;
    assert_eq!(answer.status, 404);
    let nothing = batch_ok(s, None, vec![delete("chains", &chain)]).await;
    assert_eq!(nothing, json!({ "records": [null] }));
}

/// The largest batch the API takes commits on either store (an etcd
/// transaction bounds its operations and comparisons).
async fn the_largest_batch_commits(s: &TestServer) {
    let tenant = tenant(s, "large").await;
    let (chain, group, addresses) = (uuid(), uuid(), uuid());
    let mut operations = policy_objects(&tenant, &chain, &group, &addresses);
    operations.truncate(3);
    while operations.len() < 25 {
        let position = operations.len();
        operations.push(put(
            "rules",
            json!({ "id": uuid(), "chain_id": chain, "position": position, "action": "accept",
                    "src_ip_group_id": addresses, "out_port_group_id": group,
                    "protocol": 6, "dst_ports": format!("{position}-{}", position + 1000) }),
        ));
    }
    batch_ok(s, None, operations).await;
    let rules = get_ok(s, &format!("/v1/chains/{chain}/rules")).await;
    assert_eq!(rules["items"].as_array().map(Vec::len), Some(22), "{rules}");
}

async fn batch_refusals_write_nothing(s: &TestServer) {
    let tenant = tenant(s, "refused").await;
    let (chain, group, addresses) = (uuid(), uuid(), uuid());
    let valid = policy_objects(&tenant, &chain, &group, &addresses);
    let path = "/v1/batch";

    // The last rule names a chain that does not exist: nothing of the
    // batch is written.
    let mut dangling = valid.clone();
    dangling.push(put(
        "rules",
        json!({ "id": uuid(), "chain_id": uuid(), "position": 1, "action": "accept" }),
    ));
    s.refuse_json(
        "a rule in a missing chain",
        Method::POST,
        path,
        &json!({ "operations": dangling }),
        &[404, 409, 422],
        None,
    )
    .await;

    // A malformed record is named by its operation and field.
    let mut malformed = valid.clone();
    malformed[3]["record"]["action"] = json!("teleport");
    let problem = s
        .refuse_json(
            "a malformed rule",
            Method::POST,
            path,
            &json!({ "operations": malformed }),
            &[400, 422],
            None,
        )
        .await;
    assert!(
        problem
            .field
            .as_deref()
            .is_some_and(|f| f.starts_with("operations[3]")),
        "{problem:?}"
    );

    for (what, body, field) in [
        (
            "an unknown collection",
            json!({ "operations": [put("tenants", json!({ "id": uuid(), "name": "sneaky" }))] }),
            "operations[0].collection",
        ),
        (
            "one record twice",
            json!({ "operations": [valid[2].clone(), valid[2].clone()] }),
            "operations[1]",
        ),
        (
            "too many operations",
            json!({ "operations": vec![delete("chains", &uuid()); 26] }),
            "operations",
        ),
    ] {
        s.refuse_json(what, Method::POST, path, &body, &[400], Some(field))
            .await;
    }

    // A field a PATCH may not change stays: a rule cannot move chains.
    let answer = batch_ok(s, None, valid.clone()).await;
    let mut moved = answer["records"][3].clone();
    let other = chain_in(s, &tenant).await;
    moved["chain_id"] = json!(other);
    s.refuse_json(
        "a rule moved to another chain",
        Method::POST,
        path,
        &json!({ "operations": [put("rules", moved)] }),
        &[400],
        Some("operations[0].chain_id"),
    )
    .await;

    // A stale revision is refused (compare-and-swap).
    let stale = json!({ "operations": [{
        "op": "put", "collection": "chains", "if_revision": 1,
        "record": { "id": chain, "tenant_id": tenant, "name": "renamed" } }] });
    s.refuse_json(
        "a stale revision",
        Method::POST,
        path,
        &stale,
        &[409, 412],
        None,
    )
    .await;
}

async fn chain_in(s: &TestServer, tenant: &str) -> String {
    chain(s, tenant, &format!("other-{}", &uuid()[..8])).await
}

async fn batch_tenant_scope(s: &TestServer) {
    let mine = tenant(s, "mine").await;
    let theirs = tenant(s, "theirs").await;
    let token = token(s, &mine).await;
    let their_chain = chain(s, &theirs, "theirs").await;

    // Own objects: fine with the tenant's token.
    let (chain, group, addresses) = (uuid(), uuid(), uuid());
    batch_ok(
        s,
        Some(&token),
        policy_objects(&mine, &chain, &group, &addresses),
    )
    .await;

    // Another tenant's objects: neither created, changed, referenced nor
    // deleted, and nothing of the batch is written.
    let cases = [
        (
            "a chain for another tenant",
            vec![put(
                "chains",
                json!({ "id": uuid(), "tenant_id": theirs, "name": "x" }),
            )],
        ),
        (
            "a rule in another tenant's chain",
            vec![put(
                "rules",
                json!({ "id": uuid(), "chain_id": their_chain, "position": 7, "action": "drop" }),
            )],
        ),
        (
            "another tenant's chain renamed",
            vec![put(
                "chains",
                json!({ "id": their_chain, "tenant_id": theirs, "name": "mine now" }),
            )],
        ),
        (
            "another tenant's chain deleted",
            vec![delete("chains", &their_chain)],
        ),
        (
            "a jump into another tenant's chain",
            vec![put(
                "rules",
                json!({ "id": uuid(), "chain_id": chain, "position": 9, "action": "jump",
                        "jump_chain_id": their_chain }),
            )],
        ),
    ];
    for (what, operations) in cases {
        let body = json!({ "operations": operations });
        s.refuse(
            what,
            s.json_as(&token, Method::POST, "/v1/batch", &body),
            &[403, 404, 409, 422],
            None,
        )
        .await;
    }
    get_ok(s, &format!("/v1/chains/{their_chain}")).await;
}

both_backends!(
    batch_commits_together,
    the_largest_batch_commits,
    batch_refusals_write_nothing,
    batch_tenant_scope
);
