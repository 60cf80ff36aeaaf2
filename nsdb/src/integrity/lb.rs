//! Load-balancer rules that span records, checked inside the write's
//! transaction: a VIP's pool belongs to the VIP's load balancer, and a
//! member is an address the load balancer's router reaches.

use ipnet::IpNet;
use uuid::Uuid;

use super::{read, rejected, Tx};
use crate::error::NsdbError;
use crate::keys;
use crate::model::{Kind, PoolMember, Record, Vip};

/// A VIP serves a pool of its own load balancer.
pub(super) async fn check_vip(tx: &mut Tx, vip: &Vip) -> Result<(), NsdbError> {
    let Some(Record::Pool(pool)) = read(tx, Kind::Pool, vip.pool_id).await? else {
        return Ok(()); // reported as a missing reference
    };
    if pool.load_balancer_id != vip.load_balancer_id {
        return Err(rejected(
            Kind::Vip,
            vip.id,
            "pool_id",
            format!(
                "pool {} belongs to load balancer {}, not {}",
                pool.id, pool.load_balancer_id, vip.load_balancer_id
            ),
        ));
    }
    Ok(())
}

/// A member's address is inside a subnet the router reaches: one of its
/// ports' networks or a route's destination (the default route aside, so
/// that a mistyped address is caught).
pub(super) async fn check_member(
    tx: &mut Tx,
    old: Option<&Record>,
    member: &PoolMember,
) -> Result<(), NsdbError> {
    if let Some(Record::PoolMember(old)) = old {
        if (old.address, old.pool_id) == (member.address, member.pool_id) {
            return Ok(());
        }
    }
    let Some(Record::Pool(pool)) = read(tx, Kind::Pool, member.pool_id).await? else {
        return Ok(());
    };
    let Some(Record::LoadBalancer(lb)) =
        read(tx, Kind::LoadBalancer, pool.load_balancer_id).await?
    else {
        return Ok(());
    };
    let reached = reached_networks(tx, lb.router_id).await?;
    if reached.iter().any(|net| net.contains(&member.address)) {
        return Ok(());
    }
    let listed = reached
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Err(rejected(
        Kind::PoolMember,
        member.id,
        "address",
        format!(
            "{} is outside every subnet router {} reaches ({})",
            member.address,
            lb.router_id,
            if listed.is_empty() { "none" } else { &listed }
        ),
    ))
}

/// The networks of `router`'s ports and the destinations of its routes,
/// default routes left out.
async fn reached_networks(tx: &mut Tx, router: Uuid) -> Result<Vec<IpNet>, NsdbError> {
    let mut reached = Vec::new();
    for kind in [Kind::Port, Kind::Route] {
        for (key, _) in tx.range(&keys::references_to_of(router, kind)).await? {
            let Some((_, id)) = keys::parse_reference(&key) else {
                continue;
            };
            match read(tx, kind, id).await? {
                Some(Record::Port(port)) if port.device_id == router => {
                    reached.extend(port.address.map(|a| a.trunc()));
                }
                Some(Record::Route(route))
                    if route.router_id == router && route.dst.prefix_len() > 0 =>
                {
                    reached.push(route.dst);
                }
                _ => {}
            }
        }
    }
    Ok(reached)
}
