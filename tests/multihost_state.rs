//! Multi-host flow state and NSDB outages: stateful policy and masquerade
//! when the two directions of a connection enter the virtual network on
//! different hosts (conntrack and NAT state replicated over the tunnel), and
//! forwarding between hosts through a 20-second etcd outage.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{reachable, Cluster, UPLINK};
use support::netns::Pod;
use support::world::{peer_of, tcp_probe, tcp_server, STRANGER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_policy_holds_when_the_reply_enters_on_another_host() {
    let cluster = Cluster::start(2).await;
    let (a, b, b_port) = cluster.guarded_pair("10.62.0").await;
    let _a_server = tcp_server(&a.netns, &[8080], "a");
    let _b_server = tcp_server(&b.netns, &[8080], "b");
    let inbound = tcp_probe(&b, "10.62.0.1", 8080, 1.5, None);
    assert!(
        inbound.starts_with("ERR"),
        "new inbound must fail: {inbound}"
    );
    for _ in 0..3 {
        let outbound = tcp_probe(&a, "10.62.0.2", 8080, 3.0, None);
        assert!(
            outbound.starts_with("b 10.62.0.1:"),
            "a's own connection must get its replies through host 1: {outbound}\n{}",
            cluster.logs()
        );
    }
    let (received, text) = a.ping("10.62.0.2", 3, &[]);
    assert_eq!(received, 3, "a's pings get their replies: {text}");

    // A trace of the reply to a's open connection, entering at b's port on
    // host 1: dropped on empty state, delivered on host 1's agent's state,
    // which `plexus api` (no datapath of its own) asks for through the NSDB.
    let client = "import socket,time\ns=socket.socket();s.bind(('10.62.0.1',40001))\n\
                  s.connect(('10.62.0.2',8080));s.sendall(b'hi\\n');\
                  print(s.makefile().readline().strip(),flush=True)\ntime.sleep(8)";
    let mut open = std::process::Command::new("ip")
        .args(["netns", "exec", &a.netns, "python3", "-c", client])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = open.stdout.take().unwrap();
    let _open = support::cluster::Process(open);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert!(line.starts_with("b "), "a's connection is open: {line}");
    let port = b_port.id.to_string();
    let host1 = cluster.hosts[1].id.to_string();
    let reply = [
        "trace",
        "--api",
        &cluster.url,
        "--token",
        &cluster.token,
        "--port",
        &port,
        "--src-ip",
        "10.62.0.2",
        "--dst-ip",
        "10.62.0.1",
        "--proto",
        "tcp",
        "--sport",
        "8080",
        "--dport",
        "40001",
    ];
    let trace = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(reply)
            .args(extra)
            .output()
            .unwrap()
    };
    let empty = trace(&[]);
    let (out, err) = (
        String::from_utf8_lossy(&empty.stdout),
        String::from_utf8_lossy(&empty.stderr),
    );
    assert!(out.contains("verdict: drop"), "{out}{err}");
    let live = trace(&["--state", "live", "--host", &host1]);
    let text = String::from_utf8_lossy(&live.stdout);
    assert!(
        live.status.success()
            && text.contains(&format!("state: live (learned by host {host1})"))
            && text.contains("verdict: deliver"),
        "{text}{}",
        String::from_utf8_lossy(&live.stderr)
    );
    let nowhere = trace(&["--state", "live"]);
    assert!(!nowhere.status.success());
    let why = String::from_utf8_lossy(&nowhere.stderr);
    assert!(why.contains("host_id"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masquerade_works_when_the_uplink_is_on_another_host() {
    let cluster = Cluster::start_with(2, Some(1)).await;
    let c = &cluster.client;
    let world = cluster.world.as_ref().unwrap();
    let _server = tcp_server(&world.netns, &[8080], "w");
    let tenant = c.create_tenant("masq").await.unwrap();
    // The provider router appears once the API sees the uplink host.
    let deadline = Instant::now() + Duration::from_secs(15);
    let net = loop {
        match c.init_tenant_network(tenant.id, None).await {
            Ok(net) => break net,
            Err(error) => assert!(Instant::now() < deadline, "no tenant network: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ip = match net.pod_cidr {
        ipnet::IpNet::V4(cidr) => std::net::Ipv4Addr::from(u32::from(cidr.network()) + 10),
        ipnet::IpNet::V6(_) => unreachable!("IPv4 pod subnets"),
    };
    let pod: Pod = cluster.hosts[0].pod(
        &format!("{ip}/{}", net.pod_cidr.prefix_len()),
        Some(&net.gateway.to_string()),
    );
    let port = c
        .create_bridge_port(
            net.bridge.id,
            json!({"mac": pod.mac, "allowed_addresses": [{"mac": pod.mac, "ip": format!("{ip}/32")}]}),
        )
        .await
        .unwrap();
    c.bind(port.id, cluster.hosts[0].id, &pod.host_if)
        .await
        .unwrap();
    // Requests leave through host 1's uplink; replies enter there and are
    // translated back with the NAT state host 0 created.
    assert!(
        reachable(&pod, STRANGER, Duration::from_secs(20)),
        "the pod never reached the world through the other host's uplink\n{}",
        cluster.logs()
    );
    for _ in 0..3 {
        // Not the uplink gateway (the host, reached without NAT): an
        // outside address.
        let answer = tcp_probe(&pod, STRANGER, 8080, 3.0, None);
        assert!(answer.starts_with("w "), "{answer}\n{}", cluster.logs());
        let (peer, _) = peer_of(&answer);
        assert_eq!(
            peer.to_string(),
            UPLINK,
            "the world sees the uplink address"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_keep_forwarding_through_an_etcd_outage_and_catch_up_after() {
    let mut cluster = Cluster::start(2).await;
    let tenant = cluster.client.create_tenant("outage").await.unwrap();
    let bridge = cluster.client.create_bridge(tenant.id, "b").await.unwrap();
    let a = cluster.hosts[0].pod("10.63.0.1/24", None);
    let b = cluster.hosts[1].pod("10.63.0.2/24", None);
    cluster.attach(bridge.id, &a, 0).await;
    cluster.attach(bridge.id, &b, 1).await;
    assert!(
        reachable(&a, "10.63.0.2", Duration::from_secs(15)),
        "{}",
        cluster.logs()
    );
    let _server = tcp_server(&b.netns, &[8080], "b");

    cluster.etcd.stop();
    let started = Instant::now();
    // Writes fail cleanly while the NSDB is away.
    let refused = cluster
        .client
        .create_bridge(tenant.id, "during-outage")
        .await
        .expect_err("no write can succeed without etcd");
    assert_eq!(refused.status(), Some(503), "{refused}");
    // Traffic between hosts goes on for the whole outage.
    let (received, text) = a.ping("10.63.0.2", 90, &[]);
    assert_eq!(received, 90, "pings during the outage: {text}");
    let answer = tcp_probe(&a, "10.63.0.2", 8080, 3.0, None);
    assert!(
        answer.starts_with("b "),
        "a new connection during the outage: {answer}"
    );
    if let Some(rest) = Duration::from_secs(20).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    cluster.etcd.restart();

    // Nothing of the refused write exists.
    let deadline = Instant::now() + Duration::from_secs(15);
    let bridges = loop {
        match cluster.client.list::<nsdb::Bridge>("/v1/bridges").await {
            Ok(list) => break list,
            Err(error) => assert!(Instant::now() < deadline, "API never recovered: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        bridges.iter().all(|b| b.name != "during-outage"),
        "{bridges:?}"
    );
    // Agents follow changes made after the outage.
    let c3 = cluster.hosts[1].pod("10.63.0.3/24", None);
    cluster.attach(bridge.id, &c3, 1).await;
    assert!(
        reachable(&a, "10.63.0.3", Duration::from_secs(15)),
        "the agents did not catch up after the outage\n{}",
        cluster.logs()
    );
}
