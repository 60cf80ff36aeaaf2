//! How the host and a tenant's pods reach each other: without NAT, both
//! ways, as Kubernetes nodes and pods do. The provider router routes the
//! pod subnet back to the tenant, the tenant router lets the host in, and
//! its outbound chain accepts traffic to the host before the masquerade, so
//! the host sees the pod's own address and the pod the host's.
//!
//! IPv6 alike on a dual-stack network: the provider routes the tenant's
//! IPv6 prefix to it and the tenant router lets the host's IPv6 address
//! in. The masquerade toward the provider translates IPv4 only, so the
//! IPv6 outbound accept only keeps it so should that rule ever change.
//!
//! A NAT-only network gets none of this: pods reach the host masqueraded
//! twice (tenant router, then uplink) and the host cannot open connections
//! to them. It is the explicit choice for a pod subnet that overlaps
//! another tenant's, which the host could not route to.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nsdb::{Provider, Route, RouteKind, Rule, RuleAction};
use uuid::Uuid;

/// The rules and route that give the host direct access to one tenant's pods.
#[derive(Debug, Default)]
pub(super) struct HostAccess {
    /// Accept rules for the tenant router's inbound chain (positions unset).
    pub inbound: Vec<Rule>,
    /// Accept rules for its outbound chain, before the masquerade (positions unset).
    pub outbound: Vec<Rule>,
    /// The provider router's routes back to the pod subnet and prefix.
    pub provider_routes: Vec<Route>,
}

/// Where a tenant network meets the provider.
pub(super) struct Link {
    /// The tenant router's port on the link.
    pub tenant_port: Uuid,
    /// Its address: the provider's next hop to the pods.
    pub tenant_address: Ipv4Addr,
    /// The provider router's port on the link.
    pub provider_port: Uuid,
    /// The tenant port's IPv6 address on a dual-stack link.
    pub tenant_address6: Option<Ipv6Addr>,
}

/// A route of the provider router to `dst` over the link, via `gateway`.
fn provider_route(
    provider: &Provider,
    link: &Link,
    dst: IpNet,
    gateway: std::net::IpAddr,
) -> Route {
    Route {
        id: Uuid::new_v4(),
        revision: 0,
        router_id: provider.router_id,
        dst,
        src: match dst {
            IpNet::V4(_) => IpNet::V4(Ipv4Net::default()),
            IpNet::V6(_) => IpNet::V6(Ipv6Net::default()),
        },
        next_hop_port_id: Some(link.provider_port),
        next_hop_gateway: Some(gateway),
        weight: 0,
        kind: RouteKind::Normal,
    }
}

/// The host access of a network on `pod_net` (and `pod_net6`, when
/// dual-stack) behind `link`, with chains `inbound` and `outbound`;
/// nothing when `nat_only`.
pub(super) fn plan(
    provider: &Provider,
    link: &Link,
    (inbound, outbound): (Uuid, Uuid),
    (pod_net, pod_net6): (Ipv4Net, Option<Ipv6Net>),
    nat_only: bool,
) -> HostAccess {
    if nat_only {
        return HostAccess::default();
    }
    let mut access = HostAccess {
        provider_routes: vec![provider_route(
            provider,
            link,
            IpNet::V4(pod_net),
            link.tenant_address.into(),
        )],
        ..HostAccess::default()
    };
    if let (Some(net), Some(gateway)) = (pod_net6, link.tenant_address6) {
        access.provider_routes.push(provider_route(
            provider,
            link,
            IpNet::V6(net),
            gateway.into(),
        ));
    }
    // The host is the uplink's far side (its TAP in the host namespace).
    let host4 = provider
        .uplink_gateway
        .map(|host| IpNet::V4(Ipv4Net::from(host)));
    let host6 = provider
        .ipv6
        .and_then(|v6| v6.uplink_gateway)
        .filter(|_| pod_net6.is_some())
        .map(|host| IpNet::V6(Ipv6Net::from(host)));
    for host in [host4, host6].into_iter().flatten() {
        access.inbound.push(Rule {
            in_port_ids: vec![link.tenant_port],
            src_cidr: Some(host),
            description: "the host reaches the pods directly".into(),
            ..Rule::new(inbound, 0, RuleAction::Accept)
        });
        // Before the masquerade: the host sees the pod's own address. (The
        // uplink masquerades only the link range, which pods are not in.)
        access.outbound.push(Rule {
            out_port_ids: vec![link.tenant_port],
            dst_cidr: Some(host),
            description: "pods reach the host with their own addresses".into(),
            ..Rule::new(outbound, 0, RuleAction::Accept)
        });
    }
    access
}
