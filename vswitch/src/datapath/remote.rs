//! The datapath's side of the tunnel: frames whose egress port is bound on
//! another host, the flow state those hosts need, and path-MTU answers for
//! frames the tunnel cannot carry.

use std::collections::BTreeSet;
use std::net::IpAddr;

use uuid::Uuid;

use super::{Datapath, Scratch};
use crate::engine::frames::{icmp_error, IcmpError};
use crate::engine::{Egress, Generated, Learning, PacketInfo, Simulation};
use crate::io::{ipv4_of, Datagrams, VnetHeader};
use crate::snapshot::Topology;
use crate::tunnel::state::{self, StateWriter};
use crate::tunnel::STATE_KEY;
use crate::wire::Vni;

/// How often one peer's sync request is answered at most.
pub const SYNC_INTERVAL_MS: u64 = 1_000;

impl Datapath {
    /// When `frame` must cross the tunnel but is too big for it and may
    /// not be fragmented, answers the sender with ICMP fragmentation-needed
    /// and removes the remote outputs. Returns true if no output is left.
    pub(super) fn refuse_oversize(
        &self,
        in_port: Uuid,
        info: &PacketInfo,
        vnet: VnetHeader,
        frame: &[u8],
        scratch: &mut Scratch,
    ) -> bool {
        let Some(tunnel) = self.tunnel.get() else {
            return false;
        };
        if vnet.is_gso()
            || scratch
                .outputs
                .iter()
                .all(|o| o.egress.host == Some(self.host))
        {
            return false;
        }
        let mtu = tunnel.config().max_ip_len();
        let dst = match ipv4_of(frame) {
            Some(ip) if ip.dont_frag() && usize::from(ip.total_len()) > mtu => ip.dst_addr(),
            _ => return false,
        };
        let kind = IcmpError::FragmentationNeeded {
            mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        };
        if let Some(answer) = icmp_error(kind, frame, dst, info.eth_dst, info.eth_src) {
            scratch.generated.push(Generated {
                egress: Egress {
                    host: Some(self.host),
                    port: in_port,
                },
                frame: answer,
            });
        }
        self.count("tunnel_frag_needed");
        scratch.outputs.retain(|o| o.egress.host == Some(self.host));
        scratch.outputs.is_empty()
    }

    /// Queues `frame` for the remote `egresses` (sorted here): once per
    /// host with the bridge's key when it goes to every port of one bridge
    /// on that host, otherwise once per port with the port's key.
    pub(super) fn queue_remote(
        &self,
        topology: &Topology,
        egresses: &mut [Egress],
        vnet: &VnetHeader,
        frame: &[u8],
        datagrams: &mut Datagrams,
    ) {
        let Some(tunnel) = self.tunnel.get() else {
            self.count("tunnel_unavailable");
            return;
        };
        egresses.sort_by_key(|e| (e.host, e.port));
        let max_ip_len = tunnel.config().max_ip_len();
        let mut start = 0;
        while start < egresses.len() {
            let host = egresses[start].host;
            let end = start
                + egresses[start..]
                    .iter()
                    .take_while(|e| e.host == host)
                    .count();
            let run = &egresses[start..end];
            start = end;
            let Some(ip) = host.and_then(|h| topology.host_ip(h)) else {
                self.count("tunnel_unknown_peer");
                continue;
            };
            let dest = tunnel.peer(ip);
            let mut push = |key: u32| {
                if vnet.is_gso() && datagrams.push_offloaded(dest, key, vnet, frame) {
                    return;
                }
                let Some(vni) = Vni::new(key) else { return };
                if let Err(error) = datagrams.push_frame(dest, vni, vnet, frame, max_ip_len) {
                    self.count(error.name());
                }
            };
            match flood_key(topology, run) {
                Some(key) => push(key),
                None => {
                    for egress in run {
                        match topology.ports.get(&egress.port) {
                            Some(port) => push(port.tunnel_key),
                            None => self.count("tunnel_unknown_port"),
                        }
                    }
                }
            }
        }
    }

    /// Queues the flow state `sim` learned for the hosts that need it:
    /// connections (with their NAT bindings) to the hosts the packet goes
    /// to, learned MACs and ARP answers to every live host.
    pub(super) fn queue_state(
        &self,
        topology: &Topology,
        sim: &Simulation,
        datagrams: &mut Datagrams,
    ) {
        if sim.learned.is_empty() {
            return;
        }
        let Some(tunnel) = self.tunnel.get() else {
            return;
        };
        let egress_hosts: BTreeSet<Uuid> = sim
            .outputs
            .iter()
            .map(|o| o.egress)
            .chain(sim.generated.iter().map(|g| g.egress))
            .filter_map(|e| e.host)
            .filter(|h| *h != self.host)
            .collect();
        let live_hosts: BTreeSet<Uuid> = topology
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
        let Some(vni) = Vni::new(STATE_KEY) else {
            return;
        };
        for (writer, hosts) in [(&conns, &egress_hosts), (&addresses, &live_hosts)] {
            for host in hosts {
                let Some(ip) = topology.host_ip(*host) else {
                    continue;
                };
                for message in writer.messages() {
                    datagrams.push_raw(tunnel.peer(ip), vni, message);
                }
            }
        }
    }

    /// Asks every other live host for the flow state it holds: an agent
    /// that restarted (or joined late) so learns the connections, NAT
    /// bindings, MACs and ARP answers of traffic already passing through
    /// it. Answers are imported like any state message.
    pub fn request_sync(&self) {
        let Some(tunnel) = self.tunnel.get() else {
            return;
        };
        let (topology, Some(vni)) = (self.topology.load(), Vni::new(STATE_KEY)) else {
            return;
        };
        let request = state::sync_request();
        let mut datagrams = Datagrams::default();
        for (host, (ip, alive)) in &topology.hosts {
            if *alive && *host != self.host {
                datagrams.push_raw(tunnel.peer(*ip), vni, &request);
            }
        }
        self.flush_remote(&datagrams);
    }

    /// Answers a sync request from the agent at `requester` (a registered
    /// host) with every connection and learned address this host holds, at
    /// most once per [`SYNC_INTERVAL_MS`] per requester.
    pub fn answer_sync(&self, requester: IpAddr) {
        let Some(tunnel) = self.tunnel.get() else {
            return;
        };
        let now = self.now_ms();
        {
            let mut answered = self.sync_answered.lock().unwrap_or_else(|p| p.into_inner());
            if answered
                .get(&requester)
                .is_some_and(|at| now.saturating_sub(*at) < SYNC_INTERVAL_MS)
            {
                self.count("tunnel_sync_throttled");
                return;
            }
            answered.insert(requester, now);
        }
        let mut writer = StateWriter::default();
        {
            let state = self.state();
            for entry in state.learned.conns().entries() {
                writer.push(&Learning::Conn(*entry));
            }
            for learning in state.learned.addresses() {
                writer.push(&learning);
            }
        }
        let Some(vni) = Vni::new(STATE_KEY) else {
            return;
        };
        let peer = tunnel.peer(requester);
        for chunk in writer.messages().chunks(64) {
            let mut datagrams = Datagrams::default();
            for message in chunk {
                datagrams.push_raw(peer, vni, message);
            }
            self.flush_remote(&datagrams);
        }
        self.count("tunnel_sync_answered");
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
}

/// The bridge's flood key when `run` (egresses on one host) is exactly
/// every exterior port of one bridge on that host.
fn flood_key(topology: &Topology, run: &[Egress]) -> Option<u32> {
    if run.len() < 2 {
        return None;
    }
    let host = run[0].host?;
    let bridge = topology.bridge_of(run[0].port)?;
    let all = topology.tunnel.host_ports.get(&(bridge, host))?;
    let same = all.len() == run.len() && all.iter().zip(run).all(|(p, e)| *p == e.port);
    if same {
        topology.tunnel.bridge_keys.get(&bridge).copied()
    } else {
        None
    }
}
