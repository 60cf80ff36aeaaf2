//! End-to-end: IPv6 pods on two hosts behind one router, over the IPv4
//! underlay. The router resolves each pod by Neighbor Discovery on the
//! host the packet enters by while the answer is seen on the other (the
//! neighbour is shipped as host-to-host state, releasing the held frame);
//! pings arrive at hop limit 63; 20 MiB of TCP cross intact; a packet too
//! big for the tunnel gets ICMPv6 packet-too-big and the sender's kernel
//! learns the path MTU, as does `tracepath -6`. Needs root, etcd.

mod support;

use std::time::Duration;

use support::cluster::{reachable, Cluster};
use support::ipv6::{digest_server, give_ipv6, send_and_check};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_is_routed_across_hosts() {
    let cluster = Cluster::start(2).await;
    let c = &cluster.client;
    let tenant = c.create_tenant("routed6").await.unwrap();
    let router = c.create_router(tenant.id, "r6").await.unwrap();
    let mut pods = Vec::new();
    for i in 0..2 {
        let net = format!("2001:db8:61:{i}::");
        let bridge = c.create_bridge(tenant.id, &format!("b{i}")).await.unwrap();
        let rport = c
            .create_router_port(router.id, &format!("{net}1/64"))
            .await
            .unwrap();
        let bport = c
            .create_bridge_port(bridge.id, serde_json::json!({}))
            .await
            .unwrap();
        c.link(rport.id, bport.id).await.unwrap();
        // The pods' IPv4 addresses are placeholders nothing routes; the
        // NSDB does not know their IPv6 addresses (no allowed addresses):
        // the router must solicit them.
        let pod = cluster.hosts[i].pod(&format!("192.0.2.{}/24", 10 + i), None);
        give_ipv6(&pod, &format!("{net}10"), &format!("{net}1"));
        cluster.attach(bridge.id, &pod, i).await;
        pods.push(pod);
    }
    let (a6, b6) = ("2001:db8:61:0::10", "2001:db8:61:1::10");
    assert!(
        reachable(&pods[0], "2001:db8:61:0::1", Duration::from_secs(15)),
        "pod 0 never reached its IPv6 gateway\n{}",
        cluster.logs()
    );
    // As routed_traffic_crosses_hosts: host 1 serves pod 1's port by now.
    std::thread::sleep(Duration::from_secs(2));
    let (received, text) = pods[0].ping(b6, 1, &["-W", "5"]);
    assert_eq!(
        received,
        1,
        "the first routed IPv6 ping across hosts (both neighbours resolved on the way): {text}\n{}",
        cluster.logs()
    );
    let (received, text) = pods[1].ping(a6, 3, &[]);
    assert_eq!(received, 3, "{text}");
    assert!(text.contains("ttl=63"), "one router hop: {text}");

    let _server = digest_server(&pods[1], 5002);
    assert_eq!(send_and_check(&pods[0], b6, 5002, 20), "ok");

    // A full-size packet from a pod with a 1500-byte link cannot cross the
    // tunnel and IPv6 is never fragmented on the way: packet too big.
    pods[0].exec(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    let (received, text) = pods[0].ping(b6, 1, &["-s", "1452", "-M", "do"]);
    assert_eq!(received, 0, "{text}");
    assert!(
        text.contains("Packet too big") && text.contains("mtu=1450"),
        "the sender is told the tunnel's MTU: {text}"
    );
    let route = pods[0].exec(&["ip", "-6", "route", "get", b6]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("mtu 1450"),
        "the kernel learned the path MTU: {route}"
    );
    let (received, text) = pods[0].ping(b6, 1, &["-s", "1392"]);
    assert_eq!(received, 1, "what fits still passes: {text}");

    // tracepath learns the same path MTU from scratch: its full-size
    // probes get packet-too-big from the router, the hop-limited ones time
    // exceeded, and the last one reaches pod 1.
    pods[0].exec(&["ip", "-6", "route", "flush", "cache"]);
    let out = pods[0].exec(&["tracepath", "-6", "-n", "-m", "4", b6]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pmtu 1450") && text.contains("2001:db8:61::1") && text.contains("reached"),
        "tracepath -6 learns the tunnel's MTU and reaches the pod: {text}"
    );
}
