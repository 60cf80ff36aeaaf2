//! A tenant's default network in one step, the way the MidoNet CNI flow
//! built it: a tenant router linked to the provider router over a per-tenant
//! /30, its inbound and outbound chains (return traffic allowed, the host
//! allowed, new connections from the outside dropped, masquerade towards
//! the provider), a default route to the provider, a provider route back to
//! the pod subnet, and a default bridge with the pod subnet's pool behind
//! the router port that is the pods' gateway.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use nsdb::{
    Bridge, Chain, ConnState, DeviceType, IpPool, Kind, Mutation, Nsdb, NsdbError, Port, Provider,
    Record, Route, RouteKind, Router, Rule, RuleAction, Tenant, TenantNetworkRef,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{first_free, host_access, linked, lost_race, new_port, unavailable, v4, ATTEMPTS};
use crate::problem::Problem;

/// Names of the objects a tenant network consists of (unique per tenant).
const NAME: &str = "default";
const INBOUND: &str = "default-in";
const OUTBOUND: &str = "default-out";

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
    /// see each other's own addresses.
    pub nat_only: bool,
}

/// The objects of one planned network.
struct Plan {
    router: Router,
    bridge: Bridge,
    pool: IpPool,
    link: Port,
    gateway_port: Port,
    batch: Vec<Mutation>,
}

fn route(router: Uuid, dst: Ipv4Net, port: Uuid, gateway: std::net::Ipv4Addr) -> Route {
    Route {
        id: Uuid::new_v4(),
        revision: 0,
        router_id: router,
        dst: IpNet::V4(dst),
        src: IpNet::V4(Ipv4Net::default()),
        next_hop_port_id: Some(port),
        next_hop_gateway: Some(gateway.into()),
        weight: 0,
        kind: RouteKind::Normal,
    }
}

/// Plans the whole network of `tenant` into one batch.
async fn plan(
    nsdb: &Nsdb,
    tenant: &Tenant,
    provider: &Provider,
    pod_cidr: Option<Ipv4Net>,
    nat_only: bool,
) -> Result<Plan, Problem> {
    let provider_ports = nsdb.list_by_parent::<Port>(provider.router_id).await?;
    let used_links: Vec<Ipv4Net> = provider_ports
        .iter()
        .filter_map(|p| v4(p.address).map(|a| a.trunc()))
        .collect();
    let link_net = first_free(provider.link_cidr, 30, &used_links).ok_or_else(|| {
        Problem::new(
            axum::http::StatusCode::CONFLICT,
            "exhausted",
            "No link subnet left",
            format!(
                "every /30 of the provider's link range {} is in use",
                provider.link_cidr
            ),
        )
    })?;
    let mut hosts = link_net.hosts();
    let (Some(provider_side), Some(tenant_side)) = (hosts.next(), hosts.next()) else {
        return Err(Problem::bad_request("a /30 has two host addresses"));
    };
    let pools = nsdb.list::<IpPool>().await?;
    let pod_net = match pod_cidr {
        Some(net) => net,
        None => {
            let used: Vec<Ipv4Net> = pools.iter().filter_map(|p| v4(Some(p.cidr))).collect();
            first_free(provider.pod_cidr, provider.pod_prefix_len, &used).ok_or_else(|| {
                Problem::new(
                    axum::http::StatusCode::CONFLICT,
                    "exhausted",
                    "No pod subnet left",
                    format!(
                        "every /{} of {} is in use",
                        provider.pod_prefix_len, provider.pod_cidr
                    ),
                )
            })?
        }
    };
    let Some(gateway) = pod_net.hosts().next() else {
        return Err(
            Problem::bad_request(format!("{pod_net} has no host address")).with_field("pod_cidr"),
        );
    };
    let inbound = Chain {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant.id,
        name: INBOUND.into(),
    };
    let outbound = Chain {
        name: OUTBOUND.into(),
        id: Uuid::new_v4(),
        ..inbound.clone()
    };
    let router = Router {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant.id,
        name: NAME.into(),
        admin_state_up: true,
        inbound_chain_id: Some(inbound.id),
        outbound_chain_id: Some(outbound.id),
    };
    let bridge = Bridge {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: tenant.id,
        name: NAME.into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
        tunnel_key: 0,
    };
    let (link, provider_port) = linked(
        new_port(
            router.id,
            DeviceType::Router,
            Ipv4Net::new(tenant_side, 30).ok(),
        ),
        new_port(
            provider.router_id,
            DeviceType::Router,
            Ipv4Net::new(provider_side, 30).ok(),
        ),
    );
    let (gateway_port, bridge_port) = linked(
        new_port(
            router.id,
            DeviceType::Router,
            Ipv4Net::new(gateway, pod_net.prefix_len()).ok(),
        ),
        new_port(bridge.id, DeviceType::Bridge, None),
    );
    let pool = IpPool {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: Some(tenant.id),
        // Default subnets are named by their prefix, so two tenants can
        // never be handed the same one (pool names are unique).
        name: match pod_cidr {
            None => format!("pods {pod_net}"),
            Some(_) => format!("pods {pod_net} {}", tenant.id),
        },
        cidr: IpNet::V4(pod_net),
        gateway: Some(gateway.into()),
        bridge_id: Some(bridge.id),
    };
    let access = host_access::plan(
        provider,
        &host_access::Link {
            tenant_port: link.id,
            tenant_address: tenant_side,
            provider_port: provider_port.id,
        },
        (inbound.id, outbound.id),
        pod_net,
        nat_only,
    );
    let mut inbound_rules = vec![Rule {
        conn_state: vec![ConnState::Established, ConnState::Related],
        description: "return traffic".into(),
        ..Rule::new(inbound.id, 0, RuleAction::Accept)
    }];
    inbound_rules.extend(access.inbound);
    inbound_rules.push(Rule {
        in_port_ids: vec![link.id],
        conn_state: vec![ConnState::New],
        description: "the outside reaches pods only through floating IPs".into(),
        ..Rule::new(inbound.id, 0, RuleAction::Drop)
    });
    let mut outbound_rules = access.outbound;
    outbound_rules.push(Rule {
        out_port_ids: vec![link.id],
        description: "tenant traffic leaves with the link address".into(),
        ..Rule::new(outbound.id, 0, RuleAction::Masquerade)
    });
    let rules = [inbound_rules, outbound_rules]
        .into_iter()
        .flat_map(|chain| {
            chain
                .into_iter()
                .zip(1..)
                .map(|(rule, position)| Rule { position, ..rule })
        });
    let mut routes = vec![route(router.id, Ipv4Net::default(), link.id, provider_side)];
    routes.extend(access.provider_route);
    let mut network_tenant = tenant.clone();
    network_tenant.network = Some(TenantNetworkRef {
        router_id: router.id,
        bridge_id: bridge.id,
        pod_cidr: Some(IpNet::V4(pod_net)),
        nat_only,
    });
    let mut batch: Vec<Mutation> = vec![
        Mutation::Create(Record::Chain(inbound)),
        Mutation::Create(Record::Chain(outbound)),
        Mutation::Create(Record::Router(router.clone())),
        Mutation::Create(Record::Bridge(bridge.clone())),
        Mutation::Create(Record::Port(link.clone())),
        Mutation::Create(Record::Port(provider_port)),
        Mutation::Create(Record::Port(gateway_port.clone())),
        Mutation::Create(Record::Port(bridge_port)),
        Mutation::Create(Record::IpPool(pool.clone())),
    ];
    batch.extend(rules.map(|r| Mutation::Create(Record::Rule(r))));
    batch.extend(
        routes
            .into_iter()
            .map(|r| Mutation::Create(Record::Route(r))),
    );
    batch.push(Mutation::Update {
        record: Record::Tenant(network_tenant),
        expected_revision: Some(tenant.revision),
    });
    Ok(Plan {
        router,
        bridge,
        pool,
        link,
        gateway_port,
        batch,
    })
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
pub async fn init_tenant_network(
    nsdb: &Nsdb,
    tenant_id: Uuid,
    pod_cidr: Option<Ipv4Net>,
    nat_only: bool,
) -> Result<(TenantNetwork, bool), Problem> {
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
    let provider = provider(nsdb).await?;
    for _ in 0..ATTEMPTS {
        let tenant: Tenant = nsdb.fetch(tenant_id).await?;
        if tenant.network.is_some() {
            let existing = tenant_network(nsdb, tenant_id)
                .await?
                .ok_or_else(|| unavailable("the tenant's network is incomplete"))?;
            if let Some(wanted) = pod_cidr.filter(|w| IpNet::V4(*w) != existing.pod_cidr) {
                return Err(Problem::new(
                    axum::http::StatusCode::CONFLICT,
                    "exists",
                    "Network exists",
                    format!(
                        "the tenant's network already uses {} (not {wanted})",
                        existing.pod_cidr
                    ),
                )
                .with_field("pod_cidr"));
            }
            return Ok((existing, false));
        }
        let plan = plan(nsdb, &tenant, &provider, pod_cidr, nat_only).await?;
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
                };
                // Read back so that revisions and tunnel keys are the stored ones.
                let stored = tenant_network(nsdb, tenant_id).await?.unwrap_or(network);
                return Ok((stored, true));
            }
            Err(error) if lost_race(&error) => continue,
            // A concurrent init took the subnet this one picked itself: pick again.
            Err(NsdbError::PodSubnetOverlap { .. }) if pod_cidr.is_none() => continue,
            Err(error @ NsdbError::PodSubnetOverlap { .. }) => {
                return Err(Problem::from(error).with_field("pod_cidr"))
            }
            // A concurrent init of this tenant committed the same names
            // first: the next round finds its network.
            Err(NsdbError::Duplicate { .. })
                if nsdb.fetch::<Tenant>(tenant_id).await?.revision != tenant.revision =>
            {
                continue
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(NsdbError::Contention {
        attempts: ATTEMPTS as u32,
    }
    .into())
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
    let pool = nsdb
        .list::<IpPool>()
        .await?
        .into_iter()
        .find(|p| p.bridge_id == Some(bridge.id));
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
        batch.push(delete(Kind::IpPool, network.pool.id, network.pool.revision));
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
