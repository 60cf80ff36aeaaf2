//! End-to-end: a fragmented UDP datagram through masquerade leaves with
//! every fragment translated, is reassembled by the receiver, and its
//! fragmented answer comes back whole, with real packets and a capture on
//! the uplink. Needs root.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::world::{Deployment, STRANGER, UPLINK};

/// A UDP server on port 9000 that answers each datagram with one of the
/// same size; killed by its guard.
struct Echo(std::process::Child);

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bound to `address`, so that answers come from it (an unbound UDP
/// socket answers from the address of the route back).
fn echo_server(netns: &str, address: &str) -> Echo {
    let script = format!(
        "import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('{address}',9000))
while True:
  d,a=s.recvfrom(65535);s.sendto(b'y'*len(d),a)\n"
    );
    Echo(
        Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-c", &script])
            .spawn()
            .expect("run the echo server"),
    )
}

/// tshark on the world's side of the uplink, printing `src dst offset` of
/// every IPv4 fragment for `seconds`; killed by its guard.
struct Capture(std::process::Child);

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn capture_fragments(netns: &str, seconds: u32) -> Capture {
    Capture(
        Command::new("ip")
            .args(["netns", "exec", netns, "tshark", "-n", "-l", "-i", "eth0"])
            .args(["-f", "ip[6:2] & 0x3fff != 0", "-o", "ip.defragment:FALSE"])
            .args(["-a", &format!("duration:{seconds}"), "-T", "fields"])
            .args(["-e", "ip.src", "-e", "ip.dst", "-e", "ip.frag_offset"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tshark"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_datagram_through_masquerade_is_translated_whole() {
    let d = Deployment::start().await;
    let t = d.tenant(None).await;
    let (a, _) = d.pod(&t, 10).await;
    let world = d.world().netns.clone();
    // An outside address: the uplink gateway is the host, which pods
    // reach without NAT.
    let _echo = echo_server(&world, STRANGER);
    let mut capture = capture_fragments(&world, 8);
    std::thread::sleep(Duration::from_secs(2));

    let script = format!(
        "import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)
s.sendto(b'x'*4000,('{STRANGER}',9000))
try:
  d,_=s.recvfrom(65535);print(len(d), d==b'y'*4000)
except Exception as e:
  print('ERR',type(e).__name__)\n"
    );
    let out = a.try_exec(&["python3", "-c", &script]);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let mut text = String::new();
    let mut stdout = capture.0.stdout.take().expect("tshark's stdout");
    let _ = stdout.read_to_string(&mut text);
    let fragments: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 3)
        .collect();
    let outbound: Vec<&Vec<&str>> = fragments.iter().filter(|f| f[1] == STRANGER).collect();
    assert!(
        outbound.len() >= 3,
        "4000 bytes leave as at least three fragments:\n{text}"
    );
    assert!(
        outbound.iter().any(|f| f[2] != "0"),
        "later fragments were captured:\n{text}"
    );
    for fragment in &outbound {
        assert_eq!(
            fragment[0], UPLINK,
            "every fragment carries the translated source:\n{text}"
        );
    }
    assert_eq!(
        answer, "4000 True",
        "the receiver got the whole datagram and its whole answer came back"
    );
}
