//! The provider flags of `plexus serve` and `plexus api`: the uplink and
//! the address plans tenant networks are carved from. They take effect
//! when the deployment's provider router is first created; IPv6 may be
//! added later (`--ipv6`), never changed.

use std::net::Ipv4Addr;

use anyhow::Context;
use clap::Parser;
use ipnet::{Ipv4Net, Ipv6Net};

/// Provider settings.
#[derive(Parser)]
pub struct ProviderArgs {
    /// The host interface the provider router's uplink port is bound to
    /// (created as a TAP device in the host's namespace when missing).
    #[arg(long, default_value = "plexus0", env = "PLEXUS_UPLINK_INTERFACE")]
    pub uplink_interface: String,
    /// The uplink port's address and prefix.
    #[arg(long, default_value = "100.64.0.2/24", env = "PLEXUS_UPLINK_ADDRESS")]
    pub uplink_address: Ipv4Net,
    /// The next hop beyond the uplink; also the address the host side of a
    /// created uplink TAP gets (default: the first address of the uplink subnet).
    #[arg(long, env = "PLEXUS_UPLINK_GATEWAY")]
    pub uplink_gateway: Option<Ipv4Addr>,
    /// Run without an uplink (tenants reach only each other's floating IPs).
    #[arg(long)]
    pub no_uplink: bool,
    /// Floating IPs are allocated from this range.
    #[arg(long, default_value = "100.64.1.0/24", env = "PLEXUS_EXTERNAL_CIDR")]
    pub external_cidr: Ipv4Net,
    /// Default tenant pod subnets are carved from this range.
    #[arg(long, default_value = "10.128.0.0/12", env = "PLEXUS_POD_CIDR")]
    pub pod_cidr: Ipv4Net,
    /// The prefix length of a default tenant pod subnet.
    #[arg(long, default_value_t = 24, env = "PLEXUS_POD_PREFIX_LEN")]
    pub pod_prefix_len: u8,
    /// Per-tenant /30 links to the provider router are carved from this range.
    #[arg(long, default_value = "169.254.0.0/16", env = "PLEXUS_LINK_CIDR")]
    pub link_cidr: Ipv4Net,
    /// The MTU pods get (underlay MTU minus the 50 bytes of VXLAN).
    #[arg(long, default_value_t = 1450, env = "PLEXUS_POD_MTU")]
    pub pod_mtu: u16,
    /// Dual-stack tenant networks: IPv6 pod prefixes, links and routes,
    /// routed to the host without NAT (implied by any of the IPv6 flags
    /// below, which otherwise take their defaults).
    #[arg(long, env = "PLEXUS_IPV6", value_parser = clap::builder::BoolishValueParser::new())]
    pub ipv6: bool,
    /// Default tenant IPv6 pod prefixes are carved from this range
    /// [default: fd70:6c65:7875:8000::/49].
    #[arg(long, env = "PLEXUS_POD_CIDR6")]
    pub pod_cidr6: Option<Ipv6Net>,
    /// The prefix length of a default tenant IPv6 pod prefix.
    #[arg(long, default_value_t = 64, env = "PLEXUS_POD_PREFIX_LEN6")]
    pub pod_prefix_len6: u8,
    /// Per-tenant /126 IPv6 links to the provider router are carved from
    /// this range [default: fd70:6c65:7875:1::/64].
    #[arg(long, env = "PLEXUS_LINK_CIDR6")]
    pub link_cidr6: Option<Ipv6Net>,
    /// The uplink port's IPv6 address and prefix; the host side of a
    /// created uplink TAP gets the subnet's first address
    /// [default: fd70:6c65:7875::2/64].
    #[arg(long, env = "PLEXUS_UPLINK_ADDRESS6")]
    pub uplink_address6: Option<Ipv6Net>,
}

impl ProviderArgs {
    /// The plan, with the uplink bound on `uplink_host` (none: no uplink).
    pub fn plan(
        &self,
        uplink_host: Option<uuid::Uuid>,
    ) -> anyhow::Result<api::provision::ProviderPlan> {
        let uplink = match uplink_host {
            Some(host_id) if !self.no_uplink => {
                let gateway = match self.uplink_gateway {
                    Some(gateway) => gateway,
                    None => self
                        .uplink_address
                        .hosts()
                        .find(|a| *a != self.uplink_address.addr())
                        .context(
                            "the uplink subnet has no room for a gateway; give --uplink-gateway",
                        )?,
                };
                anyhow::ensure!(
                    self.uplink_address.contains(&gateway) && gateway != self.uplink_address.addr(),
                    "the uplink gateway {gateway} must be another address of {}",
                    self.uplink_address.trunc()
                );
                Some(api::provision::UplinkPlan {
                    host_id,
                    interface: self.uplink_interface.clone(),
                    address: self.uplink_address,
                    gateway,
                })
            }
            _ => None,
        };
        Ok(api::provision::ProviderPlan {
            uplink,
            link_cidr: self.link_cidr.trunc(),
            pod_cidr: self.pod_cidr.trunc(),
            pod_prefix_len: self.pod_prefix_len,
            external_cidr: self.external_cidr.trunc(),
            pod_mtu: self.pod_mtu,
            ipv6: self.plan6()?,
        })
    }

    /// The IPv6 plan, when any IPv6 flag is given.
    fn plan6(&self) -> anyhow::Result<Option<api::provision::Ipv6Plan>> {
        let wanted = self.ipv6
            || self.pod_cidr6.is_some()
            || self.link_cidr6.is_some()
            || self.uplink_address6.is_some();
        if !wanted {
            return Ok(None);
        }
        let defaults = api::provision::Ipv6Plan::default();
        let plan = api::provision::Ipv6Plan {
            link_cidr: self.link_cidr6.unwrap_or(defaults.link_cidr).trunc(),
            pod_cidr: self.pod_cidr6.unwrap_or(defaults.pod_cidr).trunc(),
            pod_prefix_len: self.pod_prefix_len6,
            uplink_address: self.uplink_address6.unwrap_or(defaults.uplink_address),
        };
        check6(&plan)?;
        Ok(Some(plan))
    }
}

/// Refuses IPv6 settings that cannot make tenant networks.
fn check6(plan: &api::provision::Ipv6Plan) -> anyhow::Result<()> {
    let overlap = |a: &Ipv6Net, b: &Ipv6Net| a.contains(&b.network()) || b.contains(&a.network());
    anyhow::ensure!(
        plan.link_cidr.prefix_len() <= 126,
        "--link-cidr6 {} has no room for a /126 link",
        plan.link_cidr
    );
    anyhow::ensure!(
        (plan.pod_cidr.prefix_len()..=120).contains(&plan.pod_prefix_len),
        "--pod-prefix-len6 {} must be within /{} (--pod-cidr6 {}) and /120",
        plan.pod_prefix_len,
        plan.pod_cidr.prefix_len(),
        plan.pod_cidr
    );
    anyhow::ensure!(
        vswitch::uplink::host_address6(plan.uplink_address).is_some(),
        "--uplink-address6 {} must be a global or unique-local address on a /126 or larger subnet",
        plan.uplink_address
    );
    let uplink = plan.uplink_address.trunc();
    for (a, an, b, bn) in [
        (plan.link_cidr, "--link-cidr6", plan.pod_cidr, "--pod-cidr6"),
        (uplink, "--uplink-address6", plan.pod_cidr, "--pod-cidr6"),
        (uplink, "--uplink-address6", plan.link_cidr, "--link-cidr6"),
    ] {
        anyhow::ensure!(!overlap(&a, &b), "{an} {a} overlaps {bn} {b}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ProviderArgs {
        ProviderArgs::parse_from(std::iter::once("plexus").chain(extra.iter().copied()))
    }

    #[test]
    fn no_ipv6_flag_plans_no_ipv6() {
        assert_eq!(args(&[]).plan(None).unwrap().ipv6, None);
    }

    #[test]
    fn one_ipv6_flag_turns_ipv6_on_with_defaults_for_the_rest() {
        let defaults = api::provision::Ipv6Plan::default();
        assert_eq!(
            args(&["--ipv6"]).plan(None).unwrap().ipv6,
            Some(defaults.clone())
        );
        let plan = args(&["--pod-cidr6", "fd12:3456::/48"]).plan(None).unwrap();
        let v6 = plan.ipv6.unwrap();
        assert_eq!(v6.pod_cidr.to_string(), "fd12:3456::/48");
        assert_eq!(v6.link_cidr, defaults.link_cidr);
        assert_eq!(v6.pod_prefix_len, 64);
    }

    #[test]
    fn unusable_ipv6_settings_are_refused() {
        for bad in [
            &["--link-cidr6", "fd00::/127"][..],
            &["--ipv6", "--pod-prefix-len6", "32"],
            &["--uplink-address6", "fe80::2/64"],
            &["--uplink-address6", "fd00::2/127"],
            &["--pod-cidr6", "fd70:6c65:7875::/48"],
        ] {
            assert!(args(bad).plan(None).is_err(), "{bad:?} is refused");
        }
    }
}
