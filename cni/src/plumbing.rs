//! The kernel side of an attachment: the veth pair, the pod interface's
//! configuration inside the pod's network namespace, and reading it back.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};

use crate::error::{code, CniError};

/// Opens the pod's network namespace; a missing one is "container unknown".
pub fn open_netns(path: &Path) -> Result<File, CniError> {
    rtnl::open_netns(path).map_err(|error| {
        let code = if error.kind() == std::io::ErrorKind::NotFound {
            code::UNKNOWN_CONTAINER
        } else {
            code::INVALID_ENV
        };
        CniError::new(
            code,
            format!("cannot open network namespace {}", path.display()),
            error.to_string(),
        )
    })
}

/// Creates the veth pair `host_if` ↔ `ifname` (in `netns`, with `mac`),
/// tagging the host end with `alias` and bringing it up. An existing host
/// end with the same alias is reused (a repeated ADD). Returns whether it
/// created the pair.
pub fn ensure_veth(
    host_if: &str,
    alias: &str,
    netns: &File,
    ifname: &str,
    mac: [u8; 6],
) -> Result<bool, CniError> {
    let existing = rtnl::link_by_name(host_if).map_err(|e| CniError::kernel("list links", e))?;
    let created = match existing {
        Some(link) if link.alias.as_deref() == Some(alias) => false,
        Some(_) => {
            return Err(CniError::new(
                code::KERNEL,
                format!("interface {host_if} exists and is not this attachment's"),
                format!("expected its alias to be '{alias}'"),
            ))
        }
        None => {
            use std::os::fd::AsFd;
            let pair = rtnl::VethPair {
                name: host_if,
                peer_name: ifname,
                peer_mac: mac,
                mtu: None,
                peer_netns: netns.as_fd(),
            };
            rtnl::create_veth(&pair).map_err(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    CniError::new(
                        code::KERNEL,
                        format!("interface {ifname} already exists in the container"),
                        e.to_string(),
                    )
                } else {
                    CniError::kernel(format!("create veth {host_if}"), e)
                }
            })?;
            true
        }
    };
    Ok(created)
}

/// Gives the host end its alias (and MTU) and brings it up; returns its MAC.
pub fn configure_host_end(
    host_if: &str,
    alias: &str,
    mtu: Option<u16>,
) -> Result<Vec<u8>, CniError> {
    let index =
        rtnl::link_index(host_if).map_err(|e| CniError::kernel(format!("find {host_if}"), e))?;
    let settings = rtnl::LinkSettings {
        mtu: mtu.map(u32::from),
        alias: Some(alias.to_string()),
    };
    rtnl::configure_link(index, &settings)
        .map_err(|e| CniError::kernel(format!("configure {host_if}"), e))?;
    let link = rtnl::link_by_name(host_if)
        .map_err(|e| CniError::kernel(format!("read {host_if}"), e))?
        .ok_or_else(|| CniError::new(code::KERNEL, format!("{host_if} vanished"), ""))?;
    Ok(link.mac)
}

fn v4(address: IpNet) -> Result<Ipv4Net, CniError> {
    match address {
        IpNet::V4(net) => Ok(net),
        IpNet::V6(net) => Err(CniError::new(
            code::API_REFUSED,
            "IPv6 pod addresses are not supported yet",
            net.to_string(),
        )),
    }
}

/// Inside `netns`: brings `ifname` up with `mtu`, gives it `address` and a
/// default route via `gateway`. Idempotent.
pub fn configure_pod_end(
    netns: &File,
    ifname: &str,
    mtu: u16,
    address: IpNet,
    gateway: Option<IpAddr>,
) -> Result<(), CniError> {
    let address = v4(address)?;
    let gateway = match gateway {
        Some(IpAddr::V4(gw)) => Some(gw),
        Some(IpAddr::V6(gw)) => {
            return Err(CniError::new(
                code::API_REFUSED,
                "IPv6 gateways are not supported yet",
                gw.to_string(),
            ))
        }
        None => None,
    };
    rtnl::in_netns(netns, || {
        let index = rtnl::link_index(ifname)?;
        rtnl::configure_link(
            index,
            &rtnl::LinkSettings {
                mtu: Some(u32::from(mtu)),
                alias: None,
            },
        )?;
        rtnl::add_address(index, address)?;
        if let Some(gateway) = gateway {
            rtnl::replace_route(Ipv4Net::default(), gateway, index)?;
        }
        Ok(())
    })
    .map_err(|e| CniError::kernel(format!("configure {ifname} in the container"), e))
}

/// What the pod interface looks like from inside its namespace.
#[derive(Debug, Clone)]
pub struct PodView {
    /// The link, if `ifname` exists.
    pub link: Option<rtnl::Link>,
    /// Its IPv4 addresses.
    pub addresses: Vec<Ipv4Net>,
    /// Default-route gateways out of it.
    pub default_gateways: Vec<Ipv4Addr>,
}

/// Reads `ifname`'s link, addresses and default routes inside `netns`.
pub fn pod_view(netns: &File, ifname: &str) -> Result<PodView, CniError> {
    rtnl::in_netns(netns, || {
        let Some(link) = rtnl::link_by_name(ifname)? else {
            return Ok(PodView {
                link: None,
                addresses: Vec::new(),
                default_gateways: Vec::new(),
            });
        };
        let addresses = rtnl::addresses(link.index)?;
        let default_gateways = rtnl::routes()?
            .into_iter()
            .filter(|r| r.destination.prefix_len() == 0 && r.index == Some(link.index))
            .filter_map(|r| r.gateway)
            .collect();
        Ok(PodView {
            link: Some(link),
            addresses,
            default_gateways,
        })
    })
    .map_err(|e| CniError::kernel(format!("inspect {ifname} in the container"), e))
}

/// Deletes the host end (its peer in the pod goes with it); fine if gone.
pub fn delete_veth(host_if: &str) -> Result<(), CniError> {
    rtnl::delete_link(host_if)
        .map(|_| ())
        .map_err(|e| CniError::kernel(format!("delete {host_if}"), e))
}
