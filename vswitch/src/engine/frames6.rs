//! IPv6 frames the devices generate: Neighbor Discovery (solicitations,
//! advertisements, router advertisements), ICMPv6 echo replies and errors,
//! and TCP resets. The slow path, like [`super::frames`]: owned vectors.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use crate::snapshot::Mac;
use crate::wire::{self, checksum, IPV6_HEADER_LEN};

/// The ICMPv6 errors a router (or a rule) sends (RFC 4443).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmp6Error {
    /// Destination unreachable: no route (code 0).
    NoRoute,
    /// Destination unreachable: administratively prohibited (code 1).
    AdminProhibited,
    /// Destination unreachable: address unreachable (code 3), the
    /// neighbour did not answer.
    AddressUnreachable,
    /// Destination unreachable: port unreachable (code 4).
    PortUnreachable,
    /// Packet too big; the path carries `mtu` bytes.
    PacketTooBig {
        /// The largest IPv6 packet the next link carries.
        mtu: u32,
    },
    /// Hop limit exceeded in transit.
    TimeExceeded,
}

impl Icmp6Error {
    /// ICMPv6 type, code and the 4 bytes after the checksum.
    fn header(self) -> (u8, u8, u32) {
        match self {
            Icmp6Error::NoRoute => (1, 0, 0),
            Icmp6Error::AdminProhibited => (1, 1, 0),
            Icmp6Error::AddressUnreachable => (1, 3, 0),
            Icmp6Error::PortUnreachable => (1, 4, 0),
            Icmp6Error::PacketTooBig { mtu } => (2, 0, mtu),
            Icmp6Error::TimeExceeded => (3, 0, 0),
        }
    }
}

/// The IPv6 minimum MTU: an ICMPv6 error never exceeds it (RFC 4443 2.4 c).
pub const MIN_MTU: usize = 1280;
/// The hop limit of packets the router originates.
const HOP_LIMIT: u8 = 64;
/// Neighbor Discovery messages carry 255 (RFC 4861 7.1): proof they were
/// not forwarded.
pub const ND_HOP_LIMIT: u8 = 255;

const ICMPV6: u8 = 58;
const TCP: u8 = 6;

/// The all-nodes multicast address, ff02::1.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The Ethernet multicast address of IPv6 multicast `ip` (RFC 2464 7).
pub fn multicast_mac(ip: &Ipv6Addr) -> Mac {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The solicited-node multicast address of `ip` (RFC 4291 2.7.1).
pub fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The upper-layer checksum of `payload` (whose checksum field is zero)
/// over the IPv6 pseudo-header (RFC 8200 8.1).
pub(crate) fn upper_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, next: u8, payload: &[u8]) -> u16 {
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    pseudo[39] = next;
    !checksum::combine(checksum::sum(&pseudo), checksum::sum(payload))
}

/// Whether the upper-layer checksum of the IPv6 packet in `frame` (no
/// extension headers) verifies.
#[cfg(test)]
pub(crate) fn upper_checksum_valid(frame: &[u8]) -> bool {
    let Some(ip) = ip_payload(frame).and_then(|p| wire::Ipv6Packet::new_checked(p).ok()) else {
        return false;
    };
    upper_checksum(
        &ip.src_addr(),
        &ip.dst_addr(),
        ip.next_header(),
        ip.payload(),
    ) == 0
}

/// Ethernet + IPv6 + `payload` (next header `next`) whose checksum field
/// at `checksum_at` is filled here.
#[allow(clippy::too_many_arguments)]
fn packet(
    eth_src: Mac,
    eth_dst: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    next: u8,
    mut payload: Vec<u8>,
    checksum_at: usize,
) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    payload.get_mut(checksum_at..checksum_at + 2)?.fill(0);
    let sum = upper_checksum(&src, &dst, next, &payload);
    payload[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
    let mut frame = Vec::with_capacity(14 + IPV6_HEADER_LEN + payload.len());
    frame.extend_from_slice(&eth_dst);
    frame.extend_from_slice(&eth_src);
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.resize(14 + IPV6_HEADER_LEN, 0);
    let mut ip = wire::Ipv6Packet::new_unchecked(&mut frame[14..]);
    ip.set_version_defaults();
    ip.set_payload_len(len);
    ip.set_next_header(next);
    ip.set_hop_limit(hop_limit);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    frame.extend_from_slice(&payload);
    Some(frame)
}

/// An ICMPv6 message of `msg_type`/`code` with `rest` (the 4 bytes after
/// the checksum) and `body`.
#[allow(clippy::too_many_arguments)]
fn icmp(
    eth_src: Mac,
    eth_dst: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    (msg_type, code, rest): (u8, u8, u32),
    body: &[u8],
) -> Option<Vec<u8>> {
    let mut message = Vec::with_capacity(8 + body.len());
    message.extend_from_slice(&[msg_type, code, 0, 0]);
    message.extend_from_slice(&rest.to_be_bytes());
    message.extend_from_slice(body);
    packet(eth_src, eth_dst, src, dst, hop_limit, ICMPV6, message, 2)
}

/// A link-layer address option (1: source, 2: target).
fn link_option(kind: u8, mac: Mac) -> [u8; 8] {
    [kind, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]
}

/// A Neighbor Advertisement for `target` (owned by `mac`) to `dst_ip` at
/// `dst_mac`: router flag when a router answers, solicited flag when it
/// answers a solicitation, override, and the target link-layer option.
pub fn neighbor_advert(
    mac: Mac,
    target: Ipv6Addr,
    (dst_mac, dst_ip): (Mac, Ipv6Addr),
    router: bool,
    solicited: bool,
) -> Option<Vec<u8>> {
    let flags = (u32::from(router) << 31) | (u32::from(solicited) << 30) | (1 << 29);
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&link_option(2, mac));
    icmp(
        mac,
        dst_mac,
        target,
        dst_ip,
        ND_HOP_LIMIT,
        (136, 0, flags),
        &body,
    )
}

/// A Neighbor Solicitation for `target` from `src_ip` at `mac`, to the
/// target's solicited-node multicast address.
pub fn neighbor_solicit(mac: Mac, src_ip: Ipv6Addr, target: Ipv6Addr) -> Option<Vec<u8>> {
    let group = solicited_node(&target);
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&link_option(1, mac));
    icmp(
        mac,
        multicast_mac(&group),
        src_ip,
        group,
        ND_HOP_LIMIT,
        (135, 0, 0),
        &body,
    )
}

/// How long a host may use the router as its default (RFC 4861 6.2.1's
/// default, 3 × MaxRtrAdvInterval).
pub const ROUTER_LIFETIME_S: u16 = 1_800;

/// A Router Advertisement from the link-local `src_ip` at `mac` to `dst`
/// (the soliciting host, or all nodes), naming the `prefixes` on-link
/// (addresses are configured statically: no autonomous flag).
pub fn router_advert(
    mac: Mac,
    src_ip: Ipv6Addr,
    (dst_mac, dst_ip): (Mac, Ipv6Addr),
    prefixes: &[Ipv6Net],
) -> Option<Vec<u8>> {
    // Cur hop limit, flags (M=0 O=0), router lifetime.
    let rest = (u32::from(HOP_LIMIT) << 24) | u32::from(ROUTER_LIFETIME_S);
    let mut body = vec![0u8; 8]; // reachable time, retrans timer: unspecified
    body.extend_from_slice(&link_option(1, mac));
    for prefix in prefixes {
        body.extend_from_slice(&[3, 4, prefix.prefix_len(), 0x80]); // on-link
        body.extend_from_slice(&86_400u32.to_be_bytes()); // valid lifetime
        body.extend_from_slice(&14_400u32.to_be_bytes()); // preferred lifetime
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&prefix.trunc().addr().octets());
    }
    icmp(
        mac,
        dst_mac,
        src_ip,
        dst_ip,
        ND_HOP_LIMIT,
        (134, 0, rest),
        &body,
    )
}

/// The IPv6 packet of `frame` (no VLAN tag handling beyond the parser's).
fn ip_payload(frame: &[u8]) -> Option<&[u8]> {
    let parsed = wire::parse_frame(frame).ok()?;
    parsed.ipv6()?;
    frame.get(usize::from(parsed.l3_offset)..)
}

/// The echo reply to the ICMPv6 echo request in `frame` (without extension
/// headers), from `eth_src` to `eth_dst`.
pub fn echo_reply(frame: &[u8], eth_src: Mac, eth_dst: Mac) -> Option<Vec<u8>> {
    let request = wire::Ipv6Packet::new_checked(ip_payload(frame)?).ok()?;
    if request.next_header() != ICMPV6 {
        return None;
    }
    let message = request.payload();
    if message.len() < 8 || message[0] != 128 {
        return None;
    }
    let mut reply = message.to_vec();
    reply[0] = 129;
    packet(
        eth_src,
        eth_dst,
        request.dst_addr(),
        request.src_addr(),
        HOP_LIMIT,
        ICMPV6,
        reply,
        2,
    )
}

/// Whether an ICMPv6 error may be sent about `offending` (RFC 4443 2.4
/// e): never about an ICMPv6 error or a redirect, never to an unspecified
/// or multicast source, and about a packet to a multicast address only
/// packet-too-big.
pub fn error_allowed(kind: Icmp6Error, offending: &wire::Ipv6Packet<&[u8]>) -> bool {
    let src = offending.src_addr();
    if src.is_unspecified() || src.is_multicast() {
        return false;
    }
    if offending.dst_addr().is_multicast() && !matches!(kind, Icmp6Error::PacketTooBig { .. }) {
        return false;
    }
    let payload = offending.payload();
    match wire::upper_layer(offending.next_header(), payload) {
        Ok(upper) if upper.protocol == ICMPV6 && upper.fragment.is_none_or(|f| f.offset == 0) => {
            // An error, a redirect, or a message too short to tell: no error.
            payload
                .get(upper.offset)
                .is_some_and(|t| *t >= 128 && *t != 137)
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// The ICMPv6 error `kind` about the packet in `frame`, from `src_ip` at
/// `eth_src` to `eth_dst`: the invoking packet quoted as far as the
/// error stays within the minimum MTU. `None` when no error may be sent.
pub fn error(
    kind: Icmp6Error,
    frame: &[u8],
    src_ip: Ipv6Addr,
    eth_src: Mac,
    eth_dst: Mac,
) -> Option<Vec<u8>> {
    let offending = ip_payload(frame)?;
    let view = wire::Ipv6Packet::new_checked(offending).ok()?;
    if !error_allowed(kind, &view) {
        return None;
    }
    let whole = (IPV6_HEADER_LEN + usize::from(view.payload_len())).min(offending.len());
    let quote = &offending[..whole.min(MIN_MTU - IPV6_HEADER_LEN - 8)];
    icmp(
        eth_src,
        eth_dst,
        src_ip,
        view.src_addr(),
        HOP_LIMIT,
        kind.header(),
        quote,
    )
}

/// The answer of a reject (a rule's, or a router's own address where
/// nothing listens) to the IPv6 packet in `frame`: a TCP RST for TCP (as
/// [`super::frames::reject`] answers IPv4), the ICMPv6 error `otherwise`
/// from `icmp_source` for anything else. `None` when nothing may be sent.
pub fn reject(
    info: &super::PacketInfo,
    frame: &[u8],
    icmp_source: Ipv6Addr,
    otherwise: Icmp6Error,
) -> Option<Vec<u8>> {
    let ip = info.ipv6()?;
    if ip.proto != TCP {
        return error(otherwise, frame, icmp_source, info.eth_dst, info.eth_src);
    }
    let datagram = wire::Ipv6Packet::new_checked(ip_payload(frame)?).ok()?;
    let upper = wire::upper_layer(datagram.next_header(), datagram.payload()).ok()?;
    let segment = wire::TcpPacket::new_checked(datagram.payload().get(upper.offset..)?).ok()?;
    let flags = segment.flags();
    if flags.contains(wire::TcpFlags::RST) || ip.dst.is_multicast() || ip.src.is_multicast() {
        return None;
    }
    let (seq, ack, reply_flags) = if flags.contains(wire::TcpFlags::ACK) {
        (segment.ack_number(), 0u32, 0x04u8)
    } else {
        let mut length = segment.payload().len() as u32;
        length += u32::from(flags.contains(wire::TcpFlags::SYN));
        length += u32::from(flags.contains(wire::TcpFlags::FIN));
        (0, segment.seq_number().wrapping_add(length), 0x14)
    };
    let mut tcp = vec![0u8; wire::TCP_HEADER_LEN];
    tcp[0..2].copy_from_slice(&segment.dst_port().to_be_bytes());
    tcp[2..4].copy_from_slice(&segment.src_port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = reply_flags;
    packet(
        info.eth_dst,
        info.eth_src,
        ip.dst,
        ip.src,
        HOP_LIMIT,
        TCP,
        tcp,
        16,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicited_node_and_its_mac() {
        let ip: Ipv6Addr = "2001:db8::1:2:3".parse().unwrap();
        let group = solicited_node(&ip);
        assert_eq!(group, "ff02::1:ff02:3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(&group), [0x33, 0x33, 0xff, 0x02, 0, 3]);
    }

    #[test]
    fn generated_checksums_verify() {
        let ns = neighbor_solicit(
            [2, 0, 0, 0, 0, 1],
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
        .unwrap();
        assert!(upper_checksum_valid(&ns));
    }
}
