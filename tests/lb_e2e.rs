//! The L4 load balancer with real packets: pods behind a VIP on their
//! tenant router, on one host (`plexus serve`) and across hosts (the
//! cluster harness). Connections spread by weight, dead members stop
//! getting new connections within the monitor's detection time and come
//! back, affinity holds, a member reaches its own VIP, UDP VIPs answer
//! from the VIP, and a VIP without members refuses at once.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use support::cluster::{reachable, Cluster};
use support::lb::{backend, connect_many, wait_health};
use support::netns::unique;
use support::world::{peer_of, tcp_probe, udp_probe, udp_server, Deployment};

const VIP: &str = "10.96.0.10";

/// Creates a load balancer on `router` with one pool (`algorithm`) of
/// `members` (address, weight) on port 8080 and a TCP VIP on port 80;
/// returns the VIP's id, the pool's id and the members' ids.
async fn balance(
    client: &api::Client,
    router: Uuid,
    algorithm: &str,
    members: &[(String, u16)],
) -> (Uuid, Uuid, Vec<Uuid>) {
    let lb: Value = client
        .post(
            "/v1/load_balancers",
            &json!({"router_id": router, "name": unique("lb")}),
        )
        .await
        .unwrap();
    let pool: Value = client
        .post(
            "/v1/pools",
            &json!({"load_balancer_id": lb["id"], "name": "web", "algorithm": algorithm}),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (address, weight) in members {
        let member: Value = client
            .post(
                "/v1/members",
                &json!({"pool_id": pool["id"], "address": address, "port": 8080, "weight": weight}),
            )
            .await
            .unwrap();
        ids.push(member["id"].as_str().unwrap().parse().unwrap());
    }
    let vip: Value = client
        .post(
            "/v1/vips",
            &json!({"load_balancer_id": lb["id"], "name": "http", "pool_id": pool["id"], "address": VIP, "protocol": "tcp", "port": 80}),
        )
        .await
        .unwrap();
    let id = |v: &Value| v["id"].as_str().unwrap().parse().unwrap();
    (id(&vip), id(&pool), ids)
}

/// Adds a monitor of `kind` (`tcp`, or `http` expecting 200 on
/// `/healthz`) to `pool`: every 300 ms, down after 2 failures, up after 2
/// successes.
async fn monitor(client: &api::Client, pool: Uuid, kind: &str) {
    let _: Value = client
        .post(
            "/v1/health_monitors",
            &json!({"pool_id": pool, "type": kind, "http_path": "/healthz", "interval_ms": 300, "timeout_ms": 250, "failures_to_down": 2, "successes_to_up": 2}),
        )
        .await
        .unwrap();
}

/// Waits until a connection to the VIP from `client` is answered.
async fn wait_vip(pod: &support::netns::Pod) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = tcp_probe(pod, VIP, 80, 1.0, None);
        if !answer.starts_with("ERR") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the VIP never answered: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tag of the member a connection from source port `sport` reaches.
fn counts_for_sport(pod: &support::netns::Pod, sport: u16) -> String {
    let counts = connect_many(pod, VIP, 80, 1, sport);
    counts.into_keys().next().expect("one answer")
}

fn share(counts: &BTreeMap<String, u32>, tag: &str) -> u32 {
    counts.get(tag).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_on_one_host_spreads_by_weight_drops_dead_members_and_keeps_affinity() {
    let d = Deployment::start().await;
    let tenant = d.tenant(None).await;
    let (client, client_port) = d.pod(&tenant, 10).await;
    let mut servers = Vec::new();
    let mut members = Vec::new();
    let mut pods = Vec::new();
    for (n, weight) in [(21u32, 1u16), (22, 2), (23, 3)] {
        let (pod, _) = d.pod(&tenant, n).await;
        servers.push(Some(backend(&pod.netns, 8080, &format!("b{n}"))));
        members.push((tenant.address(n).to_string(), weight));
        pods.push(pod);
    }
    let (vip, pool, ids) = balance(&d.client, tenant.net.router.id, "weighted", &members).await;
    wait_vip(&client).await;

    // 300 connections follow the weights 1:2:3 within ±20%.
    let counts = connect_many(&client, VIP, 80, 300, 20_000);
    for (tag, expected) in [("b21", 50.0), ("b22", 100.0), ("b23", 150.0)] {
        let got = f64::from(share(&counts, tag));
        assert!(
            (got - expected).abs() <= expected * 0.2,
            "{tag}: {got} of 300, expected {expected}: {counts:?}"
        );
    }

    // plexus trace toward the VIP shows the member chosen and why.
    let trace = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["trace", "--api", &d.plexus.url, "--token", &d.plexus.token])
        .args(["--port", &client_port.to_string(), "--proto", "tcp"])
        .args(["--dst-ip", VIP, "--dport", "80", "--sport", "24000"])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&trace.stdout).into_owned();
    let chosen = counts_for_sport(&client, 24_000);
    for expected in [
        "load_balancer",
        "vip http 10.96.0.10:80",
        "hash point",
        "dnat",
    ] {
        assert!(trace.contains(expected), "{expected}: {trace}");
    }
    let member_ip = tenant.address(chosen[1..].parse().unwrap()).to_string();
    assert!(
        trace.contains(&format!("{member_ip}:8080")),
        "{chosen}: {trace}"
    );

    // A monitor finds them up; a killed backend is down within
    // interval × failures (plus a probe timeout and the NSDB round trip)
    // and gets no new connections; back up, it gets them again.
    monitor(&d.client, pool, "tcp").await;
    for member in &ids {
        wait_health(&d.client, *member, "up", Duration::from_secs(10)).await;
    }
    servers[2] = None;
    let took = wait_health(&d.client, ids[2], "down", Duration::from_secs(10)).await;
    assert!(took <= Duration::from_millis(2_500), "detected in {took:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = connect_many(&client, VIP, 80, 60, 21_000);
    assert_eq!(share(&counts, "b23"), 0, "{counts:?}");
    assert_eq!(counts.values().sum::<u32>(), 60);
    assert!(counts.keys().all(|k| !k.starts_with("ERR")), "{counts:?}");
    servers[2] = Some(backend(&pods[2].netns, 8080, "b23"));
    wait_health(&d.client, ids[2], "up", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = connect_many(&client, VIP, 80, 120, 22_000);
    assert!(share(&counts, "b23") > 30, "{counts:?}");

    // Source-IP affinity: 50 new connections from one client, one member.
    let _: Value = d
        .client
        .patch(
            &format!("/v1/vips/{vip}"),
            &json!({"session_affinity": "source_ip", "affinity_timeout_s": 60}),
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = connect_many(&client, VIP, 80, 50, 23_000);
    assert_eq!(
        counts.len(),
        1,
        "one member for every connection: {counts:?}"
    );
    assert_eq!(counts.values().sum::<u32>(), 50);

    // A member reaches the VIP it serves (on the members' bridge; one
    // member is usable now): another member sees the client's own address
    // (the bridge sends its reply to the router, which answers from the
    // VIP); the member itself would see the router's address (hairpin NAT,
    // never a packet from its own address; see the engine's tests).
    let answer = tcp_probe(&pods[0], VIP, 80, 3.0, None);
    assert!(answer.starts_with('b'), "from a member: {answer}");
    let expected = if answer.starts_with("b21") {
        tenant.net.gateway
    } else {
        std::net::IpAddr::from(tenant.address(21))
    };
    assert_eq!(peer_of(&answer).0, expected, "{answer}");

    // A UDP VIP answers from the VIP (the client's socket is connected to
    // it, so an answer from a member's own address would never arrive).
    let _udp: Vec<_> = pods
        .iter()
        .zip(["u21", "u22", "u23"])
        .map(|(pod, tag)| udp_server(&pod.netns, 8080, tag))
        .collect();
    let lb: Value = d.client.get(&format!("/v1/vips/{vip}")).await.unwrap();
    let _: Value = d
        .client
        .post(
            "/v1/vips",
            &json!({"load_balancer_id": lb["load_balancer_id"], "name": "dns", "pool_id": pool, "address": VIP, "protocol": "udp", "port": 53}),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = udp_probe(&client, VIP, 53, 1.0);
        if answer.starts_with('u') || std::time::Instant::now() > deadline {
            break answer;
        }
    };
    assert!(answer.starts_with('u'), "UDP VIP: {answer}");

    // No member can take a connection: refused at once, and counted.
    for member in &ids {
        let _: Value = d
            .client
            .patch(
                &format!("/v1/members/{member}"),
                &json!({"admin_state_up": false}),
                None,
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = tcp_probe(&client, VIP, 80, 3.0, None);
    assert_eq!(refused, "ERR ConnectionRefusedError");
    assert!(
        d.plexus
            .metric("plexus_datapath_drops_total{reason=\"no_member\"}")
            .await
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_across_hosts_balances_keeps_affinity_and_follows_health() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let tenant = c.create_tenant(&unique("lb")).await.unwrap();
    let router = c.create_router(tenant.id, "r").await.unwrap();
    let bridge = c.create_bridge(tenant.id, "net").await.unwrap();
    let router_port = c
        .create_router_port(router.id, "10.77.1.1/24")
        .await
        .unwrap();
    let bridge_port = c.create_bridge_port(bridge.id, json!({})).await.unwrap();
    c.link(router_port.id, bridge_port.id).await.unwrap();
    let mut pods = Vec::new();
    for (host, n) in [(0usize, 10u8), (1, 21), (2, 22)] {
        let ip = format!("10.77.1.{n}");
        let pod = cluster.hosts[host].pod(&format!("{ip}/24"), Some("10.77.1.1"));
        let port = c
            .create_bridge_port(
                bridge.id,
                json!({"mac": pod.mac, "allowed_addresses": [{"mac": pod.mac, "ip": format!("{ip}/32")}]}),
            )
            .await
            .unwrap();
        c.bind(port.id, cluster.hosts[host].id, &pod.host_if)
            .await
            .unwrap();
        pods.push(pod);
    }
    assert!(
        reachable(&pods[0], "10.77.1.21", Duration::from_secs(15))
            && reachable(&pods[0], "10.77.1.22", Duration::from_secs(15)),
        "{}",
        cluster.logs()
    );
    let mut servers = [
        Some(backend(&pods[1].netns, 8080, "b21")),
        Some(backend(&pods[2].netns, 8080, "b22")),
    ];
    let members = [("10.77.1.21".to_string(), 1), ("10.77.1.22".to_string(), 1)];
    let (vip, pool, ids) = balance(c, router.id, "round_robin", &members).await;
    wait_vip(&pods[0]).await;
    let counts = connect_many(&pods[0], VIP, 80, 100, 30_000);
    for tag in ["b21", "b22"] {
        let got = f64::from(share(&counts, tag));
        assert!((got - 50.0).abs() <= 10.0, "{tag}: {counts:?}");
    }

    // Each member is probed by its own host (HTTP GET /healthz); killing
    // one is seen there.
    monitor(c, pool, "http").await;
    for member in &ids {
        wait_health(c, *member, "up", Duration::from_secs(10)).await;
    }
    servers[1] = None;
    wait_health(c, ids[1], "down", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = connect_many(&pods[0], VIP, 80, 40, 31_000);
    assert_eq!(counts.get("b21").copied(), Some(40), "{counts:?}");
    for (i, host) in cluster.hosts.iter().enumerate() {
        let log = host.log();
        let changed = log.contains("member health changed");
        assert_eq!(
            changed,
            i == 1 || i == 2,
            "host {i} probes {}: {log}",
            if i == 0 { "nothing" } else { "its own member" }
        );
    }
    servers[1] = Some(backend(&pods[2].netns, 8080, "b22"));
    wait_health(c, ids[1], "up", Duration::from_secs(10)).await;

    // Affinity across hosts: the client's host decides, replies come back
    // through the members' hosts.
    let _: Value = c
        .patch(
            &format!("/v1/vips/{vip}"),
            &json!({"session_affinity": "source_ip"}),
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = connect_many(&pods[0], VIP, 80, 30, 32_000);
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts.values().sum::<u32>(), 30, "{counts:?}");
}
