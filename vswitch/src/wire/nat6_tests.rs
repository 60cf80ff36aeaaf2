//! IPv6 translation: checksums verified by recomputation, extension
//! headers, fragments, ICMPv6 errors, and input that must be refused.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::wire::{be16, nat_icmp_error, nat_ipv4};

const TCP: u8 = 6;
const UDP: u8 = 17;
const DST_OPTIONS: u8 = 60;
const FRAGMENT: u8 = 44;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const POD: &str = "fd00:1::10";
const SERVER: &str = "2001:db8:99::1";
const OUTSIDE: &str = "2001:db8:ff::2";

/// Where the checksum of `proto`'s header is.
fn sum_at(proto: u8) -> usize {
    match proto {
        TCP => 16,
        UDP => 6,
        _ => 2,
    }
}

/// The checksum a transport header `l4` (checksum field zero) gets.
fn checksum_of(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4: &[u8]) -> u16 {
    let pseudo = checksum::pseudo_header_v6(src, dst, proto, l4.len() as u32);
    !combine(pseudo, checksum::sum(l4))
}

/// IPv6 from `src` to `dst`: `ext` (extension headers, the first being
/// `first` and the last naming `proto`) then `l4`, its checksum filled.
fn packet(src: &str, dst: &str, first: u8, ext: &[u8], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut l4 = l4.to_vec();
    let at = sum_at(proto);
    l4[at..at + 2].fill(0);
    let sum = checksum_of(v6(src), v6(dst), proto, &l4);
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    let mut buf = vec![0u8; IPV6_HEADER_LEN];
    let mut ip = Ipv6Packet::new_unchecked(&mut buf[..]);
    ip.set_version_defaults();
    ip.set_payload_len((ext.len() + l4.len()) as u16);
    ip.set_next_header(if ext.is_empty() { proto } else { first });
    ip.set_hop_limit(64);
    ip.set_src_addr(v6(src));
    ip.set_dst_addr(v6(dst));
    buf.extend_from_slice(ext);
    buf.extend_from_slice(&l4);
    buf
}

fn tcp_segment() -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
    l4[2..4].copy_from_slice(&80u16.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = 0x02;
    l4.extend_from_slice(b"hello over six");
    packet(POD, SERVER, TCP, &[], TCP, &l4)
}

fn udp_datagram(payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 8];
    l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
    l4[2..4].copy_from_slice(&53u16.to_be_bytes());
    l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(payload);
    packet(POD, SERVER, UDP, &[], UDP, &l4)
}

fn echo(msg_type: u8, ident: u16) -> Vec<u8> {
    let mut l4 = vec![msg_type, 0, 0, 0];
    l4.extend_from_slice(&ident.to_be_bytes());
    l4.extend_from_slice(&[0, 1, 9, 8, 7, 6]);
    packet(POD, SERVER, ICMPV6, &[], ICMPV6, &l4)
}

/// Whether the transport checksum of `ip` verifies, recomputed in full.
fn verifies(ip: &[u8]) -> bool {
    let packet = Ipv6Packet::new_checked(ip).unwrap();
    let upper = upper_layer(packet.next_header(), packet.payload()).unwrap();
    let l4 = &packet.payload()[upper.offset..];
    let pseudo = checksum::pseudo_header_v6(
        packet.src_addr(),
        packet.dst_addr(),
        upper.protocol,
        l4.len() as u32,
    );
    combine(pseudo, checksum::sum(l4)) == 0xffff
}

fn addrs(ip: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    let packet = Ipv6Packet::new_unchecked(ip);
    (packet.src_addr(), packet.dst_addr())
}

fn snat(port: Option<u16>) -> NatRewrite {
    NatRewrite {
        src: Some(IpAddr::V6(v6(OUTSIDE))),
        src_port: port,
        ..NatRewrite::default()
    }
}

#[test]
fn tcp_udp_and_echo_checksums_verify_after_translation() {
    for (name, mut ip) in [
        ("tcp", tcp_segment()),
        ("udp", udp_datagram(b"question")),
        ("echo", echo(128, 0x1234)),
    ] {
        assert!(verifies(&ip), "{name} built right");
        nat_ipv6(&mut ip, &snat(Some(1024)), false).unwrap();
        assert!(verifies(&ip), "{name}: checksum after the rewrite");
        assert_eq!(addrs(&ip), (v6(OUTSIDE), v6(SERVER)), "{name}");
        let at = if name == "echo" { 44 } else { 40 };
        assert_eq!(be16(&ip[at..at + 2]), 1024, "{name}: port or identifier");
    }
    // The reply's way: destination address and port (identifier) back.
    let mut reply = echo(129, 1024);
    let back = NatRewrite {
        dst: Some(IpAddr::V6(v6(POD))),
        dst_port: Some(0x1234),
        ..NatRewrite::default()
    };
    nat_ipv6(&mut reply, &back, false).unwrap();
    assert!(verifies(&reply));
    assert_eq!(be16(&reply[44..46]), 0x1234);
    assert_eq!(addrs(&reply).1, v6(POD));
}

#[test]
fn the_transport_header_is_found_behind_extension_headers() {
    let mut l4 = vec![0u8; 8];
    l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
    l4[4..6].copy_from_slice(&12u16.to_be_bytes());
    l4.extend_from_slice(b"data");
    // A destination options header (8 bytes, PadN) naming UDP.
    let ext = [UDP, 0, 1, 4, 0, 0, 0, 0];
    let mut ip = packet(POD, SERVER, DST_OPTIONS, &ext, UDP, &l4);
    assert!(verifies(&ip));
    nat_ipv6(&mut ip, &snat(Some(2000)), false).unwrap();
    assert!(verifies(&ip));
    assert_eq!(be16(&ip[48..50]), 2000);
}

#[test]
fn a_later_fragment_gets_its_addresses_only() {
    // Fragment header: UDP, offset 8 (in 8-byte units: 1), more fragments.
    let ext = [UDP, 0, 0, 8 | 1, 0, 0, 0, 7];
    let body = [0xaau8; 16];
    let mut buf = vec![0u8; IPV6_HEADER_LEN];
    let mut ip = Ipv6Packet::new_unchecked(&mut buf[..]);
    ip.set_version_defaults();
    ip.set_payload_len(24);
    ip.set_next_header(FRAGMENT);
    ip.set_src_addr(v6(POD));
    ip.set_dst_addr(v6(SERVER));
    buf.extend_from_slice(&ext);
    buf.extend_from_slice(&body);
    nat_ipv6(&mut buf, &snat(Some(2000)), false).unwrap();
    assert_eq!(addrs(&buf).0, v6(OUTSIDE));
    assert_eq!(&buf[48..], &body, "no transport header to touch");
}

#[test]
fn a_udp_checksum_never_becomes_zero_and_zero_stays_zero() {
    // A payload word chosen so that the translated datagram's checksum
    // computes to 0, which UDP must send as 0xffff.
    let mut translated = udp_datagram(b"xx");
    Ipv6Packet::new_unchecked(&mut translated[..]).set_src_addr(v6(OUTSIDE));
    translated[46..48].fill(0);
    translated[48..50].fill(0);
    let pseudo = checksum::pseudo_header_v6(v6(OUTSIDE), v6(SERVER), UDP, 10);
    let rest = combine(pseudo, checksum::sum(&translated[40..]));
    translated[48..50].copy_from_slice(&(!rest).to_be_bytes());
    let word = [translated[48], translated[49]];
    let mut ip = udp_datagram(&word);
    assert!(verifies(&ip));
    nat_ipv6(&mut ip, &snat(None), false).unwrap();
    assert_eq!(be16(&ip[46..48]), 0xffff, "0 is sent as 0xffff");
    assert!(verifies(&ip));

    let mut none = udp_datagram(b"question");
    none[46..48].fill(0);
    nat_ipv6(&mut none, &snat(Some(1024)), false).unwrap();
    assert_eq!(be16(&none[46..48]), 0, "a zero checksum is left alone");
}

#[test]
fn a_partial_checksum_follows_the_pseudo_header_only() {
    let mut ip = tcp_segment();
    let len = (ip.len() - IPV6_HEADER_LEN) as u32;
    let partial = |src| checksum::pseudo_header_v6(src, v6(SERVER), TCP, len);
    ip[56..58].copy_from_slice(&partial(v6(POD)).to_be_bytes());
    nat_ipv6(&mut ip, &snat(Some(1024)), true).unwrap();
    assert_eq!(be16(&ip[56..58]), partial(v6(OUTSIDE)));
    assert_eq!(
        be16(&ip[40..42]),
        1024,
        "the port changes, the sum does not"
    );
}

#[test]
fn an_icmpv6_error_is_translated_inside_and_out() {
    // The translated datagram, and a router's time exceeded about it.
    let mut sent = udp_datagram(b"traceroute");
    nat_ipv6(&mut sent, &snat(Some(1024)), false).unwrap();
    let router = "2001:db8:50::1";
    let mut body = vec![3, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&sent);
    let mut error = packet(router, OUTSIDE, ICMPV6, &[], ICMPV6, &body);
    assert!(verifies(&error));
    let inner = NatRewrite {
        src: Some(IpAddr::V6(v6(POD))),
        src_port: Some(40000),
        ..NatRewrite::default()
    };
    nat_icmp_error(&mut error, None, Some(IpAddr::V6(v6(POD))), &inner).unwrap();
    assert!(
        verifies(&error),
        "the ICMPv6 checksum over the new pseudo-header"
    );
    assert_eq!(addrs(&error), (v6(router), v6(POD)));
    let quoted = &error[48..];
    assert_eq!(
        quoted,
        &udp_datagram(b"traceroute")[..],
        "the quote is the pod's own datagram again, checksum included"
    );
    // Cut short, the quote keeps what fits.
    let mut short = packet(router, OUTSIDE, ICMPV6, &[], ICMPV6, &body[..8 + 44]);
    nat_icmp_error(&mut short, None, Some(IpAddr::V6(v6(POD))), &inner).unwrap();
    assert!(verifies(&short));
    assert_eq!(be16(&short[88..90]), 40000);
}

#[test]
fn wrong_family_short_or_wrong_input_is_an_error_and_unchanged() {
    let v4 = NatRewrite {
        src: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        ..NatRewrite::default()
    };
    let mut ip = tcp_segment();
    let before = ip.clone();
    assert_eq!(nat_ipv6(&mut ip, &v4, false), Err(WireError::BadAddress));
    assert_eq!(ip, before);
    assert!(nat_ipv4(&mut ip, &snat(None), false).is_err());
    assert_eq!(ip, before);
    assert!(
        nat_icmp_error(&mut ip, None, None, &snat(None)).is_err(),
        "not an error"
    );
    assert_eq!(ip, before);
    let mut sent = udp_datagram(b"x");
    let mut body = vec![1, 4, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&sent);
    let error = packet(SERVER, POD, ICMPV6, &[], ICMPV6, &body);
    for cut in 0..error.len() {
        let mut short = error.clone();
        short.truncate(cut);
        let before = short.clone();
        if nat_icmp_error(&mut short, None, Some(IpAddr::V6(v6(POD))), &snat(None)).is_err() {
            assert_eq!(short, before, "cut at {cut}");
        }
        let mut short = sent.clone();
        short.truncate(cut.min(sent.len()));
        let before = short.clone();
        if nat_ipv6(&mut short, &snat(Some(7)), false).is_err() {
            assert_eq!(short, before, "cut at {cut}");
        }
    }
    // Mangled bytes: whatever comes out, nothing panics.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let mut frame = if round % 2 == 0 {
            error.clone()
        } else {
            tcp_segment()
        };
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % frame.len();
            frame[at] = next() as u8;
        }
        frame.truncate((next() as usize) % (frame.len() + 1));
        let _ = nat_ipv6(&mut frame.clone(), &snat(Some(9)), round % 3 == 0);
        let _ = nat_icmp_error(&mut frame, None, Some(IpAddr::V6(v6(POD))), &snat(Some(9)));
    }
    sent.clear();
    assert!(nat_ipv6(&mut sent, &snat(None), false).is_err());
}
