//! Load-balancer test helpers: backends that answer their own name (and
//! HTTP health checks), a client that opens many connections to a VIP and
//! counts who answered, and polling for member health.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use super::netns::Pod;
use super::world::{spawn_ready, Server};

/// A TCP backend in `netns` on `port`: a request starting with `GET `
/// gets `HTTP/1.0 200 OK` with `<tag>` as the body; any other line gets
/// `<tag> <peer-ip>:<peer-port>`. Each connection answers once and closes.
pub fn backend(netns: &str, port: u16, tag: &str) -> Server {
    let script = format!(
        "import socket,threading
def serve(c,a):
  try:
    f=c.makefile('rwb');line=f.readline()
    if line.startswith(b'GET '):
      f.write(b'HTTP/1.0 200 OK\\r\\nContent-Length: {len}\\r\\n\\r\\n{tag}')
    else:
      f.write(('{tag} %s:%d\\n'%a[:2]).encode())
    f.flush()
  finally:
    c.close()
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('0.0.0.0',{port}));s.listen(512)
print('ready',flush=True)
while True:
  c,a=s.accept();threading.Thread(target=serve,args=(c,a),daemon=True).start()\n",
        len = tag.len()
    );
    spawn_ready(netns, &script)
}

/// Opens `count` connections from `pod` to `dst:port`, one after the
/// other, from source ports `first_sport`, `first_sport + 1`, …; returns
/// how many answers each tag gave (failures count under `ERR <reason>`).
pub fn connect_many(
    pod: &Pod,
    dst: &str,
    port: u16,
    count: u16,
    first_sport: u16,
) -> BTreeMap<String, u32> {
    let script = format!(
        "import socket,json,collections
counts=collections.Counter()
for i in range({count}):
  try:
    s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.settimeout(3)
    s.bind(('0.0.0.0',{first_sport}+i));s.connect(('{dst}',{port}));s.sendall(b'hi\\n')
    counts[s.makefile().readline().split(' ')[0].strip()]+=1
  except Exception as e:
    counts['ERR '+type(e).__name__]+=1
  finally:
    s.close()
print(json.dumps(counts))\n"
    );
    let out = pod.try_exec(&["python3", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "connect_many: {e}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Waits until member `member`'s health (as the API shows it) is `want`;
/// returns how long that took.
pub async fn wait_health(
    client: &api::Client,
    member: Uuid,
    want: &str,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got: Value = client
            .get(&format!("/v1/members/{member}"))
            .await
            .expect("read the member");
        if got["health"] == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "member {member} never became {want} within {within:?}: {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
