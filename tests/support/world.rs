//! A deployment with an outside: `plexus serve` whose provider uplink is a
//! veth into a "world" namespace (100.64.0.1/24, plus 203.0.113.7 as a
//! stranger's address), tenants initialised through the API, and pods.
//! Everything is removed by guards, even when a test fails.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::json;
use uuid::Uuid;

use super::netns::{run, unique, Pod};
use super::plexus::Plexus;

/// The world's address on the uplink subnet (the uplink gateway).
pub const WORLD: &str = "100.64.0.1";
/// The provider uplink port's address (what masqueraded traffic comes from).
pub const UPLINK: &str = "100.64.0.2";
/// Another address of the world, not the uplink gateway: a stranger.
pub const STRANGER: &str = "203.0.113.7";

/// A running deployment with a world behind its uplink.
pub struct Deployment {
    /// The serve process (dropped before the world).
    pub plexus: Plexus,
    /// An admin client.
    pub client: api::Client,
    /// This deployment's host.
    pub host: Uuid,
    /// The world namespace; its `host_if` is the uplink interface (none
    /// when the uplink is a TAP in this namespace).
    world: Option<Pod>,
}

/// A tenant with an initialised network.
pub struct Tenant {
    /// The tenant's id.
    pub id: Uuid,
    /// Its network.
    pub net: api::TenantNetwork,
}

impl Tenant {
    /// The `n`th address of the pod subnet.
    pub fn address(&self, n: u32) -> Ipv4Addr {
        match self.net.pod_cidr {
            IpNet::V4(cidr) => Ipv4Addr::from(u32::from(cidr.network()) + n),
            IpNet::V6(_) => panic!("IPv4 pod subnets only"),
        }
    }
}

impl Deployment {
    /// Starts the world and `plexus serve` with its uplink on the world's veth.
    pub async fn start() -> Deployment {
        Deployment::start_with(&[]).await
    }

    /// As [`Deployment::start`], with extra `plexus serve` arguments.
    pub async fn start_with(extra: &[&str]) -> Deployment {
        let world = Pod::new(&format!("{WORLD}/24"), None);
        world.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{STRANGER}/32"),
            "dev",
            "eth0",
        ]);
        for prefix in ["100.64.1.0/24", "10.128.0.0/12", "169.254.0.0/16"] {
            world.exec(&["ip", "route", "add", prefix, "via", UPLINK]);
        }
        world.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let mut args = vec![
            "--uplink-interface",
            world.host_if.as_str(),
            "--uplink-address",
            "100.64.0.2/24",
        ];
        args.extend_from_slice(extra);
        let mut deployment = Deployment::around(Plexus::start_with(&args).await).await;
        deployment.world = Some(world);
        deployment
    }

    /// A deployment around a started `plexus serve` (whose uplink is
    /// whatever its arguments said), once its provider router exists.
    pub async fn around(plexus: Plexus) -> Deployment {
        let client = plexus.client();
        let host = plexus.host().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let provider: Result<serde_json::Value, _> = client.get("/v1/provider").await;
            if provider.is_ok_and(|p| p["uplink_port_id"].is_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the provider router never appeared"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Deployment {
            plexus,
            client,
            host,
            world: None,
        }
    }

    /// The world namespace behind the uplink.
    pub fn world(&self) -> &Pod {
        self.world
            .as_ref()
            .expect("this deployment has a world namespace")
    }

    /// A new tenant with its network initialised (default or given pod subnet).
    pub async fn tenant(&self, pod_cidr: Option<&str>) -> Tenant {
        self.tenant_with(pod_cidr, false).await
    }

    /// [`Deployment::tenant`], NAT-only when `nat_only` (the host reaches
    /// its pods only through NAT; needed for an overlapping pod subnet).
    pub async fn tenant_with(&self, pod_cidr: Option<&str>, nat_only: bool) -> Tenant {
        let id = self
            .client
            .create_tenant(&unique("tenant"))
            .await
            .unwrap()
            .id;
        let net = self
            .client
            .init_tenant_network_with(id, pod_cidr, nat_only)
            .await
            .unwrap();
        Tenant { id, net }
    }

    /// A pod at the tenant's `n`th pod address on its default bridge, bound
    /// to this host with anti-spoofing; returns the pod and its port.
    pub async fn pod(&self, tenant: &Tenant, n: u32) -> (Pod, Uuid) {
        let ip = tenant.address(n);
        let prefix = tenant.net.pod_cidr.prefix_len();
        let gateway = tenant.net.gateway.to_string();
        let pod = Pod::new(&format!("{ip}/{prefix}"), Some(&gateway));
        let port = self
            .client
            .create_bridge_port(
                tenant.net.bridge.id,
                json!({"mac": pod.mac, "allowed_addresses": [{"mac": pod.mac, "ip": format!("{ip}/32")}]}),
            )
            .await
            .unwrap();
        self.client
            .bind(port.id, self.host, &pod.host_if)
            .await
            .unwrap();
        wait_ping(&pod, &gateway);
        (pod, port.id)
    }

    /// A namespace beyond the world (198.51.100.2/24, routed through it).
    pub fn far(&self) -> Pod {
        let far = Pod::new("198.51.100.2/24", Some("198.51.100.1"));
        run(&[
            "ip",
            "link",
            "set",
            &far.host_if,
            "netns",
            &self.world().netns,
        ]);
        self.world()
            .exec(&["ip", "addr", "add", "198.51.100.1/24", "dev", &far.host_if]);
        self.world()
            .exec(&["ip", "link", "set", &far.host_if, "up"]);
        far
    }
}

/// Pings `dst` from `pod` until it answers (10 s at most).
pub fn wait_ping(pod: &Pod, dst: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if pod.ping(dst, 1, &[]).0 == 1 {
            return;
        }
    }
    panic!("{dst} never answered a ping from {}", pod.netns);
}

/// A TCP/UDP server in a namespace, killed by its guard.
pub struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a threaded TCP server in `netns` on each of `ports`: it answers
/// every line with `<tag> <peer-ip>:<peer-port>` and keeps the connection.
pub fn tcp_server(netns: &str, ports: &[u16], tag: &str) -> Server {
    tcp_server_on(netns, "0.0.0.0", ports, tag)
}

/// [`tcp_server`] listening on IPv6 (`::`, IPv6 only).
pub fn tcp6_server(netns: &str, ports: &[u16], tag: &str) -> Server {
    tcp_server_on(netns, "::", ports, tag)
}

fn tcp_server_on(netns: &str, any: &str, ports: &[u16], tag: &str) -> Server {
    let family = if any.contains(':') {
        "socket.AF_INET6"
    } else {
        "socket.AF_INET"
    };
    let ports = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "import socket,threading
def serve(c,a):
  f=c.makefile('rwb')
  for line in f:
    f.write(('{tag} %s:%d\\n'%a[:2]).encode());f.flush()
def listen(p):
  s=socket.socket({family});s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
  s.bind(('{any}',p));s.listen(512)
  while True:
    c,a=s.accept();threading.Thread(target=serve,args=(c,a),daemon=True).start()
for p in [{ports}]:
  threading.Thread(target=listen,args=(p,),daemon=True).start()
print('ready',flush=True)
threading.Event().wait()\n"
    );
    spawn_ready(netns, &script)
}

/// Starts a UDP echo server in `netns` on `port`: it answers every datagram
/// with `<tag> <peer-ip>:<peer-port>`.
pub fn udp_server(netns: &str, port: u16, tag: &str) -> Server {
    let script = format!(
        "import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',{port}))
print('ready',flush=True)
while True:
  d,a=s.recvfrom(2048);s.sendto(('{tag} %s:%d'%a).encode(),a)\n"
    );
    spawn_ready(netns, &script)
}

pub fn spawn_ready(netns: &str, script: &str) -> Server {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the server did not start");
    Server { child }
}

/// Connects from `pod` to `dst:port` over TCP (optionally from source
/// `bind`) and sends one line; the server's answer, or `ERR <reason>`.
pub fn tcp_probe(pod: &Pod, dst: &str, port: u16, timeout_s: f32, bind: Option<&str>) -> String {
    let bind = bind.map_or(String::new(), |b| format!("  s.bind(('{b}',0))\n"));
    let script = format!(
        "import socket
try:
  s=socket.socket();s.settimeout({timeout_s})
{bind}  s.connect(('{dst}',{port}));s.sendall(b'hi\\n')
  print(s.makefile().readline().strip())
except Exception as e:
  print('ERR',type(e).__name__)\n"
    );
    let out = pod.try_exec(&["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends one UDP datagram from `pod` to `dst:port`; the answer or `ERR <reason>`.
pub fn udp_probe(pod: &Pod, dst: &str, port: u16, timeout_s: f32) -> String {
    let script = format!(
        "import socket
try:
  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout({timeout_s})
  s.connect(('{dst}',{port}));s.send(b'hi')
  print(s.recv(2048).decode())
except Exception as e:
  print('ERR',type(e).__name__)\n"
    );
    let out = pod.try_exec(&["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The peer address a server's answer names (`<tag> <ip>:<port>`).
pub fn peer_of(answer: &str) -> (IpAddr, u16) {
    let peer = answer
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("not a server answer: {answer}"));
    let (ip, port) = peer.rsplit_once(':').unwrap();
    (ip.parse().unwrap(), port.parse().unwrap())
}
