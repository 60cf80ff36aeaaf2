//! End-to-end: dual-stack and IPv6-only pods through `plexus-cni` against
//! a real `plexus serve`, with real namespaces: both addresses in the
//! result and in the pod (IPv6 usable at once, the link-local derived from
//! the MAC), pods reaching each other over both families, CHECK, DEL and
//! GC releasing both leases, and failed ADDs leaving nothing. Needs root.

mod support;

use std::net::Ipv6Addr;

use serde_json::{json, Value};
use support::cni::{host_veths, sandbox, Network};
use support::netns::{unique, Pod};
use support::plexus::Plexus;
use support::world::{wait_ping, Deployment};
use uuid::Uuid;

/// A network configuration for `plexus`'s API and agent.
async fn network(plexus: &Plexus) -> Network {
    let hosts: Vec<nsdb::Host> = plexus.client().list("/v1/hosts").await.unwrap();
    let host = hosts.iter().find(|h| h.alive).expect("an agent");
    Network::new(&plexus.url, &plexus.token, &host.name)
}

/// An IPv6 pool `cidr` of `tenant` on `bridge`.
async fn ipv6_pool(client: &api::Client, tenant: Uuid, bridge: Uuid, cidr: &str) -> nsdb::IpPool {
    client
        .post(
            "/v1/ip_pools",
            &json!({"name": unique("v6pool"), "cidr": cidr, "tenant_id": tenant, "bridge_id": bridge}),
        )
        .await
        .unwrap()
}

/// The leases of pool `pool`.
async fn leases(client: &api::Client, pool: Uuid) -> Vec<nsdb::IpLease> {
    client
        .list(&format!("/v1/ip_pools/{pool}/leases"))
        .await
        .unwrap()
}

/// The addresses (without prefix) of an ADD result, by family.
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

/// The EUI-64 link-local of `mac` (`aa:bb:…`), computed here independently
/// of the plugin.
fn eui64_link_local(mac: &str) -> Ipv6Addr {
    let b: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let mut octets = [0u8; 16];
    octets[..2].copy_from_slice(&[0xfe, 0x80]);
    octets[8..].copy_from_slice(&[b[0] ^ 2, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]]);
    Ipv6Addr::from(octets)
}

/// `eth0`'s IPv6 addresses in `pod` as `ip -j` reports them.
fn ipv6_of(pod: &Pod) -> Vec<Value> {
    let out = pod.exec(&["ip", "-j", "-6", "addr", "show", "dev", "eth0"]);
    let links: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    links[0]["addr_info"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Pings `dst` over IPv6 (`ping -6`) until it answers (10 s at most).
fn wait_ping6(pod: &Pod, dst: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if pod.ping(dst, 1, &["-6"]).0 == 1 {
            return;
        }
    }
    panic!("{dst} never answered a ping -6 from {}", pod.netns);
}

/// What the kernel of `pod` must show for a pod with IPv6 address `v6`
/// (without prefix) and MAC `mac`: `v6` usable (not tentative), the
/// link-local derived from the MAC, IPv6 on, and the default route via
/// `gateway`.
fn assert_ipv6_configured(pod: &Pod, v6: &str, mac: &str, gateway: &str) {
    let info = ipv6_of(pod);
    let global = info
        .iter()
        .find(|a| a["local"] == v6)
        .unwrap_or_else(|| panic!("{v6} is not on eth0: {info:?}"));
    assert_eq!(global["prefixlen"], 64);
    assert!(global.get("tentative").is_none(), "{global}");
    assert_eq!(global["nodad"], true, "DAD would hold {v6} back: {global}");
    assert!(global.get("dadfailed").is_none(), "{global}");
    let link_local: Vec<&Value> = info.iter().filter(|a| a["scope"] == "link").collect();
    assert_eq!(link_local.len(), 1, "{info:?}");
    assert_eq!(
        link_local[0]["local"],
        eui64_link_local(mac).to_string(),
        "the link-local derives from the MAC {mac}"
    );
    assert!(link_local[0].get("tentative").is_none(), "{info:?}");
    for (setting, wanted) in [
        ("disable_ipv6", "0"),
        ("accept_dad", "0"),
        ("addr_gen_mode", "0"),
    ] {
        let path = format!("/proc/sys/net/ipv6/conf/eth0/{setting}");
        let value = pod.exec(&["cat", &path]);
        assert_eq!(
            String::from_utf8_lossy(&value.stdout).trim(),
            wanted,
            "{setting}"
        );
    }
    let routes = pod.exec(&["ip", "-j", "-6", "route", "show", "default"]);
    let routes: Vec<Value> = serde_json::from_slice(&routes.stdout).unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["gateway"] == gateway && r["dev"] == "eth0"),
        "no default route via {gateway}: {routes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pods_get_both_families_and_reach_each_other_over_both() {
    let deployment = Deployment::start().await;
    let client = &deployment.client;
    let net = network(&deployment.plexus).await;
    // The tenant's default network, with an IPv6 pool beside its IPv4 one.
    let tenant = deployment.tenant(None).await;
    let v4_pool = tenant.net.pool.id;
    let v6_pool = ipv6_pool(client, tenant.id, tenant.net.bridge.id, "fd00:d5::/64").await;
    let tenant_name: nsdb::Tenant = client
        .get(&format!("/v1/tenants/{}", tenant.id))
        .await
        .unwrap();
    let conf = net.with(json!({"tenant": tenant_name.name}));
    let (a, b) = (sandbox(&net, "dual-a"), sandbox(&net, "dual-b"));
    let add = |id: &str, pod: &Pod| {
        net.call("ADD", id, "eth0", Some(&pod.netns), "", &conf)
            .result()
            .clone()
    };
    let ra = add("dual-a", &a);
    let rb = add("dual-b", &b);
    // b answers a's first ping over each family: no DAD holds its addresses.
    let ((a4, a6), (b4, b6)) = (addresses(&ra), addresses(&rb));
    assert_eq!((a4.len(), a6.len()), (1, 1), "{ra}");
    let (got, text) = a.ping(&b6[0], 1, &["-6", "-W", "2"]);
    assert_eq!(got, 1, "first ping -6 right after ADD: {text}");
    wait_ping(&a, &b4[0]);
    wait_ping6(&b, &a6[0]);
    wait_ping(&b, &a4[0]);

    // The result: both addresses on the pod interface, each with its
    // gateway, and a default route per family.
    let gw6 = v6_pool.gateway.unwrap().to_string();
    assert_eq!(gw6, "fd00:d5::1");
    assert_eq!(ra["ips"][0]["interface"], 1);
    assert_eq!(ra["ips"][1]["interface"], 1);
    assert_eq!(ra["ips"][1]["gateway"], gw6.as_str());
    assert!(ra["ips"][1]["address"]
        .as_str()
        .unwrap()
        .starts_with("fd00:d5::"));
    let gw4 = tenant.net.gateway.to_string();
    assert_eq!(
        ra["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": gw4}, {"dst": "::/0", "gw": gw6}])
    );
    // The kernel has what the result says.
    let mac = ra["interfaces"][1]["mac"].as_str().unwrap();
    assert_ipv6_configured(&a, &a6[0], mac, &gw6);
    let v4 = a.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(String::from_utf8_lossy(&v4.stdout).contains(&format!("{}/", a4[0])));
    // The port may send from both (port security, the ARP/NDP responder).
    let attached = client
        .attachment(&net.key("dual-a", "eth0"))
        .await
        .unwrap()
        .expect("attached");
    let allowed: Vec<String> = attached
        .port
        .allowed_addresses
        .iter()
        .map(|a| a.ip.addr().to_string())
        .collect();
    assert_eq!(allowed, [a4[0].clone(), a6[0].clone()]);

    // Idempotent ADD; CHECK passes, and notices a missing IPv6 address.
    assert_eq!(&add("dual-a", &a), &ra);
    let check_conf = net.with(json!({"tenant": tenant_name.name, "prevResult": ra}));
    let check = net.call("CHECK", "dual-a", "eth0", Some(&a.netns), "", &check_conf);
    assert!(check.ok, "{} {}", check.json, check.stderr);
    let prefixed = ra["ips"][1]["address"].as_str().unwrap();
    a.exec(&["ip", "-6", "addr", "del", prefixed, "dev", "eth0"]);
    let check = net.call("CHECK", "dual-a", "eth0", Some(&a.netns), "", &check_conf);
    assert_eq!(check.code(), 103);
    assert!(
        check.json["details"].as_str().unwrap().contains(prefixed),
        "{}",
        check.json
    );

    // DEL releases both of a's leases; b keeps its two.
    let del = net.call("DEL", "dual-a", "eth0", None, "", &conf);
    assert!(del.ok, "{} {}", del.json, del.stderr);
    for pool in [v4_pool, v6_pool.id] {
        let left = leases(client, pool).await;
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].owner.contains("dual-b"), "{left:?}");
    }
    assert!(!host_veths().contains(&a.host_if));
    // Added again, a gets the same two addresses: they were free again.
    let again = add("dual-a", &a);
    assert_eq!(addresses(&again), (a4, a6));
    for id in ["dual-a", "dual-b"] {
        assert!(net.call("DEL", id, "eth0", None, "", &conf).ok);
    }
    assert!(leases(client, v4_pool).await.is_empty());
    assert!(leases(client, v6_pool.id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_only_pods_reach_each_other() {
    let plexus = Plexus::start().await;
    let client = plexus.client();
    let net = network(&plexus).await;
    // A bridge with only an IPv6 pool: an IPv6-only network.
    let tenant = client.create_tenant(&unique("six")).await.unwrap();
    let bridge = client.create_bridge(tenant.id, "six").await.unwrap();
    let pool = ipv6_pool(&client, tenant.id, bridge.id, "fd00:d6::/64").await;
    let conf = net.with(json!({"tenant": tenant.name, "bridge": bridge.id}));
    let (a, b) = (sandbox(&net, "six-a"), sandbox(&net, "six-b"));
    let ra = net
        .call("ADD", "six-a", "eth0", Some(&a.netns), "", &conf)
        .result()
        .clone();
    let rb = net
        .call("ADD", "six-b", "eth0", Some(&b.netns), "", &conf)
        .result()
        .clone();
    let ((a4, a6), (b4, b6)) = (addresses(&ra), addresses(&rb));
    assert!(a4.is_empty() && b4.is_empty(), "{ra} {rb}");
    assert_eq!(ra["routes"], json!([{"dst": "::/0", "gw": "fd00:d6::1"}]));
    let mac = ra["interfaces"][1]["mac"].as_str().unwrap();
    assert_ipv6_configured(&a, &a6[0], mac, "fd00:d6::1");
    let v4 = a.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        v4.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&v4.stdout)
    );
    let (got, text) = a.ping(&b6[0], 1, &["-6", "-W", "2"]);
    assert_eq!(got, 1, "first ping -6 right after ADD: {text}");
    wait_ping6(&b, &a6[0]);
    let check_conf =
        net.with(json!({"tenant": tenant.name, "bridge": bridge.id, "prevResult": rb}));
    let check = net.call("CHECK", "six-b", "eth0", Some(&b.netns), "", &check_conf);
    assert!(check.ok, "{} {}", check.json, check.stderr);
    // GC with nothing valid removes both pods and releases their leases.
    let gc = net.call("GC", "", "", None, "", &conf);
    assert!(gc.ok, "{} {}", gc.json, gc.stderr);
    assert!(leases(&client, pool.id).await.is_empty());
    assert!(!host_veths().contains(&a.host_if));
    assert!(!host_veths().contains(&b.host_if));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dual_stack_adds_leave_nothing() {
    let plexus = Plexus::start().await;
    let client = plexus.client();
    let net = network(&plexus).await;
    let tenant = client.create_tenant(&unique("fail")).await.unwrap();
    let bridge = client.create_bridge(tenant.id, "fail").await.unwrap();
    let v4: nsdb::IpPool = client
        .post(
            "/v1/ip_pools",
            &json!({"name": unique("v4pool"), "cidr": "10.66.0.0/24", "tenant_id": tenant.id, "bridge_id": bridge.id}),
        )
        .await
        .unwrap();
    // ::1 is the gateway, ::2 the only address to give.
    let tiny = ipv6_pool(&client, tenant.id, bridge.id, "fd00:d7::/126").await;
    let base = json!({"tenant": tenant.name, "bridge": bridge.id});
    let with = |extra: Value| {
        let mut conf = base.clone();
        conf.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        net.with(conf)
    };
    let pod = sandbox(&net, "fail-a");
    let nothing_left = |what: &str| {
        let key = net.key("fail-a", "eth0");
        let client = client.clone();
        let what = what.to_string();
        let host_if = pod.host_if.clone();
        async move {
            assert!(client.attachment(&key).await.unwrap().is_none(), "{what}");
            for pool in [v4.id, tiny.id] {
                let held = leases(&client, pool).await;
                assert!(
                    held.iter().all(|l| l.owner != key.owner()),
                    "{what}: {held:?}"
                );
            }
            assert!(!host_veths().contains(&host_if), "{what}: the veth is left");
        }
    };
    // Bad input: a pool that does not exist (the API refuses it).
    let answer = net.call(
        "ADD",
        "fail-a",
        "eth0",
        Some(&pod.netns),
        "",
        &with(json!({"pools": ["no-such-pool"]})),
    );
    assert_eq!(answer.code(), 100, "{}", answer.json);
    nothing_left("an unknown pool").await;
    // Failing after both leases were taken: IPv6 needs an MTU of 1280.
    let answer = net.call(
        "ADD",
        "fail-a",
        "eth0",
        Some(&pod.netns),
        "",
        &with(json!({"mtu": 1200})),
    );
    assert_eq!(answer.code(), 7, "{}", answer.json);
    nothing_left("an MTU too small for IPv6").await;
    // The IPv6 pool is full: the IPv4 lease is not taken either.
    client.allocate_lease(tiny.id, "someone").await.unwrap();
    let answer = net.call(
        "ADD",
        "fail-a",
        "eth0",
        Some(&pod.netns),
        "",
        &with(json!({})),
    );
    assert_eq!(answer.code(), 100, "{}", answer.json);
    nothing_left("a full IPv6 pool").await;
    let inside = pod.try_exec(&["ip", "link", "show", "eth0"]);
    assert!(!inside.status.success(), "eth0 is still in the pod");
    // Naming only the IPv4 pool still works on this bridge.
    let only4 = with(json!({"pools": [v4.name]}));
    let result = net.call("ADD", "fail-a", "eth0", Some(&pod.netns), "", &only4);
    let (four, six) = addresses(result.result());
    assert_eq!((four.len(), six.len()), (1, 0));
    assert!(net.call("DEL", "fail-a", "eth0", None, "", &only4).ok);
    nothing_left("after DEL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_pods_reach_their_gateway_and_pods_behind_the_router() {
    let deployment = Deployment::start().await;
    let client = &deployment.client;
    let net = network(&deployment.plexus).await;
    let tenant = deployment.tenant(None).await;
    let router = tenant.net.router.id;
    // The default bridge becomes dual-stack: an IPv6 pool, and the pool's
    // gateway on the router port.
    let _: nsdb::Port = client
        .patch(
            &format!("/v1/ports/{}", tenant.net.router_port.id),
            &json!({"extra_addresses": ["fd00:d8::1/64"]}),
            None,
        )
        .await
        .unwrap();
    ipv6_pool(client, tenant.id, tenant.net.bridge.id, "fd00:d8::/64").await;
    // A second, IPv6-only bridge behind the same router.
    let six = client.create_bridge(tenant.id, "six").await.unwrap();
    let router_port = client
        .create_router_port(router, "fd00:d9::1/64")
        .await
        .unwrap();
    let bridge_port = client.create_bridge_port(six.id, json!({})).await.unwrap();
    client.link(bridge_port.id, router_port.id).await.unwrap();
    ipv6_pool(client, tenant.id, six.id, "fd00:d9::/64").await;
    let name: nsdb::Tenant = client
        .get(&format!("/v1/tenants/{}", tenant.id))
        .await
        .unwrap();
    let dual_conf = net.with(json!({"tenant": name.name}));
    let six_conf = net.with(json!({"tenant": name.name, "bridge": six.id}));
    let (a, c) = (sandbox(&net, "gw-a"), sandbox(&net, "gw-c"));
    let ra = net
        .call("ADD", "gw-a", "eth0", Some(&a.netns), "", &dual_conf)
        .result()
        .clone();
    let rc = net
        .call("ADD", "gw-c", "eth0", Some(&c.netns), "", &six_conf)
        .result()
        .clone();
    let ((a4, a6), (c4, c6)) = (addresses(&ra), addresses(&rc));
    assert_eq!((a4.len(), a6.len(), c4.len(), c6.len()), (1, 1, 0, 1));
    // Each pod reaches its gateway, and the other pod across the router
    // through its default route, one hop away.
    wait_ping6(&a, "fd00:d8::1");
    wait_ping6(&c, "fd00:d9::1");
    wait_ping6(&a, &c6[0]);
    let (got, text) = c.ping(&a6[0], 1, &["-6"]);
    assert_eq!(got, 1, "{text}");
    assert!(
        text.contains("ttl=63") || text.contains("hlim=63"),
        "one router hop: {text}"
    );
    wait_ping(&a, &tenant.net.gateway.to_string());
    for (id, conf) in [("gw-a", &dual_conf), ("gw-c", &six_conf)] {
        assert!(net.call("DEL", id, "eth0", None, "", conf).ok);
    }
}
