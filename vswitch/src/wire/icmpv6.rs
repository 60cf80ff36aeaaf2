//! ICMPv6 (RFC 4443) messages and the Neighbor Discovery (RFC 4861) fields
//! port security checks.
//!
//! [`Icmpv6Packet::check_len`] validates the 8-byte header; afterwards no
//! getter panics. [`parse_nd`] reads the target address and the link-layer
//! address option of NDP messages and is total.

use core::net::Ipv6Addr;

use super::field::Field;
use super::{be16, EthernetAddress, WireError};

enum_with_unknown! {
    /// The ICMPv6 message type.
    pub enum Icmpv6Message(u8) {
        /// Destination unreachable.
        DstUnreachable = 1,
        /// Packet too big.
        PacketTooBig = 2,
        /// Time exceeded.
        TimeExceeded = 3,
        /// Parameter problem.
        ParamProblem = 4,
        /// Echo request.
        EchoRequest = 128,
        /// Echo reply.
        EchoReply = 129,
        /// Multicast listener query.
        MldQuery = 130,
        /// Multicast listener report (version 1).
        MldReport = 131,
        /// Multicast listener done.
        MldDone = 132,
        /// Router solicitation.
        RouterSolicit = 133,
        /// Router advertisement.
        RouterAdvert = 134,
        /// Neighbor solicitation.
        NeighborSolicit = 135,
        /// Neighbor advertisement.
        NeighborAdvert = 136,
        /// Redirect.
        Redirect = 137,
        /// Multicast listener report (version 2).
        MldV2Report = 143,
    }
}

impl Icmpv6Message {
    /// Whether this is an error message (types 0–127).
    pub fn is_error(&self) -> bool {
        u8::from(*self) < 128
    }

    /// Whether this is a Neighbor Discovery or multicast-listener message:
    /// link-local signalling that connection tracking does not follow.
    pub fn is_link_signalling(&self) -> bool {
        matches!(u8::from(*self), 130..=137 | 143)
    }
}

mod field {
    use super::Field;

    pub(crate) const TYPE: usize = 0;
    pub(crate) const CODE: usize = 1;
    pub(crate) const CHECKSUM: Field = 2..4;
    pub(crate) const ECHO_IDENT: Field = 4..6;
    pub(crate) const ECHO_SEQ: Field = 6..8;
}

/// Length of the ICMPv6 header (type, code, checksum, 4 message bytes).
pub const HEADER_LEN: usize = 8;

/// A zero-copy view of an ICMPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Icmpv6Packet<T> {
        Icmpv6Packet { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Icmpv6Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validate that the 8-byte header is present.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Message type.
    pub fn msg_type(&self) -> Icmpv6Message {
        Icmpv6Message::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Echo identifier (meaningful for echo requests and replies).
    pub fn echo_ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// Echo sequence number (meaningful for echo requests and replies).
    pub fn echo_seq(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_SEQ])
    }

    /// Everything after the 4-byte type/code/checksum prefix.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[4..]
    }

    /// Everything after the 8-byte header (the quoted packet of an error).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// The Neighbor Discovery fields of an NDP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NdRepr {
    /// The target address (solicitations, advertisements and redirects).
    pub target: Option<Ipv6Addr>,
    /// The source link-layer address option (solicitations and router
    /// advertisements) or target link-layer address option
    /// (advertisements and redirects).
    pub link_addr: Option<EthernetAddress>,
}

/// Reads the NDP fields of an ICMPv6 message of type `msg_type` from
/// `message` (the whole ICMPv6 message); `Ok(None)` for a message that is
/// not NDP. Option lengths of zero or past the end are errors.
pub fn parse_nd(msg_type: Icmpv6Message, message: &[u8]) -> Result<Option<NdRepr>, WireError> {
    // (offset of the target, offset of the options, the option carrying the link address)
    let (target_at, options_at, wanted) = match msg_type {
        Icmpv6Message::RouterSolicit => (None, 8, 1),
        Icmpv6Message::RouterAdvert => (None, 16, 1),
        Icmpv6Message::NeighborSolicit => (Some(8), 24, 1),
        Icmpv6Message::NeighborAdvert => (Some(8), 24, 2),
        Icmpv6Message::Redirect => (Some(8), 40, 2),
        _ => return Ok(None),
    };
    if message.len() < options_at {
        return Err(WireError::Truncated);
    }
    let target = target_at.map(|at| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&message[at..at + 16]);
        Ipv6Addr::from(octets)
    });
    let mut link_addr = None;
    let mut rest = &message[options_at..];
    while !rest.is_empty() {
        let (kind, len) = match rest {
            [kind, len, ..] => (*kind, usize::from(*len) * 8),
            _ => return Err(WireError::Truncated),
        };
        if len == 0 {
            return Err(WireError::BadLength);
        }
        let option = rest.get(..len).ok_or(WireError::Truncated)?;
        if kind == wanted {
            if link_addr.is_some() || len != 8 {
                return Err(WireError::BadLength);
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&option[2..8]);
            link_addr = Some(EthernetAddress(mac));
        }
        rest = &rest[len..];
    }
    Ok(Some(NdRepr { target, link_addr }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solicit(options: &[u8]) -> Vec<u8> {
        let mut v = vec![135, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(options);
        v
    }

    #[test]
    fn header_fields() {
        let v = [128, 0, 0xab, 0xcd, 0x12, 0x34, 0, 7];
        let p = Icmpv6Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv6Message::EchoRequest);
        assert_eq!((p.code(), p.checksum()), (0, 0xabcd));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 7));
        assert!(p.data().is_empty());
        assert_eq!(
            Icmpv6Packet::new_checked(&v[..7]).unwrap_err(),
            WireError::Truncated
        );
        assert!(Icmpv6Message::DstUnreachable.is_error());
        assert!(!Icmpv6Message::EchoReply.is_error());
        assert!(Icmpv6Message::NeighborSolicit.is_link_signalling());
        assert!(!Icmpv6Message::EchoRequest.is_link_signalling());
    }

    #[test]
    fn neighbor_solicitation_with_source_link_address() {
        let v = solicit(&[1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let nd = parse_nd(Icmpv6Message::NeighborSolicit, &v)
            .unwrap()
            .unwrap();
        assert_eq!(nd.target, Some("fd00::2".parse().unwrap()));
        assert_eq!(
            nd.link_addr,
            Some(EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        // A DAD probe carries no option.
        let nd = parse_nd(Icmpv6Message::NeighborSolicit, &solicit(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(nd.link_addr, None);
        // Not NDP.
        assert_eq!(parse_nd(Icmpv6Message::EchoRequest, &v), Ok(None));
    }

    #[test]
    fn hostile_options_are_errors() {
        let zero = solicit(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_nd(Icmpv6Message::NeighborSolicit, &zero),
            Err(WireError::BadLength)
        );
        let past_end = solicit(&[1, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_nd(Icmpv6Message::NeighborSolicit, &past_end),
            Err(WireError::Truncated)
        );
        let twice = solicit(&[1, 1, 1, 2, 3, 4, 5, 6, 1, 1, 1, 2, 3, 4, 5, 7]);
        assert_eq!(
            parse_nd(Icmpv6Message::NeighborSolicit, &twice),
            Err(WireError::BadLength)
        );
        let v = solicit(&[1, 1, 1, 2, 3, 4, 5, 6]);
        for n in 0..v.len() {
            let _ = parse_nd(Icmpv6Message::NeighborSolicit, &v[..n]);
        }
    }
}
