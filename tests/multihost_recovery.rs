//! Multi-host flow state survives an agent's crash: an agent that restarts
//! asks its peers for the connections already passing through it, so an
//! established connection through a stateful chain keeps working after the
//! agent holding its other direction is killed with SIGKILL and restarted.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use support::cluster::Cluster;
use support::netns::Pod;
use support::world::{tcp_probe, tcp_server};

/// One TCP connection held open by a client in a pod: each `ask` sends a
/// line on it and returns the answer (or `ERR …`). Killed by its guard.
struct Connection {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Connection {
    fn open(pod: &Pod, dst: &str, port: u16) -> Connection {
        let script = format!(
            "import socket,sys
s=socket.create_connection(('{dst}',{port}),timeout=5);s.settimeout(20)
f=s.makefile('rwb')
for line in sys.stdin:
  try:
    f.write(b'hi\\n');f.flush();print(f.readline().decode().strip(),flush=True)
  except Exception as e:
    print('ERR',type(e).__name__,flush=True)\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &pod.netns, "python3", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Connection {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self) -> String {
        writeln!(self.stdin, "go").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_established_connection_survives_a_restart_of_the_agent_holding_its_replies() {
    let mut cluster = Cluster::start(2).await;
    let (a, b, _) = cluster.guarded_pair("10.63.0").await;
    let _b_server = tcp_server(&b.netns, &[8080], "b");

    let mut connection = Connection::open(&a, "10.63.0.2", 8080);
    let before = connection.ask();
    assert!(before.starts_with("b 10.63.0.1:"), "{before}");

    // Host 1 holds the state its replies are judged by: crash it.
    cluster.hosts[1].restart_agent();
    cluster.wait_alive().await;
    let after = connection.ask();
    assert!(
        after.starts_with("b 10.63.0.1:"),
        "the connection keeps working after the restart: {after}\n{}",
        cluster.logs()
    );
    assert_eq!(
        after.split(' ').nth(1),
        before.split(' ').nth(1),
        "the same connection"
    );
    // New inbound connections are still refused.
    let inbound = tcp_probe(&b, "10.63.0.1", 8080, 1.5, None);
    assert!(inbound.starts_with("ERR"), "{inbound}");
    assert!(
        cluster.hosts[0].metrics().contains("tunnel_sync_answered"),
        "host 0 answered the restarted agent's sync request"
    );
}
