//! End-to-end: the host and pods talk without NAT when the host is this
//! very namespace, as in the default deployment: the uplink is the TAP the
//! agent creates here and routes the pod subnets through (tests/host_pod_e2e.rs
//! plays the host with a world namespace instead). A server on the host's
//! uplink-gateway address tells each client the address it saw, and so does
//! a server in a pod. A NAT-only tenant (an overlapping pod subnet, opted
//! in) reaches the host masqueraded, and the host's packets to that subnet
//! go to the routed tenant. Needs root.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::unique;
use support::plexus::Plexus;
use support::world::{peer_of, tcp_probe, tcp_server, Deployment};

/// `plexus serve` with its uplink on a new TAP in the host namespace, on
/// ranges no other test uses: uplink `{uplink}.0/24` (the host is `.1`, the
/// uplink port `.2`), floating IPs `{external}.0/24`, pods from `pods`.
async fn deployment(uplink: &str, external: &str, pods: &str) -> (Deployment, String) {
    let tap = unique("pxup");
    let plexus = Plexus::start_with(&[
        "--uplink-interface",
        &tap,
        "--uplink-address",
        &format!("{uplink}.2/24"),
        "--pod-cidr",
        pods,
        "--external-cidr",
        &format!("{external}.0/24"),
    ])
    .await;
    (Deployment::around(plexus).await, tap)
}

/// A TCP server in the host namespace on `address:port` that answers each
/// line with `<tag> <peer-ip>:<peer-port>`; killed by its guard.
struct HostServer(Child);

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host_server(address: &str, port: u16, tag: &str) -> HostServer {
    let script = format!(
        "import socket,threading
def serve(c,a):
  f=c.makefile('rwb')
  for line in f:
    f.write(('{tag} %s:%d\\n'%a[:2]).encode());f.flush()
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
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
    let server_stdout = child.stdout.take().unwrap();
    let server = HostServer(child);
    let mut line = String::new();
    BufReader::new(server_stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the host server did not start");
    server
}

/// Connects from the host namespace to `dst:port` and sends a line; the
/// answer, or `ERR <reason>`.
fn host_probe(dst: &str, port: u16) -> String {
    let script = format!(
        "import socket
try:
  s=socket.socket();s.settimeout(3)
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

/// Pings `dst` from the host namespace until it answers (10 s at most).
fn host_reaches(dst: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("ping")
            .args(["-n", "-c", "1", "-W", "1", dst])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "the host never reached {dst}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_pods_see_each_others_own_addresses() {
    let (d, _tap) = deployment("100.127.40", "100.127.41", "10.232.0.0/16").await;
    let t = d.tenant(None).await;
    assert!(!t.net.nat_only);
    let (pod, _) = d.pod(&t, 10).await;
    let pod_ip = t.address(10).to_string();
    host_reaches(&pod_ip);

    // Pod → host: the host's server sees the pod's own address.
    let _host = host_server("100.127.40.1", 18080, "host");
    for _ in 0..3 {
        let answer = tcp_probe(&pod, "100.127.40.1", 18080, 3.0, None);
        assert!(answer.starts_with("host "), "{answer}");
        assert_eq!(
            peer_of(&answer).0.to_string(),
            pod_ip,
            "the host sees the pod's own address, not a NAT address"
        );
    }
    // Host → pod: the pod's server sees the host's own address.
    let _pod_server = tcp_server(&pod.netns, &[8080], "pod");
    let answer = host_probe(&pod_ip, 8080);
    assert!(answer.starts_with("pod "), "{answer}");
    assert_eq!(peer_of(&answer).0.to_string(), "100.127.40.1", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nat_only_tenant_reaches_the_host_masqueraded() {
    let (d, _tap) = deployment("100.127.42", "100.127.43", "10.233.0.0/16").await;
    let routed = d.tenant(Some("10.233.0.0/24")).await;
    let nat_only = d.tenant_with(Some("10.233.0.0/24"), true).await;
    assert!(nat_only.net.nat_only);
    let (routed_pod, _) = d.pod(&routed, 10).await;
    let (nat_pod, _) = d.pod(&nat_only, 10).await;
    let pod_ip = routed.address(10).to_string();
    host_reaches(&pod_ip);

    let _host = host_server("100.127.42.1", 18081, "host");
    let answer = tcp_probe(&nat_pod, "100.127.42.1", 18081, 3.0, None);
    assert!(answer.starts_with("host "), "{answer}");
    assert_eq!(
        peer_of(&answer).0.to_string(),
        "100.127.42.2",
        "the NAT-only pod reaches the host from the uplink's address"
    );
    let answer = tcp_probe(&routed_pod, "100.127.42.1", 18081, 3.0, None);
    assert_eq!(peer_of(&answer).0.to_string(), pod_ip, "{answer}");
    // The shared address is the routed tenant's, as far as the host knows.
    let _routed_server = tcp_server(&routed_pod.netns, &[8080], "routed");
    let _nat_server = tcp_server(&nat_pod.netns, &[8080], "nat-only");
    let answer = host_probe(&pod_ip, 8080);
    assert!(answer.starts_with("routed "), "{answer}");
}

/// Kubernetes: traffic from the node (kubelet probes) reaches pods that a
/// deny-all ingress policy isolates, while pods no longer reach each
/// other — the policy applied with the reconcile behind `plexus k8s apply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reaches_pods_a_deny_all_policy_isolates() {
    let (d, _tap) = deployment("100.127.44", "100.127.45", "10.234.0.0/16").await;
    let t = d.tenant(None).await;
    let tenant: nsdb::Tenant = d
        .client
        .get(&format!("/v1/tenants/{}", t.id))
        .await
        .unwrap();
    let mut ports = Vec::new();
    let mut pods = Vec::new();
    for (n, name) in [(10, "a"), (11, "b")] {
        let (pod, port) = d.pod(&t, n).await;
        // Labelled as the CNI's cluster mode labels a pod's port.
        let _: serde_json::Value = d
            .client
            .patch(
                &format!("/v1/ports/{port}"),
                &serde_json::json!({"labels": {"plexus.io/namespace": "x", "plexus.io/pod": name}}),
                None,
            )
            .await
            .unwrap();
        ports.push(port);
        pods.push(pod);
    }
    let a_ip = t.address(10).to_string();
    host_reaches(&a_ip);
    let _server = tcp_server(&pods[0].netns, &[8080], "a");
    assert!(tcp_probe(&pods[1], &a_ip, 8080, 3.0, None).starts_with("a "));

    let mut objects = k8s::objects::Objects::default();
    objects
        .add_yaml(
            r#"
kind: Namespace
metadata: {name: x}
---
kind: Pod
metadata: {name: a, namespace: x}
---
kind: Pod
metadata: {name: b, namespace: x}
---
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#,
        )
        .unwrap();
    let settings = k8s::reconcile::Settings {
        tenant: tenant.name.clone(),
    };
    let report = k8s::reconcile::reconcile(&d.client, &settings, &objects)
        .await
        .unwrap();
    assert!(
        report.errors.is_empty() && report.pods_without_port.is_empty(),
        "{report}"
    );

    // Pod → pod is now refused; the node still gets through, seen with its
    // own address.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = tcp_probe(&pods[1], &a_ip, 8080, 1.0, None);
        if answer.starts_with("ERR") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the policy never isolated a: {answer}"
        );
    }
    let answer = host_probe(&a_ip, 8080);
    assert!(answer.starts_with("a "), "the node reaches a: {answer}");
    assert_eq!(peer_of(&answer).0.to_string(), "100.127.44.1", "{answer}");
}
