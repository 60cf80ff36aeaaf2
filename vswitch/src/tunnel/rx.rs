//! The tunnel's receive loop: classify each datagram by sender and key,
//! deliver frames to local ports without simulating them again, hand
//! frames from external VTEPs to their ports, and import flow state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uuid::Uuid;

use super::{state, Tunnel, STATE_KEY};
use crate::datapath::Datapath;
use crate::io::{
    parse_offloaded, Port, PortIo, RxBatch, VnetHeader, OFFLOAD_KEY, OFFLOAD_PREAMBLE, VXLAN_AT,
};
use crate::snapshot::{KeyTarget, Topology};
use crate::wire::VxlanPacket;

/// What to do with one received datagram (borrowing from the topology, so
/// classifying allocates nothing).
#[derive(Debug, PartialEq, Eq)]
enum Verdict<'a> {
    /// Send to these local ports.
    Deliver(&'a [Uuid]),
    /// A frame from an external VTEP, entering through this port.
    FromVtep(Uuid),
    /// Flow state from another agent.
    State,
    /// Drop, counted under this name.
    Drop(&'static str),
}

fn classify(topo: &Topology, host: Uuid, source: SocketAddr, vni: u32) -> Verdict<'_> {
    if topo.tunnel.hosts_by_ip.contains_key(&source.ip()) {
        if vni == STATE_KEY {
            return Verdict::State;
        }
        if vni == OFFLOAD_KEY {
            return Verdict::Drop("tunnel_nested_offload");
        }
        return match topo.tunnel.keys.get(&vni) {
            Some(KeyTarget::Port(port))
                if topo.ports.get(port).and_then(|p| p.host) == Some(host) =>
            {
                Verdict::Deliver(std::slice::from_ref(port))
            }
            Some(KeyTarget::Bridge(bridge)) => match topo.tunnel.host_ports.get(&(*bridge, host)) {
                Some(ports) => Verdict::Deliver(ports),
                None => Verdict::Drop("tunnel_unknown_key"),
            },
            _ => Verdict::Drop("tunnel_unknown_key"),
        };
    }
    let vtep = topo.tunnel.vteps.iter().find(|(port, endpoint)| {
        endpoint.remote_ip == source.ip()
            && endpoint.vni == vni
            && topo.ports.get(port).and_then(|p| p.host) == Some(host)
    });
    match vtep {
        Some((port, _)) => Verdict::FromVtep(*port),
        None => Verdict::Drop("tunnel_unknown_host"),
    }
}

/// Receives on the tunnel until the socket fails.
pub async fn serve_tunnel(datapath: Arc<Datapath>, tunnel: Arc<Tunnel>) -> std::io::Result<()> {
    // Slots hold 64 KiB: a kernel VXLAN device on this machine may hand its
    // underlay whole TCP super-frames (see `io::offload_of_received`).
    let mut rx = RxBatch::new(64);
    let mut sources = Vec::with_capacity(64);
    let mut sends: HashMap<Uuid, Vec<usize>> = HashMap::new();
    loop {
        let n = tunnel.socket().recv_batch(&mut rx, &mut sources).await?;
        if n == 0 {
            continue;
        }
        let topo = datapath.topology();
        let host = datapath.host();
        for list in sends.values_mut() {
            list.clear();
        }
        for (i, source) in sources.iter().enumerate().take(n) {
            let vni = match rx.wire(i).map(|w| VxlanPacket::new_checked(&w[VXLAN_AT..])) {
                Some(Ok(packet)) => packet.vni().get(),
                _ => {
                    datapath.count("tunnel_malformed");
                    continue;
                }
            };
            rx.set_vnet(i, &VnetHeader::NONE);
            let mut vni = vni;
            if vni == OFFLOAD_KEY && topo.tunnel.hosts_by_ip.contains_key(&source.ip()) {
                // A super-frame another agent sent whole: unwrap it and
                // deliver it with its offload header.
                let Some((key, vnet)) = parse_offloaded(rx.frame(i)) else {
                    datapath.count("tunnel_malformed_offload");
                    continue;
                };
                rx.strip_front(i, OFFLOAD_PREAMBLE, &vnet);
                vni = key;
            }
            match classify(&topo, host, *source, vni) {
                Verdict::Deliver(ports) => {
                    for port in ports {
                        sends.entry(*port).or_default().push(i);
                    }
                }
                Verdict::FromVtep(port) => match datapath.port(port) {
                    Some(handle) => match &handle.io {
                        Port::Vtep(vtep) if vtep.deliver(rx.frame(i)) => {}
                        _ => datapath.count("tunnel_vtep_queue_full"),
                    },
                    None => datapath.count("tunnel_vtep_not_attached"),
                },
                Verdict::State if state::is_sync_request(rx.frame(i)) => {
                    datapath.answer_sync(source.ip());
                }
                Verdict::State => match state::decode(rx.frame(i)) {
                    Some(learnings) => datapath.import(&learnings),
                    None => datapath.count("tunnel_malformed_state"),
                },
                Verdict::Drop(reason) => datapath.count(reason),
            }
        }
        for (port, which) in sends.iter().filter(|(_, w)| !w.is_empty()) {
            let Some(out) = datapath.port(*port) else {
                datapath.count("tunnel_port_not_attached");
                continue;
            };
            let mut done = 0;
            while done < which.len() {
                match out.io.send_rx(&rx, &which[done..]) {
                    Ok(k) if k > 0 => {
                        out.counters.tx.fetch_add(k as u64, Ordering::Relaxed);
                        done += k;
                    }
                    _ => {
                        out.counters.drops.fetch_add(1, Ordering::Relaxed);
                        done += 1;
                    }
                }
            }
        }
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
        assert_eq!(classify(&topo, me, peer, 11), Verdict::Deliver(&[p(1)]));
        assert_eq!(
            classify(&topo, me, peer, 500),
            Verdict::Deliver(&[p(1), p(2), p(9)])
        );
        assert_eq!(classify(&topo, me, peer, STATE_KEY), Verdict::State);
        // A key of a port on another host, or no port at all.
        assert_eq!(
            classify(&topo, me, peer, 13),
            Verdict::Drop("tunnel_unknown_key")
        );
        assert_eq!(
            classify(&topo, me, peer, 77),
            Verdict::Drop("tunnel_unknown_key")
        );
        // Unregistered senders are refused whatever the key.
        assert_eq!(
            classify(&topo, me, stranger, 11),
            Verdict::Drop("tunnel_unknown_host")
        );
        assert_eq!(
            classify(&topo, me, stranger, STATE_KEY),
            Verdict::Drop("tunnel_unknown_host")
        );
        // The VTEP's endpoint, on its VNI only.
        assert_eq!(classify(&topo, me, vtep, 42), Verdict::FromVtep(p(9)));
        assert_eq!(
            classify(&topo, me, vtep, 43),
            Verdict::Drop("tunnel_unknown_host")
        );
        assert_eq!(
            classify(&topo, other, vtep, 42),
            Verdict::Drop("tunnel_unknown_host")
        );
    }
}
