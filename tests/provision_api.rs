//! Provisioning through the API on both backends: the provider router,
//! tenant networks (idempotent, concurrent, all-or-nothing; dual-stack in
//! `provision_api/dual_stack.rs`), floating IPs, rule moves and the
//! refusal of jump loops.

mod support;

#[path = "provision_api/dual_stack.rs"]
mod dual_stack;
use dual_stack::*;

use std::collections::BTreeSet;

use api::provision::{ensure_provider, ProviderPlan, UplinkPlan};
use nsdb::{Chain, FloatingIp, IpPool, Port, Provider, Route, Router, Rule, RuleAction, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use support::api::*;
use uuid::Uuid;

fn plan(host: Uuid) -> ProviderPlan {
    ProviderPlan {
        uplink: Some(UplinkPlan {
            host_id: host,
            interface: "plexus0".into(),
            address: "100.64.0.2/24".parse().unwrap(),
            gateway: "100.64.0.1".parse().unwrap(),
        }),
        ..ProviderPlan::default()
    }
}

async fn provider(s: &TestServer) -> Provider {
    let host = s
        .admin
        .create_host(&format!("gw-{}", Uuid::new_v4()), "192.0.2.1")
        .await
        .unwrap();
    ensure_provider(&s.nsdb, &plan(host.id)).await.unwrap()
}

async fn new_tenant(s: &TestServer, name: &str) -> Tenant {
    s.admin.create_tenant(name).await.unwrap()
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

async fn provider_is_created_once(s: &TestServer) {
    let first = provider(s).await;
    let again = ensure_provider(&s.nsdb, &plan(Uuid::nil()))
        .await
        .expect_err("a plan naming an unknown host cannot move the uplink");
    assert!(again.to_string().contains("host"), "{again}");
    let other = s.admin.create_host("gw-b", "192.0.2.2").await.unwrap();
    let second = ensure_provider(&s.nsdb, &plan(other.id)).await.unwrap();
    assert_eq!(first.id, second.id, "one provider per deployment");
    let shown: Provider = s.admin.get("/v1/provider").await.unwrap();
    assert_eq!(shown.id, first.id);
    let uplink: Port = s
        .admin
        .get(&format!("/v1/ports/{}", first.uplink_port_id.unwrap()))
        .await
        .unwrap();
    assert_eq!(
        uplink.host_id,
        Some(other.id),
        "the uplink follows the plan's host"
    );
    assert_eq!(uplink.interface_name.as_deref(), Some("plexus0"));
    let masquerade = rules_of(s, uplink.outbound_chain_id.unwrap()).await;
    assert_eq!(masquerade.len(), 1);
    assert_eq!(masquerade[0].action, RuleAction::Masquerade);
    let routes: Vec<Route> = s
        .admin
        .list(&format!("/v1/routers/{}/routes", first.router_id))
        .await
        .unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].dst.to_string(), "0.0.0.0/0");
    assert_eq!(
        routes[0].next_hop_gateway.map(|g| g.to_string()).as_deref(),
        Some("100.64.0.1")
    );
    let tenants: Vec<Tenant> = s.admin.list("/v1/tenants").await.unwrap();
    assert_eq!(tenants.iter().filter(|t| t.name == "provider").count(), 1);
}

async fn tenant_network_is_complete_and_idempotent(s: &TestServer) {
    let provider = provider(s).await;
    let tenant = new_tenant(s, "acme").await;
    let path = format!("/v1/tenants/{}/network", tenant.id);
    let answer = send(s.req(Method::POST, &path)).await;
    assert_eq!(answer.status, 201, "{}", text(&answer));
    let created: api::TenantNetwork = serde_json::from_value(answer.json()).unwrap();
    let answer = send(s.json(Method::POST, &path, &json!({}))).await;
    assert_eq!(
        answer.status,
        200,
        "the second call finds it: {}",
        text(&answer)
    );
    let again: api::TenantNetwork = serde_json::from_value(answer.json()).unwrap();
    assert_eq!(
        (again.router.id, again.bridge.id, again.pool.id),
        (created.router.id, created.bridge.id, created.pool.id)
    );
    assert_eq!(
        s.admin.tenant_network(tenant.id).await.unwrap(),
        Some(again.clone())
    );
    assert_eq!(created.pod_cidr.to_string(), "10.128.0.0/24");
    assert_eq!(created.gateway.to_string(), "10.128.0.1");
    assert_eq!(created.mtu, 1450);
    assert_eq!(created.pool.bridge_id, Some(created.bridge.id));
    assert_eq!(
        created
            .router_port
            .address
            .map(|a| a.to_string())
            .as_deref(),
        Some("10.128.0.1/24")
    );
    // Linked: gateway port ↔ bridge, link port ↔ provider router.
    let bridge_side: Port = s
        .admin
        .get(&format!(
            "/v1/ports/{}",
            created.router_port.peer_id.unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(bridge_side.device_id, created.bridge.id);
    let provider_side: Port = s
        .admin
        .get(&format!("/v1/ports/{}", created.link_port.peer_id.unwrap()))
        .await
        .unwrap();
    assert_eq!(provider_side.device_id, provider.router_id);
    assert_eq!(
        created.link_port.address.map(|a| a.to_string()).as_deref(),
        Some("169.254.0.2/30")
    );
    // Chains: return traffic, the host, drop new from outside; masquerade out.
    let inbound = rules_of(s, created.router.inbound_chain_id.unwrap()).await;
    let actions: Vec<_> = inbound.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        vec![RuleAction::Accept, RuleAction::Accept, RuleAction::Drop]
    );
    assert_eq!(inbound[2].in_port_ids, vec![created.link_port.id]);
    // Out: traffic to the host (the uplink gateway) untranslated, then masquerade.
    let outbound = rules_of(s, created.router.outbound_chain_id.unwrap()).await;
    let actions: Vec<_> = outbound.iter().map(|r| r.action).collect();
    assert_eq!(actions, vec![RuleAction::Accept, RuleAction::Masquerade]);
    assert_eq!(
        outbound[0].dst_cidr.map(|d| d.to_string()).as_deref(),
        Some("100.64.0.1/32")
    );
    for rule in &outbound {
        assert_eq!(rule.out_port_ids, vec![created.link_port.id]);
    }
    assert!(!created.nat_only);
    // Routes both ways.
    let tenant_routes: Vec<Route> = s
        .admin
        .list(&format!("/v1/routers/{}/routes", created.router.id))
        .await
        .unwrap();
    assert_eq!(tenant_routes.len(), 1);
    assert_eq!(tenant_routes[0].dst.to_string(), "0.0.0.0/0");
    let provider_routes: Vec<Route> = s
        .admin
        .list(&format!("/v1/routers/{}/routes", provider.router_id))
        .await
        .unwrap();
    assert!(provider_routes
        .iter()
        .any(|r| r.dst == created.pod_cidr && r.next_hop_port_id == Some(provider_side.id)));
    // A second tenant gets the next subnet and link.
    let beta = new_tenant(s, "beta").await;
    let second = s.admin.init_tenant_network(beta.id, None).await.unwrap();
    assert_eq!(second.pod_cidr.to_string(), "10.128.1.0/24");
    assert_eq!(
        second.link_port.address.map(|a| a.to_string()).as_deref(),
        Some("169.254.0.6/30")
    );
    // A tenant token reads its own network, but cannot initialise one.
    let token = token(s, &tenant.id.to_string()).await;
    let own: Option<api::TenantNetwork> = s.client(&token).tenant_network(tenant.id).await.unwrap();
    assert_eq!(own.map(|n| n.router.id), Some(created.router.id));
    let refused = send(s.as_token(&token, Method::POST, &path)).await;
    assert_eq!(refused.status, 403);
    let hidden = send(s.as_token(
        &token,
        Method::GET,
        &format!("/v1/tenants/{}/network", beta.id),
    ))
    .await;
    assert_eq!(hidden.status, 404);
}

async fn concurrent_inits_make_one_network_per_tenant(s: &TestServer) {
    let _ = provider(s).await;
    let mut tenants = Vec::new();
    for n in 0..6 {
        tenants.push(new_tenant(s, &format!("c{n}")).await);
    }
    let mut calls = Vec::new();
    for tenant in &tenants {
        for _ in 0..3 {
            let client = s.admin.clone();
            let id = tenant.id;
            calls.push(tokio::spawn(async move {
                client.init_tenant_network(id, None).await.unwrap()
            }));
        }
    }
    let mut by_tenant = std::collections::HashMap::new();
    for call in calls {
        let network = call.await.unwrap();
        let router = *by_tenant
            .entry(network.tenant_id)
            .or_insert(network.router.id);
        assert_eq!(
            router, network.router.id,
            "every call sees the same network"
        );
    }
    let routers: Vec<Router> = s.admin.list("/v1/routers").await.unwrap();
    for tenant in &tenants {
        assert_eq!(
            routers.iter().filter(|r| r.tenant_id == tenant.id).count(),
            1,
            "exactly one router for {}",
            tenant.name
        );
    }
    let pools: Vec<IpPool> = s.admin.list("/v1/ip_pools").await.unwrap();
    let cidrs: BTreeSet<_> = pools.iter().map(|p| p.cidr).collect();
    assert_eq!(
        cidrs.len(),
        tenants.len(),
        "distinct pod subnets: {cidrs:?}"
    );
}

async fn failed_inits_change_nothing(s: &TestServer) {
    let tenant = new_tenant(s, "nope").await;
    let path = format!("/v1/tenants/{}/network", tenant.id);
    s.refuse(
        "init without a provider",
        s.req(Method::POST, &path),
        &[409],
        None,
    )
    .await;
    let _ = provider(s).await;
    s.refuse(
        "a pod subnet with host bits",
        s.json(Method::POST, &path, &json!({"pod_cidr": "10.9.0.1/24"})),
        &[400],
        Some("pod_cidr"),
    )
    .await;
    s.refuse(
        "an unknown field",
        s.json(Method::POST, &path, &json!({"pod_subnet": "10.9.0.0/24"})),
        &[400],
        None,
    )
    .await;
    // A router of the tenant already holds the network's name: the whole
    // batch is refused, nothing is left behind.
    s.admin.create_router(tenant.id, "default").await.unwrap();
    s.refuse("a name clash", s.req(Method::POST, &path), &[409], None)
        .await;
    s.refuse(
        "setting network by PATCH",
        s.json(
            Method::PATCH,
            &format!("/v1/tenants/{}", tenant.id),
            &json!({"network": {"router_id": Uuid::new_v4(), "bridge_id": Uuid::new_v4()}}),
        ),
        &[400],
        Some("network"),
    )
    .await;
}

async fn deleting_a_network_leaves_no_orphans(s: &TestServer) {
    let _ = provider(s).await;
    let tenant = new_tenant(s, "gone").await;
    let keys = |entries: Vec<nsdb::kv::KvEntry>| -> BTreeSet<String> {
        entries.into_iter().map(|e| e.key).collect()
    };
    let before = keys(s.dump().await);
    let network = s.admin.init_tenant_network(tenant.id, None).await.unwrap();
    // A pod's port keeps the bridge in use: the delete is refused whole.
    let pod = s
        .admin
        .create_bridge_port(network.bridge.id, json!({}))
        .await
        .unwrap();
    let path = format!("/v1/tenants/{}/network", tenant.id);
    s.refuse(
        "deleting a network in use",
        s.req(Method::DELETE, &path),
        &[409],
        None,
    )
    .await;
    s.admin
        .delete(&format!("/v1/ports/{}", pod.id), None)
        .await
        .unwrap();
    let answer = send(s.req(Method::DELETE, &path)).await;
    assert_eq!(answer.status, 204, "{}", text(&answer));
    assert_eq!(
        keys(s.dump().await),
        before,
        "every key the init made is gone"
    );
    assert_eq!(send(s.req(Method::GET, &path)).await.status, 404);
    // And it can be made again.
    s.admin.init_tenant_network(tenant.id, None).await.unwrap();
}

async fn jump_loops_are_refused_naming_the_cycle(s: &TestServer) {
    let tenant = new_tenant(s, "loops").await;
    let chain = |name: &'static str| {
        let client = s.admin.clone();
        async move { client.create_chain(tenant.id, name).await.unwrap() }
    };
    let (a, b, c): (Chain, Chain, Chain) = (chain("a").await, chain("b").await, chain("c").await);
    let jump = |to: Uuid| json!({"action": "jump", "jump_chain_id": to});
    s.admin.create_rule(a.id, jump(b.id)).await.unwrap();
    s.admin.create_rule(b.id, jump(c.id)).await.unwrap();
    let problem = s
        .refuse(
            "closing a loop",
            s.json(
                Method::POST,
                &format!("/v1/chains/{}/rules", c.id),
                &jump(a.id),
            ),
            &[400],
            Some("jump_chain_id"),
        )
        .await;
    let detail = problem.detail;
    let cycle = format!("c ({}) → a ({}) → b ({}) → c ({})", c.id, a.id, b.id, c.id);
    assert!(detail.contains(&cycle), "{detail}");
    s.refuse(
        "jumping to itself",
        s.json(
            Method::POST,
            &format!("/v1/chains/{}/rules", a.id),
            &jump(a.id),
        ),
        &[400],
        Some("jump_chain_id"),
    )
    .await;
    // A jump that is not a loop is fine; a PATCH that would loop is not.
    let ok = s
        .admin
        .create_rule(c.id, json!({"action": "accept"}))
        .await
        .unwrap();
    s.refuse(
        "patching into a loop",
        s.json(Method::PATCH, &format!("/v1/rules/{}", ok.id), &jump(b.id)),
        &[400],
        Some("jump_chain_id"),
    )
    .await;
}

async fn rules_move_by_position(s: &TestServer) {
    let tenant = new_tenant(s, "moves").await;
    let chain = s.admin.create_chain(tenant.id, "m").await.unwrap();
    let mut ids = Vec::new();
    for action in ["accept", "drop", "reject"] {
        ids.push(
            s.admin
                .create_rule(chain.id, json!({"action": action}))
                .await
                .unwrap()
                .id,
        );
    }
    let moved: Rule = s
        .admin
        .put(
            &format!("/v1/rules/{}/position", ids[2]),
            &json!({"position": 1}),
        )
        .await
        .unwrap();
    assert_eq!(moved.position, 1);
    let order: Vec<(Uuid, u32)> = rules_of(s, chain.id)
        .await
        .iter()
        .map(|r| (r.id, r.position))
        .collect();
    assert_eq!(order, vec![(ids[2], 1), (ids[0], 2), (ids[1], 3)]);
    s.refuse(
        "a bad position",
        s.json(
            Method::PUT,
            &format!("/v1/rules/{}/position", ids[0]),
            &json!({"position": -1}),
        ),
        &[400],
        Some("position"),
    )
    .await;
}

async fn floating_ips_install_and_remove_their_rules(s: &TestServer) {
    let provider = provider(s).await;
    let tenant = new_tenant(s, "fip").await;
    let network = s.admin.init_tenant_network(tenant.id, None).await.unwrap();
    let fip = s
        .admin
        .create_floating_ip(tenant.id, "10.128.0.5", None)
        .await
        .unwrap();
    assert_eq!(fip.floating_address.to_string(), "100.64.1.1");
    assert_eq!(fip.router_id, network.router.id);
    let inbound = rules_of(s, network.router.inbound_chain_id.unwrap()).await;
    assert_eq!(inbound.len(), 4);
    assert_eq!(
        inbound[1].id, fip.dnat_rule_id,
        "right after the return-traffic rule"
    );
    assert_eq!(inbound[1].action, RuleAction::Dnat);
    assert_eq!(inbound[3].action, RuleAction::Drop, "the drop stays last");
    let outbound = rules_of(s, network.router.outbound_chain_id.unwrap()).await;
    assert_eq!(
        outbound[0].action,
        RuleAction::Accept,
        "the host stays first"
    );
    assert_eq!(outbound[1].id, fip.snat_rule_id, "ahead of the masquerade");
    assert_eq!(outbound[2].action, RuleAction::Masquerade);
    let route: Route = s
        .admin
        .get(&format!("/v1/routes/{}", fip.route_id))
        .await
        .unwrap();
    assert_eq!(route.router_id, provider.router_id);
    assert_eq!(route.dst.to_string(), "100.64.1.1/32");
    // Addresses are unique; the next one is allocated; bad input changes nothing.
    let second = s
        .admin
        .create_floating_ip(tenant.id, "10.128.0.6", None)
        .await
        .unwrap();
    assert_eq!(second.floating_address.to_string(), "100.64.1.2");
    s.refuse(
        "a taken floating address",
        s.json(
            Method::POST,
            "/v1/floating_ips",
            &json!({"tenant_id": tenant.id, "fixed_address": "10.128.0.7", "floating_address": "100.64.1.1"}),
        ),
        &[409],
        Some("floating_address"),
    )
    .await;
    s.refuse(
        "a second floating IP for one pod",
        s.json(
            Method::POST,
            "/v1/floating_ips",
            &json!({"tenant_id": tenant.id, "fixed_address": "10.128.0.5"}),
        ),
        &[409],
        None,
    )
    .await;
    s.refuse(
        "an address outside the external range",
        s.json(
            Method::POST,
            "/v1/floating_ips",
            &json!({"tenant_id": tenant.id, "fixed_address": "10.128.0.7", "floating_address": "8.8.8.8"}),
        ),
        &[422],
        Some("floating_address"),
    )
    .await;
    s.refuse(
        "deleting a floating IP's rule alone",
        s.req(Method::DELETE, &format!("/v1/rules/{}", fip.dnat_rule_id)),
        &[409],
        None,
    )
    .await;
    let listed: Vec<FloatingIp> = s
        .admin
        .list(&format!("/v1/floating_ips?tenant_id={}", tenant.id))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    s.admin
        .delete(&format!("/v1/floating_ips/{}", fip.id), None)
        .await
        .unwrap();
    let inbound = rules_of(s, network.router.inbound_chain_id.unwrap()).await;
    assert!(inbound.iter().all(|r| r.id != fip.dnat_rule_id));
    let gone = send(s.req(Method::GET, &format!("/v1/routes/{}", fip.route_id))).await;
    assert_eq!(gone.status, 404);
    let _: Value = s
        .admin
        .get(&format!("/v1/floating_ips/{}", second.id))
        .await
        .unwrap();
}

/// Pods get the provider's MTU, lowered to what the tunnel between the
/// registered hosts carries.
async fn pod_mtu_fits_the_smallest_underlay(s: &TestServer) {
    provider(s).await;
    let small: nsdb::Host = s
        .admin
        .post(
            "/v1/hosts",
            &json!({"name": format!("small-{}", Uuid::new_v4()), "tunnel_ip": "192.0.2.9", "underlay_mtu": 1400}),
        )
        .await
        .unwrap();
    assert_eq!(small.underlay_mtu, 1400);
    let key = api::provision::AttachmentKey {
        network: "plexus".into(),
        container_id: Uuid::new_v4().to_string(),
        ifname: "eth0".into(),
    };
    let request = api::provision::AttachmentRequest {
        host_id: small.id,
        interface_name: "pxmtu0".into(),
        tenant: format!("mtu-{}", Uuid::new_v4()),
        bridge_id: None,
        mac: None,
        pools: Vec::new(),
        labels: Default::default(),
    };
    let attachment = s.admin.put_attachment(&key, &request).await.unwrap();
    assert_eq!(attachment.mtu, 1350, "1400-byte underlay minus VXLAN's 50");
    let refused: Result<nsdb::Host, _> = s
        .admin
        .post(
            "/v1/hosts",
            &json!({"name": "tiny", "tunnel_ip": "192.0.2.10", "underlay_mtu": 600}),
        )
        .await;
    assert_eq!(problem_of(refused).field.as_deref(), Some("underlay_mtu"));
}

/// An attachment's port is created with the request's labels (what the
/// CNI's Kubernetes mode sets); invalid labels are refused before anything
/// is written; asking again answers the port as it is.
async fn attachment_ports_carry_their_labels(s: &TestServer) {
    provider(s).await;
    let host = s
        .admin
        .create_host(&format!("pods-{}", Uuid::new_v4()), "192.0.2.11")
        .await
        .unwrap();
    let tenant = format!("labels-{}", Uuid::new_v4());
    let key = |container: &str| api::provision::AttachmentKey {
        network: "plexus".into(),
        container_id: container.into(),
        ifname: "eth0".into(),
    };
    let request = |labels: &[(&str, &str)]| api::provision::AttachmentRequest {
        host_id: host.id,
        interface_name: "pxlbl0".into(),
        tenant: tenant.clone(),
        bridge_id: None,
        mac: None,
        pools: Vec::new(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let wanted = [("plexus.io/namespace", "x"), ("plexus.io/pod", "a")];
    let attached = s
        .admin
        .put_attachment(&key("labelled"), &request(&wanted))
        .await
        .unwrap();
    let port: Port = s
        .admin
        .get(&format!("/v1/ports/{}", attached.port.id))
        .await
        .unwrap();
    assert_eq!(port.labels, request(&wanted).labels);
    assert_eq!(attached.port.labels, port.labels);
    let again = s
        .admin
        .put_attachment(&key("labelled"), &request(&[("other", "y")]))
        .await
        .unwrap();
    assert_eq!(
        again.port.labels, port.labels,
        "an existing port keeps its labels"
    );
    let refused = s
        .admin
        .put_attachment(&key("badly"), &request(&[("plexus.io/pod", "not a value")]))
        .await;
    let problem = problem_of(refused);
    assert!(
        problem.detail.contains("not a valid label value"),
        "{problem:?}"
    );
    assert!(s.admin.attachment(&key("badly")).await.unwrap().is_none());
}

both_backends!(
    attachment_ports_carry_their_labels,
    provider_is_created_once,
    tenant_network_is_complete_and_idempotent,
    concurrent_inits_make_one_network_per_tenant,
    failed_inits_change_nothing,
    deleting_a_network_leaves_no_orphans,
    jump_loops_are_refused_naming_the_cycle,
    rules_move_by_position,
    floating_ips_install_and_remove_their_rules,
    pod_mtu_fits_the_smallest_underlay,
    dual_stack_networks_are_made_read_and_removed_whole,
    ipv6_is_added_to_an_ipv4_provider_and_never_changed,
);
