//! Dual-stack tenant networks over HTTP: a provider with an IPv6 plan
//! makes every new tenant network dual-stack in one batch (read back,
//! refused on overlap, removed whole), and IPv6 added to an IPv4-only
//! provider reaches an existing network when init runs for it again.

use std::collections::BTreeSet;

use api::provision::{ensure_provider, Ipv6Plan, ProviderPlan};
use nsdb::{IpPool, NsdbError, Port, Provider, Route, RuleAction};
use reqwest::Method;
use serde_json::json;

use crate::support::api::*;
use crate::{new_tenant, plan, rules_of};

/// The default IPv6 plan's ranges, as the flags' defaults make them.
const PODS6: &str = "fd70:6c65:7875:8000::/64";
const UPLINK6: &str = "fd70:6c65:7875::2/64";
const HOST6: &str = "fd70:6c65:7875::1";

fn dual_stack(host: uuid::Uuid) -> ProviderPlan {
    ProviderPlan {
        ipv6: Some(Ipv6Plan::default()),
        ..plan(host)
    }
}

async fn gateway_host(s: &TestServer) -> uuid::Uuid {
    s.admin
        .create_host(&format!("gw-{}", uuid::Uuid::new_v4()), "192.0.2.1")
        .await
        .unwrap()
        .id
}

async fn routes_of(s: &TestServer, router: uuid::Uuid) -> Vec<(String, String)> {
    let routes: Vec<Route> = s
        .admin
        .list(&format!("/v1/routers/{router}/routes"))
        .await
        .unwrap();
    let mut routes: Vec<(String, String)> = routes
        .into_iter()
        .map(|r| (r.dst.to_string(), r.next_hop_gateway.unwrap().to_string()))
        .collect();
    routes.sort();
    routes
}

async fn port(s: &TestServer, id: uuid::Uuid) -> Port {
    s.admin.get(&format!("/v1/ports/{id}")).await.unwrap()
}

fn extra(port: &Port) -> Vec<String> {
    port.extra_addresses.iter().map(|a| a.to_string()).collect()
}

pub(crate) async fn dual_stack_networks_are_made_read_and_removed_whole(s: &TestServer) {
    let provider = ensure_provider(&s.nsdb, &dual_stack(gateway_host(s).await))
        .await
        .unwrap();
    let shown: Provider = s.admin.get("/v1/provider").await.unwrap();
    let v6 = shown.ipv6.expect("the provider shows its IPv6 plan");
    assert_eq!(
        v6.uplink_gateway.map(|g| g.to_string()).as_deref(),
        Some(HOST6)
    );
    let uplink = port(s, provider.uplink_port_id.unwrap()).await;
    assert_eq!(extra(&uplink), [UPLINK6]);
    assert!(routes_of(s, provider.router_id)
        .await
        .contains(&("::/0".into(), HOST6.into())));

    let keys = |entries: Vec<nsdb::kv::KvEntry>| -> BTreeSet<String> {
        entries.into_iter().map(|e| e.key).collect()
    };
    let tenant = new_tenant(s, "dual").await;
    let before = keys(s.dump().await);
    let path = format!("/v1/tenants/{}/network", tenant.id);
    let answer = send(s.req(Method::POST, &path)).await;
    assert_eq!(answer.status, 201, "{}", text(&answer));
    let net: api::TenantNetwork = serde_json::from_value(answer.json()).unwrap();
    assert_eq!(net.pod_cidr.to_string(), "10.128.0.0/24");
    assert_eq!(net.pod_cidr6.map(|c| c.to_string()).as_deref(), Some(PODS6));
    assert_eq!(
        net.gateway6.map(|g| g.to_string()).as_deref(),
        Some("fd70:6c65:7875:8000::1")
    );
    let pool6 = net.pool6.clone().expect("an IPv6 pool");
    assert_eq!(pool6.bridge_id, Some(net.bridge.id));
    assert_eq!(pool6.cidr, net.pod_cidr6.unwrap());
    assert_eq!(
        s.admin.tenant_network(tenant.id).await.unwrap(),
        Some(net.clone())
    );
    let made: BTreeSet<String> = keys(s.dump().await)
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();

    // Every port and route of both families, read back from the store.
    assert_eq!(extra(&net.router_port), ["fd70:6c65:7875:8000::1/64"]);
    assert_eq!(extra(&net.link_port), ["fd70:6c65:7875:1::2/126"]);
    let provider_side = port(s, net.link_port.peer_id.unwrap()).await;
    assert_eq!(extra(&provider_side), ["fd70:6c65:7875:1::1/126"]);
    assert_eq!(
        routes_of(s, net.router.id).await,
        [
            ("0.0.0.0/0".into(), "169.254.0.1".into()),
            ("::/0".into(), "fd70:6c65:7875:1::1".into()),
        ]
    );
    let provider_routes = routes_of(s, provider.router_id).await;
    assert!(provider_routes.contains(&(PODS6.into(), "fd70:6c65:7875:1::2".into())));
    let inbound = rules_of(s, net.router.inbound_chain_id.unwrap()).await;
    let host_in: Vec<String> = inbound
        .iter()
        .filter_map(|r| r.src_cidr.map(|c| c.to_string()))
        .collect();
    assert_eq!(host_in, ["100.64.0.1/32", &format!("{HOST6}/128")]);
    assert_eq!(inbound.last().unwrap().action, RuleAction::Drop);
    let outbound = rules_of(s, net.router.outbound_chain_id.unwrap()).await;
    let last = outbound.last().unwrap();
    assert_eq!(
        (last.action, last.ip_version),
        (RuleAction::Masquerade, None)
    );

    // A second tenant: the next prefix and the next /126; one that asks
    // for an overlapping prefix is refused naming the field.
    let beta = new_tenant(s, "dual-b").await;
    let second = s.admin.init_tenant_network(beta.id, None).await.unwrap();
    assert_eq!(
        second.pod_cidr6.map(|c| c.to_string()).as_deref(),
        Some("fd70:6c65:7875:8001::/64")
    );
    assert_eq!(extra(&second.link_port), ["fd70:6c65:7875:1::6/126"]);
    let gamma = new_tenant(s, "dual-c").await;
    let gamma_path = format!("/v1/tenants/{}/network", gamma.id);
    let problem = s
        .refuse_json(
            "an overlapping IPv6 prefix",
            Method::POST,
            &gamma_path,
            &json!({"pod_cidr6": "fd70:6c65:7875:8000::/56"}),
            &[409],
            Some("pod_cidr6"),
        )
        .await;
    assert_eq!(problem.problem_type, "/problems/pod-subnet-overlap");
    assert!(problem.detail.contains("dual"), "{problem:?}");
    s.refuse_json(
        "an IPv6 prefix with host bits",
        Method::POST,
        &gamma_path,
        &json!({"pod_cidr6": "fd99::1/64"}),
        &[400],
        Some("pod_cidr6"),
    )
    .await;
    // A requested prefix elsewhere is taken as given.
    let third = s
        .admin
        .init_tenant_network_on(gamma.id, (None, Some("fd99::/64")), false)
        .await
        .unwrap();
    assert_eq!(
        third.pod_cidr6.map(|c| c.to_string()).as_deref(),
        Some("fd99::/64")
    );
    s.refuse_json(
        "another IPv6 prefix for an existing network",
        Method::POST,
        &gamma_path,
        &json!({"pod_cidr6": "fd98::/64"}),
        &[409],
        Some("pod_cidr6"),
    )
    .await;

    // Removed whole: both pools, the IPv6 routes, the addressed ports.
    let answer = send(s.req(Method::DELETE, &path)).await;
    assert_eq!(answer.status, 204, "{}", text(&answer));
    let pools: Vec<IpPool> = s.admin.list("/v1/ip_pools").await.unwrap();
    assert!(pools.iter().all(|p| p.bridge_id != Some(net.bridge.id)));
    assert!(!routes_of(s, provider.router_id)
        .await
        .contains(&(PODS6.into(), "fd70:6c65:7875:1::2".into())));
    let left: Vec<String> = keys(s.dump().await).intersection(&made).cloned().collect();
    assert!(
        left.is_empty(),
        "every key the dual-stack init made is gone: {left:?}"
    );
    // Its prefix is free again.
    let again = s.admin.init_tenant_network(tenant.id, None).await.unwrap();
    assert_eq!(
        again.pod_cidr6.map(|c| c.to_string()).as_deref(),
        Some(PODS6)
    );
}

pub(crate) async fn ipv6_is_added_to_an_ipv4_provider_and_never_changed(s: &TestServer) {
    let host = gateway_host(s).await;
    let provider = ensure_provider(&s.nsdb, &plan(host)).await.unwrap();
    assert_eq!(provider.ipv6, None);
    let old = new_tenant(s, "v4-only").await;
    let old_path = format!("/v1/tenants/{}/network", old.id);
    s.refuse_json(
        "an IPv6 prefix without an IPv6 plan",
        Method::POST,
        &old_path,
        &json!({"pod_cidr6": "fd99::/64"}),
        &[409],
        Some("pod_cidr6"),
    )
    .await;
    let v4_only = s.admin.init_tenant_network(old.id, None).await.unwrap();
    assert_eq!(v4_only.pod_cidr6, None);
    assert_eq!(v4_only.pool6, None);
    let old2 = new_tenant(s, "v4-only-2").await;
    s.admin.init_tenant_network(old2.id, None).await.unwrap();

    // Restarted with IPv6: the provider gains it in one batch.
    let upgraded = ensure_provider(&s.nsdb, &dual_stack(host)).await.unwrap();
    assert_eq!(upgraded.id, provider.id);
    assert!(upgraded.ipv6.is_some());
    let uplink = port(s, provider.uplink_port_id.unwrap()).await;
    assert_eq!(extra(&uplink), [UPLINK6]);
    assert!(routes_of(s, provider.router_id)
        .await
        .contains(&("::/0".into(), HOST6.into())));
    // Again: nothing more.
    ensure_provider(&s.nsdb, &dual_stack(host)).await.unwrap();
    assert_eq!(
        extra(&port(s, provider.uplink_port_id.unwrap()).await),
        [UPLINK6]
    );

    // The existing networks stay IPv4-only until init runs for them again,
    // which adds IPv6 in one batch: the same network, now dual-stack.
    assert_eq!(
        s.admin.tenant_network(old.id).await.unwrap(),
        Some(v4_only.clone())
    );
    let answer = send(s.req(Method::POST, &old_path)).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    let dual: api::TenantNetwork = serde_json::from_value(answer.json()).unwrap();
    assert_eq!(
        (dual.router.id, dual.bridge.id, dual.pool.id, dual.pod_cidr),
        (
            v4_only.router.id,
            v4_only.bridge.id,
            v4_only.pool.id,
            v4_only.pod_cidr
        )
    );
    assert_eq!(
        dual.pod_cidr6.map(|c| c.to_string()).as_deref(),
        Some(PODS6)
    );
    assert_eq!(extra(&dual.link_port), ["fd70:6c65:7875:1::2/126"]);
    assert_eq!(extra(&dual.router_port), ["fd70:6c65:7875:8000::1/64"]);
    let provider_side = port(s, dual.link_port.peer_id.unwrap()).await;
    assert_eq!(extra(&provider_side), ["fd70:6c65:7875:1::1/126"]);
    assert_eq!(
        routes_of(s, dual.router.id).await,
        [
            ("0.0.0.0/0".into(), "169.254.0.1".into()),
            ("::/0".into(), "fd70:6c65:7875:1::1".into()),
        ]
    );
    assert!(routes_of(s, provider.router_id)
        .await
        .contains(&(PODS6.into(), "fd70:6c65:7875:1::2".into())));
    // The host rules go in before the drop and the masquerade.
    let inbound = rules_of(s, dual.router.inbound_chain_id.unwrap()).await;
    let shape: Vec<(u32, RuleAction, Option<String>)> = inbound
        .iter()
        .map(|r| (r.position, r.action, r.src_cidr.map(|c| c.to_string())))
        .collect();
    assert_eq!(
        shape,
        [
            (1, RuleAction::Accept, None),
            (2, RuleAction::Accept, Some("100.64.0.1/32".into())),
            (3, RuleAction::Accept, Some(format!("{HOST6}/128"))),
            (4, RuleAction::Drop, None),
        ]
    );
    let outbound = rules_of(s, dual.router.outbound_chain_id.unwrap()).await;
    let shape: Vec<(u32, RuleAction, Option<String>)> = outbound
        .iter()
        .map(|r| (r.position, r.action, r.dst_cidr.map(|c| c.to_string())))
        .collect();
    assert_eq!(
        shape,
        [
            (1, RuleAction::Accept, Some("100.64.0.1/32".into())),
            (2, RuleAction::Accept, Some(format!("{HOST6}/128"))),
            (3, RuleAction::Masquerade, None),
        ]
    );
    // Again: nothing more; a requested prefix on another old network is
    // taken as given; one that differs from the network's is refused.
    let again = send(s.req(Method::POST, &old_path)).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        serde_json::from_value::<api::TenantNetwork>(again.json()).unwrap(),
        dual
    );
    let chosen = s
        .admin
        .init_tenant_network_on(old2.id, (None, Some("fd99:1::/64")), false)
        .await
        .unwrap();
    assert_eq!(
        chosen.pod_cidr6.map(|c| c.to_string()).as_deref(),
        Some("fd99:1::/64")
    );
    assert_eq!(extra(&chosen.link_port), ["fd70:6c65:7875:1::6/126"]);
    s.refuse_json(
        "another IPv6 prefix for a dual-stack network",
        Method::POST,
        &old_path,
        &json!({"pod_cidr6": "fd99::/64"}),
        &[409],
        Some("pod_cidr6"),
    )
    .await;
    let answer = send(s.req(Method::DELETE, &old_path)).await;
    assert_eq!(answer.status, 204, "{}", text(&answer));
    let new = new_tenant(s, "dual-new").await;
    let net = s.admin.init_tenant_network(new.id, None).await.unwrap();
    assert!(net.pod_cidr6.is_some(), "new networks are dual-stack");

    // A different IPv6 plan is refused; one without IPv6 keeps it.
    let mut other = dual_stack(host);
    if let Some(v6) = other.ipv6.as_mut() {
        v6.pod_cidr = "fd12::/48".parse().unwrap();
    }
    let refused = ensure_provider(&s.nsdb, &other)
        .await
        .expect_err("the IPv6 plan never changes");
    assert!(
        matches!(&refused, NsdbError::Rejected { field, .. } if field == "ipv6"),
        "{refused}"
    );
    assert!(refused.to_string().contains("fd12::/48"), "{refused}");
    let kept = ensure_provider(&s.nsdb, &plan(host)).await.unwrap();
    assert_eq!(kept.ipv6, upgraded.ipv6);
}
