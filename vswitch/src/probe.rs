//! Synthetic packets for `plexus trace`: an ICMP (ICMPv6) echo, a TCP SYN
//! or a UDP datagram with the given headers over IPv4 or IPv6, as a whole
//! Ethernet frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::snapshot::Mac;
use crate::wire::{
    emit_ethernet, EtherType, EthernetAddress, Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Repr,
    TcpFlags, TcpPacket, UdpRepr, WireError, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
};

/// The transport of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeProtocol {
    /// ICMP echo request.
    Icmp,
    /// TCP SYN.
    Tcp,
    /// UDP datagram.
    Udp,
}

/// What a probe looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Ethernet source.
    pub src_mac: Mac,
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// Source address.
    pub src_ip: IpAddr,
    /// Destination address (the same family as the source).
    pub dst_ip: IpAddr,
    /// Transport.
    pub protocol: ProbeProtocol,
    /// Source port (TCP/UDP).
    pub src_port: u16,
    /// Destination port (TCP/UDP).
    pub dst_port: u16,
    /// Time to live (IPv6: hop limit).
    pub ttl: u8,
}

impl Probe {
    /// The probe as an Ethernet frame; an error when the source and
    /// destination are not of one family.
    pub fn frame(&self) -> Result<Vec<u8>, WireError> {
        match (self.src_ip, self.dst_ip) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => self.frame4(src, dst),
            (IpAddr::V6(src), IpAddr::V6(dst)) => self.frame6(src, dst),
            _ => Err(WireError::BadAddress),
        }
    }

    fn frame6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Result<Vec<u8>, WireError> {
        let (next, mut l4) = match self.protocol {
            ProbeProtocol::Icmp => {
                let mut icmp = vec![128, 0, 0, 0, 0x50, 0x4c, 0, 1];
                icmp.resize(8 + 16, 0);
                (58u8, icmp)
            }
            ProbeProtocol::Tcp => {
                let mut tcp = vec![0u8; 20];
                tcp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
                tcp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
                tcp[12] = 0x50;
                tcp[13] = 0x02;
                tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
                (6, tcp)
            }
            ProbeProtocol::Udp => {
                let mut udp = vec![0u8; 8 + 16];
                udp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
                udp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                udp[4..6].copy_from_slice(&24u16.to_be_bytes());
                (17, udp)
            }
        };
        let at = if next == 6 {
            16
        } else if next == 17 {
            6
        } else {
            2
        };
        let sum = crate::engine::frames6::upper_checksum(&src, &dst, next, &l4);
        // UDP sends a zero sum as all ones (RFC 8200 8.1).
        let sum = if next == 17 && sum == 0 { 0xffff } else { sum };
        l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        let mut buf = vec![0u8; ETHERNET_HEADER_LEN + crate::wire::IPV6_HEADER_LEN];
        let mut ip = crate::wire::Ipv6Packet::new_unchecked(&mut buf[ETHERNET_HEADER_LEN..]);
        ip.set_version_defaults();
        ip.set_payload_len(l4.len() as u16);
        ip.set_next_header(next);
        ip.set_hop_limit(self.ttl);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        buf.extend_from_slice(&l4);
        let len = buf.len() - ETHERNET_HEADER_LEN;
        emit_ethernet(
            EthernetAddress(self.dst_mac),
            EthernetAddress(self.src_mac),
            EtherType::Ipv6,
            len,
            &mut buf,
        )?;
        Ok(buf)
    }

    fn frame4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Result<Vec<u8>, WireError> {
        let (protocol, l4_len) = match self.protocol {
            ProbeProtocol::Icmp => (IpProtocol::Icmp, 8 + 16),
            ProbeProtocol::Tcp => (IpProtocol::Tcp, 20),
            ProbeProtocol::Udp => (IpProtocol::Udp, 8 + 16),
        };
        let mut buf = vec![0u8; ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + l4_len];
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol,
            ttl: self.ttl,
            ident: 1,
            dont_frag: true,
            payload_len: l4_len,
        };
        let ip_len = ip.emit(&mut buf[ETHERNET_HEADER_LEN..])?;
        let l4 = &mut buf[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..];
        match self.protocol {
            ProbeProtocol::Icmp => {
                let mut icmp = Icmpv4Packet::new_unchecked(l4);
                icmp.set_msg_type(Icmpv4Message::EchoRequest);
                icmp.set_code(0);
                icmp.set_echo_ident(0x504c);
                icmp.set_echo_seq_no(1);
                icmp.fill_checksum();
            }
            ProbeProtocol::Tcp => {
                let mut tcp = TcpPacket::new_unchecked(l4);
                tcp.set_src_port(self.src_port);
                tcp.set_dst_port(self.dst_port);
                tcp.set_seq_number(1);
                tcp.set_header_len(20);
                tcp.set_flags(TcpFlags::SYN);
                tcp.set_window_len(65535);
                tcp.fill_checksum(src, dst);
            }
            ProbeProtocol::Udp => {
                let repr = UdpRepr {
                    src_port: self.src_port,
                    dst_port: self.dst_port,
                };
                repr.emit(src, dst, 16, l4)?;
            }
        }
        emit_ethernet(
            EthernetAddress(self.dst_mac),
            EthernetAddress(self.src_mac),
            EtherType::Ipv4,
            ip_len,
            &mut buf,
        )?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PacketInfo, L3};

    #[test]
    fn probes_parse_back() {
        for (protocol, ports) in [
            (ProbeProtocol::Icmp, None),
            (ProbeProtocol::Tcp, Some((1234, 80))),
            (ProbeProtocol::Udp, Some((1234, 80))),
        ] {
            let probe = Probe {
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: [2, 0, 0, 0, 0, 2],
                src_ip: "10.0.0.1".parse().unwrap(),
                dst_ip: "10.0.0.2".parse().unwrap(),
                protocol,
                src_port: 1234,
                dst_port: 80,
                ttl: 9,
            };
            let info = PacketInfo::parse(&probe.frame().unwrap()).unwrap();
            let L3::Ipv4(ip) = info.l3 else {
                panic!("not IPv4")
            };
            assert_eq!((ip.ttl, ip.ports, ip.checksum_valid), (9, ports, true));
        }
    }

    #[test]
    fn ipv6_probes_parse_back_with_valid_checksums() {
        for (protocol, ports) in [
            (ProbeProtocol::Icmp, None),
            (ProbeProtocol::Tcp, Some((1234, 80))),
            (ProbeProtocol::Udp, Some((1234, 80))),
        ] {
            let probe = Probe {
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: [2, 0, 0, 0, 0, 2],
                src_ip: "2001:db8::1".parse().unwrap(),
                dst_ip: "2001:db8::2".parse().unwrap(),
                protocol,
                src_port: 1234,
                dst_port: 80,
                ttl: 9,
            };
            let frame = probe.frame().unwrap();
            let info = PacketInfo::parse(&frame).unwrap();
            let L3::Ipv6(ip) = info.l3 else {
                panic!("not IPv6")
            };
            assert_eq!((ip.hop_limit, ip.ports), (9, ports));
            assert!(crate::engine::frames6::upper_checksum_valid(&frame));
        }
        let mixed = Probe {
            src_ip: "10.0.0.1".parse().unwrap(),
            dst_ip: "2001:db8::2".parse().unwrap(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            protocol: ProbeProtocol::Icmp,
            src_port: 0,
            dst_port: 0,
            ttl: 1,
        };
        assert!(mixed.frame().is_err());
    }
}
