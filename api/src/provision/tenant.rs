//! A tenant's default network in one step, the way the MidoNet CNI flow
//! built it: a tenant router linked to the provider router over a per-tenant
//! /30, its inbound and outbound chains (return traffic allowed, the host
//! allowed, new connections from the outside dropped, masquerade towards
//! the provider), a default route to the provider, a provider route back to
//! the pod subnet, and a default bridge with the pod subnet's pool behind
//! the router port that is the pods' gateway.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nsdb::{
    Bridge, Chain, IpPool, Kind, Mutation, Nsdb, NsdbError, Port, Provider, Record, Route, Router,
    Rule, Tenant,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tenant_plan::{self, Inputs, Request};
use super::{lost_race, tenant6, tenant6_add, unavailable, ATTEMPTS};
use crate::problem::Problem;

/// A tenant's default network, as `POST/GET /v1/tenants/{id}/network` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TenantNetwork {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The tenant router, linked to the provider router.
    pub router: Router,
    /// The default bridge the pods join.
    pub bridge: Bridge,
    /// The router port on the bridge: the pods' gateway.
    pub router_port: Port,
    /// The router port linked to the provider router.
    pub link_port: Port,
    /// The bridge's address pool.
    pub pool: IpPool,
    /// The pod subnet.
    pub pod_cidr: IpNet,
    /// The pods' default gateway.
    pub gateway: IpAddr,
    /// The MTU pods get.
    pub mtu: u16,
    /// The host reaches these pods only through NAT (chosen at init for a
    /// pod subnet that overlaps another tenant's); otherwise host and pods
    /// see each other's own addresses. A NAT-only network's IPv6 stays
    /// inside the tenant: no route to it, and no IPv6 masquerade.
    pub nat_only: bool,
    /// The IPv6 pod prefix of a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr6: Option<IpNet>,
    /// The pods' IPv6 default gateway (on the router port, as `gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<IpAddr>,
    /// The bridge's IPv6 address pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool6: Option<IpPool>,
}

/// Plans the whole network of `tenant` into one batch, from the state now.
async fn plan(
    nsdb: &Nsdb,
    tenant: &Tenant,
    provider: &Provider,
    request: Request,
) -> Result<tenant_plan::Plan, Problem> {
    let inputs = Inputs {
        provider_ports: nsdb.list_by_parent::<Port>(provider.router_id).await?,
        pools: nsdb.list::<IpPool>().await?,
    };
    tenant_plan::plan(tenant, provider, &inputs, request)
}

fn exists(detail: String, field: &str) -> Problem {
    Problem::new(
        axum::http::StatusCode::CONFLICT,
        "exists",
        "Network exists",
        detail,
    )
    .with_field(field)
}

/// Refuses a request the existing network does not match.
fn check_existing(existing: &TenantNetwork, request: &Request) -> Result<(), Problem> {
    if let Some(wanted) = request
        .pod_cidr
        .filter(|w| IpNet::V4(*w) != existing.pod_cidr)
    {
        return Err(exists(
            format!(
                "the tenant's network already uses {} (not {wanted})",
                existing.pod_cidr
            ),
            "pod_cidr",
        ));
    }
    if let Some(wanted) = request.pod_cidr6 {
        match existing.pod_cidr6 {
            Some(IpNet::V6(have)) if have == wanted => {}
            Some(have) => {
                return Err(exists(
                    format!("the tenant's network already uses {have} (not {wanted})"),
                    "pod_cidr6",
                ))
            }
            // IPv4-only: init adds IPv6 on that prefix.
            None => {}
        }
    }
    Ok(())
}

async fn provider(nsdb: &Nsdb) -> Result<Provider, Problem> {
    nsdb.list::<Provider>().await?.into_iter().next().ok_or_else(|| {
        unavailable("this deployment has no provider router; start `plexus serve`, or `plexus api` with the provider flags, to create it")
    })
}

/// Initialises `tenant`'s default network (on a pod subnet of `pod_cidr`,
/// or the next free one), or answers the existing one. Returns whether it
/// was created now. Concurrent calls for one tenant create it once.
///
/// A pod subnet that overlaps another tenant's routed one is refused
/// (naming that tenant) unless `nat_only` accepts that the host reaches
/// these pods only through NAT; the check runs in the NSDB transaction, so
/// of two concurrent inits on one range exactly one gets it.
///
/// When the provider has an IPv6 plan the network is dual-stack, on the
/// IPv6 prefix `pod_cidr6` or the next free one (the same checks apply);
/// an existing IPv4-only network (made before the provider had IPv6) is
/// made dual-stack in one batch.
pub async fn init_tenant_network(
    nsdb: &Nsdb,
    tenant_id: Uuid,
    (pod_cidr, pod_cidr6): (Option<Ipv4Net>, Option<Ipv6Net>),
    nat_only: bool,
) -> Result<(TenantNetwork, bool), Problem> {
    let request = Request {
        pod_cidr,
        pod_cidr6,
        nat_only,
    };
    if let Some(net) = pod_cidr {
        if net.trunc() != net {
            return Err(Problem::bad_request(format!(
                "{net} has host bits set; did you mean {}?",
                net.trunc()
            ))
            .with_field("pod_cidr"));
        }
        if net.prefix_len() > 29 {
            return Err(
                Problem::bad_request(format!("{net} is too small for pods")).with_field("pod_cidr")
            );
        }
    }
    if let Some(net) = pod_cidr6 {
        tenant6::check_pod_cidr6(net)?;
    }
    let provider = provider(nsdb).await?;
    if pod_cidr6.is_some() && provider.ipv6.is_none() {
        return Err(unavailable(
            "this deployment has no IPv6 plan; start `plexus serve` (or `plexus api`) with --ipv6 to make tenant networks dual-stack",
        )
        .with_field("pod_cidr6"));
    }
    for _ in 0..ATTEMPTS {
        let tenant: Tenant = nsdb.fetch(tenant_id).await?;
        if tenant.network.is_some() {
            let existing = tenant_network(nsdb, tenant_id)
                .await?
                .ok_or_else(|| unavailable("the tenant's network is incomplete"))?;
            check_existing(&existing, &request)?;
            let Some(v6) = provider.ipv6.filter(|_| existing.pod_cidr6.is_none()) else {
                return Ok((existing, false));
            };
            // Made before the provider had IPv6: add it now.
            let batch =
                tenant6_add::batch(nsdb, &tenant, &existing, (&provider, &v6), &request).await?;
            match nsdb.apply(batch).await {
                Ok(_) => {
                    tracing::info!(tenant = %tenant.name, "made the tenant network dual-stack");
                    let stored = tenant_network(nsdb, tenant_id)
                        .await?
                        .ok_or_else(|| unavailable("the tenant's network was removed meanwhile"))?;
                    return Ok((stored, false));
                }
                Err(error) => {
                    retry(error, &request)?;
                    continue;
                }
            }
        }
        let plan = plan(nsdb, &tenant, &provider, request).await?;
        match nsdb.apply(plan.batch).await {
            Ok(_) => {
                let network = TenantNetwork {
                    tenant_id,
                    pod_cidr: plan.pool.cidr,
                    gateway: plan.pool.gateway.unwrap_or(plan.pool.cidr.addr()),
                    mtu: provider.pod_mtu,
                    router: plan.router,
                    bridge: plan.bridge,
                    router_port: plan.gateway_port,
                    link_port: plan.link,
                    pool: plan.pool,
                    nat_only,
                    pod_cidr6: plan.pool6.as_ref().map(|p| p.cidr),
                    gateway6: plan.pool6.as_ref().and_then(|p| p.gateway),
                    pool6: plan.pool6,
                };
                // Read back so that revisions and tunnel keys are the stored ones.
                let stored = tenant_network(nsdb, tenant_id).await?.unwrap_or(network);
                return Ok((stored, true));
            }
            // A concurrent init of this tenant committed the same names
            // first: the next round finds its network.
            Err(NsdbError::Duplicate { .. })
                if nsdb.fetch::<Tenant>(tenant_id).await?.revision != tenant.revision =>
            {
                continue
            }
            Err(error) => retry(error, &request)?,
        }
    }
    Err(NsdbError::Contention {
        attempts: ATTEMPTS as u32,
    }
    .into())
}

/// Whether a commit that failed with `error` is planned again (`Ok`), or
/// the problem to answer.
fn retry(error: NsdbError, request: &Request) -> Result<(), Problem> {
    match error {
        error if lost_race(&error) => Ok(()),
        // A concurrent init took the subnet this one picked itself: pick again.
        NsdbError::PodSubnetOverlap {
            pod_cidr: taken, ..
        } if requested(request, &taken).is_none() => Ok(()),
        error @ NsdbError::PodSubnetOverlap {
            pod_cidr: taken, ..
        } => {
            let field = requested(request, &taken).unwrap_or("pod_cidr");
            Err(Problem::from(error).with_field(field))
        }
        error => Err(error.into()),
    }
}

/// The request field that named `taken`, if the caller chose it (a
/// default subnet someone else took meanwhile is picked again).
fn requested(request: &Request, taken: &IpNet) -> Option<&'static str> {
    match taken {
        IpNet::V4(_) => request.pod_cidr.map(|_| "pod_cidr"),
        IpNet::V6(_) => request.pod_cidr6.map(|_| "pod_cidr6"),
    }
}

/// The tenant's default network, if it was initialised.
pub async fn tenant_network(
    nsdb: &Nsdb,
    tenant_id: Uuid,
) -> Result<Option<TenantNetwork>, Problem> {
    let tenant: Tenant = nsdb.fetch(tenant_id).await?;
    let Some(ids) = tenant.network else {
        return Ok(None);
    };
    let provider = provider(nsdb).await?;
    let router: Router = nsdb.fetch(ids.router_id).await?;
    let bridge: Bridge = nsdb.fetch(ids.bridge_id).await?;
    let ports = nsdb.list_by_parent::<Port>(router.id).await?;
    let mut gateway_port = None;
    let mut link_port = None;
    for port in ports {
        let Some(peer) = port.peer_id else { continue };
        match nsdb.get::<Port>(peer).await? {
            Some(p) if p.device_id == bridge.id => gateway_port = Some(port),
            Some(p) if p.device_id == provider.router_id => link_port = Some(port),
            _ => {}
        }
    }
    let (mut pool, mut pool6) = (None, None);
    for p in nsdb.list::<IpPool>().await? {
        if p.bridge_id != Some(bridge.id) {
            continue;
        }
        let slot = match p.cidr {
            IpNet::V4(_) => &mut pool,
            IpNet::V6(_) => &mut pool6,
        };
        // The pool init made (named by its prefix) before any other.
        if slot
            .as_ref()
            .is_none_or(|s: &IpPool| !s.name.starts_with("pods "))
        {
            *slot = Some(p);
        }
    }
    let (Some(router_port), Some(link_port), Some(pool)) = (gateway_port, link_port, pool) else {
        return Err(unavailable(
            "the tenant's network is missing its gateway port, provider link or pool",
        ));
    };
    Ok(Some(TenantNetwork {
        tenant_id,
        pod_cidr: pool.cidr,
        gateway: pool.gateway.unwrap_or(pool.cidr.addr()),
        mtu: provider.pod_mtu,
        router,
        bridge,
        router_port,
        link_port,
        pool,
        nat_only: ids.nat_only,
        pod_cidr6: pool6.as_ref().map(|p| p.cidr),
        gateway6: pool6.as_ref().and_then(|p| p.gateway),
        pool6,
    }))
}

/// Removes the tenant's default network: everything the initialisation
/// created, in one batch. Fails (changing nothing) while pods, leases or
/// floating IPs still use it.
pub async fn delete_tenant_network(nsdb: &Nsdb, tenant_id: Uuid) -> Result<bool, Problem> {
    for _ in 0..ATTEMPTS {
        let tenant: Tenant = nsdb.fetch(tenant_id).await?;
        let Some(network) = tenant_network(nsdb, tenant_id).await? else {
            return Ok(false);
        };
        let delete = |kind: Kind, id: Uuid, revision| Mutation::Delete {
            kind,
            id,
            expected_revision: Some(revision),
        };
        let mut batch = Vec::new();
        for chain in [
            network.router.inbound_chain_id,
            network.router.outbound_chain_id,
        ]
        .into_iter()
        .flatten()
        {
            for rule in nsdb.list_by_parent::<Rule>(chain).await? {
                batch.push(delete(Kind::Rule, rule.id, rule.revision));
            }
            let chain: Chain = nsdb.fetch(chain).await?;
            batch.push(delete(Kind::Chain, chain.id, chain.revision));
        }
        for route in nsdb.list_by_parent::<Route>(network.router.id).await? {
            batch.push(delete(Kind::Route, route.id, route.revision));
        }
        let provider_port = network.link_port.peer_id;
        let provider = provider(nsdb).await?;
        for route in nsdb.list_by_parent::<Route>(provider.router_id).await? {
            if route.next_hop_port_id.is_some() && route.next_hop_port_id == provider_port {
                batch.push(delete(Kind::Route, route.id, route.revision));
            }
        }
        for port in [
            Some(network.router_port.clone()),
            Some(network.link_port.clone()),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(peer) = port.peer_id {
                let peer: Port = nsdb.fetch(peer).await?;
                batch.push(delete(Kind::Port, peer.id, peer.revision));
            }
            batch.push(delete(Kind::Port, port.id, port.revision));
        }
        for pool in [Some(&network.pool), network.pool6.as_ref()]
            .into_iter()
            .flatten()
        {
            batch.push(delete(Kind::IpPool, pool.id, pool.revision));
        }
        batch.push(delete(
            Kind::Bridge,
            network.bridge.id,
            network.bridge.revision,
        ));
        batch.push(delete(
            Kind::Router,
            network.router.id,
            network.router.revision,
        ));
        let mut cleared = tenant.clone();
        cleared.network = None;
        batch.push(Mutation::Update {
            record: Record::Tenant(cleared),
            expected_revision: Some(tenant.revision),
        });
        match nsdb.apply(batch).await {
            Ok(_) => return Ok(true),
            Err(error) if lost_race(&error) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(NsdbError::Contention {
        attempts: ATTEMPTS as u32,
    }
    .into())
}
