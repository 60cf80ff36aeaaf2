//! Interop with standard VXLAN: a bridge extended to a Linux kernel `vxlan`
//! device (a VTEP port), path-MTU answers for frames the tunnel cannot
//! carry, and datagrams from unregistered senders refused.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{
    join_underlay, join_underlay_with, reachable, tcp_transfer, Cluster, Netns, POD_MTU,
};
use support::netns::Pod;

/// A namespace on the cluster's underlay at `ip` (192.168.77.x).
fn on_underlay(cluster: &Cluster, ip: &str) -> Netns {
    let ns = Netns::new("pxk");
    join_underlay(&cluster.underlay, &ns, ip);
    ns
}

/// A kernel VTEP at `ip` on the underlay: a `vxlan` device with VNI 42
/// towards host 0's tunnel address (as a flannel-style host or a hardware
/// VTEP would be), carrying `addr`.
fn kernel_vtep(cluster: &Cluster, ip: &str, addr: &str) -> Netns {
    let ns = on_underlay(cluster, ip);
    ns.exec(&[
        "ip",
        "link",
        "add",
        "vx42",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "remote",
        "192.168.77.1",
        "local",
        ip,
        "dev",
        "ul0",
    ]);
    ns.exec(&[
        "ip",
        "link",
        "set",
        "vx42",
        "mtu",
        &POD_MTU.to_string(),
        "up",
    ]);
    ns.exec(&["ip", "addr", "add", addr, "dev", "vx42"]);
    ns
}

/// The pod (10.64.0.1) and the host behind the kernel VTEP (10.64.0.100)
/// reach each other: `pings` pings back, 4 MiB of TCP each way. With
/// `segmented`, the kernel VTEP sends MSS-sized datagrams (as through a
/// NIC that segments), and its segments must reach the pod merged into
/// TSO frames (software GRO, checksums verified first).
fn talk_both_ways(cluster: &Cluster, pod: &Pod, behind: &Pod, pings: u32, segmented: bool) {
    assert!(
        reachable(pod, "10.64.0.100", Duration::from_secs(15)),
        "the pod never reached the host behind the kernel VTEP\n{}",
        cluster.logs()
    );
    let (received, text) = behind.ping("10.64.0.1", pings, &[]);
    assert_eq!(received, pings, "the kernel side pings the pod: {text}");
    let (sent, got, len) = tcp_transfer(pod, behind, "10.64.0.100", 4 << 20);
    assert_eq!((&sent, len), (&got, 4 << 20), "pod → kernel VTEP");
    let merged_before = counter(
        &cluster.hosts[0].metrics(),
        "plexus_tcp_segments_merged_total",
    );
    let (sent, got, len) = tcp_transfer(behind, pod, "10.64.0.1", 4 << 20);
    assert_eq!((&sent, len), (&got, 4 << 20), "kernel VTEP → pod");
    let merged = counter(
        &cluster.hosts[0].metrics(),
        "plexus_tcp_segments_merged_total",
    );
    assert!(
        !segmented || merged > merged_before + 100,
        "the kernel VTEP's TCP segments were not merged ({merged_before} → {merged})"
    );
}

/// The unlabelled counter `name` of an agent's metrics.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// The drop counter `reason` of an agent's metrics.
fn drops(metrics: &str, reason: &str) -> u64 {
    let label = format!("plexus_datapath_drops_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&label)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_extends_to_a_kernel_vxlan_device() {
    let cluster = Cluster::start(1).await;
    let c = &cluster.client;
    let tenant = c.create_tenant("vtep").await.unwrap();
    let bridge = c.create_bridge(tenant.id, "b").await.unwrap();
    let pod = cluster.hosts[0].pod("10.64.0.1/24", None);
    cluster.attach(bridge.id, &pod, 0).await;

    // The kernel side.
    let kernel = kernel_vtep(&cluster, "192.168.77.50", "10.64.0.100/24");
    let behind = Pod {
        netns: kernel.0.clone(),
        host_if: String::new(),
        mac: String::new(),
    };

    let vtep = c
        .create_bridge_port(
            bridge.id,
            json!({"vtep": {"vni": 42, "remote_ip": "192.168.77.50"}}),
        )
        .await
        .unwrap();
    c.bind(vtep.id, cluster.hosts[0].id, "vtep42")
        .await
        .unwrap();

    // On one machine the kernel hands its veth underlay whole TCP
    // super-frames (tunnel GSO no NIC ever segments); a VTEP on a real
    // NIC puts MSS-sized datagrams on the wire. One segment per skb on
    // the underlay makes the kernel segment here too.
    kernel.exec(&["ip", "link", "set", "ul0", "gso_max_segs", "1"]);
    talk_both_ways(&cluster, &pod, &behind, 5, true);

    // tshark decodes both directions as VXLAN with VNI 42.
    let packets = cluster.capture_vxlan(|| {
        let (received, text) = pod.ping("10.64.0.100", 3, &[]);
        assert_eq!(received, 3, "{text}");
    });
    let decoded = |src: &str, icmp: u8| {
        packets
            .iter()
            .any(|(vni, s, _, t)| *vni == 42 && s == src && *t == Some(icmp))
    };
    assert!(
        decoded("192.168.77.1", 8) && decoded("192.168.77.50", 0),
        "echo requests from Plexus and replies from the kernel, as VXLAN 42: {packets:?}"
    );

    // The endpoint moves (another kernel VTEP): the port follows it.
    let _second = kernel_vtep(&cluster, "192.168.77.51", "10.64.0.101/24");
    let _: nsdb::Port = c
        .patch(
            &format!("/v1/ports/{}", vtep.id),
            &json!({"vtep": {"vni": 42, "remote_ip": "192.168.77.51"}}),
            None,
        )
        .await
        .unwrap();
    assert!(
        reachable(&pod, "10.64.0.101", Duration::from_secs(10)),
        "the VTEP port did not follow its new endpoint\n{}",
        cluster.logs()
    );
    let (received, _) = pod.ping("10.64.0.100", 2, &[]);
    assert_eq!(
        received, 0,
        "the old endpoint is no longer part of the bridge"
    );

    // A datagram with a real port key from an address that is neither a
    // registered host nor the VTEP is dropped and counted.
    let before = drops(&cluster.hosts[0].metrics(), "tunnel_unknown_host");
    let stranger = on_underlay(&cluster, "192.168.77.66");
    let key = cluster
        .client
        .list::<nsdb::Port>("/v1/ports")
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.interface_name.as_deref() == Some(pod.host_if.as_str()))
        .unwrap()
        .tunnel_key;
    let forged = format!(
        "import socket
vni={key}
hdr=bytes([8,0,0,0,(vni>>16)&255,(vni>>8)&255,vni&255,0])
frame=bytes.fromhex('ffffffffffff020000000066'+'0806')+bytes(28)
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for _ in range(5): s.sendto(hdr+frame,('192.168.77.1',4789))\n"
    );
    stranger.exec(&["python3", "-c", &forged]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = drops(&cluster.hosts[0].metrics(), "tunnel_unknown_host");
        if now >= before + 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forged datagrams were not counted ({before} → {now})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_with_df_get_fragmentation_needed() {
    let cluster = Cluster::start(2).await;
    let c = &cluster.client;
    let tenant = c.create_tenant("mtu").await.unwrap();
    let bridge = c.create_bridge(tenant.id, "b").await.unwrap();
    let a: Pod = cluster.hosts[0].pod("10.65.0.1/24", None);
    let b = cluster.hosts[1].pod("10.65.0.2/24", None);
    // A pod configured for the underlay's full MTU, not the tunnel's.
    a.exec(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    b.exec(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    cluster.attach(bridge.id, &a, 0).await;
    cluster.attach(bridge.id, &b, 1).await;
    assert!(
        reachable(&a, "10.65.0.2", Duration::from_secs(15)),
        "{}",
        cluster.logs()
    );
    // 1472 bytes of payload make a 1500-byte IP packet: too big for the
    // tunnel (1450) and not to be fragmented.
    let (received, text) = a.ping("10.65.0.2", 3, &["-M", "do", "-s", "1472"]);
    assert_eq!(received, 0, "{text}");
    assert!(
        text.contains("mtu = 1450") || text.contains("mtu=1450"),
        "the sender learns the tunnel's MTU: {text}"
    );
    // The kernel took note: the route to b now carries MTU 1450.
    let route = a.exec(&["ip", "route", "get", "10.65.0.2"]);
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    assert!(route.contains("mtu 1450"), "{route}");
    // Without DF the packet still arrives (the underlay fragments it).
    let (received, text) = a.ping("10.65.0.2", 3, &["-M", "dont", "-s", "1472"]);
    assert_eq!(received, 3, "{text}");
    // And TCP adapts: a bulk transfer from a full-MTU pod is byte-exact.
    let (sent, got, len) = tcp_transfer(&a, &b, "10.65.0.2", 2 << 20);
    assert_eq!((&sent, len), (&got, 2 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_extends_to_a_kernel_vxlan_device_over_an_ipv6_underlay() {
    let cluster = Cluster::start_v6_underlay(1).await;
    let c = &cluster.client;
    let tenant = c.create_tenant("vtep6").await.unwrap();
    let bridge = c.create_bridge(tenant.id, "b").await.unwrap();
    let pod = cluster.hosts[0].pod("10.64.0.1/24", None);
    pod.exec(&["ip", "link", "set", "eth0", "mtu", "1430"]);
    cluster.attach(bridge.id, &pod, 0).await;

    // A kernel VTEP on the IPv6 underlay, toward host 0's IPv6 address.
    let kernel = Netns::new("pxk");
    join_underlay_with(&cluster.underlay, &kernel, "fd77::50", &["/64", "nodad"]);
    kernel.exec(&[
        "ip", "link", "add", "vx42", "type", "vxlan", "id", "42", "dstport", "4789", "remote",
        "fd77::1", "local", "fd77::50", "dev", "ul0",
    ]);
    kernel.exec(&["ip", "link", "set", "vx42", "mtu", "1430", "up"]);
    kernel.exec(&["ip", "addr", "add", "10.64.0.100/24", "dev", "vx42"]);
    let behind = Pod {
        netns: kernel.0.clone(),
        host_if: String::new(),
        mac: String::new(),
    };
    let vtep = c
        .create_bridge_port(
            bridge.id,
            json!({"vtep": {"vni": 42, "remote_ip": "fd77::50"}}),
        )
        .await
        .unwrap();
    c.bind(vtep.id, cluster.hosts[0].id, "vtep42")
        .await
        .unwrap();

    talk_both_ways(&cluster, &pod, &behind, 3, false);
}
