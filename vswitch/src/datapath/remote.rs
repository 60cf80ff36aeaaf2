//! The datapath's side of the tunnel: frames whose egress port is bound on
//! another host, the flow state those hosts need, and path-MTU answers for
//! frames the tunnel cannot carry.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::{Datapath, Scratch};
use crate::engine::frames::{icmp_error, IcmpError};
use crate::engine::{Egress, Generated, Learning, PacketInfo, Simulation};
use crate::io::{ipv4_of, Datagrams, VnetHeader};
use crate::snapshot::Topology;
use crate::tunnel::state::StateWriter;
use crate::tunnel::STATE_KEY;
use crate::wire::Vni;

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
                Learning::Fragment { .. } => {}
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
