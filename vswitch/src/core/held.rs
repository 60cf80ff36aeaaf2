//! Frames the core holds back, and what lets them go: packets waiting for
//! a router's ARP answer (released when the answer is learned here or
//! imported from another host, answered with host unreachable when it
//! never comes), and later fragments waiting for their first fragment.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use uuid::Uuid;

use super::{Action, DatapathCore, Reason, State, FLOW_IDLE_MS};
use crate::engine::{self, apply_rewrite, FragmentKey, Learning, Tag};
use crate::snapshot::Topology;

/// Frames held per unresolved next hop.
pub const HELD_PER_NEXT_HOP: usize = 16;
/// How long a frame waits for its next hop's ARP answer.
pub const HELD_FOR_MS: u64 = 3_000;
/// Later fragments held per datagram until its first fragment passes.
pub const HELD_FRAGMENTS: usize = 64;
/// How long a later fragment waits for its first.
pub const FRAGMENT_HELD_FOR_MS: u64 = 1_000;
/// How many more frames one release walks than it was given (frames a
/// release frees go on in the same one, up to this many).
const MAX_FREED: usize = 1_024;

/// A frame waiting to be walked again.
#[derive(Debug)]
pub(super) struct HeldFrame {
    /// The next hop it waits for (frames held for ARP).
    pub(super) next_hop: Option<(Uuid, IpAddr)>,
    pub(super) in_port: Uuid,
    pub(super) frame: Vec<u8>,
    pub(super) since_ms: u64,
}

/// The held frames, by what they wait for.
#[derive(Debug, Default)]
pub(super) struct Held {
    for_arp: HashMap<(Uuid, IpAddr), Vec<HeldFrame>>,
    for_first_fragment: HashMap<(Uuid, FragmentKey), Vec<HeldFrame>>,
}

impl Held {
    /// Holds `frame` until `router` resolves `ip` (dropped past the cap).
    pub(super) fn until_resolved(
        &mut self,
        next_hop: (Uuid, IpAddr),
        in_port: Uuid,
        frame: Vec<u8>,
        now: u64,
    ) {
        let queue = self.for_arp.entry(next_hop).or_default();
        if queue.len() < HELD_PER_NEXT_HOP {
            queue.push(HeldFrame {
                next_hop: Some(next_hop),
                in_port,
                frame,
                since_ms: now,
            });
        }
    }

    /// Holds the later fragment `frame` until its first passes `zone`.
    pub(super) fn until_first_fragment(
        &mut self,
        datagram: (Uuid, FragmentKey),
        in_port: Uuid,
        frame: Vec<u8>,
        now: u64,
    ) {
        let queue = self.for_first_fragment.entry(datagram).or_default();
        if queue.len() < HELD_FRAGMENTS {
            queue.push(HeldFrame {
                next_hop: None,
                in_port,
                frame,
                since_ms: now,
            });
        }
    }

    /// Removes the frames that time out at `now`: those held for ARP are
    /// returned (they go back through the engine), fragments are counted.
    fn expire(&mut self, now: u64) -> (Vec<HeldFrame>, usize) {
        let mut timed_out = Vec::new();
        self.for_arp.retain(|_, frames| {
            let (old, young) = std::mem::take(frames)
                .into_iter()
                .partition(|f| now.saturating_sub(f.since_ms) >= HELD_FOR_MS);
            *frames = young;
            timed_out.extend(old);
            !frames.is_empty()
        });
        let mut orphans = 0;
        self.for_first_fragment.retain(|_, frames| {
            let before = frames.len();
            frames.retain(|f| now.saturating_sub(f.since_ms) < FRAGMENT_HELD_FOR_MS);
            orphans += before - frames.len();
            !frames.is_empty()
        });
        (timed_out, orphans)
    }

    /// How many frames wait for ARP, and how many fragments for their first.
    pub(super) fn sizes(&self) -> (usize, usize) {
        let count = |frames: &mut dyn Iterator<Item = &Vec<HeldFrame>>| frames.map(Vec::len).sum();
        (
            count(&mut self.for_arp.values()),
            count(&mut self.for_first_fragment.values()),
        )
    }
}

impl DatapathCore {
    /// Records what another host's simulations learned (shipped over the
    /// tunnel), invalidating the flows it changes. Frames held for an ARP
    /// answer learned this way go on now: their actions are appended.
    pub fn import(
        &self,
        topo: &Topology,
        learnings: &[Learning],
        now: u64,
        actions: &mut Vec<Action>,
    ) {
        let mut state = self.state();
        let mut released = VecDeque::new();
        self.record(&mut state, learnings, now, &mut released);
        self.release(&mut state, topo, released, now, actions);
    }

    /// Sends `frame` into the virtual network as if it arrived by the
    /// interior port `ingress` (the agent's own traffic: health probes).
    pub fn inject(
        &self,
        topo: &Topology,
        ingress: Uuid,
        frame: Vec<u8>,
        now: u64,
        actions: &mut Vec<Action>,
    ) {
        let held = HeldFrame {
            next_hop: None,
            in_port: ingress,
            frame,
            since_ms: now,
        };
        self.release(
            &mut self.state(),
            topo,
            VecDeque::from([held]),
            now,
            actions,
        );
    }

    /// Housekeeping at `now`: idle flows, aged entries and connections,
    /// stale held frames. Next hops that did not answer in time fail: their
    /// frames go back through the engine, which answers them with ICMP
    /// host unreachable (appended to `actions`).
    pub fn tick(&self, topo: &Topology, now: u64, actions: &mut Vec<Action>) {
        let mut state = self.state();
        state.learned.age(&self.flows, now, FLOW_IDLE_MS);
        let (timed_out, orphans) = state.held.expire(now);
        for _ in 0..orphans {
            actions.push(Action::Drop(Reason::FragmentTimeout));
        }
        let failed: HashSet<(Uuid, IpAddr)> = timed_out.iter().filter_map(|f| f.next_hop).collect();
        for (router, ip) in failed {
            state.learned.arp_gave_up(router, ip, now);
        }
        self.release(&mut state, topo, timed_out.into(), now, actions);
    }

    /// Records learnings, invalidating the flows they change; frames held
    /// for a next hop they resolve, or for a first fragment that passed, go
    /// to `released`.
    pub(super) fn record(
        &self,
        state: &mut State,
        learnings: &[Learning],
        now: u64,
        released: &mut impl Extend<HeldFrame>,
    ) {
        for learning in learnings {
            let tags = state.learned.learn(learning, now);
            self.flows.invalidate(&tags);
            for tag in tags {
                if let Tag::Arp(router, ip) = tag {
                    let waiting = state.held.for_arp.remove(&(router, ip));
                    released.extend(waiting.unwrap_or_default());
                }
            }
            if let Learning::Fragment { zone, key, .. } = learning {
                let waiting = state.held.for_first_fragment.remove(&(*zone, *key));
                released.extend(waiting.unwrap_or_default());
            }
        }
    }

    /// Walks held frames again as new arrivals: what they teach is
    /// recorded and replicated, frames that teaching frees go on too, and
    /// a frame still unresolved waits again.
    pub(super) fn release(
        &self,
        state: &mut State,
        topo: &Topology,
        mut queue: VecDeque<HeldFrame>,
        now: u64,
        actions: &mut Vec<Action>,
    ) {
        let mut budget = queue.len() + MAX_FREED;
        while let Some(held) = queue.pop_front() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let mut sim = engine::simulate_with(
                topo,
                &state.learned,
                held.in_port,
                &held.frame,
                engine::Steps::Skip,
            );
            actions.extend(sim.drops.iter().map(|d| Action::Drop((*d).into())));
            actions.extend(sim.local.drain(..).map(Action::Agent));
            self.flows.count_rules(&sim.rules);
            self.record(state, &sim.learned, now, &mut queue);
            self.replicate(topo, &sim, actions);
            for output in sim.outputs.iter().filter(|o| o.egress.host.is_some()) {
                let mut copy = held.frame.clone();
                if apply_rewrite(&mut copy, &output.rewrite, false) {
                    self.emit(topo, output.egress, copy, actions);
                }
            }
            for generated in sim.generated.drain(..) {
                if generated.egress.host.is_some() {
                    self.emit(topo, generated.egress, generated.frame, actions);
                }
            }
            if let Some(next_hop) = sim.held_for {
                // Still unresolved (an injected frame): wait for the answer.
                state
                    .held
                    .until_resolved(next_hop, held.in_port, held.frame, now);
            }
        }
    }
}
