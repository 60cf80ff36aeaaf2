//! The IPv6 half of a dual-stack tenant network: a /126 beside the IPv4
//! /30 link, an IPv6 pod prefix whose first address is the pods' gateway,
//! and its pool on the default bridge.
//!
//! The /126 is the one with the /30's index in the IPv6 link range, so the
//! NSDB's check that two ports of the provider router never share an IPv4
//! subnet keeps the IPv6 links apart too, even between concurrent inits.

use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nsdb::{IpPool, ProviderIpv6};

use crate::problem::Problem;

/// The IPv6 addresses of one dual-stack tenant network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Half6 {
    /// The provider router's address on the /126 (its first).
    pub provider_link: Ipv6Net,
    /// The tenant router's address on the /126 (its second).
    pub tenant_link: Ipv6Net,
    /// The pod prefix.
    pub pod_net: Ipv6Net,
    /// The pods' gateway: the prefix's first address.
    pub gateway: Ipv6Addr,
}

fn exhausted(title: &str, detail: String) -> Problem {
    Problem::new(axum::http::StatusCode::CONFLICT, "exhausted", title, detail)
}

/// Refuses a requested IPv6 pod prefix with host bits or no room for pods.
pub(super) fn check_pod_cidr6(net: Ipv6Net) -> Result<(), Problem> {
    if net.trunc() != net {
        return Err(Problem::bad_request(format!(
            "{net} has host bits set; did you mean {}?",
            net.trunc()
        ))
        .with_field("pod_cidr6"));
    }
    if net.prefix_len() > 120 {
        return Err(
            Problem::bad_request(format!("{net} is too small for pods")).with_field("pod_cidr6")
        );
    }
    Ok(())
}

fn offset(net: Ipv6Net, n: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + n)
}

/// The /126 that goes with the IPv4 link `link_net` of the range `link_cidr`.
fn link126(v6: &ProviderIpv6, link_cidr: Ipv4Net, link_net: Ipv4Net) -> Result<Ipv6Net, Problem> {
    let index = u128::from((u32::from(link_net.network()) - u32::from(link_cidr.network())) >> 2);
    let room = 126 - u32::from(v6.link_cidr.prefix_len());
    if room < 128 && index >> room != 0 {
        return Err(exhausted(
            "No IPv6 link subnet left",
            format!(
                "the IPv6 link range {} has no /126 for link {link_net} (number {index})",
                v6.link_cidr
            ),
        ));
    }
    Ipv6Net::new(offset(v6.link_cidr, index << 2), 126)
        .map_err(|_| Problem::bad_request("a /126 is a valid prefix"))
}

/// The first /`len` of `within` that overlaps none of `used`.
fn first_free6(within: Ipv6Net, len: u8, used: &[Ipv6Net]) -> Option<Ipv6Net> {
    let overlaps = |a: &Ipv6Net, b: &Ipv6Net| a.contains(&b.network()) || b.contains(&a.network());
    within
        .subnets(len)
        .ok()?
        .find(|candidate| !used.iter().any(|u| overlaps(u, candidate)))
}

/// The IPv6 half beside the IPv4 link `link_net` (of `link_cidr`), on the
/// requested `pod_cidr6` or the first free prefix of the provider's range
/// that no pool in `pools` overlaps.
pub(super) fn plan(
    v6: &ProviderIpv6,
    (link_cidr, link_net): (Ipv4Net, Ipv4Net),
    pools: &[IpPool],
    pod_cidr6: Option<Ipv6Net>,
) -> Result<Half6, Problem> {
    let link = link126(v6, link_cidr, link_net)?;
    let pod_net = match pod_cidr6 {
        Some(net) => net,
        None => {
            let used: Vec<Ipv6Net> = pools
                .iter()
                .filter_map(|p| match p.cidr {
                    IpNet::V6(n) => Some(n.trunc()),
                    IpNet::V4(_) => None,
                })
                .collect();
            first_free6(v6.pod_cidr, v6.pod_prefix_len, &used).ok_or_else(|| {
                exhausted(
                    "No IPv6 pod prefix left",
                    format!("every /{} of {} is in use", v6.pod_prefix_len, v6.pod_cidr),
                )
            })?
        }
    };
    let address = |n: u128| Ipv6Net::new(offset(link, n), 126).unwrap_or(link);
    Ok(Half6 {
        provider_link: address(1),
        tenant_link: address(2),
        pod_net,
        gateway: offset(pod_net, 1),
    })
}
