//! The kernel side of an attachment: the veth pair, the pod interface's
//! configuration inside the pod's network namespace, and reading it back.

use std::fs::File;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

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

/// The smallest MTU IPv6 runs on (RFC 8200); below it the kernel turns
/// IPv6 off on the interface.
const IPV6_MIN_MTU: u16 = 1280;

/// One address the pod interface gets, with its family's default gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddress {
    /// The address with its prefix length.
    pub address: IpNet,
    /// The default route's gateway of this family, if any.
    pub gateway: Option<IpAddr>,
}

/// The IPv6 link-local address the kernel derives from `mac` (EUI-64,
/// `addr_gen_mode` 0): `fe80::/64` with the universal/local bit flipped
/// and `ff:fe` in the middle.
pub fn link_local_of(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// Writes `value` to `/proc/sys/net/ipv6/conf/{ifname}/{setting}` of the
/// calling thread's network namespace.
fn ipv6_conf(ifname: &str, setting: &str, value: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{setting}");
    std::fs::write(&path, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("write {value} to {path}: {e}")))
}

/// The IPv6 settings of a dual-stack or IPv6-only pod interface, made
/// while it is still down: IPv6 on, no duplicate address detection (the
/// NSDB hands every address out once; DAD would hold the pod's addresses
/// back for a second or more), the link-local derived from the MAC
/// (EUI-64), and no SLAAC addresses the NSDB does not know (port security
/// would drop them).
fn prepare_ipv6(ifname: &str) -> std::io::Result<()> {
    ipv6_conf(ifname, "disable_ipv6", "0")?;
    ipv6_conf(ifname, "accept_dad", "0")?;
    ipv6_conf(ifname, "addr_gen_mode", "0")?;
    ipv6_conf(ifname, "autoconf", "0")
}

/// Inside `netns`: brings `ifname` up with `mtu`, gives it `addresses`
/// (IPv6 ones without DAD, see [`prepare_ipv6`]) and a default route of
/// each family via its gateway. Idempotent.
pub fn configure_pod_end(
    netns: &File,
    ifname: &str,
    mtu: u16,
    addresses: &[PodAddress],
) -> Result<(), CniError> {
    let has_ipv6 = addresses.iter().any(|a| a.address.addr().is_ipv6());
    if has_ipv6 && mtu < IPV6_MIN_MTU {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("an MTU of {mtu} is too small for the pod's IPv6 address"),
            format!(
                "IPv6 needs at least {IPV6_MIN_MTU}; raise \"mtu\" (or the deployment's pod MTU)"
            ),
        ));
    }
    rtnl::in_netns(netns, || {
        let index = rtnl::link_index(ifname)?;
        if has_ipv6 {
            prepare_ipv6(ifname)?;
        }
        rtnl::configure_link(
            index,
            &rtnl::LinkSettings {
                mtu: Some(u32::from(mtu)),
                alias: None,
            },
        )?;
        for address in addresses {
            rtnl::add_ip_address(index, address.address, address.address.addr().is_ipv6())?;
        }
        for address in addresses {
            if let Some(gateway) = address.gateway {
                let default = match gateway {
                    IpAddr::V4(_) => IpNet::V4(Ipv4Net::default()),
                    IpAddr::V6(_) => IpNet::V6(Ipv6Net::default()),
                };
                rtnl::replace_ip_route(default, gateway, index)?;
            }
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
    /// Its addresses of both families (link-local ones too), with flags.
    pub addresses: Vec<rtnl::Address>,
    /// Default-route gateways out of it, of both families.
    pub default_gateways: Vec<IpAddr>,
}

impl PodView {
    /// The pod's link-local address if it is the one its MAC derives, else
    /// what is wrong.
    pub fn link_local_problem(&self) -> Option<String> {
        let link = self.link.as_ref()?;
        let mac: [u8; 6] = link.mac.as_slice().try_into().ok()?;
        let wanted = link_local_of(mac);
        let local: Vec<&rtnl::Address> = self
            .addresses
            .iter()
            .filter(|a| matches!(a.address, IpNet::V6(n) if n.addr().segments()[0] == 0xfe80))
            .collect();
        match local
            .iter()
            .find(|a| a.address.addr() == IpAddr::V6(wanted))
        {
            Some(found) if found.tentative() || found.dad_failed() => Some(format!(
                "{} is not usable yet (flags {:#x})",
                found.address, found.flags
            )),
            Some(_) => None,
            None => Some(format!(
                "no link-local {wanted} (from MAC {}); has {:?}",
                crate::result::mac_string(&link.mac),
                local.iter().map(|a| a.address).collect::<Vec<_>>()
            )),
        }
    }
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
        let addresses = rtnl::ip_addresses(link.index)?;
        let default_gateways = rtnl::ip_routes()?
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

/// Waits until `ifname` in `netns` has the IPv6 link-local its MAC derives
/// and every address of `addresses` is usable (not tentative), for at most
/// `timeout`: the kernel adds the link-local once the link has carrier.
pub async fn wait_ipv6_ready(
    netns: &File,
    ifname: &str,
    addresses: &[PodAddress],
    timeout: Duration,
) -> Result<(), CniError> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = pod_view(netns, ifname)?;
        let mut problem = view.link_local_problem();
        for wanted in addresses.iter().filter(|a| a.address.addr().is_ipv6()) {
            match view.addresses.iter().find(|a| a.address == wanted.address) {
                None => problem = Some(format!("{} is missing", wanted.address)),
                Some(a) if a.tentative() || a.dad_failed() => {
                    problem = Some(format!(
                        "{} is not usable (flags {:#x})",
                        a.address, a.flags
                    ))
                }
                Some(_) => {}
            }
        }
        let Some(problem) = problem else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(CniError::new(
                code::KERNEL,
                format!("{ifname}'s IPv6 addresses are not ready"),
                problem,
            ));
        }
        tokio::time::sleep(IPV6_POLL).await;
    }
}

/// How often ADD looks whether the pod's IPv6 addresses are ready.
const IPV6_POLL: Duration = Duration::from_millis(5);

/// Deletes the host end (its peer in the pod goes with it); fine if gone.
pub fn delete_veth(host_if: &str) -> Result<(), CniError> {
    rtnl::delete_link(host_if)
        .map(|_| ())
        .map_err(|e| CniError::kernel(format!("delete {host_if}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_local_is_eui_64_of_the_mac() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        assert_eq!(
            link_local_of(mac),
            "fe80::11:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap()
        );
        let universal = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
        assert_eq!(
            link_local_of(universal),
            "fe80::5054:ff:feab:cdef".parse::<Ipv6Addr>().unwrap()
        );
    }
}
