//! Address and port translation of IPv6 packets in place.
//!
//! IPv6 has no header checksum, but the TCP, UDP and ICMPv6 checksums all
//! cover the addresses through the pseudo-header (RFC 8200 8.1), so an
//! address change updates the transport checksum behind any extension
//! headers — ICMPv6's included, unlike ICMP's. The transport rewrite is
//! IPv4's ([`super::nat`]): ports, echo identifiers, partial (offloaded)
//! checksums. A UDP checksum an update would make 0 is sent as `0xffff`;
//! a zero UDP checksum (legal over IPv6 only for tunnels that accept it,
//! RFC 6935) is left zero, as Linux's NAT does.
//!
//! [`nat_icmpv6_error`] translates an ICMPv6 error about a translated flow:
//! the outer addresses, the quoted packet's addresses, ports and transport
//! checksum (as far as the quote goes), then the ICMPv6 checksum.
//!
//! Both are total: a packet too short for what must change, or a rewrite
//! to IPv4 addresses, is an error and the packet is left as it was.

use core::net::{IpAddr, Ipv6Addr};

use super::checksum::{self, combine};
use super::nat::{rewrite_transport, NatRewrite};
use super::{put16, upper_layer, Icmpv6Message, Ipv6Packet, WireError, IPV6_HEADER_LEN};

/// The ICMPv6 next-header value.
const ICMPV6: u8 = 58;
/// The ICMPv6 checksum field.
const ICMPV6_CHECKSUM: core::ops::Range<usize> = 2..4;
/// Where an ICMPv6 error's quoted packet starts.
const ICMPV6_DATA: usize = 8;
/// The next-header field of an IPv6 header.
const NEXT_HEADER: usize = 6;

/// The IPv6 addresses of a rewrite; an IPv4 one is an error.
fn v6_parts(nat: &NatRewrite) -> Result<(Option<Ipv6Addr>, Option<Ipv6Addr>), WireError> {
    let v6 = |addr: Option<IpAddr>| match addr {
        None => Ok(None),
        Some(IpAddr::V6(v6)) => Ok(Some(v6)),
        Some(IpAddr::V4(_)) => Err(WireError::BadAddress),
    };
    Ok((v6(nat.src)?, v6(nat.dst)?))
}

/// Rewrites the addresses of the IPv6 header at the start of `ip` (at
/// least [`IPV6_HEADER_LEN`] bytes); returns the (old, new) pairs for the
/// transport checksum.
fn rewrite_header(
    ip: &mut [u8],
    src: Option<Ipv6Addr>,
    dst: Option<Ipv6Addr>,
) -> [(IpAddr, IpAddr); 2] {
    let mut packet = Ipv6Packet::new_unchecked(ip);
    let (old_src, old_dst) = (packet.src_addr(), packet.dst_addr());
    let (new_src, new_dst) = (src.unwrap_or(old_src), dst.unwrap_or(old_dst));
    packet.set_src_addr(new_src);
    packet.set_dst_addr(new_dst);
    [
        (IpAddr::V6(old_src), IpAddr::V6(new_src)),
        (IpAddr::V6(old_dst), IpAddr::V6(new_dst)),
    ]
}

/// Translates the IPv6 packet `ip` (starting at its header) in place.
/// `partial_l4_checksum`: the frame's TCP/UDP checksum is a partial one.
/// Later fragments get only their addresses changed (they carry no ports).
pub fn nat_ipv6(
    ip: &mut [u8],
    nat: &NatRewrite,
    partial_l4_checksum: bool,
) -> Result<(), WireError> {
    let (src, dst) = v6_parts(nat)?;
    let packet = Ipv6Packet::new_checked(&*ip)?;
    let end = IPV6_HEADER_LEN + usize::from(packet.payload_len());
    let upper = upper_layer(packet.next_header(), packet.payload())?;
    if nat.is_identity() {
        return Ok(());
    }
    let addrs = rewrite_header(ip, src, dst);
    if upper.fragment.is_none_or(|f| f.offset == 0) {
        if let Some(l4) = ip.get_mut(IPV6_HEADER_LEN + upper.offset..end) {
            rewrite_transport(upper.protocol, l4, nat, addrs, partial_l4_checksum);
        }
    }
    Ok(())
}

/// Translates an ICMPv6 error (`ip` starts at its outer IPv6 header): the
/// outer addresses as `outer` says, the quoted packet's fields as `inner`
/// says, then the ICMPv6 checksum over the new pseudo-header and message.
pub(super) fn nat_icmpv6_error(
    ip: &mut [u8],
    outer: &NatRewrite,
    inner: &NatRewrite,
) -> Result<(), WireError> {
    let ((outer_src, outer_dst), (inner_src, inner_dst)) = (v6_parts(outer)?, v6_parts(inner)?);
    let packet = Ipv6Packet::new_checked(&*ip)?;
    let end = IPV6_HEADER_LEN + usize::from(packet.payload_len());
    let upper = upper_layer(packet.next_header(), packet.payload())?;
    if upper.protocol != ICMPV6 || upper.fragment.is_some() {
        return Err(WireError::UnexpectedMessage);
    }
    let at = IPV6_HEADER_LEN + upper.offset;
    let icmp = ip.get(at..end).ok_or(WireError::Truncated)?;
    if icmp.len() < ICMPV6_DATA || !Icmpv6Message::from(icmp[0]).is_error() {
        return Err(WireError::UnexpectedMessage);
    }
    // The quoted header must be whole before anything changes; its
    // transport header is rewritten as far as the quote goes.
    let quoted = &icmp[ICMPV6_DATA..];
    if quoted.len() < IPV6_HEADER_LEN || quoted[0] >> 4 != 6 {
        return Err(WireError::Truncated);
    }
    let inner_upper = upper_layer(quoted[NEXT_HEADER], &quoted[IPV6_HEADER_LEN..])
        .ok()
        .filter(|u| u.fragment.is_none_or(|f| f.offset == 0));
    rewrite_header(ip, outer_src, outer_dst);
    let (src, dst) = {
        let packet = Ipv6Packet::new_unchecked(&*ip);
        (packet.src_addr(), packet.dst_addr())
    };
    let icmp = &mut ip[at..end];
    let quoted = &mut icmp[ICMPV6_DATA..];
    let addrs = rewrite_header(quoted, inner_src, inner_dst);
    if let Some(u) = inner_upper {
        if let Some(l4) = quoted.get_mut(IPV6_HEADER_LEN + u.offset..) {
            rewrite_transport(u.protocol, l4, inner, addrs, false);
        }
    }
    put16(&mut icmp[ICMPV6_CHECKSUM], 0);
    let length = u32::try_from(icmp.len()).unwrap_or(u32::MAX);
    let sum = combine(
        checksum::pseudo_header_v6(src, dst, ICMPV6, length),
        checksum::sum(icmp),
    );
    put16(&mut icmp[ICMPV6_CHECKSUM], !sum);
    Ok(())
}

#[cfg(test)]
#[path = "nat6_tests.rs"]
mod tests;
