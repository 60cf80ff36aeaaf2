//! Flow state between hosts: which learnings go to which hosts, ahead of
//! the frames that need them; state received from other hosts; and the
//! sync by which an agent that restarted recovers what its peers hold.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use uuid::Uuid;

use super::{Action, DatapathCore, Peer, Reason};
use crate::engine::{Learning, Simulation};
use crate::snapshot::Topology;
use crate::tunnel::state::{self, StateWriter};

/// How often one peer's sync request is answered at most.
pub const SYNC_INTERVAL_MS: u64 = 1_000;

impl DatapathCore {
    /// Appends the flow state `sim` learned for the hosts that need it:
    /// connections (with their NAT bindings) to the hosts the packet or
    /// its answers go to, learned MACs and ARP answers to every live host.
    pub(super) fn replicate(&self, topo: &Topology, sim: &Simulation, actions: &mut Vec<Action>) {
        if sim.learned.is_empty() || self.tunnel_mtu().is_none() {
            return;
        }
        let egress_hosts: BTreeSet<Uuid> = sim
            .outputs
            .iter()
            .map(|o| o.egress)
            .chain(sim.generated.iter().map(|g| g.egress))
            .filter_map(|e| e.host)
            .filter(|h| *h != self.host)
            .collect();
        let live_hosts: BTreeSet<Uuid> = topo
            .hosts
            .iter()
            .filter(|(id, (_, alive))| *alive && **id != self.host)
            .map(|(id, _)| *id)
            .collect();
        let (mut conns, mut addresses) = (StateWriter::default(), StateWriter::default());
        for learning in &sim.learned {
            match learning {
                Learning::Conn(_) | Learning::ConnSeen { .. } => conns.push(learning),
                Learning::Mac { .. } | Learning::Arp { .. } => addresses.push(learning),
                Learning::Fragment { .. } | Learning::Affinity { .. } => {}
            }
        }
        for (writer, hosts) in [(&conns, &egress_hosts), (&addresses, &live_hosts)] {
            for host in hosts {
                let Some(ip) = topo.host_ip(*host) else {
                    continue;
                };
                let peer = Peer { host: *host, ip };
                for message in writer.messages() {
                    actions.push(Action::State {
                        peer,
                        message: message.clone(),
                    });
                }
            }
        }
    }

    /// Takes a state message (an [`super::Arrival::State`] datagram) from
    /// the registered host at `source`: imports its learnings, or answers
    /// its sync request. Returns true if a sync request was answered.
    pub fn receive_state(
        &self,
        topo: &Topology,
        source: SocketAddr,
        message: &[u8],
        now: u64,
        actions: &mut Vec<Action>,
    ) -> bool {
        if state::is_sync_request(message) {
            return self.answer_sync(topo, source, now, actions);
        }
        match state::decode(message) {
            Some(learnings) => self.import(topo, &learnings, now, actions),
            None => actions.push(Action::Drop(Reason::TunnelMalformedState)),
        }
        false
    }

    /// Answers a sync request from the agent at `requester` with every
    /// connection and learned address this host holds (an empty message
    /// when it holds none), at most once per [`SYNC_INTERVAL_MS`] per
    /// requester. Returns true if it answered.
    fn answer_sync(
        &self,
        topo: &Topology,
        requester: SocketAddr,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> bool {
        let ip = requester.ip();
        let Some(host) = topo.tunnel.hosts_by_ip.get(&ip).copied() else {
            actions.push(Action::Drop(Reason::TunnelUnknownPeer));
            return false;
        };
        if self.tunnel_mtu().is_none() {
            return false;
        }
        let mut state = self.state();
        let answered = state.sync_answered.get(&ip);
        if answered.is_some_and(|at| now.saturating_sub(*at) < SYNC_INTERVAL_MS) {
            actions.push(Action::Drop(Reason::TunnelSyncThrottled));
            return false;
        }
        state.sync_answered.insert(ip, now);
        let mut writer = StateWriter::default();
        for entry in state.learned.conns().entries() {
            writer.push(&Learning::Conn(*entry));
        }
        for learning in state.learned.addresses() {
            writer.push(&learning);
        }
        let peer = Peer { host, ip };
        if writer.is_empty() {
            // Answer anyway: the requester learns from the answer's
            // tunnel header what this agent reads.
            let message = state::empty_message();
            actions.push(Action::State { peer, message });
        }
        for message in writer.messages() {
            actions.push(Action::State {
                peer,
                message: message.clone(),
            });
        }
        true
    }

    /// Asks every other live host for the flow state it holds: an agent
    /// that restarted (or joined late) so learns the connections, NAT
    /// bindings, MACs and ARP answers of traffic already passing through
    /// it. The answers arrive as state messages.
    pub fn request_sync(&self, topo: &Topology, actions: &mut Vec<Action>) {
        if self.tunnel_mtu().is_none() {
            return;
        }
        let request = state::sync_request();
        for (host, (ip, alive)) in &topo.hosts {
            if *alive && *host != self.host {
                actions.push(Action::State {
                    peer: Peer {
                        host: *host,
                        ip: *ip,
                    },
                    message: request.clone(),
                });
            }
        }
    }
}
