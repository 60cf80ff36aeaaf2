//! The classic NetworkPolicy test bed with real packets: namespaces x, y
//! and z with pods a, b and c each (9 pods), attached the way kubelet does
//! it, through the `plexus-cni` binary in Kubernetes cluster mode, and
//! spread over the two hosts of a [`Cluster`]. Every pod serves TCP and UDP
//! on ports 80 and 81, answering each client with the address it saw.
//! [`PodCluster::matrix`] probes the full 9×9 matrix on all four in
//! parallel; [`PodCluster::apply`] writes the cluster's Namespace and Pod
//! objects with a case's NetworkPolicies into a directory and runs
//! `plexus k8s apply -f` on it. Every namespace, veth, server and process
//! goes with the guards, also when a test fails.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::cluster::{Cluster, Netns, Relay};

/// The namespaces, in matrix order.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pods of each namespace, in matrix order.
pub const NAMES: [&str; 3] = ["a", "b", "c"];
/// How many hosts the pods are spread over.
pub const HOSTS: usize = 2;
/// The CNI network name in the plugin's configuration.
const NETWORK: &str = "k8s";
/// How long a first probe waits for its connection or echo.
const FIRST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the one retry of a probe that did not get through waits.
const RETRY_TIMEOUT: Duration = Duration::from_millis(1000);
/// Probes in flight at once (a whole matrix: blocked probes mostly wait).
const PARALLEL: usize = 288;

/// A transport protocol the pods serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP: a probe is a connection.
    Tcp,
    /// UDP: a probe is a datagram and its echo.
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// The four (protocol, port) pairs every pod serves.
pub const SERVED: [(Proto, u16); 4] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 81),
    (Proto::Udp, 80),
    (Proto::Udp, 81),
];

/// Which pod: its namespace and name (and place in the matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodId {
    /// The namespace.
    pub ns: &'static str,
    /// The pod's name.
    pub name: &'static str,
    /// Its row and column in the matrix (0..9).
    pub index: usize,
}

impl PodId {
    /// `ns/name`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    /// Whether this is pod `ns/name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }
}

/// The nine pods in matrix order: x/a, x/b, x/c, y/a, …, z/c.
pub fn pod_ids() -> Vec<PodId> {
    let mut all = Vec::new();
    for ns in NAMESPACES {
        for name in NAMES {
            all.push(PodId {
                ns,
                name,
                index: all.len(),
            });
        }
    }
    all
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread inside a network namespace that runs jobs there: sockets
/// created by it belong to that namespace wherever they are used after.
struct InNetns {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InNetns {
    fn enter(netns: &str) -> InNetns {
        let file = File::open(format!("/var/run/netns/{netns}")).expect("open the pod namespace");
        let (jobs, queue) = mpsc::channel::<Job>();
        let (entered, entry) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns(2) with a namespace fd this thread holds open; it
            // moves only this thread, which does nothing but this
            // namespace's jobs until the sender is dropped.
            let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let _ = entered.send(ret);
            if ret == 0 {
                drop(file);
                for job in queue {
                    job();
                }
            }
        });
        assert_eq!(entry.recv().unwrap(), 0, "setns into {netns}");
        InNetns {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// Runs `f` inside the namespace.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .as_ref()
            .expect("the namespace thread runs")
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .expect("the namespace thread takes jobs");
        rx.await.expect("the namespace thread answers")
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One pod: a network namespace attached through `plexus-cni`.
pub struct K8sPod {
    /// Which pod.
    pub id: PodId,
    /// The host (index into the cluster's hosts) it runs on.
    pub host: usize,
    /// Its address, as the CNI result gave it.
    pub ip: Ipv4Addr,
    /// Its Plexus port (derived from the attachment key, as the CNI does).
    pub port_id: Uuid,
    /// The container id the runtime gave the CNI.
    pub container_id: String,
    /// The host-side veth, in the host's namespace.
    pub host_if: String,
    host_netns: String,
    worker: InNetns,
    /// The pod's network namespace (removed by its guard).
    pub netns: Netns,
}

impl Drop for K8sPod {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.host_netns, "link", "del", &self.host_if])
            .output();
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected (TCP) or echoed (UDP), and the server saw the client's own
    /// address.
    Allowed,
    /// No connection or echo within the timeout, twice.
    Blocked,
    /// Something else: refused, an error, or the server saw another
    /// address than the client's (NAT).
    Wrong(String),
}

/// The results of one round of probes.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    /// (from, to, protocol, port) → outcome; `from != to`.
    pub outcomes: HashMap<(usize, usize, Proto, u16), Outcome>,
}

impl Matrix {
    /// Compares with `expected(from, to, protocol, port)` (true: allowed).
    /// On a difference, the report: every wrong entry, then one 9×9 matrix
    /// per (protocol, port) probed (row: from, column: to; `.` allowed as
    /// expected, `X` blocked as expected, `!` wrong).
    pub fn compare(
        &self,
        expected: &dyn Fn(PodId, PodId, Proto, u16) -> bool,
    ) -> Result<(), String> {
        let pods = pod_ids();
        let mut served: Vec<(Proto, u16)> = self
            .outcomes
            .keys()
            .map(|&(_, _, proto, port)| (proto, port))
            .collect();
        served.sort();
        served.dedup();
        let mut wrong = Vec::new();
        let mut text = String::new();
        for &(proto, port) in &served {
            let _ = write!(
                text,
                "{proto} {port} (row: from, column: to; . allowed, X blocked, ! wrong)\n     "
            );
            for to in &pods {
                let _ = write!(text, "{:>4}", to.label());
            }
            text.push('\n');
            for from in &pods {
                let _ = write!(text, "{:>4} ", from.label());
                for to in &pods {
                    let Some(got) = self.outcomes.get(&(from.index, to.index, proto, port)) else {
                        text.push_str("   -");
                        continue;
                    };
                    let want = expected(*from, *to, proto, port);
                    let right = matches!(
                        (got, want),
                        (Outcome::Allowed, true) | (Outcome::Blocked, false)
                    );
                    if !right {
                        wrong.push(format!(
                            "{} → {} {proto} {port}: got {got:?}, want {}",
                            from.label(),
                            to.label(),
                            if want { "allowed" } else { "blocked" }
                        ));
                    }
                    text.push_str(match (right, got) {
                        (false, _) => "   !",
                        (true, Outcome::Allowed) => "   .",
                        (true, _) => "   X",
                    });
                }
                text.push('\n');
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} wrong:\n{}\n{text}",
                wrong.len(),
                wrong.join("\n")
            ))
        }
    }
}

/// Labels beyond the standard ones, for cases that change them.
#[derive(Debug, Clone, Default)]
pub struct ExtraLabels {
    /// By pod (`ns/name`).
    pub pods: BTreeMap<String, Vec<(String, String)>>,
    /// By namespace.
    pub namespaces: BTreeMap<String, Vec<(String, String)>>,
}

impl ExtraLabels {
    /// Pod `ns/name` also labelled `key=value`.
    pub fn pod(mut self, pod: &str, key: &str, value: &str) -> ExtraLabels {
        self.pods
            .entry(pod.to_string())
            .or_default()
            .push((key.to_string(), value.to_string()));
        self
    }

    /// Namespace `ns` also labelled `key=value`.
    pub fn namespace(mut self, ns: &str, key: &str, value: &str) -> ExtraLabels {
        self.namespaces
            .entry(ns.to_string())
            .or_default()
            .push((key.to_string(), value.to_string()));
        self
    }
}

/// Two hosts with agents, the API, and the nine pods serving.
pub struct PodCluster {
    servers: Vec<tokio::task::JoinHandle<()>>,
    /// The pods, in matrix order.
    pub pods: Vec<K8sPod>,
    /// The cluster tenant's pod subnet.
    pub pod_cidr: IpNet,
    /// The cluster tenant.
    pub tenant: Uuid,
    _relays: Vec<Relay>,
    /// Hosts, etcd, API.
    pub cluster: Cluster,
    dir: tempfile::TempDir,
}

/// Runs `plexus-cni` inside host namespace `host_netns` with the CNI
/// variables `vars` and the configuration `conf`; its answer as JSON.
fn cni(host_netns: &str, vars: &[(&str, &str)], conf: &Value) -> Result<Value, String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", host_netns, super::cni::PLUGIN])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plexus-cni");
    let stdin = serde_json::to_vec(conf).unwrap();
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), &stdin);
    let output = child.wait_with_output().expect("wait for plexus-cni");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "{text} {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

impl PodCluster {
    /// Starts two hosts (the provider uplink on the first), then creates
    /// the nine pods through `plexus-cni` (x/a on host 0, x/b on host 1, …
    /// alternating), each serving TCP and UDP on 80 and 81.
    pub async fn start() -> PodCluster {
        let cluster = Cluster::start_with(HOSTS, Some(0)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let provider: Result<Value, _> = cluster.client.get("/v1/provider").await;
            if provider.is_ok_and(|p| p["uplink_port_id"].is_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the provider router never appeared"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("cni.token");
        std::fs::write(&token_file, &cluster.token).unwrap();
        let api = cluster.url.trim_start_matches("http://").to_string();
        let relays: Vec<Relay> = cluster
            .hosts
            .iter()
            .map(|h| Relay::start(&h.netns.0, api.clone()))
            .collect();
        let mut pods = Vec::new();
        for id in pod_ids() {
            let host = id.index % HOSTS;
            let host_netns = cluster.hosts[host].netns.0.clone();
            let conf = json!({
                "cniVersion": "1.0.0",
                "name": NETWORK,
                "type": "plexus-cni",
                "cluster_network": "kubernetes",
                "api": format!("http://127.0.0.1:{}", relays[host].port),
                "token_file": token_file,
                "host": cluster.hosts[host].name,
            });
            let netns = Netns::new("pxk");
            let container_id = format!("{}{}", id.ns, Uuid::new_v4().simple());
            let args = format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={}",
                id.ns,
                id.name,
                Uuid::new_v4()
            );
            let netns_path = format!("/var/run/netns/{}", netns.0);
            let vars = [
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", container_id.as_str()),
                ("CNI_NETNS", netns_path.as_str()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
                ("CNI_ARGS", args.as_str()),
            ];
            let key = api::provision::AttachmentKey {
                network: NETWORK.into(),
                container_id: container_id.clone(),
                ifname: "eth0".into(),
            };
            let host_if = key.host_interface();
            let result = cni(&host_netns, &vars, &conf).unwrap_or_else(|e| {
                panic!("ADD of {}: {e}\n{}", id.label(), cluster.logs());
            });
            let address = result["ips"][0]["address"].as_str().expect("an address");
            let ip = address.split('/').next().unwrap().parse().unwrap();
            pods.push(K8sPod {
                id,
                host,
                ip,
                port_id: key.port_id(),
                container_id,
                host_if,
                host_netns,
                worker: InNetns::enter(&netns.0),
                netns,
            });
        }
        let tenants: Vec<nsdb::Tenant> = cluster.client.list("/v1/tenants").await.unwrap();
        let tenant = tenants
            .iter()
            .find(|t| t.name == "kubernetes")
            .expect("the cluster tenant")
            .id;
        let network = cluster
            .client
            .tenant_network(tenant)
            .await
            .unwrap()
            .expect("the cluster network");
        let mut servers = Vec::new();
        for pod in &pods {
            for port in [80u16, 81] {
                let (tcp, udp) = pod
                    .worker
                    .run(move || {
                        let tcp = std::net::TcpListener::bind(("0.0.0.0", port))?;
                        tcp.set_nonblocking(true)?;
                        let udp = std::net::UdpSocket::bind(("0.0.0.0", port))?;
                        udp.set_nonblocking(true)?;
                        Ok::<_, std::io::Error>((tcp, udp))
                    })
                    .await
                    .expect("bind the pod's servers");
                let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
                let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
                servers.push(tokio::spawn(serve_tcp(tcp)));
                servers.push(tokio::spawn(serve_udp(udp)));
            }
        }
        PodCluster {
            servers,
            pods,
            pod_cidr: network.pod_cidr,
            tenant,
            _relays: relays,
            cluster,
            dir,
        }
    }

    /// The pod `ns/name`.
    pub fn pod(&self, ns: &str, name: &str) -> &K8sPod {
        self.pods
            .iter()
            .find(|p| p.id.is(ns, name))
            .unwrap_or_else(|| panic!("no pod {ns}/{name}"))
    }

    /// One probe without retry, waiting `timeout` for the connection or echo.
    pub async fn probe_once(
        &self,
        from: usize,
        to: usize,
        proto: Proto,
        port: u16,
        timeout: Duration,
    ) -> Outcome {
        let (client, server) = (&self.pods[from], &self.pods[to]);
        let dst = SocketAddr::new(IpAddr::V4(server.ip), port);
        let seen = match proto {
            Proto::Tcp => {
                let socket = match client.worker.run(tokio::net::TcpSocket::new_v4).await {
                    Ok(socket) => socket,
                    Err(e) => return Outcome::Wrong(format!("socket: {e}")),
                };
                let mut stream = match tokio::time::timeout(timeout, socket.connect(dst)).await {
                    Err(_) => return Outcome::Blocked,
                    Ok(Err(e)) => return Outcome::Wrong(format!("connect: {e}")),
                    Ok(Ok(stream)) => stream,
                };
                let mut text = String::new();
                match tokio::time::timeout(timeout, stream.read_to_string(&mut text)).await {
                    Err(_) => return Outcome::Wrong("connected, but no answer".into()),
                    Ok(Err(e)) => return Outcome::Wrong(format!("connected, then {e}")),
                    Ok(Ok(_)) => text,
                }
            }
            Proto::Udp => {
                let bound = client
                    .worker
                    .run(|| {
                        let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
                        socket.set_nonblocking(true)?;
                        Ok::<_, std::io::Error>(socket)
                    })
                    .await
                    .and_then(tokio::net::UdpSocket::from_std);
                let socket = match bound {
                    Ok(socket) => socket,
                    Err(e) => return Outcome::Wrong(format!("socket: {e}")),
                };
                if let Err(e) = socket.send_to(b"probe", dst).await {
                    return Outcome::Wrong(format!("send: {e}"));
                }
                let mut buf = [0u8; 128];
                match tokio::time::timeout(timeout, socket.recv_from(&mut buf)).await {
                    Err(_) => return Outcome::Blocked,
                    Ok(Err(e)) => return Outcome::Wrong(format!("receive: {e}")),
                    Ok(Ok((_, source))) if source != dst => {
                        return Outcome::Wrong(format!("the echo came from {source}"))
                    }
                    Ok(Ok((n, _))) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                }
            }
        };
        let seen = seen.trim();
        if seen == client.ip.to_string() {
            Outcome::Allowed
        } else {
            Outcome::Wrong(format!("the server saw {seen}, not {}", client.ip))
        }
    }

    /// One probe: retried once (with a longer timeout) unless it got
    /// through, so that a slow first packet is not taken for a block.
    pub async fn probe(&self, from: usize, to: usize, proto: Proto, port: u16) -> Outcome {
        match self.probe_once(from, to, proto, port, FIRST_TIMEOUT).await {
            Outcome::Allowed => Outcome::Allowed,
            _ => self.probe_once(from, to, proto, port, RETRY_TIMEOUT).await,
        }
    }

    /// The full matrix (every pod to every other pod) on `served`, probed
    /// in parallel.
    pub async fn matrix_on(&self, served: &[(Proto, u16)]) -> Matrix {
        let mut probes = Vec::new();
        for from in 0..self.pods.len() {
            for to in 0..self.pods.len() {
                if from != to {
                    for &(proto, port) in served {
                        probes.push((from, to, proto, port));
                    }
                }
            }
        }
        let outcomes = futures::stream::iter(probes)
            .map(|(from, to, proto, port)| async move {
                let outcome = self.probe(from, to, proto, port).await;
                ((from, to, proto, port), outcome)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        Matrix { outcomes }
    }

    /// The full matrix on TCP and UDP 80 and 81.
    pub async fn matrix(&self) -> Matrix {
        self.matrix_on(&SERVED).await
    }

    /// Probes until the matrix is `expected` (true: allowed), at most
    /// `within`; how long it took, or the last matrix's report.
    pub async fn converge(
        &self,
        within: Duration,
        expected: &dyn Fn(PodId, PodId, Proto, u16) -> bool,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let matrix = self.matrix().await;
            match matrix.compare(expected) {
                Ok(()) => return Ok(started.elapsed()),
                Err(report) if started.elapsed() >= within => {
                    return Err(format!("after {:?}: {report}", started.elapsed()))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The Kubernetes objects of the cluster as YAML: the namespaces
    /// (labels `ns` and `kubernetes.io/metadata.name`, plus `extra`'s) and
    /// the pods (label `pod`, plus `extra`'s; containers with the
    /// named ports `serve-80-tcp`, `serve-81-tcp`, `serve-80-udp`,
    /// `serve-81-udp`, and `web`: TCP 80 on the pods named a, 81 on the
    /// others; the node; the pod's address as its status).
    pub fn objects_yaml(&self, extra: &ExtraLabels) -> String {
        let mut yaml = String::new();
        for ns in NAMESPACES {
            let mut labels = format!("    ns: {ns}\n    kubernetes.io/metadata.name: {ns}\n");
            for (key, value) in extra.namespaces.get(ns).into_iter().flatten() {
                let _ = writeln!(labels, "    {key}: \"{value}\"");
            }
            let _ = write!(
                yaml,
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n{labels}---\n"
            );
        }
        for pod in &self.pods {
            let mut labels = format!("    pod: {}\n", pod.id.name);
            for (key, value) in extra.pods.get(&pod.id.label()).into_iter().flatten() {
                let _ = writeln!(labels, "    {key}: \"{value}\"");
            }
            let web = if pod.id.name == "a" { 80 } else { 81 };
            let mut containers = String::new();
            for (proto, port) in SERVED {
                let lower = proto.to_string().to_lowercase();
                let _ = write!(
                    containers,
                    "  - name: cont-{port}-{lower}\n    image: registry.k8s.io/e2e-test-images/agnhost:2.47\n    ports:\n    - name: serve-{port}-{lower}\n      containerPort: {port}\n      protocol: {proto}\n"
                );
            }
            let _ = write!(
                containers,
                "  - name: web\n    image: registry.k8s.io/e2e-test-images/agnhost:2.47\n    ports:\n    - name: web\n      containerPort: {web}\n"
            );
            let _ = write!(
                yaml,
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n{labels}spec:\n  nodeName: {}\n  containers:\n{containers}status:\n  phase: Running\n  podIP: {}\n  podIPs:\n  - ip: {}\n---\n",
                pod.id.name,
                pod.id.ns,
                self.cluster.hosts[pod.host].name,
                pod.ip,
                pod.ip
            );
        }
        yaml
    }

    /// Runs `plexus k8s apply -f <dir>` on a directory holding the
    /// cluster's objects ([`PodCluster::objects_yaml`] with `extra`) and
    /// `policies` (a YAML stream of NetworkPolicies): the whole cluster, so
    /// policies left out are removed.
    pub fn apply(&self, policies: &str, extra: &ExtraLabels) -> Result<(), String> {
        let dir = self.dir.path().join("objects");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cluster.yaml"), self.objects_yaml(extra)).unwrap();
        std::fs::write(dir.join("policies.yaml"), policies).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(["k8s", "apply", "-f"])
            .arg(&dir)
            .env("PLEXUS_API", &self.cluster.url)
            .env("PLEXUS_TOKEN", &self.cluster.token)
            .env_remove("PLEXUS_NSDB")
            .output()
            .expect("run plexus k8s apply");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "plexus k8s apply failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// The port labels of every pod, `ns/name` → labels, from the API.
    pub async fn port_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut all = BTreeMap::new();
        for pod in &self.pods {
            let port: nsdb::Port = self
                .cluster
                .client
                .get(&format!("/v1/ports/{}", pod.port_id))
                .await
                .unwrap();
            all.insert(pod.id.label(), port.labels);
        }
        all
    }
}

impl Drop for PodCluster {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// Answers every connection with the client's address as the server saw it.
async fn serve_tcp(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = stream
                .write_all(format!("{}\n", peer.ip()).as_bytes())
                .await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Echoes every datagram's source address back to it.
async fn serve_udp(socket: tokio::net::UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((_, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let _ = socket.send_to(peer.ip().to_string().as_bytes(), peer).await;
    }
}
