//! `vswitch::io::SharedSockets` on real veths in throwaway namespaces: the
//! sockets receive from exactly the interfaces they pass (each frame
//! naming its own), send out of the one a port names, never read back what
//! they or the host send, keep an interface while any of its ports is
//! left, stop receiving from a port dropped, and a port can tell when its
//! interface is gone. Needs root (namespaces, veths, eBPF); fails
//! without it.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use support::{in_netns, ping_answers, ping_from, reply_to, require_root, tag, veth, Netns};
use support::{ip, RESPONDER_MAC};
use tokio::sync::watch;
use vswitch::io::{
    AfPacketOptions, PortError, RxBatch, SharedPort, SharedReceiver, SharedSockets, VnetHeader,
};

/// Frames a responder received, by the interface index they came from;
/// `OWN` counts frames this side sent (the responder's own, or the host
/// ends' kernel's, whose MAC is `HOST_END_MAC`): none may come back.
type Seen = Arc<Mutex<HashMap<u32, usize>>>;
const OWN: u32 = u32::MAX;
const HOST_END_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

/// Ports by interface index.
type Ports = Arc<Mutex<HashMap<u32, SharedPort>>>;

/// Answers ARP and ping for the responder address on every port, through
/// the port the request came from, until `stop` fires.
async fn respond(
    receiver: SharedReceiver,
    ports: Ports,
    seen: Seen,
    mut stop: watch::Receiver<bool>,
) {
    let mut rx = RxBatch::new(16);
    loop {
        tokio::select! {
            r = receiver.recv_batch(&mut rx) => { r.expect("shared recv_batch"); }
            _ = stop.changed() => return,
        }
        for i in 0..rx.len() {
            let frame = rx.frame(i);
            let from = if frame[6..12] == RESPONDER_MAC || frame[6..12] == HOST_END_MAC {
                OWN
            } else {
                rx.source(i)
            };
            *seen.lock().unwrap().entry(from).or_default() += 1;
            if let Some(reply) = reply_to(frame) {
                let ports = ports.lock().unwrap();
                if let Some(port) = ports.get(&rx.source(i)) {
                    port.try_send(&VnetHeader::NONE, &reply)
                        .expect("send through the shared socket");
                }
            }
        }
    }
}

/// The index of interface `name` in `ns` (`ip -o link` prints it first).
fn ifindex(ns: &Netns, name: &str) -> u32 {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.0, "-o", "link", "show", "dev", name])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    let index = text.split(':').next().unwrap_or_default().trim();
    index
        .parse()
        .unwrap_or_else(|_| panic!("no index in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_sockets_serve_the_interfaces_they_pass_and_no_other() {
    require_root();
    let sw = Netns::new("sw");
    let pods = [Netns::new("a"), Netns::new("b"), Netns::new("c")];
    let hosts: Vec<String> = (0..3).map(|_| format!("vs-{}", tag())).collect();
    for (pod, host) in pods.iter().zip(&hosts) {
        veth(&sw, host, pod, "10.0.0.1/24");
    }
    let host_end_mac = HOST_END_MAC.map(|b| format!("{b:02x}")).join(":");
    ip(&[
        "-n",
        &sw.0,
        "link",
        "set",
        &hosts[0],
        "address",
        &host_end_mac,
    ]);
    let names = hosts.clone();
    let (sockets, a, b, missing) = in_netns(&sw, move || {
        let sockets = SharedSockets::open(2, &AfPacketOptions::default())
            .expect("shared packet sockets (needs eBPF socket filters)");
        let a = sockets.add(&names[0]).expect("port a");
        let b = sockets.add(&names[1]).expect("port b");
        let missing = sockets.add("vs-none").map(drop);
        (sockets, a, b, missing)
    });
    assert!(
        matches!(missing, Err(PortError::NoSuchInterface { .. })),
        "{missing:?}"
    );
    assert_eq!(sockets.len(), 2);
    let (a_index, b_index) = (a.ifindex(), b.ifindex());
    assert_ne!(a_index, b_index);
    assert!(a.is_current() && b.is_current());
    let ports: Ports = Arc::new(Mutex::new(HashMap::from([(a_index, a), (b_index, b)])));
    let seen: Seen = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = sockets
        .receivers()
        .into_iter()
        .map(|receiver| {
            tokio::spawn(respond(
                receiver,
                ports.clone(),
                seen.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    // Both passed interfaces are answered, each through its own port.
    ping_from(&pods[0]).await;
    ping_from(&pods[1]).await;
    // The third is not passed: nothing of it arrives.
    let (answered, text) = ping_answers(&pods[2]).await;
    assert_eq!(answered, 0, "{text}");
    let c_index = ifindex(&sw, &hosts[2]);
    let counts = seen.lock().unwrap().clone();
    assert!(counts.get(&a_index) >= Some(&4), "{counts:?}");
    assert!(counts.get(&b_index) >= Some(&4), "{counts:?}");
    assert_eq!(counts.get(&c_index), None, "frames of c: {counts:?}");
    assert_eq!(
        counts.get(&OWN),
        None,
        "the fanout group read back frames it sent: {counts:?}"
    );

    // Frames the host end's own kernel sends out of a passed interface are
    // not received either (an ARP request and pings to pod a).
    ip(&["-n", &sw.0, "addr", "add", "10.0.0.9/24", "dev", &hosts[0]]);
    let sent = std::process::Command::new("ip")
        .args([
            "netns", "exec", &sw.0, "ping", "-c", "2", "-i", "0.2", "-W", "1", "10.0.0.1",
        ])
        .output()
        .expect("ping from the host end");
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        seen.lock().unwrap().get(&OWN),
        None,
        "frames the host end sent were received"
    );

    // A second port on the same interface, dropped, leaves the first served.
    let second = sockets.add(&hosts[0]).expect("a second port on a");
    drop(second);
    ping_from(&pods[0]).await;

    // A port dropped is no longer received from.
    // (Count after the drop and a pause: pod b may have sent on its own
    // since the counts above, and frames already queued are still read.)
    drop(ports.lock().unwrap().remove(&b_index));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let b_before = seen.lock().unwrap()[&b_index];
    let (answered, text) = ping_answers(&pods[1]).await;
    assert_eq!(answered, 0, "{text}");
    assert_eq!(seen.lock().unwrap()[&b_index], b_before, "b dropped");

    // A port whose interface was deleted knows it.
    ip(&["-n", &sw.0, "link", "del", &hosts[0]]);
    assert!(!ports.lock().unwrap()[&a_index].is_current());

    let _ = stop_tx.send(true);
    for task in tasks {
        task.await.expect("responder task");
    }
}
