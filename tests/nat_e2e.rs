//! End-to-end: tenants' ways out and in through the provider router and a
//! real uplink — masquerade without port collisions, floating IPs, DNAT
//! port forwards, ICMP errors translated back through two NATs, tenants
//! with the same pod subnet kept apart (the second one NAT-only), and the
//! host reaching pods through the uplink TAP the agent creates. Masquerade
//! is seen from an outside address (`STRANGER`): the uplink gateway is the
//! host, which pods reach without NAT (tests/host_pod_e2e.rs). Needs root.

mod support;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::netns::{run, unique, Pod};
use support::world::{
    peer_of, tcp_probe, tcp_server, wait_ping, Deployment, STRANGER, UPLINK, WORLD,
};

/// Opens `count` connections at once from `pod` to `dst:port` (the first
/// from source port `sport`), sends a line on each while all are open and
/// prints each answer; returns the answers.
/// `count` connections from `pod` to `dst:port`, the first from `sport`,
/// all open at once; and they stay open until every pod sharing `barrier`
/// (a directory, and how many pods use it) has opened its own, so the
/// connections of different pods overlap too (a closed connection's
/// translated port may be reused).
fn concurrent_connections(
    pod: &Pod,
    dst: &str,
    port: u16,
    count: u32,
    sport: u16,
    (dir, parties): (&std::path::Path, usize),
) -> Vec<String> {
    let wait = format!(
        "import os,time
open(os.path.join('{dir}',str(os.getpid())),'w').close()
deadline=time.time()+15
while len(os.listdir('{dir}'))<{parties} and time.time()<deadline: time.sleep(0.02)
",
        dir = dir.display()
    );
    let script = format!(
        "import socket
conns=[]
for i in range({count}):
  s=socket.socket();s.settimeout(10)
  if i==0:
    s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',{sport}))
  s.connect(('{dst}',{port}));conns.append(s)
{wait}for s in conns:
  s.sendall(b'hi\\n')
for s in conns:
  print(s.makefile().readline().strip())
"
    );
    let out = pod.exec(&["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masquerade_hides_pods_behind_the_uplink_without_port_collisions() {
    let d = Deployment::start().await;
    let _server = tcp_server(&d.world().netns, &[8080], "world");
    let t1 = d.tenant(None).await;
    let t2 = d.tenant(None).await;
    let mut pods = Vec::new();
    let mut ports = Vec::new();
    // An outside address (not the uplink gateway: the host, which pods
    // reach without NAT).
    for (t, n) in [(&t1, 10), (&t1, 11), (&t2, 10)] {
        let (pod, port) = d.pod(t, n).await;
        wait_ping(&pod, STRANGER);
        pods.push(pod);
        ports.push(port);
    }
    let first_port = ports[0];
    let answer = tcp_probe(&pods[0], STRANGER, 8080, 3.0, None);
    assert_eq!(
        peer_of(&answer).0,
        UPLINK.parse::<IpAddr>().unwrap(),
        "{answer}"
    );
    // The trace shows both translations at the router that makes them.
    let trace = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["trace", "--api", &d.plexus.url, "--token", &d.plexus.token])
        .args(["--port", &first_port.to_string(), "--dst-ip", STRANGER])
        .args(["--proto", "tcp", "--dport", "8080"])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&trace.stdout);
    println!("{trace}");
    // (The trace has no learned ARP entries, so it stops where the provider
    // router would resolve the world's MAC.)
    for expected in [
        "default-out rule 2",
        "masquerade tcp 10.128.0.10:49152 → 203.0.113.7:8080 → tcp 169.254.0.2:49152",
        "router provider",
        "resolves 100.64.0.1",
    ] {
        assert!(
            trace.contains(expected),
            "missing '{expected}' in:\n{trace}"
        );
    }

    // Every pod opens 40 connections at once, the first of each from the
    // same source port 40000: all must get distinct translated ports.
    let per_pod = 40;
    let barrier = tempfile::tempdir().unwrap();
    let barrier = (barrier.path(), pods.len());
    let answers: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|pod| {
                s.spawn(move || {
                    concurrent_connections(pod, STRANGER, 8080, per_pod, 40000, barrier)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for answer in answers.iter().flatten() {
        let (ip, port) = peer_of(answer);
        assert_eq!(
            ip,
            UPLINK.parse::<IpAddr>().unwrap(),
            "masqueraded: {answer}"
        );
        assert!(seen.insert(port), "translated port {port} used twice");
    }
    assert_eq!(
        seen.len(),
        3 * per_pod as usize,
        "every connection answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floating_ip_lets_the_outside_in_and_the_pod_out_under_it() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (pod, _) = d.pod(&t, 10).await;
    let private = t.address(10).to_string();
    let _pod_server = tcp_server(&pod.netns, &[8080], "pod");
    let _world_server = tcp_server(&d.world().netns, &[9090], "world");

    // Without a floating IP, strangers do not reach the pod's private address.
    let refused = tcp_probe(d.world(), &private, 8080, 1.5, Some(STRANGER));
    assert!(
        refused.starts_with("ERR"),
        "private address from outside: {refused}"
    );

    let fip = d
        .client
        .create_floating_ip(t.id, &private, None)
        .await
        .unwrap();
    let floating = fip.floating_address.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let answer = tcp_probe(d.world(), &floating, 8080, 1.0, Some(STRANGER));
        if answer.starts_with("pod ") || Instant::now() > deadline {
            break answer;
        }
    };
    assert!(
        answer.starts_with("pod "),
        "the floating IP reaches the pod: {answer}"
    );
    assert_eq!(
        peer_of(&answer).0.to_string(),
        STRANGER,
        "DNAT only: the pod sees the client"
    );
    let still = tcp_probe(d.world(), &private, 8080, 1.5, Some(STRANGER));
    assert!(
        still.starts_with("ERR"),
        "the private address stays closed: {still}"
    );

    let out = tcp_probe(&pod, STRANGER, 9090, 3.0, None);
    assert_eq!(
        peer_of(&out).0.to_string(),
        floating,
        "the pod leaves under its floating IP"
    );
    let to_host = tcp_probe(&pod, WORLD, 9090, 3.0, None);
    assert_eq!(
        peer_of(&to_host).0.to_string(),
        private,
        "the host still sees the pod's own address"
    );

    // Deleting the floating IP closes the way in again.
    d.client
        .delete(&format!("/v1/floating_ips/{}", fip.id), None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp_probe(d.world(), &floating, 8080, 0.5, Some(STRANGER)).starts_with("pod ") {
        assert!(
            Instant::now() < deadline,
            "the deleted floating IP still works"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dnat_rule_forwards_an_external_port_to_a_pod() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (pod, _) = d.pod(&t, 10).await;
    let private = t.address(10).to_string();
    let _server = tcp_server(&pod.netns, &[8080], "pod");
    let public = "100.64.1.200";
    let inbound = t
        .net
        .router
        .inbound_chain_id
        .expect("the tenant router has an inbound chain");
    d.client
        .create_rule(
            inbound,
            json!({"position": 2, "action": "dnat", "protocol": "tcp",
                   "dst_cidr": format!("{public}/32"), "dst_ports": "2222",
                   "nat_targets": [{"address_from": private, "port_from": 8080, "port_to": 8080}]}),
        )
        .await
        .unwrap();
    let provider: serde_json::Value = d.client.get("/v1/provider").await.unwrap();
    let link_peer = t.net.link_port.peer_id.expect("the link port is linked");
    d.client
        .create_route(
            provider["router_id"].as_str().unwrap().parse().unwrap(),
            json!({"dst": format!("{public}/32"), "next_hop_port": link_peer,
                   "next_hop_gateway": t.net.link_port.address.unwrap().addr()}),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let answer = tcp_probe(d.world(), public, 2222, 1.0, Some(STRANGER));
        if answer.starts_with("pod ") || Instant::now() > deadline {
            break answer;
        }
    };
    assert!(
        answer.starts_with("pod "),
        "port 2222 is forwarded to the pod: {answer}"
    );
    let other = tcp_probe(d.world(), public, 8080, 1.5, Some(STRANGER));
    assert!(
        other.starts_with("ERR"),
        "other ports are not forwarded: {other}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceroute_through_two_nats_shows_every_hop() {
    let d = Deployment::start().await;
    let far = d.far();
    let t = d.tenant(None).await;
    let (pod, _) = d.pod(&t, 10).await;
    wait_ping(&pod, "198.51.100.2");
    let link = t.net.link_port.address.unwrap();
    let provider_side = link
        .hosts()
        .find(|a| *a != link.addr())
        .expect("a /30 has two hosts");
    let out = pod.exec(&[
        "traceroute",
        "-n",
        "-q",
        "1",
        "-w",
        "2",
        "-m",
        "6",
        "198.51.100.2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let hops: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        hops,
        vec![
            t.net.gateway.to_string().as_str(),
            provider_side.to_string().as_str(),
            WORLD,
            "198.51.100.2"
        ],
        "tenant router, provider router, world, far:\n{text}"
    );
    drop(far);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_with_the_same_pod_subnet_stay_apart() {
    let d = Deployment::start().await;
    let red = d.tenant(Some("10.1.0.0/24")).await;
    // The second one on the same subnet must accept NAT-only host access.
    let blue = d.tenant_with(Some("10.1.0.0/24"), true).await;
    let (red_a, _) = d.pod(&red, 10).await;
    let (red_b, _) = d.pod(&red, 11).await;
    let (blue_a, _) = d.pod(&blue, 10).await;
    let (blue_b, _) = d.pod(&blue, 11).await;
    let (blue_only, _) = d.pod(&blue, 12).await;
    let _red_server = tcp_server(&red_b.netns, &[8080], "red");
    let _blue_server = tcp_server(&blue_b.netns, &[8080], "blue");
    let _blue_only_server = tcp_server(&blue_only.netns, &[8080], "blue");

    let red_answer = tcp_probe(&red_a, "10.1.0.11", 8080, 3.0, None);
    assert!(red_answer.starts_with("red "), "{red_answer}");
    let blue_answer = tcp_probe(&blue_a, "10.1.0.11", 8080, 3.0, None);
    assert!(blue_answer.starts_with("blue "), "{blue_answer}");
    let (received, text) = red_a.ping("10.1.0.12", 3, &[]);
    assert_eq!(received, 0, "red must not reach blue's pod: {text}");
    let crossing = tcp_probe(&red_a, "10.1.0.12", 8080, 1.5, None);
    assert!(crossing.starts_with("ERR"), "{crossing}");
    // Both still get out, each through its own tenant router.
    let _world = tcp_server(&d.world().netns, &[9090], "world");
    for pod in [&red_a, &blue_a] {
        let out = tcp_probe(pod, STRANGER, 9090, 3.0, None);
        assert_eq!(peer_of(&out).0.to_string(), UPLINK, "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_reaches_pods_through_the_uplink_tap() {
    // The uplink is a TAP the agent creates in this namespace; ranges no
    // other test or the machine uses.
    let tap = unique("pxup");
    let serve_args = [
        "--uplink-interface",
        tap.as_str(),
        "--uplink-address",
        "100.127.30.2/24",
        "--pod-cidr",
        "10.231.0.0/16",
        "--external-cidr",
        "100.127.31.0/24",
    ];
    let plexus = support::plexus::Plexus::start_with(&serve_args).await;
    let d = Deployment::around(plexus).await;
    let t = d.tenant(None).await;
    let (pod, _) = d.pod(&t, 10).await;
    let private = t.address(10).to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("ping")
            .args(["-n", "-c", "1", "-W", "1", &private])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the host never reached the pod at {private}"
        );
    }
    let address = run(&["ip", "-4", "-o", "addr", "show", "dev", &tap]);
    assert!(
        String::from_utf8_lossy(&address.stdout).contains("100.127.30.1/24"),
        "the TAP has the uplink gateway address"
    );
    let routes = run(&["ip", "-4", "route", "show", "dev", &tap]);
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    for expected in [
        "10.231.0.0/16 via 100.127.30.2",
        "100.127.31.0/24 via 100.127.30.2",
    ] {
        assert!(
            routes.contains(expected),
            "missing route {expected} in:\n{routes}"
        );
    }
    drop(pod);
    drop(d);
    // The TAP (and its routes) go with the agent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new("/sys/class/net").join(&tap).exists() {
        assert!(Instant::now() < deadline, "the uplink TAP outlived plexus");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plexus_tenant_init_is_idempotent_and_show_reports_the_network() {
    let d = Deployment::start().await;
    let name = unique("cli");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(args)
            .args(["--api", &d.plexus.url, "--token", &d.plexus.token])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, first, err) = cli(&["tenant", "init", &name, "--pod-cidr", "10.9.0.0/24"]);
    assert!(ok, "{err}");
    for expected in [
        "router default",
        "pods 10.9.0.0/24 gateway 10.9.0.1",
        "provider link 169.254.0.2/30",
    ] {
        assert!(
            first.contains(expected),
            "missing '{expected}' in:\n{first}"
        );
    }
    let (ok, again, _) = cli(&["tenant", "init", &name, "--pod-cidr", "10.9.0.0/24"]);
    assert!(ok);
    assert_eq!(again, first, "a second init answers the same network");
    let (ok, shown, _) = cli(&["tenant", "show", &name]);
    assert!(ok);
    assert_eq!(shown, first);
    let (ok, _, err) = cli(&["tenant", "show", "no-such-tenant"]);
    assert!(!ok && err.contains("no tenant named"), "{err}");
    assert!(first.contains("host access: direct"), "{first}");
    // Another tenant on an overlapping subnet is refused, naming this one
    // and the way out; with --nat-only it is provisioned, and says so.
    let other = unique("cli");
    let (ok, out, err) = cli(&["tenant", "init", &other, "--pod-cidr", "10.9.0.128/25"]);
    assert!(!ok, "an overlapping init must fail: {out}");
    for expected in [name.as_str(), "10.9.0.0/24", "--nat-only"] {
        assert!(err.contains(expected), "missing '{expected}' in:\n{err}");
    }
    let (ok, out, err) = cli(&[
        "tenant",
        "init",
        &other,
        "--pod-cidr",
        "10.9.0.128/25",
        "--nat-only",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("host access: NAT only"), "{out}");
    // A pod on the new network reaches the world.
    let tenants: Vec<nsdb::Tenant> = d.client.list("/v1/tenants").await.unwrap();
    let id = tenants.iter().find(|t| t.name == name).unwrap().id;
    let net = d.client.tenant_network(id).await.unwrap().unwrap();
    let t = support::world::Tenant { id, net };
    let (pod, _) = d.pod(&t, 10).await;
    wait_ping(&pod, STRANGER);
    // The host too, without NAT, once it routes the subnet to the uplink
    // (what the agent does when it owns the uplink TAP).
    d.world()
        .exec(&["ip", "route", "add", "10.9.0.0/24", "via", UPLINK]);
    wait_ping(&pod, WORLD);
}
