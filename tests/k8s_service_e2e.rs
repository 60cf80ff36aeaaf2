//! Kubernetes Services with real packets (issue 16): the nine pods of
//! `support/k8s_pods.rs` (attached by `plexus-cni` in cluster mode on two
//! hosts); x/a and x/c on host 0 and x/b on host 1 are the endpoints of
//! Service x/web (label `app: web`), y/b on host 0 and y/a on host 1 its
//! clients. The objects go in through `plexus k8s apply -f` on a
//! directory. Each endpoint answers TCP on its container port named
//! `http` (8080 on x/a and x/b, 8081 on x/c, so the named targetPort
//! resolves per pod) and UDP on `echo` (5353) with its name and the client
//! address it saw; the clients open many connections from fresh source
//! ports to the ClusterIP 10.96.0.10 (TCP 80, UDP 53) and count who
//! answered. The host (the world namespace at the other end of the
//! provider uplink, as in `host_pod_e2e.rs`) reaches the Service on the
//! uplink address's NodePorts. Then EndpointSlices take over from the
//! selector, an endpoint marked not ready stops getting new connections,
//! and `sessionAffinity: ClientIP` keeps each client on one endpoint.
//!
//! The source address the endpoints see (the test prints it, and checks
//! it):
//! - a pod client, whether the endpoint is on its host or the other one,
//!   TCP and UDP alike: the pod's own address, as upstream (since the
//!   bridge sends a member's replies of balanced connections to the
//!   router, `docs/lb.md`; before, the router's hairpin NAT made it the
//!   router's address). An endpoint that is a client of its own Service
//!   and lands on itself sees the router's address on the pod subnet (the
//!   pods' gateway): the hairpin NAT stays for that case only.
//! - the host through a NodePort: the host's own address (100.64.0.1);
//!   the provider router's load balancer translates only the destination
//!   and the answer goes back through the routers.
//!
//! A second test applies NetworkPolicies with the Service: the endpoints
//! admit the client pods only, the clients may only reach the endpoints;
//! Service traffic is judged after the translation, as upstream requires.
//!
//! Needs root.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use support::cluster::{UPLINK, WORLD};
use support::k8s_pods::{K8sPod, PodCluster};
use support::world::{spawn_ready, udp_server, Server};

/// The Service's ClusterIP.
const CLUSTER_IP: &str = "10.96.0.10";
/// Its TCP NodePort.
const NODE_PORT_TCP: u16 = 30080;
/// Its UDP NodePort.
const NODE_PORT_UDP: u16 = 30053;
/// The endpoints: (pod name in namespace x, its `http` container port).
const ENDPOINTS: [(&str, u16); 3] = [("a", 8080), ("b", 8080), ("c", 8081)];
/// The `echo` container port (UDP) of every endpoint.
const ECHO: u16 = 5353;
/// Connections (or datagrams) per client and check.
const CONNECTIONS: u16 = 60;
/// How long a change applied may take to show in new connections.
const CONVERGE: Duration = Duration::from_secs(10);

/// Source ports handed out to the clients, so that no connection reuses a
/// 4-tuple still in TIME_WAIT.
static NEXT_SPORT: AtomicU16 = AtomicU16::new(20_000);

fn sports(count: u16) -> u16 {
    NEXT_SPORT.fetch_add(count, Ordering::Relaxed)
}

/// Who answered: `x/a`, … with the client address it saw, or `ERR …`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Answer {
    tag: String,
    peer: String,
}

/// What a batch of connections found.
#[derive(Debug, Default)]
struct Tally {
    answers: Vec<Answer>,
}

impl Tally {
    /// How many answers each endpoint (or error) gave.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for answer in &self.answers {
            *counts.entry(answer.tag.clone()).or_default() += 1;
        }
        counts
    }

    fn errors(&self) -> usize {
        self.answers
            .iter()
            .filter(|a| a.tag.starts_with("ERR"))
            .count()
    }

    /// The client addresses the endpoints saw.
    fn peers(&self) -> BTreeSet<String> {
        self.answers
            .iter()
            .filter(|a| !a.tag.starts_with("ERR"))
            .map(|a| a.peer.clone())
            .collect()
    }
}

/// Opens `count` TCP connections (or sends `count` datagrams, each from a
/// new socket) from namespace `netns` to `dst:port`, from fresh source
/// ports, one after the other; each endpoint answers its tag and the
/// client address it saw. A UDP socket is connected, so only an answer
/// from `dst:port` itself counts. After three failures in a row the rest
/// are not tried (`ERR gave up`).
async fn connect_many(netns: &str, udp: bool, dst: &str, port: u16, count: u16) -> Tally {
    let first = sports(count);
    let (kind, exchange) = if udp {
        ("socket.SOCK_DGRAM", "s.send(b'hi');d=s.recv(2048).decode()")
    } else {
        (
            "socket.SOCK_STREAM",
            "s.sendall(b'hi\\n');d=s.makefile().readline()",
        )
    };
    let script = format!(
        "import socket,json
out=[];failed=0
for i in range({count}):
  if failed==3:
    out.append(['ERR gave up','']);continue
  s=socket.socket(socket.AF_INET,{kind})
  try:
    s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.settimeout(2)
    s.bind(('0.0.0.0',{first}+i));s.connect(('{dst}',{port}));{exchange}
    t,p=d.split(' ')[:2];out.append([t,p.strip().rsplit(':',1)[0]]);failed=0
  except Exception as e:
    out.append(['ERR '+type(e).__name__,'']);failed+=1
  finally:
    s.close()
print(json.dumps(out))\n"
    );
    let netns = netns.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ip")
            .args(["netns", "exec", &netns, "python3", "-c", &script])
            .output()
            .expect("run the client")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let pairs: Vec<(String, String)> = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "the client printed no answers ({e}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Tally {
        answers: pairs
            .into_iter()
            .map(|(tag, peer)| Answer { tag, peer })
            .collect(),
    }
}

/// A TCP server in `netns` on `port` answering each line with
/// `<tag> <peer-ip>:<peer-port>`, then closing.
fn tcp_endpoint(netns: &str, port: u16, tag: &str) -> Server {
    let script = format!(
        "import socket,threading
def serve(c,a):
  try:
    c.makefile('rb').readline();c.sendall(('{tag} %s:%d\\n'%a[:2]).encode())
  finally:
    c.close()
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('0.0.0.0',{port}));s.listen(512)
print('ready',flush=True)
while True:
  c,a=s.accept();threading.Thread(target=serve,args=(c,a),daemon=True).start()\n"
    );
    spawn_ready(netns, &script)
}

/// The test bed: the nine pods, the endpoints serving, the directory the
/// objects are applied from.
struct Bed {
    pods: PodCluster,
    /// The cluster router's address on the pod subnet.
    gateway: String,
    dir: tempfile::TempDir,
    _servers: Vec<Server>,
}

/// How the Service's endpoints are given.
#[derive(Clone, Copy)]
enum Endpoints {
    /// By the Service's selector (no EndpointSlice).
    Selector,
    /// By EndpointSlices, with the endpoint pods named here not ready.
    Slices(&'static [&'static str]),
}

impl Bed {
    async fn start() -> Bed {
        let pods = PodCluster::start().await;
        let mut servers = Vec::new();
        for (name, http) in ENDPOINTS {
            let pod = pods.pod("x", name);
            let tag = format!("x/{name}");
            servers.push(tcp_endpoint(&pod.netns.0, http, &tag));
            servers.push(udp_server(&pod.netns.0, ECHO, &tag));
        }
        let route = Command::new("ip")
            .args([
                "-n",
                &pods.pod("y", "a").netns.0,
                "route",
                "show",
                "default",
            ])
            .output()
            .unwrap();
        let route = String::from_utf8_lossy(&route.stdout).into_owned();
        let gateway = route
            .split_whitespace()
            .skip_while(|w| *w != "via")
            .nth(1)
            .unwrap_or_else(|| panic!("no default route in the pod: {route}"))
            .to_string();
        Bed {
            pods,
            gateway,
            dir: tempfile::tempdir().unwrap(),
            _servers: servers,
        }
    }

    fn pod(&self, ns: &str, name: &str) -> &K8sPod {
        self.pods.pod(ns, name)
    }

    /// The clients: (label, namespace, its own address, host).
    fn clients(&self) -> Vec<(String, String, Ipv4Addr, usize)> {
        [("y", "b"), ("y", "a")]
            .iter()
            .map(|&(ns, name)| {
                let pod = self.pod(ns, name);
                (pod.id.label(), pod.netns.0.clone(), pod.ip, pod.host)
            })
            .collect()
    }

    /// The cluster as YAML: namespaces x and y, the endpoint pods (label
    /// `app: web`, named ports `http` and `echo`), the client pods, the
    /// Service (NodePort, so also a ClusterIP), and EndpointSlices if
    /// `endpoints` says so.
    fn objects(&self, endpoints: Endpoints, affinity: bool) -> String {
        let mut yaml = String::new();
        for ns in ["x", "y"] {
            let _ = write!(
                yaml,
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    kubernetes.io/metadata.name: {ns}\n---\n"
            );
        }
        // (pod, its `app` label, its container ports)
        let mut pods: Vec<(&K8sPod, &str, String)> = ENDPOINTS
            .iter()
            .map(|&(name, http)| {
                let ports = format!(
                    "    ports:\n    - name: http\n      containerPort: {http}\n      protocol: TCP\n    - name: echo\n      containerPort: {ECHO}\n      protocol: UDP\n"
                );
                (self.pod("x", name), "web", ports)
            })
            .collect();
        for name in ["a", "b"] {
            pods.push((self.pod("y", name), "client", String::new()));
        }
        for (pod, app, ports) in pods {
            let _ = write!(
                yaml,
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    app: {app}\nspec:\n  nodeName: {}\n  containers:\n  - name: main\n    image: registry.k8s.io/e2e-test-images/agnhost:2.47\n{ports}status:\n  phase: Running\n  podIP: {}\n  podIPs:\n  - ip: {}\n---\n",
                pod.id.name,
                pod.id.ns,
                self.pods.cluster.hosts[pod.host].name,
                pod.ip,
                pod.ip
            );
        }
        let affinity = if affinity {
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 60\n"
        } else {
            ""
        };
        let _ = write!(
            yaml,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: x\nspec:\n  type: NodePort\n  clusterIP: {CLUSTER_IP}\n  clusterIPs:\n  - {CLUSTER_IP}\n  selector:\n    app: web\n{affinity}  ports:\n  - name: http\n    protocol: TCP\n    port: 80\n    targetPort: http\n    nodePort: {NODE_PORT_TCP}\n  - name: echo\n    protocol: UDP\n    port: 53\n    targetPort: echo\n    nodePort: {NODE_PORT_UDP}\n---\n"
        );
        if let Endpoints::Slices(not_ready) = endpoints {
            // As the EndpointSlice controller writes them: one slice per
            // set of resolved port numbers.
            for http in [8080u16, 8081] {
                let mut listed = String::new();
                for (name, _) in ENDPOINTS.iter().filter(|(_, p)| *p == http) {
                    let pod = self.pod("x", name);
                    let _ = write!(
                        listed,
                        "- addresses:\n  - \"{}\"\n  conditions:\n    ready: {}\n  nodeName: {}\n  targetRef:\n    kind: Pod\n    namespace: x\n    name: {name}\n",
                        pod.ip,
                        !not_ready.contains(name),
                        self.pods.cluster.hosts[pod.host].name
                    );
                }
                let _ = write!(
                    yaml,
                    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-{http}\n  namespace: x\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n- name: http\n  protocol: TCP\n  port: {http}\n- name: echo\n  protocol: UDP\n  port: {ECHO}\nendpoints:\n{listed}---\n"
                );
            }
        }
        yaml
    }

    /// `plexus k8s apply -f <dir>` with the cluster as [`Bed::objects`]
    /// says, and `policies` (NetworkPolicies as YAML).
    async fn apply(&self, endpoints: Endpoints, affinity: bool, policies: &str) {
        let dir = self.dir.path().join("objects");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cluster.yaml"), self.objects(endpoints, affinity)).unwrap();
        std::fs::write(dir.join("policies.yaml"), policies).unwrap();
        let (url, token) = (
            self.pods.cluster.url.clone(),
            self.pods.cluster.token.clone(),
        );
        let output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_plexus"))
                .args(["k8s", "apply", "-f"])
                .arg(&dir)
                .env("PLEXUS_API", url)
                .env("PLEXUS_TOKEN", token)
                .env_remove("PLEXUS_NSDB")
                .output()
                .expect("run plexus k8s apply")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && !stdout.contains("not applied"),
            "plexus k8s apply: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Connects from each client until `check` passes on a batch of
    /// [`CONNECTIONS`] (at most [`CONVERGE`]); the last batch of each.
    async fn converge(
        &self,
        what: &str,
        check: &dyn Fn(&Tally) -> Result<(), String>,
    ) -> Vec<(String, Tally)> {
        let started = Instant::now();
        let mut batches = Vec::new();
        for (label, netns, _, _) in self.clients() {
            loop {
                let tally = connect_many(&netns, false, CLUSTER_IP, 80, CONNECTIONS).await;
                match check(&tally) {
                    Ok(()) => break,
                    Err(why) if started.elapsed() > CONVERGE => panic!(
                        "{what}: from {label} after {:?}: {why}: {:?}\n{}",
                        started.elapsed(),
                        tally.counts(),
                        self.pods.cluster.logs()
                    ),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            eprintln!("{what}: converged for {label} in {:?}", started.elapsed());
            let tally = connect_many(&netns, false, CLUSTER_IP, 80, CONNECTIONS).await;
            if let Err(why) = check(&tally) {
                panic!("{what}: from {label}, again: {why}: {:?}", tally.counts());
            }
            batches.push((label, tally));
        }
        batches
    }
}

/// Every connection answered, by exactly the endpoints `want`, each of
/// them at least `CONNECTIONS / (2 × |want|)` times.
fn spread_over(want: &'static [&'static str]) -> impl Fn(&Tally) -> Result<(), String> {
    move |tally: &Tally| {
        if tally.errors() > 0 {
            return Err(format!("{} failed", tally.errors()));
        }
        let counts = tally.counts();
        let got: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
        let want_set: BTreeSet<&str> = want.iter().copied().collect();
        if got != want_set {
            return Err(format!("answered by {got:?}, not {want_set:?}"));
        }
        let least = usize::from(CONNECTIONS) / (2 * want.len());
        match counts.iter().find(|(_, n)| **n < least) {
            Some((tag, n)) => Err(format!("{tag} got only {n}")),
            None => Ok(()),
        }
    }
}

/// Every connection answered, all by one endpoint.
fn one_endpoint(tally: &Tally) -> Result<(), String> {
    if tally.errors() > 0 {
        return Err(format!("{} failed", tally.errors()));
    }
    match tally.counts().len() {
        1 => Ok(()),
        n => Err(format!("{n} endpoints answered")),
    }
}

const ALL: &[&str] = &["x/a", "x/b", "x/c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_three_endpoints_is_reachable_by_cluster_ip_and_node_port() {
    let started = Instant::now();
    let bed = Bed::start().await;
    let world = bed.pods.cluster.world.as_ref().expect("the host namespace");
    // The layout the test is about: endpoints on both hosts, a client on
    // each.
    let hosts_of = |pods: &[(&str, &str)]| -> BTreeSet<usize> {
        pods.iter().map(|&(ns, n)| bed.pod(ns, n).host).collect()
    };
    assert_eq!(hosts_of(&[("x", "a"), ("x", "b"), ("x", "c")]).len(), 2);
    assert_eq!(hosts_of(&[("y", "a"), ("y", "b")]).len(), 2);
    eprintln!("nine pods up in {:?}", started.elapsed());

    // The endpoints by selector, the named targetPort resolved per pod.
    bed.apply(Endpoints::Selector, false, "").await;
    let mut report = String::new();
    for (label, tally) in bed.converge("by selector", &spread_over(ALL)).await {
        let (_, _, ip, host) = bed.clients().into_iter().find(|c| c.0 == label).unwrap();
        let peers = tally.peers();
        let _ = writeln!(
            report,
            "ClusterIP TCP from {label} ({ip}, host {host}): {:?}, the endpoints saw {peers:?}",
            tally.counts()
        );
        for answer in &tally.answers {
            let endpoint = bed.pod("x", &answer.tag[2..]);
            assert_eq!(
                answer.peer,
                ip.to_string(),
                "{} (host {}) saw {} from {label} (host {host})",
                answer.tag,
                endpoint.host,
                answer.peer
            );
        }
    }
    // UDP: every datagram answered from the ClusterIP, by all three.
    for (label, netns, ip, _) in bed.clients() {
        let tally = connect_many(&netns, true, CLUSTER_IP, 53, CONNECTIONS).await;
        spread_over(ALL)(&tally)
            .unwrap_or_else(|why| panic!("UDP from {label}: {why}: {:?}", tally.counts()));
        assert_eq!(
            tally.peers(),
            BTreeSet::from([ip.to_string()]),
            "UDP from {label}"
        );
        let _ = writeln!(
            report,
            "ClusterIP UDP from {label}: {:?}, the endpoints saw {:?}",
            tally.counts(),
            tally.peers()
        );
    }
    // The host through the NodePorts on the uplink address.
    for (udp, port) in [(false, NODE_PORT_TCP), (true, NODE_PORT_UDP)] {
        let tally = connect_many(&world.netns, udp, UPLINK, port, CONNECTIONS).await;
        spread_over(ALL)(&tally).unwrap_or_else(|why| {
            panic!(
                "the host to {UPLINK}:{port}: {why}: {:?}\n{}",
                tally.counts(),
                bed.pods.cluster.logs()
            )
        });
        assert_eq!(tally.peers(), BTreeSet::from([WORLD.to_string()]));
        let _ = writeln!(
            report,
            "NodePort {} {port} from the host ({WORLD}): {:?}, the endpoints saw {:?}",
            if udp { "UDP" } else { "TCP" },
            tally.counts(),
            tally.peers()
        );
    }
    // An endpoint as a client of its own Service: the others see its own
    // address; it sees the router's when it lands on itself (the hairpin
    // NAT: never a packet from its own address to itself).
    let member = bed.pod("x", "a");
    let tally = connect_many(&member.netns.0, false, CLUSTER_IP, 80, CONNECTIONS).await;
    spread_over(ALL)(&tally).unwrap_or_else(|why| panic!("from x/a: {why}: {:?}", tally.counts()));
    for answer in &tally.answers {
        let want = if answer.tag == "x/a" {
            bed.gateway.clone()
        } else {
            member.ip.to_string()
        };
        assert_eq!(
            answer.peer, want,
            "{} saw {} from x/a",
            answer.tag, answer.peer
        );
    }
    let _ = writeln!(
        report,
        "ClusterIP TCP from the endpoint x/a ({}): {:?}, the endpoints saw {:?}",
        member.ip,
        tally.counts(),
        tally.peers()
    );
    eprintln!("{report}(gateway {})", bed.gateway);

    // EndpointSlices instead of the selector: all three ready, then x/b
    // not ready: it gets no new connections, from the pods or the host.
    bed.apply(Endpoints::Slices(&[]), false, "").await;
    bed.converge("slices", &spread_over(ALL)).await;
    bed.apply(Endpoints::Slices(&["b"]), false, "").await;
    bed.converge("x/b not ready", &spread_over(&["x/a", "x/c"]))
        .await;
    let tally = connect_many(&world.netns, false, UPLINK, NODE_PORT_TCP, CONNECTIONS).await;
    spread_over(&["x/a", "x/c"])(&tally)
        .unwrap_or_else(|why| panic!("the host, x/b not ready: {why}: {:?}", tally.counts()));

    // ClientIP affinity: each client's connections all land on one
    // endpoint, and so do the host's through the NodePort.
    bed.apply(Endpoints::Slices(&[]), true, "").await;
    let batches = bed.converge("affinity", &one_endpoint).await;
    eprintln!(
        "with affinity: {:?}",
        batches
            .iter()
            .map(|(label, t)| (label, t.counts()))
            .collect::<Vec<_>>()
    );
    let tally = connect_many(&world.netns, false, UPLINK, NODE_PORT_TCP, CONNECTIONS).await;
    one_endpoint(&tally)
        .unwrap_or_else(|why| panic!("the host with affinity: {why}: {:?}", tally.counts()));
    // And without it again, the spread is back.
    bed.apply(Endpoints::Slices(&[]), false, "").await;
    bed.converge("affinity off", &spread_over(ALL)).await;
    eprintln!("done in {:?}", started.elapsed());
}

/// Admits the endpoints' ingress from pods `app: client` of namespace y
/// only.
const FROM_CLIENTS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: from-clients
  namespace: x
spec:
  podSelector:
    matchLabels:
      app: web
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: y
      podSelector:
        matchLabels:
          app: client
";

/// Lets the client pods (y, `app: client`) reach the endpoints only.
const CLIENTS_TO_ENDPOINTS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: to-endpoints
  namespace: y
spec:
  podSelector:
    matchLabels:
      app: client
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: x
      podSelector:
        matchLabels:
          app: web
";

/// Upstream: policies see Service traffic after the translation, with the
/// client's own address, and a client's egress is judged by the endpoint
/// it reaches, not the ClusterIP. So with the endpoints admitting the
/// client pods only and the clients allowed to reach the endpoints only,
/// the clients reach the ClusterIP (TCP and UDP, every endpoint, on both
/// hosts), while another pod reaches neither the endpoints nor the
/// Service, and the clients reach no other pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_judge_service_traffic_after_the_translation() {
    let bed = Bed::start().await;
    bed.apply(Endpoints::Selector, false, "").await;
    bed.converge("no policy", &spread_over(ALL)).await;
    let policies = format!("{FROM_CLIENTS}---\n{CLIENTS_TO_ENDPOINTS}");
    bed.apply(Endpoints::Selector, false, &policies).await;
    // Another pod is kept out, directly and through the Service.
    let other = bed.pod("z", "a");
    let a = bed.pod("x", "a").ip.to_string();
    let deadline = Instant::now() + CONVERGE;
    loop {
        let direct = connect_many(&other.netns.0, false, &a, 8080, 1).await;
        if direct.errors() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the policy never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tally = connect_many(&other.netns.0, false, CLUSTER_IP, 80, 3).await;
    assert_eq!(
        tally.errors(),
        3,
        "z/a through the Service: {:?}",
        tally.counts()
    );
    // The clients reach the endpoints directly and through the Service,
    // seen with their own addresses, and no other pod.
    let z = bed.pod("z", "a").ip.to_string();
    for (label, netns, _, _) in bed.clients() {
        let direct = connect_many(&netns, false, &a, 8080, 3).await;
        assert_eq!(
            direct.errors(),
            0,
            "{label} to x/a directly: {:?}",
            direct.counts()
        );
        let other = connect_many(&netns, false, &z, 80, 1).await;
        assert_eq!(other.errors(), 1, "{label} to z/a: {:?}", other.counts());
    }
    let batches = bed.converge("admitted clients", &spread_over(ALL)).await;
    for (label, netns, ip, _) in bed.clients() {
        let tally = connect_many(&netns, true, CLUSTER_IP, 53, CONNECTIONS).await;
        spread_over(ALL)(&tally)
            .unwrap_or_else(|why| panic!("UDP from {label}: {why}: {:?}", tally.counts()));
        let (_, tcp) = batches.iter().find(|(l, _)| *l == label).unwrap();
        for peers in [tcp.peers(), tally.peers()] {
            assert_eq!(peers, BTreeSet::from([ip.to_string()]), "{label}");
        }
    }
}
