//! One-shot frame decoding for the switching pipeline and the flow cache.
//!
//! [`parse_frame`] walks Ethernet → (ARP | IPv4 → TCP/UDP/ICMP | IPv6 →
//! extension headers → TCP/UDP/ICMPv6) and returns
//! a small `Copy` [`ParsedFrame`] holding the fields a switch decides on.
//! It is total: any malformed, truncated or oversize input yields a
//! [`WireError`]. It is strict about headers it decodes (a frame whose
//! IPv4 or L4 header is malformed is an error, so an L2-only path that
//! wants to forward such frames anyway should fall back to
//! [`EthernetFrame`]) but does not drop on checksums: the IPv4 header
//! checksum result is reported in [`Ipv4Summary::checksum_valid`] and L4
//! checksums are not examined.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::{
    parse_nd, upper_layer, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame,
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Fragment,
    Ipv6Packet, NdRepr, TcpFlags, TcpPacket, UdpPacket, VxlanPacket, VxlanRepr, WireError,
    IPV6_HEADER_LEN, UDP_HEADER_LEN, VXLAN_PORT,
};

/// Largest frame accepted: a maximal IPv4 datagram plus Ethernet header and one VLAN tag.
pub const MAX_FRAME_LEN: usize = 65535 + 14 + 4;

/// What [`parse_frame`] extracts from one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedFrame {
    /// Destination MAC address.
    pub dst_mac: EthernetAddress,
    /// Source MAC address.
    pub src_mac: EthernetAddress,
    /// 802.1Q VLAN identifier, if the frame is tagged.
    pub vlan: Option<u16>,
    /// EtherType of the payload (inside the tag, if any).
    pub ethertype: EtherType,
    /// Offset of the L3 header from the start of the frame (14 or 18).
    pub l3_offset: u16,
    /// The decoded network layer.
    pub l3: L3Summary,
}

/// Alias kept for callers that think of the result as a summary.
pub type FrameSummary = ParsedFrame;

/// The network layer of a [`ParsedFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3Summary {
    /// An Ethernet/IPv4 ARP request or reply.
    Arp(ArpRepr),
    /// An IPv4 datagram.
    Ipv4(Ipv4Summary),
    /// An IPv6 packet.
    Ipv6(Ipv6Summary),
    /// Any other EtherType (LLDP, a second VLAN tag, ...), not decoded.
    Other,
}

/// The IPv4 fields of a [`ParsedFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Summary {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Time to live.
    pub ttl: u8,
    /// Differentiated services code point.
    pub dscp: u8,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// Total datagram length.
    pub total_len: u16,
    /// Identification (fragments of one datagram share it).
    pub ident: u16,
    /// Whether the header checksum verified (routers must drop when false).
    pub checksum_valid: bool,
    /// Offset of the L4 header from the start of the frame.
    pub l4_offset: u16,
    /// The decoded transport layer.
    pub l4: L4Summary,
}

/// The IPv6 fields of a [`ParsedFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Summary {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// The transport protocol, after the extension headers.
    pub protocol: IpProtocol,
    /// Hop limit.
    pub hop_limit: u8,
    /// Payload length (extension headers included).
    pub payload_len: u16,
    /// The fragment header, if the packet is a fragment.
    pub fragment: Option<Ipv6Fragment>,
    /// Offset of the transport header from the start of the frame.
    pub l4_offset: u16,
    /// The decoded transport layer.
    pub l4: L4Summary,
}

/// The transport layer of an [`Ipv4Summary`] or [`Ipv6Summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Summary {
    /// A TCP segment.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Control flags.
        flags: TcpFlags,
    },
    /// A UDP datagram.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// An SCTP packet (its common header).
    Sctp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// An ICMP message.
    Icmp {
        /// Message type.
        msg_type: Icmpv4Message,
        /// Message code.
        code: u8,
        /// Echo identifier, for echo requests and replies.
        ident: Option<u16>,
    },
    /// An ICMPv6 message.
    Icmpv6 {
        /// Message type.
        msg_type: Icmpv6Message,
        /// Message code.
        code: u8,
        /// Echo identifier, for echo requests and replies.
        ident: Option<u16>,
        /// The Neighbor Discovery fields, for NDP messages.
        nd: Option<NdRepr>,
    },
    /// A non-first fragment: no transport header to read.
    Fragment,
    /// Another protocol, not decoded.
    Other,
}

impl ParsedFrame {
    /// The ARP part, if this is ARP.
    pub fn arp(&self) -> Option<&ArpRepr> {
        match &self.l3 {
            L3Summary::Arp(arp) => Some(arp),
            _ => None,
        }
    }

    /// The IPv4 part, if this is IPv4.
    pub fn ipv4(&self) -> Option<&Ipv4Summary> {
        match &self.l3 {
            L3Summary::Ipv4(ip) => Some(ip),
            _ => None,
        }
    }

    /// The IPv6 part, if this is IPv6.
    pub fn ipv6(&self) -> Option<&Ipv6Summary> {
        match &self.l3 {
            L3Summary::Ipv6(ip) => Some(ip),
            _ => None,
        }
    }

    /// `(src_port, dst_port)` for TCP, UDP and SCTP over either IP version.
    pub fn ports(&self) -> Option<(u16, u16)> {
        let l4 = match &self.l3 {
            L3Summary::Ipv4(ip) => ip.l4,
            L3Summary::Ipv6(ip) => ip.l4,
            _ => return None,
        };
        match l4 {
            L4Summary::Tcp {
                src_port, dst_port, ..
            }
            | L4Summary::Udp { src_port, dst_port }
            | L4Summary::Sctp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }
}

/// Offsets inside a frame never exceed [`MAX_FRAME_LEN`]; saturate just in case.
fn offset16(offset: usize) -> u16 {
    u16::try_from(offset).unwrap_or(u16::MAX)
}

/// Decode a complete Ethernet frame (without FCS) into a [`ParsedFrame`].
pub fn parse_frame(data: &[u8]) -> Result<ParsedFrame, WireError> {
    if data.len() > MAX_FRAME_LEN {
        return Err(WireError::Oversize);
    }
    let eth = EthernetFrame::new_checked(data)?;
    let l3_offset = eth.payload_offset();
    let payload = eth.payload();
    let l3 = match eth.ethertype() {
        EtherType::Arp => L3Summary::Arp(ArpRepr::parse(&ArpPacket::new_checked(payload)?)?),
        EtherType::Ipv4 => L3Summary::Ipv4(parse_ipv4(payload, l3_offset)?),
        EtherType::Ipv6 => L3Summary::Ipv6(parse_ipv6(payload, l3_offset)?),
        _ => L3Summary::Other,
    };
    Ok(ParsedFrame {
        dst_mac: eth.dst_addr(),
        src_mac: eth.src_addr(),
        vlan: eth.vlan(),
        ethertype: eth.ethertype(),
        l3_offset: offset16(l3_offset),
        l3,
    })
}

/// The length of SCTP's common header (ports, verification tag, CRC32c).
pub const SCTP_HEADER_LEN: usize = 12;

/// The TCP, UDP or SCTP header at the start of `payload`; `whole` says the
/// payload is the whole datagram (not a first fragment), so a UDP length
/// can be checked against it.
fn parse_ports(protocol: IpProtocol, payload: &[u8], whole: bool) -> Result<L4Summary, WireError> {
    match protocol {
        IpProtocol::Sctp => {
            let header = payload.get(..SCTP_HEADER_LEN).ok_or(WireError::Truncated)?;
            Ok(L4Summary::Sctp {
                src_port: u16::from_be_bytes([header[0], header[1]]),
                dst_port: u16::from_be_bytes([header[2], header[3]]),
            })
        }
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload)?;
            Ok(L4Summary::Tcp {
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                flags: tcp.flags(),
            })
        }
        _ => {
            // The length field of a first fragment covers the whole
            // datagram, so only an unfragmented one is length-checked.
            if payload.len() < UDP_HEADER_LEN {
                return Err(WireError::Truncated);
            }
            let udp = UdpPacket::new_unchecked(payload);
            if whole {
                udp.check_len()?;
            }
            Ok(L4Summary::Udp {
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
            })
        }
    }
}

fn parse_ipv6(data: &[u8], l3_offset: usize) -> Result<Ipv6Summary, WireError> {
    let ip = Ipv6Packet::new_checked(data)?;
    let payload = ip.payload();
    let upper = upper_layer(ip.next_header(), payload)?;
    let protocol = IpProtocol::from(upper.protocol);
    let transport = &payload[upper.offset..];
    let l4 = match (upper.fragment, protocol) {
        (Some(fragment), _) if fragment.offset != 0 => L4Summary::Fragment,
        (fragment, IpProtocol::Tcp | IpProtocol::Udp | IpProtocol::Sctp) => {
            parse_ports(protocol, transport, fragment.is_none())?
        }
        (_, IpProtocol::Icmpv6) => {
            let icmp = Icmpv6Packet::new_checked(transport)?;
            let msg_type = icmp.msg_type();
            let is_echo = matches!(
                msg_type,
                Icmpv6Message::EchoRequest | Icmpv6Message::EchoReply
            );
            L4Summary::Icmpv6 {
                msg_type,
                code: icmp.code(),
                ident: is_echo.then(|| icmp.echo_ident()),
                nd: parse_nd(msg_type, transport)?,
            }
        }
        _ => L4Summary::Other,
    };
    Ok(Ipv6Summary {
        src_addr: ip.src_addr(),
        dst_addr: ip.dst_addr(),
        protocol,
        hop_limit: ip.hop_limit(),
        payload_len: ip.payload_len(),
        fragment: upper.fragment,
        l4_offset: offset16(l3_offset + IPV6_HEADER_LEN + upper.offset),
        l4,
    })
}

fn parse_ipv4(data: &[u8], l3_offset: usize) -> Result<Ipv4Summary, WireError> {
    let ip = Ipv4Packet::new_checked(data)?;
    let payload = ip.payload();
    let l4 = if ip.frag_offset() != 0 {
        L4Summary::Fragment
    } else {
        match ip.protocol() {
            IpProtocol::Tcp | IpProtocol::Udp | IpProtocol::Sctp => {
                parse_ports(ip.protocol(), payload, !ip.more_frags())?
            }
            IpProtocol::Icmp => {
                let icmp = Icmpv4Packet::new_checked(payload)?;
                let msg_type = icmp.msg_type();
                let is_echo = matches!(
                    msg_type,
                    Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply
                );
                L4Summary::Icmp {
                    msg_type,
                    code: icmp.code(),
                    ident: is_echo.then(|| icmp.echo_ident()),
                }
            }
            IpProtocol::Icmpv6 | IpProtocol::Unknown(_) => L4Summary::Other,
        }
    };
    Ok(Ipv4Summary {
        src_addr: ip.src_addr(),
        dst_addr: ip.dst_addr(),
        protocol: ip.protocol(),
        ttl: ip.ttl(),
        dscp: ip.dscp(),
        dont_frag: ip.dont_frag(),
        more_frags: ip.more_frags(),
        frag_offset: ip.frag_offset(),
        total_len: ip.total_len(),
        ident: ip.ident(),
        checksum_valid: ip.verify_checksum(),
        l4_offset: offset16(l3_offset + ip.header_len()),
        l4,
    })
}

/// Terminate a VXLAN tunnel: return the VNI and the inner Ethernet frame.
///
/// The outer frame must be Ethernet (optionally tagged) / IPv4 with a valid
/// header checksum, unfragmented / UDP to port 4789 (a non-zero UDP
/// checksum must verify) / VXLAN with the I flag. Anything else is an
/// error: [`WireError::UnexpectedMessage`] for another protocol or port,
/// [`WireError::Fragmented`], [`WireError::BadChecksum`], or the relevant
/// parse error.
pub fn decap_vxlan(frame: &[u8]) -> Result<(VxlanRepr, &[u8]), WireError> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(WireError::Oversize);
    }
    let eth = EthernetFrame::new_checked(frame)?;
    if eth.ethertype() != EtherType::Ipv4 {
        return Err(WireError::UnexpectedMessage);
    }
    let ip = Ipv4Packet::new_checked(eth.payload())?;
    if !ip.verify_checksum() {
        return Err(WireError::BadChecksum);
    }
    if ip.is_fragment() {
        return Err(WireError::Fragmented);
    }
    if ip.protocol() != IpProtocol::Udp {
        return Err(WireError::UnexpectedMessage);
    }
    let udp = UdpPacket::new_checked(ip.payload())?;
    if udp.dst_port() != VXLAN_PORT {
        return Err(WireError::UnexpectedMessage);
    }
    if !udp.verify_checksum(ip.src_addr(), ip.dst_addr()) {
        return Err(WireError::BadChecksum);
    }
    let vxlan = VxlanPacket::new_checked(udp.payload())?;
    Ok((VxlanRepr::parse(&vxlan)?, vxlan.payload()))
}

#[cfg(test)]
mod tests {
    use super::super::{samples, ArpOperation, Vni};
    use super::*;

    fn edited(sample: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = sample.to_vec();
        edit(&mut v);
        v
    }

    /// Recompute the IPv4 header checksum of a frame whose L3 header starts at `at`.
    fn fix_ip(v: &mut [u8], at: usize) {
        Ipv4Packet::new_unchecked(&mut v[at..]).fill_checksum();
    }

    #[test]
    fn arp_request() {
        let f = parse_frame(&samples::ARP_REQUEST).unwrap();
        assert!(f.dst_mac.is_broadcast());
        assert_eq!(f.src_mac.to_string(), "52:54:00:12:34:56");
        assert_eq!(
            (f.vlan, f.ethertype, f.l3_offset),
            (None, EtherType::Arp, 14)
        );
        let arp = f.arp().unwrap();
        assert_eq!(arp.operation, ArpOperation::Request);
        assert_eq!(arp.target_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!((f.ipv4(), f.ports()), (None, None));
    }

    #[test]
    fn icmp_echo() {
        let f = parse_frame(&samples::ICMP_ECHO).unwrap();
        let ip = f.ipv4().unwrap();
        assert_eq!(ip.src_addr, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(ip.dst_addr, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            (ip.protocol, ip.ttl, ip.total_len),
            (IpProtocol::Icmp, 64, 60)
        );
        assert!(ip.dont_frag && !ip.more_frags && ip.checksum_valid);
        assert_eq!(ip.l4_offset, 34);
        assert_eq!(
            ip.l4,
            L4Summary::Icmp {
                msg_type: Icmpv4Message::EchoRequest,
                code: 0,
                ident: Some(0x1234)
            }
        );
        assert_eq!(f.ports(), None);
        assert_eq!(f.arp(), None);
    }

    #[test]
    fn tcp_syn() {
        let f = parse_frame(&samples::TCP_SYN).unwrap();
        let ip = f.ipv4().unwrap();
        assert_eq!(ip.dst_addr, Ipv4Addr::new(93, 184, 216, 34));
        assert_eq!(
            ip.l4,
            L4Summary::Tcp {
                src_port: 54321,
                dst_port: 80,
                flags: TcpFlags::SYN
            }
        );
        assert_eq!(f.ports(), Some((54321, 80)));
    }

    #[test]
    fn udp_dns_on_vlan() {
        let f = parse_frame(&samples::UDP_DNS_VLAN).unwrap();
        assert_eq!(
            (f.vlan, f.ethertype, f.l3_offset),
            (Some(100), EtherType::Ipv4, 18)
        );
        let ip = f.ipv4().unwrap();
        assert!(!ip.dont_frag && ip.checksum_valid);
        assert_eq!(ip.l4_offset, 38);
        assert_eq!(f.ports(), Some((53000, 53)));
    }

    #[test]
    fn vxlan_decap_then_parse_inner() {
        let outer = parse_frame(&samples::VXLAN_ICMP).unwrap();
        assert_eq!(outer.ports(), Some((49152, VXLAN_PORT)));
        let (repr, inner) = decap_vxlan(&samples::VXLAN_ICMP).unwrap();
        assert_eq!(repr.vni, Vni::new(5001).unwrap());
        assert_eq!(inner, &samples::ICMP_ECHO[..]);
        assert_eq!(parse_frame(inner), parse_frame(&samples::ICMP_ECHO));
    }

    #[test]
    fn decap_errors() {
        let v = &samples::VXLAN_ICMP[..];
        assert_eq!(
            decap_vxlan(&samples::ARP_REQUEST),
            Err(WireError::UnexpectedMessage)
        );
        assert_eq!(
            decap_vxlan(&samples::TCP_SYN),
            Err(WireError::UnexpectedMessage)
        );
        assert_eq!(
            decap_vxlan(&samples::UDP_DNS_VLAN),
            Err(WireError::UnexpectedMessage)
        );
        assert_eq!(decap_vxlan(&v[..40]), Err(WireError::Truncated));
        let bad_ip_sum = edited(v, |b| b[24] ^= 1);
        assert_eq!(decap_vxlan(&bad_ip_sum), Err(WireError::BadChecksum));
        let frag = edited(v, |b| {
            b[20] = 0x20;
            fix_ip(b, 14);
        });
        assert_eq!(decap_vxlan(&frag), Err(WireError::Fragmented));
        let bad_udp_sum = edited(v, |b| b[40] = 0x12);
        assert_eq!(decap_vxlan(&bad_udp_sum), Err(WireError::BadChecksum));
        let no_flag = edited(v, |b| b[42] = 0);
        assert_eq!(decap_vxlan(&no_flag), Err(WireError::MissingVxlanFlag));
        let short_udp = edited(v, |b| b[38..40].copy_from_slice(&12u16.to_be_bytes()));
        assert_eq!(decap_vxlan(&short_udp), Err(WireError::Truncated));
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        assert_eq!(decap_vxlan(&big), Err(WireError::Oversize));
    }

    /// Ethernet / IPv6 fd00::1 → fd00::2 with `ext` extension bytes
    /// (first next header `next`) and transport bytes `l4`.
    fn ipv6_frame(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut v = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let mut ip = vec![0u8; IPV6_HEADER_LEN];
        let mut p = Ipv6Packet::new_unchecked(&mut ip[..]);
        p.set_version_defaults();
        p.set_payload_len((ext.len() + l4.len()) as u16);
        p.set_next_header(next);
        p.set_hop_limit(64);
        p.set_src_addr("fd00::1".parse().unwrap());
        p.set_dst_addr("fd00::2".parse().unwrap());
        v.extend_from_slice(&ip);
        v.extend_from_slice(ext);
        v.extend_from_slice(l4);
        v
    }

    #[test]
    fn ipv6_tcp_behind_an_extension_header() {
        let tcp = &samples::TCP_SYN[34..];
        let f = parse_frame(&ipv6_frame(0, &[6, 0, 1, 4, 0, 0, 0, 0], tcp)).unwrap();
        let ip = f.ipv6().unwrap();
        assert_eq!(ip.src_addr, "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!((ip.protocol, ip.hop_limit), (IpProtocol::Tcp, 64));
        assert_eq!((ip.l4_offset, ip.fragment), (14 + 40 + 8, None));
        assert_eq!(f.ports(), Some((54321, 80)));
        assert_eq!(f.ipv4(), None);
    }

    #[test]
    fn ipv6_fragments() {
        let udp = [0x13, 0x88, 0x00, 0x35, 0x0f, 0xa0, 0, 0];
        let first = parse_frame(&ipv6_frame(44, &[17, 0, 0, 1, 0, 0, 0, 9], &udp)).unwrap();
        let ip = first.ipv6().unwrap();
        assert_eq!(
            ip.fragment.map(|f| (f.offset, f.more, f.ident)),
            Some((0, true, 9))
        );
        assert_eq!(first.ports(), Some((5000, 53)));
        let later =
            parse_frame(&ipv6_frame(44, &[17, 0, 0x05, 0xa8, 0, 0, 0, 9], &[1; 16])).unwrap();
        let ip = later.ipv6().unwrap();
        assert_eq!((ip.protocol, ip.l4), (IpProtocol::Udp, L4Summary::Fragment));
        assert_eq!(later.ports(), None);
        // An unfragmented UDP datagram's length is checked.
        assert_eq!(
            parse_frame(&ipv6_frame(17, &[], &udp)),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn ipv6_neighbor_solicitation() {
        let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
        ns.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        ns.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        let f = parse_frame(&ipv6_frame(58, &[], &ns)).unwrap();
        let ip = f.ipv6().unwrap();
        assert_eq!(
            ip.l4,
            L4Summary::Icmpv6 {
                msg_type: Icmpv6Message::NeighborSolicit,
                code: 0,
                ident: None,
                nd: Some(NdRepr {
                    target: Some("fd00::2".parse().unwrap()),
                    link_addr: Some(EthernetAddress([2, 0, 0, 0, 0, 1])),
                }),
            }
        );
        // A zero-length option is malformed.
        ns[25] = 0;
        assert_eq!(
            parse_frame(&ipv6_frame(58, &[], &ns)),
            Err(WireError::BadLength)
        );
        // Echo carries its identifier.
        let echo = parse_frame(&ipv6_frame(58, &[], &[128, 0, 0, 0, 0, 7, 0, 1])).unwrap();
        assert!(matches!(
            echo.ipv6().unwrap().l4,
            L4Summary::Icmpv6 {
                ident: Some(7),
                nd: None,
                ..
            }
        ));
    }

    #[test]
    fn oversize_and_limits() {
        let mut big = vec![0u8; MAX_FRAME_LEN + 1];
        big[12..14].copy_from_slice(&[0x88, 0xcc]);
        assert_eq!(parse_frame(&big), Err(WireError::Oversize));
        let f = parse_frame(&big[..MAX_FRAME_LEN]).unwrap();
        assert_eq!(
            (f.ethertype, f.l3),
            (EtherType::Unknown(0x88cc), L3Summary::Other)
        );
    }

    #[test]
    fn layer_errors_propagate() {
        let cases: [(Vec<u8>, WireError); 9] = [
            (samples::ICMP_ECHO[..13].to_vec(), WireError::Truncated),
            (
                edited(&samples::ARP_REQUEST, |b| b[15] = 6),
                WireError::UnsupportedHardware,
            ),
            (
                edited(&samples::ARP_REQUEST, |b| b[21] = 9),
                WireError::BadOperation,
            ),
            (samples::ARP_REQUEST[..41].to_vec(), WireError::Truncated),
            (
                edited(&samples::ICMP_ECHO, |b| b[14] = 0x65),
                WireError::BadVersion,
            ),
            (
                edited(&samples::ICMP_ECHO, |b| b[14] = 0x43),
                WireError::BadHeaderLength,
            ),
            (
                edited(&samples::TCP_SYN, |b| b[46] = 0x30),
                WireError::BadHeaderLength,
            ),
            (samples::TCP_SYN[..60].to_vec(), WireError::Truncated),
            (
                edited(&samples::UDP_DNS_VLAN, |b| b[43] = 4),
                WireError::BadLength,
            ),
        ];
        for (i, (frame, expected)) in cases.iter().enumerate() {
            assert_eq!(parse_frame(frame), Err(*expected), "case {i}");
        }
        // ICMP shorter than its 8-byte header.
        let icmp = edited(&samples::ICMP_ECHO, |b| {
            b[16..18].copy_from_slice(&24u16.to_be_bytes());
            fix_ip(b, 14);
        });
        assert_eq!(parse_frame(&icmp), Err(WireError::Truncated));
    }

    #[test]
    fn fragments_and_checksums() {
        // Non-first fragment: no L4 decoding even though the "header" is garbage.
        let frag = edited(&samples::TCP_SYN, |b| {
            b[20] = 0x00;
            b[21] = 0xb9; // offset 185 * 8 = 1480
            b[46] = 0x00; // would be a bad data offset
            fix_ip(b, 14);
        });
        let ip = *parse_frame(&frag).unwrap().ipv4().unwrap();
        assert_eq!(
            (ip.l4, ip.frag_offset, ip.checksum_valid),
            (L4Summary::Fragment, 1480, true)
        );
        // First fragment of a large UDP datagram: UDP length exceeds this fragment.
        let first = edited(&samples::UDP_DNS_VLAN, |b| {
            b[24] = 0x20; // MF
            b[42..44].copy_from_slice(&1400u16.to_be_bytes());
            fix_ip(b, 18);
        });
        let f = parse_frame(&first).unwrap();
        assert!(f.ipv4().unwrap().more_frags);
        assert_eq!(f.ports(), Some((53000, 53)));
        let tiny = edited(&samples::UDP_DNS_VLAN, |b| {
            b[24] = 0x20;
            b[20..22].copy_from_slice(&24u16.to_be_bytes());
            fix_ip(b, 18);
        });
        assert_eq!(parse_frame(&tiny), Err(WireError::Truncated));
        // A bad header checksum is reported, not fatal.
        let bad = edited(&samples::ICMP_ECHO, |b| b[25] ^= 0xff);
        assert!(!parse_frame(&bad).unwrap().ipv4().unwrap().checksum_valid);
    }

    #[test]
    fn other_protocols() {
        let gre = edited(&samples::ICMP_ECHO, |b| {
            b[23] = 47;
            fix_ip(b, 14);
        });
        let ip = *parse_frame(&gre).unwrap().ipv4().unwrap();
        assert_eq!(
            (ip.protocol, ip.l4),
            (IpProtocol::Unknown(47), L4Summary::Other)
        );
        let ipv6 = edited(&samples::ICMP_ECHO, |b| {
            b[12..14].copy_from_slice(&[0x86, 0xdd])
        });
        assert_eq!(parse_frame(&ipv6), Err(WireError::BadVersion));
        let unreachable = edited(&samples::ICMP_ECHO, |b| b[34] = 3);
        let ip = *parse_frame(&unreachable).unwrap().ipv4().unwrap();
        assert_eq!(
            ip.l4,
            L4Summary::Icmp {
                msg_type: Icmpv4Message::DstUnreachable,
                code: 0,
                ident: None
            }
        );
        let summary: FrameSummary = parse_frame(&samples::TCP_SYN).unwrap();
        assert_eq!(summary.ethertype, EtherType::Ipv4);
    }
}
