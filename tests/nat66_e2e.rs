//! End-to-end: IPv6 masquerade where configured, with real packets. Two
//! dual-stack pods behind the tenant router reach an "outside" namespace
//! on another router port; the outside has no route back to the pods, so
//! only a masquerade gets answers through. A masquerade rule with
//! `ip_version` 6 toward the outside port: the outside sees the router
//! port's IPv6 address, TCP (20 MiB, SHA-256 checked), ping -6 and an
//! ICMPv6 port unreachable come back, and the trace shows the rewrite. A
//! masquerade rule without `ip_version` leaves IPv6 alone: the outside
//! (given a route back) sees the pod's own address. Needs root.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::ipv6::{digest_server, give_ipv6, ipv6_only_pod_behind, send_and_check, tcp6_probe};
use support::netns::{unique, Pod};
use support::world::{peer_of, spawn_ready, tcp6_server, Deployment, Server};
use uuid::Uuid;

const GW_A: &str = "2001:db8:a::1";
const A1: &str = "2001:db8:a::10";
const A2: &str = "2001:db8:a::11";
/// The router port on the outside's bridge: what masqueraded IPv6 comes from.
const GW_OUT: &str = "2001:db8:ff::1";
const OUTSIDE: &str = "2001:db8:ff::10";

/// Retries `probe` until `ok` holds (10 s at most); the last answer.
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

/// One UDP datagram from `pod` to `[dst]:port` on a connected socket: the
/// answer, or `ERR <exception>` (an ICMPv6 port unreachable that reached
/// the pod is `ConnectionRefusedError`).
fn udp6_probe(pod: &Pod, dst: &str, port: u16) -> String {
    let script = format!(
        "import socket
try:
  s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.settimeout(2)
  s.connect(('{dst}',{port}));s.send(b'hi')
  print(s.recv(2048).decode())
  s.send(b'hi');print(s.recv(2048).decode())
except Exception as e:
  print('ERR',type(e).__name__)\n"
    );
    let out = pod.try_exec(&["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A UDP server on `[::]:port` in `netns` answering `<tag> <peer>`.
fn udp6_server(netns: &str, port: u16, tag: &str) -> Server {
    let script = format!(
        "import socket
s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.bind(('::',{port}))
print('ready',flush=True)
while True:
  d,a=s.recvfrom(2048);s.sendto(('{tag} [%s]:%d'%a[:2]).encode(),a)\n"
    );
    spawn_ready(netns, &script)
}

/// The pods, the outside and what the rules are attached to.
struct Nat66World {
    a1: Pod,
    a2: Pod,
    a1_port: Uuid,
    outside: Pod,
    /// The router port on the outside's bridge.
    port_out: Uuid,
    /// The tenant router's outbound chain.
    chain: Uuid,
}

/// A pod on the tenant's bridge with IPv4 address `n` and IPv6 `v6`.
async fn dual_stack_pod(
    d: &Deployment,
    t: &support::world::Tenant,
    n: u32,
    v6: &str,
) -> (Pod, Uuid) {
    let (pod, port) = d.pod(t, n).await;
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{port}"),
            &json!({"allowed_addresses": [
                {"mac": pod.mac, "ip": format!("{}/32", t.address(n))},
                {"mac": pod.mac, "ip": format!("{v6}/128")},
            ]}),
            None,
        )
        .await
        .unwrap();
    give_ipv6(&pod, v6, GW_A);
    (pod, port)
}

async fn nat66_world(d: &Deployment) -> Nat66World {
    let t = d.tenant(None).await;
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{}", t.net.router_port.id),
            &json!({ "extra_addresses": [format!("{GW_A}/64")] }),
            None,
        )
        .await
        .unwrap();
    let (a1, a1_port) = dual_stack_pod(d, &t, 10, A1).await;
    let (a2, _) = dual_stack_pod(d, &t, 11, A2).await;

    // The outside: IPv6 only, its subnet on-link and no route anywhere
    // else.
    let ids = (t.id, t.net.router.id);
    let (port_out, outside, _) =
        ipv6_only_pod_behind(d, ids, &unique("outside"), GW_OUT, OUTSIDE).await;
    let cidr = format!("{OUTSIDE}/64");
    outside.exec(&["ip", "-6", "addr", "add", &cidr, "dev", "eth0", "nodad"]);
    // Not even the default route a Router Advertisement would give it.
    outside.exec(&["sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=0"]);
    outside.exec(&["ip", "-6", "route", "flush", "proto", "ra"]);
    let chain = t
        .net
        .router
        .outbound_chain_id
        .expect("the tenant router has an outbound chain");
    let deadline = Instant::now() + Duration::from_secs(10);
    while outside.ping(GW_OUT, 1, &[]).0 != 1 {
        assert!(
            Instant::now() < deadline,
            "{GW_OUT} never answered {OUTSIDE}"
        );
    }
    Nat66World {
        a1,
        a2,
        a1_port,
        outside,
        port_out,
        chain,
    }
}

/// Inserts a masquerade rule toward the outside at the top of the
/// router's outbound chain (`ip_version` 6 when `v6_only`).
async fn masquerade(d: &Deployment, w: &Nat66World, v6_only: bool) -> Uuid {
    let mut rule = json!({"position": 1, "action": "masquerade",
                          "out_port_ids": [w.port_out],
                          "description": "nat66 e2e"});
    if v6_only {
        rule["ip_version"] = json!(6);
    }
    d.client.create_rule(w.chain, rule).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_masquerade_with_ip_version_6_hides_pods_behind_the_router_port() {
    let d = Deployment::start().await;
    let w = nat66_world(&d).await;
    let _tcp = tcp6_server(&w.outside.netns, &[8080], "outside");
    let _udp = udp6_server(&w.outside.netns, 5353, "outside");
    let _digest = digest_server(&w.outside, 5001);

    // Routed as ever, the outside cannot answer: it has no route back.
    let routes = w.outside.exec(&["ip", "-6", "route", "show", "default"]);
    assert!(routes.stdout.is_empty(), "{routes:?}");
    let answer = tcp6_probe(&w.a1, OUTSIDE, 8080);
    assert!(answer.starts_with("ERR"), "no route back yet: {answer}");

    masquerade(&d, &w, true).await;
    let answer = eventually(
        "the masquerade lets a1 through",
        || tcp6_probe(&w.a1, OUTSIDE, 8080),
        |s| s.starts_with("outside "),
    );
    let (peer, _) = peer_of(&answer);
    assert_eq!(
        peer,
        GW_OUT.parse::<std::net::IpAddr>().unwrap(),
        "the outside sees the router port's address: {answer}"
    );
    let answer = tcp6_probe(&w.a2, OUTSIDE, 8080);
    assert_eq!(
        peer_of(&answer).0.to_string(),
        GW_OUT,
        "so does a2's: {answer}"
    );

    let (received, text) = w.a1.ping(OUTSIDE, 3, &[]);
    assert_eq!(received, 3, "ping -6 through the masquerade: {text}");
    let (received, text) = w.a2.ping(OUTSIDE, 2, &[]);
    assert_eq!(received, 2, "{text}");

    let answer = udp6_probe(&w.a1, OUTSIDE, 5353);
    assert!(
        answer.contains(&format!("outside [{GW_OUT}]")),
        "UDP is masqueraded too: {answer}"
    );
    let refused = udp6_probe(&w.a1, OUTSIDE, 5399);
    assert_eq!(
        refused, "ERR ConnectionRefusedError",
        "the outside's port unreachable is translated back to a1"
    );

    let result = send_and_check(&w.a1, OUTSIDE, 5001, 20);
    assert_eq!(result, "ok", "20 MiB through the IPv6 masquerade");

    // The trace shows the translation where the router makes it.
    let trace = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["trace", "--api", &d.plexus.url, "--token", &d.plexus.token])
        .args(["--port", &w.a1_port.to_string(), "--dst-ip", OUTSIDE])
        .args(["--proto", "tcp", "--dport", "8080"])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&trace.stdout);
    println!("{trace}");
    for expected in [
        "chain default-out rule 1 (nat66 e2e): masquerade".to_string(),
        format!("masquerade tcp [{A1}]:"),
        format!("ip.src={GW_OUT}"),
        "verdict: deliver".to_string(),
    ] {
        assert!(
            trace.contains(&expected),
            "missing '{expected}' in:\n{trace}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masquerade_rule_without_ip_version_leaves_ipv6_untranslated() {
    let d = Deployment::start().await;
    let w = nat66_world(&d).await;
    let _tcp = tcp6_server(&w.outside.netns, &[8080], "outside");
    // The outside routes the pods' subnet back, so untranslated IPv6 works.
    w.outside
        .exec(&["ip", "-6", "route", "add", "2001:db8:a::/64", "via", GW_OUT]);
    masquerade(&d, &w, false).await;
    let answer = eventually(
        "a1 reaches the outside",
        || tcp6_probe(&w.a1, OUTSIDE, 8080),
        |s| s.starts_with("outside "),
    );
    assert_eq!(
        peer_of(&answer).0.to_string(),
        A1,
        "the outside sees the pod's own address: {answer}"
    );
    let (received, text) = w.a1.ping(OUTSIDE, 2, &[]);
    assert_eq!(received, 2, "{text}");
}
