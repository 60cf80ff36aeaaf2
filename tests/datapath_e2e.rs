//! End-to-end: real packets between network-namespace pods through the
//! agent of a real `plexus serve`, topology provisioned through the API.
//! Needs root (namespaces, veths, AF_PACKET); CI runs as root.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::netns::Pod;
use support::plexus::Plexus;
use support::udp::{udp_flows, udp_sequence};
use uuid::Uuid;

/// A tenant network: one router, bridges on 10.0.N.0/24 behind it.
struct Net {
    plexus: Plexus,
    client: api::Client,
    host: Uuid,
    tenant: Uuid,
    router: Uuid,
}

impl Net {
    async fn new() -> Net {
        Net::with(&["--no-uplink"]).await
    }

    /// A network on a `plexus serve` given `args`.
    async fn with(args: &[&str]) -> Net {
        let plexus = Plexus::start_with(args).await;
        let client = plexus.client();
        let host = plexus.host().await;
        let tenant = client
            .create_tenant(&format!("t-{}", Uuid::new_v4()))
            .await
            .unwrap()
            .id;
        let router = client.create_router(tenant, "r").await.unwrap().id;
        Net {
            plexus,
            client,
            host,
            tenant,
            router,
        }
    }

    /// A bridge for 10.0.`n`.0/24 linked to the router (gateway 10.0.`n`.1);
    /// returns (bridge, router port).
    async fn subnet(&self, n: u8) -> (Uuid, Uuid) {
        let bridge = self
            .client
            .create_bridge(self.tenant, &format!("net{n}"))
            .await
            .unwrap()
            .id;
        let rport = self
            .client
            .create_router_port(self.router, &format!("10.0.{n}.1/24"))
            .await
            .unwrap();
        let bport = self
            .client
            .create_bridge_port(bridge, json!({}))
            .await
            .unwrap();
        self.client.link(rport.id, bport.id).await.unwrap();
        (bridge, rport.id)
    }

    /// The router port of subnet `n` (address 10.0.`n`.1).
    async fn gateway_port(&self, n: u8) -> Uuid {
        let ports: Vec<nsdb::Port> = self
            .client
            .list(&format!("/v1/routers/{}/ports", self.router))
            .await
            .unwrap();
        let address = format!("10.0.{n}.1/24");
        ports
            .iter()
            .find(|p| p.address.map(|a| a.to_string()) == Some(address.clone()))
            .unwrap()
            .id
    }

    /// A port of `bridge` with `mac` bound to a missing interface, which
    /// the agent creates as a TAP; the TAP then moved into a pod of its own
    /// at `addr` (the agent keeps its file descriptor, the device can live
    /// in the pod).
    async fn tap_pod(&self, bridge: Uuid, mac: &str, addr: &str) -> Pod {
        let tap = support::netns::unique("pxt");
        let port = self
            .client
            .create_bridge_port(bridge, json!({"mac": mac}))
            .await
            .unwrap();
        self.client.bind(port.id, self.host, &tap).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::path::Path::new("/sys/class/net").join(&tap).exists() {
            assert!(
                Instant::now() < deadline,
                "the agent did not create TAP {tap}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Pod::adopting(&tap, mac, addr)
    }

    /// A pod at 10.0.`n`.`host` on `bridge`, bound to this host.
    async fn pod(&self, bridge: Uuid, n: u8, host: u8) -> (Pod, Uuid) {
        let ip = format!("10.0.{n}.{host}");
        let pod = Pod::new(&format!("{ip}/24"), Some(&format!("10.0.{n}.1")));
        let port = self
            .client
            .create_bridge_port(bridge, json!({"mac": pod.mac, "allowed_addresses": [{"mac": pod.mac, "ip": format!("{ip}/32")}]}))
            .await
            .unwrap();
        self.client
            .bind(port.id, self.host, &pod.host_if)
            .await
            .unwrap();
        (pod, port.id)
    }
}

/// Pings until one answer comes back (the agent picks bindings up within a second).
fn wait_reachable(pod: &Pod, dst: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if pod.ping(dst, 1, &[]).0 == 1 {
            return;
        }
    }
    panic!("{dst} never became reachable from {}", pod.netns);
}

/// Sends `bytes` pseudo-random bytes from `from` to `to:port` over TCP and
/// checks the receiver got exactly them (SHA-256 on both ends).
fn tcp_transfer_checked(from: &Pod, to: &Pod, to_ip: &str, bytes: usize) {
    let server = "import socket,hashlib,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',5001));s.listen(1);print('ready',flush=True)\nc,_=s.accept();h=hashlib.sha256();n=0\n\
         while True:\n  d=c.recv(1<<16)\n  if not d: break\n  h.update(d);n+=len(d)\nprint(n,h.hexdigest(),flush=True)";
    let mut receiver = std::process::Command::new("ip")
        .args(["netns", "exec", &to.netns, "python3", "-c", server])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(receiver.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let client = format!(
        "import socket,hashlib,random\nr=random.Random(42);data=r.randbytes({bytes})\n\
         s=socket.create_connection(('{to_ip}',5001),timeout=30);s.sendall(data);s.close()\n\
         print(len(data),hashlib.sha256(data).hexdigest())"
    );
    let sent = from.exec(&["python3", "-c", &client]);
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let _ = receiver.wait();
    assert_eq!(
        line.trim(),
        String::from_utf8_lossy(&sent.stdout).trim(),
        "the bytes received differ from those sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_one_bridge_ping_and_transfer_through_the_flow_cache() {
    let net = Net::new().await;
    let (bridge, _) = net.subnet(1).await;
    let (a, _) = net.pod(bridge, 1, 10).await;
    let (b, _) = net.pod(bridge, 1, 11).await;
    wait_reachable(&a, "10.0.1.11");
    let (received, text) = a.ping("10.0.1.11", 5, &[]);
    assert_eq!(received, 5, "{text}");
    assert!(
        text.contains("ttl=64"),
        "L2 forwarding keeps the TTL: {text}"
    );

    let hits_before = net.plexus.metric("plexus_flow_cache_hits_total").await;
    tcp_transfer_checked(&a, &b, "10.0.1.11", 20 << 20);
    let hits = net.plexus.metric("plexus_flow_cache_hits_total").await - hits_before;
    let misses = net.plexus.metric("plexus_flow_cache_misses_total").await;
    assert!(
        hits > 100,
        "a long transfer is served by the cache: {hits} hits, {misses} misses"
    );
    assert!(
        misses < hits / 10,
        "few packets run the engine: {hits} hits, {misses} misses"
    );
    assert!(net.plexus.metric("plexus_port_packets_total").await > 0);
}

/// A port's counter in the agent's metrics (`kind`: packets or bytes).
async fn port_counter(plexus: &Plexus, kind: &str, port: Uuid, pod: &Pod, direction: &str) -> u64 {
    let series = format!(
        "plexus_port_{kind}_total{{port=\"{port}\",interface=\"{}\",direction=\"{direction}\"}}",
        pod.host_if
    );
    plexus.metric(&series).await
}

/// The router's answers (ARP, echo replies) count as answered and
/// generated, not as drops; bytes are counted both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_answers_are_counted_as_answered_and_bytes_both_ways() {
    let net = Net::new().await;
    let (bridge, _) = net.subnet(1).await;
    let (a, port) = net.pod(bridge, 1, 10).await;
    // No IPv6 chatter (router solicitations, MLD) the router would drop.
    a.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    wait_reachable(&a, "10.0.1.1");
    let before = |dir| port_counter(&net.plexus, "packets", port, &a, dir);
    let (answered, dropped) = (before("answered").await, before("drop").await);
    let (rx_bytes, tx_bytes) = (
        port_counter(&net.plexus, "bytes", port, &a, "rx").await,
        port_counter(&net.plexus, "bytes", port, &a, "tx").await,
    );
    let generated = net.plexus.metric("plexus_generated_frames_total").await;
    let (received, text) = a.ping("10.0.1.1", 5, &["-s", "1000"]);
    assert_eq!(received, 5, "{text}");
    let after = |dir| port_counter(&net.plexus, "packets", port, &a, dir);
    assert!(
        after("answered").await >= answered + 5,
        "5 echo requests answered"
    );
    let metrics = reqwest::get(format!("{}/metrics", net.plexus.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let drops: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("plexus_datapath_drops_total"))
        .collect();
    assert_eq!(
        after("drop").await,
        dropped,
        "answers are not drops: {drops:?}"
    );
    let rx = port_counter(&net.plexus, "bytes", port, &a, "rx").await - rx_bytes;
    let tx = port_counter(&net.plexus, "bytes", port, &a, "tx").await - tx_bytes;
    assert!(rx >= 5 * 1042 && tx >= 5 * 1042, "{rx} bytes in, {tx} out");
    let made = net.plexus.metric("plexus_generated_frames_total").await - generated;
    assert!(made >= 5, "{made} frames generated");

    // A packet for a next hop nobody answers waits for ARP: held, then
    // answered host unreachable — never a drop.
    net.subnet(2).await;
    let held = after("held").await;
    let (_, text) = a.ping("10.0.2.99", 1, &["-W", "5"]);
    assert!(text.contains("Unreachable"), "{text}");
    assert!(after("held").await > held, "the packet was held: {text}");
    assert_eq!(after("drop").await, dropped, "held is not dropped");
}

/// Every poll mode forwards, and keeps each port's frames in order: the
/// poller and the ports' tasks never receive from one port at once. So do
/// the shared packet sockets, receiving for every port (their fanout
/// keeps each interface's frames on one socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poll_mode_forwards_in_order() {
    for (mode, sockets, polls) in [
        ("off", "auto", false),
        ("adaptive:100", "auto", true),
        ("always", "auto", true),
        ("off", "shared", false),
        ("always", "shared", true),
    ] {
        let args = [
            "--no-uplink",
            "--poll-mode",
            mode,
            "--packet-sockets",
            sockets,
        ];
        let net = Net::with(&args).await;
        let shared = net.plexus.metric("plexus_shared_packet_sockets").await;
        assert!(
            shared > 0,
            "{sockets}: shared sockets opened, not fallen back"
        );
        let mode = format!("{mode}, {sockets} sockets");
        let (bridge, _) = net.subnet(1).await;
        let (a, _) = net.pod(bridge, 1, 10).await;
        let (b, _) = net.pod(bridge, 1, 11).await;
        wait_reachable(&a, "10.0.1.11");
        let (received, text) = a.ping("10.0.1.11", 5, &["-i", "0.05"]);
        assert_eq!(received, 5, "{mode}: {text}");
        tcp_transfer_checked(&a, &b, "10.0.1.11", 8 << 20);
        let got = udp_sequence(&a, &b, "10.0.1.11", 20_000);
        assert!(
            got.len() > 2_000,
            "{mode}: {} of 20000 datagrams",
            got.len()
        );
        let reordered = got.windows(2).filter(|w| w[1] < w[0]).count();
        assert_eq!(reordered, 0, "{mode}: datagrams arrived out of order");
        assert!(
            got.iter().all(|&n| n < 20_000) && got.windows(2).all(|w| w[0] != w[1]),
            "{mode}: every datagram arrives once and unchanged"
        );
        let polled = net.plexus.metric("plexus_poller_batches_total").await;
        assert_eq!(polled > 0, polls, "{mode}: {polled} batches polled");
        // Runs of the flood's datagrams left as UDP GSO frames, and still
        // arrived one by one, in order, above.
        let merged = net.plexus.metric("plexus_udp_datagrams_merged_total").await;
        assert!(merged > 0, "{mode}: no datagrams merged");
    }
}

/// A pod's veth deleted and made again under the same name is served
/// again, whether its port had a socket of its own (which the kernel
/// closes) or the shared sockets' (which check the interface's index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veth_made_again_is_served_again() {
    for sockets in ["per-port", "shared"] {
        let net = Net::with(&["--no-uplink", "--packet-sockets", sockets]).await;
        let shared = net.plexus.metric("plexus_shared_packet_sockets").await;
        assert_eq!(
            shared > 0,
            sockets == "shared",
            "{sockets}: {shared} shared sockets"
        );
        let (bridge, _) = net.subnet(1).await;
        let (a, _) = net.pod(bridge, 1, 10).await;
        let (b, _) = net.pod(bridge, 1, 11).await;
        wait_reachable(&a, "10.0.1.11");
        support::netns::run(&["ip", "link", "del", &b.host_if]);
        // The agent makes a TAP for a bound interface it cannot find: if
        // it looked between the delete and the add, its TAP has the name;
        // that TAP goes, and the veth is made again.
        let made = (0..20).any(|_| {
            let added = std::process::Command::new("ip")
                .args([
                    "link", "add", &b.host_if, "type", "veth", "peer", "name", "eth0",
                ])
                .args(["netns", &b.netns])
                .output()
                .expect("spawn ip");
            if !added.status.success() {
                let _ = std::process::Command::new("ip")
                    .args(["link", "del", &b.host_if])
                    .output();
            }
            added.status.success()
        });
        assert!(made, "{sockets}: veth {} not made again", b.host_if);
        support::netns::run(&["ip", "link", "set", &b.host_if, "up"]);
        b.exec(&["ip", "link", "set", "eth0", "address", &b.mac]);
        b.exec(&["ip", "link", "set", "eth0", "up"]);
        b.exec(&["ip", "addr", "add", "10.0.1.11/24", "dev", "eth0"]);
        wait_reachable(&a, "10.0.1.11");
        let (received, text) = a.ping("10.0.1.11", 3, &["-i", "0.05"]);
        assert_eq!(received, 3, "{sockets}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_ttl_and_icmp_errors_across_a_router() {
    let net = Net::new().await;
    let (bridge1, rport1) = net.subnet(1).await;
    let (bridge2, _) = net.subnet(2).await;
    let (a, _) = net.pod(bridge1, 1, 10).await;
    let (b, _) = net.pod(bridge2, 2, 10).await;

    // The gateway answers, and the pod's ARP table holds the router port's MAC.
    wait_reachable(&a, "10.0.1.1");
    let rport: nsdb::Port = net
        .client
        .get(&format!("/v1/ports/{rport1}"))
        .await
        .unwrap();
    let neigh = String::from_utf8(a.exec(&["ip", "neigh", "show", "10.0.1.1"]).stdout).unwrap();
    assert!(
        neigh.contains(&rport.mac.to_string()),
        "ARP entry {neigh} lacks {}",
        rport.mac
    );

    // Across the router: each direction loses one TTL.
    wait_reachable(&a, "10.0.2.10");
    let (received, text) = a.ping("10.0.2.10", 3, &[]);
    assert_eq!(received, 3, "{text}");
    assert!(
        text.contains("ttl=63"),
        "one router hop decrements the TTL once: {text}"
    );
    tcp_transfer_checked(&b, &a, "10.0.1.10", 4 << 20);

    // TTL 1 expires at the router, which says so from its port address.
    let (_, text) = a.ping("10.0.2.10", 1, &["-t", "1"]);
    assert!(
        text.contains("From 10.0.1.1") && text.contains("Time to live exceeded"),
        "{text}"
    );

    // No route: net unreachable.
    let (_, text) = a.ping("192.168.77.1", 1, &[]);
    assert!(
        text.contains("From 10.0.1.1") && text.contains("Destination Net Unreachable"),
        "{text}"
    );

    // Reject: administratively prohibited; blackhole: silence.
    net.client
        .create_route(
            net.router,
            json!({"dst": "172.16.0.0/16", "type": "reject"}),
        )
        .await
        .unwrap();
    net.client
        .create_route(
            net.router,
            json!({"dst": "172.17.0.0/16", "type": "blackhole"}),
        )
        .await
        .unwrap();
    let (_, text) = a.ping("172.16.0.1", 1, &[]);
    assert!(
        text.contains("From 10.0.1.1") && text.contains("Packet filtered"),
        "{text}"
    );
    let (received, text) = a.ping("172.17.0.1", 2, &[]);
    assert_eq!(received, 0, "{text}");
    assert!(
        !text.contains("From 10.0.1.1"),
        "a blackhole answers nothing: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_and_routes_take_effect_at_run_time() {
    let net = Net::new().await;
    let (bridge1, rport1) = net.subnet(1).await;
    let (bridge2, _) = net.subnet(2).await;
    let (a, _) = net.pod(bridge1, 1, 10).await;
    let (b, b_port) = net.pod(bridge2, 2, 10).await;
    wait_reachable(&a, "10.0.2.10");

    // Unbinding stops the traffic; rebinding restores it.
    net.client
        .delete(&format!("/v1/ports/{b_port}/binding"), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        a.ping("10.0.2.10", 3, &[]).0,
        0,
        "an unbound port carries nothing"
    );
    net.client.bind(b_port, net.host, &b.host_if).await.unwrap();
    wait_reachable(&a, "10.0.2.10");

    // A more specific route added later captures already-cached flows, and
    // deleting it restores them.
    let (received, _) = a.ping("10.0.2.10", 3, &[]);
    assert_eq!(received, 3);
    let blackhole = net
        .client
        .create_route(
            net.router,
            json!({"dst": "10.0.2.10/32", "type": "blackhole"}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.ping("10.0.2.10", 3, &[]).0,
        0,
        "the new route applies to the cached flow"
    );
    net.client
        .delete(&format!("/v1/routes/{}", blackhole.id), None)
        .await
        .unwrap();
    wait_reachable(&a, "10.0.2.10");
    let _ = rport1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_are_dropped_and_counted() {
    let net = Net::new().await;
    let (bridge, _) = net.subnet(1).await;
    let (a, _) = net.pod(bridge, 1, 10).await;
    let (_b, _) = net.pod(bridge, 1, 11).await;
    wait_reachable(&a, "10.0.1.11");
    let before = net
        .plexus
        .metric("plexus_datapath_drops_total{reason=\"malformed\"}")
        .await;
    // Truncated headers, a bad IPv4 version, a lying length: all from a raw socket.
    let garbage = "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('eth0',0))\n\
        eth=b'\\x02'*6+b'\\x02\\x00\\x00\\x00\\x00\\x01'\n\
        frames=[eth+b'\\x08\\x00'+b'\\x45\\x00\\xff\\xff'+b'\\x00'*16, eth+b'\\x08\\x00'+b'\\x65'+b'\\x00'*40,\n\
                eth+b'\\x08\\x06'+b'\\x00\\x01\\x08', eth+b'\\x08\\x00'+b'\\x4f'+b'\\x00'*30]\n\
        for i in range(50):\n  s.send(frames[i%len(frames)])\n";
    a.exec(&["python3", "-c", garbage]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut dropped = 0;
    while Instant::now() < deadline {
        dropped = net
            .plexus
            .metric("plexus_datapath_drops_total{reason=\"malformed\"}")
            .await
            - before;
        if dropped >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dropped >= 50,
        "every garbage frame is a counted drop: {dropped}"
    );
    let (received, text) = a.ping("10.0.1.11", 3, &[]);
    assert_eq!(received, 3, "the agent keeps forwarding: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_resolves_an_unknown_gateway_by_arp() {
    let net = Net::new().await;
    let (bridge1, _) = net.subnet(1).await;
    let (bridge2, _) = net.subnet(2).await;
    let (a, _) = net.pod(bridge1, 1, 10).await;
    // A gateway the NSDB does not know the MAC of: its port has no allowed
    // addresses, so the router has to ask for 10.0.2.254 itself.
    let gw = Pod::new("10.0.2.254/24", Some("10.0.2.1"));
    gw.exec(&["ip", "addr", "add", "172.20.0.1/32", "dev", "lo"]);
    let port = net
        .client
        .create_bridge_port(bridge2, json!({"mac": gw.mac}))
        .await
        .unwrap();
    net.client
        .bind(port.id, net.host, &gw.host_if)
        .await
        .unwrap();
    net.client
        .create_route(net.router, json!({"dst": "172.20.0.0/16", "next_hop_port": net.gateway_port(2).await, "next_hop_gateway": "10.0.2.254"}))
        .await
        .unwrap();
    wait_reachable(&a, "172.20.0.1");
    let (received, text) = a.ping("172.20.0.1", 3, &[]);
    assert_eq!(received, 3, "{text}");
    assert!(
        net.plexus
            .metric("plexus_learned_entries{table=\"arp\"}")
            .await
            >= 1,
        "the router learned the gateway's MAC"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_bound_to_a_missing_interface_gets_a_tap() {
    let net = Net::new().await;
    let (bridge, _) = net.subnet(1).await;
    let (a, _) = net.pod(bridge, 1, 10).await;
    let tap_pod = net
        .tap_pod(bridge, "02:00:00:00:77:01", "10.0.1.20/24")
        .await;
    wait_reachable(&a, "10.0.1.20");
    let (received, text) = tap_pod.ping("10.0.1.10", 3, &[]);
    assert_eq!(received, 3, "{text}");
    tcp_transfer_checked(&a, &tap_pod, "10.0.1.20", 4 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_source_addresses_are_dropped_and_counted() {
    let net = Net::new().await;
    let (bridge, _) = net.subnet(1).await;
    let (a, _) = net.pod(bridge, 1, 10).await;
    let (_b, _) = net.pod(bridge, 1, 11).await;
    wait_reachable(&a, "10.0.1.11");
    let spoofed = "plexus_datapath_drops_total{reason=\"spoofed\"}";
    let before = net.plexus.metric(spoofed).await;

    // An address the port is not allowed to use.
    a.exec(&["ip", "addr", "add", "10.0.1.99/24", "dev", "eth0"]);
    let (received, text) = a.ping("10.0.1.11", 3, &["-I", "10.0.1.99"]);
    assert_eq!(
        received, 0,
        "a spoofed source IP must not get through: {text}"
    );
    // A MAC the port is not allowed to use.
    a.exec(&["ip", "link", "set", "eth0", "address", "02:66:66:66:66:66"]);
    a.exec(&["ip", "neigh", "flush", "all"]);
    let (received, text) = a.ping("10.0.1.11", 3, &[]);
    assert_eq!(
        received, 0,
        "a spoofed source MAC must not get through: {text}"
    );
    assert!(
        net.plexus.metric(spoofed).await > before,
        "spoofed frames are counted"
    );

    // Back to its own addresses, the pod talks again.
    a.exec(&["ip", "link", "set", "eth0", "address", &a.mac]);
    a.exec(&["ip", "neigh", "flush", "all"]);
    wait_reachable(&a, "10.0.1.11");
}

/// Every flow of `got` ((flow, number) pairs, `flows` flows of
/// `per_flow` datagrams) arrived in order and unchanged, and some of each
/// arrived (a loaded machine drops many of a flood).
fn assert_flows_in_order(got: &[(u32, u32)], flows: u32, per_flow: u32, what: &str) {
    assert!(
        got.len() as u32 >= flows * per_flow / 20,
        "{what}: {} of {} datagrams",
        got.len(),
        flows * per_flow
    );
    for flow in 0..flows {
        let numbers: Vec<u32> = got
            .iter()
            .filter(|(f, _)| *f == flow)
            .map(|&(_, n)| n)
            .collect();
        assert!(!numbers.is_empty(), "{what}: nothing of flow {flow}");
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{what}: flow {flow} out of order or repeated"
        );
        assert!(
            numbers.iter().all(|&n| n < per_flow),
            "{what}: flow {flow} unchanged"
        );
    }
}

/// A port with extra receive queues, a veth's or a TAP's, spreads its
/// flows over them (the metric counts frames the extra queues received),
/// delivers every flow whole and keeps each in order; with one queue
/// nothing goes elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ports_flows_spread_over_its_receive_queues_in_order() {
    let (flows, per_flow) = (16, 500);
    for queues in ["2", "1"] {
        let net = Net::with(&[
            "--no-uplink",
            "--packet-sockets",
            "per-port",
            "--port-queues",
            queues,
        ])
        .await;
        let (bridge, _) = net.subnet(1).await;
        let (a, _) = net.pod(bridge, 1, 10).await;
        let (b, _) = net.pod(bridge, 1, 11).await;
        wait_reachable(&a, "10.0.1.11");
        let spoofed = "plexus_datapath_drops_total{reason=\"spoofed\"}";
        let spoofed_before = net.plexus.metric(spoofed).await;
        tcp_transfer_checked(&a, &b, "10.0.1.11", 4 << 20);
        let spread = "plexus_port_queue_frames_total";
        // A TAP the agent creates gets as many queues as a veth port.
        let tap_pod = net
            .tap_pod(bridge, "02:00:00:00:78:01", "10.0.1.20/24")
            .await;
        wait_reachable(&tap_pod, "10.0.1.11");
        for (from, kind) in [(&a, "veth"), (&tap_pod, "TAP")] {
            let before = net.plexus.metric(spread).await;
            let got = udp_flows(from, &b, "10.0.1.11", flows, per_flow);
            let what = format!("{queues} queues, {kind}");
            assert_flows_in_order(&got, flows, per_flow, &what);
            // The flood itself went partly through an extra queue (not
            // only the transfer before it).
            let on_extra = net.plexus.metric(spread).await - before;
            assert_eq!(
                on_extra > 0,
                queues != "1",
                "{what}: {on_extra} frames on extra queues"
            );
        }

        // Nothing the agent sent into a pod came back as if the pod sent it.
        let spoofed_after = net.plexus.metric(spoofed).await;
        assert_eq!(
            spoofed_after, spoofed_before,
            "{queues} queues: frames read back"
        );
    }
}
