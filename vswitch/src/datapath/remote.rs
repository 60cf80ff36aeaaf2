//! The driver's side of the tunnel: datagrams out (frames, offloaded
//! super-frames and flow state, as the core's actions say) and in (each
//! classified by the core: delivered to local ports without simulating it
//! again, handed to a VTEP port, or state for the core).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::from_vtep::FromVteps;
use super::{Datapath, Scratch};
use crate::core::{self, Arrival, Peer, TunnelTag};
use crate::io::{
    frame_prefix, gather, parse_chunk, parse_offloaded, Datagrams, PiecePlan, PortIo, Reassembly,
    RxBatch, TxBatch, VnetHeader, OFFLOAD_KEY, OFFLOAD_PREAMBLE, VXLAN_AT,
};
use crate::snapshot::Topology;
use crate::tunnel::STATE_KEY;
use crate::wire::{Vni, VxlanPacket, VXLAN_HEADER_LEN};

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
        let sender = tunnel.sender(datagrams.lane());
        let first = datagrams.len();
        if vnet.is_gso()
            && self.chunk_offloads.load(Ordering::Relaxed)
            && self.reads_pieces(peer.ip)
        {
            if let Some(plan) = PiecePlan::new(frame.len(), tunnel.max_ip_len()) {
                // What is queued goes first (state before the frames
                // that depend on it), then the pieces, straight from `frame`.
                self.flush_remote(datagrams);
                datagrams.clear();
                let id = self.next_offload_id.fetch_add(1, Ordering::Relaxed);
                let prefix = frame_prefix(key, vnet);
                let mark = mark.map(|m| (m.seq, m.request_byte));
                match sender.send_pieces(dest, &plan, id, &prefix, frame, mark) {
                    Ok(()) => {
                        self.offloads_sent.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    // The underlay takes no UDP_SEGMENT sends of this size
                    // (a path MTU below the configured one, an old kernel,
                    // IPsec): whole datagrams from now on, this one too.
                    Err(error) if crate::io::refuses_segments(&error) => {
                        if self.chunk_offloads.swap(false, Ordering::Relaxed) {
                            tracing::warn!(%error, "the tunnel refused super-frames in pieces; sending them whole from now on");
                        }
                    }
                    Err(_) => {
                        self.count("tunnel_send_failed");
                        return;
                    }
                }
            }
        }
        let offloaded = vnet.is_gso() && datagrams.push_offloaded(dest, key, vnet, frame);
        if offloaded {
            self.offloads_sent_whole.fetch_add(1, Ordering::Relaxed);
        } else {
            let Some(vni) = Vni::new(key) else { return };
            let max_ip_len = tunnel.max_ip_len();
            match datagrams.push_frame(dest, vni, vnet, frame, max_ip_len) {
                // Frames of one size to one agent leave together (a marked
                // one alone: its mark is for it only).
                Ok(1) if mark.is_none() && !sender.segments_refused() => {
                    datagrams.coalesce_last(max_ip_len + VXLAN_HEADER_LEN + 14);
                }
                Ok(_) => {}
                Err(error) => self.count(error.name()),
            }
        }
        if let Some(mark) = mark {
            datagrams.mark_from(first, mark.seq, mark.request_byte);
        }
        self.flush_full(datagrams);
    }

    /// Queues a flow-state message for `peer`, flagged to say that this
    /// agent reads super-frames in pieces (unless it is set not to).
    pub(super) fn push_state(&self, datagrams: &mut Datagrams, peer: Peer, message: &[u8]) {
        let (Some(tunnel), Some(vni)) = (self.tunnel.get(), Vni::new(STATE_KEY)) else {
            return;
        };
        datagrams.push_raw(tunnel.peer(peer.ip), vni, message);
        if self.announces_pieces {
            datagrams.flag_last_reads_pieces();
        }
        self.flush_full(datagrams);
    }

    /// Whether the agent at `ip` said it reads super-frames in pieces.
    fn reads_pieces(&self, ip: std::net::IpAddr) -> bool {
        self.peers_with_pieces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ip)
    }

    /// Notes what a flow-state datagram from the agent at `ip` says about
    /// pieces (an agent from before them sends no flag: whole datagrams).
    pub(super) fn note_pieces(&self, ip: std::net::IpAddr, reads: bool) {
        if self.reads_pieces(ip) == reads {
            return;
        }
        let mut peers = self
            .peers_with_pieces
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if reads {
            peers.insert(ip);
        } else {
            peers.remove(&ip);
        }
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
            let sent = tunnel.sender(datagrams.lane()).send(datagrams);
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
    pub(super) fn receive_state(
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

/// What the receive loop keeps for datagrams handled one by one (those
/// the kernel coalesced, and pieces): the frames being put back together,
/// and where the frames go.
#[derive(Default)]
pub(super) struct OneByOne {
    pub(super) reassembly: Reassembly,
    pub(super) out: Outgoing,
}

/// Where the receive loop puts frames before they go on: copies waiting
/// to go out of a local port, and frames from standard VTEPs waiting to
/// be decided.
pub(super) struct Outgoing {
    pub(super) copies: Copies,
    pub(super) vteps: FromVteps,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            copies: Copies {
                port: None,
                batch: TxBatch::with_max_frame_len(COPY_BATCH, COPY_FRAME_LEN),
            },
            vteps: FromVteps::default(),
        }
    }
}

/// Frames per batch of copies to one port.
const COPY_BATCH: usize = 64;
/// The largest frame batched (larger ones are sent alone).
const COPY_FRAME_LEN: usize = 2048;

/// Copies of received frames for one local port, sent together
/// (`sendmmsg`) when the port changes, the batch fills or the receive
/// batch ends.
pub(super) struct Copies {
    port: Option<Uuid>,
    batch: TxBatch,
}

/// Where a datagram came from: its source, and whether that is another
/// agent (a registered host) rather than an external VXLAN endpoint.
#[derive(Clone, Copy)]
pub(super) struct Arrived {
    pub(super) source: SocketAddr,
    pub(super) agent: bool,
}

impl Datapath {
    /// Sends the receive slots queued for each local port (without
    /// copying) and forgets them.
    pub(super) fn send_slots(&self, rx: &RxBatch, sends: &mut HashMap<Uuid, Vec<usize>>) {
        for (port, which) in sends.iter_mut().filter(|(_, w)| !w.is_empty()) {
            let Some(out) = self.port(*port) else {
                self.count("tunnel_port_not_attached");
                which.clear();
                continue;
            };
            let mut done = 0;
            while done < which.len() {
                match out.io.send_rx(rx, &which[done..]) {
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
            which.clear();
        }
    }
}

/// Whether `datagram` (VXLAN header first) is a piece of a super-frame
/// another agent sent in pieces (see `io::chunk`).
pub(super) fn is_chunk(datagram: &[u8]) -> bool {
    let vni = VxlanPacket::new_checked(datagram).map(|p| p.vni().get());
    vni == Ok(OFFLOAD_KEY) && parse_chunk(&datagram[VXLAN_HEADER_LEN..]).is_some()
}

impl Datapath {
    /// Handles one datagram that does not have a receive slot of its own
    /// (one of several the kernel coalesced, or a piece of a super-frame):
    /// delivered by copy, a frame at a time. Pieces go to `reassembly`,
    /// and the frame they complete to its ports.
    pub(super) fn receive_one(
        &self,
        topo: &Topology,
        Arrived { source, agent }: Arrived,
        datagram: &[u8],
        one_by_one: &mut OneByOne,
        scratch: &mut Scratch,
    ) {
        let (vni, mark, pieces) = match VxlanPacket::new_checked(datagram) {
            Ok(packet) => (
                packet.vni().get(),
                packet.trace_mark(),
                packet.reads_pieces(),
            ),
            Err(_) => {
                self.count("tunnel_malformed");
                return;
            }
        };
        let inner = &datagram[VXLAN_HEADER_LEN..];
        let OneByOne { reassembly, out } = one_by_one;
        if vni == STATE_KEY && agent {
            self.note_pieces(source.ip(), pieces);
        }
        if vni != OFFLOAD_KEY || !agent {
            let arrival = (source, vni, &VnetHeader::NONE);
            self.deliver_one(topo, arrival, inner, mark, out, scratch);
            return;
        }
        if let Some(chunk) = parse_chunk(inner) {
            if let Some(done) = reassembly.push(source, chunk) {
                self.offloads_received.fetch_add(1, Ordering::Relaxed);
                let arrival = (source, done.key, &done.vnet);
                self.deliver_one(topo, arrival, done.frame, mark, out, scratch);
            }
            return;
        }
        // A whole offloaded frame coalesced with others.
        match parse_offloaded(inner) {
            Some((key, vnet)) => {
                self.offloads_received_whole.fetch_add(1, Ordering::Relaxed);
                let frame = &inner[OFFLOAD_PREAMBLE..];
                self.deliver_one(topo, (source, key, &vnet), frame, mark, out, scratch);
            }
            None => self.count("tunnel_malformed_offload"),
        }
    }

    /// Delivers the super-frame whose pieces fill slots `i..` of a receive
    /// batch (`rx`, each slot's sender and datagram size), all from one
    /// agent, straight from the slots (`io::gather`), if they hold the
    /// whole frame and its ports all take gathered frames. Returns how
    /// many slots it took: 0 if none (they go through reassembly).
    pub(super) fn deliver_gathered(
        &self,
        topo: &Topology,
        (rx, sources, segments): (&RxBatch, &[SocketAddr], &[usize]),
        i: usize,
        copies: &mut Copies,
    ) -> usize {
        let source = sources[i];
        let slots = (i..sources.len())
            .take_while(|&j| sources[j] == source)
            .map_while(|j| {
                let datagrams = &rx.wire(j)?[VXLAN_AT..];
                let size = segments.get(j).copied().filter(|&s| s > 0);
                Some((datagrams, size.unwrap_or(datagrams.len())))
            });
        let Some(frame) = gather(slots) else {
            return 0;
        };
        let Arrival::Deliver(ports) = core::classify(topo, self.host(), source, frame.key) else {
            return 0;
        };
        let gathers = |port: &Uuid| self.port(*port).is_some_and(|out| out.io.gathers());
        if !ports.iter().all(gathers) {
            return 0;
        }
        // Copies queued before these slots go first.
        self.flush_copies(copies);
        let len = frame.len();
        for port in ports {
            let Some(out) = self.port(*port) else {
                continue;
            };
            match out.io.try_send_parts(&frame.vnet, frame.parts()) {
                Ok(()) => out.counters.sent(1, len),
                Err(_) => {
                    out.counters.drops.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.offloads_received.fetch_add(1, Ordering::Relaxed);
        self.offloads_gathered.fetch_add(1, Ordering::Relaxed);
        frame.slots
    }

    /// Delivers one frame that arrived from `source` on `key` with offload
    /// header `vnet` (see [`core::classify`]), by copy.
    fn deliver_one(
        &self,
        topo: &Topology,
        (source, key, vnet): (SocketAddr, u32, &VnetHeader),
        frame: &[u8],
        mark: Option<(u32, u8)>,
        out: &mut Outgoing,
        scratch: &mut Scratch,
    ) {
        match core::classify(topo, self.host(), source, key) {
            Arrival::Deliver(ports) => {
                for port in ports {
                    self.send_copy(&mut out.copies, *port, vnet, frame);
                }
                self.trace_delivered(topo, source, mark, ports);
            }
            Arrival::FromVtep(port) => self.queue_vtep_frame(&mut out.vteps, port, frame),
            Arrival::State => self.receive_state(topo, source, frame, scratch),
            Arrival::Drop(reason) => self.count(reason.name()),
        }
    }

    /// Publishes the delivery to `ports` of a traced frame (`mark`) that
    /// came from `source`.
    pub(super) fn trace_delivered(
        &self,
        topo: &Topology,
        source: SocketAddr,
        mark: Option<(u32, u8)>,
        ports: &[Uuid],
    ) {
        if let Some((seq, request_byte)) = mark {
            let from = topo.tunnel.hosts_by_ip.get(&source.ip()).copied();
            let tag = TunnelTag { request_byte, seq };
            for event in self.core.trace_delivery(from, tag, ports) {
                self.publish_trace(event);
            }
        }
    }

    /// Queues a copy of `frame` with offload header `vnet` for a local
    /// port (sent with the port's other copies), or sends it now if too
    /// big to batch.
    fn send_copy(&self, copies: &mut Copies, port: Uuid, vnet: &VnetHeader, frame: &[u8]) {
        if copies.port != Some(port) || copies.batch.is_full() {
            self.flush_copies(copies);
            copies.port = Some(port);
        }
        if frame.len() <= copies.batch.max_frame_len() && copies.batch.push(vnet, frame) {
            return;
        }
        // Too big to batch: after the port's queued copies, alone.
        self.flush_copies(copies);
        let Some(out) = self.port(port) else {
            self.count("tunnel_port_not_attached");
            return;
        };
        match out.io.try_send(vnet, frame) {
            Ok(()) => out.counters.sent(1, frame.len()),
            Err(_) => {
                out.counters.drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends the queued copies out of their port.
    pub(super) fn flush_copies(&self, copies: &mut Copies) {
        let Some(port) = copies.port.filter(|_| !copies.batch.is_empty()) else {
            copies.batch.clear();
            return;
        };
        let Some(out) = self.port(port) else {
            self.count("tunnel_port_not_attached");
            copies.batch.clear();
            return;
        };
        while !copies.batch.is_empty() {
            let before = copies.batch.len();
            match out.io.try_send_batch(&mut copies.batch) {
                Ok(sent) => out.counters.sent(sent, 0),
                // A frame the port refused is dropped from the batch.
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                    out.counters.drops.fetch_add(1, Ordering::Relaxed);
                }
                // The port is full: the rest are lost, as on a busy link.
                Err(_) => {
                    let lost = copies.batch.len() as u64;
                    out.counters.drops.fetch_add(lost, Ordering::Relaxed);
                    copies.batch.clear();
                }
            }
            if copies.batch.len() == before {
                break;
            }
        }
        copies.batch.clear();
    }
}
