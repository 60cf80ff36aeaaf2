//! Routes in the main table: IPv4 ([`Route`]) and either family ([`IpRoute`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::message::{attributes, exchange, transact, u32_value, Attrs, Request};

/// One IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix.
    pub destination: Ipv4Net,
    /// The gateway, if not on-link.
    pub gateway: Option<Ipv4Addr>,
    /// The outgoing link.
    pub index: Option<u32>,
}

/// One route of the main table, of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRoute {
    /// The destination prefix.
    pub destination: IpNet,
    /// The gateway, if not on-link.
    pub gateway: Option<IpAddr>,
    /// The outgoing link.
    pub index: Option<u32>,
}

/// A `struct rtmsg` for an IPv4 main-table route to a prefix of `dst_len`.
fn rtmsg(dst_len: u8, scope: u8, kind: u8, protocol: u8) -> [u8; 12] {
    rtmsg_of(libc::AF_INET as u8, dst_len, scope, kind, protocol)
}

/// A `struct rtmsg` of `family` for a main-table route to a prefix of `dst_len`.
fn rtmsg_of(family: u8, dst_len: u8, scope: u8, kind: u8, protocol: u8) -> [u8; 12] {
    // family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut body = [0u8; 12];
    body[0] = family;
    body[1] = dst_len;
    body[4] = libc::RT_TABLE_MAIN;
    body[5] = protocol;
    body[6] = scope;
    body[7] = kind;
    body
}

/// Routes `destination` via `gateway` out of link `index` (replacing any
/// route to the same prefix).
pub fn replace_route(destination: Ipv4Net, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    let body = Attrs::default()
        .raw(&rtmsg(
            destination.prefix_len(),
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
            libc::RTPROT_STATIC,
        ))
        .attr(libc::RTA_DST, &destination.network().octets())
        .attr(libc::RTA_GATEWAY, &gateway.octets())
        .attr(libc::RTA_OIF, &index.to_ne_bytes());
    transact(Request::new(libc::RTM_NEWROUTE, flags, body), &[])
}

/// Routes `destination` via `gateway` (of the same family) out of link
/// `index`, replacing any route to the same prefix.
pub fn replace_ip_route(destination: IpNet, gateway: IpAddr, index: u32) -> io::Result<()> {
    let (family, dst, gw) = match (destination, gateway) {
        (IpNet::V4(d), IpAddr::V4(g)) => (
            libc::AF_INET,
            d.network().octets().to_vec(),
            g.octets().to_vec(),
        ),
        (IpNet::V6(d), IpAddr::V6(g)) => (
            libc::AF_INET6,
            d.network().octets().to_vec(),
            g.octets().to_vec(),
        ),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("route to {destination} via {gateway}: families differ"),
            ))
        }
    };
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    let body = Attrs::default()
        .raw(&rtmsg_of(
            family as u8,
            destination.prefix_len(),
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
            libc::RTPROT_STATIC,
        ))
        .attr(libc::RTA_DST, &dst)
        .attr(libc::RTA_GATEWAY, &gw)
        .attr(libc::RTA_OIF, &index.to_ne_bytes());
    transact(Request::new(libc::RTM_NEWROUTE, flags, body), &[])
}

/// Every route of the main table, IPv4 and IPv6.
pub fn ip_routes() -> io::Result<Vec<IpRoute>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let body = Attrs::default().raw(&rtmsg_of(family as u8, 0, 0, 0, 0));
        let answers = exchange(
            Request::new(libc::RTM_GETROUTE, libc::NLM_F_DUMP as u16, body),
            &[],
        )?;
        for message in &answers {
            let Some(header) = message.get(..12) else {
                continue;
            };
            if i32::from(header[0]) != family {
                continue;
            }
            let mut table = u32::from(header[4]);
            let mut destination = None;
            let mut gateway = None;
            let mut index = None;
            for (kind, value) in attributes(&message[12..]) {
                let address = match value.len() {
                    4 => <[u8; 4]>::try_from(value)
                        .ok()
                        .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
                    16 => <[u8; 16]>::try_from(value)
                        .ok()
                        .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
                    _ => None,
                };
                match kind {
                    libc::RTA_DST => destination = address,
                    libc::RTA_GATEWAY => gateway = address,
                    libc::RTA_OIF => index = u32_value(value),
                    libc::RTA_TABLE => table = u32_value(value).unwrap_or(table),
                    _ => {}
                }
            }
            if table != u32::from(libc::RT_TABLE_MAIN) {
                continue;
            }
            let unspecified = if family == libc::AF_INET {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            if let Ok(destination) = IpNet::new(destination.unwrap_or(unspecified), header[1]) {
                out.push(IpRoute {
                    destination,
                    gateway,
                    index,
                });
            }
        }
    }
    Ok(out)
}

/// Removes the route to `destination` out of link `index` (a route that is
/// already gone is not an error).
pub fn delete_route(destination: Ipv4Net, index: u32) -> io::Result<()> {
    let body = Attrs::default()
        .raw(&rtmsg(
            destination.prefix_len(),
            libc::RT_SCOPE_NOWHERE,
            0,
            0,
        ))
        .attr(libc::RTA_DST, &destination.network().octets())
        .attr(libc::RTA_OIF, &index.to_ne_bytes());
    transact(
        Request::new(libc::RTM_DELROUTE, 0, body),
        &[libc::ESRCH, libc::ENODEV],
    )
}

/// Removes the route to `destination` (of either family) out of link
/// `index` (a route that is already gone is not an error).
pub fn delete_ip_route(destination: IpNet, index: u32) -> io::Result<()> {
    let (family, dst) = match destination {
        IpNet::V4(d) => (libc::AF_INET, d.network().octets().to_vec()),
        IpNet::V6(d) => (libc::AF_INET6, d.network().octets().to_vec()),
    };
    let body = Attrs::default()
        .raw(&rtmsg_of(
            family as u8,
            destination.prefix_len(),
            libc::RT_SCOPE_NOWHERE,
            0,
            0,
        ))
        .attr(libc::RTA_DST, &dst)
        .attr(libc::RTA_OIF, &index.to_ne_bytes());
    transact(
        Request::new(libc::RTM_DELROUTE, 0, body),
        &[libc::ESRCH, libc::ENODEV],
    )
}

/// Every IPv4 route of the main table.
pub fn routes() -> io::Result<Vec<Route>> {
    let body = Attrs::default().raw(&rtmsg(0, 0, 0, 0));
    let answers = exchange(
        Request::new(libc::RTM_GETROUTE, libc::NLM_F_DUMP as u16, body),
        &[],
    )?;
    let mut out = Vec::new();
    for message in &answers {
        let Some(header) = message.get(..12) else {
            continue;
        };
        let mut table = u32::from(header[4]);
        if header[0] != libc::AF_INET as u8 {
            continue;
        }
        let mut destination = Ipv4Addr::UNSPECIFIED;
        let mut gateway = None;
        let mut index = None;
        for (kind, value) in attributes(&message[12..]) {
            let octets = <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from);
            match kind {
                libc::RTA_DST => destination = octets.unwrap_or(destination),
                libc::RTA_GATEWAY => gateway = octets,
                libc::RTA_OIF => index = u32_value(value),
                libc::RTA_TABLE => table = u32_value(value).unwrap_or(table),
                _ => {}
            }
        }
        if table != u32::from(libc::RT_TABLE_MAIN) {
            continue;
        }
        if let Ok(destination) = Ipv4Net::new(destination, header[1]) {
            out.push(Route {
                destination,
                gateway,
                index,
            });
        }
    }
    Ok(out)
}
