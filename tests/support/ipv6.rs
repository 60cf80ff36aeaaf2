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
