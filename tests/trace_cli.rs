//! End-to-end: `plexus trace` runs the engine on the state the API holds.

mod support;

use serde_json::json;
use support::plexus::Plexus;

fn plexus(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_every_hop_and_the_verdict() {
    let server = Plexus::start().await;
    let c = server.client();
    // Ports bound to another host: this agent opens nothing, the trace still routes.
    let elsewhere = c.create_host("elsewhere", "192.0.2.77").await.unwrap();
    let tenant = c.create_tenant("acme").await.unwrap();
    let router = c.create_router(tenant.id, "edge").await.unwrap();
    let mut pods = Vec::new();
    for n in 1..=2u8 {
        let bridge = c
            .create_bridge(tenant.id, &format!("net{n}"))
            .await
            .unwrap();
        let rport = c
            .create_router_port(router.id, &format!("10.0.{n}.1/24"))
            .await
            .unwrap();
        let bport = c.create_bridge_port(bridge.id, json!({})).await.unwrap();
        c.link(rport.id, bport.id).await.unwrap();
        let mac = format!("02:00:00:00:0{n}:10");
        let pod = c
            .create_bridge_port(bridge.id, json!({"mac": mac, "allowed_addresses": [{"mac": mac, "ip": format!("10.0.{n}.10/32")}]}))
            .await
            .unwrap();
        c.bind(pod.id, elsewhere.id, &format!("veth{n}"))
            .await
            .unwrap();
        pods.push(pod);
    }
    let port = pods[0].id.to_string();
    let base = [
        "trace",
        "--api",
        &server.url,
        "--token",
        &server.token,
        "--port",
        &port,
    ];

    let routed = plexus(&[&base[..], &["--dst-ip", "10.0.2.10"]].concat());
    for expected in [
        "trace: icmp 10.0.1.10 > 10.0.2.10 ttl 64",
        "bridge net1",
        "router edge",
        "bridge net2",
        "ttl 64→63",
        "verdict: deliver",
        "eth.src=",
        "ttl-1",
    ] {
        assert!(
            routed.contains(expected),
            "missing '{expected}' in:\n{routed}"
        );
    }
    let short = &pods[1].id.simple().to_string()[..8];
    assert!(
        routed.contains(&format!("deliver to port {short}")),
        "{routed}"
    );

    let expired = plexus(&[&base[..], &["--dst-ip", "10.0.2.10", "--ttl", "1"]].concat());
    assert!(
        expired.contains("TTL 1 expires here")
            && expired.contains("verdict: reply")
            && expired.contains("TtlExpired"),
        "{expired}"
    );

    let tcp = plexus(
        &[
            &base[..],
            &[
                "--dst-ip", "10.9.9.9", "--proto", "tcp", "--dport", "443", "--format", "json",
            ],
        ]
        .concat(),
    );
    let json: serde_json::Value = serde_json::from_str(&tcp).unwrap();
    assert_eq!(
        json["verdict"], "reply",
        "no route: the router answers net unreachable"
    );
    assert!(json["drops"].to_string().contains("NoRoute"), "{json}");
    assert!(json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["device"]["name"] == "edge"));
}

/// `plexus trace --dst-ip <IPv6>` through a router whose ports are IPv6
/// only, and `plexus topology` shows the IPv6 addresses and routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_routes_ipv6_and_topology_shows_it() {
    let server = Plexus::start().await;
    let c = server.client();
    let elsewhere = c.create_host("elsewhere", "192.0.2.78").await.unwrap();
    let tenant = c.create_tenant("acme6").await.unwrap();
    let router = c.create_router(tenant.id, "edge6").await.unwrap();
    let mut pods = Vec::new();
    for n in 1..=2u8 {
        let bridge = c
            .create_bridge(tenant.id, &format!("v6net{n}"))
            .await
            .unwrap();
        let rport = c
            .create_router_port(router.id, &format!("2001:db8:{n}::1/64"))
            .await
            .unwrap();
        let bport = c.create_bridge_port(bridge.id, json!({})).await.unwrap();
        c.link(rport.id, bport.id).await.unwrap();
        let mac = format!("02:00:00:00:6{n}:10");
        let pod = c
            .create_bridge_port(bridge.id, json!({"mac": mac, "allowed_addresses": [{"mac": mac, "ip": format!("2001:db8:{n}::10/128")}]}))
            .await
            .unwrap();
        c.bind(pod.id, elsewhere.id, &format!("veth6{n}"))
            .await
            .unwrap();
        pods.push(pod);
    }
    c.create_route(
        router.id,
        json!({"dst": "2001:db8:99::/48", "type": "reject"}),
    )
    .await
    .unwrap();
    let port = pods[0].id.to_string();
    let base = [
        "trace",
        "--api",
        &server.url,
        "--token",
        &server.token,
        "--port",
        &port,
    ];
    let routed = plexus(&[&base[..], &["--dst-ip", "2001:db8:2::10"]].concat());
    for expected in [
        "trace: icmp 2001:db8:1::10 > 2001:db8:2::10 ttl 64",
        "router edge6",
        "bridge v6net2",
        "hop limit 64→63",
        "verdict: deliver",
    ] {
        assert!(
            routed.contains(expected),
            "missing '{expected}' in:\n{routed}"
        );
    }
    let rejected = plexus(&[&base[..], &["--dst-ip", "2001:db8:99::1", "--proto", "udp"]].concat());
    assert!(
        rejected.contains("reject") && rejected.contains("AdminProhibited"),
        "{rejected}"
    );

    let topology = plexus(&["topology", "--api", &server.url, "--token", &server.token]);
    for expected in ["2001:db8:1::1/64", "2001:db8:2::1/64", "2001:db8:99::/48"] {
        assert!(
            topology.contains(expected),
            "missing '{expected}' in:\n{topology}"
        );
    }
}
