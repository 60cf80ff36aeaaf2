//! What the tunnel needs from the topology: which key (VNI) means which
//! port or bridge, which addresses are registered hosts, which ports of a
//! bridge each host serves, and which ports reach external VTEPs.

use std::net::IpAddr;

use nsdb::{Record, VtepEndpoint};
use uuid::Uuid;

use super::{Device, Topology, TopologyBase};

/// What a tunnel key designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTarget {
    /// Deliver to this exterior port.
    Port(Uuid),
    /// Deliver to every exterior port of this bridge on the receiving host
    /// (a flood, sent once per host).
    Bridge(Uuid),
}

/// The tunnel's lookups, precomputed per snapshot.
#[derive(Debug, Clone, Default)]
pub struct TunnelIndex {
    /// Tunnel keys of ports and bridges.
    pub keys: crate::FastMap<u32, KeyTarget>,
    /// Each bridge's flood key.
    pub bridge_keys: crate::FastMap<Uuid, u32>,
    /// Registered hosts by tunnel address.
    pub hosts_by_ip: crate::FastMap<IpAddr, Uuid>,
    /// The exterior ports of a bridge bound on a host, sorted.
    pub host_ports: crate::FastMap<(Uuid, Uuid), Vec<Uuid>>,
    /// Ports that reach an external VXLAN endpoint.
    pub vteps: crate::FastMap<Uuid, VtepEndpoint>,
}

impl Topology {
    pub(super) fn index_tunnel(&mut self, records: &[&Record]) {
        let mut index = TunnelIndex::default();
        for record in records {
            match record {
                Record::Bridge(b) if b.tunnel_key != 0 => {
                    index.keys.insert(b.tunnel_key, KeyTarget::Bridge(b.id));
                    index.bridge_keys.insert(b.id, b.tunnel_key);
                }
                Record::Port(p) => {
                    index.keys.insert(p.tunnel_key, KeyTarget::Port(p.id));
                    if let Some(vtep) = p.vtep {
                        index.vteps.insert(p.id, vtep);
                    }
                }
                _ => {}
            }
        }
        for (id, (ip, _)) in &self.hosts {
            index.hosts_by_ip.insert(*ip, *id);
        }
        for port in self.ports.values() {
            if let (Device::Bridge(bridge), Some(host), None) = (port.device, port.host, port.peer)
            {
                index
                    .host_ports
                    .entry((bridge, host))
                    .or_default()
                    .push(port.id);
            }
        }
        for ports in index.host_ports.values_mut() {
            ports.sort();
        }
        self.tunnel = index;
    }

    /// Moves the binding of the exterior bridge port `port` (known to this
    /// topology) to the record's host and interface: what
    /// [`Topology::build_from`] makes of a change of nothing else. The
    /// shared base is copied first if another snapshot shares it (and the
    /// binding really moved); nothing is built.
    pub fn rebind(&mut self, port: &nsdb::Port) {
        let unchanged = self
            .ports
            .get(&port.id)
            .is_none_or(|info| info.host == port.host_id && info.interface == port.interface_name);
        if unchanged {
            return;
        }
        let TopologyBase { ports, tunnel, .. } = &mut **self;
        let Some(info) = ports.get_mut(&port.id) else {
            return;
        };
        let before = info.host;
        info.host = port.host_id;
        info.interface = port.interface_name.clone();
        let Device::Bridge(bridge) = info.device else {
            return;
        };
        if info.peer.is_some() || before == port.host_id {
            return;
        }
        if let Some(host) = before {
            if let Some(list) = tunnel.host_ports.get_mut(&(bridge, host)) {
                list.retain(|id| *id != port.id);
                if list.is_empty() {
                    tunnel.host_ports.remove(&(bridge, host));
                }
            }
        }
        if let Some(host) = port.host_id {
            let list = tunnel.host_ports.entry((bridge, host)).or_default();
            if let Err(at) = list.binary_search(&port.id) {
                list.insert(at, port.id);
            }
        }
    }

    /// The tunnel address of `host`, if registered.
    pub fn host_ip(&self, host: Uuid) -> Option<IpAddr> {
        self.hosts.get(&host).map(|(ip, _)| *ip)
    }

    /// The bridge `port` belongs to, if it is a bridge port.
    pub fn bridge_of(&self, port: Uuid) -> Option<Uuid> {
        match self.ports.get(&port)?.device {
            Device::Bridge(b) => Some(b),
            Device::Router(_) => None,
        }
    }
}
