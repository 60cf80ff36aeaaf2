//! IPv4 addresses of links.

use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::message::{attributes, exchange, transact, Attrs, Request};

/// A `struct ifaddrmsg` for an IPv4 address of `prefix_len` on link `index`.
fn ifaddrmsg(prefix_len: u8, index: u32) -> [u8; 8] {
    // family, prefixlen, flags, scope, index.
    let mut body = [0u8; 8];
    body[0] = libc::AF_INET as u8;
    body[1] = prefix_len;
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    body
}

/// Gives link `index` the address `address` (with its prefix); an address
/// that is already there is not an error.
pub fn add_address(index: u32, address: Ipv4Net) -> io::Result<()> {
    let octets = address.addr().octets();
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let body = Attrs::default()
        .raw(&ifaddrmsg(address.prefix_len(), index))
        .attr(libc::IFA_LOCAL, &octets)
        .attr(libc::IFA_ADDRESS, &octets);
    transact(
        Request::new(libc::RTM_NEWADDR, flags, body),
        &[libc::EEXIST],
    )
}

/// The IPv4 addresses (with prefixes) of link `index`.
pub fn addresses(index: u32) -> io::Result<Vec<Ipv4Net>> {
    let body = Attrs::default().raw(&ifaddrmsg(0, 0));
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
        if header[0] != libc::AF_INET as u8 || on != index {
            continue;
        }
        let local = attributes(&message[8..])
            .filter(|(k, _)| *k == libc::IFA_LOCAL || *k == libc::IFA_ADDRESS)
            .filter_map(|(k, v)| Some((k, <[u8; 4]>::try_from(v).ok()?)))
            .min_by_key(|(k, _)| *k != libc::IFA_LOCAL);
        if let Some((_, octets)) = local {
            out.extend(Ipv4Net::new(Ipv4Addr::from(octets), header[1]).ok());
        }
    }
    Ok(out)
}
