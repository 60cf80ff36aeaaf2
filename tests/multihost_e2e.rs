//! Multi-host end-to-end: three hosts (namespaces with their own agents) on
//! one underlay, one etcd, pods spread over the hosts, frames between hosts
//! in VXLAN tunnels.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::cluster::{reachable, tcp_transfer, Cluster};
use support::live_trace::LiveTrace;
use support::netns::Pod;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_a_bridge_survive_an_agent_crash_and_follow_a_moved_port() {
    let mut cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let tenant = c.create_tenant("spread").await.unwrap();
    let bridge = c.create_bridge(tenant.id, "b").await.unwrap();
    let pods: Vec<Pod> = (0..3)
        .map(|i| cluster.hosts[i].pod(&format!("10.60.0.{}/24", i + 1), None))
        .collect();
    let mut ports = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        ports.push(cluster.attach(bridge.id, pod, i).await);
    }

    // Every pair talks.
    for (i, from) in pods.iter().enumerate() {
        for j in (0..3).filter(|j| *j != i) {
            let dst = format!("10.60.0.{}", j + 1);
            assert!(
                reachable(from, &dst, Duration::from_secs(15)),
                "pod {i} never reached pod {j}\n{}",
                cluster.logs()
            );
        }
    }

    // On the underlay: VXLAN whose VNIs are the destination ports' keys.
    let packets = cluster.capture_vxlan(|| {
        let (received, text) = pods[0].ping("10.60.0.2", 5, &[]);
        assert_eq!(received, 5, "{text}");
    });
    let seen: BTreeSet<(u32, String, String)> =
        packets.into_iter().map(|(v, s, d, _)| (v, s, d)).collect();
    let to_pod1 = (
        ports[1].tunnel_key,
        "192.168.77.1".into(),
        "192.168.77.2".into(),
    );
    let to_pod0 = (
        ports[0].tunnel_key,
        "192.168.77.2".into(),
        "192.168.77.1".into(),
    );
    assert!(
        seen.contains(&to_pod1) && seen.contains(&to_pod0),
        "expected VNIs {} (1→2) and {} (2→1) on the underlay, saw {seen:?}",
        ports[1].tunnel_key,
        ports[0].tunnel_key
    );

    // A broadcast reaches each remote host once: host 1 (one port) on that
    // port's key, host 2 (two ports of the bridge) once on the bridge's key.
    let extra = cluster.hosts[2].pod("10.60.0.4/24", None);
    cluster.attach(bridge.id, &extra, 2).await;
    assert!(reachable(&pods[0], "10.60.0.4", Duration::from_secs(10)));
    let packets = cluster.capture_vxlan(|| {
        pods[0].try_exec(&["ping", "-b", "-n", "-c", "3", "-i", "0.3", "10.60.0.255"]);
    });
    let echo_to = |dst: &str| -> Vec<u32> {
        packets
            .iter()
            .filter(|(_, _, d, icmp)| d == dst && *icmp == Some(8))
            .map(|(vni, ..)| *vni)
            .collect()
    };
    assert_eq!(
        echo_to("192.168.77.3"),
        vec![bridge.tunnel_key; 3],
        "one copy per broadcast to host 2, on the bridge's key"
    );
    assert_eq!(echo_to("192.168.77.2"), vec![ports[1].tunnel_key; 3]);
    drop(extra);

    // A TCP transfer across hosts arrives byte for byte.
    let (sent, received, len) = tcp_transfer(&pods[0], &pods[2], "10.60.0.3", 8 << 20);
    assert_eq!(len, 8 << 20, "bytes received");
    assert_eq!(sent, received, "the transfer was altered");
    // Its super-frames crossed in pieces that fit the underlay, none lost.
    let offloaded = r#"plexus_tunnel_offloaded_frames_total{way="received",carried="pieces"}"#;
    assert!(
        cluster.hosts[2].counter(offloaded) > 0,
        "super-frames arrived in pieces\n{}",
        cluster.hosts[2].metrics()
    );
    // ... and were sent on to the pod from the receive slots they lay in,
    // not put back together by copy.
    let gathered = "plexus_tunnel_gathered_frames_total";
    assert!(
        cluster.hosts[2].counter(gathered) > 0,
        "super-frames were gathered from their slots\n{}",
        cluster.hosts[2].metrics()
    );
    let lost = r#"plexus_datapath_drops_total{reason="tunnel_offload_piece_lost"}"#;
    assert_eq!(
        cluster.hosts[2].counter(lost),
        0,
        "{}",
        cluster.hosts[2].metrics()
    );

    // Host 1's underlay turns narrower than its agent was told (1400
    // bytes, not 1500): the kernel refuses its pieces and its coalesced
    // full-size datagrams; it sends them whole and one by one instead,
    // which the underlay fragments, and nothing is lost.
    let narrow = |mtu: &str| {
        cluster.hosts[1]
            .netns
            .exec(&["ip", "link", "set", "ul0", "mtu", mtu])
    };
    narrow("1400");
    let (sent, received, len) = tcp_transfer(&pods[1], &pods[0], "10.60.0.1", 8 << 20);
    narrow(&support::cluster::UNDERLAY_MTU.to_string());
    assert_eq!(
        (len, sent),
        (8 << 20, received),
        "altered over the narrow underlay"
    );
    assert!(
        cluster.hosts[1]
            .log()
            .contains("the tunnel refused super-frames in pieces"),
        "{}",
        cluster.hosts[1].log()
    );
    let failed = r#"plexus_datapath_drops_total{reason="tunnel_send_failed"}"#;
    assert_eq!(cluster.hosts[1].counter(failed), 0, "no datagram refused");
    let whole = r#"plexus_tunnel_offloaded_frames_total{way="sent",carried="whole"}"#;
    assert!(
        cluster.hosts[1].counter(whole) > 0,
        "{}",
        cluster.hosts[1].metrics()
    );

    // kill -9 one agent: only its pods go dark.
    cluster.hosts[2].kill_agent();
    let (received, _) = pods[0].ping("10.60.0.3", 3, &[]);
    assert_eq!(
        received, 0,
        "pod 2's agent is dead, nothing can deliver to it"
    );
    let (received, text) = pods[0].ping("10.60.0.2", 5, &[]);
    assert_eq!(received, 5, "the other hosts keep talking: {text}");
    // Its lease runs out: the host is marked not alive.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hosts = cluster
            .client
            .list::<nsdb::Host>("/v1/hosts")
            .await
            .unwrap();
        if hosts
            .iter()
            .any(|h| h.id == cluster.hosts[2].id && !h.alive)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead host still looks alive"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // It comes back as an agent that reads super-frames only whole (as one
    // from before pieces): the others send it whole datagrams, and it
    // sends them whole too.
    let answered = r#"plexus_datapath_drops_total{reason="tunnel_sync_answered"}"#;
    let answered_before = cluster.hosts[0].counter(answered);
    cluster.hosts[2].restart_agent_with(&[("PLEXUS_TUNNEL_OFFLOAD", "datagram")]);
    assert!(
        reachable(&pods[0], "10.60.0.3", Duration::from_secs(10)),
        "pod 2 did not come back after its agent restarted\n{}",
        cluster.logs()
    );
    // Host 0 has heard from the new agent (its sync request, unflagged).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster.hosts[0].counter(answered) == answered_before {
        assert!(std::time::Instant::now() < deadline, "no sync request");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = |carried: &str| {
        format!(r#"plexus_tunnel_offloaded_frames_total{{way="sent",carried="{carried}"}}"#)
    };
    let received = |carried: &str| {
        format!(r#"plexus_tunnel_offloaded_frames_total{{way="received",carried="{carried}"}}"#)
    };
    let (pieces_before, whole_before) = (
        cluster.hosts[0].counter(&sent("pieces")),
        cluster.hosts[0].counter(&sent("whole")),
    );
    for (from, to, dst) in [(0, 2, "10.60.0.3"), (2, 0, "10.60.0.1")] {
        let (sent, received, len) = tcp_transfer(&pods[from], &pods[to], dst, 8 << 20);
        assert_eq!((len, sent), (8 << 20, received), "{from} -> {to} altered");
    }
    assert_eq!(
        cluster.hosts[0].counter(&sent("pieces")),
        pieces_before,
        "no pieces to it"
    );
    assert!(
        cluster.hosts[0].counter(&sent("whole")) > whole_before,
        "whole to it"
    );
    let host2 = cluster.hosts[2].metrics();
    for (name, nonzero) in [
        (sent("pieces"), false),
        (received("pieces"), false),
        (sent("whole"), true),
        (received("whole"), true),
    ] {
        assert_eq!(
            cluster.hosts[2].counter(&name) > 0,
            nonzero,
            "{name}\n{host2}"
        );
    }

    // The port of pod 1 moves to host 2 (its veth with it): traffic follows.
    let moved = &pods[1];
    cluster.client.unbind(ports[1].id).await.unwrap();
    support::netns::run(&[
        "ip",
        "-n",
        &cluster.hosts[1].netns.0,
        "link",
        "set",
        &moved.host_if,
        "netns",
        &cluster.hosts[2].netns.0,
    ]);
    cluster.hosts[2]
        .netns
        .exec(&["ip", "link", "set", &moved.host_if, "up"]);
    cluster
        .client
        .bind(ports[1].id, cluster.hosts[2].id, &moved.host_if)
        .await
        .unwrap();
    let bound = std::time::Instant::now();
    // Pings time out after 1 s each, so "within a second" shows as the
    // second ping at the latest.
    assert!(
        reachable(&pods[0], "10.60.0.2", Duration::from_millis(2500)),
        "traffic did not follow the moved port within {:?}\n{}",
        bound.elapsed(),
        cluster.logs()
    );
    let (received, text) = pods[2].ping("10.60.0.2", 3, &[]);
    assert_eq!(received, 3, "now on the same host: {text}");
    cluster.etcd.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_traffic_crosses_hosts() {
    let cluster = Cluster::start(2).await;
    let c = &cluster.client;
    let tenant = c.create_tenant("routed").await.unwrap();
    let router = c.create_router(tenant.id, "r").await.unwrap();
    let mut pods = Vec::new();
    for (i, net) in ["10.61.1", "10.61.2"].iter().enumerate() {
        let bridge = c.create_bridge(tenant.id, &format!("b{i}")).await.unwrap();
        let rport = c
            .create_router_port(router.id, &format!("{net}.1/24"))
            .await
            .unwrap();
        let bport = c
            .create_bridge_port(bridge.id, serde_json::json!({}))
            .await
            .unwrap();
        c.link(rport.id, bport.id).await.unwrap();
        let pod = cluster.hosts[i].pod(&format!("{net}.10/24"), Some(&format!("{net}.1")));
        cluster.attach(bridge.id, &pod, i).await;
        pods.push(pod);
    }
    assert!(
        reachable(&pods[0], "10.61.1.1", Duration::from_secs(15)),
        "pod 0 never reached its gateway\n{}",
        cluster.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    // Nobody has resolved either pod's address yet: the first ping waits at
    // host 0's router for the ARP answer that host 1 sees, and its reply
    // waits at host 1's router for the answer host 0 sees. Each host's
    // answer is shipped to the other, which releases the held frame, so the
    // very first ping gets through.
    let (received, text) = pods[0].ping("10.61.2.10", 1, &["-W", "5"]);
    assert_eq!(
        received,
        1,
        "the first routed ping across hosts: {text}\n{}",
        cluster.logs()
    );
    let (received, text) = pods[1].ping("10.61.1.10", 5, &[]);
    assert_eq!(received, 5, "{text}");
    let (sent, received, len) = tcp_transfer(&pods[1], &pods[0], "10.61.1.10", 2 << 20);
    assert_eq!((sent, len), (received, 2 << 20));

    // A live trace of real pings from pod 0 to pod 1: each packet is one
    // trace with host 0's steps (bridge, router, bridge) and host 1's
    // delivery to pod 1's port.
    let flags = [
        "--device",
        &router.id.to_string(),
        "--dst-ip",
        "10.61.2.10",
        "--proto",
        "icmp",
        "--count",
        "2",
        "--format",
        "json",
    ]
    .map(String::from);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let live = LiveTrace::start(&cluster.url, &cluster.token, &flags).await;
    let (out, err) = live.run_while(Duration::from_secs(20), || {
        // One ping process: one ICMP identifier, one flow (miss, then hit).
        pods[0].ping("10.61.2.10", 2, &["-i", "0.3", "-W", "1"]);
    });
    let traces: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(traces.len(), 2, "{out}\n{err}");
    let (h0, h1) = (cluster.hosts[0].id, cluster.hosts[1].id);
    for trace in &traces {
        let decided = &trace["decided"];
        assert_eq!(decided["host"], h0.to_string(), "{trace:#}");
        assert_eq!(decided["fate"], "sent", "{trace:#}");
        assert_eq!(decided["trace"]["verdict"], "deliver", "{trace:#}");
        let deliveries = trace["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1, "{trace:#}");
        assert_eq!(deliveries[0]["host"], h1.to_string(), "{trace:#}");
        assert_eq!(trace["complete"], true, "{trace:#}");
        let text = trace["text"].as_str().unwrap();
        for expected in [
            cluster.hosts[0].name.as_str(),
            cluster.hosts[1].name.as_str(),
            "router r",
            "received through the tunnel",
        ] {
            assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
        }
    }
    let flows: Vec<&str> = traces
        .iter()
        .map(|t| t["decided"]["flow"].as_str().unwrap())
        .collect();
    assert!(
        flows.contains(&"hit"),
        "a cached flow is traced too: {flows:?}"
    );
}

/// Gives `pod` the IPv6 address `addr` (/64, no DAD) and, with `gateway`,
/// an IPv6 default route through it.
fn give_ipv6(pod: &Pod, addr: &str, gateway: Option<&str>) {
    pod.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{addr}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    if let Some(gateway) = gateway {
        pod.exec(&["ip", "-6", "route", "add", "default", "via", gateway]);
    }
}

/// Pings over IPv6 until a reply comes (the first may wait for neighbour
/// discovery across hosts); returns the last ping's output.
fn reachable6(pod: &Pod, dst: &str, within: Duration) -> (bool, String) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (received, text) = pod.ping(dst, 1, &["-6"]);
        if received == 1 || std::time::Instant::now() > deadline {
            return (received == 1, text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_pods_cross_hosts_over_an_ipv4_underlay() {
    let cluster = Cluster::start(2).await;
    let c = &cluster.client;
    let tenant = c.create_tenant("six").await.unwrap();

    // One bridge across both hosts: neighbour discovery and 20 MiB of TCP.
    let bridge = c.create_bridge(tenant.id, "l2").await.unwrap();
    let pods: Vec<Pod> = (0..2)
        .map(|i| cluster.hosts[i].pod(&format!("10.64.0.{}/24", i + 1), None))
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        cluster.attach(bridge.id, pod, i).await;
        give_ipv6(pod, &format!("fd64::{}", i + 1), None);
    }
    let (ok, text) = reachable6(&pods[0], "fd64::2", Duration::from_secs(15));
    assert!(
        ok,
        "pod 0 never reached pod 1 over IPv6: {text}\n{}",
        cluster.logs()
    );
    let (received, text) = pods[1].ping("fd64::1", 3, &["-6"]);
    assert_eq!(received, 3, "{text}");
    let (sent, received, len) = tcp_transfer(&pods[0], &pods[1], "fd64::2", 20 << 20);
    assert_eq!(
        (&sent, len),
        (&received, 20 << 20),
        "20 MiB over IPv6, SHA-256"
    );

    // Routed: two IPv6-only bridges behind the tenant router, one pod on
    // each host; the reply comes back at hop limit 63.
    let router = c.create_router(tenant.id, "r6").await.unwrap();
    let mut routed = Vec::new();
    for (i, net) in ["fd65:1", "fd65:2"].iter().enumerate() {
        let bridge = c
            .create_bridge(tenant.id, &format!("v6-{i}"))
            .await
            .unwrap();
        let rport = c
            .create_router_port(router.id, &format!("{net}::1/64"))
            .await
            .unwrap();
        let bport = c
            .create_bridge_port(bridge.id, serde_json::json!({}))
            .await
            .unwrap();
        c.link(rport.id, bport.id).await.unwrap();
        let pod = cluster.hosts[i].pod("192.0.2.10/24", None);
        cluster.attach(bridge.id, &pod, i).await;
        give_ipv6(&pod, &format!("{net}::10"), Some(&format!("{net}::1")));
        routed.push(pod);
    }
    let (ok, text) = reachable6(&routed[0], "fd65:2::10", Duration::from_secs(15));
    assert!(
        ok,
        "no routed IPv6 across hosts: {text}\n{}",
        cluster.logs()
    );
    let (received, text) = routed[0].ping("fd65:2::10", 3, &["-6"]);
    assert_eq!(received, 3, "{text}");
    assert!(text.contains("ttl=63"), "one router on the way: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_cross_hosts_over_an_ipv6_underlay() {
    let cluster = Cluster::start_v6_underlay(2).await;
    let c = &cluster.client;
    for host in c.list::<nsdb::Host>("/v1/hosts").await.unwrap() {
        assert!(host.tunnel_ip.is_ipv6(), "{host:?}");
    }
    let tenant = c.create_tenant("v6-underlay").await.unwrap();
    let bridge = c.create_bridge(tenant.id, "b").await.unwrap();
    let pods: Vec<Pod> = (0..2)
        .map(|i| cluster.hosts[i].pod(&format!("10.66.0.{}/24", i + 1), None))
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        // VXLAN over IPv6 takes 70 bytes of the underlay's 1500.
        pod.exec(&["ip", "link", "set", "eth0", "mtu", "1430"]);
        cluster.attach(bridge.id, pod, i).await;
        give_ipv6(pod, &format!("fd66::{}", i + 1), None);
    }
    // The hosts have IPv6 underlay addresses only: whatever crosses, crossed
    // in VXLAN over IPv6.
    assert!(
        reachable(&pods[0], "10.66.0.2", Duration::from_secs(15)),
        "no IPv4 pod traffic over the IPv6 underlay\n{}",
        cluster.logs()
    );
    let (ok, text) = reachable6(&pods[1], "fd66::1", Duration::from_secs(15));
    assert!(ok, "no IPv6 pod traffic over the IPv6 underlay: {text}");
    let (sent, received, len) = tcp_transfer(&pods[0], &pods[1], "10.66.0.2", 20 << 20);
    assert_eq!((&sent, len), (&received, 20 << 20), "20 MiB, SHA-256");
    let (sent, received, len) = tcp_transfer(&pods[1], &pods[0], "fd66::1", 20 << 20);
    assert_eq!(
        (&sent, len),
        (&received, 20 << 20),
        "20 MiB over IPv6 in IPv6"
    );
    // The tunnel carries exactly 1430-byte packets; a pod that sends bigger
    // ones with DF set is told the tunnel's MTU.
    let (received, text) = pods[0].ping("10.66.0.2", 2, &["-M", "do", "-s", "1402"]);
    assert_eq!(received, 2, "a 1430-byte packet fits: {text}");
    pods[0].exec(&["ip", "link", "set", "eth0", "mtu", "1450"]);
    let refused = pods[0].try_exec(&[
        "ping",
        "-n",
        "-c",
        "2",
        "-M",
        "do",
        "-s",
        "1422",
        "10.66.0.2",
    ]);
    let said = String::from_utf8_lossy(&refused.stdout).to_string()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("mtu = 1430") || said.contains("mtu=1430"),
        "{said}"
    );
}
