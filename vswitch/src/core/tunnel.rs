//! The core's tunnel decisions: which host and key a frame for another
//! host travels with, which frames the tunnel cannot carry (answered with
//! ICMP fragmentation-needed, or ICMPv6 packet-too-big: IPv6 is never
//! fragmented on the way), and what a received datagram is.

use std::net::SocketAddr;

use uuid::Uuid;

use super::{Action, DatapathCore, Peer, Reason};
use crate::engine::frames::{icmp_error, IcmpError};
use crate::engine::frames6::{self, Icmp6Error};
use crate::engine::{Egress, Output};
use crate::flows::FlowKey;
use crate::io::{ipv4_of, VnetHeader, OFFLOAD_KEY};
use crate::snapshot::{KeyTarget, Topology};
use crate::tunnel::STATE_KEY;

impl DatapathCore {
    /// Appends a frame the core made, to its egress: a local port, or the
    /// tunnel with the egress port's key.
    pub(super) fn emit(
        &self,
        topo: &Topology,
        egress: Egress,
        frame: Vec<u8>,
        actions: &mut Vec<Action>,
    ) {
        if egress.host == Some(self.host) {
            actions.push(Action::Emit {
                port: egress.port,
                frame,
            });
            return;
        }
        let Some(peer) = self.peer(topo, egress.host, actions) else {
            return;
        };
        match topo.ports.get(&egress.port) {
            Some(port) => actions.push(Action::EmitTunnel {
                peer,
                key: port.tunnel_key,
                frame,
            }),
            None => actions.push(Action::Drop(Reason::TunnelUnknownPort)),
        }
    }

    /// The tunnel's way to `host`, or the reason there is none (appended).
    fn peer(&self, topo: &Topology, host: Option<Uuid>, actions: &mut Vec<Action>) -> Option<Peer> {
        if self.tunnel_mtu().is_none() {
            actions.push(Action::Drop(Reason::TunnelUnavailable));
            return None;
        }
        let found = host.and_then(|host| {
            Some(Peer {
                host,
                ip: topo.host_ip(host)?,
            })
        });
        if found.is_none() {
            actions.push(Action::Drop(Reason::TunnelUnknownPeer));
        }
        found
    }

    /// Appends the tunnel sends of the received frame to the remote
    /// `egresses` (sorted here): once per host with the bridge's key when
    /// it goes to every port of one bridge on that host, otherwise once per
    /// port with the port's key.
    pub(super) fn tunnel_out(
        &self,
        topo: &Topology,
        egresses: &mut [Egress],
        actions: &mut Vec<Action>,
    ) {
        if self.tunnel_mtu().is_none() {
            actions.push(Action::Drop(Reason::TunnelUnavailable));
            return;
        }
        egresses.sort_unstable_by_key(|e| (e.host, e.port));
        for run in egresses.chunk_by(|a, b| a.host == b.host) {
            let Some(peer) = self.peer(topo, run[0].host, actions) else {
                continue;
            };
            if let Some(key) = flood_key(topo, run) {
                actions.push(Action::Tunnel { peer, key });
                continue;
            }
            for egress in run {
                match topo.ports.get(&egress.port) {
                    Some(port) => actions.push(Action::Tunnel {
                        peer,
                        key: port.tunnel_key,
                    }),
                    None => actions.push(Action::Drop(Reason::TunnelUnknownPort)),
                }
            }
        }
    }

    /// When the received frame must cross the tunnel but is too big for it
    /// and may not be fragmented (IPv4 with DF, or IPv6), answers the
    /// sender with ICMP fragmentation-needed (ICMPv6 packet-too-big) and
    /// removes the remote outputs. Returns true if no output is left.
    pub(super) fn refuse_oversize(
        &self,
        key: &FlowKey,
        vnet: VnetHeader,
        frame: &[u8],
        outputs: &mut Vec<Output>,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(mtu) = self.tunnel_mtu() else {
            return false;
        };
        if vnet.is_gso() || outputs.iter().all(|o| o.egress.host == Some(self.host)) {
            return false;
        }
        let info = &key.packet;
        let answer = match (ipv4_of(frame), info.ipv6()) {
            (Some(ip), _) if ip.dont_frag() && usize::from(ip.total_len()) > mtu => {
                let kind = IcmpError::FragmentationNeeded {
                    mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
                };
                icmp_error(kind, frame, ip.dst_addr(), info.eth_dst, info.eth_src)
            }
            (None, Some(ip)) if ipv6_len(frame) > mtu => {
                let kind = Icmp6Error::PacketTooBig {
                    mtu: u32::try_from(mtu).unwrap_or(u32::MAX),
                };
                frames6::error(kind, frame, ip.dst, info.eth_dst, info.eth_src)
            }
            _ => return false,
        };
        if let Some(answer) = answer {
            actions.push(Action::Emit {
                port: key.in_port,
                frame: answer,
            });
        }
        actions.push(Action::Drop(Reason::TunnelFragNeeded));
        outputs.retain(|o| o.egress.host == Some(self.host));
        outputs.is_empty()
    }
}

/// The length of the IPv6 packet in the untagged `frame` (0 if it is not
/// one).
fn ipv6_len(frame: &[u8]) -> usize {
    match frame.get(12..14) {
        Some([0x86, 0xdd]) => crate::wire::Ipv6Packet::new_checked(&frame[14..]).map_or(0, |ip| {
            crate::wire::IPV6_HEADER_LEN + usize::from(ip.payload_len())
        }),
        _ => 0,
    }
}

/// The bridge's flood key when `run` (egresses on one host) is exactly
/// every exterior port of one bridge on that host.
fn flood_key(topo: &Topology, run: &[Egress]) -> Option<u32> {
    if run.len() < 2 {
        return None;
    }
    let host = run[0].host?;
    let bridge = topo.bridge_of(run[0].port)?;
    let all = topo.tunnel.host_ports.get(&(bridge, host))?;
    let same = all.len() == run.len() && all.iter().zip(run).all(|(p, e)| *p == e.port);
    if same {
        topo.tunnel.bridge_keys.get(&bridge).copied()
    } else {
        None
    }
}

/// What a datagram received from the tunnel is (borrowing from the
/// topology, so classifying allocates nothing).
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<'a> {
    /// A frame for these local ports: sent as it is, not simulated again.
    Deliver(&'a [Uuid]),
    /// A frame from an external VTEP, entering through this port.
    FromVtep(Uuid),
    /// Flow state (or a sync request) from another agent.
    State,
    /// Dropped, for this reason.
    Drop(Reason),
}

/// What the datagram from `source` with key `vni` is to `host` (after an
/// offloaded super-frame's own key has been read: see
/// [`crate::io::parse_offloaded`]). Only registered hosts and the VTEP
/// endpoints of ports served here are heard.
pub fn classify(topo: &Topology, host: Uuid, source: SocketAddr, vni: u32) -> Arrival<'_> {
    if topo.tunnel.hosts_by_ip.contains_key(&source.ip()) {
        if vni == STATE_KEY {
            return Arrival::State;
        }
        if vni == OFFLOAD_KEY {
            return Arrival::Drop(Reason::TunnelNestedOffload);
        }
        return match topo.tunnel.keys.get(&vni) {
            Some(KeyTarget::Port(port))
                if topo.ports.get(port).and_then(|p| p.host) == Some(host) =>
            {
                Arrival::Deliver(std::slice::from_ref(port))
            }
            Some(KeyTarget::Bridge(bridge)) => match topo.tunnel.host_ports.get(&(*bridge, host)) {
                Some(ports) => Arrival::Deliver(ports),
                None => Arrival::Drop(Reason::TunnelUnknownKey),
            },
            _ => Arrival::Drop(Reason::TunnelUnknownKey),
        };
    }
    let vtep = topo.tunnel.vteps.iter().find(|(port, endpoint)| {
        endpoint.remote_ip == source.ip()
            && endpoint.vni == vni
            && topo.ports.get(port).and_then(|p| p.host) == Some(host)
    });
    match vtep {
        Some((port, _)) => Arrival::FromVtep(*port),
        None => Arrival::Drop(Reason::TunnelUnknownHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsdb::{Bridge, DeviceType, Host, MacAddr, Port as NsdbPort, Record, VtepEndpoint};

    fn port(id: u128, bridge: Uuid, host: Option<Uuid>, key: u32) -> Record {
        Record::Port(NsdbPort {
            id: Uuid::from_u128(id),
            revision: 1,
            device_id: bridge,
            device_type: DeviceType::Bridge,
            mac: MacAddr([2, 0, 0, 0, 0, id as u8]),
            address: None,
            extra_addresses: Vec::new(),
            peer_id: None,
            host_id: host,
            interface_name: host.map(|_| format!("veth{id}")),
            inbound_chain_id: None,
            outbound_chain_id: None,
            allowed_addresses: vec![],
            tunnel_key: key,
            vtep: (id == 9).then_some(VtepEndpoint {
                vni: 42,
                remote_ip: "198.51.100.9".parse().unwrap(),
                remote_port: 4789,
            }),
            labels: Default::default(),
        })
    }

    #[test]
    fn classifies_by_sender_and_key() {
        let bridge = Uuid::from_u128(100);
        let (me, other) = (Uuid::from_u128(1000), Uuid::from_u128(1001));
        let host = |id: Uuid, ip: &str| {
            Record::Host(Host {
                id,
                revision: 1,
                name: id.to_string(),
                tunnel_ip: ip.parse().unwrap(),
                underlay_mtu: 1500,
                alive: true,
            })
        };
        let records = vec![
            Record::Bridge(Bridge {
                id: bridge,
                revision: 1,
                tenant_id: Uuid::nil(),
                name: "b".into(),
                admin_state_up: true,
                inbound_chain_id: None,
                outbound_chain_id: None,
                tunnel_key: 500,
            }),
            host(me, "192.0.2.1"),
            host(other, "192.0.2.2"),
            port(1, bridge, Some(me), 11),
            port(2, bridge, Some(me), 12),
            port(3, bridge, Some(other), 13),
            port(9, bridge, Some(me), 19),
        ];
        let topo = Topology::build(1, &records);
        let peer: SocketAddr = "192.0.2.2:4789".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.5:4789".parse().unwrap();
        let vtep: SocketAddr = "198.51.100.9:4789".parse().unwrap();
        let p = Uuid::from_u128;
        assert_eq!(classify(&topo, me, peer, 11), Arrival::Deliver(&[p(1)]));
        assert_eq!(
            classify(&topo, me, peer, 500),
            Arrival::Deliver(&[p(1), p(2), p(9)])
        );
        assert_eq!(classify(&topo, me, peer, STATE_KEY), Arrival::State);
        // A key of a port on another host, or no port at all.
        assert_eq!(
            classify(&topo, me, peer, 13),
            Arrival::Drop(Reason::TunnelUnknownKey)
        );
        assert_eq!(
            classify(&topo, me, peer, 77),
            Arrival::Drop(Reason::TunnelUnknownKey)
        );
        // Unregistered senders are refused whatever the key.
        assert_eq!(
            classify(&topo, me, stranger, 11),
            Arrival::Drop(Reason::TunnelUnknownHost)
        );
        assert_eq!(
            classify(&topo, me, stranger, STATE_KEY),
            Arrival::Drop(Reason::TunnelUnknownHost)
        );
        // The VTEP's endpoint, on its VNI only.
        assert_eq!(classify(&topo, me, vtep, 42), Arrival::FromVtep(p(9)));
        assert_eq!(
            classify(&topo, me, vtep, 43),
            Arrival::Drop(Reason::TunnelUnknownHost)
        );
        assert_eq!(
            classify(&topo, other, vtep, 42),
            Arrival::Drop(Reason::TunnelUnknownHost)
        );
    }
}
