//! Applying a [`Rewrite`] to frame bytes in place: MACs, TTL (or IPv6 hop
//! limit) and NAT, with the checksums updated incrementally. The datapath runs it on every
//! forwarded frame; the engine runs it when it must hand on whole bytes.

use super::Rewrite;
use crate::wire::{nat_ipv4, nat_ipv6, Ipv4Packet, Ipv6Packet};

/// Where the IPv4 header starts (after one optional VLAN tag).
fn l3_offset(frame: &[u8]) -> usize {
    if frame.get(12..14) == Some(&[0x81, 0x00][..]) {
        18
    } else {
        14
    }
}

/// Applies `rewrite` to `frame` in place; false (with the frame possibly
/// half-changed, so drop it) if the frame cannot take it.
/// `partial_l4_checksum`: the frame's TCP/UDP checksum is a partial
/// (offloaded) one, as a `virtio_net_hdr` with `NEEDS_CSUM` says.
pub fn apply_rewrite(frame: &mut [u8], rewrite: &Rewrite, partial_l4_checksum: bool) -> bool {
    if frame.len() < 14 {
        return false;
    }
    if let Some(dst) = rewrite.eth_dst {
        frame[0..6].copy_from_slice(&dst);
    }
    if let Some(src) = rewrite.eth_src {
        frame[6..12].copy_from_slice(&src);
    }
    let nat = rewrite.nat();
    if rewrite.ttl_decrement == 0 && nat.is_identity() {
        return true;
    }
    let offset = l3_offset(frame);
    let Some(ip) = frame.get_mut(offset..) else {
        return false;
    };
    if ip.first().is_some_and(|b| b >> 4 == 6) {
        // IPv6: no header checksum to mend for the hop limit.
        if !nat.is_identity() && nat_ipv6(ip, &nat, partial_l4_checksum).is_err() {
            return false;
        }
        let Ok(mut packet) = Ipv6Packet::new_checked(ip) else {
            return false;
        };
        let hop_limit = packet.hop_limit();
        if hop_limit < rewrite.ttl_decrement {
            return false;
        }
        packet.set_hop_limit(hop_limit - rewrite.ttl_decrement);
        return true;
    }
    if !nat.is_identity() && nat_ipv4(ip, &nat, partial_l4_checksum).is_err() {
        return false;
    }
    if rewrite.ttl_decrement > 0 {
        let Ok(mut packet) = Ipv4Packet::new_checked(ip) else {
            return false;
        };
        for _ in 0..rewrite.ttl_decrement {
            if packet.decrement_ttl().is_none() {
                return false;
            }
        }
    }
    true
}

/// A copy of `frame` with `rewrite` applied; `None` if it cannot take it.
pub(crate) fn rewritten(frame: &[u8], rewrite: &Rewrite) -> Option<Vec<u8>> {
    let mut copy = frame.to_vec();
    apply_rewrite(&mut copy, rewrite, false).then_some(copy)
}

/// A frame as it arrived at a device: the bytes and the rewrites the walk
/// has decided for them so far. Replies a device builds (ICMP errors,
/// rejects) quote the packet as the device received it.
pub(crate) struct EntryFrame<'a> {
    /// The bytes.
    pub(crate) bytes: &'a [u8],
    /// Still to be applied to them.
    pub(crate) rewrite: Rewrite,
}

impl EntryFrame<'_> {
    /// The frame as the device received it.
    pub(crate) fn current(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.rewrite.is_identity() {
            return std::borrow::Cow::Borrowed(self.bytes);
        }
        match rewritten(self.bytes, &self.rewrite) {
            Some(bytes) => std::borrow::Cow::Owned(bytes),
            None => std::borrow::Cow::Borrowed(self.bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PacketInfo, L3};
    use crate::probe::{Probe, ProbeProtocol};

    fn frame(ttl: u8) -> Vec<u8> {
        Probe {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: "10.0.0.1".parse().unwrap(),
            dst_ip: "10.0.1.1".parse().unwrap(),
            protocol: ProbeProtocol::Tcp,
            src_port: 1000,
            dst_port: 80,
            ttl,
        }
        .frame()
        .unwrap()
    }

    #[test]
    fn rewrites_macs_ttl_and_nat_keeping_checksums_valid() {
        let mut bytes = frame(64);
        let rewrite = Rewrite {
            eth_src: Some([2, 0, 0, 0, 0, 9]),
            eth_dst: Some([2, 0, 0, 0, 0, 8]),
            ttl_decrement: 2,
            ip_src: Some("169.254.0.2".parse().unwrap()),
            src_port: Some(2000),
            ..Rewrite::default()
        };
        assert!(apply_rewrite(&mut bytes, &rewrite, false));
        let info = PacketInfo::parse(&bytes).unwrap();
        assert_eq!(
            (info.eth_src, info.eth_dst),
            ([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 8])
        );
        let L3::Ipv4(ip) = info.l3 else {
            panic!("not IPv4")
        };
        assert_eq!(ip.ttl, 62);
        assert_eq!(ip.src.to_string(), "169.254.0.2");
        assert_eq!(ip.ports, Some((2000, 80)));
        assert!(ip.checksum_valid, "the header checksum stays right");
        let tcp = crate::wire::TcpPacket::new_checked(&bytes[34..]).unwrap();
        assert!(tcp.verify_checksum(ip.src, ip.dst), "and so does TCP's");
    }

    #[test]
    fn refuses_to_take_the_ttl_below_zero_and_short_frames() {
        let mut bytes = frame(1);
        assert!(!apply_rewrite(
            &mut bytes,
            &Rewrite {
                ttl_decrement: 2,
                ..Rewrite::default()
            },
            false
        ));
        assert!(!apply_rewrite(&mut [0u8; 10], &Rewrite::default(), false));
        assert!(
            apply_rewrite(&mut frame(5), &Rewrite::default(), false),
            "the identity rewrite always applies"
        );
    }
}
