//! Network namespaces as pods, removed by their guards even when a test fails.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test run) uses: `{prefix}{pid}{n}`, ≤ 15 bytes.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    format!("{prefix}{pid}{n}")
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A pod: a namespace with `eth0`, whose veth peer (`host_if`) is in the
/// root namespace for the agent to open.
pub struct Pod {
    /// The namespace.
    pub netns: String,
    /// The host-side interface.
    pub host_if: String,
    /// `eth0`'s MAC.
    pub mac: String,
}

impl Pod {
    /// Creates the namespace and the veth pair, with `addr` (e.g.
    /// `10.0.1.10/24`) on `eth0` and a default route via `gateway`.
    pub fn new(addr: &str, gateway: Option<&str>) -> Pod {
        let netns = unique("pxp");
        let host_if = unique("pxh");
        run(&["ip", "netns", "add", &netns]);
        let mut pod = Pod {
            netns: netns.clone(),
            host_if: host_if.clone(),
            mac: String::new(),
        };
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        run(&["ip", "link", "set", &host_if, "up"]);
        pod.exec(&["ip", "link", "set", "lo", "up"]);
        pod.exec(&["ip", "link", "set", "eth0", "up"]);
        pod.exec(&["ip", "addr", "add", addr, "dev", "eth0"]);
        if let Some(gw) = gateway {
            pod.exec(&["ip", "route", "add", "default", "via", gw]);
        }
        let mac =
            String::from_utf8(pod.exec(&["cat", "/sys/class/net/eth0/address"]).stdout).unwrap();
        pod.mac = mac.trim().to_string();
        pod
    }

    /// A pod whose `eth0` is the existing interface `interface` (e.g. a TAP
    /// the agent created), moved into a new namespace and given `mac`.
    pub fn adopting(interface: &str, mac: &str, addr: &str) -> Pod {
        let netns = unique("pxp");
        run(&["ip", "netns", "add", &netns]);
        let pod = Pod {
            netns,
            host_if: interface.to_string(),
            mac: mac.to_string(),
        };
        run(&["ip", "link", "set", interface, "netns", &pod.netns]);
        pod.exec(&["ip", "link", "set", interface, "name", "eth0"]);
        pod.exec(&["ip", "link", "set", "eth0", "address", mac]);
        pod.exec(&["ip", "link", "set", "lo", "up"]);
        pod.exec(&["ip", "link", "set", "eth0", "up"]);
        pod.exec(&["ip", "addr", "add", addr, "dev", "eth0"]);
        pod
    }

    /// Runs a command inside the pod, failing the test if it fails.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.netns];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs a command inside the pod and returns its output, whatever its status.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .output()
            .expect("spawn")
    }

    /// Pings `dst` `count` times; returns (received, output text).
    pub fn ping(&self, dst: &str, count: u32, extra: &[&str]) -> (u32, String) {
        let count = count.to_string();
        let mut args = vec!["ping", "-n", "-c", &count, "-i", "0.2", "-W", "1"];
        args.extend_from_slice(extra);
        args.push(dst);
        let output = self.try_exec(&args);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let received = text
            .lines()
            .find_map(|l| {
                l.split(", ")
                    .find(|p| p.ends_with("received"))
                    .and_then(|p| p.split(' ').next()?.parse().ok())
            })
            .unwrap_or(0);
        (received, text)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}
