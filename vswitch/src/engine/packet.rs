//! The fields of a frame the engine decides on, decoded once per device hop.

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use super::Rewrite;
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
    /// Whether the header checksum verified.
    pub checksum_valid: bool,
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
                L3::Ipv4(Ipv4Info {
                    src: ip.src_addr,
                    dst: ip.dst_addr,
                    proto: u8::from(ip.protocol),
                    ttl: ip.ttl,
                    icmp,
                    ports: parsed.ports(),
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
        }
        self
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
