//! The driver's side of the tunnel: datagrams out (frames, offloaded
//! super-frames and flow state, as the core's actions say) and in (each
//! classified by the core: delivered to local ports without simulating it
//! again, handed to a VTEP port, or state for the core).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uuid::Uuid;

use super::{Datapath, Scratch};
use crate::core::{self, Arrival, Peer, TunnelTag};
use crate::io::{
    parse_offloaded, Datagrams, Port, PortIo, RxBatch, VnetHeader, OFFLOAD_KEY, OFFLOAD_PREAMBLE,
    VXLAN_AT,
};
use crate::snapshot::Topology;
use crate::tunnel::{Tunnel, STATE_KEY};
use crate::wire::{Vni, VxlanPacket};

/// Queued datagrams are sent once this many wait (one `sendmmsg`).
const FLUSH_AT: usize = 64;

impl Datapath {
    /// Queues `frame` for `peer` on `key`: an offloaded super-frame whole,
    /// anything else checksummed and segmented to fit the tunnel; every
    /// datagram of it carries the live trace `mark`, if given.
    pub(super) fn push_tunnel(
        &self,
        datagrams: &mut Datagrams,
        peer: Peer,
        key: u32,
        vnet: &VnetHeader,
        frame: &[u8],
        mark: Option<TunnelTag>,
    ) {
        let Some(tunnel) = self.tunnel.get() else {
            self.count("tunnel_unavailable");
            return;
        };
        let dest = tunnel.peer(peer.ip);
        let first = datagrams.len();
        if !(vnet.is_gso() && datagrams.push_offloaded(dest, key, vnet, frame)) {
            let Some(vni) = Vni::new(key) else { return };
            let max_ip_len = tunnel.max_ip_len();
            if let Err(error) = datagrams.push_frame(dest, vni, vnet, frame, max_ip_len) {
                self.count(error.name());
            }
        }
        if let Some(mark) = mark {
            datagrams.mark_from(first, mark.seq, mark.request_byte);
        }
        self.flush_full(datagrams);
    }

    /// Queues a flow-state message for `peer`.
    pub(super) fn push_state(&self, datagrams: &mut Datagrams, peer: Peer, message: &[u8]) {
        let (Some(tunnel), Some(vni)) = (self.tunnel.get(), Vni::new(STATE_KEY)) else {
            return;
        };
        datagrams.push_raw(tunnel.peer(peer.ip), vni, message);
        self.flush_full(datagrams);
    }

    fn flush_full(&self, datagrams: &mut Datagrams) {
        if datagrams.len() >= FLUSH_AT {
            self.flush_remote(datagrams);
            datagrams.clear();
        }
    }

    /// Sends the queued tunnel datagrams.
    pub(super) fn flush_remote(&self, datagrams: &Datagrams) {
        if datagrams.is_empty() {
            return;
        }
        if let Some(tunnel) = self.tunnel.get() {
            let sent = tunnel.socket().send(datagrams);
            for _ in sent..datagrams.len() {
                self.count("tunnel_send_failed");
            }
        }
    }

    /// Asks every other live host for the flow state it holds (see
    /// [`core::DatapathCore::request_sync`]).
    pub fn request_sync(&self) {
        self.decide(|core, topology, _, actions| core.request_sync(topology, actions));
    }

    /// Hands a state message from `source` to the core and performs what
    /// it answers (released frames, a sync answer).
    fn receive_state(
        &self,
        topology: &Topology,
        source: SocketAddr,
        message: &[u8],
        scratch: &mut Scratch,
    ) {
        let now = self.now_ms();
        let answered =
            self.core
                .receive_state(topology, source, message, now, &mut scratch.actions);
        if answered {
            self.count("tunnel_sync_answered");
        }
        self.perform(scratch, None);
    }
}

/// Receives on the tunnel until the socket fails.
pub async fn serve_tunnel(datapath: Arc<Datapath>, tunnel: Arc<Tunnel>) -> std::io::Result<()> {
    // Slots hold 64 KiB: a kernel VXLAN device on this machine may hand its
    // underlay whole TCP super-frames (see `io::offload_of_received`).
    let mut rx = RxBatch::new(64);
    let mut sources = Vec::with_capacity(64);
    let mut sends: HashMap<Uuid, Vec<usize>> = HashMap::new();
    let mut scratch = Scratch::default();
    loop {
        let n = tunnel.socket().recv_batch(&mut rx, &mut sources).await?;
        if n == 0 {
            continue;
        }
        let topo = datapath.topology();
        let host = datapath.host();
        for list in sends.values_mut() {
            list.clear();
        }
        for (i, source) in sources.iter().enumerate().take(n) {
            let (vni, mark) = match rx.wire(i).map(|w| VxlanPacket::new_checked(&w[VXLAN_AT..])) {
                Some(Ok(packet)) => (packet.vni().get(), packet.trace_mark()),
                _ => {
                    datapath.count("tunnel_malformed");
                    continue;
                }
            };
            rx.set_vnet(i, &VnetHeader::NONE);
            let mut vni = vni;
            if vni == OFFLOAD_KEY && topo.tunnel.hosts_by_ip.contains_key(&source.ip()) {
                // A super-frame another agent sent whole: unwrap it and
                // deliver it with its offload header.
                let Some((key, vnet)) = parse_offloaded(rx.frame(i)) else {
                    datapath.count("tunnel_malformed_offload");
                    continue;
                };
                rx.strip_front(i, OFFLOAD_PREAMBLE, &vnet);
                vni = key;
            }
            match core::classify(&topo, host, *source, vni) {
                Arrival::Deliver(ports) => {
                    for port in ports {
                        sends.entry(*port).or_default().push(i);
                    }
                    if let Some((seq, request_byte)) = mark {
                        let from = topo.tunnel.hosts_by_ip.get(&source.ip()).copied();
                        let tag = TunnelTag { request_byte, seq };
                        for event in datapath.core.trace_delivery(from, tag, ports) {
                            datapath.publish_trace(event);
                        }
                    }
                }
                Arrival::FromVtep(port) => match datapath.port(port) {
                    Some(handle) => match &handle.io {
                        Port::Vtep(vtep) if vtep.deliver(rx.frame(i)) => {}
                        _ => datapath.count("tunnel_vtep_queue_full"),
                    },
                    None => datapath.count("tunnel_vtep_not_attached"),
                },
                Arrival::State => {
                    datapath.receive_state(&topo, *source, rx.frame(i), &mut scratch);
                }
                Arrival::Drop(reason) => datapath.count(reason.name()),
            }
        }
        for (port, which) in sends.iter().filter(|(_, w)| !w.is_empty()) {
            let Some(out) = datapath.port(*port) else {
                datapath.count("tunnel_port_not_attached");
                continue;
            };
            let mut done = 0;
            while done < which.len() {
                match out.io.send_rx(&rx, &which[done..]) {
                    Ok(k) if k > 0 => {
                        let bytes = rx.bytes_of(which[done..done + k].iter().copied());
                        out.counters.sent(k, bytes);
                        done += k;
                    }
                    _ => {
                        out.counters.drops.fetch_add(1, Ordering::Relaxed);
                        done += 1;
                    }
                }
            }
        }
        datapath.finish(&mut scratch);
    }
}
