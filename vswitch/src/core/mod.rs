//! The datapath core: every forwarding decision of one host, without I/O.
//!
//! [`DatapathCore`] owns the flow cache, the learned tables (MACs, ARP
//! answers, connections), the frames held for an ARP answer or a first
//! fragment, the path-MTU refusal and the choice of what flow state goes
//! to which host. It takes a frame with its ingress port, offload header,
//! the time and the topology in force, and returns what to do as typed
//! [`Action`]s: send on a local port, send through the tunnel to a host
//! (state messages ahead), hand to the local agent, drop with a reason.
//!
//! It is deterministic and does no I/O: no sockets, no clock (the caller
//! passes `now` in milliseconds from any origin it keeps), no globals. The
//! datapath's driver ([`crate::datapath`]) reads the clock, moves frames
//! and performs the actions; the unit tests drive several cores with a
//! simulated clock and no sockets at all. A core serves one host; nothing
//! in it assumes it is the only one, so workers may each own one later.
//!
//! The hit path (a cached flow) allocates nothing and takes no lock shared
//! by all flows: the flow cache is sharded for concurrent readers, the
//! received frame is rewritten in place, and the actions and scratch go to
//! buffers the caller reuses. Only a miss (running the engine, learning,
//! holding frames) takes the core's one lock, so workers on several cores
//! forward cached flows in parallel.

mod action;
mod held;
mod livetrace;
mod replicate;
mod tunnel;

#[cfg(test)]
mod tests;

pub use action::{Action, Fate, Peer, Reason};
pub use held::{FRAGMENT_HELD_FOR_MS, HELD_FOR_MS, HELD_FRAGMENTS, HELD_PER_NEXT_HOP};
pub use livetrace::{FlowUse, LiveTraceEvent, TraceEventKind, TunnelTag, MAX_ACTIVE_TRACES};
pub use replicate::SYNC_INTERVAL_MS;
pub use tunnel::{classify, Arrival};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use crate::engine::{
    self, apply_rewrite, DropReason, Egress, Output, PacketInfo, Simulation, Steps, Tag,
    TraceRecord,
};
use crate::flows::{FlowCache, FlowKey, FlowStats};
use crate::io::VnetHeader;
use crate::learned::LearnedTables;
use crate::snapshot::Topology;

use held::Held;
use livetrace::Tracer;

/// Idle flows are dropped after this long.
pub const FLOW_IDLE_MS: u64 = 30_000;

/// The core's counters and table sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// The flow cache's counters.
    pub flows: FlowStats,
    /// Flows cached.
    pub flow_count: usize,
    /// Learned MACs.
    pub macs: usize,
    /// ARP answers.
    pub arps: usize,
    /// Tracked connections.
    pub conns: usize,
    /// New connections not tracked because the table was full.
    pub conns_refused: u64,
    /// Frames waiting for an ARP answer.
    pub held_frames: usize,
    /// Later fragments waiting for their first.
    pub held_fragments: usize,
}

/// Buffers a caller lends [`DatapathCore::process`], reused from one frame
/// to the next (one per worker).
#[derive(Debug, Default)]
pub struct CoreScratch {
    outputs: Vec<Output>,
    remote: Vec<Egress>,
}

/// What only a miss changes (learning, holding frames, answering syncs),
/// behind the core's one lock.
#[derive(Debug, Default)]
struct State {
    learned: LearnedTables,
    held: Held,
    /// When each peer's last sync request was answered.
    sync_answered: HashMap<IpAddr, u64>,
}

/// The decisions of one host's datapath. See the module documentation.
#[derive(Debug)]
pub struct DatapathCore {
    host: Uuid,
    /// The largest inner IP packet the tunnel carries; 0: no tunnel.
    tunnel_mtu: AtomicUsize,
    flows: FlowCache,
    state: Mutex<State>,
    /// The live trace requests packets are matched against.
    tracer: Tracer,
}

impl DatapathCore {
    /// A core for `host`, without a tunnel until [`Self::set_tunnel_mtu`].
    pub fn new(host: Uuid) -> DatapathCore {
        DatapathCore {
            host,
            tunnel_mtu: AtomicUsize::new(0),
            flows: FlowCache::default(),
            state: Mutex::default(),
            tracer: Tracer::default(),
        }
    }

    /// The host this core decides for.
    pub fn host(&self) -> Uuid {
        self.host
    }

    /// Frames for other hosts go through a tunnel carrying inner IP packets
    /// of up to `max_ip_len` bytes (`None`: no tunnel, they are dropped).
    pub fn set_tunnel_mtu(&self, max_ip_len: Option<usize>) {
        self.tunnel_mtu
            .store(max_ip_len.unwrap_or(0), Ordering::Relaxed);
    }

    /// The largest inner IP packet the tunnel carries, if there is one.
    fn tunnel_mtu(&self) -> Option<usize> {
        Some(self.tunnel_mtu.load(Ordering::Relaxed)).filter(|mtu| *mtu > 0)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides the fate of `frame`, received on the local port `in_port`
    /// with offload header `vnet` at `now`: rewrites it in place and
    /// appends what to do with it (and with anything the decision made or
    /// released) to `actions`. Safe to call from several workers at once.
    #[allow(clippy::too_many_arguments)]
    pub fn process(
        &self,
        topo: &Topology,
        in_port: Uuid,
        frame: &mut [u8],
        vnet: VnetHeader,
        now: u64,
        scratch: &mut CoreScratch,
        actions: &mut Vec<Action>,
    ) -> Fate {
        let info = match PacketInfo::parse(frame) {
            Ok(info) => info,
            Err(error) => {
                actions.push(Action::Drop(DropReason::Malformed(error).into()));
                return Fate::Dropped;
            }
        };
        let key = FlowKey {
            in_port,
            packet: info,
        };
        let traces = self.tracer.current();
        let mut candidates = traces
            .as_ref()
            .map_or(0, |t| livetrace::header_candidates(t, &info));
        let mut traced: Option<(FlowUse, TraceRecord)> = None;
        let first_action = actions.len();
        let CoreScratch { outputs, remote } = scratch;
        let mut unsent = Fate::Dropped;
        if self.flows.lookup(&key, now, outputs) {
            if let Some(requests) = traces.as_ref().filter(|_| candidates != 0) {
                let out = |p: Uuid| outputs.iter().any(|o| o.egress.port == p);
                let crosses = |d: Uuid| self.flows.crosses(&key, d);
                candidates = livetrace::refine(requests, candidates, in_port, out, crosses);
                if candidates != 0 {
                    let sim = self.dry_run(topo, in_port, frame);
                    traced = Some((FlowUse::Hit, TraceRecord::from(&sim)));
                }
            }
        } else {
            outputs.clear();
            let mut state = self.state();
            // Steps are words for people: only a traced packet records them.
            let steps = if candidates != 0 {
                Steps::Record
            } else {
                Steps::Skip
            };
            let sim = engine::simulate_with(topo, &state.learned, in_port, frame, steps);
            unsent = if sim.held_for.is_some() || sim.held_fragment.is_some() {
                Fate::Held
            } else if !sim.generated.is_empty() || !sim.local.is_empty() {
                Fate::Answered
            } else {
                Fate::Dropped
            };
            if candidates != 0 {
                traced = Some((FlowUse::Miss, TraceRecord::from(&sim)));
            }
            self.settle(&mut state, topo, &key, frame, sim, outputs, now, actions);
        }
        let fate = match self.send(topo, &key, frame, vnet, outputs, remote, actions) {
            // Nothing left by a port: say whether it was answered or held.
            Fate::Dropped => unsent,
            fate => fate,
        };
        if let (Some(requests), Some((flow, mut trace))) = (traces.as_ref(), traced) {
            let refused = actions[first_action..]
                .iter()
                .any(|a| matches!(a, Action::Drop(Reason::TunnelFragNeeded)));
            if refused {
                trace.note_tunnel_refusal(self.tunnel_mtu().unwrap_or(0), self.host);
            }
            let events = livetrace::decided_events(
                requests,
                candidates,
                self.host,
                in_port,
                flow,
                fate.name(),
                &trace,
            );
            let at = first_action;
            actions.splice(
                at..at,
                events.into_iter().map(|e| Action::Traced(Box::new(e))),
            );
        }
        fate
    }

    /// Records what a simulation learned and decided: drops, frames for the
    /// agent, learnings (and what they release), held frames, replicated
    /// state, the cached flow; fills `outputs` with the bound outputs.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        state: &mut State,
        topo: &Topology,
        key: &FlowKey,
        frame: &[u8],
        mut sim: Simulation,
        outputs: &mut Vec<Output>,
        now: u64,
        actions: &mut Vec<Action>,
    ) {
        actions.extend(sim.drops.iter().map(|d| Action::Drop((*d).into())));
        actions.extend(sim.local.drain(..).map(Action::Agent));
        let mut released = std::collections::VecDeque::new();
        self.record(state, &sim.learned, now, &mut released);
        if let Some(next_hop) = sim.held_for {
            state
                .held
                .until_resolved(next_hop, key.in_port, frame.to_vec(), now);
        }
        if let Some(datagram) = sim.held_fragment {
            state
                .held
                .until_first_fragment(datagram, key.in_port, frame.to_vec(), now);
        }
        self.replicate(topo, &sim, actions);
        outputs.extend(sim.outputs.iter().filter(|o| o.egress.host.is_some()));
        // Fragments are decided one by one: each datagram is a new key.
        self.flows.count_rules(&sim.rules);
        if sim.is_cacheable() && key.packet.fragment_key().is_none() {
            let tags = std::mem::take(&mut sim.tags);
            let rules = std::mem::take(&mut sim.rules);
            self.flows
                .insert(*key, outputs.clone(), tags, rules, now, topo.generation);
        }
        for generated in sim.generated.drain(..) {
            if generated.egress.host.is_some() {
                self.emit(topo, generated.egress, generated.frame, actions);
            }
        }
        self.release(state, topo, released, now, actions);
    }

    /// Sends the received frame where `outputs` say: refuses what the
    /// tunnel cannot carry, copies the outputs rewritten unlike the first,
    /// rewrites the frame in place for the others.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        topo: &Topology,
        key: &FlowKey,
        frame: &mut [u8],
        vnet: VnetHeader,
        outputs: &mut Vec<Output>,
        remote: &mut Vec<Egress>,
        actions: &mut Vec<Action>,
    ) -> Fate {
        if outputs.is_empty() {
            return Fate::Dropped;
        }
        if self.refuse_oversize(key, vnet, frame, outputs, actions) {
            return Fate::Answered;
        }
        let first = outputs[0].rewrite;
        // Outputs rewritten differently from the first get copies of the
        // frame as received, before it is rewritten in place (rare: the
        // engine never produces them today).
        let partial = vnet.needs_csum();
        for output in outputs.iter().filter(|o| o.rewrite != first) {
            let mut copy = frame.to_vec();
            if apply_rewrite(&mut copy, &output.rewrite, partial) {
                self.emit(topo, output.egress, copy, actions);
            }
        }
        if !apply_rewrite(frame, &first, partial) {
            return Fate::Dropped;
        }
        remote.clear();
        for output in outputs.iter().filter(|o| o.rewrite == first) {
            if output.egress.host == Some(self.host) {
                actions.push(Action::Forward(output.egress.port));
            } else {
                remote.push(output.egress);
            }
        }
        if !remote.is_empty() {
            self.tunnel_out(topo, remote, actions);
        }
        Fate::Sent
    }

    /// Matches packets against these live trace requests from now on
    /// (none: tracing costs a packet one atomic load).
    pub fn set_trace_requests(&self, requests: Vec<nsdb::LiveTraceRequest>) {
        self.tracer.set(requests);
    }

    /// The events recording that a tunnel datagram marked `tag` from
    /// `from_host` was delivered to local `ports` (none unless a request
    /// in force names the tag).
    pub fn trace_delivery(
        &self,
        from_host: Option<Uuid>,
        tag: TunnelTag,
        ports: &[Uuid],
    ) -> Vec<LiveTraceEvent> {
        match self.tracer.current() {
            Some(requests) => {
                livetrace::delivered_events(&requests, self.host, from_host, tag, ports)
            }
            None => Vec::new(),
        }
    }

    /// Removes the flows that depend on `tags`; returns how many.
    pub fn invalidate(&self, tags: &[Tag]) -> usize {
        self.flows.invalidate(tags)
    }

    /// Removes the flows that depend on `tags`, which the topology of
    /// `generation` changed: flows decided on older topologies are not
    /// cached from now on. Returns how many were removed.
    pub fn invalidate_for(&self, generation: u64, tags: &[Tag]) -> usize {
        self.flows.invalidate_for(generation, tags)
    }

    /// What the engine decides for `frame` entering by `ingress` with what
    /// this core has learned, without doing it (plans, not traffic).
    pub fn dry_run(&self, topo: &Topology, ingress: Uuid, frame: &[u8]) -> Simulation {
        engine::simulate(topo, &self.state().learned, ingress, frame)
    }

    /// Packets each rule matched so far (see [`FlowCache::rule_hits`]).
    pub fn rule_hits(&self) -> HashMap<crate::engine::RuleHit, u64> {
        self.flows.rule_hits()
    }

    /// Reads the learned tables.
    pub fn with_learned<R>(&self, read: impl FnOnce(&LearnedTables) -> R) -> R {
        read(&self.state().learned)
    }

    /// Counters and table sizes.
    pub fn stats(&self) -> CoreStats {
        let state = self.state();
        let (macs, arps) = state.learned.sizes();
        let (held_frames, held_fragments) = state.held.sizes();
        CoreStats {
            flows: self.flows.stats(),
            flow_count: self.flows.len(),
            macs,
            arps,
            conns: state.learned.conns().len(),
            conns_refused: state.learned.conns_refused(),
            held_frames,
            held_fragments,
        }
    }
}
