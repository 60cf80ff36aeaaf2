//! Tenant tokens' lifecycle over real API servers: listed without secrets,
//! revoked at once on every API server of one etcd keyspace, expiring on
//! time, and their last use recorded (at most once a minute).

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use support::api::*;

/// Answers `GET /v1/routers` with `token` on `server`: the status.
async fn status_with(server: &TestServer, token: &str) -> u16 {
    send(server.as_token(token, Method::GET, "/v1/routers"))
        .await
        .status
}

async fn tokens_are_listed_without_secrets(s: &TestServer) {
    let acme = tenant(s, "acme").await;
    let globex = tenant(s, "globex").await;
    let mine = token(s, &acme).await;
    token(s, &globex).await;
    let all = walk(s, ADMIN_TOKEN, "/v1/tokens", 10).await;
    assert_eq!(all.len(), 2, "{all:?}");
    for item in &all {
        assert_members(item, &["id", "tenant_id", "description", "created_at"]);
        assert!(!item.to_string().contains(&mine), "no secret: {item}");
    }
    let filtered = walk(s, ADMIN_TOKEN, &format!("/v1/tokens?tenant_id={acme}"), 10).await;
    assert_eq!(filtered.len(), 1);
    let own = walk(s, &mine, "/v1/tokens", 10).await;
    assert_eq!(own.len(), 1, "a tenant sees its own tokens only");
    assert_eq!(own[0]["tenant_id"], json!(acme));
    // Using the token recorded its use.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = get_ok(s, &format!("/v1/tokens/{}", own[0]["id"].as_str().unwrap())).await;
    let used = got["last_used_at"].as_str().expect("last_used_at");
    assert!(used.ends_with('Z') && used.len() == 20, "RFC 3339: {used}");
    let other = all
        .iter()
        .find(|t| t["tenant_id"] == json!(globex))
        .unwrap();
    send(s.as_token(
        &mine,
        Method::GET,
        &format!("/v1/tokens/{}", other["id"].as_str().unwrap()),
    ))
    .await
    .problem(404, None);
}

async fn a_revoked_token_fails_at_once_on_every_api_server(s: &TestServer) {
    let peer = s.peer().await;
    let acme = tenant(s, "acme").await;
    let kept = token(s, &acme).await;
    let revoked = token(s, &acme).await;
    assert_eq!(status_with(s, &revoked).await, 200);
    assert_eq!(status_with(&peer, &revoked).await, 200);
    let listed = walk(s, &revoked, "/v1/tokens", 10).await;
    let id = listed
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .find(|id| {
            let hash = ::api::auth::token_hash(&revoked);
            ::api::auth::token_id(&hash).to_string() == *id
        })
        .expect("the token lists itself");
    // A tenant revokes its own token on one server...
    let answer = send(s.as_token(&kept, Method::DELETE, &format!("/v1/tokens/{id}"))).await;
    assert_eq!(answer.status, 204, "{}", text(&answer));
    // ...and the next request with it fails on both, without waiting.
    assert_eq!(status_with(&peer, &revoked).await, 401);
    assert_eq!(status_with(s, &revoked).await, 401);
    assert_eq!(
        status_with(&peer, &kept).await,
        200,
        "other tokens still work"
    );
    send(s.req(Method::DELETE, &format!("/v1/tokens/{id}")))
        .await
        .problem(404, None);
}

async fn an_expiring_token_stops_at_its_expiry(s: &TestServer) {
    let peer = s.peer().await;
    let acme = tenant(s, "acme").await;
    let issued = s
        .admin
        .issue_expiring_token(acme.parse().unwrap(), "ci job", 2)
        .await
        .unwrap();
    let expires_at = issued.expires_at.clone().expect("an expiry");
    assert_eq!(status_with(s, &issued.token).await, 200);
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(
        status_with(s, &issued.token).await,
        401,
        "expired at {expires_at}"
    );
    assert_eq!(status_with(&peer, &issued.token).await, 401);
    let listed = walk(s, ADMIN_TOKEN, "/v1/tokens", 10).await;
    assert_eq!(
        listed[0]["expires_at"],
        json!(expires_at),
        "listed with its expiry"
    );
    for bad in [
        json!(0),
        json!(-5),
        json!(10u64 * 366 * 24 * 3600),
        json!("soon"),
    ] {
        s.refuse_json(
            "a bad expires_in",
            Method::POST,
            &format!("/v1/tenants/{acme}/tokens"),
            &json!({ "description": "x", "expires_in": bad }),
            &[400, 422],
            Some("expires_in"),
        )
        .await;
    }
}

both_backends!(
    tokens_are_listed_without_secrets,
    a_revoked_token_fails_at_once_on_every_api_server,
    an_expiring_token_stops_at_its_expiry,
);
