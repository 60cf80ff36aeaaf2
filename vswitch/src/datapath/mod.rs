//! The datapath: frames in from bound ports, decisions from the flow cache
//! or the engine, frames out.
//!
//! Each bound port has a receive task that reads a batch, decides every
//! frame (a cache hit costs a parse, a hash lookup and an in-place rewrite;
//! a miss runs [`crate::engine::simulate`]), and sends each egress port its
//! frames in one batch straight out of the receive buffers, offload headers
//! included. Nothing on the hit path allocates.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use uuid::Uuid;

use crate::engine::{
    self, apply_rewrite, DropReason, Egress, FragmentKey, Generated, Learning, Output, PacketInfo,
    Simulation, Tag,
};
use crate::feed::SharedTopology;
use crate::flows::{FlowCache, FlowKey, FlowStats};
use crate::io::{Datagrams, Port, PortIo, RxBatch, VnetHeader};
use crate::learned::LearnedTables;
use crate::snapshot::Topology;
use crate::tunnel::Tunnel;

mod local;
mod remote;

/// Frames held per unresolved next hop, and how long they wait.
const HELD_PER_NEXT_HOP: usize = 16;
const HELD_FOR_MS: u64 = 3_000;
/// Later fragments held per datagram until its first fragment passes, and
/// how long they wait.
const HELD_FRAGMENTS: usize = 64;
const FRAGMENT_HELD_FOR_MS: u64 = 1_000;
/// Idle flows are dropped after this long.
pub const FLOW_IDLE_MS: u64 = 30_000;

/// Counters of one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx: AtomicU64,
    /// Frames sent.
    pub tx: AtomicU64,
    /// Frames received and dropped.
    pub drops: AtomicU64,
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
}

struct HeldFrame {
    /// The next hop it waits for (frames held for ARP).
    next_hop: Option<(Uuid, std::net::Ipv4Addr)>,
    in_port: Uuid,
    frame: Vec<u8>,
    since_ms: u64,
}

#[derive(Default)]
struct State {
    flows: FlowCache,
    learned: LearnedTables,
    held: HashMap<(Uuid, std::net::Ipv4Addr), Vec<HeldFrame>>,
    held_fragments: HashMap<(Uuid, FragmentKey), Vec<HeldFrame>>,
}

/// The datapath of one host.
pub struct Datapath {
    host: Uuid,
    topology: Arc<SharedTopology>,
    state: Mutex<State>,
    ports: RwLock<HashMap<Uuid, Arc<PortHandle>>>,
    drops: Mutex<HashMap<&'static str, u64>>,
    started: Instant,
    tunnel: OnceLock<Arc<Tunnel>>,
    /// When each peer's last sync request was answered.
    sync_answered: Mutex<HashMap<std::net::IpAddr, u64>>,
    /// Frames routers handed to this agent (answers to its health probes).
    local: Mutex<Vec<Vec<u8>>>,
    /// Wakes the taker of `local`.
    local_ready: tokio::sync::Notify,
}

/// Per-task scratch space, reused across batches so the hot path does not allocate.
#[derive(Default)]
pub struct Scratch {
    outputs: Vec<Output>,
    sends: HashMap<Uuid, Vec<usize>>,
    generated: Vec<Generated>,
    remote: Vec<Egress>,
    datagrams: Datagrams,
}

impl Datapath {
    /// A datapath for `host` over the topology `topology` keeps current.
    pub fn new(host: Uuid, topology: Arc<SharedTopology>) -> Datapath {
        Datapath {
            host,
            topology,
            state: Mutex::default(),
            ports: RwLock::default(),
            drops: Mutex::default(),
            started: Instant::now(),
            tunnel: OnceLock::new(),
            sync_answered: Mutex::default(),
            local: Mutex::default(),
            local_ready: tokio::sync::Notify::new(),
        }
    }

    /// Sends frames for other hosts' ports through `tunnel` from now on
    /// (without one they are dropped and counted).
    pub fn set_tunnel(&self, tunnel: Arc<Tunnel>) {
        let _ = self.tunnel.set(tunnel);
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

    /// Records what another host's simulations learned (shipped over the
    /// tunnel), invalidating the flows it changes.
    /// Frames held for an ARP answer learned this way go on now.
    pub fn import(&self, learnings: &[Learning]) {
        let now = self.now_ms();
        let mut state = self.state();
        let mut released = Vec::new();
        self.record_learnings(&mut state, learnings, now, &mut released);
        if released.is_empty() {
            return;
        }
        let topology = self.topology.load();
        let mut scratch = Scratch::default();
        self.release_held(&mut state, &topology, released, &mut scratch, now);
        drop(state);
        self.send_all_generated(&topology, &mut scratch);
    }

    /// The host this datapath serves.
    pub fn host(&self) -> Uuid {
        self.host
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count_drop(&self, reason: &DropReason) {
        self.count(reason.name());
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
        self.state().flows.invalidate(&[Tag::Port(id)]);
        handle
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
        self.state().flows.invalidate(tags)
    }

    /// Periodic housekeeping: idle flows, aged entries, stale held frames.
    pub fn tick(&self) {
        let now = self.now_ms();
        let mut state = self.state();
        let State { flows, learned, .. } = &mut *state;
        learned.age(flows, now, FLOW_IDLE_MS);
        // Next hops that did not answer in time fail: their frames go back
        // through the engine, which answers them with host unreachable.
        let mut timed_out = Vec::new();
        state.held.retain(|_, frames| {
            let (old, young) = std::mem::take(frames)
                .into_iter()
                .partition(|f| now.saturating_sub(f.since_ms) >= HELD_FOR_MS);
            *frames = young;
            timed_out.extend(old);
            !frames.is_empty()
        });
        let mut orphans = 0;
        state.held_fragments.retain(|_, frames| {
            let before = frames.len();
            frames.retain(|f| now.saturating_sub(f.since_ms) < FRAGMENT_HELD_FOR_MS);
            orphans += before - frames.len();
            !frames.is_empty()
        });
        for _ in 0..orphans {
            self.count("fragment_timeout");
        }
        let failed: HashSet<(Uuid, std::net::Ipv4Addr)> =
            timed_out.iter().filter_map(|f| f.next_hop).collect();
        if failed.is_empty() {
            return;
        }
        for (router, ip) in failed {
            state.learned.arp_gave_up(router, ip, now);
        }
        let topology = self.topology.load();
        let mut scratch = Scratch::default();
        self.release_held(&mut state, &topology, timed_out, &mut scratch, now);
        drop(state);
        self.send_all_generated(&topology, &mut scratch);
    }

    /// The flow cache counters.
    pub fn flow_stats(&self) -> FlowStats {
        self.state().flows.stats()
    }

    /// Receives and forwards on `port` until it fails.
    pub async fn serve_port(&self, port: Arc<PortHandle>) -> std::io::Result<()> {
        let mut rx = RxBatch::new(64);
        let mut scratch = Scratch::default();
        loop {
            let n = port.io.recv_batch(&mut rx).await?;
            if n > 0 {
                self.handle_batch(&port, &mut rx, &mut scratch);
            }
        }
    }

    /// Decides and sends every frame of a received batch.
    pub fn handle_batch(&self, port: &PortHandle, rx: &mut RxBatch, scratch: &mut Scratch) {
        let topology = self.topology.load();
        for sends in scratch.sends.values_mut() {
            sends.clear();
        }
        scratch.datagrams.clear();
        port.counters
            .rx
            .fetch_add(rx.len() as u64, Ordering::Relaxed);
        for i in 0..rx.len() {
            scratch.outputs.clear();
            let info = match PacketInfo::parse(rx.frame(i)) {
                Ok(info) => info,
                Err(error) => {
                    port.counters.drops.fetch_add(1, Ordering::Relaxed);
                    self.count_drop(&DropReason::Malformed(error));
                    continue;
                }
            };
            let key = FlowKey {
                in_port: port.id,
                packet: info,
            };
            let now = self.now_ms();
            {
                let mut state = self.state();
                if let Some(outputs) = state.flows.lookup(&key, now) {
                    scratch.outputs.extend_from_slice(outputs);
                } else {
                    let sim = engine::simulate(&topology, &state.learned, port.id, rx.frame(i));
                    self.settle(&mut state, &key, rx.frame(i), sim, scratch, now);
                }
            }
            if scratch.outputs.is_empty() {
                port.counters.drops.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.refuse_oversize(port.id, &info, rx.vnet(i), rx.frame(i), scratch) {
                continue;
            }
            let first = scratch.outputs[0].rewrite;
            // Outputs rewritten differently from the first get copies of the
            // frame as received, before it is rewritten in place (rare: the
            // engine never produces them today).
            let partial = rx.vnet(i).needs_csum();
            for output in scratch.outputs.iter().filter(|o| o.rewrite != first) {
                let mut copy = rx.frame(i).to_vec();
                if apply_rewrite(&mut copy, &output.rewrite, partial) {
                    scratch.generated.push(Generated {
                        egress: output.egress,
                        frame: copy,
                    });
                }
            }
            if !apply_rewrite(rx.frame_mut(i), &first, partial) {
                port.counters.drops.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            scratch.remote.clear();
            for output in scratch.outputs.iter().filter(|o| o.rewrite == first) {
                if output.egress.host == Some(self.host) {
                    scratch.sends.entry(output.egress.port).or_default().push(i);
                } else {
                    scratch.remote.push(output.egress);
                }
            }
            if !scratch.remote.is_empty() {
                let vnet = rx.vnet(i);
                self.queue_remote(
                    &topology,
                    &mut scratch.remote,
                    &vnet,
                    rx.frame(i),
                    &mut scratch.datagrams,
                );
            }
        }
        for (egress, indexes) in scratch.sends.iter().filter(|(_, v)| !v.is_empty()) {
            match self.port(*egress) {
                Some(out) => match out.io.send_rx(rx, indexes) {
                    Ok(sent) => {
                        out.counters.tx.fetch_add(sent as u64, Ordering::Relaxed);
                    }
                    Err(error) => {
                        out.counters
                            .drops
                            .fetch_add(indexes.len() as u64, Ordering::Relaxed);
                        tracing::debug!(%egress, %error, "send failed");
                    }
                },
                None => self.count_drop(&DropReason::Unbound),
            }
        }
        self.send_all_generated(&topology, scratch);
    }

    /// Sends the generated frames (to local ports or through the tunnel)
    /// and every queued tunnel datagram.
    fn send_all_generated(&self, topology: &Topology, scratch: &mut Scratch) {
        for generated in scratch.generated.drain(..) {
            if generated.egress.host == Some(self.host) {
                self.send_generated(&generated);
            } else {
                scratch.remote.clear();
                scratch.remote.push(generated.egress);
                self.queue_remote(
                    topology,
                    &mut scratch.remote,
                    &VnetHeader::NONE,
                    &generated.frame,
                    &mut scratch.datagrams,
                );
            }
        }
        self.flush_remote(&scratch.datagrams);
    }

    /// Records what a simulation learned and decided; fills the outputs.
    fn settle(
        &self,
        state: &mut State,
        key: &FlowKey,
        frame: &[u8],
        mut sim: Simulation,
        scratch: &mut Scratch,
        now: u64,
    ) {
        for drop in &sim.drops {
            self.count_drop(drop);
        }
        self.hand_local(std::mem::take(&mut sim.local));
        let mut released = Vec::new();
        self.record_learnings(state, &sim.learned, now, &mut released);
        if let Some(next_hop) = sim.held_for {
            let queue = state.held.entry(next_hop).or_default();
            if queue.len() < HELD_PER_NEXT_HOP {
                queue.push(HeldFrame {
                    next_hop: Some(next_hop),
                    in_port: key.in_port,
                    frame: frame.to_vec(),
                    since_ms: now,
                });
            }
        }
        if let Some(datagram) = sim.held_fragment {
            let queue = state.held_fragments.entry(datagram).or_default();
            if queue.len() < HELD_FRAGMENTS {
                queue.push(HeldFrame {
                    next_hop: None,
                    in_port: key.in_port,
                    frame: frame.to_vec(),
                    since_ms: now,
                });
            }
        }
        let topology = self.topology.load();
        self.queue_state(&topology, &sim, &mut scratch.datagrams);
        let bound: Vec<Output> = sim
            .outputs
            .iter()
            .filter(|o| o.egress.host.is_some())
            .copied()
            .collect();
        // Fragments are decided one by one: each datagram is a new key.
        let fragment = key.packet.fragment_key().is_some();
        if sim.is_cacheable() && !fragment {
            state
                .flows
                .insert(*key, bound.clone(), sim.tags.clone(), now);
        }
        scratch.outputs.extend(bound);
        scratch.generated.extend(
            sim.generated
                .into_iter()
                .filter(|g| g.egress.host.is_some()),
        );
        self.release_held(state, &topology, released, scratch, now);
    }

    /// Frames that waited for an ARP answer go now, as new arrivals (what
    /// they teach is recorded; frames they release wait for the next packet).
    fn release_held(
        &self,
        state: &mut State,
        topology: &Topology,
        released: Vec<HeldFrame>,
        scratch: &mut Scratch,
        now: u64,
    ) {
        for held in released {
            let mut sim = engine::simulate(topology, &state.learned, held.in_port, &held.frame);
            for drop in &sim.drops {
                self.count_drop(drop);
            }
            self.hand_local(std::mem::take(&mut sim.local));
            self.record_learnings(state, &sim.learned, now, &mut Vec::new());
            if let Some(next_hop) = sim.held_for {
                // Still unresolved (an injected frame): wait for the answer.
                let queue = state.held.entry(next_hop).or_default();
                if queue.len() < HELD_PER_NEXT_HOP {
                    queue.push(HeldFrame {
                        next_hop: Some(next_hop),
                        in_port: held.in_port,
                        frame: held.frame.clone(),
                        since_ms: now,
                    });
                }
            }
            self.queue_state(topology, &sim, &mut scratch.datagrams);
            for output in sim.outputs.iter().filter(|o| o.egress.host.is_some()) {
                let mut copy = held.frame.clone();
                if apply_rewrite(&mut copy, &output.rewrite, false) {
                    scratch.generated.push(Generated {
                        egress: output.egress,
                        frame: copy,
                    });
                }
            }
            scratch.generated.extend(
                sim.generated
                    .into_iter()
                    .filter(|g| g.egress.host.is_some()),
            );
        }
    }

    /// Records what a simulation learned, invalidating the flows it changes;
    /// frames held for a next hop it resolved go to `released`.
    fn record_learnings(
        &self,
        state: &mut State,
        learnings: &[Learning],
        now: u64,
        released: &mut Vec<HeldFrame>,
    ) {
        for learning in learnings {
            let tags = state.learned.learn(learning, now);
            state.flows.invalidate(&tags);
            for tag in tags {
                if let Tag::Arp(router, ip) = tag {
                    released.extend(state.held.remove(&(router, ip)).unwrap_or_default());
                }
            }
            if let Learning::Fragment { zone, key, .. } = learning {
                released.extend(
                    state
                        .held_fragments
                        .remove(&(*zone, *key))
                        .unwrap_or_default(),
                );
            }
        }
    }

    fn send_generated(&self, generated: &Generated) {
        let Some(out) = self.port(generated.egress.port) else {
            return;
        };
        let sent = match &out.io {
            Port::AfPacket(socket) => socket.try_send(&VnetHeader::NONE, &generated.frame),
            Port::Tap(tap) => tap.try_send(&VnetHeader::NONE, &generated.frame),
            Port::Vtep(vtep) => vtep.try_send(&VnetHeader::NONE, &generated.frame),
        };
        match sent {
            Ok(()) => {
                out.counters.tx.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                out.counters.drops.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(port = %generated.egress.port, %error, "sending a generated frame failed");
            }
        }
    }

    /// Prometheus text of the datapath's counters.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let stats = self.flow_stats();
        let (flows, (macs, arps), conns, refused) = {
            let state = self.state();
            (
                state.flows.len(),
                state.learned.sizes(),
                state.learned.conns().len(),
                state.learned.conns_refused(),
            )
        };
        let _ = writeln!(
            out,
            "# TYPE plexus_flow_cache_hits_total counter\nplexus_flow_cache_hits_total {}",
            stats.hits
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_flow_cache_misses_total counter\nplexus_flow_cache_misses_total {}",
            stats.misses
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_flow_cache_invalidations_total counter\nplexus_flow_cache_invalidations_total {}",
            stats.invalidations
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_flow_cache_flows gauge\nplexus_flow_cache_flows {flows}"
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_learned_entries gauge\nplexus_learned_entries{{table=\"mac\"}} {macs}"
        );
        let _ = writeln!(out, "plexus_learned_entries{{table=\"arp\"}} {arps}");
        let _ = writeln!(
            out,
            "# TYPE plexus_conntrack_entries gauge\nplexus_conntrack_entries {conns}"
        );
        let _ = writeln!(
            out,
            "# TYPE plexus_conntrack_refused_total counter\nplexus_conntrack_refused_total {refused}"
        );
        let _ = writeln!(out, "# TYPE plexus_port_packets_total counter");
        let ports = self.ports.read().unwrap_or_else(|p| p.into_inner());
        for (id, port) in ports.iter() {
            let c = &port.counters;
            for (dir, value) in [("rx", &c.rx), ("tx", &c.tx), ("drop", &c.drops)] {
                let _ = writeln!(
                    out,
                    "plexus_port_packets_total{{port=\"{id}\",interface=\"{}\",direction=\"{dir}\"}} {}",
                    port.io.ifname(),
                    value.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# TYPE plexus_datapath_drops_total counter");
        for (reason, count) in self.drops.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "plexus_datapath_drops_total{{reason=\"{reason}\"}} {count}"
            );
        }
        out
    }
}
