//! End-to-end: IPv6 through a router with real packets. Two pods on two
//! bridges behind the tenant router (one dual-stack router port, one
//! IPv6-only) ping at hop limit 63, `ping -6 -t 1` gets time exceeded, a
//! network with no route gets ICMPv6 unreachable, 20 MiB of TCP cross
//! intact, and stateful rules across the router hold for IPv6. Needs root.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::ipv6::{
    digest_server, give_ipv6, ipv6_only_pod_behind, send_and_check, tcp6_probe, udp6_sequence,
};
use support::netns::Pod;
use support::world::{tcp6_server, Deployment};
use uuid::Uuid;

const GW_A: &str = "2001:db8:a::1";
const GW_B: &str = "2001:db8:b::1";
const A6: &str = "2001:db8:a::10";
const B6: &str = "2001:db8:b::10";

/// The two pods and the router ports they sit behind.
struct V6World {
    a: Pod,
    b: Pod,
    /// The router port on a's bridge (dual-stack: the tenant's gateway).
    port_a: Uuid,
    /// The router port on b's bridge (IPv6 only).
    port_b: Uuid,
    /// The tenant.
    tenant: Uuid,
}

/// The tenant router gets `GW_A` beside its IPv4 gateway and a second,
/// IPv6-only bridge behind `GW_B`; pod a (dual-stack, on the tenant
/// bridge) and pod b (IPv6 only, on the new bridge) route through it.
async fn v6_world(d: &Deployment) -> V6World {
    let t = d.tenant(None).await;
    let port_a = t.net.router_port.id;
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{port_a}"),
            &json!({ "extra_addresses": [format!("{GW_A}/64")] }),
            None,
        )
        .await
        .unwrap();
    let (a, a_port) = d.pod(&t, 10).await;
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{a_port}"),
            &json!({"allowed_addresses": [
                {"mac": a.mac, "ip": format!("{}/32", t.address(10))},
                {"mac": a.mac, "ip": format!("{A6}/128")},
            ]}),
            None,
        )
        .await
        .unwrap();
    give_ipv6(&a, A6, GW_A);

    // Pod b: IPv6 only, on a bridge of its own.
    let ids = (t.id, t.net.router.id);
    let (port_b, b, _) = ipv6_only_pod_behind(d, ids, "v6-only", GW_B, B6).await;
    give_ipv6(&b, B6, GW_B);
    let world = V6World {
        a,
        b,
        port_a,
        port_b,
        tenant: t.id,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.a.ping(B6, 1, &[]).0 != 1 {
        assert!(Instant::now() < deadline, "{B6} never answered {A6}");
    }
    world
}

/// Retries `probe` until `ok` holds (5 s at most); the last answer.
fn eventually(what: &str, mut probe: impl FnMut() -> String, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
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
async fn ipv6_is_routed_between_bridges_with_hop_limit_and_icmpv6_errors() {
    let d = Deployment::start().await;
    let w = v6_world(&d).await;

    let (received, text) = w.a.ping(B6, 3, &[]);
    assert_eq!(received, 3, "{text}");
    assert!(
        text.contains("ttl=63"),
        "one router hop takes the hop limit from 64 to 63: {text}"
    );
    let (received, text) = w.b.ping(A6, 1, &[]);
    assert_eq!(received, 1, "and back: {text}");
    let (received, text) = w.a.ping(GW_B, 1, &[]);
    assert_eq!(received, 1, "the router answers on its far address: {text}");

    let (received, text) = w.a.ping(B6, 1, &["-t", "1"]);
    assert_eq!(received, 0, "{text}");
    assert!(
        text.contains(&format!("From {GW_A}")) && text.contains("Time exceeded"),
        "hop limit 1 expires at the router, which says so: {text}"
    );
    let (received, text) = w.a.ping("2001:db8:99::1", 1, &[]);
    assert_eq!(received, 0, "{text}");
    assert!(
        text.contains("Destination unreachable") && text.contains("No route"),
        "no route: ICMPv6 unreachable code 0: {text}"
    );

    let _server = digest_server(&w.b, 5001);
    let result = send_and_check(&w.a, B6, 5001, 20);
    assert_eq!(result, "ok", "20 MiB over IPv6 through the router");

    // A flood of small datagrams: runs of them leave the router's egress
    // port as UDP GSO frames and still arrive one by one, unchanged, in order.
    let got = udp6_sequence(&w.a, &w.b, B6, 5_000);
    assert!(got.len() > 500, "{} of 5000 datagrams", got.len());
    assert!(
        got.windows(2).all(|p| p[0] < p[1]) && got.iter().all(|&n| n < 5_000),
        "every datagram once, unchanged, in order"
    );
    let merged = d.plexus.metric("plexus_udp_datagrams_merged_total").await;
    assert!(merged > 0, "no IPv6 datagrams merged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_rules_hold_for_ipv6_across_the_router() {
    let d = Deployment::start().await;
    let w = v6_world(&d).await;
    let _server_b = tcp6_server(&w.b.netns, &[22, 8080], "b");
    let _server_a = tcp6_server(&w.a.netns, &[22], "a");
    let chain = |name: &'static str| {
        let client = &d.client;
        async move {
            client
                .create_chain(w.tenant, &support::netns::unique(name))
                .await
                .unwrap()
                .id
        }
    };

    eventually(
        "before any rule, b connects to a",
        || tcp6_probe(&w.b, A6, 22),
        |s| s.starts_with("a "),
    );

    // What b's side sends into the router: replies pass, new connections
    // do not. The router tracks the connections in its own zone.
    let only_established = chain("v6-established").await;
    for (position, action, state) in [(1, "accept", "established"), (2, "drop", "new")] {
        d.client
            .create_rule(
                only_established,
                json!({"position": position, "action": action, "conn_state": [state]}),
            )
            .await
            .unwrap();
    }
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{}", w.port_b),
            &json!({ "inbound_chain_id": only_established }),
            None,
        )
        .await
        .unwrap();
    eventually(
        "a new connection from b's side is dropped at the router",
        || tcp6_probe(&w.b, A6, 22),
        |s| s.starts_with("ERR"),
    );
    let ssh = tcp6_probe(&w.a, B6, 22);
    assert!(
        ssh.starts_with("b ") && ssh.contains(A6),
        "a's connection is answered through the same rule (its replies are established), \
         and b sees a's own address: {ssh:?}"
    );

    // A rule by IPv6 CIDR on what a's side sends into the router.
    let by_cidr = chain("v6-cidr").await;
    d.client
        .create_rule(
            by_cidr,
            json!({"position": 1, "action": "drop", "protocol": "tcp",
                   "src_cidr": "2001:db8:a::/64", "dst_ports": "8080"}),
        )
        .await
        .unwrap();
    let _: nsdb::Port = d
        .client
        .patch(
            &format!("/v1/ports/{}", w.port_a),
            &json!({ "inbound_chain_id": by_cidr }),
            None,
        )
        .await
        .unwrap();
    eventually(
        "TCP/8080 from 2001:db8:a::/64 is dropped",
        || tcp6_probe(&w.a, B6, 8080),
        |s| s.starts_with("ERR"),
    );
    let ssh = tcp6_probe(&w.a, B6, 22);
    assert!(ssh.starts_with("b "), "TCP/22 still passes: {ssh:?}");
    let (received, text) = w.a.ping(B6, 1, &[]);
    assert_eq!(received, 1, "so does ICMPv6 echo: {text}");
}
