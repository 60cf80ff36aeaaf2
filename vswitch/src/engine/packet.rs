//! The fields of a frame the engine decides on, decoded once per device hop.

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use super::Rewrite;
use crate::conntrack::{tcp, ConnKey};
use crate::snapshot::Mac;
use crate::wire::{self, ArpOperation, Icmpv4Message, L3Summary, L4Summary, WireError};

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
    /// Whether the header checksum verified.
    pub checksum_valid: bool,
}

impl Ipv4Info {
    /// The connection-tracking key, for packets that can be tracked
    /// (not ICMP errors, which are tracked through the datagram they quote,
    /// and not later fragments, which carry no ports).
    pub fn conn_key(&self) -> Option<ConnKey> {
        if self.fragment == Fragment::Later {
            return None;
        }
        let (sport, dport) = match (self.proto, self.ports, self.icmp_ident, self.icmp) {
            (_, Some(ports), _, _) => ports,
            (1, _, Some(ident), _) => (ident, ident),
            (1, _, _, Some((IcmpKind::Error, _))) => return None,
            (6 | 17, None, _, _) => return None,
            _ => (0, 0),
        };
        Some(ConnKey {
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            sport,
            dport,
        })
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
        src: addr(12),
        dst: addr(16),
        sport,
        dport,
    })
}

/// The network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3 {
    /// ARP.
    Arp(ArpInfo),
    /// IPv4.
    Ipv4(Ipv4Info),
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
                    L4Summary::Tcp { flags, .. } => (
                        None,
                        (flags.bits() as u8) & (tcp::FIN | tcp::SYN | tcp::RST),
                    ),
                    _ => (None, 0),
                };
                let icmp_quoted = match icmp {
                    Some((IcmpKind::Error, _)) => frame
                        .get(usize::from(ip.l4_offset) + wire::ICMPV4_HEADER_LEN..)
                        .and_then(quoted_key),
                    _ => None,
                };
                let fragment = match (ip.frag_offset, ip.more_frags) {
                    (0, false) => Fragment::None,
                    (0, true) => Fragment::First,
                    _ => Fragment::Later,
                };
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
                    checksum_valid: ip.checksum_valid,
                })
            }
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
        if let L3::Ipv4(ip) = &mut self.l3 {
            ip.ttl = ip.ttl.saturating_sub(rewrite.ttl_decrement);
            if let Some(src) = rewrite.ip_src {
                ip.src = src;
            }
            if let Some(dst) = rewrite.ip_dst {
                ip.dst = dst;
            }
            if let Some((sport, dport)) = &mut ip.ports {
                *sport = rewrite.src_port.unwrap_or(*sport);
                *dport = rewrite.dst_port.unwrap_or(*dport);
            }
            if let Some(ident) = &mut ip.icmp_ident {
                *ident = rewrite.src_port.or(rewrite.dst_port).unwrap_or(*ident);
            }
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

    /// The ethertype.
    pub fn ethertype(&self) -> u16 {
        match self.l3 {
            L3::Arp(_) => 0x0806,
            L3::Ipv4(_) => 0x0800,
            L3::Other(t) => t,
        }
    }

    /// A hash of the flow's addresses and ports, for ECMP: stable for one
    /// flow, spread across flows.
    pub fn flow_hash(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        if let L3::Ipv4(ip) = &self.l3 {
            (ip.src, ip.dst, ip.proto, ip.ports).hash(&mut hasher);
        }
        hasher.finish()
    }
}
