//! Several "hosts" on one machine: each host is a network namespace with
//! its own `plexus agent` process and an address on a shared underlay (a
//! Linux bridge in a namespace of its own); pods are namespaces whose veth
//! host ends live in their host's namespace. One private etcd and one
//! `plexus api` run in the root namespace; each host reaches etcd through
//! a TCP relay the test runs (a listener opened inside the host's
//! namespace, connected out in the root namespace), so no address is added
//! to the root namespace. Every namespace, link and process is removed by
//! the guards, also when a test fails.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::etcd::EtcdServer;
use super::netns::{run, unique, Pod};
use super::world::STRANGER;

/// One decoded VXLAN packet: VNI, outer source, outer destination, and the
/// inner ICMP type if it carries ICMP.
pub type Captured = (u32, String, String, Option<u8>);

/// The underlay's MTU and the pods' MTU that fits the tunnel.
pub const UNDERLAY_MTU: u32 = 1500;
/// Pod MTU on tunnelled bridges (underlay − 50).
pub const POD_MTU: u32 = UNDERLAY_MTU - 50;

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Process(pub Child);

impl Process {
    /// Kills the process now, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A namespace removed on drop.
pub struct Netns(pub String);

impl Netns {
    /// Creates a namespace named `prefix…` with loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    /// Runs a command in the namespace, failing the test if it fails.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Connects `netns` to the underlay bridge with an `ul0` at `ip`/24.
pub fn join_underlay(underlay: &Netns, netns: &Netns, ip: &str) {
    join_underlay_with(underlay, netns, ip, &["/24"])
}

/// Joins `netns` to the underlay with `ip` and the address flags given
/// (`/24` for IPv4; `/64`, `nodad` for IPv6).
pub fn join_underlay_with(underlay: &Netns, netns: &Netns, ip: &str, flags: &[&str]) {
    let outer = unique("pxv");
    run(&[
        "ip",
        "link",
        "add",
        &outer,
        "netns",
        &underlay.0,
        "type",
        "veth",
        "peer",
        "name",
        "ul0",
        "netns",
        &netns.0,
    ]);
    underlay.exec(&["ip", "link", "set", &outer, "master", "br0", "up"]);
    let address = format!("{ip}{}", flags[0]);
    let mut add = vec!["ip", "addr", "add", &address, "dev", "ul0"];
    add.extend_from_slice(&flags[1..]);
    netns.exec(&add);
    let mtu = UNDERLAY_MTU.to_string();
    netns.exec(&["ip", "link", "set", "ul0", "mtu", &mtu, "up"]);
}

/// Opens a TCP listener on 127.0.0.1 inside namespace `netns`.
fn listen_in(netns: &str) -> TcpListener {
    let path = format!("/var/run/netns/{netns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns(2) on a namespace fd we hold open; it only moves
            // this short-lived scoped thread, which ends right after binding.
            let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "setns into {netns}");
            TcpListener::bind("127.0.0.1:0").expect("listen in the namespace")
        })
        .join()
        .expect("the setns thread")
    })
}

/// Relays connections accepted inside a host namespace (on 127.0.0.1) to a
/// server in the root namespace (etcd, the API), until dropped.
pub struct Relay {
    /// The port it listens on inside the namespace.
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays 127.0.0.1:[`Relay::port`] inside `netns` to `target`.
    pub fn start(netns: &str, target: String) -> Relay {
        let listener = listen_in(netns);
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let _ = inside.set_nonblocking(false);
                        let target = target.clone();
                        std::thread::spawn(move || {
                            let Ok(outside) = TcpStream::connect(&target) else {
                                return;
                            };
                            pipe(inside, outside);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Relay { port, stop }
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let (mut a, mut b) = (a, b);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Both);
    });
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(std::net::Shutdown::Both);
    let _ = t.join();
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One host: a namespace on the underlay with an agent.
pub struct HostNs {
    /// The host's name in the NSDB.
    pub name: String,
    /// Its namespace.
    pub netns: Netns,
    /// Its underlay (tunnel) address.
    pub ip: String,
    /// Its id in the NSDB, once registered.
    pub id: Uuid,
    agent: Option<Process>,
    /// Environment the agent runs with (beside `RUST_LOG`).
    agent_env: Vec<(String, String)>,
    relay: Relay,
    log: std::path::PathBuf,
}

impl HostNs {
    fn start_agent(&mut self) {
        let nsdb = format!("etcd://127.0.0.1:{}/plexus/", self.relay.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns.0, env!("CARGO_BIN_EXE_plexus")])
            .args(["agent", "--nsdb", &nsdb, "--host-name", &self.name])
            .args(["--tunnel-ip", &self.ip, "--listen", "127.0.0.1:8471"])
            .env_remove("PLEXUS_NSDB")
            .env("RUST_LOG", "info")
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run plexus agent");
        self.agent = Some(Process(child));
    }

    /// Kills the agent with SIGKILL.
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill();
        }
    }

    /// Starts the agent again (same host name: same host record).
    pub fn restart_agent(&mut self) {
        self.kill_agent();
        self.start_agent();
    }

    /// Starts the agent again with `env` set, now and on later restarts.
    pub fn restart_agent_with(&mut self, env: &[(&str, &str)]) {
        self.agent_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart_agent();
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of the agent's metric series `series` (name and labels,
    /// as printed), 0 if absent.
    pub fn counter(&self, series: &str) -> u64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The agent's metrics text.
    pub fn metrics(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns.0])
            .args(["curl", "-s", "http://127.0.0.1:8471/metrics"])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(_) => String::new(),
        }
    }

    /// A pod on this host: a namespace with `eth0` (`addr`, MTU for the
    /// tunnel, default route via `gateway`), its veth peer in the host.
    pub fn pod(&self, addr: &str, gateway: Option<&str>) -> Pod {
        let pod = Pod::new(addr, gateway);
        run(&["ip", "link", "set", &pod.host_if, "netns", &self.netns.0]);
        self.netns.exec(&["ip", "link", "set", &pod.host_if, "up"]);
        pod.exec(&["ip", "link", "set", "eth0", "mtu", &POD_MTU.to_string()]);
        pod
    }
}

/// The whole deployment.
pub struct Cluster {
    /// The hosts.
    pub hosts: Vec<HostNs>,
    /// The shared underlay namespace (bridge `br0`).
    pub underlay: Netns,
    /// The etcd server.
    pub etcd: EtcdServer,
    /// An admin client of the API server.
    pub client: api::Client,
    /// The API's base URL.
    pub url: String,
    /// The admin token.
    pub token: String,
    /// The world behind the provider uplink, when there is one.
    pub world: Option<Pod>,
    _api: Process,
    _logs: tempfile::TempDir,
}

/// The world's address on the uplink subnet (the uplink gateway).
pub const WORLD: &str = "100.64.0.1";
/// The provider uplink port's address (masqueraded traffic comes from it).
pub const UPLINK: &str = "100.64.0.2";

impl Cluster {
    /// Starts etcd, an API server and `n` hosts with agents; waits until
    /// every host is registered and alive.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, None).await
    }

    /// As [`Cluster::start`], with the provider uplink on host `uplink`: a
    /// veth into a "world" namespace (100.64.0.1/24) that routes pod
    /// subnets back through the uplink.
    pub async fn start_with(n: usize, uplink: Option<usize>) -> Cluster {
        Cluster::start_over(n, uplink, false).await
    }

    /// Starts `n` hosts whose underlay is IPv6 only (fd77::1, ::2, …):
    /// agents tunnel over IPv6.
    pub async fn start_v6_underlay(n: usize) -> Cluster {
        Cluster::start_over(n, None, true).await
    }

    async fn start_over(n: usize, uplink: Option<usize>, v6: bool) -> Cluster {
        let etcd = EtcdServer::start();
        let logs = tempfile::tempdir().unwrap();
        let underlay = Netns::new("pxu");
        underlay.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        underlay.exec(&["ip", "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for i in 1..=n {
            let netns = Netns::new("pxn");
            let ip = if v6 {
                let ip = format!("fd77::{i}");
                join_underlay_with(&underlay, &netns, &ip, &["/64", "nodad"]);
                ip
            } else {
                let ip = format!("192.168.77.{i}");
                join_underlay(&underlay, &netns, &ip);
                ip
            };
            let relay = Relay::start(&netns.0, etcd.endpoint.clone());
            let mut host = HostNs {
                name: unique("host"),
                netns,
                ip,
                id: Uuid::nil(),
                agent: None,
                agent_env: Vec::new(),
                relay,
                log: logs.path().join(format!("agent{i}.log")),
            };
            host.start_agent();
            hosts.push(host);
        }
        let mut uplink_args = Vec::new();
        let world = uplink.map(|i| {
            let world = Pod::new(&format!("{WORLD}/24"), None);
            world.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{STRANGER}/32"),
                "dev",
                "eth0",
            ]);
            for prefix in ["10.128.0.0/12", "100.64.1.0/24"] {
                world.exec(&["ip", "route", "add", prefix, "via", UPLINK]);
            }
            run(&[
                "ip",
                "link",
                "set",
                &world.host_if,
                "netns",
                &hosts[i].netns.0,
            ]);
            hosts[i]
                .netns
                .exec(&["ip", "link", "set", &world.host_if, "up"]);
            uplink_args = vec![
                "--uplink-host".to_string(),
                hosts[i].name.clone(),
                "--uplink-interface".to_string(),
                world.host_if.clone(),
                "--uplink-address".to_string(),
                format!("{UPLINK}/24"),
            ];
            world
        });
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let token = format!("cluster-{}", Uuid::new_v4());
        let api = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args([
                "api",
                "--nsdb",
                &format!("etcd://{}/plexus/", etcd.endpoint),
            ])
            .args(["--listen", &addr.to_string(), "--admin-token", &token])
            .args(&uplink_args)
            .env_remove("PLEXUS_NSDB")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run plexus api");
        let url = format!("http://{addr}");
        let client = api::Client::new(&url, &token).unwrap();
        let mut cluster = Cluster {
            hosts,
            underlay,
            etcd,
            client,
            url,
            token,
            world,
            _api: Process(api),
            _logs: logs,
        };
        cluster.wait_alive().await;
        cluster
    }

    /// Waits until every host is registered and alive; records their ids.
    pub async fn wait_alive(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(listed) = self.client.list::<nsdb::Host>("/v1/hosts").await {
                let mut all = true;
                for host in &mut self.hosts {
                    match listed.iter().find(|h| h.name == host.name && h.alive) {
                        Some(h) => host.id = h.id,
                        None => all = false,
                    }
                }
                if all {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "hosts never all came alive; logs: {}",
                self.hosts
                    .iter()
                    .map(|h| h.log())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a port on `bridge` for `pod` and binds it on host `host`.
    pub async fn attach(&self, bridge: Uuid, pod: &Pod, host: usize) -> nsdb::Port {
        let port = self
            .client
            .create_bridge_port(bridge, serde_json::json!({"mac": pod.mac}))
            .await
            .unwrap();
        self.client
            .bind(port.id, self.hosts[host].id, &pod.host_if)
            .await
            .unwrap();
        port
    }

    /// Two pods of one new tenant's bridge, `a` (`{net}.1`) on host 0 and
    /// `b` (`{net}.2`) on host 1, where `a` accepts only packets of its own
    /// connections (established/related; anything else is dropped). Its
    /// requests are tracked on host 0 and the replies enter on host 1, which
    /// tells them from new connections only by replicated state.
    pub async fn guarded_pair(&self, net: &str) -> (Pod, Pod, nsdb::Port) {
        let c = &self.client;
        let tenant = c.create_tenant(&unique("guarded")).await.unwrap();
        let bridge = c.create_bridge(tenant.id, "b").await.unwrap();
        let (a_ip, b_ip) = (format!("{net}.1"), format!("{net}.2"));
        let a = self.hosts[0].pod(&format!("{a_ip}/24"), None);
        let b = self.hosts[1].pod(&format!("{b_ip}/24"), None);
        let a_port = self.attach(bridge.id, &a, 0).await;
        let b_port = self.attach(bridge.id, &b, 1).await;
        assert!(
            reachable(&a, &b_ip, Duration::from_secs(15)),
            "{}",
            self.logs()
        );
        let chain = c.create_chain(tenant.id, "a-guard").await.unwrap();
        for rule in [
            serde_json::json!({"position": 1, "action": "accept", "conn_state": ["established", "related"]}),
            serde_json::json!({"position": 2, "action": "drop"}),
        ] {
            c.create_rule(chain.id, rule).await.unwrap();
        }
        let _: nsdb::Port = c
            .patch(
                &format!("/v1/ports/{}", a_port.id),
                &serde_json::json!({"outbound_chain_id": chain.id}),
                None,
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.ping(&a_ip, 1, &[]).0 == 1 {
            assert!(Instant::now() < deadline, "the guard never took effect");
        }
        (a, b, b_port)
    }

    /// Captures VXLAN on the underlay bridge with tshark while `during`
    /// runs; tshark is killed by its guard if `during` fails.
    pub fn capture_vxlan(&self, during: impl FnOnce()) -> Vec<Captured> {
        let mut tshark = Process(
            Command::new("ip")
                .args(["netns", "exec", &self.underlay.0])
                .args(["tshark", "-n", "-l", "-i", "br0", "-f", "udp port 4789"])
                .args(["-a", "duration:6", "-T", "fields", "-e", "vxlan.vni"])
                .args(["-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("run tshark"),
        );
        let mut stdout = tshark.0.stdout.take().expect("tshark's stdout");
        std::thread::sleep(Duration::from_secs(2));
        during();
        // tshark stops by itself after its capture duration.
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text.lines()
            .filter_map(|line| {
                let mut f = line.split('\t');
                let vni = f.next()?.split(',').next()?.parse().ok()?;
                // The outer header is the first of each field list.
                let src = f.next()?.split(',').next()?.to_string();
                let dst = f.next()?.split(',').next()?.to_string();
                let icmp = f.next().and_then(|t| t.split(',').next()?.parse().ok());
                Some((vni, src, dst, icmp))
            })
            .collect()
    }

    /// Agent logs of every host, for failure messages.
    pub fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| format!("== {} ==\n{}", h.name, h.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// True once `pod` gets an answer from `dst` within `within`.
pub fn reachable(pod: &Pod, dst: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if pod.ping(dst, 1, &[]).0 == 1 {
            return true;
        }
    }
    false
}

/// Sends `bytes` pseudo-random bytes from `client` to a server in `server`
/// at `addr`; returns (sent sha256, received sha256, received length).
pub fn tcp_transfer(
    client: &Pod,
    server: &Pod,
    addr: &str,
    bytes: usize,
) -> (String, String, usize) {
    let script = "import socket,hashlib,sys
s=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)
s.bind(('::',5201));s.listen(1);print('ready',flush=True)
c,_=s.accept();h=hashlib.sha256();n=0
while True:
  d=c.recv(65536)
  if not d: break
  h.update(d);n+=len(d)
print(h.hexdigest(),n,flush=True)\n";
    let mut child = Command::new("ip")
        .args(["netns", "exec", &server.netns, "python3", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stdout = child.stdout.take().unwrap();
    // Killed even if the client fails (and the test with it).
    let _server = Process(child);
    let mut out = std::io::BufReader::new(stdout);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let send = format!(
        "import socket,hashlib,random
r=random.Random(7);data=r.randbytes({bytes})
s=socket.create_connection(('{addr}',5201),timeout=30);s.sendall(data);s.close()
print(hashlib.sha256(data).hexdigest())\n"
    );
    let sent = client.exec(&["python3", "-c", &send]);
    let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let mut fields = line.split_whitespace();
    let received = fields.next().unwrap_or_default().to_string();
    let len = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (sent, received, len)
}
