//! Tests of VXLAN encapsulation with offloads (`encap.rs`).

use super::*;
use std::net::Ipv4Addr;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
use crate::wire::{TcpPacket, VxlanPacket};

fn dest() -> SocketAddr {
    "192.0.2.1:4789".parse().unwrap()
}

/// An Ethernet + IPv4 + TCP frame with `payload`, DF set, checksums
/// as a TSO sender leaves them (IP complete, TCP partial).
fn tcp_frame(payload: &[u8], flags: u8) -> Vec<u8> {
    let src = Ipv4Addr::new(10, 0, 0, 1);
    let dst = Ipv4Addr::new(10, 0, 0, 2);
    let mut f = vec![0u8; ETH_LEN + 20 + 20];
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip = &mut f[ETH_LEN..];
    ip[0] = 0x45;
    let total = (40 + payload.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&100u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let tcp = &mut ip[20..];
    tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    let pseudo = checksum::pseudo_header(src, dst, IpProtocol::Tcp, (20 + payload.len()) as u32);
    tcp[16..18].copy_from_slice(&pseudo.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn partial() -> VnetHeader {
    VnetHeader {
        flags: VnetHeader::F_NEEDS_CSUM,
        csum_start: (ETH_LEN + 20) as u16,
        csum_offset: 16,
        ..VnetHeader::NONE
    }
}

fn inner(datagram: &[u8]) -> &[u8] {
    VxlanPacket::new_checked(datagram).unwrap().payload()
}

#[test]
fn completes_a_partial_checksum() {
    let frame = tcp_frame(b"hello", TCP_PSH);
    let mut d = Datagrams::default();
    let vni = Vni::new(42).unwrap();
    assert_eq!(d.push_frame(dest(), vni, &partial(), &frame, 1450), Ok(1));
    let (to, bytes) = d.iter().next().unwrap();
    assert_eq!(to, dest());
    assert_eq!(&bytes[..8], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
    let tcp = TcpPacket::new_checked(&inner(bytes)[ETH_LEN + 20..]).unwrap();
    assert!(tcp.verify_checksum(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
}

#[test]
fn segments_a_tcp_super_frame_to_fit() {
    let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let frame = tcp_frame(&payload, TCP_PSH | TCP_FIN | 0x10);
    let vnet = VnetHeader {
        gso_type: VnetHeader::GSO_TCPV4,
        gso_size: 1448,
        hdr_len: 54,
        ..partial()
    };
    let mut d = Datagrams::default();
    // 1450-byte tunnel MTU: at most 1410 payload bytes per segment.
    let n = d
        .push_frame(dest(), Vni::new(7).unwrap(), &vnet, &frame, 1450)
        .unwrap();
    assert_eq!(n, 4);
    let mut rebuilt = Vec::new();
    for (k, (_, bytes)) in d.iter().enumerate() {
        let f = inner(bytes);
        let ip = &f[ETH_LEN..];
        assert!(ip.len() <= 1450);
        assert_eq!(
            checksum::checksum(&ip[..20]),
            0,
            "IP checksum of segment {k}"
        );
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        let tcp = TcpPacket::new_checked(&ip[20..]).unwrap();
        assert!(tcp.verify_checksum(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(tcp.seq_number(), 1000 + rebuilt.len() as u32);
        let fin = ip[20 + 13] & TCP_FIN != 0;
        assert_eq!(fin, k == n - 1, "FIN only on the last segment");
        rebuilt.extend_from_slice(tcp.payload());
    }
    assert_eq!(rebuilt, payload);
}

#[test]
fn offloaded_frames_carry_their_header() {
    let frame = tcp_frame(&[7u8; 3000], TCP_PSH);
    let vnet = VnetHeader {
        gso_type: VnetHeader::GSO_TCPV4,
        gso_size: 1398,
        hdr_len: 54,
        ..partial()
    };
    let mut d = Datagrams::default();
    assert!(d.push_offloaded(dest(), 4242, &vnet, &frame));
    let (_, bytes) = d.iter().next().unwrap();
    let vx = VxlanPacket::new_checked(bytes).unwrap();
    assert_eq!(vx.vni().get(), OFFLOAD_KEY);
    assert_eq!(parse_offloaded(vx.payload()), Some((4242, vnet)));
    assert_eq!(&vx.payload()[OFFLOAD_PREAMBLE..], &frame[..]);
    assert_eq!(parse_offloaded(&vx.payload()[..OFFLOAD_PREAMBLE - 1]), None);
    assert_eq!(parse_offloaded(&frame), None);
    let huge = vec![0u8; MAX_DATAGRAM];
    assert!(!d.push_offloaded(dest(), 1, &vnet, &huge));
    assert_eq!(d.len(), 1);
}

#[test]
fn completes_only_checksums_left_partial() {
    let partial_frame = tcp_frame(b"data", TCP_PSH);
    let mut fixed = partial_frame.clone();
    assert!(complete_partial_checksum(&mut fixed));
    let tcp = TcpPacket::new_checked(&fixed[ETH_LEN + 20..]).unwrap();
    assert!(tcp.verify_checksum(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
    // Already complete: untouched. Corrupt (neither full nor partial): untouched.
    let mut again = fixed.clone();
    assert!(!complete_partial_checksum(&mut again));
    assert_eq!(again, fixed);
    let mut corrupt = fixed.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(!complete_partial_checksum(&mut corrupt));
    for cut in 0..partial_frame.len() {
        let mut short = partial_frame[..cut].to_vec();
        let _ = complete_partial_checksum(&mut short);
    }
}

#[test]
fn frames_of_one_size_to_one_agent_leave_together() {
    let mut queued = Datagrams::default();
    let vni = Vni::new(7).unwrap();
    let other: SocketAddr = "192.0.2.3:4789".parse().unwrap();
    for _ in 0..70 {
        queued.push_raw(dest(), vni, &[1u8; 100]);
        queued.coalesce_last(1472);
    }
    // 63 in one send, the other 7 in the next.
    let sends: Vec<(usize, usize)> = queued
        .iter_segmented()
        .map(|(_, bytes, segment)| (bytes.len(), segment))
        .collect();
    assert_eq!(sends, vec![(63 * 108, 108), (7 * 108, 108)]);
    // Another size, or another destination, starts a send of its own.
    queued.push_raw(dest(), vni, &[1u8; 99]);
    assert!(!queued.coalesce_last(1472));
    queued.push_raw(other, vni, &[1u8; 99]);
    assert!(!queued.coalesce_last(1472));
    queued.push_raw(other, vni, &[1u8; 99]);
    assert!(queued.coalesce_last(1472));
    assert_eq!(queued.len(), 4);
    // A mark set afterwards marks each datagram of a send.
    queued.mark_from(1, 5, 9);
    for (_, bytes, segment) in queued.iter_segmented().skip(1) {
        let size = if segment == 0 { bytes.len() } else { segment };
        for datagram in bytes.chunks(size) {
            let packet = VxlanPacket::new_checked(datagram).unwrap();
            assert_eq!(packet.trace_mark(), Some((5, 9)));
        }
    }
}

#[test]
fn refuses_oversize_dont_fragment_and_bad_offloads() {
    let frame = tcp_frame(&[0u8; 1460], 0x10);
    let mut d = Datagrams::default();
    let vni = Vni::new(1).unwrap();
    assert_eq!(
        d.push_frame(dest(), vni, &VnetHeader::NONE, &frame, 1450),
        Err(EncapError::TooBig { mtu: 1450 })
    );
    let bad = VnetHeader {
        csum_start: 9000,
        ..partial()
    };
    assert_eq!(
        d.push_frame(dest(), vni, &bad, &frame, 9000),
        Err(EncapError::Malformed)
    );
    let udp = VnetHeader {
        gso_type: VnetHeader::GSO_UDP_L4,
        gso_size: 1000,
        ..VnetHeader::NONE
    };
    assert!(matches!(
        d.push_frame(dest(), vni, &udp, &frame, 1450),
        Err(EncapError::UnsupportedGso(_))
    ));
    assert!(d.is_empty());
    // Truncated headers never panic.
    let gso = VnetHeader {
        gso_type: VnetHeader::GSO_TCPV4,
        gso_size: 100,
        ..VnetHeader::NONE
    };
    for cut in 0..frame.len().min(80) {
        let _ = d.push_frame(dest(), vni, &gso, &frame[..cut], 1450);
        let _ = d.push_frame(dest(), vni, &partial(), &frame[..cut], 1450);
    }
}
