//! Frames the devices generate: ARP requests and replies, ICMP echo replies
//! and errors. This is the slow path (no flow is cached for it), so the
//! frames are owned vectors.

use std::net::Ipv4Addr;

use crate::snapshot::Mac;
use crate::wire::{
    self, emit_ethernet, ArpOperation, ArpRepr, EtherType, EthernetAddress, IcmpErrorKind,
    ETHERNET_HEADER_LEN,
};

/// The ICMP errors a router sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Time exceeded in transit.
    TimeExceeded,
    /// Destination network unreachable.
    NetUnreachable,
    /// Destination host unreachable (its address did not resolve).
    HostUnreachable,
    /// Protocol unreachable (the router has nothing for that protocol).
    ProtocolUnreachable,
    /// Communication administratively prohibited.
    AdminProhibited,
    /// Fragmentation needed and DF set; the path carries `mtu` bytes.
    FragmentationNeeded {
        /// The largest IP packet the path carries.
        mtu: u16,
    },
}

impl IcmpError {
    fn wire(self) -> IcmpErrorKind {
        match self {
            IcmpError::TimeExceeded => IcmpErrorKind::TtlExceeded,
            IcmpError::NetUnreachable => IcmpErrorKind::NetUnreachable,
            IcmpError::HostUnreachable => IcmpErrorKind::HostUnreachable,
            IcmpError::ProtocolUnreachable => IcmpErrorKind::ProtocolUnreachable,
            IcmpError::AdminProhibited => IcmpErrorKind::AdminProhibited,
            IcmpError::FragmentationNeeded { mtu } => {
                IcmpErrorKind::FragmentationNeeded { next_hop_mtu: mtu }
            }
        }
    }
}

const MAX_GENERATED: usize = 1514;

fn framed(
    dst: Mac,
    src: Mac,
    ethertype: EtherType,
    body: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_GENERATED];
    let len = body(buf.get_mut(ETHERNET_HEADER_LEN..)?)?;
    let total = emit_ethernet(
        EthernetAddress(dst),
        EthernetAddress(src),
        ethertype,
        len,
        &mut buf,
    )
    .ok()?;
    buf.truncate(total);
    Some(buf)
}

fn arp(
    operation: ArpOperation,
    src_mac: Mac,
    src_ip: Ipv4Addr,
    dst_mac: Mac,
    dst_ip: Ipv4Addr,
    eth_dst: Mac,
) -> Vec<u8> {
    let repr = ArpRepr {
        operation,
        sender_mac: EthernetAddress(src_mac),
        sender_ip: src_ip,
        target_mac: EthernetAddress(dst_mac),
        target_ip: dst_ip,
    };
    // An ARP message always fits: the builder cannot fail here.
    framed(eth_dst, src_mac, EtherType::Arp, |buf| repr.emit(buf).ok()).unwrap_or_default()
}

/// `src_ip is-at src_mac`, to the asker.
pub fn arp_reply(src_mac: Mac, src_ip: Ipv4Addr, dst_mac: Mac, dst_ip: Ipv4Addr) -> Vec<u8> {
    arp(
        ArpOperation::Reply,
        src_mac,
        src_ip,
        dst_mac,
        dst_ip,
        dst_mac,
    )
}

/// `who-has target tell src_ip`, broadcast.
pub fn arp_request(src_mac: Mac, src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(
        ArpOperation::Request,
        src_mac,
        src_ip,
        [0; 6],
        target,
        [0xff; 6],
    )
}

fn ip_payload(frame: &[u8]) -> Option<&[u8]> {
    let parsed = wire::parse_frame(frame).ok()?;
    frame.get(usize::from(parsed.l3_offset)..)
}

/// The echo reply to the echo request in `frame`, from `eth_src` to `eth_dst`.
pub fn icmp_echo_reply(frame: &[u8], eth_src: Mac, eth_dst: Mac) -> Option<Vec<u8>> {
    let request = ip_payload(frame)?;
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + request.len()];
    let len = wire::emit_echo_reply(request, &mut buf[ETHERNET_HEADER_LEN..]).ok()?;
    let total = emit_ethernet(
        EthernetAddress(eth_dst),
        EthernetAddress(eth_src),
        EtherType::Ipv4,
        len,
        &mut buf,
    )
    .ok()?;
    buf.truncate(total);
    Some(buf)
}

/// The ICMP error `kind` about the packet in `frame`, from `src_ip`.
pub fn icmp_error(
    kind: IcmpError,
    frame: &[u8],
    src_ip: Ipv4Addr,
    eth_src: Mac,
    eth_dst: Mac,
) -> Option<Vec<u8>> {
    let offending = ip_payload(frame)?;
    framed(eth_dst, eth_src, EtherType::Ipv4, |buf| {
        wire::emit_error(kind.wire(), offending, src_ip, buf).ok()
    })
}

/// The answer of a `reject` rule to the packet `packet` (received as
/// `frame`): a TCP RST for TCP (RFC 9293 §3.10.7.1: the reset takes its
/// sequence number from the segment's acknowledgment, or acknowledges the
/// segment), an ICMP port unreachable from `icmp_source` otherwise. `None`
/// for packets that get no answer (an RST, an ICMP error, a broadcast).
pub fn reject(packet: &super::PacketInfo, frame: &[u8], icmp_source: Ipv4Addr) -> Option<Vec<u8>> {
    let ip = packet.ipv4()?;
    if ip.proto != 6 {
        return framed(packet.eth_src, packet.eth_dst, EtherType::Ipv4, |buf| {
            wire::emit_error(
                IcmpErrorKind::PortUnreachable,
                ip_payload(frame)?,
                icmp_source,
                buf,
            )
            .ok()
        });
    }
    let datagram = wire::Ipv4Packet::new_checked(ip_payload(frame)?).ok()?;
    let segment = wire::TcpPacket::new_checked(datagram.payload()).ok()?;
    let flags = segment.flags();
    if flags.contains(wire::TcpFlags::RST) || ip.dst.is_broadcast() || ip.dst.is_multicast() {
        return None;
    }
    let (seq, ack, reply_flags) = if flags.contains(wire::TcpFlags::ACK) {
        (segment.ack_number(), 0, wire::TcpFlags::RST)
    } else {
        let mut length = segment.payload().len() as u32;
        if flags.contains(wire::TcpFlags::SYN) {
            length += 1;
        }
        if flags.contains(wire::TcpFlags::FIN) {
            length += 1;
        }
        (
            0,
            segment.seq_number().wrapping_add(length),
            wire::TcpFlags::from_bits(wire::TcpFlags::RST.bits() | wire::TcpFlags::ACK.bits()),
        )
    };
    framed(packet.eth_src, packet.eth_dst, EtherType::Ipv4, |buf| {
        let repr = wire::Ipv4Repr {
            src_addr: ip.dst,
            dst_addr: ip.src,
            protocol: wire::IpProtocol::Tcp,
            ttl: wire::DEFAULT_TTL,
            ident: 0,
            dont_frag: true,
            payload_len: wire::TCP_HEADER_LEN,
        };
        let total = repr.emit(buf).ok()?;
        let mut tcp = wire::TcpPacket::new_unchecked(buf.get_mut(wire::IPV4_HEADER_LEN..total)?);
        tcp.set_src_port(segment.dst_port());
        tcp.set_dst_port(segment.src_port());
        tcp.set_seq_number(seq);
        tcp.set_ack_number(ack);
        tcp.set_header_len(wire::TCP_HEADER_LEN);
        tcp.set_flags(reply_flags);
        tcp.set_window_len(0);
        tcp.set_urgent_at(0);
        tcp.fill_checksum(ip.dst, ip.src);
        Some(total)
    })
}
