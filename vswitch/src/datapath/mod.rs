//! The datapath's driver: frames in from bound ports and the tunnel,
//! decisions from the [`DatapathCore`], frames out.
//!
//! Each bound port has a receive task that waits for frames without holding
//! any buffer, then borrows a [`Workspace`] (receive buffers and scratch)
//! from a pool shared by all ports, reads a batch, hands every frame
//! to the core (a cache hit costs a parse, a hash lookup and an in-place
//! rewrite; a miss runs [`crate::engine::simulate`]), performs the actions
//! the core returns, and sends each egress port its frames in one batch
//! straight out of the receive buffers, offload headers included. Nothing
//! on the hit path allocates: the borrow lasts from the receive to the end
//! of the batch, with no await in between, so the pool holds at most about
//! one workspace per worker thread, however many ports are bound. The driver owns the I/O (ports, tunnel
//! socket, counters) and the clock; the core owns every decision and its
//! state, and forwards cached flows on every worker at once (see
//! `docs/datapath-core.md`, Concurrency).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use uuid::Uuid;

use crate::core::{Action, CoreStats, DatapathCore, Fate, LiveTraceEvent, TraceEventKind};
use crate::engine::Tag;
use crate::feed::SharedTopology;
use crate::flows::FlowStats;
use crate::io::{Port, PortIo, RxBatch, VnetHeader};
use crate::snapshot::Topology;
use crate::tunnel::Tunnel;

mod from_vtep;
mod local;
mod metrics;
mod poller;
mod queues;
mod remote;
mod send;
mod shared;
mod tunnel_rx;
mod workspace;

pub use crate::core::FLOW_IDLE_MS;
pub use poller::{PollMode, PortPoll};
pub use shared::PacketSockets;
pub use tunnel_rx::{serve_tunnel, TunnelReceiver};
#[cfg(test)]
pub(crate) use workspace::PortSends;
pub(crate) use workspace::WorkspacePool;
pub use workspace::{Scratch, Workspace};

/// Counters of one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx: AtomicU64,
    /// Bytes received (frames as the port gave them, offloaded ones whole).
    pub rx_bytes: AtomicU64,
    /// Frames sent.
    pub tx: AtomicU64,
    /// Bytes sent.
    pub tx_bytes: AtomicU64,
    /// Frames received and dropped.
    pub drops: AtomicU64,
    /// Frames received and answered by a device instead of forwarded
    /// (ARP, ICMP echo or errors): not drops.
    pub answered: AtomicU64,
    /// Frames received and held (for an ARP answer or a first fragment).
    pub held: AtomicU64,
}

impl PortCounters {
    /// Counts `frames` frames of `bytes` bytes sent.
    pub fn sent(&self, frames: usize, bytes: usize) {
        self.tx.fetch_add(frames as u64, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// A bound port: its I/O and counters.
#[derive(Debug)]
pub struct PortHandle {
    /// The NSDB port.
    pub id: Uuid,
    /// The interface.
    pub io: Port,
    /// Counters.
    pub counters: PortCounters,
    /// Who receives from it: its task or the poller.
    pub poll: PortPoll,
    /// Which of the tunnel's sending sockets carries what it sends
    /// (given out in turn: [`Datapath::next_lane`]).
    pub lane: usize,
}

impl PortHandle {
    /// Whether the port's interface is still the one it opened: a port of
    /// the shared sockets checks by name; any other port's task ends when
    /// its interface goes, so it is always current.
    pub fn is_current(&self) -> bool {
        match &self.io {
            Port::Shared(port) => port.is_current(),
            _ => true,
        }
    }
}

/// The datapath of one host.
pub struct Datapath {
    host: Uuid,
    topology: Arc<SharedTopology>,
    core: DatapathCore,
    ports: RwLock<HashMap<Uuid, Arc<PortHandle>>>,
    drops: Mutex<HashMap<&'static str, u64>>,
    started: Instant,
    tunnel: OnceLock<Arc<Tunnel>>,
    /// Frames routers handed to this agent (answers to its health probes).
    local: Mutex<Vec<Vec<u8>>>,
    /// Wakes the taker of `local`.
    local_ready: tokio::sync::Notify,
    /// Receive buffers and scratch lent to port tasks for one batch.
    workspaces: WorkspacePool,
    /// The busy-polling thread, when started.
    poller: poller::Poller,
    /// Frames the core made (device answers, released frames) and sent
    /// out of a local port.
    generated: AtomicU64,
    /// Where live trace events go (the agent's publisher), once set.
    trace_sink: OnceLock<tokio::sync::mpsc::Sender<LiveTraceEvent>>,
    /// Whether super-frames go to other agents in wire-sized pieces
    /// (`io::chunk`); off (`PLEXUS_TUNNEL_OFFLOAD=datagram`, or after the
    /// underlay refused a piece send): as one datagram the underlay
    /// fragments, which agents before the pieces read.
    chunk_offloads: std::sync::atomic::AtomicBool,
    /// Whether this agent's flow-state datagrams say it reads pieces; not
    /// with `PLEXUS_TUNNEL_OFFLOAD=datagram`, so its tunnel carries
    /// super-frames whole both ways, as an agent before pieces.
    announces_pieces: bool,
    /// Other agents (by tunnel address) whose flow-state datagrams said
    /// they read super-frames in pieces; the others get whole datagrams,
    /// which every agent reads.
    peers_with_pieces: RwLock<std::collections::HashSet<std::net::IpAddr>>,
    /// The id of the next super-frame sent in pieces.
    next_offload_id: std::sync::atomic::AtomicU32,
    /// The tunnel lane the next port gets.
    next_lane: std::sync::atomic::AtomicUsize,
    /// The tunnel's receivers, as their tasks start (for the poller).
    tunnel_receivers: std::sync::Mutex<Vec<Arc<TunnelReceiver>>>,
    /// Super-frames sent to other agents in pieces.
    offloads_sent: AtomicU64,
    /// Super-frames put back together from other agents' pieces.
    offloads_received: AtomicU64,
    /// Of those, the ones sent on straight from the receive slots.
    offloads_gathered: AtomicU64,
    /// Super-frames sent whole (one datagram the underlay fragments).
    offloads_sent_whole: AtomicU64,
    /// Super-frames another agent sent whole, received.
    offloads_received_whole: AtomicU64,
    /// UDP datagrams that left inside another's GSO frame (`io::coalesce`).
    udp_merged: AtomicU64,
    /// TCP segments that left inside another's GSO frame (`io::coalesce`).
    tcp_merged: AtomicU64,
    /// Whether small UDP datagrams are merged: off with `PLEXUS_GRO=off`,
    /// or once a port refused a merged UDP frame (kernels before 6.2 take
    /// no UDP GSO from AF_PACKET).
    merge_udp: std::sync::atomic::AtomicBool,
    /// Whether TCP segments are merged: off with `PLEXUS_GRO=off`, or
    /// once a port refused a merged frame of TCP segments alone.
    merge_tcp: std::sync::atomic::AtomicBool,
    /// Ports served through the shared packet sockets.
    shared: shared::SharedServing,
    /// Extra receive queues of each veth port opened with a socket of its own.
    port_queues: std::sync::atomic::AtomicUsize,
    /// Frames received by ports' extra queues.
    queue_frames: AtomicU64,
}

impl Datapath {
    /// A datapath for `host` over the topology `topology` keeps current.
    pub fn new(host: Uuid, topology: Arc<SharedTopology>) -> Datapath {
        let pieces = std::env::var("PLEXUS_TUNNEL_OFFLOAD").as_deref() != Ok("datagram");
        let gro = std::env::var("PLEXUS_GRO").as_deref() != Ok("off");
        Datapath {
            host,
            topology,
            core: DatapathCore::new(host),
            ports: RwLock::default(),
            drops: Mutex::default(),
            started: Instant::now(),
            tunnel: OnceLock::new(),
            local: Mutex::default(),
            local_ready: tokio::sync::Notify::new(),
            workspaces: WorkspacePool::default(),
            poller: poller::Poller::default(),
            generated: AtomicU64::new(0),
            trace_sink: OnceLock::new(),
            chunk_offloads: std::sync::atomic::AtomicBool::new(pieces),
            announces_pieces: pieces,
            peers_with_pieces: RwLock::default(),
            next_offload_id: std::sync::atomic::AtomicU32::new(0),
            next_lane: std::sync::atomic::AtomicUsize::new(0),
            tunnel_receivers: Default::default(),
            offloads_sent: AtomicU64::new(0),
            offloads_received: AtomicU64::new(0),
            offloads_gathered: AtomicU64::new(0),
            offloads_sent_whole: AtomicU64::new(0),
            offloads_received_whole: AtomicU64::new(0),
            udp_merged: AtomicU64::new(0),
            tcp_merged: AtomicU64::new(0),
            merge_udp: std::sync::atomic::AtomicBool::new(gro),
            merge_tcp: std::sync::atomic::AtomicBool::new(gro),
            shared: Default::default(),
            port_queues: Default::default(),
            queue_frames: AtomicU64::new(0),
        }
    }

    /// Sends live trace events to `sink` from now on (without one they are
    /// counted as lost).
    pub fn set_trace_sink(&self, sink: tokio::sync::mpsc::Sender<LiveTraceEvent>) {
        let _ = self.trace_sink.set(sink);
    }

    /// Matches packets against these live trace requests from now on.
    pub fn set_trace_requests(&self, requests: Vec<nsdb::LiveTraceRequest>) {
        self.core.set_trace_requests(requests);
    }

    /// Stamps a live trace event with the time and hands it to the sink.
    fn publish_trace(&self, mut event: LiveTraceEvent) {
        event.at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let sent = self
            .trace_sink
            .get()
            .is_some_and(|sink| sink.try_send(event).is_ok());
        if !sent {
            self.count("trace_event_lost");
        }
    }

    /// Sends frames for other hosts' ports through `tunnel` from now on
    /// (without one they are dropped and counted).
    pub fn set_tunnel(&self, tunnel: Arc<Tunnel>) {
        let max_ip_len = tunnel.max_ip_len();
        if self.tunnel.set(tunnel).is_ok() {
            self.core.set_tunnel_mtu(Some(max_ip_len));
        }
    }

    /// A tunnel lane for a new port: lanes are given out in turn, so that
    /// ports opened one after another send through different sockets.
    pub fn next_lane(&self) -> usize {
        self.next_lane.fetch_add(1, Ordering::Relaxed)
    }

    /// The tunnel, once set.
    pub fn tunnel(&self) -> Option<&Arc<Tunnel>> {
        self.tunnel.get()
    }

    /// The topology in force.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load()
    }

    /// Counts a drop under `reason` (see `plexus_datapath_drops_total`).
    pub fn count(&self, reason: &'static str) {
        let mut drops = self.drops.lock().unwrap_or_else(|p| p.into_inner());
        *drops.entry(reason).or_default() += 1;
    }

    /// The host this datapath serves.
    pub fn host(&self) -> Uuid {
        self.host
    }

    /// Milliseconds since the datapath started: the core's clock.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The handle of a bound port.
    pub fn port(&self, id: Uuid) -> Option<Arc<PortHandle>> {
        self.ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Starts serving a port.
    pub fn attach(&self, handle: Arc<PortHandle>) {
        self.shared_attached(&handle);
        self.ports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle.id, handle);
    }

    /// Stops serving a port; returns its handle.
    pub fn detach(&self, id: Uuid) -> Option<Arc<PortHandle>> {
        let handle = self
            .ports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(handle) = &handle {
            handle.poll.detach();
            self.shared_detached(handle);
        }
        self.core.invalidate(&[Tag::Port(id)]);
        handle
    }

    /// Stops serving every port; returns their handles.
    pub fn detach_all(&self) -> Vec<Arc<PortHandle>> {
        let handles: Vec<Arc<PortHandle>> = self
            .ports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, handle)| handle)
            .collect();
        for handle in &handles {
            handle.poll.detach();
            self.shared_detached(handle);
        }
        let tags: Vec<Tag> = handles.iter().map(|h| Tag::Port(h.id)).collect();
        self.core.invalidate(&tags);
        handles
    }

    /// The ids of the ports being served.
    pub fn attached(&self) -> Vec<Uuid> {
        self.ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Removes the flows that depend on `tags`.
    pub fn invalidate(&self, tags: &[Tag]) -> usize {
        self.core.invalidate(tags)
    }

    /// Removes the flows that depend on `tags`, which the topology of
    /// `generation` changed (see [`DatapathCore::invalidate_for`]).
    pub fn invalidate_for(&self, generation: u64, tags: &[Tag]) -> usize {
        self.core.invalidate_for(generation, tags)
    }

    /// Periodic housekeeping: idle flows, aged entries, stale held frames
    /// (next hops that never answered get their senders answered).
    pub fn tick(&self) {
        self.decide(|core, topology, now, actions| core.tick(topology, now, actions));
    }

    /// The flow cache counters.
    pub fn flow_stats(&self) -> FlowStats {
        self.core.stats().flows
    }

    /// The core's counters and table sizes.
    pub fn core_stats(&self) -> CoreStats {
        self.core.stats()
    }

    /// Runs `decide` on the core with the topology and time in force, then
    /// performs and sends what it returns (the slow paths: housekeeping,
    /// imported state, injected frames).
    fn decide(&self, decide: impl FnOnce(&DatapathCore, &Topology, u64, &mut Vec<Action>)) {
        let topology = self.topology.load();
        let mut scratch = Scratch::default();
        let now = self.now_ms();
        decide(&self.core, &topology, now, &mut scratch.actions);
        self.perform(&mut scratch, None);
        self.finish(&mut scratch);
    }

    /// Receives and forwards on `port` until it fails. Between batches the
    /// task holds no buffer: it waits for the port to be readable, then
    /// borrows a workspace for one batch.
    /// While the poller has the port (see [`PollMode`]), the task waits for
    /// it to let go.
    pub async fn serve_port(&self, port: Arc<PortHandle>) -> std::io::Result<()> {
        loop {
            port.poll.wait_cold().await;
            port.io.readable().await?;
            if port.poll.is_hot() {
                continue;
            }
            if self.serve_ready(&port)? > 0 {
                self.warm(&port);
            }
        }
    }

    /// Receives one batch from a readable port (none if another reader
    /// took it first) and handles it, in a borrowed workspace.
    pub fn serve_ready(&self, port: &PortHandle) -> std::io::Result<usize> {
        let mut workspace = self.workspaces.take();
        let received = self.serve_with(port, &mut workspace);
        self.workspaces.put(workspace);
        received
    }

    /// Receives one batch from `port` and handles it in `workspace`,
    /// unless someone else is receiving from the port right now (`Ok(0)`).
    fn serve_with(&self, port: &PortHandle, workspace: &mut Workspace) -> std::io::Result<usize> {
        if !port.poll.try_serve() {
            return Ok(0);
        }
        let Workspace { rx, scratch } = workspace;
        let received = port.io.try_recv_batch(rx);
        if let Ok(n) = received {
            if n > 0 {
                self.handle_batch(port, rx, scratch);
            }
        }
        port.poll.served();
        received
    }

    /// Workspaces made so far and not lent right now (at most about one per
    /// worker thread, whatever the number of ports).
    pub fn free_workspaces(&self) -> usize {
        self.workspaces.free()
    }

    /// Decides and sends every frame of a received batch.
    pub fn handle_batch(&self, port: &PortHandle, rx: &mut RxBatch, scratch: &mut Scratch) {
        let topology = self.topology.borrow();
        scratch.sends.clear();
        scratch.datagrams.clear();
        // Everything a port sends through the tunnel leaves through one
        // socket, so it arrives in order (see `tunnel::Tunnel`).
        scratch.datagrams.set_lane(port.lane);
        scratch.now = self.now_ms();
        if matches!(port.io, Port::Receiver(_)) {
            self.decide_shared(&topology, rx, scratch);
        } else {
            let bytes = rx.bytes_of(0..rx.len());
            let counters = &port.counters;
            counters.rx.fetch_add(rx.len() as u64, Ordering::Relaxed);
            counters.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            for i in 0..rx.len() {
                self.decide_frame(&topology, port, rx, i, scratch);
            }
        }
        self.send_decided(rx, scratch);
    }

    /// Hands frame `i` of `rx`, from `port`, to the core and performs its actions.
    fn decide_frame(
        &self,
        topology: &Topology,
        port: &PortHandle,
        rx: &mut RxBatch,
        i: usize,
        scratch: &mut Scratch,
    ) {
        let vnet = rx.vnet(i);
        let now = scratch.now;
        let fate = self.core.process(
            topology,
            port.id,
            rx.frame_mut(i),
            vnet,
            now,
            &mut scratch.core,
            &mut scratch.actions,
        );
        let counter = match fate {
            Fate::Sent => None,
            Fate::Dropped => Some(&port.counters.drops),
            Fate::Answered => Some(&port.counters.answered),
            Fate::Held => Some(&port.counters.held),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.perform(scratch, Some((rx, i)));
    }

    /// Performs the core's actions in order: the frame at hand (`received`,
    /// frame `i` of a receive batch) joins its ports' sends or goes into
    /// the tunnel queue, frames the core made wait for [`Self::finish`].
    fn perform(&self, scratch: &mut Scratch, received: Option<(&RxBatch, usize)>) {
        let Scratch {
            actions,
            sends,
            made,
            datagrams,
            ..
        } = scratch;
        let mut mark = None;
        for action in actions.drain(..) {
            match action {
                Action::Forward(port) => {
                    if let Some((_, i)) = received {
                        sends.push(port, i);
                    }
                }
                Action::Tunnel { peer, key } => {
                    if let Some((rx, i)) = received {
                        let frame = rx.frame(i);
                        self.push_tunnel(datagrams, peer, key, &rx.vnet(i), frame, mark);
                    }
                }
                Action::Traced(event) => {
                    if let TraceEventKind::Decided { tunnel_tag, .. } = &event.kind {
                        mark = *tunnel_tag;
                    }
                    self.publish_trace(*event);
                }
                Action::Emit { .. } | Action::EmitTunnel { .. } => made.push(action),
                Action::State { peer, message } => self.push_state(datagrams, peer, &message),
                Action::Agent(frame) => self.hand_local(frame),
                Action::Drop(reason) => self.count(reason.name()),
            }
        }
    }

    /// Sends the frames the core made (to local ports or through the
    /// tunnel) and every queued tunnel datagram.
    fn finish(&self, scratch: &mut Scratch) {
        for action in scratch.made.drain(..) {
            match action {
                Action::Emit { port, frame } => self.send_made(port, &frame),
                Action::EmitTunnel { peer, key, frame } => {
                    let none = &VnetHeader::NONE;
                    self.push_tunnel(&mut scratch.datagrams, peer, key, none, &frame, None)
                }
                _ => {}
            }
        }
        self.flush_remote(&scratch.datagrams);
        scratch.datagrams.clear();
    }
}
