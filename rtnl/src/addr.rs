//! Addresses of links, IPv4 and IPv6.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::message::{attributes, exchange, transact, u32_value, Attrs, Request};

/// `IFA_FLAGS`: the 32-bit address flags (the header has only 8 bits).
const IFA_FLAGS: u16 = 8;
/// No duplicate address detection: the address is usable at once.
const IFA_F_NODAD: u32 = 0x02;
/// Duplicate address detection failed.
const IFA_F_DADFAILED: u32 = 0x08;
/// Duplicate address detection has not finished: not usable yet.
const IFA_F_TENTATIVE: u32 = 0x40;

/// One address of a link as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The address with its prefix length.
    pub address: IpNet,
    /// The kernel's `IFA_F_*` flags.
    pub flags: u32,
}

impl Address {
    /// Whether duplicate address detection still holds the address back.
    pub fn tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }

    /// Whether duplicate address detection found the address in use.
    pub fn dad_failed(&self) -> bool {
        self.flags & IFA_F_DADFAILED != 0
    }
}

fn family(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A `struct ifaddrmsg` of `family` for an address of `prefix_len` on link `index`.
fn ifaddrmsg(family: u8, prefix_len: u8, flags: u8, index: u32) -> [u8; 8] {
    // family, prefixlen, flags, scope, index.
    let mut body = [0u8; 8];
    body[0] = family;
    body[1] = prefix_len;
    body[2] = flags;
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    body
}

/// Gives link `index` the IPv4 address `address` (with its prefix); an
/// address that is already there is not an error.
pub fn add_address(index: u32, address: Ipv4Net) -> io::Result<()> {
    add_ip_address(index, IpNet::V4(address), false)
}

/// Gives link `index` the address `address` (with its prefix), of either
/// family; with `nodad`, an IPv6 address skips duplicate address detection
/// and is usable at once. An address that is already there is not an error.
pub fn add_ip_address(index: u32, address: IpNet, nodad: bool) -> io::Result<()> {
    let bytes = octets(address.addr());
    let flags = if nodad { IFA_F_NODAD } else { 0 };
    let request = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let body = Attrs::default()
        .raw(&ifaddrmsg(
            family(address.addr()),
            address.prefix_len(),
            flags as u8,
            index,
        ))
        .attr(libc::IFA_LOCAL, &bytes)
        .attr(libc::IFA_ADDRESS, &bytes)
        .attr(IFA_FLAGS, &flags.to_ne_bytes());
    transact(
        Request::new(libc::RTM_NEWADDR, request, body),
        &[libc::EEXIST],
    )
}

/// The IPv4 addresses (with prefixes) of link `index`.
pub fn addresses(index: u32) -> io::Result<Vec<Ipv4Net>> {
    Ok(ip_addresses(index)?
        .into_iter()
        .filter_map(|a| match a.address {
            IpNet::V4(net) => Some(net),
            IpNet::V6(_) => None,
        })
        .collect())
}

/// Every address of link `index`, IPv4 and IPv6 (link-local ones too),
/// with its flags.
pub fn ip_addresses(index: u32) -> io::Result<Vec<Address>> {
    let body = Attrs::default().raw(&ifaddrmsg(libc::AF_UNSPEC as u8, 0, 0, 0));
    let answers = exchange(
        Request::new(libc::RTM_GETADDR, libc::NLM_F_DUMP as u16, body),
        &[],
    )?;
    let mut out = Vec::new();
    for message in &answers {
        let Some(header) = message.get(..8) else {
            continue;
        };
        let on = u32::from_ne_bytes(header[4..8].try_into().unwrap_or([0; 4]));
        if on != index {
            continue;
        }
        let mut flags = u32::from(header[2]);
        let mut local = None;
        let mut peer = None;
        for (kind, value) in attributes(&message[8..]) {
            let address = match (header[0] as i32, value.len()) {
                (libc::AF_INET, 4) => <[u8; 4]>::try_from(value)
                    .ok()
                    .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
                (libc::AF_INET6, 16) => <[u8; 16]>::try_from(value)
                    .ok()
                    .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
                _ => None,
            };
            match kind {
                libc::IFA_LOCAL => local = address.or(local),
                libc::IFA_ADDRESS => peer = address.or(peer),
                IFA_FLAGS => flags = u32_value(value).unwrap_or(flags),
                _ => {}
            }
        }
        if let Some(address) = local.or(peer) {
            if let Ok(address) = IpNet::new(address, header[1]) {
                out.push(Address { address, flags });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_addresses_of_both_families() {
        let lo = crate::link_index("lo").unwrap();
        let all = ip_addresses(lo).unwrap();
        let v4: IpNet = "127.0.0.1/8".parse().unwrap();
        assert!(all.iter().any(|a| a.address == v4), "{all:?}");
        assert!(all.iter().all(|a| !a.dad_failed()));
        assert!(addresses(lo)
            .unwrap()
            .contains(&"127.0.0.1/8".parse().unwrap()));
        let v6_enabled = std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
            .is_ok_and(|v| v.trim() == "0");
        if v6_enabled {
            let v6: IpNet = "::1/128".parse().unwrap();
            assert!(all.iter().any(|a| a.address == v6), "{all:?}");
        }
    }
}
