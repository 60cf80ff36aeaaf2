//! Making an existing IPv4-only tenant network dual-stack: what `tenant
//! init` adds, in one batch, when it meets a network made before the
//! provider had IPv6. Its pods keep the addresses they have; pods attached
//! afterwards get both families.
//!
//! The pieces are those of a dual-stack init ([`tenant_plan`](super::tenant_plan)):
//! the host rules go in before the link's drop (inbound) and masquerade
//! (outbound) rules, shifting the rules after them.

use ipnet::{IpNet, Ipv6Net};
use nsdb::{
    IpPool, Mutation, Nsdb, Port, Provider, ProviderIpv6, Record, Rule, RuleAction, Tenant,
};

use super::tenant::TenantNetwork;
use super::tenant_plan::{pool, route, Request};
use super::{host_access, tenant6, unavailable, v4};
use crate::positions;
use crate::problem::Problem;

/// An IPv6 address or prefix.
fn is_v6(net: &Option<IpNet>) -> bool {
    matches!(net, Some(IpNet::V6(_)))
}

/// `port` with `address` added to its extra addresses.
fn with_extra(port: &Port, address: Ipv6Net) -> Mutation {
    let mut updated = port.clone();
    updated.extra_addresses.push(IpNet::V6(address));
    Mutation::Update {
        record: Record::Port(updated),
        expected_revision: Some(port.revision),
    }
}

/// The position in `rules` of the first rule with `action` on the link
/// `port` (where a host rule goes in), else after the last rule.
fn slot(rules: &[Rule], action: RuleAction, port: uuid::Uuid) -> Result<u32, Problem> {
    let on_link =
        |r: &&Rule| r.action == action && (r.in_port_ids == [port] || r.out_port_ids == [port]);
    match rules.iter().filter(on_link).map(|r| r.position).min() {
        Some(position) => Ok(position),
        None => positions::next_position(rules).map_err(|_| no_room()),
    }
}

fn no_room() -> Problem {
    unavailable("the tenant router's chain has no room for the IPv6 host rule")
}

/// The batch that makes `existing` (of `tenant`, IPv4-only) dual-stack
/// with the provider's IPv6 plan `v6`.
pub(super) async fn batch(
    nsdb: &Nsdb,
    tenant: &Tenant,
    existing: &TenantNetwork,
    (provider, v6): (&Provider, &ProviderIpv6),
    request: &Request,
) -> Result<Vec<Mutation>, Problem> {
    let link = &existing.link_port;
    let (Some(link4), Some(peer), Some(ids)) = (v4(link.address), link.peer_id, tenant.network)
    else {
        return Err(unavailable(
            "the tenant's provider link has no IPv4 address",
        ));
    };
    let link_net = link4.trunc();
    let pools = nsdb.list::<IpPool>().await?;
    let half = tenant6::plan(
        v6,
        (provider.link_cidr, link_net),
        &pools,
        request.pod_cidr6,
    )?;
    let provider_port: Port = nsdb.fetch(peer).await?;
    let gateway6 = Ipv6Net::new(half.gateway, half.pod_net.prefix_len()).unwrap_or(half.pod_net);
    let mut batch = vec![
        with_extra(link, half.tenant_link),
        with_extra(&provider_port, half.provider_link),
        with_extra(&existing.router_port, gateway6),
        Mutation::Create(Record::IpPool(pool(
            tenant,
            existing.bridge.id,
            IpNet::V6(half.pod_net),
            half.gateway.into(),
            request.pod_cidr6.is_some(),
        ))),
        Mutation::Create(Record::Route(route(
            existing.router.id,
            IpNet::V6(Ipv6Net::default()),
            link.id,
            half.provider_link.addr().into(),
        ))),
    ];
    let (Some(inbound), Some(outbound)) = (
        existing.router.inbound_chain_id,
        existing.router.outbound_chain_id,
    ) else {
        return Err(unavailable("the tenant router has lost its chains"));
    };
    let pod_net4 = v4(Some(existing.pod_cidr)).unwrap_or_default();
    let access = host_access::plan(
        provider,
        &host_access::Link {
            tenant_port: link.id,
            tenant_address: link4.addr(),
            provider_port: peer,
            tenant_address6: Some(half.tenant_link.addr()),
        },
        (inbound, outbound),
        (pod_net4, Some(half.pod_net)),
        ids.nat_only,
    );
    // Only the IPv6 half: the IPv4 route and rules are there already.
    for r in access
        .provider_routes
        .into_iter()
        .filter(|r| is_v6(&Some(r.dst)))
    {
        batch.push(Mutation::Create(Record::Route(r)));
    }
    for (chain, rules, action) in [
        (inbound, access.inbound, RuleAction::Drop),
        (outbound, access.outbound, RuleAction::Masquerade),
    ] {
        // One IPv6 host rule per chain at most.
        let Some(rule) = rules
            .into_iter()
            .find(|r| is_v6(&r.src_cidr) || is_v6(&r.dst_cidr))
        else {
            continue;
        };
        let existing_rules = nsdb.list_by_parent::<Rule>(chain).await?;
        let position = slot(&existing_rules, action, link.id)?;
        let inserted =
            positions::insert(&existing_rules, Rule { position, ..rule }).map_err(|_| no_room())?;
        batch.extend(inserted);
    }
    let mut updated = tenant.clone();
    updated.network = Some(nsdb::TenantNetworkRef {
        pod_cidr6: Some(IpNet::V6(half.pod_net)),
        ..ids
    });
    batch.push(Mutation::Update {
        record: Record::Tenant(updated),
        expected_revision: Some(tenant.revision),
    });
    Ok(batch)
}
