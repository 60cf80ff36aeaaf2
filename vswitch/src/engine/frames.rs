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
    /// Communication administratively prohibited.
    AdminProhibited,
}

impl IcmpError {
    fn wire(self) -> IcmpErrorKind {
        match self {
            IcmpError::TimeExceeded => IcmpErrorKind::TtlExceeded,
            IcmpError::NetUnreachable => IcmpErrorKind::NetUnreachable,
            IcmpError::AdminProhibited => IcmpErrorKind::AdminProhibited,
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
