//! Port security at exterior ports: the addresses a frame claims must be
//! the port's allowed addresses (IPv4, IPv6 with its link-local, ARP and
//! NDP claims).

use std::net::IpAddr;

use crate::engine::bridge;
use crate::engine::packet::{Ipv6Info, PacketInfo, L3};
use crate::snapshot::{Mac, PortInfo};
use crate::wire;

/// Anti-spoofing at an exterior port with allowed addresses: the source MAC
/// must be allowed, and the IP source (IPv4 or IPv6), an ARP sender address
/// or an NDP advertisement's target must be allowed together with that MAC.
/// `None` when the frame is fine.
pub(super) fn spoofing(port: &PortInfo, packet: &PacketInfo) -> Option<String> {
    if port.allowed.is_empty() {
        return None;
    }
    let mac = packet.eth_src;
    if !port.allowed.iter().any(|(allowed, _)| *allowed == mac) {
        return Some(format!(
            "source MAC {} is not allowed on this port",
            bridge::fmt_mac(&mac)
        ));
    }
    let claimed = match &packet.l3 {
        L3::Ipv4(ip) => Some(IpAddr::V4(ip.src)),
        // An ARP probe (sender 0.0.0.0) claims nothing.
        L3::Arp(arp) if !arp.sender_ip.is_unspecified() => {
            if arp.sender_mac != mac {
                return Some(format!(
                    "ARP sender MAC {} differs from the frame's",
                    bridge::fmt_mac(&arp.sender_mac)
                ));
            }
            Some(IpAddr::V4(arp.sender_ip))
        }
        L3::Ipv6(ip) => return ipv6_spoofing(port, mac, ip),
        _ => None,
    };
    match claimed {
        Some(ip) if !owns(port, mac, ip) => Some(format!(
            "source address {ip} is not allowed with MAC {}",
            bridge::fmt_mac(&mac)
        )),
        _ => None,
    }
}

/// Whether `port` may use `ip` with `mac`: one of its allowed addresses, or
/// for IPv6 the link-local address derived from the allowed MAC.
fn owns(port: &PortInfo, mac: Mac, ip: IpAddr) -> bool {
    if let IpAddr::V6(v6) = ip {
        if v6 == wire::link_local_from_mac(mac) {
            return true;
        }
    }
    port.allowed
        .iter()
        .any(|(m, net)| *m == mac && net.contains(&ip))
}

/// Port security for IPv6: the source must be owned (the unspecified
/// source only for duplicate-address probes and listener reports); an NDP
/// message's link-layer option must be the frame's MAC and an
/// advertisement's target must be owned; router advertisements and
/// redirects are a router's to send, never a port's.
fn ipv6_spoofing(port: &PortInfo, mac: Mac, ip: &Ipv6Info) -> Option<String> {
    let icmp_type = ip.icmp.map(|(_, (t, _))| t);
    if ip.src.is_unspecified() {
        // Neighbor solicitations (DAD) and listener reports may come from ::.
        return match icmp_type {
            Some(135 | 131 | 143) if ip.proto == 58 => None,
            _ => Some("unspecified source :: outside duplicate-address detection".into()),
        };
    }
    if !owns(port, mac, IpAddr::V6(ip.src)) {
        return Some(format!(
            "source address {} is not allowed with MAC {}",
            ip.src,
            bridge::fmt_mac(&mac)
        ));
    }
    if matches!(icmp_type, Some(134 | 137)) && ip.proto == 58 {
        return Some("router advertisements and redirects are not allowed from a port".into());
    }
    let nd = ip.nd?;
    if let Some(link) = nd.link_addr.filter(|link| *link != mac) {
        return Some(format!(
            "NDP link-layer address {} differs from the frame's",
            bridge::fmt_mac(&link)
        ));
    }
    match nd.target {
        Some(target) if nd.msg_type == 136 && !owns(port, mac, IpAddr::V6(target)) => {
            Some(format!(
                "neighbor advertisement for {target}, which is not allowed with MAC {}",
                bridge::fmt_mac(&mac)
            ))
        }
        _ => None,
    }
}
