//! The plan of a tenant's default network: every object, in one batch,
//! computed from the provider, the provider router's ports and the pools
//! that exist (read beforehand; the commit's checks catch a race).
//!
//! With a provider that has an IPv6 plan the network is dual-stack: the
//! link ports and the gateway port get an IPv6 extra address, the bridge a
//! second (IPv6) pool, each router an IPv6 route, and the host's IPv6
//! address is let in as its IPv4 one is. The masquerade towards the
//! provider stays as it is: without `ip_version` 6 it translates IPv4
//! only, so IPv6 pod traffic leaves with the pods' own addresses.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nsdb::{
    Bridge, Chain, ConnState, DeviceType, IpPool, Mutation, Port, Provider, Record, Route,
    RouteKind, Router, Rule, RuleAction, Tenant, TenantNetworkRef,
};
use uuid::Uuid;

use super::tenant6::{self, Half6};
use super::{first_free, host_access, linked, new_port, v4};
use crate::problem::Problem;

/// Names of the objects a tenant network consists of (unique per tenant).
pub(super) const NAME: &str = "default";
const INBOUND: &str = "default-in";
const OUTBOUND: &str = "default-out";

/// What the caller asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Request {
    /// The IPv4 pod subnet (default: the next free one).
    pub pod_cidr: Option<Ipv4Net>,
    /// The IPv6 pod prefix (default: the next free one, when the provider
    /// has IPv6).
    pub pod_cidr6: Option<Ipv6Net>,
    /// The host reaches the pods only through NAT.
    pub nat_only: bool,
}

/// The state a plan is computed from.
pub(super) struct Inputs {
    /// The provider router's ports (their subnets are taken).
    pub provider_ports: Vec<Port>,
    /// Every pool (their ranges are taken by default subnets).
    pub pools: Vec<IpPool>,
}

/// The objects of one planned network.
pub(super) struct Plan {
    /// The tenant router.
    pub router: Router,
    /// The default bridge.
    pub bridge: Bridge,
    /// The bridge's IPv4 pool.
    pub pool: IpPool,
    /// Its IPv6 pool, when dual-stack.
    pub pool6: Option<IpPool>,
    /// The tenant router's port on the provider link.
    pub link: Port,
    /// The tenant router's port on the bridge (the pods' gateway).
    pub gateway_port: Port,
    /// Every object, to be committed at once.
    pub batch: Vec<Mutation>,
}

/// A normal route of `router` to `dst` via `gateway` out of `port`.
pub(super) fn route(router: Uuid, dst: IpNet, port: Uuid, gateway: IpAddr) -> Route {
    Route {
        id: Uuid::new_v4(),
        revision: 0,
        router_id: router,
        dst,
        src: match dst {
            IpNet::V4(_) => IpNet::V4(Ipv4Net::default()),
            IpNet::V6(_) => IpNet::V6(Ipv6Net::default()),
        },
        next_hop_port_id: Some(port),
        next_hop_gateway: Some(gateway),
        weight: 0,
        kind: RouteKind::Normal,
    }
}

/// The IPv4 /30 of the next link and its two addresses (provider, tenant).
fn link_subnet(
    provider: &Provider,
    ports: &[Port],
) -> Result<(Ipv4Net, Ipv4Addr, Ipv4Addr), Problem> {
    let used: Vec<Ipv4Net> = ports
        .iter()
        .filter_map(|p| v4(p.address).map(|a| a.trunc()))
        .collect();
    let net = first_free(provider.link_cidr, 30, &used).ok_or_else(|| {
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
    let mut hosts = net.hosts();
    let (Some(provider_side), Some(tenant_side)) = (hosts.next(), hosts.next()) else {
        return Err(Problem::bad_request("a /30 has two host addresses"));
    };
    Ok((net, provider_side, tenant_side))
}

fn pod_subnet(
    provider: &Provider,
    pools: &[IpPool],
    wanted: Option<Ipv4Net>,
) -> Result<Ipv4Net, Problem> {
    if let Some(net) = wanted {
        return Ok(net);
    }
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
    })
}

/// A pool of `tenant` on `bridge`. Default subnets are named by their
/// prefix, so two tenants can never be handed the same one (pool names
/// are unique); requested ones carry the tenant's id too.
pub(super) fn pool(
    tenant: &Tenant,
    bridge: Uuid,
    cidr: IpNet,
    gateway: IpAddr,
    requested: bool,
) -> IpPool {
    IpPool {
        id: Uuid::new_v4(),
        revision: 0,
        tenant_id: Some(tenant.id),
        name: match requested {
            false => format!("pods {cidr}"),
            true => format!("pods {cidr} {}", tenant.id),
        },
        cidr,
        gateway: Some(gateway),
        bridge_id: Some(bridge),
    }
}

/// Plans the whole network of `tenant` into one batch.
pub(super) fn plan(
    tenant: &Tenant,
    provider: &Provider,
    inputs: &Inputs,
    request: Request,
) -> Result<Plan, Problem> {
    let (link_net, provider_side, tenant_side) = link_subnet(provider, &inputs.provider_ports)?;
    let pod_net = pod_subnet(provider, &inputs.pools, request.pod_cidr)?;
    let Some(gateway) = pod_net.hosts().next() else {
        return Err(
            Problem::bad_request(format!("{pod_net} has no host address")).with_field("pod_cidr"),
        );
    };
    let half6: Option<Half6> = match provider.ipv6 {
        Some(v6) => Some(tenant6::plan(
            &v6,
            (provider.link_cidr, link_net),
            &inputs.pools,
            request.pod_cidr6,
        )?),
        None => None,
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
    let (mut link, mut provider_port) = linked(
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
    let (mut gateway_port, bridge_port) = linked(
        new_port(
            router.id,
            DeviceType::Router,
            Ipv4Net::new(gateway, pod_net.prefix_len()).ok(),
        ),
        new_port(bridge.id, DeviceType::Bridge, None),
    );
    let pool4 = pool(
        tenant,
        bridge.id,
        IpNet::V4(pod_net),
        gateway.into(),
        request.pod_cidr.is_some(),
    );
    let mut pool6 = None;
    if let Some(h) = &half6 {
        link.extra_addresses.push(IpNet::V6(h.tenant_link));
        provider_port
            .extra_addresses
            .push(IpNet::V6(h.provider_link));
        let gateway6 = Ipv6Net::new(h.gateway, h.pod_net.prefix_len()).unwrap_or(h.pod_net);
        gateway_port.extra_addresses.push(IpNet::V6(gateway6));
        pool6 = Some(pool(
            tenant,
            bridge.id,
            IpNet::V6(h.pod_net),
            h.gateway.into(),
            request.pod_cidr6.is_some(),
        ));
    }
    let access = host_access::plan(
        provider,
        &host_access::Link {
            tenant_port: link.id,
            tenant_address: tenant_side,
            provider_port: provider_port.id,
            tenant_address6: half6.map(|h| h.tenant_link.addr()),
        },
        (inbound.id, outbound.id),
        (pod_net, half6.map(|h| h.pod_net)),
        request.nat_only,
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
    let mut routes = vec![route(
        router.id,
        IpNet::V4(Ipv4Net::default()),
        link.id,
        provider_side.into(),
    )];
    if let Some(h) = &half6 {
        routes.push(route(
            router.id,
            IpNet::V6(Ipv6Net::default()),
            link.id,
            h.provider_link.addr().into(),
        ));
    }
    routes.extend(access.provider_routes);
    let mut network_tenant = tenant.clone();
    network_tenant.network = Some(TenantNetworkRef {
        router_id: router.id,
        bridge_id: bridge.id,
        pod_cidr: Some(IpNet::V4(pod_net)),
        pod_cidr6: half6.map(|h| IpNet::V6(h.pod_net)),
        nat_only: request.nat_only,
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
        Mutation::Create(Record::IpPool(pool4.clone())),
    ];
    batch.extend(pool6.clone().map(|p| Mutation::Create(Record::IpPool(p))));
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
        pool: pool4,
        pool6,
        link,
        gateway_port,
        batch,
    })
}

#[cfg(test)]
#[path = "tenant_plan_tests.rs"]
mod tests;
