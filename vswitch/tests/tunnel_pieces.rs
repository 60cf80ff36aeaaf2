//! The tunnel socket carries an offloaded super-frame in pieces with
//! `UDP_SEGMENT` (gathered from the frame without copying) and reads them back coalesced with `UDP_GRO`, over real
//! loopback sockets: every piece arrives, in order, and the frame comes
//! back whole.

use std::net::SocketAddr;

use vswitch::io::{
    frame_prefix, parse_chunk, Datagrams, PiecePlan, Reassembly, RxBatch, TunnelSocket, VnetHeader,
    VXLAN_AT,
};
use vswitch::wire::{Vni, VxlanPacket};

#[tokio::test]
async fn a_super_frame_crosses_the_tunnel_socket_in_pieces() {
    // Ports of their own (local_addr is the address asked for).
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let a = TunnelSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    let b = TunnelSocket::bind(SocketAddr::from(([127, 0, 0, 1], port + 1))).unwrap();
    let frame: Vec<u8> = (0..65_226u32).map(|i| (i * 13 % 251) as u8).collect();
    let vnet = VnetHeader {
        flags: 1,
        gso_type: VnetHeader::GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut reassembly = Reassembly::default();
    let mut rx = RxBatch::new(64);
    let (mut sources, mut segments) = (Vec::new(), Vec::new());
    for id in 0..3u32 {
        let plan = PiecePlan::new(frame.len(), 1450).expect("a plan");
        assert!(plan.sends().count() >= 2, "more than one send");
        let prefix = frame_prefix(77, &vnet);
        a.send_pieces(b.local_addr(), &plan, id, &prefix, &frame, None)
            .expect("every piece accepted");
        let mut whole = None;
        let mut reads = 0;
        while whole.is_none() {
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                b.recv_batch(&mut rx, &mut sources, &mut segments),
            )
            .await
            .expect("the pieces arrive")
            .unwrap();
            reads += 1;
            for i in 0..n {
                let source: SocketAddr = sources[i];
                assert_eq!(source, a.local_addr());
                let wire = &rx.wire(i).unwrap()[VXLAN_AT..];
                let size = if segments[i] == 0 {
                    wire.len()
                } else {
                    segments[i]
                };
                for datagram in wire.chunks(size) {
                    let chunk = parse_chunk(&datagram[8..]).expect("a piece");
                    if let Some(done) = reassembly.push(source, chunk) {
                        assert_eq!((done.key, done.vnet), (77, vnet));
                        whole = Some(done.frame == &frame[..]);
                    }
                }
            }
        }
        assert_eq!(whole, Some(true), "frame {id} back whole");
        assert!(
            reads <= 4,
            "read coalesced, not a datagram at a time: {reads} reads"
        );
    }
    assert_eq!(reassembly.lost, 0);
}

#[tokio::test]
async fn small_datagrams_of_one_size_cross_in_one_send_and_one_read() {
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let a = TunnelSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    let b = TunnelSocket::bind(SocketAddr::from(([127, 0, 0, 1], port + 1))).unwrap();
    let mut queued = Datagrams::default();
    let vni = Vni::new(42).unwrap();
    for i in 0..40u8 {
        queued.push_raw(b.local_addr(), vni, &[i; 90]);
        queued.coalesce_last(1472);
    }
    assert_eq!(queued.len(), 1, "one send");
    assert_eq!(a.send(&queued), 1);
    let mut rx = RxBatch::new(64);
    let (mut sources, mut segments) = (Vec::new(), Vec::new());
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            b.recv_batch(&mut rx, &mut sources, &mut segments),
        )
        .await
        .expect("the datagrams arrive")
        .unwrap();
        for (i, &segment) in segments.iter().enumerate().take(n) {
            let wire = &rx.wire(i).unwrap()[VXLAN_AT..];
            let size = if segment == 0 { wire.len() } else { segment };
            for datagram in wire.chunks(size) {
                let packet = VxlanPacket::new_checked(datagram).unwrap();
                assert_eq!(packet.vni(), vni);
                assert_eq!(datagram.len(), 98);
                seen.push(datagram[8]);
            }
        }
    }
    assert_eq!(seen, (0..40).collect::<Vec<u8>>(), "all, in order");
}

/// Runs `f` on a thread inside a fresh network namespace whose loopback
/// has an MTU of 1500 (the namespace is deleted afterwards).
fn in_namespace_with_mtu_1500<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("pxpieces-{:x}-{n}", std::process::id());
    let ip = |args: &[&str]| {
        let ok = std::process::Command::new("ip").args(args).status();
        assert!(ok.is_ok_and(|s| s.success()), "ip {}", args.join(" "));
    };
    ip(&["netns", "add", &name]);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _gone = Gone(name.clone());
    ip(&["-n", &name, "link", "set", "lo", "mtu", "1500", "up"]);
    let path = format!("/run/netns/{name}");
    let rt = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: `file` is an open namespace file; setns only changes this
        // short-lived thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let _guard = rt.enter();
        f()
    })
    .join()
    .expect("the namespace thread")
}

#[tokio::test]
async fn pieces_too_big_for_the_path_are_refused_not_sent() {
    // The agent falls back to whole datagrams on this error (a path MTU
    // below the configured one): the send must fail, not vanish.
    let results = in_namespace_with_mtu_1500(|| {
        let a = TunnelSocket::bind(SocketAddr::from(([127, 0, 0, 1], 4789))).unwrap();
        let b = SocketAddr::from(([127, 0, 0, 1], 4790));
        let _b = TunnelSocket::bind(b).unwrap();
        let frame = vec![7u8; 30_000];
        let vnet = VnetHeader::NONE;
        let prefix = frame_prefix(1, &vnet);
        let send = |max_ip_len| {
            let plan = PiecePlan::new(frame.len(), max_ip_len).unwrap();
            a.send_pieces(b, &plan, 1, &prefix, &frame, None)
                .map_err(|e| e.raw_os_error())
        };
        (send(8950), send(1450))
    });
    assert!(
        matches!(results.0, Err(Some(libc::EMSGSIZE | libc::EINVAL))),
        "pieces for a 9000-byte underlay over 1500: {:?}",
        results.0
    );
    assert_eq!(results.1, Ok(()), "pieces that fit go out");
}

#[tokio::test]
async fn coalesced_datagrams_too_big_for_the_path_go_one_by_one() {
    // Ten 3000-byte datagrams coalesced for a 9000-byte underlay, over a
    // 1500-byte one: the kernel refuses the UDP_SEGMENT send, the socket
    // sends them one by one (fragmented), and coalesces no more.
    let (sent, refused, got) = in_namespace_with_mtu_1500(|| {
        let a = TunnelSocket::bind(SocketAddr::from(([127, 0, 0, 1], 4789))).unwrap();
        let b = std::net::UdpSocket::bind(("127.0.0.1", 4790)).unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut queued = Datagrams::default();
        let vni = Vni::new(42).unwrap();
        for i in 0..10u8 {
            queued.push_raw(b.local_addr().unwrap(), vni, &[i; 2992]);
            queued.coalesce_last(9000);
        }
        assert_eq!(queued.len(), 1, "coalesced into one send");
        let sent = a.send(&queued);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < 10 {
            let Ok(n) = b.recv(&mut buf) else { break };
            got.push((n, buf[8]));
        }
        (sent, a.segments_refused(), got)
    });
    assert_eq!(sent, 1, "the send counts as done");
    assert!(refused, "the refusal is remembered");
    let expected: Vec<(usize, u8)> = (0..10).map(|i| (3000, i)).collect();
    assert_eq!(got, expected, "each datagram, whole and in order");
}
