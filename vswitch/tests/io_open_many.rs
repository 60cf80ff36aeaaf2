//! `vswitch::io::open_many` on real veths in a throwaway network namespace:
//! every port comes back in order, bound to its own interface, and names
//! without an interface are told apart (the agent makes TAPs of them).
//!
//! Needs root (it creates a namespace and veths) and fails without it.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

mod support;

use support::{in_netns, ip, Netns};
use vswitch::io::{open_many, AfPacket, AfPacketOptions, PortError, VnetHeader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_many_binds_each_port_to_its_interface() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root (namespaces, veths)"
    );
    let ns = Netns(format!("pxom-{:x}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    // 40 veth pairs a<i>/b<i>, both ends here; every fifth name asked for
    // has no interface. Enough names for the pipelined path.
    let mut batch = String::new();
    for i in 0..40 {
        batch += &format!(
            "link add a{i} type veth peer name b{i}\nlink set a{i} up\nlink set b{i} up\n"
        );
    }
    let file = std::env::temp_dir().join(format!("{}.batch", ns.0));
    std::fs::write(&file, batch).expect("batch file");
    ip(&["-n", &ns.0, "-batch", file.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&file);
    let names: Vec<String> = (0..40)
        .map(|i| match i % 5 {
            4 => format!("none{i}"),
            _ => format!("a{i}"),
        })
        .collect();

    let (ports, peer) = in_netns(&ns, move || {
        let mut ports = Vec::new();
        open_many(&names, &AfPacketOptions::default(), |i, port| {
            ports.push((i, names[i].clone(), port));
            ControlFlow::Continue(())
        });
        let peer = AfPacket::open("b7").expect("the peer of a7");
        (ports, peer)
    });
    assert_eq!(
        ports.iter().map(|(i, _, _)| *i).collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>(),
        "every name answered, in order"
    );
    let mut a7 = None;
    for (i, name, port) in ports {
        match port {
            Ok(port) => {
                assert_ne!(i % 5, 4, "{name} has no interface");
                assert_eq!(port.ifname(), name);
                if name == "a7" {
                    a7 = Some(port);
                }
            }
            Err(PortError::NoSuchInterface { ifname }) => {
                assert_eq!(i % 5, 4, "{name} exists");
                assert_eq!(ifname, name);
            }
            Err(error) => panic!("{name}: {error}"),
        }
    }
    // Bound to its own interface: a frame sent into b7 comes out of a7.
    let a7 = Arc::new(a7.expect("a7 opened"));
    let mut frame = vec![0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 7]);
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
    frame[14..18].copy_from_slice(b"a7!!");
    peer.send(&VnetHeader::default(), &frame)
        .await
        .expect("sent into b7");
    // (b7 may send IPv6 neighbour discovery of its own meanwhile.)
    let received = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = vec![0u8; 2048];
        loop {
            let (_, n) = a7.recv(&mut buf).await.expect("a7 received");
            if buf[..n] == frame[..] {
                return;
            }
        }
    });
    received
        .await
        .expect("the frame sent into b7 came out of a7");
}
