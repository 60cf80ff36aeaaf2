//! End-to-end: IPv6 is routed, not NATed, between the host and pods through
//! the provider uplink, the TAP the agent creates in this namespace. The
//! uplink port gets an IPv6 address (`extra_addresses`), so the agent gives
//! the host side the first address of that subnet and routes the provider
//! router's IPv6 tenant prefixes through it. The tenant link is made
//! dual-stack by hand (IPv6 `extra_addresses` on both link ports, a route
//! each way, the host's IPv6 address let in by the tenant router's inbound
//! chain), as docs/engine.md describes. The host pings the pod's
//! IPv6 address, and each side's server sees the other's own address.
//!
//! The second case does none of that by hand: `plexus serve` with one IPv6
//! flag (`--pod-cidr6`) makes the provider and every tenant network
//! dual-stack, and pods attached by `plexus-cni` get both families.
//! Needs root.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cni::{sandbox, Network};
use support::ipv6::{give_ipv6, tcp6_probe};
use support::netns::{unique, Pod};
use support::plexus::Plexus;
use support::world::{peer_of, tcp6_server, wait_ping, Deployment};
use uuid::Uuid;

/// The uplink's IPv6 subnet: the uplink port is `::2`, the host `::1`.
const UPLINK6: &str = "fd6e:1::2/64";
const HOST6: &str = "fd6e:1::1";
/// The tenant link, provider side `::1`, tenant side `::2`.
const LINK_PROVIDER6: &str = "fd6e:1ff::1";
const LINK_TENANT6: &str = "fd6e:1ff::2";
/// The tenant's IPv6 pod subnet, its gateway and the pod.
const PODS6: &str = "fd6e:10::/64";
const GW6: &str = "fd6e:10::1";
const POD6: &str = "fd6e:10::10";

/// A server in this namespace on `[address]:port` answering each line with
/// `<tag> <peer-ip>:<peer-port>`; killed when dropped.
struct HostServer(Child);

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host_server6(address: &str, port: u16, tag: &str) -> HostServer {
    let script = format!(
        "import socket,threading
def serve(c,a):
  f=c.makefile('rwb')
  for line in f:
    f.write(('{tag} %s:%d\\n'%a[:2]).encode());f.flush()
s=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('{address}',{port}));s.listen(16)
print('ready',flush=True)
while True:
  c,a=s.accept();threading.Thread(target=serve,args=(c,a),daemon=True).start()\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the host server");
    let stdout = child.stdout.take().unwrap();
    let server = HostServer(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the host server did not start");
    server
}

/// One line over TCP from this namespace to `[dst]:port`; the answer or
/// `ERR <reason>`.
fn host_probe6(dst: &str, port: u16) -> String {
    let script = format!(
        "import socket
try:
  s=socket.socket(socket.AF_INET6);s.settimeout(3)
  s.connect(('{dst}',{port}));s.sendall(b'hi\\n')
  print(s.makefile().readline().strip())
except Exception as e:
  print('ERR',type(e).__name__)\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Gives `port` the IPv6 `extra_addresses` `addresses`.
async fn extra_addresses(d: &Deployment, port: Uuid, addresses: &[&str]) {
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{port}"),
            &json!({ "extra_addresses": addresses }),
            None,
        )
        .await
        .unwrap();
}

/// Runs `probe` until `ok` holds (10 s at most); the last answer.
fn eventually(what: &str, mut probe: impl FnMut() -> String, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = probe();
        if ok(&answer) || Instant::now() > deadline {
            assert!(ok(&answer), "{what}: got {answer:?}");
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_and_an_ipv6_pod_see_each_others_own_addresses() {
    let tap = unique("pxup");
    let plexus = Plexus::start_with(&[
        "--uplink-interface",
        &tap,
        "--uplink-address",
        "100.127.46.2/24",
        "--pod-cidr",
        "10.235.0.0/16",
        "--external-cidr",
        "100.127.47.0/24",
    ])
    .await;
    let d = Deployment::around(plexus).await;
    let provider: serde_json::Value = d.client.get("/v1/provider").await.unwrap();
    let provider_router: Uuid = provider["router_id"].as_str().unwrap().parse().unwrap();
    let uplink: Uuid = provider["uplink_port_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    extra_addresses(&d, uplink, &[UPLINK6]).await;

    // The tenant: an IPv6 gateway on its bridge, a dual-stack link, and a
    // route each way over the link.
    let t = d.tenant(None).await;
    let link_peer = t.net.link_port.peer_id.expect("the link port is linked");
    extra_addresses(&d, t.net.router_port.id, &[&format!("{GW6}/64")]).await;
    extra_addresses(&d, t.net.link_port.id, &[&format!("{LINK_TENANT6}/64")]).await;
    extra_addresses(&d, link_peer, &[&format!("{LINK_PROVIDER6}/64")]).await;
    d.client
        .create_route(
            provider_router,
            json!({"dst": PODS6, "next_hop_port": link_peer, "next_hop_gateway": LINK_TENANT6}),
        )
        .await
        .unwrap();
    d.client
        .create_route(
            t.net.router.id,
            json!({"dst": "::/0", "next_hop_port": t.net.link_port.id,
                   "next_hop_gateway": LINK_PROVIDER6}),
        )
        .await
        .unwrap();

    // The tenant router lets the host's IPv6 address in, as provisioning
    // does for its IPv4 address.
    let inbound = t.net.router.inbound_chain_id.expect("an inbound chain");
    d.client
        .create_rule(
            inbound,
            json!({"position": 1, "action": "accept", "in_port_ids": [t.net.link_port.id],
                   "src_cidr": format!("{HOST6}/128")}),
        )
        .await
        .unwrap();

    let (pod, pod_port) = d.pod(&t, 10).await;
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{pod_port}"),
            &json!({"allowed_addresses": [
                {"mac": pod.mac, "ip": format!("{}/32", t.address(10))},
                {"mac": pod.mac, "ip": format!("{POD6}/128")},
            ]}),
            None,
        )
        .await
        .unwrap();
    give_ipv6(&pod, POD6, GW6);

    // The host routes the tenant's IPv6 prefix through the uplink and
    // reaches the pod.
    eventually(
        "the host pings the pod over IPv6",
        || {
            let out = Command::new("ping")
                .args(["-6", "-n", "-c", "1", "-W", "1", POD6])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        },
        |text| text.contains(" 0% packet loss"),
    );
    let routes = Command::new("ip")
        .args(["-6", "route", "show", "dev", &tap])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    assert!(
        routes.contains(&format!("{PODS6} via fd6e:1::2")),
        "the host route to the pods goes via the uplink port: {routes}"
    );

    // Host → pod: the pod's server sees the host's own address.
    let _pod_server = tcp6_server(&pod.netns, &[8080], "pod");
    let answer = eventually(
        "the host connects to the pod",
        || host_probe6(POD6, 8080),
        |a| a.starts_with("pod "),
    );
    assert_eq!(peer_of(&answer).0.to_string(), HOST6, "no NAT: {answer}");

    // Pod → host: the host's server sees the pod's own address.
    let _host = host_server6(HOST6, 18086, "host");
    let answer = eventually(
        "the pod connects to the host",
        || tcp6_probe(&pod, HOST6, 18086),
        |a| a.starts_with("host "),
    );
    assert_eq!(peer_of(&answer).0.to_string(), POD6, "no NAT: {answer}");
}

/// The IPv6 pod range of the flag-made case; the rest are the defaults.
const POD_RANGE6: &str = "fd6f:8000::/48";
/// The defaults of `--uplink-address6` (the host side takes `::1`) and of
/// the first tenant's IPv6 link.
const DEFAULT_UPLINK6: &str = "fd70:6c65:7875::2";
const DEFAULT_HOST6: &str = "fd70:6c65:7875::1";

/// The addresses (without prefix) of a CNI ADD result: IPv4, IPv6.
fn addresses(result: &Value) -> (Vec<String>, Vec<String>) {
    let all: Vec<String> = result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|ip| {
            let address = ip["address"].as_str().unwrap();
            address.split('/').next().unwrap().to_string()
        })
        .collect();
    all.into_iter().partition(|a| !a.contains(':'))
}

/// Pings `dst` from `pod` over IPv6 until it answers (10 s at most).
fn wait_ping6(pod: &Pod, dst: &str) {
    eventually(
        &format!("{} pings {dst} over IPv6", pod.netns),
        || pod.ping(dst, 1, &["-6"]).1,
        |text| text.contains(" 0% packet loss"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ipv6_flag_makes_tenant_networks_dual_stack_end_to_end() {
    let tap = unique("pxup");
    let plexus = Plexus::start_with(&[
        "--uplink-interface",
        &tap,
        "--uplink-address",
        "100.127.48.2/24",
        "--pod-cidr",
        "10.236.0.0/16",
        "--external-cidr",
        "100.127.49.0/24",
        "--pod-cidr6",
        POD_RANGE6,
    ])
    .await;
    let d = Deployment::around(plexus).await;
    let provider: nsdb::Provider = d.client.get("/v1/provider").await.unwrap();
    let v6 = provider.ipv6.expect("the provider is dual-stack");
    assert_eq!(v6.pod_cidr.to_string(), POD_RANGE6);
    assert_eq!(
        v6.uplink_gateway.map(|g| g.to_string()).as_deref(),
        Some(DEFAULT_HOST6)
    );

    // The tenant network is dual-stack from `tenant init` alone.
    let t = d.tenant(None).await;
    let pods6 = t.net.pod_cidr6.expect("an IPv6 pod prefix").to_string();
    assert_eq!(pods6, "fd6f:8000::/64");
    let gw6 = t.net.gateway6.expect("an IPv6 gateway").to_string();
    assert_eq!(gw6, "fd6f:8000::1");
    let tenant: nsdb::Tenant = d
        .client
        .get(&format!("/v1/tenants/{}", t.id))
        .await
        .unwrap();

    // Two pods through plexus-cni: one address of each family each.
    let hosts: Vec<nsdb::Host> = d.client.list("/v1/hosts").await.unwrap();
    let host = hosts.iter().find(|h| h.id == d.host).expect("this host");
    let net = Network::new(&d.plexus.url, &d.plexus.token, &host.name);
    let conf = net.with(json!({"tenant": tenant.name}));
    let (a, b) = (sandbox(&net, "v6t-a"), sandbox(&net, "v6t-b"));
    let add = |id: &str, pod: &Pod| {
        net.call("ADD", id, "eth0", Some(&pod.netns), "", &conf)
            .result()
            .clone()
    };
    let (ra, rb) = (add("v6t-a", &a), add("v6t-b", &b));
    let ((a4, a6), (b4, b6)) = (addresses(&ra), addresses(&rb));
    assert_eq!(
        (a4.len(), a6.len(), b4.len(), b6.len()),
        (1, 1, 1, 1),
        "{ra} {rb}"
    );
    for v6 in [&a6[0], &b6[0]] {
        assert!(v6.starts_with("fd6f:8000::"), "{v6} is in the tenant's /64");
    }
    assert_eq!(
        ra["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": t.net.gateway.to_string()}, {"dst": "::/0", "gw": gw6}])
    );

    // The pods reach each other over both families.
    wait_ping6(&a, &b6[0]);
    wait_ping6(&b, &a6[0]);
    wait_ping(&a, &b4[0]);

    // The host routes the tenant's prefix through the uplink and reaches
    // the pod; the route goes via the uplink port's default address.
    eventually(
        "the host pings the pod over IPv6",
        || {
            let out = Command::new("ping")
                .args(["-6", "-n", "-c", "1", "-W", "1", &a6[0]])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        },
        |text| text.contains(" 0% packet loss"),
    );
    let routes = Command::new("ip")
        .args(["-6", "route", "show", "dev", &tap])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    assert!(
        routes.contains(&format!("{pods6} via {DEFAULT_UPLINK6}")),
        "the host route to the pods goes via the uplink port: {routes}"
    );

    // Host → pod and pod → host: each sees the other's own address.
    let _pod_server = tcp6_server(&a.netns, &[8080], "pod");
    let answer = eventually(
        "the host connects to the pod",
        || host_probe6(&a6[0], 8080),
        |answer| answer.starts_with("pod "),
    );
    assert_eq!(
        peer_of(&answer).0.to_string(),
        DEFAULT_HOST6,
        "no NAT: {answer}"
    );
    let _host = host_server6(DEFAULT_HOST6, 18087, "host");
    let answer = eventually(
        "the pod connects to the host",
        || tcp6_probe(&a, DEFAULT_HOST6, 18087),
        |answer| answer.starts_with("host "),
    );
    assert_eq!(peer_of(&answer).0.to_string(), a6[0], "no NAT: {answer}");

    for id in ["v6t-a", "v6t-b"] {
        let del = net.call("DEL", id, "eth0", None, "", &conf);
        assert!(del.ok, "{} {}", del.json, del.stderr);
    }
}
