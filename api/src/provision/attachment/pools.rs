//! Which pools an attachment leases from: one per address family of its
//! bridge, or the ones the request names.

use nsdb::{Bridge, IpPool, Nsdb, Tenant};
use uuid::Uuid;

use super::AttachmentRequest;
use crate::problem::Problem;
use crate::provision::init_tenant_network;

/// The pools of `bridge`, IPv4 first, then by name.
pub(super) async fn pools_of_bridge(nsdb: &Nsdb, bridge: Uuid) -> Result<Vec<IpPool>, Problem> {
    let mut pools: Vec<IpPool> = nsdb
        .list::<IpPool>()
        .await?
        .into_iter()
        .filter(|p| p.bridge_id == Some(bridge))
        .collect();
    sort_pools(&mut pools);
    Ok(pools)
}

/// IPv4 first, then by name.
fn sort_pools(pools: &mut [IpPool]) {
    pools.sort_by(|a, b| {
        (a.cidr.addr().is_ipv6(), &a.name).cmp(&(b.cidr.addr().is_ipv6(), &b.name))
    });
}

/// The first pool of each family (`pools` sorted by [`sort_pools`]).
fn one_per_family(pools: Vec<IpPool>) -> Vec<IpPool> {
    let mut out: Vec<IpPool> = Vec::new();
    for pool in pools {
        if !out
            .iter()
            .any(|p| p.cidr.addr().is_ipv6() == pool.cidr.addr().is_ipv6())
        {
            out.push(pool);
        }
    }
    out
}

/// The bridge an attachment joins and the pools it leases from (IPv4
/// first): the request's `pools`, else one pool of each family of the
/// request's bridge or of the tenant's default network (initialised when
/// missing).
pub(super) async fn choose_pools(
    nsdb: &Nsdb,
    tenant: &Tenant,
    request: &AttachmentRequest,
) -> Result<(Uuid, Vec<IpPool>), Problem> {
    let bridge_of_tenant = |bridge: &Bridge, field: &str| {
        if bridge.tenant_id == tenant.id {
            Ok(())
        } else {
            Err(Problem::bad_request(format!(
                "bridge {} is not tenant {}'s",
                bridge.id, tenant.name
            ))
            .with_field(field))
        }
    };
    if !request.pools.is_empty() {
        let pools = named_pools(nsdb, &request.pools).await?;
        let bridge_id = pools[0].bridge_id.unwrap_or_default();
        if let Some(wanted) = request.bridge_id.filter(|b| *b != bridge_id) {
            return Err(Problem::bad_request(format!(
                "the pools are bridge {bridge_id}'s, not bridge {wanted}'s"
            ))
            .with_field("pools"));
        }
        let bridge: Bridge = nsdb.fetch(bridge_id).await?;
        bridge_of_tenant(&bridge, "pools")?;
        return Ok((bridge_id, pools));
    }
    let bridge_id = match request.bridge_id {
        Some(bridge_id) => {
            let bridge: Bridge = nsdb.fetch(bridge_id).await?;
            bridge_of_tenant(&bridge, "bridge_id")?;
            bridge_id
        }
        // An existing network is taken as it is (an attach never makes it
        // dual-stack; `tenant init` does).
        None => match tenant.network {
            Some(network) => network.bridge_id,
            None => {
                let (network, _) =
                    init_tenant_network(nsdb, tenant.id, (None, None), false).await?;
                network.bridge.id
            }
        },
    };
    let pools = one_per_family(pools_of_bridge(nsdb, bridge_id).await?);
    if pools.is_empty() {
        return Err(
            Problem::bad_request(format!("bridge {bridge_id} has no address pool"))
                .with_field("bridge_id"),
        );
    }
    Ok((bridge_id, pools))
}

/// The pools `names` names (each by id or name), IPv4 first: all of one
/// bridge, at most one per family.
async fn named_pools(nsdb: &Nsdb, names: &[String]) -> Result<Vec<IpPool>, Problem> {
    let all = nsdb.list::<IpPool>().await?;
    let mut chosen: Vec<IpPool> = Vec::new();
    for name in names {
        let id = Uuid::parse_str(name).ok();
        let pool = all
            .iter()
            .find(|p| Some(p.id) == id || p.name == *name)
            .ok_or_else(|| {
                Problem::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "missing-reference",
                    "A referenced object does not exist",
                    format!("ip pool '{name}' not found"),
                )
                .with_field("pools")
            })?;
        let refuse = |detail: String| Err(Problem::bad_request(detail).with_field("pools"));
        let Some(bridge) = pool.bridge_id else {
            return refuse(format!("ip pool '{name}' belongs to no bridge"));
        };
        if let Some(first) = chosen.first() {
            if first.bridge_id != Some(bridge) {
                return refuse(format!(
                    "ip pools '{}' and '{}' are on different bridges",
                    first.name, pool.name
                ));
            }
        }
        if let Some(twin) = chosen
            .iter()
            .find(|p| p.cidr.addr().is_ipv6() == pool.cidr.addr().is_ipv6())
        {
            return refuse(format!(
                "ip pools '{}' and '{}' are of one family; a pod gets one address per family",
                twin.name, pool.name
            ));
        }
        chosen.push(pool.clone());
    }
    sort_pools(&mut chosen);
    Ok(chosen)
}
