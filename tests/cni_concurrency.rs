//! End-to-end: 100 `plexus-cni` ADDs at once across tenants that those
//! very ADDs create (and one dual-stack tenant that exists), then 100 DELs
//! at once, leaving the NSDB and the host exactly as before. Needs root.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::json;
use support::cni::{address_of, sandbox, Network};
use support::netns::unique;
use support::plexus::Plexus;

/// Pods, and tenants they spread over.
const PODS: usize = 100;
const TENANTS: usize = 4;

/// What must be the same before and after (the tenant networks the ADDs
/// created stay): the bound ports, every lease of every pool, and the
/// plugin's veths of `net`.
async fn inventory(
    client: &api::Client,
    net: &Network,
) -> (HashSet<uuid::Uuid>, Vec<nsdb::IpLease>, Vec<String>) {
    let ports: Vec<nsdb::Port> = client.list("/v1/ports").await.unwrap();
    let pools: Vec<nsdb::IpPool> = client.list("/v1/ip_pools").await.unwrap();
    let mut leases = Vec::new();
    for pool in pools {
        leases.extend(
            client
                .list::<nsdb::IpLease>(&format!("/v1/ip_pools/{}/leases", pool.id))
                .await
                .unwrap(),
        );
    }
    let bound = ports.into_iter().filter(|p| p.host_id.is_some());
    (bound.map(|p| p.id).collect(), leases, net.veths())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_adds_then_dels_leak_nothing() {
    let plexus = Plexus::start().await;
    let client = plexus.client();
    let hosts: Vec<nsdb::Host> = client.list("/v1/hosts").await.unwrap();
    let net = Network::new(&plexus.url, &plexus.token, &hosts[0].name);
    let conf = net.with(json!({"active_timeout_ms": 60_000}));
    // One tenant exists already (with its network, dual-stack: an IPv6
    // pool beside the IPv4 one); the others are new.
    let namespaces: Vec<String> = (0..TENANTS).map(|_| unique("k8s")).collect();
    let first = client.create_tenant(&namespaces[0]).await.unwrap();
    let first_net = client.init_tenant_network(first.id, None).await.unwrap();
    let _: nsdb::IpPool = client
        .post(
            "/v1/ip_pools",
            &json!({"name": unique("v6"), "cidr": "fd00:c0::/64", "tenant_id": first.id,
                    "bridge_id": first_net.bridge.id}),
        )
        .await
        .unwrap();
    let before = inventory(&client, &net).await;
    let pods: Vec<_> = (0..PODS)
        .map(|i| {
            let id = format!("par{i}");
            (sandbox(&net, &id), id)
        })
        .collect();
    let started = Instant::now();
    let results: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, (pod, id))| {
                let (net, conf, namespaces) = (&net, &conf, &namespaces);
                scope.spawn(move || {
                    let args = format!("K8S_POD_NAMESPACE={}", namespaces[i % TENANTS]);
                    let answer = net.call("ADD", id, "eth0", Some(&pod.netns), &args, conf);
                    answer.result().clone()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    println!("{PODS} parallel ADDs over {TENANTS} tenants took {took:?}");
    assert_eq!(net.veths().len(), PODS, "a veth per pod, found by alias");
    let addresses: HashSet<String> = results.iter().map(address_of).collect();
    assert_eq!(addresses.len(), PODS, "addresses were handed out twice");
    // The first tenant's pods are dual-stack, with IPv6 addresses of their own.
    let ipv6: HashSet<&str> = results
        .iter()
        .step_by(TENANTS)
        .map(|r| r["ips"][1]["address"].as_str().expect("an IPv6 address"))
        .collect();
    assert_eq!(
        ipv6.len(),
        PODS / TENANTS,
        "IPv6 addresses were handed out twice"
    );
    assert!(ipv6.iter().all(|a| a.starts_with("fd00:c0::")), "{ipv6:?}");
    // Exactly one network per tenant.
    let tenants: Vec<nsdb::Tenant> = client.list("/v1/tenants").await.unwrap();
    let routers: Vec<nsdb::Router> = client.list("/v1/routers").await.unwrap();
    let pools: Vec<nsdb::IpPool> = client.list("/v1/ip_pools").await.unwrap();
    for name in &namespaces {
        let matching: Vec<_> = tenants.iter().filter(|t| &t.name == name).collect();
        assert_eq!(matching.len(), 1, "tenant {name} exists once");
        let id = matching[0].id;
        assert_eq!(routers.iter().filter(|r| r.tenant_id == id).count(), 1);
        let own = if id == first.id { 2 } else { 1 };
        assert_eq!(
            pools.iter().filter(|p| p.tenant_id == Some(id)).count(),
            own
        );
    }
    // Every pod reaches its gateway.
    let mut per_gateway: HashMap<String, usize> = HashMap::new();
    for ((pod, _), result) in pods.iter().zip(&results) {
        let gateway = result["ips"][0]["gateway"].as_str().unwrap();
        *per_gateway.entry(gateway.to_string()).or_default() += 1;
        let (got, text) = pod.ping(gateway, 1, &[]);
        assert_eq!(got, 1, "{} to {gateway}: {text}", pod.netns);
    }
    assert_eq!(per_gateway.len(), TENANTS);
    // The dual-stack pods reach each other over IPv6.
    let (first_pod, _) = &pods[0];
    for ((pod, _), result) in pods.iter().zip(&results).step_by(TENANTS).skip(1) {
        let address = result["ips"][1]["address"].as_str().unwrap();
        let address = address.split('/').next().unwrap();
        let (got, text) = first_pod.ping(address, 1, &["-6", "-W", "2"]);
        assert_eq!(got, 1, "{} to {address}: {text}", pod.netns);
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (pod, id) in &pods {
            let (net, conf) = (&net, &conf);
            scope.spawn(move || {
                let answer = net.call("DEL", id, "eth0", Some(&pod.netns), "", conf);
                assert!(answer.ok, "{} {}", answer.json, answer.stderr);
            });
        }
    });
    println!("{PODS} parallel DELs took {:?}", started.elapsed());
    let after = inventory(&client, &net).await;
    assert_eq!(after.0, before.0, "ports or bindings leaked");
    assert_eq!(after.1, before.1, "leases leaked");
    assert_eq!(after.2, before.2, "veths leaked");
    assert!(client.attachments(None, None).await.unwrap().is_empty());
}
