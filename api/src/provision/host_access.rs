//! How the host and a tenant's pods reach each other: without NAT, both
//! ways, as Kubernetes nodes and pods do. The provider router routes the
//! pod subnet back to the tenant, the tenant router lets the host in, and
//! its outbound chain accepts traffic to the host before the masquerade, so
//! the host sees the pod's own address and the pod the host's.
//!
//! A NAT-only network gets none of this: pods reach the host masqueraded
//! twice (tenant router, then uplink) and the host cannot open connections
//! to them. It is the explicit choice for a pod subnet that overlaps
//! another tenant's, which the host could not route to.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use nsdb::{Provider, Route, RouteKind, Rule, RuleAction};
use uuid::Uuid;

/// The rules and route that give the host direct access to one tenant's pods.
#[derive(Debug, Default)]
pub(super) struct HostAccess {
    /// Accept rules for the tenant router's inbound chain (positions unset).
    pub inbound: Vec<Rule>,
    /// Accept rules for its outbound chain, before the masquerade (positions unset).
    pub outbound: Vec<Rule>,
    /// The provider router's route back to the pod subnet.
    pub provider_route: Option<Route>,
}

/// Where a tenant network meets the provider.
pub(super) struct Link {
    /// The tenant router's port on the link.
    pub tenant_port: Uuid,
    /// Its address: the provider's next hop to the pods.
    pub tenant_address: Ipv4Addr,
    /// The provider router's port on the link.
    pub provider_port: Uuid,
}

/// The host access of a network on `pod_net` behind `link`, with chains
/// `inbound` and `outbound`; nothing when `nat_only`.
pub(super) fn plan(
    provider: &Provider,
    link: &Link,
    (inbound, outbound): (Uuid, Uuid),
    pod_net: Ipv4Net,
    nat_only: bool,
) -> HostAccess {
    if nat_only {
        return HostAccess::default();
    }
    let mut access = HostAccess {
        provider_route: Some(Route {
            id: Uuid::new_v4(),
            revision: 0,
            router_id: provider.router_id,
            dst: IpNet::V4(pod_net),
            src: IpNet::V4(Ipv4Net::default()),
            next_hop_port_id: Some(link.provider_port),
            next_hop_gateway: Some(link.tenant_address.into()),
            weight: 0,
            kind: RouteKind::Normal,
        }),
        ..HostAccess::default()
    };
    // The host is the uplink's far side (its TAP in the host namespace).
    if let Some(host) = provider.uplink_gateway {
        let host = Some(IpNet::V4(Ipv4Net::from(host)));
        access.inbound.push(Rule {
            in_port_ids: vec![link.tenant_port],
            src_cidr: host,
            description: "the host reaches the pods directly".into(),
            ..Rule::new(inbound, 0, RuleAction::Accept)
        });
        // Before the masquerade: the host sees the pod's own address. (The
        // uplink masquerades only the link range, which pods are not in.)
        access.outbound.push(Rule {
            out_port_ids: vec![link.tenant_port],
            dst_cidr: host,
            description: "pods reach the host with their own addresses".into(),
            ..Rule::new(outbound, 0, RuleAction::Accept)
        });
    }
    access
}
