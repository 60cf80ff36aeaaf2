//! IPv6 helpers of the end-to-end tests: addresses without DAD, a TCP
//! transfer checked by SHA-256, one-line TCP probes.

use super::netns::Pod;
use super::world::{spawn_ready, Server};

/// Gives `pod` `addr`/64 (no DAD: the test owns the subnet) and a default
/// route via `gateway`.
pub fn give_ipv6(pod: &Pod, addr: &str, gateway: &str) {
    let cidr = format!("{addr}/64");
    pod.exec(&["ip", "-6", "addr", "add", &cidr, "dev", "eth0", "nodad"]);
    pod.exec(&["ip", "-6", "route", "add", "default", "via", gateway]);
}

/// A server in `pod` on `[::]:port` that answers each connection with the
/// SHA-256 of everything it received.
pub fn digest_server(pod: &Pod, port: u16) -> Server {
    let script = format!(
        "import socket,hashlib
s=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('::',{port}));s.listen(4)
print('ready',flush=True)
while True:
  c,a=s.accept();h=hashlib.sha256()
  while True:
    d=c.recv(1<<16)
    if not d: break
    h.update(d)
  c.sendall(h.hexdigest().encode());c.close()\n"
    );
    spawn_ready(&pod.netns, &script)
}

/// Sends `mib` MiB of random bytes from `pod` to `[dst]:port`; "ok" when
/// the server's digest matches, else what went wrong.
pub fn send_and_check(pod: &Pod, dst: &str, port: u16, mib: usize) -> String {
    let script = format!(
        "import socket,hashlib,os
data=os.urandom({mib}<<20)
try:
  s=socket.create_connection(('{dst}',{port}),timeout=30)
  s.sendall(data);s.shutdown(socket.SHUT_WR)
  got=b''
  while True:
    d=s.recv(128)
    if not d: break
    got+=d
  want=hashlib.sha256(data).hexdigest()
  print('ok' if got.decode()==want else 'mismatch %s %s'%(got,want))
except Exception as e:
  print('ERR',type(e).__name__,e)\n"
    );
    let out = pod.try_exec(&["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One line over TCP from `pod` to `[dst]:port`; the answer or `ERR ...`.
pub fn tcp6_probe(pod: &Pod, dst: &str, port: u16) -> String {
    let script = format!(
        "import socket
try:
  s=socket.socket(socket.AF_INET6);s.settimeout(2)
  s.connect(('{dst}',{port}));s.sendall(b'hi\\n')
  print(s.makefile().readline().strip())
except Exception as e:
  print('ERR',type(e).__name__)\n"
    );
    let out = pod.try_exec(&["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends `count` numbered 64-byte datagrams from `from` to `[to_ip]:5003`
/// as fast as it can; the sequence numbers `to` received, in order.
pub fn udp6_sequence(from: &Pod, to: &Pod, to_ip: &str, count: u32) -> Vec<u32> {
    use std::io::BufRead;
    let receiver = "import socket,struct
s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<22);s.bind(('::',5003));s.settimeout(2)
print('ready',flush=True);got=[]
try:
  while True: got.append(struct.unpack('!I',s.recv(64)[:4])[0])
except socket.timeout: pass
print(' '.join(map(str,got)),flush=True)\n";
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &to.netns, "python3", "-c", receiver])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the receiver");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // Killed by its guard if the test fails before it ends.
    let mut child = super::cluster::Process(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let sender = format!(
        "import socket,struct
s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)
for i in range({count}): s.sendto(struct.pack('!I',i)+bytes(60),('{to_ip}',5003))\n"
    );
    from.exec(&["python3", "-c", &sender]);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let _ = child.0.wait();
    line.split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// A bridge of its own named `name` behind `router` (its router port at
/// `gateway`/64), with one IPv6-only pod allowed `address`/128 and bound
/// on `d`'s host (its IPv4 address a placeholder nothing routes; the
/// caller gives it its IPv6 address). Returns the router port, the pod
/// and the pod's port.
pub async fn ipv6_only_pod_behind(
    d: &super::world::Deployment,
    (tenant, router): (uuid::Uuid, uuid::Uuid),
    name: &str,
    gateway: &str,
    address: &str,
) -> (uuid::Uuid, Pod, uuid::Uuid) {
    let bridge = d.client.create_bridge(tenant, name).await.unwrap().id;
    let gateway = format!("{gateway}/64");
    let router_port = d
        .client
        .create_router_port(router, &gateway)
        .await
        .unwrap()
        .id;
    let link = d
        .client
        .create_bridge_port(bridge, serde_json::json!({}))
        .await
        .unwrap()
        .id;
    d.client.link(router_port, link).await.unwrap();
    let pod = Pod::new("192.0.2.10/24", None);
    let allowed = serde_json::json!({"mac": pod.mac,
        "allowed_addresses": [{"mac": pod.mac, "ip": format!("{address}/128")}]});
    let port = d
        .client
        .create_bridge_port(bridge, allowed)
        .await
        .unwrap()
        .id;
    d.client.bind(port, d.host, &pod.host_if).await.unwrap();
    (router_port, pod, port)
}
