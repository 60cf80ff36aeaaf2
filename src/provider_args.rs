//! The provider flags of `plexus serve` and `plexus api`: the uplink and
//! the address plans tenant networks are carved from. They take effect
//! when the deployment's provider router is first created.

use std::net::Ipv4Addr;

use anyhow::Context;
use clap::Parser;
use ipnet::Ipv4Net;

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
        })
    }
}
