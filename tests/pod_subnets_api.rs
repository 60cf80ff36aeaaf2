//! Pod subnets of tenants never silently overlap, on both backends: an
//! overlapping `tenant init` is refused naming the other tenant (nothing
//! written), or provisioned NAT-only when asked for; of concurrent inits
//! on one range, through two API servers, exactly one wins; a deleted
//! network frees its range.

mod support;

use nsdb::{NsdbError, Provider, Route, Router, Rule, RuleAction, Tenant, TenantNetworkRef};
use reqwest::Method;
use serde_json::json;
use support::api::*;
use uuid::Uuid;

async fn provider_routes_to(s: &TestServer, provider: &Provider, cidr: &str) -> usize {
    let routes: Vec<Route> = s
        .admin
        .list(&format!("/v1/routers/{}/routes", provider.router_id))
        .await
        .unwrap();
    routes.iter().filter(|r| r.dst.to_string() == cidr).count()
}

async fn rules_of(s: &TestServer, chain: Uuid) -> Vec<Rule> {
    let mut rules: Vec<Rule> = s
        .admin
        .list(&format!("/v1/chains/{chain}/rules"))
        .await
        .unwrap();
    rules.sort_by_key(|r| r.position);
    rules
}

/// An overlap is a 409 naming the other tenant and its range, and writes
/// nothing; a range inside or around another counts.
async fn overlap_is_refused_naming_the_other_tenant(s: &TestServer) {
    let provider = provider_with_uplink(s).await;
    let a = s.admin.create_tenant("alpha").await.unwrap();
    let b = s.admin.create_tenant("bravo").await.unwrap();
    let na = s
        .admin
        .init_tenant_network(a.id, Some("10.1.0.0/16"))
        .await
        .unwrap();
    assert!(!na.nat_only, "a routed network by default");
    let path = format!("/v1/tenants/{}/network", b.id);
    for cidr in ["10.1.0.0/16", "10.1.7.0/24", "10.0.0.0/15"] {
        let problem = s
            .refuse_json(
                &format!("init on {cidr}"),
                Method::POST,
                &path,
                &json!({ "pod_cidr": cidr }),
                &[409],
                Some("pod_cidr"),
            )
            .await;
        assert_eq!(problem.problem_type, "/problems/pod-subnet-overlap");
        for named in ["alpha", &a.id.to_string(), "10.1.0.0/16", cidr, "NAT-only"] {
            assert!(
                problem.detail.contains(named),
                "the problem names {named}: {}",
                problem.detail
            );
        }
    }
    let tenant: Tenant = s.admin.get(&format!("/v1/tenants/{}", b.id)).await.unwrap();
    assert_eq!(tenant.network, None);
    assert_eq!(provider_routes_to(s, &provider, "10.1.0.0/16").await, 1);
    // Next to it is fine.
    let nb = s
        .admin
        .init_tenant_network(b.id, Some("10.2.0.0/24"))
        .await
        .unwrap();
    assert_eq!(provider_routes_to(s, &provider, "10.2.0.0/24").await, 1);
    // The network exists: another range is refused as such.
    let exists = problem_of(s.admin.init_tenant_network(b.id, Some("10.3.0.0/24")).await);
    assert_eq!(
        (exists.status, exists.field.as_deref()),
        (409, Some("pod_cidr"))
    );
    assert_eq!(exists.problem_type, "/problems/exists");
    assert!(!nb.nat_only);
}

/// `nat_only` provisions an overlapping range without host access: no
/// provider route, no host rules, masquerade only; shown by the API.
async fn nat_only_is_an_explicit_opt_in(s: &TestServer) {
    let provider = provider_with_uplink(s).await;
    let a = s.admin.create_tenant("alpha").await.unwrap();
    let b = s.admin.create_tenant("bravo").await.unwrap();
    let na = s
        .admin
        .init_tenant_network(a.id, Some("10.5.0.0/24"))
        .await
        .unwrap();
    let nb = s
        .admin
        .init_tenant_network_with(b.id, Some("10.5.0.0/24"), true)
        .await
        .unwrap();
    assert!(nb.nat_only);
    assert_eq!(nb.pod_cidr, na.pod_cidr);
    assert_eq!(
        provider_routes_to(s, &provider, "10.5.0.0/24").await,
        1,
        "only the routed tenant's subnet is routed from the provider"
    );
    let shown = s.admin.tenant_network(b.id).await.unwrap().unwrap();
    assert!(shown.nat_only, "GET shows NAT-only reachability");
    let tenant: Tenant = s.admin.get(&format!("/v1/tenants/{}", b.id)).await.unwrap();
    assert!(tenant.network.unwrap().nat_only, "recorded in the model");
    let out = rules_of(s, nb.router.outbound_chain_id.unwrap()).await;
    assert_eq!(
        out.iter().map(|r| r.action).collect::<Vec<_>>(),
        vec![RuleAction::Masquerade],
        "NAT-only pods reach the host masqueraded"
    );
    let inbound = rules_of(s, nb.router.inbound_chain_id.unwrap()).await;
    assert!(
        inbound.iter().all(|r| r.src_cidr.is_none()),
        "no rule lets the host in: {inbound:?}"
    );
    // The routed one has host access both ways: the host let in, pod
    // traffic to the host left untranslated.
    let inbound = rules_of(s, na.router.inbound_chain_id.unwrap()).await;
    assert!(inbound
        .iter()
        .any(|r| r.src_cidr.map(|c| c.to_string()).as_deref() == Some("100.64.0.1/32")));
    let out = rules_of(s, na.router.outbound_chain_id.unwrap()).await;
    assert_eq!(
        out.iter().map(|r| r.action).collect::<Vec<_>>(),
        vec![RuleAction::Accept, RuleAction::Masquerade]
    );
    assert_eq!(
        out[0].dst_cidr.map(|c| c.to_string()).as_deref(),
        Some("100.64.0.1/32")
    );
    // The routed tenant still holds the range against a third one.
    let c = s.admin.create_tenant("charlie").await.unwrap();
    let problem = problem_of(s.admin.init_tenant_network(c.id, Some("10.5.0.0/25")).await);
    assert!(problem.detail.contains("alpha"), "{}", problem.detail);
    // Once the routed network is gone, its range is free again.
    s.admin
        .delete(&format!("/v1/tenants/{}/network", a.id), None)
        .await
        .unwrap();
    let nc = s
        .admin
        .init_tenant_network(c.id, Some("10.5.0.0/25"))
        .await
        .unwrap();
    assert!(!nc.nat_only);
    assert_eq!(provider_routes_to(s, &provider, "10.5.0.0/25").await, 1);
}

/// Concurrent inits of eight tenants on one range, alternating between two
/// API servers: exactly one gets it routed, the others are refused naming
/// the winner, and none of the losers has anything written.
async fn concurrent_inits_on_one_range_have_one_winner(s: &TestServer) {
    let provider = provider_with_uplink(s).await;
    let peer = s.peer().await;
    let mut tenants = Vec::new();
    for n in 0..8 {
        tenants.push(s.admin.create_tenant(&format!("t{n}")).await.unwrap());
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(tenants.len()));
    let mut tasks = Vec::new();
    for (n, tenant) in tenants.iter().enumerate() {
        let client = if n % 2 == 0 {
            s.admin.clone()
        } else {
            peer.admin.clone()
        };
        let id = tenant.id;
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            client.init_tenant_network(id, Some("10.9.0.0/24")).await
        }));
    }
    let mut winners = Vec::new();
    let mut refusals = Vec::new();
    for (task, tenant) in tasks.into_iter().zip(&tenants) {
        match task.await.unwrap() {
            Ok(network) => winners.push((tenant.clone(), network)),
            Err(error) => refusals.push((tenant.clone(), problem_of::<()>(Err(error)))),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one init wins: {refusals:?}");
    let (winner, _) = &winners[0];
    for (loser, problem) in &refusals {
        assert_eq!(problem.status, 409, "{problem:?}");
        assert_eq!(problem.problem_type, "/problems/pod-subnet-overlap");
        assert!(
            problem.detail.contains(&winner.name)
                && problem.detail.contains(&winner.id.to_string()),
            "the refusal names the winner {}: {}",
            winner.name,
            problem.detail
        );
        let stored: Tenant = s
            .admin
            .get(&format!("/v1/tenants/{}", loser.id))
            .await
            .unwrap();
        assert_eq!(stored.network, None);
        let routers: Vec<Router> = s
            .admin
            .list(&format!("/v1/routers?tenant_id={}", loser.id))
            .await
            .unwrap();
        assert!(routers.is_empty(), "a loser has no router: {routers:?}");
    }
    assert_eq!(provider_routes_to(s, &provider, "10.9.0.0/24").await, 1);
    let index: Vec<_> = s
        .dump()
        .await
        .into_iter()
        .filter(|e| e.key.contains("podnets/"))
        .collect();
    assert_eq!(index.len(), 1, "one claim in the index: {index:?}");
}

/// The same race one level down, with nothing else to collide on: eight
/// tenants' records claim overlapping routed subnets in concurrent NSDB
/// writes, and the index admits exactly one.
async fn concurrent_claims_in_the_nsdb_have_one_winner(s: &TestServer) {
    let mut claims = Vec::new();
    for n in 0..8u8 {
        let tenant = s.admin.create_tenant(&format!("n{n}")).await.unwrap();
        let router = s.admin.create_router(tenant.id, "r").await.unwrap();
        let bridge = s.admin.create_bridge(tenant.id, "b").await.unwrap();
        let mut claimed = tenant.clone();
        claimed.network = Some(TenantNetworkRef {
            router_id: router.id,
            bridge_id: bridge.id,
            pod_cidr: Some(format!("10.20.{n}.0/24").parse().unwrap()),
            pod_cidr6: None,
            nat_only: false,
        });
        // Every claim overlaps the first (a /16 around them all).
        if n == 0 {
            claimed.network.as_mut().unwrap().pod_cidr = Some("10.20.0.0/16".parse().unwrap());
        }
        claims.push((claimed, tenant.revision));
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(claims.len()));
    let mut tasks = Vec::new();
    for (claimed, revision) in claims {
        let (nsdb, start) = (s.nsdb.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            nsdb.update(claimed, Some(revision)).await
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(tenant) => won.push(tenant),
            Err(NsdbError::PodSubnetOverlap { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    let index: Vec<_> = s
        .dump()
        .await
        .into_iter()
        .filter(|e| e.key.contains("podnets/"))
        .collect();
    // Either the /16 won alone, or it lost and the seven /24s all won.
    let won_cidrs: Vec<String> = won
        .iter()
        .map(|t| t.network.unwrap().pod_cidr.unwrap().to_string())
        .collect();
    if won_cidrs.contains(&"10.20.0.0/16".to_string()) {
        assert_eq!(
            won.len(),
            1,
            "the /16 overlaps every other claim: {won_cidrs:?}"
        );
    } else {
        assert_eq!(
            won.len(),
            7,
            "the /24s do not overlap each other: {won_cidrs:?}"
        );
    }
    assert_eq!(index.len(), won.len(), "one index entry per winner");
}

both_backends!(
    overlap_is_refused_naming_the_other_tenant,
    nat_only_is_an_explicit_opt_in,
    concurrent_inits_on_one_range_have_one_winner,
    concurrent_claims_in_the_nsdb_have_one_winner,
);
