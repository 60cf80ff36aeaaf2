//! A tunnel of several sockets, over real loopback sockets: its receiving
//! sockets share the tunnel port and each sender's datagrams reach socket
//! `source port % sockets` (the group's steering program), its sending
//! sockets leave from consecutive ports of their own, and nothing else
//! can take the tunnel port from it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use vswitch::io::RxBatch;
use vswitch::tunnel::{Tunnel, TunnelConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config(sockets: usize) -> TunnelConfig {
    TunnelConfig {
        port: 0,
        sockets,
        ..TunnelConfig::default()
    }
}

#[tokio::test]
async fn one_socket_receives_and_sends_from_the_tunnel_port() {
    let tunnel = Tunnel::bind(LOOPBACK, config(1)).expect("bind");
    let port = tunnel.config().port;
    assert_ne!(port, 0, "the port the kernel picked is the tunnel's");
    assert_eq!(tunnel.receivers().len(), 1);
    assert_eq!(tunnel.socket().local_addr().port(), port);
    for lane in [0, 1, 7] {
        assert_eq!(tunnel.sender(lane).local_addr().port(), port);
    }
}

#[tokio::test]
async fn the_tunnel_port_is_held_alone() {
    let tunnel = Tunnel::bind(LOOPBACK, config(2)).expect("bind");
    let port = tunnel.config().port;
    // Another agent on the same address fails, with one socket or several.
    for sockets in [1, 2] {
        let again = TunnelConfig {
            port,
            ..config(sockets)
        };
        let error = Tunnel::bind(LOOPBACK, again).expect_err("the port is taken");
        assert!(error.to_string().contains("in use"), "{error}");
    }
    assert!(UdpSocket::bind((LOOPBACK, port)).is_err());
}

#[tokio::test]
async fn an_agent_holding_the_address_is_not_joined_even_between_binds() {
    // Another agent between its two binds holds no socket on the port,
    // only the address's lock: a tunnel on the port must still fail.
    let port = UdpSocket::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let held = vswitch::tunnel::port_lock::hold((LOOPBACK, port).into())
        .expect("the lock")
        .expect("a lock directory (run as root)");
    for sockets in [1, 2] {
        let again = TunnelConfig {
            port,
            ..config(sockets)
        };
        let error = Tunnel::bind(LOOPBACK, again).expect_err("the address is held");
        assert!(error.to_string().contains("in use"), "{error}");
    }
    drop(held);
    let tunnel = Tunnel::bind(LOOPBACK, TunnelConfig { port, ..config(2) });
    assert!(tunnel.is_ok(), "free again once let go: {tunnel:?}");
}

#[tokio::test]
async fn senders_spread_over_the_receiving_sockets() {
    spread_over(LOOPBACK).await;
}

#[tokio::test]
async fn senders_spread_over_the_receiving_sockets_of_an_ipv6_underlay() {
    spread_over(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)).await;
}

async fn spread_over(ip: IpAddr) {
    let tunnel = Tunnel::bind(ip, config(2)).expect("bind");
    let port = tunnel.config().port;
    let receivers = tunnel.receivers();
    assert_eq!(receivers.len(), 2);
    for socket in receivers {
        assert_eq!(socket.local_addr(), SocketAddr::new(ip, port));
    }

    // The sending lanes leave from consecutive ports of their own, a lane
    // always from the same one.
    let (zero, one) = (tunnel.sender(0), tunnel.sender(1));
    assert_ne!(zero.local_addr().port(), port);
    assert_eq!(one.local_addr().port(), zero.local_addr().port() + 1);
    assert_eq!(tunnel.sender(2).local_addr(), zero.local_addr());

    // 32 senders on ports of their own: each one's datagrams reach socket
    // `source port % 2`, in the order sent.
    let senders: Vec<UdpSocket> = (0..32)
        .map(|_| UdpSocket::bind((ip, 0)).expect("a sender"))
        .collect();
    // (Datagrams shorter than a VXLAN header are dropped: 16 bytes each.)
    for round in 0..3u8 {
        for (i, sender) in senders.iter().enumerate() {
            let mut datagram = [0u8; 16];
            datagram[..2].copy_from_slice(&[round, i as u8]);
            sender.send_to(&datagram, (ip, port)).expect("send");
        }
    }
    let mut arrived: Vec<Vec<(u16, [u8; 2])>> = vec![Vec::new(); 2];
    let mut rx = RxBatch::new(64);
    let (mut sources, mut segments) = (Vec::new(), Vec::new());
    while arrived.iter().map(Vec::len).sum::<usize>() < 96 {
        let mut progressed = false;
        for (k, socket) in receivers.iter().enumerate() {
            let read = tokio::time::timeout(
                Duration::from_millis(50),
                socket.recv_batch(&mut rx, &mut sources, &mut segments),
            )
            .await;
            let Ok(read) = read else { continue };
            let n = read.expect("receive");
            for (i, source) in sources.iter().enumerate().take(n) {
                let wire = rx.wire(i).expect("a slot");
                let payload = &wire[vswitch::io::VXLAN_AT..];
                // One datagram a slot, or several the kernel coalesced.
                for datagram in payload.chunks(if segments[i] > 0 { segments[i] } else { 16 }) {
                    arrived[k].push((source.port(), [datagram[0], datagram[1]]));
                }
                progressed = true;
            }
        }
        assert!(progressed, "datagrams were lost: {arrived:?}");
    }
    for (k, got) in arrived.iter().enumerate() {
        assert!(
            got.iter().all(|(from, _)| usize::from(*from) % 2 == k),
            "socket {k} received from the wrong senders: {got:?}"
        );
    }
    for (k, socket) in receivers.iter().enumerate() {
        assert!(socket.reads() > 0 && socket.reads() <= arrived[k].len() as u64);
    }
    for sender in &senders {
        let from = sender.local_addr().unwrap().port();
        let rounds: Vec<u8> = arrived[usize::from(from) % 2]
            .iter()
            .filter(|(p, _)| *p == from)
            .map(|(_, bytes)| bytes[0])
            .collect();
        assert_eq!(rounds, [0, 1, 2], "sender {from}");
    }
}
