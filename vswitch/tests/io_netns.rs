//! Real-packet tests of `vswitch::io` inside throwaway network namespaces.
//!
//! They need root (CAP_NET_ADMIN / CAP_SYS_ADMIN for `ip netns`) and fail,
//! never skip, without it. Every test creates its own namespaces, named with
//! the PID and a counter; the host ends of the veths live in a private
//! "switch" namespace (entered only by the thread that opens the sockets), so
//! no packet ever reaches the root namespace. Deleting a namespace deletes
//! the links in it, and every namespace is deleted by a guard, panic or not.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
mod support;

use support::{in_netns, ip, ping_from, reply_to, require_root, tag, veth, Netns, RESPONDER_MAC};
use vswitch::io::{
    AfPacket, AfPacketOptions, PortError, PortIo, RxBatch, Tap, TxBatch, VnetHeader,
};

#[derive(Debug, Default)]
struct ResponderStats {
    frames: usize,
    arp_replies: usize,
    echo_replies: usize,
    own_frames_seen: usize,
    vnet_flags_seen: BTreeSet<u8>,
}

/// Answers ARP and ping for `RESPONDER_IP` on `port` until `stop` fires.
async fn responder<P: PortIo + Send + Sync + 'static>(
    port: Arc<P>,
    mut stop: watch::Receiver<bool>,
) -> ResponderStats {
    let mut st = ResponderStats::default();
    let (mut rx, mut tx) = (RxBatch::new(16), TxBatch::new(16));
    loop {
        tokio::select! {
            r = port.recv_batch(&mut rx) => { r.expect("responder recv_batch"); }
            _ = stop.changed() => return st,
        }
        for (vnet, f) in rx.iter() {
            st.frames += 1;
            st.vnet_flags_seen.insert(vnet.flags);
            if f[6..12] == RESPONDER_MAC {
                st.own_frames_seen += 1;
            }
            if let Some(reply) = reply_to(f) {
                if reply[12..14] == [0x08, 0x06] {
                    st.arp_replies += 1;
                } else {
                    st.echo_replies += 1;
                }
                assert!(tx.push(&VnetHeader::NONE, &reply), "tx batch full");
            }
        }
        port.send_batch(&mut tx)
            .await
            .expect("responder send_batch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn afpacket_answers_ping_from_a_namespace() {
    require_root();
    let t0 = Instant::now();
    let (sw, pod) = (Netns::new("sw"), Netns::new("a"));
    let host = format!("vh-{}", tag());
    veth(&sw, &host, &pod, "10.0.0.1/24");

    let h = host.clone();
    let (port, monitor) = in_netns(&sw, move || {
        let port = AfPacket::open(&h).expect("open AfPacket");
        let opts = AfPacketOptions {
            ignore_outgoing: false,
            promiscuous: false,
            ..Default::default()
        };
        let monitor = AfPacket::open_with(&h, &opts).expect("open monitor AfPacket");
        (Arc::new(port), monitor)
    });
    assert!(port.ifindex() > 0 && port.ifname() == host);
    let (rcv, snd) = port.buffer_sizes().expect("buffer sizes");
    eprintln!("{host}: SO_RCVBUF {rcv}, SO_SNDBUF {snd}");
    assert!(
        rcv >= 16 << 20,
        "SO_RCVBUFFORCE should give >= 16 MiB, got {rcv}"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(responder(port.clone(), stop_rx));
    let out = ping_from(&pod).await;
    let _ = stop_tx.send(true);
    let st = task.await.expect("responder task");

    // The monitor socket does not ignore outgoing frames: it must have seen
    // our replies, which proves the main socket's PACKET_IGNORE_OUTGOING is
    // what keeps them out of it.
    let mut buf = vec![0u8; 65_536];
    let mut own_seen_by_monitor = 0;
    while let Some((_, n)) = monitor.try_recv(&mut buf).expect("monitor recv") {
        own_seen_by_monitor += usize::from(buf[6..12] == RESPONDER_MAC && n >= 14);
    }
    eprintln!("ping output:\n{out}\nresponder: {st:?}, monitor saw {own_seen_by_monitor} of our frames, {:?}", t0.elapsed());
    assert!(st.arp_replies >= 1 && st.echo_replies >= 3, "{st:?}");
    assert_eq!(
        st.own_frames_seen, 0,
        "PACKET_IGNORE_OUTGOING did not filter our own frames"
    );
    assert!(
        own_seen_by_monitor >= 4,
        "monitor without IGNORE_OUTGOING saw {own_seen_by_monitor}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_answers_ping_from_a_namespace() {
    require_root();
    let t0 = Instant::now();
    let (sw, pod) = (Netns::new("sw"), Netns::new("a"));
    let tap = tap_in(&sw, &pod);
    let name = tap.ifname().to_owned();

    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(responder(tap.clone(), stop_rx));
    let out = ping_from(&pod).await;
    let _ = stop_tx.send(true);
    let st = task.await.expect("responder task");
    eprintln!("ping output:\n{out}\nresponder: {st:?}, {:?}", t0.elapsed());
    assert!(st.arp_replies >= 1 && st.echo_replies >= 3, "{st:?}");

    // Closing our fd removes the (non-persistent) TAP.
    drop(tap);
    let gone = std::process::Command::new("ip")
        .args(["-n", &pod.0, "link", "show", &name])
        .output()
        .expect("ip link show");
    assert!(!gone.status.success(), "TAP {name} survived its fd");
}

#[derive(Debug, Default)]
struct FwdStats {
    frames: usize,
    bytes: usize,
    max_frame: usize,
    frames_over_1514: usize,
    gso_types: BTreeSet<u8>,
    flags: BTreeSet<u8>,
    max_gso_size: u16,
    rx_dropped: usize,
    send_errors: usize,
}

/// Copies every frame from `from` to `to` (vnet header included) until `stop`.
async fn forward<P, Q>(from: Arc<P>, to: Arc<Q>, mut stop: watch::Receiver<bool>) -> FwdStats
where
    P: PortIo + Send + Sync + 'static,
    Q: PortIo + Send + Sync + 'static,
{
    let mut st = FwdStats::default();
    let mut rx = RxBatch::new(64);
    let idx: Vec<usize> = (0..rx.capacity()).collect();
    loop {
        let n = tokio::select! {
            r = from.recv_batch(&mut rx) => r.expect("forwarder recv_batch"),
            _ = stop.changed() => return st,
        };
        st.rx_dropped += rx.dropped();
        for (vnet, f) in rx.iter() {
            st.frames += 1;
            st.bytes += f.len();
            st.max_frame = st.max_frame.max(f.len());
            st.frames_over_1514 += usize::from(f.len() > 1514);
            st.gso_types.insert(vnet.gso_type);
            st.flags.insert(vnet.flags);
            st.max_gso_size = st.max_gso_size.max(vnet.gso_size);
        }
        let mut done = 0;
        while done < n {
            match to.send_rx(&rx, &idx[done..n]) {
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    to.writable().await.expect("writable");
                }
                Err(e) => {
                    if st.send_errors == 0 {
                        eprintln!(
                            "forward {} -> {}: {e} (vnet {:?})",
                            from.ifname(),
                            to.ifname(),
                            rx.vnet(done)
                        );
                    }
                    st.send_errors += 1;
                    done += 1;
                }
            }
        }
    }
}

const SINK: &str = r#"
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"#;

const SOURCE: &str = r#"
import hashlib, os, socket, sys
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1)
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

/// Bytes sent per TCP transfer (override with `PLEXUS_IO_TEST_BYTES`).
fn transfer_bytes() -> usize {
    std::env::var("PLEXUS_IO_TEST_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20 << 20)
}

/// Runs a TCP transfer from `a` (10.0.0.1) to a sink in `b` (10.0.0.2) while
/// two tasks forward frames between the ports `pa` (A side) and `pb` (B side).
/// Checks byte count and SHA-256; returns the A→B and B→A forwarding stats.
async fn tcp_transfer<P, Q>(a: &Netns, b: &Netns, pa: Arc<P>, pb: Arc<Q>) -> (FwdStats, FwdStats)
where
    P: PortIo + Send + Sync + 'static,
    Q: PortIo + Send + Sync + 'static,
{
    let bytes = transfer_bytes();
    let (stop_tx, stop_rx) = watch::channel(false);
    let a_to_b = tokio::spawn(forward(pa.clone(), pb.clone(), stop_rx.clone()));
    let b_to_a = tokio::spawn(forward(pb, pa, stop_rx));

    let mut sink = Command::new("ip")
        .args([
            "netns", "exec", &b.0, "python3", "-c", SINK, "10.0.0.2", "5001",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3 sink");
    let mut lines = BufReader::new(sink.stdout.take().expect("sink stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    let first = first.expect("sink start timeout").expect("sink stdout");
    assert_eq!(first.as_deref(), Some("listening"));

    let t0 = Instant::now();
    let source = Command::new("ip")
        .args([
            "netns", "exec", &a.0, "python3", "-c", SOURCE, "10.0.0.2", "5001",
        ])
        .arg(bytes.to_string())
        .kill_on_drop(true)
        .output();
    let source = tokio::time::timeout(Duration::from_secs(120), source)
        .await
        .expect("transfer timed out")
        .expect("spawn python3 source");
    let elapsed = t0.elapsed();
    let stderr = String::from_utf8_lossy(&source.stderr);
    assert!(source.status.success(), "source failed: {stderr}");
    let sent = String::from_utf8_lossy(&source.stdout).trim().to_owned();
    let received = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("sink result timeout")
        .expect("sink stdout")
        .unwrap_or_default();
    let _ = stop_tx.send(true);
    let ab = a_to_b.await.expect("a->b task");
    let ba = b_to_a.await.expect("b->a task");
    let mbps = bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    eprintln!("{bytes} bytes in {elapsed:?} (~{mbps:.0} Mbit/s incl. python start)");
    eprintln!("A->B {ab:?}\nB->A {ba:?}");
    assert!(
        sent.starts_with(&format!("{bytes} ")),
        "source reported {sent:?}"
    );
    assert_eq!(received, sent, "sink got different data (length, sha256)");
    assert_eq!(
        ab.send_errors + ba.send_errors,
        0,
        "frames rejected on send"
    );
    (ab, ba)
}

/// Pods A (10.0.0.1) and B (10.0.0.2) on veths whose host ends, in `sw`, are opened as ports.
fn veth_ports(sw: &Netns, a: &Netns, b: &Netns) -> (Arc<AfPacket>, Arc<AfPacket>) {
    let t = tag();
    let (ha, hb) = (format!("vha-{t}"), format!("vhb-{t}"));
    veth(sw, &ha, a, "10.0.0.1/24");
    veth(sw, &hb, b, "10.0.0.2/24");
    in_netns(sw, move || {
        let pa = AfPacket::open(&ha).expect("open A host end");
        let pb = AfPacket::open(&hb).expect("open B host end");
        (Arc::new(pa), Arc::new(pb))
    })
}

/// Pod A (10.0.0.1) on a TAP (created in `sw`, moved into A) and pod B
/// (10.0.0.2) on a veth whose host end in `sw` is opened as a port.
fn tap_veth_ports(sw: &Netns, a: &Netns, b: &Netns) -> (Arc<Tap>, Arc<AfPacket>) {
    let hb = format!("vhb-{}", tag());
    veth(sw, &hb, b, "10.0.0.2/24");
    let pb = in_netns(sw, move || AfPacket::open(&hb).expect("open B host end"));
    (tap_in(sw, a), Arc::new(pb))
}

/// A TAP created in `sw` (so nothing touches the root namespace), moved into
/// `pod` and addressed 10.0.0.1/24 there; the fd keeps working across the move.
fn tap_in(sw: &Netns, pod: &Netns) -> Arc<Tap> {
    let name = format!("tp-{}", tag());
    let n = name.clone();
    let tap = in_netns(sw, move || Tap::open(&n).expect("open TAP"));
    assert_eq!(tap.ifname(), name);
    ip(&["-n", &sw.0, "link", "set", &name, "netns", &pod.0]);
    ip(&["-n", &pod.0, "addr", "add", "10.0.0.1/24", "dev", &name]);
    ip(&["-n", &pod.0, "link", "set", &name, "up"]);
    Arc::new(tap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn afpacket_forwards_gso_tcp_between_namespaces() {
    require_root();
    let (sw, a, b) = (Netns::new("sw"), Netns::new("a"), Netns::new("b"));
    let (pa, pb) = veth_ports(&sw, &a, &b);
    let (ab, _) = tcp_transfer(&a, &b, pa, pb).await;
    assert!(
        ab.frames_over_1514 > 0,
        "no GSO super-frame was forwarded: {ab:?}"
    );
    assert!(ab.gso_types.contains(&VnetHeader::GSO_TCPV4), "{ab:?}");
    assert!(ab.flags.contains(&VnetHeader::F_NEEDS_CSUM), "{ab:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_and_afpacket_forward_gso_tcp_both_ways() {
    require_root();
    let (sw, a, b) = (Netns::new("sw"), Netns::new("a"), Netns::new("b"));
    let (tap, pb) = tap_veth_ports(&sw, &a, &b);
    let (ab, _) = tcp_transfer(&a, &b, tap, pb).await;
    // TUNSETOFFLOAD(TSO4) lets the kernel hand GSO super-frames to the TAP reader.
    assert!(
        ab.frames_over_1514 > 0,
        "no GSO super-frame came out of the TAP: {ab:?}"
    );
    assert!(ab.gso_types.contains(&VnetHeader::GSO_TCPV4), "{ab:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_name_the_interface() {
    require_root();
    let e = AfPacket::open("pxio-missing0").expect_err("no such interface");
    assert!(matches!(e, PortError::NoSuchInterface { .. }), "{e}");
    assert!(e.to_string().contains("pxio-missing0"), "{e}");
    let e = Tap::open("a-name-too-long-for-linux").expect_err("name too long");
    assert!(matches!(e, PortError::InvalidName { .. }), "{e}");
    // Attaching a TAP to an existing veth's name is refused with a clear error.
    let (sw, pod) = (Netns::new("sw"), Netns::new("a"));
    let host = format!("vh-{}", tag());
    veth(&sw, &host, &pod, "10.0.0.1/24");
    let h = host.clone();
    let e = in_netns(&sw, move || Tap::open(&h).expect_err("a veth is not a TAP"));
    assert!(matches!(e, PortError::Busy { .. }), "{e}");
    assert!(e.to_string().contains(&host), "{e}");
    // Outside a Tokio runtime the error says so instead of panicking.
    let e = std::thread::spawn(|| AfPacket::open("lo").expect_err("no runtime"))
        .join()
        .expect("thread");
    assert!(matches!(e, PortError::NoRuntime { .. }), "{e}");
}
