//! The provider's IPv6 half: the uplink port's IPv6 address, the IPv6
//! default route to the host and the ranges dual-stack tenant networks are
//! carved from. IPv6 is routed to the host, not translated.
//!
//! It is opt-in: a provider created without it stays IPv4-only until a
//! start with an IPv6 plan adds it (in one batch); an IPv6 plan, once
//! stored, never changes under tenant networks, and a start whose flags
//! differ is refused.

use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv6Net};
use nsdb::{
    Kind, Mutation, Nsdb, NsdbError, Port, Provider, ProviderIpv6, Record, Route, RouteKind,
};
use uuid::Uuid;

use super::provider::Ipv6Plan;

/// The IPv6 settings `plan` stores, for a provider with an uplink or not.
pub(super) fn record(plan: &Ipv6Plan, with_uplink: bool) -> ProviderIpv6 {
    ProviderIpv6 {
        link_cidr: plan.link_cidr.trunc(),
        pod_cidr: plan.pod_cidr.trunc(),
        pod_prefix_len: plan.pod_prefix_len,
        uplink_gateway: with_uplink
            .then(|| vswitch::uplink::host_address6(plan.uplink_address))
            .flatten()
            .map(|host| host.addr()),
    }
}

/// Refuses an uplink address the host side cannot be planned for.
pub(super) fn check(plan: &Ipv6Plan, provider: Uuid) -> Result<(), NsdbError> {
    if vswitch::uplink::host_address6(plan.uplink_address).is_none() {
        return Err(rejected(
            provider,
            format!(
                "the uplink IPv6 address {} must be a global or unique-local address on a /126 or larger subnet",
                plan.uplink_address
            ),
        ));
    }
    Ok(())
}

fn rejected(provider: Uuid, reason: String) -> NsdbError {
    NsdbError::Rejected {
        kind: Kind::Provider,
        id: provider,
        field: "ipv6".into(),
        reason,
    }
}

/// The provider router's IPv6 default route: to the host, over the uplink.
pub(super) fn default_route(router: Uuid, uplink_port: Uuid, host: Ipv6Addr) -> Route {
    Route {
        id: Uuid::new_v4(),
        revision: 0,
        router_id: router,
        dst: IpNet::V6(Ipv6Net::default()),
        src: IpNet::V6(Ipv6Net::default()),
        next_hop_port_id: Some(uplink_port),
        next_hop_gateway: Some(host.into()),
        weight: 0,
        kind: RouteKind::Normal,
    }
}

fn describe(v6: &ProviderIpv6) -> String {
    let uplink = match v6.uplink_gateway {
        Some(host) => format!(", host side of the uplink {host}"),
        None => String::new(),
    };
    format!(
        "pods {} (/{} each), links {}{uplink}",
        v6.pod_cidr, v6.pod_prefix_len, v6.link_cidr
    )
}

/// Brings an existing provider to the IPv6 part of the plan: adds IPv6
/// to a provider that has none, keeps a stored IPv6 plan when the flags
/// name none, and refuses flags that differ from the stored plan.
pub(super) async fn reconcile(
    nsdb: &Nsdb,
    provider: Provider,
    plan: Option<&Ipv6Plan>,
) -> Result<Provider, NsdbError> {
    let with_uplink = provider.uplink_port_id.is_some();
    match (provider.ipv6, plan) {
        (_, None) => {
            if let Some(stored) = &provider.ipv6 {
                tracing::info!(plan = %describe(stored), "the provider keeps its IPv6 plan");
            }
            Ok(provider)
        }
        (Some(stored), Some(plan)) => {
            let wanted = record(plan, with_uplink);
            if stored != wanted {
                return Err(rejected(
                    provider.id,
                    format!(
                        "the stored IPv6 plan ({}) differs from the one given ({}); tenant networks are carved from it, so it never changes: start with the stored settings (GET /v1/provider)",
                        describe(&stored),
                        describe(&wanted)
                    ),
                ));
            }
            Ok(provider)
        }
        (None, Some(plan)) => add(nsdb, provider, plan).await,
    }
}

/// Adds IPv6 to a provider created without it, in one batch. Existing
/// tenant networks stay IPv4-only until `tenant init` runs for them again.
async fn add(nsdb: &Nsdb, provider: Provider, plan: &Ipv6Plan) -> Result<Provider, NsdbError> {
    if provider.uplink_port_id.is_some() {
        check(plan, provider.id)?;
    }
    let v6 = record(plan, provider.uplink_port_id.is_some());
    let mut batch = Vec::new();
    if let (Some(port_id), Some(host)) = (provider.uplink_port_id, v6.uplink_gateway) {
        let port: Port = nsdb.fetch(port_id).await?;
        let held = port.extra_addresses.iter().find_map(|a| match a {
            IpNet::V6(a) if vswitch::uplink::host_address6(*a).is_some() => Some(*a),
            _ => None,
        });
        match held {
            Some(held) if held != plan.uplink_address => {
                return Err(rejected(
                    provider.id,
                    format!(
                        "the uplink port already has the IPv6 address {held}, not {}: give that address as the uplink's, or remove it from port {port_id} first",
                        plan.uplink_address
                    ),
                ))
            }
            Some(_) => {}
            None => {
                let revision = port.revision;
                let mut addressed = port;
                addressed
                    .extra_addresses
                    .push(IpNet::V6(plan.uplink_address));
                batch.push(Mutation::Update {
                    record: Record::Port(addressed),
                    expected_revision: Some(revision),
                });
            }
        }
        let routes = nsdb.list_by_parent::<Route>(provider.router_id).await?;
        if !routes
            .iter()
            .any(|r| r.dst == IpNet::V6(Ipv6Net::default()))
        {
            let route = default_route(provider.router_id, port_id, host);
            batch.push(Mutation::Create(Record::Route(route)));
        }
    }
    let revision = provider.revision;
    let updated = Provider {
        ipv6: Some(v6),
        ..provider
    };
    batch.push(Mutation::Update {
        record: Record::Provider(updated),
        expected_revision: Some(revision),
    });
    let applied = nsdb.apply(batch).await?;
    tracing::info!(plan = %describe(&v6), "added IPv6 to the provider");
    super::records_of::<Provider>(applied.records)
        .pop()
        .ok_or_else(|| nsdb::StoreError::Backend("commit returned no provider".into()).into())
}
