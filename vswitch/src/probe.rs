//! Synthetic packets for `plexus trace`: an ICMP echo, a TCP SYN or a UDP
//! datagram with the given headers, as a whole Ethernet frame.

use std::net::Ipv4Addr;

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
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// Transport.
    pub protocol: ProbeProtocol,
    /// Source port (TCP/UDP).
    pub src_port: u16,
    /// Destination port (TCP/UDP).
    pub dst_port: u16,
    /// Time to live.
    pub ttl: u8,
}

impl Probe {
    /// The probe as an Ethernet frame.
    pub fn frame(&self) -> Result<Vec<u8>, WireError> {
        let (protocol, l4_len) = match self.protocol {
            ProbeProtocol::Icmp => (IpProtocol::Icmp, 8 + 16),
            ProbeProtocol::Tcp => (IpProtocol::Tcp, 20),
            ProbeProtocol::Udp => (IpProtocol::Udp, 8 + 16),
        };
        let mut buf = vec![0u8; ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + l4_len];
        let ip = Ipv4Repr {
            src_addr: self.src_ip,
            dst_addr: self.dst_ip,
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
                tcp.fill_checksum(self.src_ip, self.dst_ip);
            }
            ProbeProtocol::Udp => {
                let repr = UdpRepr {
                    src_port: self.src_port,
                    dst_port: self.dst_port,
                };
                repr.emit(self.src_ip, self.dst_ip, 16, l4)?;
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
}
