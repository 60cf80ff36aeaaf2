//! Several hosts, each a core over the same topology, exchanging tunnel
//! datagrams through a simulated underlay on a simulated clock (the shape
//! of quinn's `Pair`/`drive`): no sockets, no threads, no real time. What a
//! core sends to a peer is classified at that peer as the agent's tunnel
//! receiver does it ([`classify`]), then delivered to its ports or handed
//! to its core as state.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::engine::frames::arp_reply;
use crate::engine::Learned;
use crate::tunnel::STATE_KEY;

/// One datagram in flight on the underlay.
struct Datagram {
    from: IpAddr,
    to: IpAddr,
    key: u32,
    frame: Vec<u8>,
    arrives: u64,
}

/// The hosts, the underlay between them and what left the virtual network.
struct Cluster {
    topo: Topology,
    cores: HashMap<Uuid, DatapathCore>,
    now: u64,
    /// One-way underlay delay.
    latency: u64,
    wire: VecDeque<Datagram>,
    /// Frames sent out of local ports, in order: (port, frame).
    delivered: Vec<(Uuid, Vec<u8>)>,
    /// Drops, by the host that counted them.
    drops: Vec<(Uuid, Reason)>,
    /// State messages are lost on the underlay (to show what they do).
    lose_state: bool,
}

impl Cluster {
    fn new(topo: Topology, hosts: &[Uuid]) -> Cluster {
        Cluster {
            topo,
            cores: hosts.iter().map(|h| (*h, core(*h))).collect(),
            now: 0,
            latency: 1,
            wire: VecDeque::new(),
            delivered: Vec::new(),
            drops: Vec::new(),
            lose_state: false,
        }
    }

    /// The pod behind `port` on `host` sends `frame`.
    fn send(&mut self, host: Uuid, port: Uuid, frame: &[u8]) -> Fate {
        let mut frame = frame.to_vec();
        let mut actions = Vec::new();
        let core = self.cores.get_mut(&host).expect("a host of the cluster");
        let fate = core.process(
            &self.topo,
            port,
            &mut frame,
            VnetHeader::NONE,
            self.now,
            &mut CoreScratch::default(),
            &mut actions,
        );
        self.perform(host, actions, &frame);
        fate
    }

    /// Does what `host`'s core decided; `received` is the frame it processed.
    fn perform(&mut self, host: Uuid, actions: Vec<Action>, received: &[u8]) {
        let from = host_ip(host);
        let arrives = self.now + self.latency;
        for action in actions {
            let (to, key, frame) = match action {
                Action::Forward(port) => {
                    self.delivered.push((port, received.to_vec()));
                    continue;
                }
                Action::Emit { port, frame } => {
                    self.delivered.push((port, frame));
                    continue;
                }
                Action::Tunnel { peer, key } => (peer.ip, key, received.to_vec()),
                Action::EmitTunnel { peer, key, frame } => (peer.ip, key, frame),
                Action::State { .. } if self.lose_state => continue,
                Action::State { peer, message } => (peer.ip, STATE_KEY, message),
                Action::Agent(_) | Action::Traced(_) => continue,
                Action::Drop(reason) => {
                    self.drops.push((host, reason));
                    continue;
                }
            };
            self.wire.push_back(Datagram {
                from,
                to,
                key,
                frame,
                arrives,
            });
        }
    }

    /// Moves datagrams until none is in flight; the clock follows them.
    fn drive(&mut self) {
        while let Some(datagram) = self.wire.pop_front() {
            self.now = self.now.max(datagram.arrives);
            let host = self.topo.tunnel.hosts_by_ip[&datagram.to];
            let source = SocketAddr::new(datagram.from, crate::tunnel::DEFAULT_PORT);
            match classify(&self.topo, host, source, datagram.key) {
                Arrival::Deliver(ports) => {
                    for port in ports {
                        self.delivered.push((*port, datagram.frame.clone()));
                    }
                }
                Arrival::State => {
                    let mut actions = Vec::new();
                    let core = self.cores.get_mut(&host).expect("a host of the cluster");
                    core.receive_state(&self.topo, source, &datagram.frame, self.now, &mut actions);
                    self.perform(host, actions, &[]);
                }
                Arrival::FromVtep(port) => panic!("no VTEP here, yet {port}"),
                Arrival::Drop(reason) => self.drops.push((host, reason)),
            }
        }
    }

    /// The frames delivered to `port` since the last call.
    fn take(&mut self, port: Uuid) -> Vec<Vec<u8>> {
        let (to_port, rest) = std::mem::take(&mut self.delivered)
            .into_iter()
            .partition(|(p, _)| *p == port);
        self.delivered = rest;
        to_port.into_iter().map(|(_, frame)| frame).collect()
    }

    /// `host`'s agent restarts: a fresh core, which asks its peers for the
    /// state it lost.
    fn restart(&mut self, host: Uuid) {
        self.cores.insert(host, core(host));
        let mut actions = Vec::new();
        self.cores[&host].request_sync(&self.topo, &mut actions);
        self.perform(host, actions, &[]);
    }
}

fn flags_of(frame: &[u8]) -> u8 {
    TcpPacket::new_checked(&frame[34..]).unwrap().flags().bits() as u8
}

/// A1 on H1 opens a TCP connection to B1 on H2, whose inbound chain lets
/// only established connections out: B1's answers enter on H2, where the
/// connection was never simulated, and pass because H1 shipped it ahead.
fn handshake(cluster: &mut Cluster) -> (Fate, Fate) {
    let syn = tcp(
        mac(1),
        mac(0xa1),
        "10.0.1.10",
        "10.0.2.10",
        &[TcpFlags::SYN],
        false,
    );
    let sent = cluster.send(H1, A1, &syn);
    cluster.drive();
    let answer = tcp(
        mac(3),
        mac(0xb1),
        "10.0.2.10",
        "10.0.1.10",
        &[TcpFlags::SYN, TcpFlags::ACK],
        true,
    );
    let answered = cluster.send(H2, B1, &answer);
    cluster.drive();
    (sent, answered)
}

#[test]
fn a_reply_entering_on_another_host_passes_on_the_state_shipped_ahead() {
    let mut cluster = Cluster::new(only_established_from(B1), &[H1, H2, H3]);
    assert_eq!(handshake(&mut cluster), (Fate::Sent, Fate::Sent));
    let at_b1 = cluster.take(B1);
    assert_eq!(at_b1.len(), 1, "the SYN crossed the tunnel");
    assert_eq!((flags_of(&at_b1[0]), ipv4(&at_b1[0]).ttl), (0x02, 63));
    let at_a1 = cluster.take(A1);
    assert_eq!(at_a1.len(), 1, "the SYN-ACK came back: {:?}", cluster.drops);
    assert_eq!(flags_of(&at_a1[0]), 0x12);

    // The rest of the connection, both ways, several times (the caches
    // serve it on both hosts).
    let ack = tcp(
        mac(1),
        mac(0xa1),
        "10.0.1.10",
        "10.0.2.10",
        &[TcpFlags::ACK],
        false,
    );
    let data = tcp(
        mac(3),
        mac(0xb1),
        "10.0.2.10",
        "10.0.1.10",
        &[TcpFlags::PSH, TcpFlags::ACK],
        true,
    );
    for _ in 0..3 {
        assert_eq!(cluster.send(H1, A1, &ack), Fate::Sent);
        assert_eq!(cluster.send(H2, B1, &data), Fate::Sent);
        cluster.drive();
    }
    assert_eq!(cluster.take(B1).len(), 3);
    assert_eq!(cluster.take(A1).len(), 3);
    assert!(cluster.cores[&H2].stats().flows.hits > 0);
    assert!(cluster.now > 0, "the clock followed the datagrams");

    // Nothing reached H3, which holds no port of the connection.
    assert_eq!(cluster.cores[&H3].stats().conns, 0);

    // Without the state messages the same answer is a new connection from
    // B1, which its chain drops.
    let mut lossy = Cluster::new(only_established_from(B1), &[H1, H2, H3]);
    lossy.lose_state = true;
    assert_eq!(handshake(&mut lossy), (Fate::Sent, Fate::Dropped));
    assert!(lossy.take(A1).is_empty());
    assert!(lossy
        .drops
        .contains(&(H2, Reason::Engine(DropReason::RuleDrop))));
}

#[test]
fn a_restarted_host_recovers_the_connections_its_peers_hold() {
    let mut cluster = Cluster::new(only_established_from(B1), &[H1, H2, H3]);
    handshake(&mut cluster);
    cluster.take(A1);
    let data = tcp(
        mac(3),
        mac(0xb1),
        "10.0.2.10",
        "10.0.1.10",
        &[TcpFlags::PSH, TcpFlags::ACK],
        true,
    );
    // H2 restarts and its sync requests are lost: B1's data is new to it.
    cluster.lose_state = true;
    cluster.restart(H2);
    cluster.drive();
    assert_eq!(cluster.send(H2, B1, &data), Fate::Dropped);
    cluster.lose_state = false;

    cluster.now += SYNC_INTERVAL_MS;
    cluster.restart(H2);
    cluster.drive();
    assert_eq!(cluster.cores[&H2].stats().conns, 1, "H1 answered with it");
    assert_eq!(cluster.send(H2, B1, &data), Fate::Sent);
    cluster.drive();
    assert_eq!(cluster.take(A1).len(), 1);

    // A second request within the interval is not answered again.
    cluster.restart(H2);
    cluster.drive();
    assert!(cluster.drops.contains(&(H1, Reason::TunnelSyncThrottled)));
}

#[test]
fn an_arp_answer_seen_on_one_host_releases_the_frame_held_on_another() {
    let mut cluster = Cluster::new(topology(), &[H1, H2, H3]);
    // A1 on H1 pings 10.0.2.20, behind B2 on H3, which no host has resolved.
    let echo = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.20");
    assert_eq!(cluster.send(H1, A1, &echo), Fate::Held);
    cluster.drive();
    assert_eq!(cluster.cores[&H1].stats().held_frames, 1);
    let asked = cluster.take(B2);
    assert_eq!(asked.len(), 1, "the router's ARP request reached B2");
    assert_eq!(cluster.take(B1).len(), 1, "and B1: it floods bridge B");

    // B2 answers the router. H3 simulates it, learns the answer and ships
    // it to every live host; H1 imports it and lets the ping go.
    cluster.now += 100;
    let answer = arp_reply(
        mac(5),
        "10.0.2.20".parse().unwrap(),
        mac(0xb1),
        "10.0.2.1".parse().unwrap(),
    );
    cluster.send(H3, B2, &answer);
    cluster.drive();
    assert_eq!(cluster.cores[&H1].stats().held_frames, 0);
    let at_b2 = cluster.take(B2);
    assert_eq!(at_b2.len(), 1, "{:?}", cluster.drops);
    assert_eq!(
        (&at_b2[0][..6], &at_b2[0][6..12]),
        (&mac(5)[..], &mac(0xb1)[..])
    );
    assert_eq!(ipv4(&at_b2[0]).ttl, 63);
    assert_eq!(
        cluster.cores[&H2].with_learned(|l| l.arp(ROUTER, "10.0.2.20".parse().unwrap())),
        Some(mac(5)),
        "every live host learned it"
    );

    // B2 reaches A1 straight away; H1's next ping needs no ARP.
    let back = ping(mac(5), mac(0xb1), "10.0.2.20", "10.0.1.10");
    assert_eq!(cluster.send(H3, B2, &back), Fate::Sent);
    assert_eq!(cluster.send(H1, A1, &echo), Fate::Sent);
    cluster.drive();
    assert_eq!(cluster.take(A1).len(), 1);
    assert_eq!(cluster.take(B2).len(), 1);
}
