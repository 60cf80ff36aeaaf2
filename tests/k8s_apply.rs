//! The Kubernetes reconcile against a real API server, on the embedded
//! store and a real etcd: pods' ports (attached as the CNI's cluster mode
//! does) get their labels and the cluster chains; policies become chains
//! and groups and go away with their manifests; a changed policy is a new
//! generation switched to whole; reconciling again writes nothing; an
//! isolated namespace gets its own tenant; `plexus k8s apply -f` reads a
//! directory and refuses a malformed manifest before writing anything.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use api::provision::{AttachmentKey, AttachmentRequest};
use k8s::objects::Objects;
use k8s::reconcile::{reconcile, Report, Settings};
use nsdb::{Chain, IpAddressGroup, Port, PortGroup, Rule, Tenant};
use support::api::*;
use uuid::Uuid;

/// Attaches pod `ns/name` as the CNI's cluster mode does.
async fn attach(s: &TestServer, tenant: &str, host: Uuid, ns: &str, name: &str) -> Port {
    let key = AttachmentKey {
        network: "plexus".into(),
        container_id: format!("{ns}-{name}"),
        ifname: "eth0".into(),
    };
    let labels = [("plexus.io/namespace", ns), ("plexus.io/pod", name)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let request = AttachmentRequest {
        host_id: host,
        interface_name: format!("pxk{ns}{name}"),
        tenant: tenant.into(),
        bridge_id: None,
        mac: None,
        pools: Vec::new(),
        labels,
    };
    s.admin.put_attachment(&key, &request).await.unwrap().port
}

const NAMESPACES_AND_PODS: &str = r#"
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
kind: Namespace
metadata: {name: y, labels: {ns: y}}
---
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 80}]}]}
---
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]}
"#;

const ALLOW_FROM_Y: &str = r#"
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: web}]
"#;

fn objects(yaml: &[&str]) -> Objects {
    let mut objects = Objects::default();
    for text in yaml {
        objects.add_yaml(text).expect("valid manifests");
    }
    objects
}

async fn run(s: &TestServer, objects: &Objects) -> Report {
    let report = reconcile(&s.admin, &Settings::default(), objects)
        .await
        .expect("reconciled");
    assert!(report.errors.is_empty(), "{report}");
    report
}

async fn cluster_tenant(s: &TestServer) -> Tenant {
    let tenants: Vec<Tenant> = s.admin.list("/v1/tenants").await.unwrap();
    tenants
        .into_iter()
        .find(|t| t.name == "kubernetes")
        .expect("the cluster tenant")
}

/// The names of the tenant's chains, port groups and address groups.
async fn owned_names(s: &TestServer, tenant: Uuid) -> Vec<String> {
    let mut names = Vec::new();
    let chains: Vec<Chain> = s
        .admin
        .list(&format!("/v1/chains?tenant_id={tenant}"))
        .await
        .unwrap();
    names.extend(chains.into_iter().map(|c| c.name));
    let groups: Vec<PortGroup> = s
        .admin
        .list(&format!("/v1/port_groups?tenant_id={tenant}"))
        .await
        .unwrap();
    names.extend(groups.into_iter().map(|g| g.name));
    let groups: Vec<IpAddressGroup> = s
        .admin
        .list(&format!("/v1/ip_address_groups?tenant_id={tenant}"))
        .await
        .unwrap();
    names.extend(groups.into_iter().map(|g| g.name));
    names.sort();
    names
}

async fn policy_follows_its_manifest(s: &TestServer) {
    provider_with_uplink(s).await;
    let host = s.admin.create_host("node-1", "192.0.2.21").await.unwrap();
    let a = attach(s, "kubernetes", host.id, "x", "a").await;
    let b = attach(s, "kubernetes", host.id, "y", "b").await;

    // Pods and a policy: the ports get labels and chains, the policy its
    // records.
    let first = run(s, &objects(&[NAMESPACES_AND_PODS, ALLOW_FROM_Y])).await;
    assert!(
        first.written > 0 && first.pods_without_port.is_empty(),
        "{first}"
    );
    let tenant = cluster_tenant(s).await;
    let port: Port = s.admin.get(&format!("/v1/ports/{}", a.id)).await.unwrap();
    let expected: BTreeMap<String, String> = [
        ("pod", "a"),
        ("plexus.io/namespace", "x"),
        ("plexus.io/pod", "a"),
        ("namespace.plexus.io/ns", "x"),
        ("kubernetes.io.ns.plexus.io/metadata.name", "x"),
        ("ports.plexus.io/tcp.web", "80"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(port.labels, expected);
    assert!(port.inbound_chain_id.is_some() && port.outbound_chain_id.is_some());
    let names = owned_names(s, tenant.id).await;
    let policy_names: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("k8s x/from-y"))
        .collect();
    assert!(
        policy_names.iter().any(|n| n.ends_with(" ingress")),
        "the policy's chain: {names:?}"
    );
    // Named port `web` resolves to 80 and 8080: a group per number.
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("ports.plexus.io/tcp.web=80")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("ports.plexus.io/tcp.web=8080")),
        "{names:?}"
    );

    // Again: nothing to write.
    let again = run(s, &objects(&[NAMESPACES_AND_PODS, ALLOW_FROM_Y])).await;
    assert_eq!(
        (again.transactions, again.written, again.deleted),
        (0, 0, 0),
        "{again}"
    );

    // A changed policy: a new generation, the old one gone entirely.
    let changed = ALLOW_FROM_Y.replace("ns: y", "ns: z");
    let third = run(s, &objects(&[NAMESPACES_AND_PODS, &changed])).await;
    assert!(third.deleted > 0 && third.written > 0, "{third}");
    let after = owned_names(s, tenant.id).await;
    let generation = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| n.ends_with(" ingress") && n.starts_with("k8s x/from-y@"))
            .cloned()
            .collect()
    };
    assert_eq!(generation(&after).len(), 1, "{after:?}");
    assert_ne!(generation(&after), generation(&names), "a new generation");

    // Pod b's labels change: only its port is rewritten.
    let relabelled = NAMESPACES_AND_PODS.replace("labels: {pod: b}", "labels: {pod: b, tier: db}");
    let fourth = run(s, &objects(&[&relabelled, &changed])).await;
    assert_eq!((fourth.transactions, fourth.written), (1, 1), "{fourth}");
    let port: Port = s.admin.get(&format!("/v1/ports/{}", b.id)).await.unwrap();
    assert_eq!(port.labels.get("tier").map(String::as_str), Some("db"));

    // The manifest gone: the policy's records are gone; the cluster's stay.
    let fifth = run(s, &objects(&[&relabelled])).await;
    assert!(fifth.deleted > 0, "{fifth}");
    let left = owned_names(s, tenant.id).await;
    assert!(
        left.iter().all(|n| !n.starts_with("k8s x/")),
        "nothing of the policy is left: {left:?}"
    );
    assert!(left.iter().any(|n| n == "k8s cluster:ingress"), "{left:?}");
    let rules: Vec<Rule> = s
        .admin
        .list(&format!(
            "/v1/chains/{}/rules",
            port.outbound_chain_id.unwrap()
        ))
        .await
        .unwrap();
    assert!(
        rules.len() >= 3,
        "the cluster ingress chain keeps its rules: {rules:?}"
    );
}

/// A policy with more records than one transaction carries is built,
/// switched and cleaned up in steps, and ends exactly as desired.
async fn a_large_policy_applies_in_steps(s: &TestServer) {
    provider_with_uplink(s).await;
    let mut peers = String::new();
    for n in 0..30 {
        peers.push_str(&format!(
            "    - podSelector: {{matchLabels: {{pod: p{n}}}}}\n"
        ));
    }
    let large = format!(
        "kind: NetworkPolicy\nmetadata: {{name: large, namespace: x}}\nspec:\n  podSelector: {{}}\n  ingress:\n  - from:\n{peers}"
    );
    let report = run(s, &objects(&[&large])).await;
    assert!(report.transactions >= 3, "{report}");
    let tenant = cluster_tenant(s).await;
    let names = owned_names(s, tenant.id).await;
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("k8s x/large@") && n.contains("/ingress/0/"))
            .count(),
        30,
        "{names:?}"
    );
    let smaller = large.replace("    - podSelector: {matchLabels: {pod: p29}}\n", "");
    let report = run(s, &objects(&[&smaller])).await;
    assert!(report.deleted >= 30, "the old generation went: {report}");
    let names = owned_names(s, tenant.id).await;
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("k8s x/large@") && n.contains("/ingress/0/"))
            .count(),
        29,
        "{names:?}"
    );
    let again = run(s, &objects(&[&smaller])).await;
    assert_eq!(again.transactions, 0, "{again}");
}

async fn an_isolated_namespace_gets_its_own_tenant(s: &TestServer) {
    provider_with_uplink(s).await;
    let isolated = r#"
kind: Namespace
metadata: {name: vault, annotations: {plexus.io/isolated-network: "true"}}
---
kind: NetworkPolicy
metadata: {name: deny, namespace: vault}
spec: {podSelector: {}}
"#;
    let report = run(s, &objects(&[isolated])).await;
    let tenants: Vec<Tenant> = s.admin.list("/v1/tenants").await.unwrap();
    let own = tenants
        .iter()
        .find(|t| t.name == "k8s-vault")
        .expect("k8s-vault");
    assert!(own.network.is_some(), "with its network");
    let names = owned_names(s, cluster_tenant(s).await.id).await;
    assert!(
        names.iter().all(|n| !n.contains("vault/")),
        "the isolated namespace's policies are outside the cluster network: {names:?} {report}"
    );
}

/// Services: a ClusterIP's port is a VIP whose members are the ready
/// endpoints (from EndpointSlices, or the selector's pods without them, a
/// named targetPort resolved per pod); ClientIP is source-IP affinity; a
/// NodePort is a VIP on the provider's uplink address; headless gets
/// nothing; a Service gone takes its objects along.
async fn services_become_vips(s: &TestServer) {
    provider_with_uplink(s).await;
    let host = s.admin.create_host("node-s", "192.0.2.31").await.unwrap();
    let mut addresses = Vec::new();
    for name in ["a", "b", "c"] {
        let port = attach(s, "kubernetes", host.id, "x", name).await;
        addresses.push(port.allowed_addresses[0].ip.addr().to_string());
    }
    let pods = r#"
kind: Pod
metadata: {name: a, namespace: x, labels: {app: web}}
spec: {containers: [{ports: [{name: http, containerPort: 80}]}]}
---
kind: Pod
metadata: {name: b, namespace: x, labels: {app: web}}
spec: {containers: [{ports: [{name: http, containerPort: 8080}]}]}
---
kind: Pod
metadata: {name: c, namespace: x, labels: {app: db}}
"#;
    let services = format!(
        r#"
kind: Service
metadata: {{name: web, namespace: x}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  selector: {{app: web}}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 60}}}}
  ports: [{{name: http, port: 80, targetPort: http, nodePort: 30080}}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-1, namespace: x, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 80}}]
endpoints:
- {{addresses: ["{a}"], conditions: {{ready: true}}}}
- {{addresses: ["{b}"]}}
- {{addresses: ["{c}"], conditions: {{ready: false}}}}
---
kind: Service
metadata: {{name: by-selector, namespace: x}}
spec:
  clusterIP: 10.96.0.11
  selector: {{app: web}}
  ports: [{{port: 8000, targetPort: http}}, {{port: 53, protocol: UDP}}]
---
kind: Service
metadata: {{name: headless, namespace: x}}
spec: {{clusterIP: None, selector: {{app: web}}, ports: [{{port: 80}}]}}
"#,
        a = addresses[0],
        b = addresses[1],
        c = addresses[2]
    );
    let report = run(s, &objects(&[pods, &services])).await;
    assert!(report.refused.is_empty(), "{report}");
    let vips: Vec<nsdb::Vip> = s.admin.list("/v1/vips").await.unwrap();
    let find = |address: &str, port: u16| {
        vips.iter()
            .find(|v| v.address.to_string() == address && v.port == port)
            .unwrap_or_else(|| panic!("a VIP {address}:{port} in {vips:?}"))
            .clone()
    };
    let members_of = |vip: &nsdb::Vip| {
        let pool = vip.pool_id;
        async move {
            let members: Vec<nsdb::PoolMember> = s
                .admin
                .list(&format!("/v1/members?pool_id={pool}"))
                .await
                .unwrap();
            let mut members: Vec<String> = members
                .iter()
                .map(|m| format!("{}:{}", m.address, m.port))
                .collect();
            members.sort();
            members
        }
    };
    let web = find("10.96.0.10", 80);
    assert_eq!(web.session_affinity, nsdb::SessionAffinity::SourceIp);
    assert_eq!(web.affinity_timeout_s, 60);
    let ready = {
        let mut v = vec![
            format!("{}:80", addresses[0]),
            format!("{}:80", addresses[1]),
        ];
        v.sort();
        v
    };
    assert_eq!(members_of(&web).await, ready, "ready endpoints only");
    let node_port = find("100.64.0.2", 30080);
    assert_eq!(members_of(&node_port).await, ready);
    let by_selector = find("10.96.0.11", 8000);
    let mut resolved = vec![
        format!("{}:80", addresses[0]),
        format!("{}:8080", addresses[1]),
    ];
    resolved.sort();
    assert_eq!(
        members_of(&by_selector).await,
        resolved,
        "a named targetPort per pod"
    );
    assert_eq!(find("10.96.0.11", 53).protocol, nsdb::LbProtocol::Udp);
    assert_eq!(vips.len(), 4, "headless gets none: {vips:?}");

    // Egress policies of Service traffic are decided after the
    // translation: on the cluster router's port toward the pods, with
    // the ClusterIPs in the cluster's services group.
    let tenant = cluster_tenant(s).await;
    let network = tenant.network.expect("network");
    let router_ports: Vec<Port> = s
        .admin
        .list(&format!("/v1/routers/{}/ports", network.router_id))
        .await
        .unwrap();
    let toward_pods = router_ports
        .iter()
        .find(|p| {
            p.peer_id.is_some()
                && p.address
                    .is_some_and(|a| a.contains(&addresses[0].parse::<std::net::IpAddr>().unwrap()))
        })
        .expect("the router's port on the pods' subnet");
    let chain: Chain = s
        .admin
        .get(&format!(
            "/v1/chains/{}",
            toward_pods.outbound_chain_id.expect("a chain")
        ))
        .await
        .unwrap();
    assert_eq!(chain.name, "k8s cluster:deferred");
    let groups: Vec<IpAddressGroup> = s
        .admin
        .list(&format!("/v1/ip_address_groups?tenant_id={}", tenant.id))
        .await
        .unwrap();
    let services_group = groups
        .iter()
        .find(|g| g.name == "k8s cluster:services")
        .expect("the services group");
    let mut cluster_ips: Vec<String> = services_group
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    cluster_ips.sort();
    assert_eq!(cluster_ips, vec!["10.96.0.10/32", "10.96.0.11/32"]);

    let again = run(s, &objects(&[pods, &services])).await;
    assert_eq!(again.transactions, 0, "{again}");

    // b turns unready: one member less; the headless and selector
    // Services gone: their objects too.
    let fewer = services.replace(
        &format!("- {{addresses: [\"{}\"]}}", addresses[1]),
        &format!(
            "- {{addresses: [\"{}\"], conditions: {{ready: false}}}}",
            addresses[1]
        ),
    );
    let only_web: String = fewer.split("---").take(2).collect::<Vec<_>>().join("---");
    run(s, &objects(&[pods, &only_web])).await;
    assert_eq!(members_of(&web).await, vec![format!("{}:80", addresses[0])]);
    let vips: Vec<nsdb::Vip> = s.admin.list("/v1/vips").await.unwrap();
    assert_eq!(vips.len(), 2, "{vips:?}");
    run(s, &objects(&[pods])).await;
    let vips: Vec<nsdb::Vip> = s.admin.list("/v1/vips").await.unwrap();
    let pools: Vec<nsdb::Pool> = s.admin.list("/v1/pools").await.unwrap();
    let members: Vec<nsdb::PoolMember> = s.admin.list("/v1/members").await.unwrap();
    assert!(
        vips.is_empty() && pools.is_empty() && members.is_empty(),
        "{vips:?} {pools:?} {members:?}"
    );
}

/// A pod whose name is too long for a label value has a port with only
/// its namespace label (what the CNI can set); the reconcile finds it by
/// the pod's address and labels it without the name.
async fn a_long_named_pod_is_found_by_its_address(s: &TestServer) {
    provider_with_uplink(s).await;
    let host = s.admin.create_host("node-l", "192.0.2.41").await.unwrap();
    let name = "a".repeat(70);
    let key = AttachmentKey {
        network: "plexus".into(),
        container_id: "long".into(),
        ifname: "eth0".into(),
    };
    let request = AttachmentRequest {
        host_id: host.id,
        interface_name: "pxklong".into(),
        tenant: "kubernetes".into(),
        bridge_id: None,
        mac: None,
        pools: Vec::new(),
        labels: [("plexus.io/namespace".to_string(), "x".to_string())]
            .into_iter()
            .collect(),
    };
    let port = s.admin.put_attachment(&key, &request).await.unwrap().port;
    let address = port.allowed_addresses[0].ip.addr();
    let pod = format!(
        "kind: Pod\nmetadata: {{name: {name}, namespace: x, labels: {{app: web}}}}\nstatus: {{podIP: {address}}}\n"
    );
    let report = run(s, &objects(&[&pod])).await;
    assert!(report.pods_without_port.is_empty(), "{report}");
    let port: Port = s
        .admin
        .get(&format!("/v1/ports/{}", port.id))
        .await
        .unwrap();
    assert_eq!(
        port.labels.get("app").map(String::as_str),
        Some("web"),
        "{:?}",
        port.labels
    );
    assert!(!port.labels.contains_key("plexus.io/pod"));
}

both_backends!(
    a_long_named_pod_is_found_by_its_address,
    services_become_vips,
    policy_follows_its_manifest,
    a_large_policy_applies_in_steps,
    an_isolated_namespace_gets_its_own_tenant
);

/// `plexus k8s apply -f <dir>` against a running API; a malformed manifest
/// is refused, naming it, before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reads_a_directory() {
    let s = TestServer::embedded().await;
    provider_with_uplink(&s).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-pods.yaml"), NAMESPACES_AND_PODS).unwrap();
    std::fs::write(dir.path().join("10-policy.yml"), ALLOW_FROM_Y).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
    let apply = |path: &std::path::Path| {
        let base = s.base.clone();
        let path = path.to_path_buf();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_plexus"))
                    .args(["k8s", "apply", "-f"])
                    .arg(&path)
                    .args(["--api", &base, "--token", ADMIN_TOKEN])
                    .output()
                    .expect("run plexus")
            })
            .await
            .unwrap()
        }
    };
    let out = apply(dir.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pods without a port yet: x/a, y/b"),
        "{stdout}"
    );
    let tenant = cluster_tenant(&s).await;
    assert!(owned_names(&s, tenant.id)
        .await
        .iter()
        .any(|n| n.starts_with("k8s x/from-y@")));

    std::fs::write(
        dir.path().join("20-broken.yaml"),
        "kind: NetworkPolicy\nmetadata: {name: broken, namespace: x}\nspec: {podSelector: 7}\n",
    )
    .unwrap();
    let before = s.dump().await;
    let out = apply(dir.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("20-broken.yaml") && stderr.contains("NetworkPolicy broken"),
        "{stderr}"
    );
    s.assert_unchanged(&before, "a malformed manifest").await;
}
