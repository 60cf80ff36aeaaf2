//! Dual-stack and IPv6-only pod attachments through the API on both
//! backends: one lease per family from the bridge's pools (or the pools
//! the request names), both addresses allowed on the port, both leases
//! released together, and refused or failed requests leave nothing.

mod support;

use api::provision::{Attachment, AttachmentKey, AttachmentRequest};
use nsdb::{IpLease, IpPool};
use serde_json::json;
use support::api::*;
use uuid::Uuid;

fn key(container: &str) -> AttachmentKey {
    AttachmentKey {
        network: "plexus".into(),
        container_id: container.into(),
        ifname: "eth0".into(),
    }
}

/// A tenant (created by the first attachment) whose default network also
/// has the IPv6 pool `v6` (`fd00:…::/64`); returns the tenant's name, the
/// host and the IPv6 pool.
async fn dual_stack_tenant(s: &TestServer, v6: &str) -> (String, Uuid, IpPool) {
    provider_with_uplink(s).await;
    let host = s
        .admin
        .create_host(&format!("pods-{}", Uuid::new_v4()), "192.0.2.21")
        .await
        .unwrap();
    let tenant = s
        .admin
        .create_tenant(&format!("dual-{}", Uuid::new_v4()))
        .await
        .unwrap();
    let network = s.admin.init_tenant_network(tenant.id, None).await.unwrap();
    let pool = ipv6_pool(s, tenant.id, network.bridge.id, v6).await;
    (tenant.name, host.id, pool)
}

/// An IPv6 pool `cidr` on `bridge`, with the default gateway.
async fn ipv6_pool(s: &TestServer, tenant: Uuid, bridge: Uuid, cidr: &str) -> IpPool {
    s.admin
        .post(
            "/v1/ip_pools",
            &json!({
                "name": format!("v6-{}", Uuid::new_v4()),
                "cidr": cidr,
                "tenant_id": tenant,
                "bridge_id": bridge,
            }),
        )
        .await
        .unwrap()
}

/// The request for `key` (bound to its own host veth name).
fn request(key: &AttachmentKey, host: Uuid, tenant: &str, pools: &[&str]) -> AttachmentRequest {
    AttachmentRequest {
        host_id: host,
        interface_name: key.host_interface(),
        tenant: tenant.to_string(),
        bridge_id: None,
        mac: None,
        labels: Default::default(),
        pools: pools.iter().map(|p| p.to_string()).collect(),
    }
}

async fn leases(s: &TestServer, pool: Uuid) -> Vec<IpLease> {
    s.admin
        .list(&format!("/v1/ip_pools/{pool}/leases"))
        .await
        .unwrap()
}

/// Whether any pool holds a lease of `key`'s owner.
async fn leased_anywhere(s: &TestServer, key: &AttachmentKey) -> bool {
    let pools: Vec<IpPool> = s.admin.list("/v1/ip_pools").await.unwrap();
    for pool in pools {
        if leases(s, pool.id)
            .await
            .iter()
            .any(|l| l.owner == key.owner())
        {
            return true;
        }
    }
    false
}

async fn dual_stack_attachments_lease_one_address_per_family(s: &TestServer) {
    let (tenant, host, v6) = dual_stack_tenant(s, "fd00:a1::/64").await;
    assert_eq!(
        v6.gateway,
        Some("fd00:a1::1".parse().unwrap()),
        "an IPv6 pool's default gateway is its first host address"
    );
    let pod = key("dual-a");
    let attached: Attachment = s
        .admin
        .put_attachment(&pod, &request(&pod, host, &tenant, &[]))
        .await
        .unwrap();
    let families: Vec<bool> = attached
        .addresses
        .iter()
        .map(|a| a.address.addr().is_ipv6())
        .collect();
    assert_eq!(families, [false, true], "IPv4 first: {attached:?}");
    let ipv6 = &attached.addresses[1];
    assert_eq!(ipv6.pool_id, v6.id);
    assert!(v6.cidr.contains(&ipv6.address.addr()));
    assert_eq!(ipv6.address.prefix_len(), 64);
    assert_eq!(ipv6.gateway, v6.gateway);
    assert_eq!(attached.address, attached.addresses[0].address);
    assert_eq!(attached.pool_id, attached.addresses[0].pool_id);
    // The port may send from both (port security, the NDP/ARP responder).
    let allowed: Vec<_> = attached
        .port
        .allowed_addresses
        .iter()
        .map(|a| (a.mac, a.ip.addr()))
        .collect();
    let mac = attached.port.mac;
    assert_eq!(
        allowed,
        [
            (mac, attached.addresses[0].address.addr()),
            (mac, ipv6.address.addr())
        ]
    );
    // Asking again, reading and listing answer the same attachment, once.
    let again = s
        .admin
        .put_attachment(&pod, &request(&pod, host, &tenant, &[]))
        .await
        .unwrap();
    assert_eq!(again.addresses, attached.addresses);
    let read = s.admin.attachment(&pod).await.unwrap().unwrap();
    assert_eq!(read.addresses, attached.addresses);
    let listed = s
        .admin
        .attachments(Some(host), Some("plexus"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "a dual-stack attachment is listed once");
    // Deleting releases both leases; a new attachment of the same key gets
    // the same (free again) addresses.
    s.admin.delete_attachment(&pod).await.unwrap();
    assert!(s.admin.attachment(&pod).await.unwrap().is_none());
    assert!(leases(s, v6.id).await.is_empty());
    assert!(leases(s, attached.pool_id).await.is_empty());
    let back = s
        .admin
        .put_attachment(&pod, &request(&pod, host, &tenant, &[]))
        .await
        .unwrap();
    assert_eq!(back.addresses, attached.addresses);
    s.admin.delete_attachment(&pod).await.unwrap();
    assert!(!leased_anywhere(s, &pod).await);
}

async fn named_pools_pick_the_families(s: &TestServer) {
    let (tenant, host, v6) = dual_stack_tenant(s, "fd00:a2::/64").await;
    // Only the IPv6 pool, by name: an IPv6-only pod on a dual-stack bridge.
    let only6 = key("only6");
    let attached = s
        .admin
        .put_attachment(&only6, &request(&only6, host, &tenant, &[&v6.name]))
        .await
        .unwrap();
    assert_eq!(attached.addresses.len(), 1, "{attached:?}");
    assert_eq!(
        attached.address.addr(),
        attached.addresses[0].address.addr()
    );
    assert!(attached.address.addr().is_ipv6());
    assert_eq!(attached.port.allowed_addresses.len(), 1);
    // Both, by id and name in any order: IPv4 first.
    let v4_pool = s
        .admin
        .put_attachment(&key("probe"), &request(&key("probe"), host, &tenant, &[]))
        .await
        .unwrap()
        .pool_id;
    s.admin.delete_attachment(&key("probe")).await.unwrap();
    let v4_name: IpPool = s
        .admin
        .get(&format!("/v1/ip_pools/{v4_pool}"))
        .await
        .unwrap();
    let both = key("both");
    let v6_id = v6.id.to_string();
    let attached = s
        .admin
        .put_attachment(
            &both,
            &request(&both, host, &tenant, &[&v6_id, &v4_name.name]),
        )
        .await
        .unwrap();
    let pools: Vec<Uuid> = attached.addresses.iter().map(|a| a.pool_id).collect();
    assert_eq!(pools, [v4_pool, v6.id]);
    for done in [&only6, &both] {
        s.admin.delete_attachment(done).await.unwrap();
        assert!(!leased_anywhere(s, done).await);
    }
}

async fn refused_pools_change_nothing(s: &TestServer) {
    let (tenant, host, v6) = dual_stack_tenant(s, "fd00:a3::/64").await;
    let (_, _, other_v6) = dual_stack_tenant(s, "fd00:a4::/64").await;
    let tenant_id = s
        .admin
        .list::<nsdb::Tenant>("/v1/tenants")
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == tenant)
        .unwrap()
        .id;
    let bridge = v6.bridge_id.unwrap();
    let second_v6 = ipv6_pool(s, tenant_id, bridge, "fd00:a5::/64").await;
    let loose: IpPool = s
        .admin
        .create_ip_pool(&format!("loose-{}", Uuid::new_v4()), "fd00:a6::/64")
        .await
        .unwrap();
    let pod = key("refused");
    for (pools, field, status) in [
        (vec!["no-such-pool".to_string()], "pools", 422),
        (vec![v6.name.clone(), second_v6.name.clone()], "pools", 400),
        (vec![other_v6.name.clone()], "pools", 400),
        (vec![loose.name.clone()], "pools", 400),
    ] {
        let names: Vec<&str> = pools.iter().map(String::as_str).collect();
        let refused = s
            .admin
            .put_attachment(&pod, &request(&pod, host, &tenant, &names))
            .await;
        let problem = problem_of(refused);
        assert_eq!(
            problem.field.as_deref(),
            Some(field),
            "{pools:?}: {problem:?}"
        );
        assert_eq!(problem.status, status, "{pools:?}: {problem:?}");
        assert!(s.admin.attachment(&pod).await.unwrap().is_none());
        assert!(!leased_anywhere(s, &pod).await, "{pools:?} leased");
    }
}

async fn an_exhausted_family_leases_neither(s: &TestServer) {
    provider_with_uplink(s).await;
    let host = s
        .admin
        .create_host(&format!("pods-{}", Uuid::new_v4()), "192.0.2.22")
        .await
        .unwrap();
    let tenant = s
        .admin
        .create_tenant(&format!("full-{}", Uuid::new_v4()))
        .await
        .unwrap();
    let network = s.admin.init_tenant_network(tenant.id, None).await.unwrap();
    // fd00:a7::/126 has ::1 (the gateway) and ::2 to give: one pod.
    let tiny = ipv6_pool(s, tenant.id, network.bridge.id, "fd00:a7::/126").await;
    s.admin.allocate_lease(tiny.id, "someone").await.unwrap();
    let pod = key("starved");
    let refused = s
        .admin
        .put_attachment(&pod, &request(&pod, host.id, &tenant.name, &[]))
        .await;
    let problem = problem_of(refused);
    assert_eq!(problem.status, 409, "{problem:?}");
    assert!(s.admin.attachment(&pod).await.unwrap().is_none());
    assert!(
        !leased_anywhere(s, &pod).await,
        "the IPv4 lease was taken although the IPv6 pool is full"
    );
    let port: Result<nsdb::Port, _> = s.admin.get(&format!("/v1/ports/{}", pod.port_id())).await;
    assert_eq!(problem_of(port).status, 404);
}

async fn an_ipv6_only_bridge_gives_ipv6_only_pods(s: &TestServer) {
    let host = s
        .admin
        .create_host(&format!("pods-{}", Uuid::new_v4()), "192.0.2.23")
        .await
        .unwrap();
    let tenant = s
        .admin
        .create_tenant(&format!("six-{}", Uuid::new_v4()))
        .await
        .unwrap();
    let bridge = s.admin.create_bridge(tenant.id, "six").await.unwrap();
    let pool = ipv6_pool(s, tenant.id, bridge.id, "fd00:a8::/64").await;
    let pod = key("six");
    let mut wanted = request(&pod, host.id, &tenant.name, &[]);
    wanted.bridge_id = Some(bridge.id);
    let attached = s.admin.put_attachment(&pod, &wanted).await.unwrap();
    assert_eq!(attached.bridge_id, bridge.id);
    assert_eq!(attached.addresses.len(), 1);
    assert_eq!(attached.pool_id, pool.id);
    assert!(attached.address.addr().is_ipv6());
    assert_eq!(attached.gateway, Some("fd00:a8::1".parse().unwrap()));
    s.admin.delete_attachment(&pod).await.unwrap();
    assert!(leases(s, pool.id).await.is_empty());
}

both_backends!(
    dual_stack_attachments_lease_one_address_per_family,
    named_pools_pick_the_families,
    refused_pools_change_nothing,
    an_exhausted_family_leases_neither,
    an_ipv6_only_bridge_gives_ipv6_only_pods,
);
