//! Robustness: no parser or checked accessor may panic on any input.
//!
//! Feeds every truncation of every sample, and 200 000 pseudo-random
//! mutations of them, to `parse_frame`, `decap_vxlan`, every view's
//! `new_checked` (at every plausible header offset) followed by every
//! getter, every repr `parse`, and the ICMP builders. The only assertion
//! is that nothing panics (plus a couple of cheap invariants).

use core::net::Ipv4Addr;

use super::samples;
use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Offsets where some header starts in one of the samples.
const OFFSETS: [usize; 8] = [0, 14, 18, 34, 38, 42, 50, 64];

fn views_at(data: &[u8]) {
    if let Ok(f) = EthernetFrame::new_checked(data) {
        let _ = (
            f.dst_addr(),
            f.src_addr(),
            f.outer_ethertype(),
            f.vlan_pcp(),
        );
        let _ = (f.ethertype(), f.vlan(), f.payload().len());
        let _ = EthernetRepr::parse(&f);
    }
    if let Ok(p) = ArpPacket::new_checked(data) {
        let _ = (
            p.operation(),
            p.sender_hardware_addr(),
            p.target_protocol_addr(),
        );
        let _ = (p.sender_protocol_addr(), p.target_hardware_addr());
        let _ = ArpRepr::parse(&p);
    }
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        let _ = (p.dscp(), p.ecn(), p.ident(), p.dont_frag(), p.is_fragment());
        let _ = (
            p.ttl(),
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
        );
        let _ = (p.verify_checksum(), p.options().len(), p.payload().len());
        assert!(p.payload().len() + p.header_len() <= data.len());
        let _ = Ipv4Repr::parse(&p);
        let mut copy = [0u8; 256];
        if let Some(buf) = copy.get_mut(..data.len()) {
            buf.copy_from_slice(data);
            let mut m = Ipv4Packet::new_unchecked(buf);
            let _ = m.decrement_ttl();
            m.rewrite_src_addr(B);
            m.rewrite_dst_addr(A);
            m.fill_checksum();
            let _ = m.payload_mut().len();
        }
    }
    if let Ok(p) = Icmpv4Packet::new_checked(data) {
        let _ = (
            p.msg_type(),
            p.code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq_no(),
        );
        let _ = (
            p.next_hop_mtu(),
            p.rest_of_header(),
            p.verify_checksum(),
            p.data(),
        );
    }
    if let Ok(p) = UdpPacket::new_checked(data) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.len(),
            p.checksum(),
            p.payload().len(),
        );
        let _ = (p.verify_checksum(A, B), UdpRepr::parse(&p, A, B));
    }
    if let Ok(p) = TcpPacket::new_checked(data) {
        let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
        let _ = (p.flags(), p.window_len(), p.checksum(), p.urgent_at());
        let _ = (
            p.options().len(),
            p.payload().len(),
            p.verify_checksum(A, B),
        );
    }
    if let Ok(p) = VxlanPacket::new_checked(data) {
        let _ = (p.flags(), p.vni(), p.payload().len(), VxlanRepr::parse(&p));
    }
}

fn exercise(data: &[u8]) {
    if let Ok(frame) = parse_frame(data) {
        assert!(usize::from(frame.l3_offset) <= data.len());
        let _ = frame.ports();
    }
    if let Ok((_, inner)) = decap_vxlan(data) {
        let _ = parse_frame(inner);
    }
    for &offset in &OFFSETS {
        if let Some(rest) = data.get(offset..) {
            views_at(rest);
        }
    }
    let mut out = [0u8; 256];
    for at in [14, 18] {
        if let Some(ip) = data.get(at..) {
            let _ = emit_echo_reply(ip, &mut out);
            let _ = emit_error(IcmpErrorKind::TtlExceeded, ip, A, &mut out);
            let _ = emit_error(IcmpErrorKind::PortUnreachable, ip, A, &mut out[..40]);
        }
    }
}

#[test]
fn every_truncation_of_every_sample() {
    for sample in samples::ALL {
        for len in 0..=sample.len() {
            let data = &sample[..len];
            exercise(data);
            // Every view at every offset, not just the usual header starts.
            for offset in 0..=len {
                views_at(&data[offset..]);
            }
        }
        assert!(parse_frame(sample).is_ok());
    }
}

#[test]
fn random_mutations_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut buf = [0u8; 200];
    let mut parsed = 0usize;
    for _ in 0..200_000 {
        let sample = samples::ALL[rng.below(samples::ALL.len())];
        let mut len = sample.len();
        buf[..len].copy_from_slice(sample);
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(len);
            match rng.below(8) {
                0 => buf[at] ^= 1 << rng.below(8),
                1 => buf[at] = rng.next() as u8,
                2 => buf[at] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x45, 0x08][rng.below(7)],
                3 => len = rng.below(len + 1),
                4 => {
                    // Grow with random bytes.
                    let new_len = (len + rng.below(40)).min(buf.len());
                    for b in &mut buf[len..new_len] {
                        *b = rng.next() as u8;
                    }
                    len = new_len;
                }
                5 => {
                    // Hit a length-ish field: IPv4 IHL/total length, UDP length, TCP offset.
                    let targets = [14, 16, 17, 18, 20, 21, 38, 42, 43, 46];
                    let t = targets[rng.below(targets.len())];
                    if let Some(b) = buf.get_mut(t) {
                        *b = rng.next() as u8;
                    }
                }
                6 => {
                    // Make the IPv4 header checksum right so deeper code runs.
                    for l3 in [14, 18] {
                        if let Some(ip) = buf.get_mut(l3..len) {
                            if let Ok(mut p) = Ipv4Packet::new_checked(ip) {
                                p.fill_checksum();
                            }
                        }
                    }
                }
                _ => buf[at] = buf[rng.below(len)],
            }
            if len == 0 {
                break;
            }
        }
        let data = &buf[..len];
        if parse_frame(data).is_ok() {
            parsed += 1;
        }
        exercise(data);
    }
    // The mutations must leave plenty of frames parseable, or the test proves little.
    assert!(parsed > 20_000, "only {parsed} mutated frames parsed");
}

#[test]
fn oversize_inputs_are_rejected_not_panicked() {
    let mut big = vec![0u8; MAX_FRAME_LEN + 100];
    big[..samples::ICMP_ECHO.len()].copy_from_slice(&samples::ICMP_ECHO);
    assert_eq!(parse_frame(&big), Err(WireError::Oversize));
    assert_eq!(decap_vxlan(&big), Err(WireError::Oversize));
    // A maximal IPv4 total length in a frame of the largest legal size.
    big.truncate(MAX_FRAME_LEN);
    big[16..18].copy_from_slice(&u16::MAX.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut big[14..]).fill_checksum();
    assert!(parse_frame(&big).is_ok());
    views_at(&big[14..]);
}
