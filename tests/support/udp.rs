//! Numbered UDP datagrams between pods, and what arrived: order and loss
//! checks for the datapath's end-to-end tests.

use super::netns::Pod;

/// A Python receiver in a pod: started, it has printed `ready`; its last
/// line is what it received.
pub struct Receiver {
    child: super::cluster::Process,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Receiver {
    /// Runs `script` in `to` and waits for its `ready` line.
    pub fn start(to: &Pod, script: &str) -> Receiver {
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &to.netns, "python3", "-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // Killed by its guard if the test fails before it ends.
        let mut receiver = Receiver {
            child: super::cluster::Process(child),
            stdout,
        };
        assert_eq!(receiver.line().trim(), "ready");
        receiver
    }

    /// Its next line.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).unwrap();
        line
    }

    /// Its last line, once it has ended.
    pub fn finish(mut self) -> String {
        let line = self.line();
        let _ = self.child.0.wait();
        line
    }
}

/// Sends `count` numbered UDP datagrams from `from` to `to_ip` as fast as
/// it can; returns the numbers `to` received, in arrival order.
pub fn udp_sequence(from: &Pod, to: &Pod, to_ip: &str, count: u32) -> Vec<u32> {
    let receiver = "import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<22);s.bind(('0.0.0.0',5002));s.settimeout(2)\n\
         print('ready',flush=True);got=[]\ntry:\n  while True: got.append(struct.unpack('!I',s.recv(64)[:4])[0])\n\
         except socket.timeout: pass\nprint(' '.join(map(str,got)),flush=True)";
    let receiver = Receiver::start(to, receiver);
    let sender = format!(
        "import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range({count}): s.sendto(struct.pack('!I',i)+bytes(60),('{to_ip}',5002))"
    );
    from.exec(&["python3", "-c", &sender]);
    let line = receiver.finish();
    line.split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `flows` UDP flows (source ports 40000 and up) of `per_flow` numbered
/// datagrams each, sent interleaved from `from` to `to`: what arrived, as
/// (flow, number) in arrival order.
pub fn udp_flows(from: &Pod, to: &Pod, to_ip: &str, flows: u32, per_flow: u32) -> Vec<(u32, u32)> {
    let receiver = "import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<22);s.bind(('0.0.0.0',5003));s.settimeout(2)\n\
         print('ready',flush=True);got=[]\ntry:\n  while True: got.append('%d:%d' % struct.unpack('!II',s.recv(64)[:8]))\n\
         except socket.timeout: pass\nprint(' '.join(got),flush=True)";
    let receiver = Receiver::start(to, receiver);
    let sender = format!(
        "import socket,struct\nss=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range({flows})]\n\
         for f,s in enumerate(ss): s.bind(('0.0.0.0',40000+f))\n\
         for i in range({per_flow}):\n  for f,s in enumerate(ss): s.sendto(struct.pack('!II',f,i)+bytes(56),('{to_ip}',5003))"
    );
    from.exec(&["python3", "-c", &sender]);
    let line = receiver.finish();
    line.split_whitespace()
        .filter_map(|pair| {
            let (flow, n) = pair.split_once(':')?;
            Some((flow.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}
