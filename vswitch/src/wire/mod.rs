//! Zero-copy, allocation-free views over the wire formats Plexus switches.
//!
//! Every protocol has a typed view (`EthernetFrame`, `ArpPacket`,
//! `Ipv4Packet`, `Icmpv4Packet`, `UdpPacket`, `TcpPacket`, `VxlanPacket`)
//! wrapping any `T: AsRef<[u8]>`: a borrowed slice, a `Vec<u8>`, an array.
//! The views never copy; getters read straight from the buffer and setters
//! (available when `T: AsMut<[u8]>` as well) write straight into it.
//! Where a higher-level value is useful there is also a small `Copy` "repr"
//! (`EthernetRepr`, `ArpRepr`, `Ipv4Repr`, `UdpRepr`, `VxlanRepr`) with
//! `parse` and `emit`.
//!
//! Each view offers three constructors:
//!
//! * `new_unchecked` wraps the buffer without looking at it;
//! * `check_len` validates that every field the accessors read is inside the
//!   buffer (and that the length/version fields are self-consistent);
//! * `new_checked` is `new_unchecked` followed by `check_len`.
//!
//! # Panic freedom
//!
//! Once `check_len` has succeeded, **no getter of that view panics**, whatever
//! the bytes are. Accessors on a view made with `new_unchecked` whose check
//! was skipped or failed may panic on out-of-range indexing. Setters that
//! change a length field (header length, total length, ...) can make the
//! buffer inconsistent again; re-run `check_len` after such edits before
//! trusting variable-length getters. Everything that takes untrusted bytes
//! end to end ([`parse_frame`], [`decap_vxlan`], the `parse` of every repr,
//! the ICMP builders) is total: malformed, truncated or oversize input
//! yields a [`WireError`], never a panic. Emitters never panic either: a
//! destination buffer that is too small yields [`WireError::BufferTooSmall`].
//!
//! Nothing in this module allocates.
#![warn(missing_docs)]

use core::fmt;
use core::net::Ipv4Addr;

/// Declare a `Copy` enum over a numeric wire field with an `Unknown` fallback.
///
/// `From` converts both ways. A known value always maps to its named
/// variant, so `Unknown(v)` never holds a value that has a name.
macro_rules! enum_with_unknown {
    (
        $(#[$enum_attr:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$variant_attr:meta])* $variant:ident = $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$enum_attr])*
        #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Clone, Copy)]
        pub enum $name {
            $( $(#[$variant_attr])* $variant, )+
            /// A value that has no named variant.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

mod arp;
pub mod checksum;
mod ethernet;
mod frame;
mod icmpv4;
mod icmpv6;
mod ipv4;
mod ipv6;
mod nat;
mod nat6;
pub mod sctp;
mod tcp;
mod udp;
mod vxlan;

#[cfg(test)]
mod robustness;
#[cfg(test)]
mod samples;

pub use arp::{ArpOperation, ArpPacket, ArpRepr, HEADER_LEN as ARP_HEADER_LEN};
pub use ethernet::{
    emit_ethernet, EtherType, EthernetAddress, EthernetFrame, EthernetRepr,
    HEADER_LEN as ETHERNET_HEADER_LEN, VLAN_HEADER_LEN as ETHERNET_VLAN_HEADER_LEN,
};
pub use frame::{
    decap_vxlan, parse_frame, FrameSummary, Ipv4Summary, Ipv6Summary, L3Summary, L4Summary,
    ParsedFrame, MAX_FRAME_LEN,
};
pub use icmpv4::{
    emit_echo_reply, emit_error, icmp_error_allowed, IcmpErrorKind, Icmpv4DstUnreachable,
    Icmpv4Message, Icmpv4Packet, Icmpv4TimeExceeded, HEADER_LEN as ICMPV4_HEADER_LEN,
};
pub use icmpv6::{parse_nd, Icmpv6Message, Icmpv6Packet, NdRepr, HEADER_LEN as ICMPV6_HEADER_LEN};
pub use ipv4::{
    IpProtocol, Ipv4Packet, Ipv4Repr, DEFAULT_TTL, HEADER_LEN as IPV4_HEADER_LEN,
    MAX_HEADER_LEN as IPV4_MAX_HEADER_LEN,
};
pub use ipv6::{
    link_local_from_mac, next_header as ipv6_next_header, upper_layer, Ipv6Fragment, Ipv6Packet,
    UpperLayer, HEADER_LEN as IPV6_HEADER_LEN, MAX_EXTENSION_HEADERS,
};
pub use nat::{nat_icmp_error, nat_ipv4, NatRewrite};
pub use nat6::nat_ipv6;
pub use tcp::{TcpFlags, TcpPacket, HEADER_LEN as TCP_HEADER_LEN};
pub use udp::{UdpPacket, UdpRepr, HEADER_LEN as UDP_HEADER_LEN};
pub use vxlan::{Vni, VxlanPacket, VxlanRepr, HEADER_LEN as VXLAN_HEADER_LEN, VXLAN_PORT};

/// Why a buffer could not be parsed or a packet could not be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before a header or a length field says it should.
    Truncated,
    /// The frame is larger than any valid frame ([`MAX_FRAME_LEN`]).
    Oversize,
    /// The IP version field is not 4.
    BadVersion,
    /// A header-length field is smaller than the fixed header.
    BadHeaderLength,
    /// A length field is inconsistent with the header it describes.
    BadLength,
    /// ARP for something other than Ethernet/IPv4.
    UnsupportedHardware,
    /// An ARP operation other than request or reply.
    BadOperation,
    /// A checksum did not verify.
    BadChecksum,
    /// A VXLAN header without the I (valid VNI) flag.
    MissingVxlanFlag,
    /// The destination buffer of an emitter is too small.
    BufferTooSmall,
    /// The operation needs an unfragmented IPv4 datagram.
    Fragmented,
    /// The packet is not of the kind the operation expects.
    UnexpectedMessage,
    /// RFC 1122 forbids an ICMP error about this packet.
    IcmpErrorSuppressed,
    /// An address cannot be used here (e.g. a broadcast or multicast source).
    BadAddress,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            WireError::Truncated => "truncated packet",
            WireError::Oversize => "oversize frame",
            WireError::BadVersion => "bad IP version",
            WireError::BadHeaderLength => "bad header length",
            WireError::BadLength => "inconsistent length field",
            WireError::UnsupportedHardware => "ARP is not Ethernet/IPv4",
            WireError::BadOperation => "unknown ARP operation",
            WireError::BadChecksum => "bad checksum",
            WireError::MissingVxlanFlag => "VXLAN header without the I flag",
            WireError::BufferTooSmall => "destination buffer too small",
            WireError::Fragmented => "fragmented datagram",
            WireError::UnexpectedMessage => "unexpected message type",
            WireError::IcmpErrorSuppressed => "ICMP error not allowed for this packet",
            WireError::BadAddress => "address not allowed here",
        };
        f.write_str(text)
    }
}

impl std::error::Error for WireError {}

/// Byte ranges used by the per-protocol `field` modules.
mod field {
    /// A fixed byte range inside a header.
    pub(crate) type Field = core::ops::Range<usize>;
    /// Everything from an offset to the end of the buffer.
    pub(crate) type Rest = core::ops::RangeFrom<usize>;
}

/// Read a big-endian `u16` from the first two bytes of `b`.
#[inline]
pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Read a big-endian `u32` from the first four bytes of `b`.
#[inline]
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Write a big-endian `u16` into the first two bytes of `b`.
#[inline]
pub(crate) fn put16(b: &mut [u8], value: u16) {
    b[..2].copy_from_slice(&value.to_be_bytes());
}

/// Write a big-endian `u32` into the first four bytes of `b`.
#[inline]
pub(crate) fn put32(b: &mut [u8], value: u32) {
    b[..4].copy_from_slice(&value.to_be_bytes());
}

/// Read an IPv4 address from the first four bytes of `b`.
#[inline]
pub(crate) fn ipv4_at(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_is_human_readable() {
        let all = [
            WireError::Truncated,
            WireError::Oversize,
            WireError::BadVersion,
            WireError::BadHeaderLength,
            WireError::BadLength,
            WireError::UnsupportedHardware,
            WireError::BadOperation,
            WireError::BadChecksum,
            WireError::MissingVxlanFlag,
            WireError::BufferTooSmall,
            WireError::Fragmented,
            WireError::UnexpectedMessage,
            WireError::IcmpErrorSuppressed,
            WireError::BadAddress,
        ];
        for (i, a) in all.iter().enumerate() {
            let text = a.to_string();
            assert!(!text.is_empty());
            for b in &all[i + 1..] {
                assert_ne!(text, b.to_string());
            }
        }
        let boxed: Box<dyn std::error::Error> = Box::new(WireError::Truncated);
        assert_eq!(boxed.to_string(), "truncated packet");
    }

    #[test]
    fn enum_with_unknown_round_trips() {
        for v in 0..=u8::MAX {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::from(47), IpProtocol::Unknown(47));
        assert_eq!(u16::from(EtherType::Vlan), 0x8100);
    }

    #[test]
    fn byte_helpers() {
        let mut b = [0u8; 4];
        put16(&mut b, 0xbeef);
        assert_eq!(be16(&b), 0xbeef);
        put32(&mut b, 0x0a000001);
        assert_eq!(be32(&b), 0x0a000001);
        assert_eq!(ipv4_at(&b), Ipv4Addr::new(10, 0, 0, 1));
    }
}
