//! End-to-end: `plexus-cni` driven through the CNI environment interface
//! against a real `plexus serve` — every error path of the interface, pods
//! pinging each other, their gateway and the outside, tenants with the same
//! subnet kept apart, idempotent ADD/DEL, DEL without the netns, CHECK,
//! STATUS and GC of a killed ADD's leftovers. Needs root.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cni::{address_of, host_veths, invoke, sandbox, Network, PLUGIN};
use support::netns::{run, unique};
use support::plexus::Plexus;
use support::world::{wait_ping, Deployment, STRANGER, WORLD};

/// A plugin process, killed by its guard if a test fails while it runs.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network configuration for `plexus`'s API and agent.
async fn network(plexus: &Plexus) -> Network {
    let hosts: Vec<nsdb::Host> = plexus.client().list("/v1/hosts").await.unwrap();
    let host = hosts.iter().find(|h| h.alive).expect("an agent");
    Network::new(&plexus.url, &plexus.token, &host.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_interface_refuses_what_the_spec_says() {
    // No API is needed for these: nothing gets that far.
    let net = Network::new("http://127.0.0.1:9", "no-token", "nohost");
    let conf = net.with(json!({}));
    let add = |vars: &[(&str, &str)], stdin: &[u8]| {
        let mut all = vec![("CNI_COMMAND", "ADD"), ("CNI_PATH", "/usr/lib/cni")];
        all.extend_from_slice(vars);
        invoke(&all, stdin)
    };
    let full = [
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/plexus-none"),
        ("CNI_IFNAME", "eth0"),
    ];
    assert_eq!(invoke(&[], &conf).code(), 4, "no CNI_COMMAND");
    assert_eq!(invoke(&[("CNI_COMMAND", "FROB")], &conf).code(), 4);
    for missing in 0..full.len() {
        let vars: Vec<_> = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, v)| *v)
            .collect();
        let answer = add(&vars, &conf);
        assert_eq!(
            answer.code(),
            4,
            "{:?} missing: {}",
            full[missing],
            answer.json
        );
    }
    let no_path = invoke(&[("CNI_COMMAND", "ADD"), full[0], full[1], full[2]], &conf);
    assert_eq!(no_path.code(), 4, "CNI_PATH missing");
    assert_eq!(add(&full, b"{not json").code(), 6);
    assert_eq!(add(&full, b"").code(), 6);
    let old = br#"{"cniVersion":"0.3.1","name":"plexus","type":"plexus-cni"}"#;
    let answer = add(&full, old);
    assert_eq!(answer.code(), 1);
    assert_eq!(answer.json["cniVersion"], "1.1.0");
    assert_eq!(
        add(&full, br#"{"cniVersion":"1.0.0","type":"plexus-cni"}"#).code(),
        7
    );
    assert_eq!(add(&full, &net.with(json!({"mtu": "big"}))).code(), 7);
    assert_eq!(
        add(&full, &net.with(json!({"token_file": "/nonexistent"}))).code(),
        7
    );
    assert_eq!(
        add(&[full[0], full[1], ("CNI_IFNAME", "a/b")], &conf).code(),
        4
    );
    // Unknown keys are ignored; the missing namespace is "container unknown".
    let answer = add(
        &full,
        &net.with(json!({"frobnicate": {"x": 1}, "args": {"a": 1}})),
    );
    assert_eq!(answer.code(), 3, "{}", answer.json);
    assert_eq!(answer.json["cniVersion"], "1.1.0");
    // The API is down: try again later.
    let pod = sandbox(&net, "c1");
    let netns = format!("/var/run/netns/{}", pod.netns);
    let answer = add(&[full[0], ("CNI_NETNS", &netns), full[2]], &conf);
    assert_eq!(answer.code(), 11, "{}", answer.json);
    assert!(
        host_veths().iter().all(|v| *v != pod.host_if),
        "ADD left its veth"
    );
    // VERSION, with and without a config.
    let version = invoke(&[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(
        version.result(),
        &json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );
    let version = invoke(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"0.4.0"}"#);
    assert_eq!(version.result()["cniVersion"], "0.4.0");
    // STATUS and GC are 1.1 commands; STATUS says when the API is down.
    let old_conf = net.with(json!({"cniVersion": "1.0.0"}));
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")];
    assert_eq!(invoke(&status, &old_conf).code(), 1);
    assert_eq!(invoke(&status, &conf).code(), 50);
    let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")];
    assert_eq!(invoke(&gc, &old_conf).code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_their_gateway_and_the_outside() {
    let deployment = Deployment::start().await;
    let net = network(&deployment.plexus).await;
    let namespace = unique("ns");
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=a");
    let conf = net.with(json!({"dns": {"nameservers": ["10.0.0.53"]}}));
    let (a, b) = (sandbox(&net, "pod-a"), sandbox(&net, "pod-b"));
    let started = Instant::now();
    let ra = net
        .call("ADD", "pod-a", "eth0", Some(&a.netns), &args, &conf)
        .result()
        .clone();
    let add_took = started.elapsed();
    let rb = net
        .call("ADD", "pod-b", "eth0", Some(&b.netns), &args, &conf)
        .result()
        .clone();
    // The result: both interfaces, the address with its gateway, the route, DNS.
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["interfaces"][0]["name"], a.host_if.as_str());
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(
        ra["interfaces"][1]["sandbox"],
        format!("/var/run/netns/{}", a.netns)
    );
    assert_eq!(ra["ips"][0]["interface"], 1);
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(ra["dns"]["nameservers"][0], "10.0.0.53");
    let gateway = ra["ips"][0]["gateway"].as_str().unwrap().to_string();
    assert_eq!(ra["routes"][0]["gw"], gateway.as_str());
    // The tenant is the pod's namespace, created by the ADD.
    let tenants: Vec<nsdb::Tenant> = deployment.client.list("/v1/tenants").await.unwrap();
    let tenant = tenants
        .iter()
        .find(|t| t.name == namespace)
        .expect("tenant");
    let network = deployment.client.tenant_network(tenant.id).await.unwrap();
    let network = network.expect("the ADD initialised the tenant network");
    assert_eq!(gateway, network.gateway.to_string());
    // The kernel side is what the result says.
    let link = run(&["ip", "-n", &a.netns, "-o", "link", "show", "eth0"]).stdout;
    let link = String::from_utf8_lossy(&link).into_owned();
    let field = |name: &str| {
        let mut words = link.split_whitespace();
        words.find(|w| *w == name);
        words.next().unwrap_or_default().to_string()
    };
    assert_eq!(
        field("link/ether"),
        ra["interfaces"][1]["mac"].as_str().unwrap()
    );
    assert_eq!(field("mtu"), network.mtu.to_string());
    assert_eq!(ra["interfaces"][1]["mtu"], network.mtu);
    // Traffic flows as soon as ADD returns.
    let (got, text) = a.ping(&gateway, 1, &[]);
    assert_eq!(got, 1, "first ping after ADD ({add_took:?}): {text}");
    wait_ping(&a, &address_of(&rb));
    wait_ping(&b, &address_of(&ra));
    // The outside (masqueraded) and the host (without NAT).
    wait_ping(&a, STRANGER);
    wait_ping(&a, WORLD);
    // Idempotent: ADD again answers the same; CHECK passes with prevResult.
    let again = net.call("ADD", "pod-a", "eth0", Some(&a.netns), &args, &conf);
    assert_eq!(again.result(), &ra);
    let check_conf = net.with(json!({"prevResult": ra}));
    let check = net.call("CHECK", "pod-a", "eth0", Some(&a.netns), &args, &check_conf);
    assert!(check.ok, "{} {}", check.json, check.stderr);
    assert_eq!(check.json, Value::Null);
    // CHECK notices what changed behind its back.
    let prefixed = ra["ips"][0]["address"].as_str().unwrap();
    a.exec(&["ip", "addr", "del", prefixed, "dev", "eth0"]);
    let check = net.call("CHECK", "pod-a", "eth0", Some(&a.netns), &args, &check_conf);
    assert_eq!(check.code(), 103);
    assert!(check.json["details"].as_str().unwrap().contains(prefixed));
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")];
    assert!(invoke(&status, &conf).ok);
    // DEL three times; everything is gone.
    for _ in 0..3 {
        let del = net.call("DEL", "pod-a", "eth0", Some(&a.netns), &args, &check_conf);
        assert!(del.ok, "{} {}", del.json, del.stderr);
        assert_eq!(del.json, Value::Null);
    }
    assert!(!host_veths().contains(&a.host_if));
    let leases_path = format!("/v1/ip_pools/{}/leases", network.pool.id);
    let leases: Vec<nsdb::IpLease> = deployment.client.list(&leases_path).await.unwrap();
    assert_eq!(leases.len(), 1, "only pod-b's lease is left: {leases:?}");
    assert!(deployment
        .client
        .attachment(&net.key("pod-a", "eth0"))
        .await
        .unwrap()
        .is_none());
    // DEL of a container never added succeeds too.
    assert!(net.call("DEL", "never", "eth0", None, "", &conf).ok);
    // DEL after the namespace vanished cleans up everything.
    run(&["ip", "netns", "del", &b.netns]);
    let del = net.call("DEL", "pod-b", "eth0", Some(&b.netns), &args, &conf);
    assert!(del.ok, "{} {}", del.json, del.stderr);
    assert!(!host_veths().contains(&b.host_if));
    let leases: Vec<nsdb::IpLease> = deployment.client.list(&leases_path).await.unwrap();
    assert!(leases.is_empty());
    let ports: Vec<nsdb::Port> = deployment
        .client
        .list(&format!("/v1/ports?device_id={}", network.bridge.id))
        .await
        .unwrap();
    assert_eq!(ports.len(), 1, "only the router's port is left: {ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_with_the_same_subnet_stay_apart() {
    let plexus = Plexus::start().await;
    let client = plexus.client();
    let net = network(&plexus).await;
    let mut pods = Vec::new();
    for tenant in ["red", "green"] {
        let name = unique(tenant);
        let id = client.create_tenant(&name).await.unwrap().id;
        // The second tenant on the subnet accepts NAT-only host access.
        client
            .init_tenant_network_with(id, Some("10.77.0.0/24"), tenant == "green")
            .await
            .unwrap();
        let conf = net.with(json!({"tenant": name, "cniVersion": "1.0.0"}));
        for n in 0..2 {
            let container = format!("{tenant}-{n}");
            let pod = sandbox(&net, &container);
            let result = net
                .call("ADD", &container, "eth0", Some(&pod.netns), "", &conf)
                .result()
                .clone();
            assert_eq!(result["cniVersion"], "1.0.0");
            assert!(address_of(&result).starts_with("10.77.0."));
            pods.push((pod, address_of(&result)));
        }
    }
    let [(red0, red0_ip), (red1, red1_ip), (_, green0_ip), (green1, _)] = &pods[..] else {
        unreachable!()
    };
    wait_ping(red0, red1_ip);
    wait_ping(green1, green0_ip);
    wait_ping(red1, "10.77.0.1");
    // Red's pods never reach green's (or the reverse), whatever the address.
    if green0_ip != red0_ip && green0_ip != red1_ip {
        assert_eq!(red0.ping(green0_ip, 3, &[]).0, 0, "red reached green");
    }
    if red0_ip != green0_ip {
        let (got, _) = green1.ping(red0_ip, 3, &[]);
        assert_eq!(got, 0, "green reached red");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_what_a_killed_add_left() {
    let plexus = Plexus::start().await;
    let client = plexus.client();
    let net = network(&plexus).await;
    let conf = net.with(json!({}));
    // A pod that stays.
    let keep = sandbox(&net, "keep");
    let kept = net
        .call("ADD", "keep", "eth0", Some(&keep.netns), "", &conf)
        .result()
        .clone();
    // An ADD killed while it waits for an agent that never comes: its port,
    // binding, lease and veth stay behind.
    let ghost = client
        .create_host(&unique("ghost"), "192.0.2.9")
        .await
        .unwrap();
    let ghost_net = Network::new(&plexus.url, &plexus.token, &ghost.name);
    let ghost_conf = ghost_net.with(json!({"active_timeout_ms": 60_000}));
    let doomed = sandbox(&ghost_net, "doomed");
    let mut child = Killed(
        Command::new(PLUGIN)
            .env_clear()
            .envs([
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "doomed"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
                ("CNI_NETNS", &format!("/var/run/netns/{}", doomed.netns)),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::io::Write::write_all(&mut child.0.stdin.take().unwrap(), &ghost_conf).unwrap();
    let key = ghost_net.key("doomed", "eth0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.attachment(&key).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the ADD never attached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // And a veth whose ADD died before it reached the API (its peer in a
    // sandbox, so that the sandbox's guard removes it if the test fails).
    let early = ghost_net.key("early", "eth0");
    let early_if = early.host_interface();
    run(&[
        "ip",
        "link",
        "add",
        &early_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth9",
        "netns",
        &doomed.netns,
    ]);
    run(&["ip", "link", "set", &early_if, "alias", &early.owner()]);
    assert!(host_veths().contains(&key.host_interface()));
    assert!(host_veths().contains(&early_if));
    let attachment = client.attachment(&key).await.unwrap().unwrap();
    // GC on the ghost host, with the runtime knowing only "keep".
    let valid = json!({"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]});
    let gc = invoke(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        &ghost_net.with(valid.clone()),
    );
    assert!(gc.ok, "{} {}", gc.json, gc.stderr);
    assert!(client.attachment(&key).await.unwrap().is_none());
    assert!(client
        .get::<nsdb::Port>(&format!("/v1/ports/{}", attachment.port.id))
        .await
        .is_err());
    let leases: Vec<nsdb::IpLease> = client
        .list(&format!("/v1/ip_pools/{}/leases", attachment.pool_id))
        .await
        .unwrap();
    assert!(leases
        .iter()
        .all(|l| l.address != attachment.address.addr()));
    assert!(!host_veths().contains(&key.host_interface()));
    assert!(!host_veths().contains(&early_if));
    // The valid pod on the real host is untouched, and GC there keeps it.
    let gc = invoke(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        &net.with(valid),
    );
    assert!(gc.ok, "{} {}", gc.json, gc.stderr);
    assert!(client
        .attachment(&net.key("keep", "eth0"))
        .await
        .unwrap()
        .is_some());
    wait_ping(&keep, kept["ips"][0]["gateway"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_add_undoes_what_it_created() {
    let plexus = Plexus::start().await;
    let client = plexus.client();
    // A host whose agent never runs: the port never becomes active.
    let ghost = client
        .create_host(&unique("ghost"), "192.0.2.8")
        .await
        .unwrap();
    let net = Network::new(&plexus.url, &plexus.token, &ghost.name);
    let pod = sandbox(&net, "late");
    let started = Instant::now();
    let answer = net.call(
        "ADD",
        "late",
        "eth0",
        Some(&pod.netns),
        "",
        &net.with(json!({"active_timeout_ms": 300})),
    );
    assert_eq!(answer.code(), 102, "{}", answer.json);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing of it is left: no attachment, port, lease or veth, and the
    // pod's namespace has no eth0.
    assert!(client.attachments(None, None).await.unwrap().is_empty());
    let ports: Vec<nsdb::Port> = client.list("/v1/ports").await.unwrap();
    assert!(
        ports.iter().all(|p| p.host_id != Some(ghost.id)),
        "{ports:?}"
    );
    let pools: Vec<nsdb::IpPool> = client.list("/v1/ip_pools").await.unwrap();
    for pool in pools {
        let leases: Vec<nsdb::IpLease> = client
            .list(&format!("/v1/ip_pools/{}/leases", pool.id))
            .await
            .unwrap();
        assert!(leases.is_empty(), "{leases:?}");
    }
    assert!(!host_veths().contains(&pod.host_if));
    let inside = pod.try_exec(&["ip", "link", "show", "eth0"]);
    assert!(!inside.status.success(), "eth0 is still in the pod");
    // STATUS says the same: the API is up, this host's agent is not.
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")];
    let answer = invoke(&status, &net.with(json!({})));
    assert_eq!(answer.code(), 50, "{}", answer.json);
    assert!(answer.json["msg"].as_str().unwrap().contains("not alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_cluster_network_puts_every_namespace_on_one_tenant() {
    let deployment = Deployment::start().await;
    let client = &deployment.client;
    let net = network(&deployment.plexus).await;
    let conf = net.with(json!({"cluster_network": "kubernetes"}));
    // Namespace "iso" has a tenant of its own (the controller makes one for
    // a namespace annotated plexus.io/isolated-network: "true").
    let own = client.create_tenant("k8s-iso").await.unwrap();
    let add = |id: &str, namespace: &str, pod: &str| {
        let sandbox = sandbox(&net, id);
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={id}");
        let result = net
            .call("ADD", id, "eth0", Some(&sandbox.netns), &args, &conf)
            .result()
            .clone();
        (sandbox, address_of(&result))
    };
    let (xa, xa_ip) = add("x-a", "x", "a");
    let (yb, yb_ip) = add("y-b", "y", "b");
    let (_isoc, _) = add("iso-c", "iso", "c");
    let attachment = |id: &str| {
        let key = net.key(id, "eth0");
        async move { client.attachment(&key).await.unwrap().expect("attached") }
    };
    let (ax, ay, aiso) = (
        attachment("x-a").await,
        attachment("y-b").await,
        attachment("iso-c").await,
    );
    // x and y share the cluster tenant and its bridge; no tenant per namespace.
    let tenants: Vec<nsdb::Tenant> = client.list("/v1/tenants").await.unwrap();
    let cluster = tenants
        .iter()
        .find(|t| t.name == "kubernetes")
        .expect("the cluster tenant, made by the first ADD");
    assert!(tenants.iter().all(|t| t.name != "x" && t.name != "y"));
    assert_eq!((ax.tenant_id, ay.tenant_id), (cluster.id, cluster.id));
    assert_eq!(ax.bridge_id, ay.bridge_id);
    assert_eq!(aiso.tenant_id, own.id, "iso has a tenant of its own");
    assert_ne!(aiso.bridge_id, ax.bridge_id);
    // The ports say whose they are.
    for (attached, namespace, pod) in [(&ax, "x", "a"), (&ay, "y", "b"), (&aiso, "iso", "c")] {
        let port: nsdb::Port = client
            .get(&format!("/v1/ports/{}", attached.port.id))
            .await
            .unwrap();
        let labels: Vec<_> = port
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            labels,
            [
                format!("plexus.io/namespace={namespace}"),
                format!("plexus.io/pod={pod}")
            ]
        );
    }
    // Pods of different namespaces reach each other without NAT: the
    // server sees the client's own address.
    wait_ping(&xa, &yb_ip);
    wait_ping(&yb, &xa_ip);
    let _server = support::world::tcp_server(&yb.netns, &[8080], "yb");
    let answer = support::world::tcp_probe(&xa, &yb_ip, 8080, 2.0, None);
    assert_eq!(
        support::world::peer_of(&answer).0.to_string(),
        xa_ip,
        "{answer}"
    );
    // Kubelet always names the pod; without it nothing is created.
    let bare = sandbox(&net, "bare");
    let answer = net.call(
        "ADD",
        "bare",
        "eth0",
        Some(&bare.netns),
        "K8S_POD_NAMESPACE=x",
        &conf,
    );
    assert_eq!(answer.code(), 4, "{}", answer.json);
    assert!(!host_veths().contains(&bare.host_if));
    assert!(client
        .attachment(&net.key("bare", "eth0"))
        .await
        .unwrap()
        .is_none());
    // DEL needs nothing of the namespace.
    for id in ["x-a", "y-b", "iso-c"] {
        let del = net.call("DEL", id, "eth0", None, "", &conf);
        assert!(del.ok, "{} {}", del.json, del.stderr);
    }
    assert!(client.attachments(None, None).await.unwrap().is_empty());
}
