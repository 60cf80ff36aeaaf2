//! Address and port translation of IP datagrams in place, with every
//! checksum kept right incrementally (RFC 1624): IPv4 here, IPv6 in
//! [`super::nat6`], both through one transport rewrite.
//!
//! Two kinds of L4 checksum are handled. A complete checksum (the usual
//! case) is updated as a complemented sum. A *partial* one — the frame
//! came with `VIRTIO_NET_HDR_F_NEEDS_CSUM`, so the TCP/UDP checksum field
//! holds only the folded pseudo-header sum and the kernel or NIC completes
//! it on the way out — is updated as a plain sum, and only for the
//! pseudo-header's addresses: ports lie in the range the device will sum.
//!
//! [`nat_icmp_error`] translates an ICMP error about a translated flow:
//! the outer header and the quoted datagram inside it (its header checksum,
//! its ports, its UDP checksum when quoted) and then the ICMP checksum.
//!
//! Both are total: a datagram too short for what must change is an error
//! and is left as it was. So is a rewrite to an address of the other
//! family ([`WireError::BadAddress`]).

use core::net::{IpAddr, Ipv4Addr};

use super::checksum::{self, combine, update_addr};
use super::{be16, put16, Icmpv4Message, Icmpv6Message, Ipv4Packet, WireError};

mod field {
    use crate::wire::field::Field;

    // IPv4 header.
    pub(crate) const IP_FLG_OFF: Field = 6..8;
    pub(crate) const IP_PROTOCOL: usize = 9;
    pub(crate) const IP_CHECKSUM: Field = 10..12;
    pub(crate) const IP_SRC: Field = 12..16;
    pub(crate) const IP_DST: Field = 16..20;
    // TCP/UDP.
    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const UDP_CHECKSUM: Field = 6..8;
    pub(crate) const TCP_CHECKSUM: Field = 16..18;
    // ICMP and ICMPv6.
    pub(crate) const ICMP_TYPE: usize = 0;
    pub(crate) const ICMP_CHECKSUM: Field = 2..4;
    pub(crate) const ICMP_IDENT: Field = 4..6;
    pub(crate) const ICMP_DATA: usize = 8;
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const SCTP: u8 = 132;
const ICMPV6: u8 = 58;

/// What a translation changes; `None` keeps the field. For ICMP and
/// ICMPv6 echo messages the identifier plays both ports' part (`src_port`
/// first). Addresses are of the datagram's family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NatRewrite {
    /// New source address.
    pub src: Option<IpAddr>,
    /// New destination address.
    pub dst: Option<IpAddr>,
    /// New source port (or echo identifier).
    pub src_port: Option<u16>,
    /// New destination port (or echo identifier).
    pub dst_port: Option<u16>,
}

impl NatRewrite {
    /// True when nothing changes.
    pub fn is_identity(&self) -> bool {
        *self == NatRewrite::default()
    }
}

fn addr_at(data: &[u8], range: core::ops::Range<usize>) -> Ipv4Addr {
    Ipv4Addr::new(
        data[range.start],
        data[range.start + 1],
        data[range.start + 2],
        data[range.start + 3],
    )
}

/// The IPv4 addresses of a rewrite; an IPv6 one is an error.
fn v4_parts(nat: &NatRewrite) -> Result<(Option<Ipv4Addr>, Option<Ipv4Addr>), WireError> {
    let v4 = |addr: Option<IpAddr>| match addr {
        None => Ok(None),
        Some(IpAddr::V4(v4)) => Ok(Some(v4)),
        Some(IpAddr::V6(_)) => Err(WireError::BadAddress),
    };
    Ok((v4(nat.src)?, v4(nat.dst)?))
}

/// Where a checksum field is and how to update it.
#[derive(Clone, Copy)]
enum Sum {
    /// A complete checksum; `zero_means_none` for UDP's "no checksum"
    /// (never produced by an update: 0 becomes `0xffff`).
    Full { zero_means_none: bool },
    /// A partial (pseudo-header only) sum.
    Partial,
}

/// The ones'-complement change of a sum when the 16-bit words `old`
/// become `new` (RFC 1624: add `~m` and `m'`).
fn word_delta(old: u16, new: u16) -> u16 {
    combine(!old, new)
}

/// [`word_delta`] over every word of an address (either family; both of
/// one pair are of one family, or nothing changes).
pub(super) fn addr_delta(old: IpAddr, new: IpAddr) -> u16 {
    let words = |addr: IpAddr| -> ([u16; 8], usize) {
        match addr {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                let mut w = [0u16; 8];
                w[0] = u16::from_be_bytes([o[0], o[1]]);
                w[1] = u16::from_be_bytes([o[2], o[3]]);
                (w, 2)
            }
            IpAddr::V6(v6) => (v6.segments(), 8),
        }
    };
    let ((old, n), (new, m)) = (words(old), words(new));
    if n != m {
        return 0;
    }
    (0..n).fold(0, |acc, i| combine(acc, word_delta(old[i], new[i])))
}

/// Updates the checksum at `at` in `data` by `delta` (see [`word_delta`]).
fn adjust(data: &mut [u8], at: core::ops::Range<usize>, sum: Sum, delta: u16) {
    let hc = be16(&data[at.clone()]);
    let value = match sum {
        Sum::Full { zero_means_none } if zero_means_none && hc == 0 => return,
        Sum::Full { zero_means_none } => {
            let v = !combine(!hc, delta);
            if zero_means_none && v == 0 {
                0xffff
            } else {
                v
            }
        }
        Sum::Partial => combine(hc, delta),
    };
    put16(&mut data[at], value);
}

/// Rewrites one IPv4 header's addresses (and its header checksum); returns
/// the (old, new) address pairs for the caller's L4 pseudo-header update.
fn rewrite_header(
    ip: &mut [u8],
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
) -> [(IpAddr, IpAddr); 2] {
    let old_src = addr_at(ip, field::IP_SRC);
    let old_dst = addr_at(ip, field::IP_DST);
    let new_src = src.unwrap_or(old_src);
    let new_dst = dst.unwrap_or(old_dst);
    let mut hc = be16(&ip[field::IP_CHECKSUM]);
    hc = update_addr(hc, old_src, new_src);
    hc = update_addr(hc, old_dst, new_dst);
    ip[field::IP_SRC].copy_from_slice(&new_src.octets());
    ip[field::IP_DST].copy_from_slice(&new_dst.octets());
    put16(&mut ip[field::IP_CHECKSUM], hc);
    [
        (IpAddr::V4(old_src), IpAddr::V4(new_src)),
        (IpAddr::V4(old_dst), IpAddr::V4(new_dst)),
    ]
}

/// Rewrites the ports (or echo identifier) and the L4 checksum of the
/// transport header at `l4`, which may be a quoted (truncated) one:
/// fields that are not there are not touched. `addrs` are the
/// pseudo-header's address changes (ICMPv6's checksum covers them too,
/// ICMP's does not).
pub(super) fn rewrite_transport(
    proto: u8,
    l4: &mut [u8],
    nat: &NatRewrite,
    addrs: [(IpAddr, IpAddr); 2],
    partial: bool,
) {
    if proto == SCTP {
        // SCTP's checksum does not cover the addresses; only a port change
        // recomputes it.
        super::sctp::rewrite_ports(l4, nat.src_port, nat.dst_port);
        return;
    }
    let sum_at = match proto {
        TCP => field::TCP_CHECKSUM,
        UDP => field::UDP_CHECKSUM,
        ICMP | ICMPV6 => field::ICMP_CHECKSUM,
        _ => return,
    };
    let has_sum = l4.len() >= sum_at.end;
    let full = Sum::Full {
        zero_means_none: proto == UDP,
    };
    let pseudo = addrs
        .iter()
        .fold(0, |acc, (old, new)| combine(acc, addr_delta(*old, *new)));
    match proto {
        TCP | UDP => {
            if has_sum {
                let sum = if partial { Sum::Partial } else { full };
                adjust(l4, sum_at.clone(), sum, pseudo);
            }
            for (range, port) in [
                (field::SRC_PORT, nat.src_port),
                (field::DST_PORT, nat.dst_port),
            ] {
                let (Some(port), true) = (port, l4.len() >= range.end) else {
                    continue;
                };
                let old = be16(&l4[range.clone()]);
                put16(&mut l4[range], port);
                if has_sum && !partial {
                    adjust(l4, sum_at.clone(), full, word_delta(old, port));
                }
            }
        }
        _ => {
            if proto == ICMPV6 && has_sum {
                adjust(l4, sum_at.clone(), full, pseudo);
            }
            let is_echo = match (proto, l4.first()) {
                (ICMP, Some(t)) => matches!(
                    Icmpv4Message::from(*t),
                    Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply
                ),
                (_, Some(t)) => matches!(
                    Icmpv6Message::from(*t),
                    Icmpv6Message::EchoRequest | Icmpv6Message::EchoReply
                ),
                (_, None) => false,
            };
            let ident = nat.src_port.or(nat.dst_port);
            if let (true, Some(ident), true) = (is_echo, ident, l4.len() >= field::ICMP_IDENT.end) {
                let old = be16(&l4[field::ICMP_IDENT]);
                put16(&mut l4[field::ICMP_IDENT], ident);
                if has_sum {
                    adjust(l4, field::ICMP_CHECKSUM, full, word_delta(old, ident));
                }
            }
        }
    }
}

/// Translates the IPv4 datagram `ip` (starting at its header) in place.
/// `partial_l4_checksum`: the frame's TCP/UDP checksum is a partial one
/// (see the module docs). Non-first fragments get only their addresses
/// changed (they carry no ports).
pub fn nat_ipv4(
    ip: &mut [u8],
    nat: &NatRewrite,
    partial_l4_checksum: bool,
) -> Result<(), WireError> {
    let packet = Ipv4Packet::new_checked(&*ip)?;
    let (header_len, total) = (packet.header_len(), usize::from(packet.total_len()));
    let (proto, first) = (u8::from(packet.protocol()), packet.frag_offset() == 0);
    if nat.is_identity() {
        return Ok(());
    }
    let (src, dst) = v4_parts(nat)?;
    let addrs = rewrite_header(ip, src, dst);
    if first {
        rewrite_transport(
            proto,
            &mut ip[header_len..total],
            nat,
            addrs,
            partial_l4_checksum,
        );
    }
    Ok(())
}

/// Translates an ICMP or ICMPv6 error (`ip` starts at its outer IP
/// header, of either family): the outer addresses to
/// `outer_src`/`outer_dst`, the quoted datagram's fields as `inner` says,
/// then the ICMP checksum over the whole message. Every address must be of
/// the error's family.
pub fn nat_icmp_error(
    ip: &mut [u8],
    outer_src: Option<IpAddr>,
    outer_dst: Option<IpAddr>,
    inner: &NatRewrite,
) -> Result<(), WireError> {
    let outer = NatRewrite {
        src: outer_src,
        dst: outer_dst,
        ..NatRewrite::default()
    };
    match ip.first().map(|b| b >> 4) {
        Some(6) => super::nat6::nat_icmpv6_error(ip, &outer, inner),
        _ => nat_icmpv4_error(ip, &outer, inner),
    }
}

/// [`nat_icmp_error`] for IPv4; only `outer`'s addresses are used.
fn nat_icmpv4_error(
    ip: &mut [u8],
    outer: &NatRewrite,
    inner: &NatRewrite,
) -> Result<(), WireError> {
    let ((outer_src, outer_dst), (inner_src, inner_dst)) = (v4_parts(outer)?, v4_parts(inner)?);
    let packet = Ipv4Packet::new_checked(&*ip)?;
    if packet.is_fragment() || u8::from(packet.protocol()) != ICMP {
        return Err(WireError::UnexpectedMessage);
    }
    let (header_len, total) = (packet.header_len(), usize::from(packet.total_len()));
    let icmp = ip.get(header_len..total).ok_or(WireError::Truncated)?;
    if icmp.len() < field::ICMP_DATA || !Icmpv4Message::from(icmp[field::ICMP_TYPE]).is_error() {
        return Err(WireError::UnexpectedMessage);
    }
    // The quoted header must be whole before anything changes.
    let quoted = &icmp[field::ICMP_DATA..];
    let inner_len = usize::from(quoted.first().ok_or(WireError::Truncated)? & 0x0f) * 4;
    if inner_len < super::IPV4_HEADER_LEN || quoted.len() < inner_len {
        return Err(WireError::Truncated);
    }
    rewrite_header(ip, outer_src, outer_dst);
    let icmp = &mut ip[header_len..total];
    let quoted = &mut icmp[field::ICMP_DATA..];
    let inner_proto = quoted[field::IP_PROTOCOL];
    let inner_first = be16(&quoted[field::IP_FLG_OFF]) & 0x1fff == 0;
    let addrs = rewrite_header(quoted, inner_src, inner_dst);
    if inner_first {
        rewrite_transport(inner_proto, &mut quoted[inner_len..], inner, addrs, false);
    }
    put16(&mut icmp[field::ICMP_CHECKSUM], 0);
    let value = checksum::checksum(icmp);
    put16(&mut icmp[field::ICMP_CHECKSUM], value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        emit_error, IcmpErrorKind, IpProtocol, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
    };

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn udp_datagram(checksum: bool) -> Vec<u8> {
        let payload = b"hello, nat";
        let repr = UdpRepr {
            src_port: 40000,
            dst_port: 53,
        };
        let mut buf = vec![0u8; 20 + 8 + payload.len()];
        Ipv4Repr {
            src_addr: ip("10.0.0.5"),
            dst_addr: ip("192.0.2.1"),
            protocol: IpProtocol::Udp,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            payload_len: 8 + payload.len(),
        }
        .emit(&mut buf)
        .unwrap();
        buf[28..].copy_from_slice(payload);
        let mut udp = UdpPacket::new_unchecked(&mut buf[20..]);
        udp.set_src_port(repr.src_port);
        udp.set_dst_port(repr.dst_port);
        udp.set_len(18);
        if checksum {
            udp.fill_checksum(ip("10.0.0.5"), ip("192.0.2.1"));
        }
        buf
    }

    fn tcp_segment() -> Vec<u8> {
        let mut buf = vec![0u8; 20 + 20 + 4];
        Ipv4Repr {
            src_addr: ip("10.0.0.5"),
            dst_addr: ip("192.0.2.1"),
            protocol: IpProtocol::Tcp,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            payload_len: 24,
        }
        .emit(&mut buf)
        .unwrap();
        buf[40..].copy_from_slice(b"data");
        let mut tcp = TcpPacket::new_unchecked(&mut buf[20..]);
        tcp.set_src_port(40000);
        tcp.set_dst_port(80);
        tcp.set_header_len(20);
        tcp.fill_checksum(ip("10.0.0.5"), ip("192.0.2.1"));
        buf
    }

    const SNAT: NatRewrite = NatRewrite {
        src: Some(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 2))),
        dst: None,
        src_port: Some(1024),
        dst_port: None,
    };

    #[test]
    fn udp_and_tcp_checksums_stay_valid() {
        let mut udp = udp_datagram(true);
        nat_ipv4(&mut udp, &SNAT, false).unwrap();
        let packet = Ipv4Packet::new_checked(&udp[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), ip("169.254.0.2"));
        let l4 = UdpPacket::new_checked(packet.payload()).unwrap();
        assert_eq!(l4.src_port(), 1024);
        assert!(l4.verify_checksum(ip("169.254.0.2"), ip("192.0.2.1")));

        let mut tcp = tcp_segment();
        let dnat = NatRewrite {
            dst: Some(ip("10.9.9.9").into()),
            dst_port: Some(8080),
            ..NatRewrite::default()
        };
        nat_ipv4(&mut tcp, &dnat, false).unwrap();
        let packet = Ipv4Packet::new_checked(&tcp[..]).unwrap();
        assert!(packet.verify_checksum());
        let l4 = TcpPacket::new_checked(packet.payload()).unwrap();
        assert_eq!(l4.dst_port(), 8080);
        assert!(l4.verify_checksum(ip("10.0.0.5"), ip("10.9.9.9")));
    }

    #[test]
    fn a_udp_datagram_without_checksum_keeps_none() {
        let mut udp = udp_datagram(false);
        nat_ipv4(&mut udp, &SNAT, false).unwrap();
        assert_eq!(&udp[26..28], &[0, 0]);
    }

    #[test]
    fn a_partial_checksum_follows_the_pseudo_header_only() {
        // A partial checksum holds the folded pseudo-header sum.
        let mut tcp = tcp_segment();
        let pseudo = |src, dst| checksum::pseudo_header(src, dst, IpProtocol::Tcp, 24);
        put16(&mut tcp[36..38], pseudo(ip("10.0.0.5"), ip("192.0.2.1")));
        nat_ipv4(&mut tcp, &SNAT, true).unwrap();
        assert_eq!(
            be16(&tcp[36..38]),
            pseudo(ip("169.254.0.2"), ip("192.0.2.1"))
        );
        assert_eq!(
            be16(&tcp[20..22]),
            1024,
            "the port changes, the partial sum does not"
        );
    }

    #[test]
    fn an_icmp_error_is_translated_inside_and_out() {
        // A router at 192.0.2.254 reports the translated datagram to 169.254.0.2.
        let mut translated = udp_datagram(true);
        nat_ipv4(&mut translated, &SNAT, false).unwrap();
        let mut error = vec![0u8; 128];
        let len = emit_error(
            IcmpErrorKind::TtlExceeded,
            &translated,
            ip("192.0.2.254"),
            &mut error,
        )
        .unwrap();
        error.truncate(len);
        let back = NatRewrite {
            src: Some(ip("10.0.0.5").into()),
            src_port: Some(40000),
            ..NatRewrite::default()
        };
        nat_icmp_error(&mut error, None, Some(ip("10.0.0.5").into()), &back).unwrap();
        let packet = Ipv4Packet::new_checked(&error[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(
            (packet.src_addr(), packet.dst_addr()),
            (ip("192.0.2.254"), ip("10.0.0.5"))
        );
        let icmp = crate::wire::Icmpv4Packet::new_checked(packet.payload()).unwrap();
        assert!(icmp.verify_checksum());
        let quoted = Ipv4Packet::new_unchecked(icmp.data());
        assert_eq!(quoted.src_addr(), ip("10.0.0.5"));
        assert!(
            quoted.verify_checksum(),
            "the quoted header's checksum is right again"
        );
        assert_eq!(be16(&icmp.data()[20..22]), 40000);
        // The quoted UDP checksum is the original's again.
        let original = udp_datagram(true);
        assert_eq!(&icmp.data()[26..28], &original[26..28]);
    }

    #[test]
    fn short_or_wrong_input_is_an_error_and_unchanged() {
        let mut short = udp_datagram(true)[..10].to_vec();
        let before = short.clone();
        assert!(nat_ipv4(&mut short, &SNAT, false).is_err());
        assert_eq!(short, before);
        let mut not_an_error = udp_datagram(true);
        let before = not_an_error.clone();
        assert!(nat_icmp_error(&mut not_an_error, None, None, &SNAT).is_err());
        assert_eq!(not_an_error, before);
        for cut in 0..60 {
            let mut translated = udp_datagram(true);
            let mut error = vec![0u8; 128];
            let len = emit_error(
                IcmpErrorKind::TtlExceeded,
                &translated,
                ip("192.0.2.254"),
                &mut error,
            )
            .unwrap();
            error.truncate(len.min(cut));
            let _ = nat_icmp_error(&mut error, None, Some(ip("1.1.1.1").into()), &SNAT);
            let _ = nat_ipv4(&mut translated[..cut.min(38)], &SNAT, false);
        }
    }
}
