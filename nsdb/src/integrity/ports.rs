//! The integrity rules of ports: links between ports (both sides, never
//! bridge to bridge or within one device), router port subnets that never
//! overlap on one router, and route gateways that stay on the link when a
//! port's addresses change.

use ipnet::IpNet;

use super::{read, rejected, Touched};
use crate::error::NsdbError;
use crate::keys;
use crate::model::{DeviceType, Kind, Port, Record};
use crate::txn::Tx;

/// The rules a created or updated port must keep.
pub(super) async fn check_port(tx: &mut Tx, t: &Touched, port: &Port) -> Result<(), NsdbError> {
    let (kind, id) = (t.kind, t.id);
    let old = match &t.old {
        Some(Record::Port(old)) => Some(old),
        _ => None,
    };
    let peer_changed = old.map(|o| o.peer_id) != Some(port.peer_id);
    if let Some(peer_id) = port.peer_id.filter(|_| peer_changed) {
        let Some(Record::Port(peer)) = read(tx, Kind::Port, peer_id).await? else {
            return Ok(()); // reported as a missing reference
        };
        if peer.peer_id != Some(id) {
            let reason = match peer.peer_id {
                Some(other) => format!("port {peer_id} is already linked to port {other}"),
                None => format!("port {peer_id} is not linked back to this port"),
            };
            return Err(rejected(kind, id, "peer_id", reason));
        }
        if port.device_type == DeviceType::Bridge && peer.device_type == DeviceType::Bridge {
            return Err(rejected(
                kind,
                id,
                "peer_id",
                "bridge-to-bridge links are not allowed",
            ));
        }
        if peer.device_id == port.device_id {
            return Err(rejected(
                kind,
                id,
                "peer_id",
                "cannot link two ports of the same device",
            ));
        }
    }
    if let Some(Record::Port(old)) = &t.old {
        if let Some(old_peer) = old.peer_id.filter(|p| Some(*p) != port.peer_id) {
            if let Some(Record::Port(peer)) = read(tx, Kind::Port, old_peer).await? {
                if peer.peer_id == Some(id) {
                    return Err(rejected(kind, id, "peer_id", format!("port {old_peer} is still linked to this port; unlink both sides together")));
                }
            }
        }
    }
    let address_changed = old.map(|o| o.address) != Some(port.address);
    let extras_changed = old.map(|o| &o.extra_addresses) != Some(&port.extra_addresses);
    if let (DeviceType::Router, Some(address)) = (port.device_type, port.address) {
        if address_changed {
            check_router_subnet(tx, port, address).await?;
        }
        if old.is_some() && (address_changed || extras_changed) {
            check_gateways_still_on_link(tx, port, address).await?;
        }
    }
    Ok(())
}

/// A router port that moves to another subnet (or drops an extra address)
/// must not strand the gateways of the routes that leave through it.
async fn check_gateways_still_on_link(
    tx: &mut Tx,
    port: &Port,
    address: IpNet,
) -> Result<(), NsdbError> {
    for (key, _) in tx
        .range(&keys::references_to_of(port.id, Kind::Route))
        .await?
    {
        let Some((_, route_id)) = keys::parse_reference(&key) else {
            continue;
        };
        if let Some(Record::Route(route)) = read(tx, Kind::Route, route_id).await? {
            let on_link = |gw: &std::net::IpAddr| {
                std::iter::once(&address)
                    .chain(&port.extra_addresses)
                    .any(|a| a.contains(gw))
            };
            if let Some(gw) = route.next_hop_gateway.filter(|gw| !on_link(gw)) {
                return Err(rejected(
                    Kind::Port,
                    port.id,
                    "address",
                    format!(
                        "route {route_id} uses gateway {gw} through this port, outside {address}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.trunc().contains(&b.network()) || b.trunc().contains(&a.network())
}

async fn check_router_subnet(tx: &mut Tx, port: &Port, address: IpNet) -> Result<(), NsdbError> {
    let siblings = tx
        .range(&keys::references_to_of(port.device_id, Kind::Port))
        .await?;
    for (key, _) in siblings {
        let Some((_, sibling_id)) = keys::parse_reference(&key) else {
            continue;
        };
        if sibling_id == port.id {
            continue;
        }
        if let Some(Record::Port(sibling)) = read(tx, Kind::Port, sibling_id).await? {
            if sibling.device_id != port.device_id {
                continue;
            }
            if let Some(other) = sibling.address.filter(|other| overlaps(other, &address)) {
                return Err(NsdbError::Duplicate {
                    kind: Kind::Port,
                    id: port.id,
                    constraint: "subnet on router".into(),
                    value: format!("{address} overlaps {other}"),
                    owner: sibling_id.to_string(),
                });
            }
        }
    }
    Ok(())
}
