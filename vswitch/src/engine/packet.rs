//! The fields of a frame the engine decides on, decoded once per device hop.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Rewrite;
use crate::conntrack::{tcp, ConnKey};
use crate::snapshot::Mac;
use crate::wire::{
    self, ArpOperation, Icmpv4Message, Icmpv6Message, Ipv6Summary, L3Summary, L4Summary, WireError,
};

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    /// who-has.
    Request,
    /// is-at.
    Reply,
}

/// An ARP message (Ethernet/IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpInfo {
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// What kind of ICMP message a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpKind {
    /// Echo request (type 8).
    EchoRequest,
    /// Echo reply (type 0).
    EchoReply,
    /// An error (destination unreachable, time exceeded, ...).
    Error,
    /// Anything else.
    Other,
}

/// Where a datagram stands in fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not fragmented.
    None,
    /// The first fragment (it carries the transport header).
    First,
    /// A later fragment (no transport header).
    Later,
}

/// An IPv4 packet's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Info {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Time to live (after the rewrites so far).
    pub ttl: u8,
    /// ICMP kind and (type, code), for ICMP.
    pub icmp: Option<(IcmpKind, (u8, u8))>,
    /// TCP/UDP source and destination ports (first fragments only).
    pub ports: Option<(u16, u16)>,
    /// The echo identifier of ICMP echo requests and replies.
    pub icmp_ident: Option<u16>,
    /// For ICMP errors: the key of the quoted datagram.
    pub icmp_quoted: Option<ConnKey>,
    /// TCP SYN, FIN and RST bits (connection tracking follows them).
    pub tcp_flags: u8,
    /// Fragmentation.
    pub fragment: Fragment,
    /// The identification of a fragment (0 when not fragmented, so that
    /// whole datagrams of one flow share a flow key).
    pub frag_id: u32,
    /// Whether the header checksum verified.
    pub checksum_valid: bool,
}

impl Ipv4Info {
    /// The connection-tracking key, for packets that can be tracked
    /// (not ICMP errors, which are tracked through the datagram they quote,
    /// and not later fragments, which carry no ports).
    pub fn conn_key(&self) -> Option<ConnKey> {
        transport_key(
            self.proto,
            (IpAddr::V4(self.src), IpAddr::V4(self.dst)),
            (self.ports, self.icmp_ident, self.icmp),
            self.fragment,
        )
    }
}

/// Ports, ICMP echo identifier and ICMP (kind, (type, code)) of a packet.
type TransportFields = (
    Option<(u16, u16)>,
    Option<u16>,
    Option<(IcmpKind, (u8, u8))>,
);

/// The connection key of an IP packet from its transport fields (`proto`
/// 1 and 58 being ICMP's): ports, or the echo identifier in both; `None`
/// for ICMP errors (tracked through what they quote), ICMPv6 link
/// signalling, TCP/UDP without ports and later fragments that have not
/// been given their first fragment's ports.
fn transport_key(
    proto: u8,
    (src, dst): (IpAddr, IpAddr),
    (ports, icmp_ident, icmp): TransportFields,
    fragment: Fragment,
) -> Option<ConnKey> {
    if fragment == Fragment::Later && ports.is_none() && icmp_ident.is_none() {
        return None;
    }
    let (sport, dport) = match (proto, ports, icmp_ident, icmp) {
        (_, Some(ports), _, _) => ports,
        (1 | 58, _, Some(ident), _) => (ident, ident),
        (1 | 58, _, _, Some((IcmpKind::Error, _))) => return None,
        (58, _, _, Some((_, (kind, _)))) if Icmpv6Message::from(kind).is_link_signalling() => {
            return None
        }
        (6 | 17 | 132, None, _, _) => return None,
        _ => (0, 0),
    };
    Some(ConnKey {
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

/// The Neighbor Discovery fields of an NDP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NdInfo {
    /// The ICMPv6 type (133 to 137).
    pub msg_type: u8,
    /// The target address (solicitations, advertisements, redirects).
    pub target: Option<Ipv6Addr>,
    /// The source or target link-layer address option.
    pub link_addr: Option<Mac>,
}

/// An IPv6 packet's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Info {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// The transport protocol (the next header after the extension headers).
    pub proto: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// ICMPv6 kind and (type, code), for ICMPv6.
    pub icmp: Option<(IcmpKind, (u8, u8))>,
    /// TCP/UDP source and destination ports (first fragments only).
    pub ports: Option<(u16, u16)>,
    /// The echo identifier of ICMPv6 echo requests and replies.
    pub icmp_ident: Option<u16>,
    /// For ICMPv6 errors: the key of the quoted packet.
    pub icmp_quoted: Option<ConnKey>,
    /// TCP SYN, FIN and RST bits.
    pub tcp_flags: u8,
    /// Fragmentation.
    pub fragment: Fragment,
    /// The identification of a fragment (0 when not fragmented).
    pub frag_id: u32,
    /// Neighbor Discovery fields, for NDP messages.
    pub nd: Option<NdInfo>,
}

impl Ipv6Info {
    /// The connection-tracking key, for packets that can be tracked: not
    /// ICMPv6 errors (tracked through what they quote), not later
    /// fragments, and not Neighbor Discovery or multicast-listener
    /// signalling (link-local, never a connection, as in Linux conntrack).
    pub fn conn_key(&self) -> Option<ConnKey> {
        transport_key(
            self.proto,
            (IpAddr::V6(self.src), IpAddr::V6(self.dst)),
            (self.ports, self.icmp_ident, self.icmp),
            self.fragment,
        )
    }
}

/// The key of the datagram an ICMP error quotes (header + 8 bytes).
fn quoted_key(icmp_data: &[u8]) -> Option<ConnKey> {
    let ihl = usize::from(icmp_data.first()? & 0x0f) * 4;
    if icmp_data.first()? >> 4 != 4 || ihl < 20 {
        return None;
    }
    let header = icmp_data.get(..ihl)?;
    let addr =
        |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
    let proto = header[9];
    let l4 = icmp_data.get(ihl..)?;
    let word = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    let (sport, dport) = match proto {
        6 | 17 | 132 => (word(0)?, word(2)?),
        1 => {
            let ident = word(4)?;
            (ident, ident)
        }
        _ => (0, 0),
    };
    Some(ConnKey {
        proto,
        src: IpAddr::V4(addr(12)),
        dst: IpAddr::V4(addr(16)),
        sport,
        dport,
    })
}

/// The key of the packet an ICMPv6 error quotes (as much of it as fits).
fn quoted_key6(icmp_data: &[u8]) -> Option<ConnKey> {
    let ip = wire::Ipv6Packet::new_unchecked(icmp_data);
    if icmp_data.len() < wire::IPV6_HEADER_LEN || ip.version() != 6 {
        return None;
    }
    // The quote may be cut anywhere: walk what is there.
    let rest = &icmp_data[wire::IPV6_HEADER_LEN..];
    let upper = wire::upper_layer(ip.next_header(), rest).ok()?;
    let l4 = rest.get(upper.offset..)?;
    let word = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    let (sport, dport) = match upper.protocol {
        6 | 17 | 132 => (word(0)?, word(2)?),
        58 => {
            let ident = word(4)?;
            (ident, ident)
        }
        _ => (0, 0),
    };
    Some(ConnKey {
        proto: upper.protocol,
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        sport,
        dport,
    })
}

fn fragment_of(offset: u16, more: bool) -> Fragment {
    match (offset, more) {
        (0, false) => Fragment::None,
        (0, true) => Fragment::First,
        _ => Fragment::Later,
    }
}

fn tcp_bits(flags: wire::TcpFlags) -> u8 {
    (flags.bits() as u8) & (tcp::FIN | tcp::SYN | tcp::RST)
}

fn ipv6_info(frame: &[u8], ip: &Ipv6Summary, ports: Option<(u16, u16)>) -> Ipv6Info {
    let (icmp, icmp_ident, nd) = match ip.l4 {
        L4Summary::Icmpv6 {
            msg_type,
            code,
            ident,
            nd,
        } => {
            let kind = match msg_type {
                Icmpv6Message::EchoRequest => IcmpKind::EchoRequest,
                Icmpv6Message::EchoReply => IcmpKind::EchoReply,
                m if m.is_error() => IcmpKind::Error,
                _ => IcmpKind::Other,
            };
            let nd = nd.map(|nd| NdInfo {
                msg_type: u8::from(msg_type),
                target: nd.target,
                link_addr: nd.link_addr.map(|mac| mac.0),
            });
            (Some((kind, (u8::from(msg_type), code))), ident, nd)
        }
        _ => (None, None, None),
    };
    let icmp_quoted = match icmp {
        Some((IcmpKind::Error, _)) => frame
            .get(usize::from(ip.l4_offset) + wire::ICMPV6_HEADER_LEN..)
            .and_then(quoted_key6),
        _ => None,
    };
    let tcp_flags = match ip.l4 {
        L4Summary::Tcp { flags, .. } => tcp_bits(flags),
        _ => 0,
    };
    Ipv6Info {
        src: ip.src_addr,
        dst: ip.dst_addr,
        proto: u8::from(ip.protocol),
        hop_limit: ip.hop_limit,
        icmp,
        ports,
        icmp_ident,
        icmp_quoted,
        tcp_flags,
        fragment: ip
            .fragment
            .map_or(Fragment::None, |f| fragment_of(f.offset, f.more)),
        frag_id: ip.fragment.map_or(0, |f| f.ident),
        nd,
    }
}

/// The network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3 {
    /// ARP.
    Arp(ArpInfo),
    /// IPv4.
    Ipv4(Ipv4Info),
    /// IPv6.
    Ipv6(Ipv6Info),
    /// Another ethertype.
    Other(u16),
}

/// A decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketInfo {
    /// Ethernet source.
    pub eth_src: Mac,
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// The network layer.
    pub l3: L3,
}

impl PacketInfo {
    /// Decodes a frame; the error says what is malformed.
    pub fn parse(frame: &[u8]) -> Result<PacketInfo, WireError> {
        let parsed = wire::parse_frame(frame)?;
        let l3 = match parsed.l3 {
            L3Summary::Arp(arp) => L3::Arp(ArpInfo {
                op: if arp.operation == ArpOperation::Request {
                    ArpOp::Request
                } else {
                    ArpOp::Reply
                },
                sender_mac: arp.sender_mac.0,
                sender_ip: arp.sender_ip,
                target_mac: arp.target_mac.0,
                target_ip: arp.target_ip,
            }),
            L3Summary::Ipv4(ip) => {
                let icmp = match ip.l4 {
                    L4Summary::Icmp { msg_type, code, .. } => {
                        let kind = match msg_type {
                            Icmpv4Message::EchoRequest => IcmpKind::EchoRequest,
                            Icmpv4Message::EchoReply => IcmpKind::EchoReply,
                            m if m.is_error() => IcmpKind::Error,
                            _ => IcmpKind::Other,
                        };
                        Some((kind, (u8::from(msg_type), code)))
                    }
                    _ => None,
                };
                let (icmp_ident, tcp_flags) = match ip.l4 {
                    L4Summary::Icmp { ident, .. } => (ident, 0),
                    L4Summary::Tcp { flags, .. } => (None, tcp_bits(flags)),
                    _ => (None, 0),
                };
                let icmp_quoted = match icmp {
                    Some((IcmpKind::Error, _)) => frame
                        .get(usize::from(ip.l4_offset) + wire::ICMPV4_HEADER_LEN..)
                        .and_then(quoted_key),
                    _ => None,
                };
                let fragment = fragment_of(ip.frag_offset, ip.more_frags);
                L3::Ipv4(Ipv4Info {
                    src: ip.src_addr,
                    dst: ip.dst_addr,
                    proto: u8::from(ip.protocol),
                    ttl: ip.ttl,
                    icmp,
                    ports: parsed.ports(),
                    icmp_ident,
                    icmp_quoted,
                    tcp_flags,
                    fragment,
                    frag_id: if fragment == Fragment::None {
                        0
                    } else {
                        u32::from(ip.ident)
                    },
                    checksum_valid: ip.checksum_valid,
                })
            }
            L3Summary::Ipv6(ip) => L3::Ipv6(ipv6_info(frame, &ip, parsed.ports())),
            L3Summary::Other => L3::Other(u16::from(parsed.ethertype)),
        };
        Ok(PacketInfo {
            eth_src: parsed.src_mac.0,
            eth_dst: parsed.dst_mac.0,
            l3,
        })
    }

    /// The packet as it looks after `rewrite`.
    pub fn with_rewrite(mut self, rewrite: &Rewrite) -> PacketInfo {
        if let Some(src) = rewrite.eth_src {
            self.eth_src = src;
        }
        if let Some(dst) = rewrite.eth_dst {
            self.eth_dst = dst;
        }
        let (ports, ident) = match &mut self.l3 {
            L3::Ipv4(ip) => {
                ip.ttl = ip.ttl.saturating_sub(rewrite.ttl_decrement);
                if let Some(IpAddr::V4(src)) = rewrite.ip_src {
                    ip.src = src;
                }
                if let Some(IpAddr::V4(dst)) = rewrite.ip_dst {
                    ip.dst = dst;
                }
                (&mut ip.ports, &mut ip.icmp_ident)
            }
            L3::Ipv6(ip) => {
                ip.hop_limit = ip.hop_limit.saturating_sub(rewrite.ttl_decrement);
                if let Some(IpAddr::V6(src)) = rewrite.ip_src {
                    ip.src = src;
                }
                if let Some(IpAddr::V6(dst)) = rewrite.ip_dst {
                    ip.dst = dst;
                }
                (&mut ip.ports, &mut ip.icmp_ident)
            }
            _ => return self,
        };
        if let Some((sport, dport)) = ports {
            *sport = rewrite.src_port.unwrap_or(*sport);
            *dport = rewrite.dst_port.unwrap_or(*dport);
        }
        if let Some(ident) = ident {
            *ident = rewrite.src_port.or(rewrite.dst_port).unwrap_or(*ident);
        }
        self
    }

    /// The IPv4 part, if this is IPv4.
    pub fn ipv4(&self) -> Option<&Ipv4Info> {
        match &self.l3 {
            L3::Ipv4(ip) => Some(ip),
            _ => None,
        }
    }

    /// The IPv6 part, if this is IPv6.
    pub fn ipv6(&self) -> Option<&Ipv6Info> {
        match &self.l3 {
            L3::Ipv6(ip) => Some(ip),
            _ => None,
        }
    }

    /// The IP header fields both versions share, if this is IP.
    pub fn ip(&self) -> Option<IpFields> {
        match &self.l3 {
            L3::Ipv4(ip) => Some(IpFields {
                proto: ip.proto,
                src: IpAddr::V4(ip.src),
                dst: IpAddr::V4(ip.dst),
                ports: ip.ports,
                icmp: ip.icmp.map(|(_, type_code)| type_code),
                fragment: ip.fragment,
            }),
            L3::Ipv6(ip) => Some(IpFields {
                proto: ip.proto,
                src: IpAddr::V6(ip.src),
                dst: IpAddr::V6(ip.dst),
                ports: ip.ports,
                icmp: ip.icmp.map(|(_, type_code)| type_code),
                fragment: ip.fragment,
            }),
            _ => None,
        }
    }

    /// The connection-tracking key, for IP packets that can be tracked.
    pub fn conn_key(&self) -> Option<ConnKey> {
        match &self.l3 {
            L3::Ipv4(ip) => ip.conn_key(),
            L3::Ipv6(ip) => ip.conn_key(),
            _ => None,
        }
    }

    /// For an ICMP or ICMPv6 error: the key of the packet it quotes.
    pub fn icmp_quoted(&self) -> Option<ConnKey> {
        match &self.l3 {
            L3::Ipv4(ip) => ip.icmp_quoted,
            L3::Ipv6(ip) => ip.icmp_quoted,
            _ => None,
        }
    }

    /// What identifies the datagram a fragment belongs to (`None` for
    /// packets that are not fragments).
    pub fn fragment_key(&self) -> Option<FragmentKey> {
        let (ip, id) = match &self.l3 {
            L3::Ipv4(ip) => (self.ip()?, ip.frag_id),
            L3::Ipv6(ip) => (self.ip()?, ip.frag_id),
            _ => return None,
        };
        (ip.fragment != Fragment::None).then_some(FragmentKey {
            proto: ip.proto,
            src: ip.src,
            dst: ip.dst,
            id,
        })
    }

    /// A later fragment seen with the transport ports (or ICMP echo
    /// identifier) its first fragment carried, so that it belongs to the
    /// first fragment's connection.
    pub fn with_fragment_ports(mut self, (sport, dport): (u16, u16)) -> PacketInfo {
        let (proto, ports, ident) = match &mut self.l3 {
            L3::Ipv4(ip) => (ip.proto, &mut ip.ports, &mut ip.icmp_ident),
            L3::Ipv6(ip) => (ip.proto, &mut ip.ports, &mut ip.icmp_ident),
            _ => return self,
        };
        match proto {
            1 | 58 => *ident = Some(sport),
            _ => *ports = Some((sport, dport)),
        }
        self
    }

    /// The TCP SYN, FIN and RST bits (0 for anything else).
    pub fn tcp_flags(&self) -> u8 {
        match &self.l3 {
            L3::Ipv4(ip) => ip.tcp_flags,
            L3::Ipv6(ip) => ip.tcp_flags,
            _ => 0,
        }
    }

    /// The ethertype.
    pub fn ethertype(&self) -> u16 {
        match self.l3 {
            L3::Arp(_) => 0x0806,
            L3::Ipv4(_) => 0x0800,
            L3::Ipv6(_) => 0x86dd,
            L3::Other(t) => t,
        }
    }

    /// A hash of the flow's addresses and ports, for ECMP: stable for one
    /// flow, spread across flows.
    pub fn flow_hash(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        if let Some(ip) = self.ip() {
            (ip.src, ip.dst, ip.proto, ip.ports).hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// What identifies the datagram a fragment belongs to, as a device sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// IP protocol / transport next header.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 identification or IPv6 fragment identification.
    pub id: u32,
}

/// The header fields IPv4 and IPv6 share, as rule conditions read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFields {
    /// IP protocol / IPv6 transport next header.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TCP/UDP ports (first fragments only).
    pub ports: Option<(u16, u16)>,
    /// ICMP or ICMPv6 (type, code).
    pub icmp: Option<(u8, u8)>,
    /// Fragmentation.
    pub fragment: Fragment,
}
