//! The tunnel's receiving side: a [`TunnelReceiver`] per receiving socket,
//! served by a task of its own, or by the poller while it polls every
//! port (`--poll-mode always`), so that frames from other hosts wait for
//! no wakeup either. Each datagram is classified by the core: delivered
//! to local ports without simulating it again (from the receive slot, or
//! gathered or reassembled from pieces), decided as a VTEP port's frames
//! (`from_vtep.rs`), or state for the core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::remote::{is_chunk, Arrived, OneByOne};
use super::{Datapath, PortPoll, Scratch};
use crate::core::{self, Arrival};
use crate::io::{
    parse_offloaded, RxBatch, TunnelSocket, VnetHeader, OFFLOAD_KEY, OFFLOAD_PREAMBLE, VXLAN_AT,
};
use crate::tunnel::Tunnel;
use crate::wire::VxlanPacket;

/// One of the tunnel's receiving sockets, with what receiving from it
/// keeps between batches.
pub struct TunnelReceiver {
    socket: Arc<TunnelSocket>,
    /// Who receives from it: its task or the poller.
    pub(super) poll: PortPoll,
    state: Mutex<Receiving>,
}

/// A receiving socket's batch and the state it carries across batches.
struct Receiving {
    rx: RxBatch,
    sources: Vec<SocketAddr>,
    segments: Vec<usize>,
    sends: HashMap<Uuid, Vec<usize>>,
    scratch: Scratch,
    one_by_one: OneByOne,
}

impl TunnelReceiver {
    /// A receiver for `socket`; what it answers leaves through `lane`.
    fn new(socket: Arc<TunnelSocket>, lane: usize) -> TunnelReceiver {
        let mut scratch = Scratch::default();
        scratch.datagrams.set_lane(lane);
        TunnelReceiver {
            socket,
            poll: PortPoll::default(),
            state: Mutex::new(Receiving {
                // Slots hold 64 KiB: a kernel VXLAN device on this machine
                // may hand its underlay whole TCP super-frames (see
                // `io::offload_of_received`).
                rx: RxBatch::new(64),
                sources: Vec::with_capacity(64),
                segments: Vec::with_capacity(64),
                sends: HashMap::new(),
                scratch,
                one_by_one: OneByOne::default(),
            }),
        }
    }
}

/// Receives on the tunnel's receiving socket `k` for good (a task per
/// socket; what they answer leaves through sending lane `k`). While the
/// poller has the socket, the task waits. It goes on after an error: the
/// socket stays in the group, and the kernel keeps steering senders to it.
pub async fn serve_tunnel(datapath: Arc<Datapath>, tunnel: Arc<Tunnel>, k: usize) {
    let receiver = Arc::new(TunnelReceiver::new(tunnel.receivers()[k].clone(), k));
    datapath
        .tunnel_receivers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(receiver.clone());
    loop {
        receiver.poll.wait_cold().await;
        let served = match receiver.socket.readable().await {
            Ok(()) if receiver.poll.is_hot() => continue,
            Ok(()) => datapath.serve_tunnel_ready(&receiver),
            Err(error) => Err(error),
        };
        if let Err(error) = served {
            tracing::error!(%error, socket = k, "a tunnel socket failed to receive; going on");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Datapath {
    /// The tunnel's receivers (for the poller).
    pub(super) fn tunnel_receivers(&self) -> Vec<Arc<TunnelReceiver>> {
        self.tunnel_receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Receives one batch from `receiver`'s socket without waiting and
    /// handles it, unless someone else is receiving from it (`Ok(0)`).
    pub(super) fn serve_tunnel_ready(&self, receiver: &TunnelReceiver) -> std::io::Result<usize> {
        if !receiver.poll.try_serve() {
            return Ok(0);
        }
        let mut state = receiver.state.lock().unwrap_or_else(|p| p.into_inner());
        let Receiving {
            rx,
            sources,
            segments,
            ..
        } = &mut *state;
        let received = receiver.socket.try_recv_batch(rx, sources, segments);
        if let Ok(n) = received {
            if n > 0 {
                self.handle_tunnel_batch(&mut state, n);
            }
        }
        drop(state);
        receiver.poll.served();
        received
    }

    /// Classifies and delivers the `n` datagrams just received.
    fn handle_tunnel_batch(&self, state: &mut Receiving, n: usize) {
        let Receiving {
            rx,
            sources,
            segments,
            sends,
            scratch,
            one_by_one,
        } = state;
        let (sources, segments) = (&*sources, &*segments);
        let topo = self.topology();
        let host = self.host();
        for list in sends.values_mut() {
            list.clear();
        }
        // Slots that a frame gathered from them took (see below).
        let mut taken = 0;
        for (i, source) in sources.iter().enumerate().take(n) {
            if taken > 0 {
                taken -= 1;
                continue;
            }
            let Some(wire) = rx.wire(i) else { continue };
            let datagrams = &wire[VXLAN_AT..];
            if segments[i] > 0 || is_chunk(datagrams) {
                // Several datagrams in one slot (UDP GRO), or a piece of a
                // super-frame: each on its own, delivered by copy, after
                // the slots before it (a port's frames keep their order).
                self.send_slots(rx, sends);
                let size = if segments[i] > 0 {
                    segments[i]
                } else {
                    datagrams.len()
                };
                let from = Arrived {
                    source: *source,
                    agent: topo.tunnel.hosts_by_ip.contains_key(&source.ip()),
                };
                // A whole super-frame in pieces, here and in the next
                // slots: sent from where it lies, not put back together.
                if from.agent {
                    let used = self.deliver_gathered(
                        &topo,
                        (rx, &sources[..n], segments),
                        i,
                        &mut one_by_one.out.copies,
                    );
                    if used > 0 {
                        taken = used - 1;
                        continue;
                    }
                }
                for datagram in datagrams.chunks(size) {
                    self.receive_one(&topo, from, datagram, one_by_one, scratch);
                }
                continue;
            }
            let (vni, mark, pieces) =
                match rx.wire(i).map(|w| VxlanPacket::new_checked(&w[VXLAN_AT..])) {
                    Some(Ok(packet)) => (
                        packet.vni().get(),
                        packet.trace_mark(),
                        packet.reads_pieces(),
                    ),
                    _ => {
                        self.count("tunnel_malformed");
                        continue;
                    }
                };
            rx.set_vnet(i, &VnetHeader::NONE);
            let mut vni = vni;
            if vni == OFFLOAD_KEY && topo.tunnel.hosts_by_ip.contains_key(&source.ip()) {
                // A super-frame another agent sent whole: unwrap it and
                // deliver it with its offload header.
                let Some((key, vnet)) = parse_offloaded(rx.frame(i)) else {
                    self.count("tunnel_malformed_offload");
                    continue;
                };
                rx.strip_front(i, OFFLOAD_PREAMBLE, &vnet);
                self.offloads_received_whole.fetch_add(1, Ordering::Relaxed);
                vni = key;
            }
            match core::classify(&topo, host, *source, vni) {
                Arrival::Deliver(ports) => {
                    // Copies queued before this slot go first.
                    self.flush_copies(&mut one_by_one.out.copies);
                    for port in ports {
                        sends.entry(*port).or_default().push(i);
                    }
                    self.trace_delivered(&topo, *source, mark, ports);
                }
                Arrival::FromVtep(port) => {
                    self.queue_vtep_frame(&mut one_by_one.out.vteps, port, rx.frame(i))
                }
                Arrival::State => {
                    self.note_pieces(source.ip(), pieces);
                    self.receive_state(&topo, *source, rx.frame(i), scratch);
                }
                Arrival::Drop(reason) => self.count(reason.name()),
            }
        }
        self.send_slots(rx, sends);
        self.flush_copies(&mut one_by_one.out.copies);
        self.finish_vtep_frames(&mut one_by_one.out.vteps);
        self.finish(scratch);
        for _ in 0..std::mem::take(&mut one_by_one.reassembly.lost) {
            self.count("tunnel_offload_piece_lost");
        }
    }
}
