//! Helpers of the real-packet I/O tests: throwaway network namespaces,
//! veths, and a hand-built ARP and ping answer.

#![allow(dead_code)] // each test binary uses its own part

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::process::Command;

/// The MAC address the test responders answer from.
pub const RESPONDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The IPv4 address the test responders answer for.
pub const RESPONDER_IP: [u8; 4] = [10, 0, 0, 2];

/// Fails the test unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root (they create network namespaces, veths and TAPs); run them as root"
    );
}

/// A unique short tag for names: PID (hex) and a per-process counter.
pub fn tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{:x}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `ip` with `args`, failing the test with its output if it fails.
pub fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 needed): {e}"));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace deleted on drop (with every link inside it).
pub struct Netns(pub String);

impl Netns {
    /// A new namespace named after `prefix`, its loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = format!("pxio-{prefix}-{}", tag());
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// Runs `f` on a thread that entered namespace `ns` (so ports open there),
/// with the current Tokio runtime entered (so they register with it).
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.0);
    let rt = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: `file` is an open namespace file; setns only changes this
        // short-lived thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
        let _guard = rt.enter();
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// A veth whose `eth0` end is in `pod` (addressed `addr`) and whose host end
/// `host` is up in `sw`.
pub fn veth(sw: &Netns, host: &str, pod: &Netns, addr: &str) {
    ip(&[
        "-n", &sw.0, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &pod.0,
    ]);
    ip(&["-n", &sw.0, "link", "set", host, "up"]);
    ip(&["-n", &pod.0, "addr", "add", addr, "dev", "eth0"]);
    ip(&["-n", &pod.0, "link", "set", "eth0", "up"]);
}

/// The Internet checksum of `data` (RFC 1071).
pub fn csum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The hand-built answer to an ARP request or ICMP echo request for `RESPONDER_IP`.
pub fn reply_to(f: &[u8]) -> Option<Vec<u8>> {
    if f.len() < 42 {
        return None;
    }
    let mut r = Vec::with_capacity(f.len().max(60));
    r.extend_from_slice(&f[6..12]);
    r.extend_from_slice(&RESPONDER_MAC);
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0806 if f[20..22] == [0, 1] && f[38..42] == RESPONDER_IP => {
            r.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
            r.extend_from_slice(&RESPONDER_MAC);
            r.extend_from_slice(&RESPONDER_IP);
            r.extend_from_slice(&f[22..32]); // requester's MAC and IP
        }
        0x0800 => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let (ip_hdr, l4) = (f.get(14..14 + ihl)?, f.get(14 + ihl..14 + total)?);
            if ip_hdr[9] != 1 || ip_hdr[16..20] != RESPONDER_IP || l4.first() != Some(&8) {
                return None;
            }
            let mut h = ip_hdr.to_vec();
            h.copy_within(12..16, 16);
            h[12..16].copy_from_slice(&RESPONDER_IP);
            h[8] = 64;
            h[10..12].fill(0);
            let c = csum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let mut icmp = l4.to_vec();
            icmp[0] = 0;
            icmp[2..4].fill(0);
            let c = csum(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            r.extend_from_slice(&[0x08, 0x00]);
            r.extend_from_slice(&h);
            r.extend_from_slice(&icmp);
        }
        _ => return None,
    }
    r.resize(r.len().max(60), 0);
    Some(r)
}

/// Pings `RESPONDER_IP` three times from `ns` with `ping`, or with a python3
/// raw-socket pinger where iputils-ping is not installed. Returns the output.
pub async fn ping_from(ns: &Netns) -> String {
    let (answered, text) = ping_answers(ns).await;
    assert_eq!(
        answered, 3,
        "not all 3 pings from {} answered:\n{text}",
        ns.0
    );
    text
}

/// Pings `RESPONDER_IP` three times from `ns`; how many were answered, and the output.
pub async fn ping_answers(ns: &Netns) -> (usize, String) {
    const PYPING: &str = r#"
import os, socket, struct, sys, time
def cs(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s & 0xffff) + (s >> 16); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); ident = os.getpid() & 0xffff; ok = 0
for seq in range(3):
    pl = os.urandom(56); h = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    s.sendto(struct.pack("!BBHHH", 8, 0, cs(h + pl), ident, seq) + pl, (sys.argv[1], 0)); end = time.time() + 1
    while time.time() < end:
        s.settimeout(max(end - time.time(), 0.01))
        try: d = s.recv(4096)
        except socket.timeout: break
        i = (d[0] & 15) * 4; t, _, _, di, dq = struct.unpack("!BBHHH", d[i:i + 8])
        if t == 0 and di == ident and dq == seq and d[i + 8:] == pl:
            ok += 1; print("reply seq=%d" % seq); break
print("%d received" % ok); sys.exit(0 if ok == 3 else 1)
"#;
    let target = "10.0.0.2";
    let have_ping = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ping").is_file()));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0]);
    if have_ping {
        cmd.args(["ping", "-c", "3", "-W", "1", "-i", "0.2", target]);
    } else {
        cmd.args(["python3", "-c", PYPING, target]);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.kill_on_drop(true).output())
        .await
        .expect("ping timed out")
        .expect("spawn ping");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answered = (0..=3)
        .rev()
        .find(|n| text.contains(&format!("{n} received")));
    (answered.unwrap_or(0), text)
}
