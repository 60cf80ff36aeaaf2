//! Floating IPs: an external address statically NATed to a pod address on
//! the tenant router. Creating one inserts a DNAT rule into the router's
//! inbound chain (right after "return traffic", before the drop of new
//! outside connections), an SNAT rule at the top of its outbound chain
//! (ahead of the masquerade), and a provider route for the address, all in
//! the batch that creates the floating IP; deleting it removes them.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use nsdb::{
    FloatingIp, Kind, Mutation, NatTarget, Nsdb, NsdbError, Port, Provider, Record, Route,
    RouteKind, Router, Rule, RuleAction, Tenant,
};
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use super::{lost_race, unavailable, v4, ATTEMPTS};
use crate::positions;
use crate::problem::Problem;

/// The body of `POST /v1/floating_ips`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpRequest {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The pod address to expose.
    pub fixed_address: Ipv4Addr,
    /// The external address (default: the next free one of the provider's external range).
    #[serde(default)]
    pub floating_address: Option<Ipv4Addr>,
    /// The tenant router doing the NAT (default: the tenant network's router).
    #[serde(default)]
    pub router_id: Option<Uuid>,
}

fn problem(field: &str, detail: impl Into<String>) -> Problem {
    Problem::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "rejected",
        "Rejected",
        detail,
    )
    .with_field(field)
}

/// The router's port linked to the provider router, and that provider port.
async fn provider_link(
    nsdb: &Nsdb,
    router: &Router,
    provider: &Provider,
) -> Result<(Port, Port), Problem> {
    for port in nsdb.list_by_parent::<Port>(router.id).await? {
        let Some(peer) = port.peer_id else { continue };
        if let Some(peer) = nsdb.get::<Port>(peer).await? {
            if peer.device_id == provider.router_id {
                return Ok((port, peer));
            }
        }
    }
    Err(problem(
        "router_id",
        format!("router {} is not linked to the provider router", router.id),
    ))
}

/// Creates a floating IP with its rules and route, in one batch.
pub async fn create_floating_ip(
    nsdb: &Nsdb,
    request: &FloatingIpRequest,
) -> Result<FloatingIp, Problem> {
    let provider = nsdb
        .list::<Provider>()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| unavailable("this deployment has no provider router"))?;
    let external = provider.external_cidr;
    if let Some(address) = request.floating_address {
        if !external.contains(&address)
            || address == external.network()
            || address == external.broadcast()
        {
            return Err(problem(
                "floating_address",
                format!("{address} is not a host address of the external range {external}"),
            ));
        }
    }
    for _ in 0..ATTEMPTS {
        let tenant: Tenant = nsdb.fetch(request.tenant_id).await?;
        let router_id = match (request.router_id, tenant.network) {
            (Some(id), _) => id,
            (None, Some(network)) => network.router_id,
            (None, None) => {
                return Err(problem(
                    "router_id",
                    "the tenant has no network; give router_id or initialise the network first",
                ))
            }
        };
        let router: Router = nsdb.fetch(router_id).await?;
        if router.tenant_id != tenant.id {
            return Err(problem(
                "router_id",
                format!("router {router_id} belongs to another tenant"),
            ));
        }
        let (Some(inbound), Some(outbound)) = (router.inbound_chain_id, router.outbound_chain_id)
        else {
            return Err(problem(
                "router_id",
                format!("router {router_id} needs inbound and outbound chains for floating IPs"),
            ));
        };
        let (link, provider_port) = provider_link(nsdb, &router, &provider).await?;
        let Some(link_address) = v4(link.address) else {
            return Err(problem(
                "router_id",
                "the provider link port has no IPv4 address",
            ));
        };
        let floating = match request.floating_address {
            Some(address) => address,
            None => {
                let used: Vec<Ipv4Addr> = nsdb
                    .list::<FloatingIp>()
                    .await?
                    .iter()
                    .map(|f| f.floating_address)
                    .collect();
                external
                    .hosts()
                    .find(|a| !used.contains(a))
                    .ok_or_else(|| {
                        Problem::new(
                            axum::http::StatusCode::CONFLICT,
                            "exhausted",
                            "No floating IP left",
                            format!("every address of {external} is in use"),
                        )
                    })?
            }
        };
        let inbound_rules = nsdb.list_by_parent::<Rule>(inbound).await?;
        let outbound_rules = nsdb.list_by_parent::<Rule>(outbound).await?;
        // After the "return traffic" rule(s) that head the chain.
        let dnat_position = inbound_rules
            .iter()
            .filter(|r| {
                r.action == RuleAction::Accept
                    && !r.conn_state.is_empty()
                    && r.in_port_ids.is_empty()
            })
            .map(|r| r.position + 1)
            .max()
            .unwrap_or(1);
        // After the rules that let pods reach the host untranslated (the
        // host sees a pod's own address, floating IP or not).
        let snat_position = outbound_rules
            .iter()
            .filter(|r| r.action == RuleAction::Accept && r.dst_cidr.is_some())
            .map(|r| r.position + 1)
            .max()
            .unwrap_or(1);
        let dnat = Rule {
            in_port_ids: vec![link.id],
            dst_cidr: Some(IpNet::V4(Ipv4Net::from(floating))),
            nat_targets: vec![NatTarget {
                address_from: request.fixed_address.into(),
                address_to: None,
                port_from: None,
                port_to: None,
            }],
            description: format!("floating IP {floating} → {}", request.fixed_address),
            ..Rule::new(inbound, dnat_position, RuleAction::Dnat)
        };
        let snat = Rule {
            out_port_ids: vec![link.id],
            src_cidr: Some(IpNet::V4(Ipv4Net::from(request.fixed_address))),
            nat_targets: vec![NatTarget {
                address_from: floating.into(),
                address_to: None,
                port_from: None,
                port_to: None,
            }],
            description: format!("floating IP {floating} ← {}", request.fixed_address),
            ..Rule::new(outbound, snat_position, RuleAction::Snat)
        };
        let route = Route {
            id: Uuid::new_v4(),
            revision: 0,
            router_id: provider.router_id,
            dst: IpNet::V4(Ipv4Net::from(floating)),
            src: IpNet::V4(Ipv4Net::default()),
            next_hop_port_id: Some(provider_port.id),
            next_hop_gateway: Some(link_address.addr().into()),
            weight: 0,
            kind: RouteKind::Normal,
        };
        let record = FloatingIp {
            id: Uuid::new_v4(),
            revision: 0,
            tenant_id: tenant.id,
            router_id: router.id,
            floating_address: floating,
            fixed_address: request.fixed_address,
            dnat_rule_id: dnat.id,
            snat_rule_id: snat.id,
            route_id: route.id,
        };
        let no_room = |_| {
            problem(
                "router_id",
                "the router's chains have no room for another rule",
            )
        };
        let mut batch = positions::insert(&inbound_rules, dnat).map_err(no_room)?;
        batch.extend(positions::insert(&outbound_rules, snat).map_err(no_room)?);
        batch.push(Mutation::Create(Record::Route(route)));
        batch.push(Mutation::Create(Record::FloatingIp(record)));
        match nsdb.apply(batch).await {
            Ok(applied) => {
                return super::records_of::<FloatingIp>(applied.records)
                    .pop()
                    .ok_or_else(|| Problem::bad_request("the floating IP was not stored"))
            }
            Err(NsdbError::Duplicate { constraint, .. })
                if constraint == "floating address" && request.floating_address.is_some() =>
            {
                return Err(Problem::new(
                    axum::http::StatusCode::CONFLICT,
                    "duplicate",
                    "Duplicate value",
                    format!("floating address {floating} is in use"),
                )
                .with_field("floating_address"))
            }
            Err(error) if lost_race(&error) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(NsdbError::Contention {
        attempts: ATTEMPTS as u32,
    }
    .into())
}

/// Deletes a floating IP with the rules and route it installed.
pub async fn delete_floating_ip(nsdb: &Nsdb, id: Uuid) -> Result<(), Problem> {
    let fip: FloatingIp = nsdb.fetch(id).await?;
    let delete = |kind, id| Mutation::Delete {
        kind,
        id,
        expected_revision: None,
    };
    nsdb.apply(vec![
        Mutation::Delete {
            kind: Kind::FloatingIp,
            id: fip.id,
            expected_revision: Some(fip.revision),
        },
        delete(Kind::Rule, fip.dnat_rule_id),
        delete(Kind::Rule, fip.snat_rule_id),
        delete(Kind::Route, fip.route_id),
    ])
    .await?;
    Ok(())
}
