//! ICMPv4 (RFC 792) headers and allocation-free reply/error builders.
//!
//! An [`Icmpv4Packet`] must wrap exactly the ICMP message (the IPv4
//! payload), because the checksum covers all of it. After
//! [`Icmpv4Packet::check_len`] (8 bytes present) no getter panics.
//!
//! [`emit_echo_reply`] and [`emit_error`] write a complete IPv4 datagram
//! into a caller-provided buffer and return its length; they validate their
//! untrusted input and never panic.

use core::net::Ipv4Addr;

use super::field::{Field, Rest};
use super::{be16, be32, checksum, put16, put32, WireError};
use super::{IpProtocol, Ipv4Packet, Ipv4Repr, DEFAULT_TTL, IPV4_HEADER_LEN};

enum_with_unknown! {
    /// The ICMPv4 message type.
    pub enum Icmpv4Message(u8) {
        /// Echo reply.
        EchoReply = 0,
        /// Destination unreachable.
        DstUnreachable = 3,
        /// Redirect.
        Redirect = 5,
        /// Echo request.
        EchoRequest = 8,
        /// Time exceeded.
        TimeExceeded = 11,
        /// Parameter problem.
        ParamProblem = 12,
    }
}

impl Icmpv4Message {
    /// Whether this is an error message (types 3, 4, 5, 11, 12), about which no error may be sent.
    pub fn is_error(&self) -> bool {
        matches!(u8::from(*self), 3 | 4 | 5 | 11 | 12)
    }
}

enum_with_unknown! {
    /// Codes of the destination-unreachable message.
    pub enum Icmpv4DstUnreachable(u8) {
        /// Network unreachable.
        NetUnreachable = 0,
        /// Host unreachable.
        HostUnreachable = 1,
        /// Protocol unreachable.
        ProtoUnreachable = 2,
        /// Port unreachable.
        PortUnreachable = 3,
        /// Fragmentation needed and DF set (next-hop MTU in bytes 6..8).
        FragRequired = 4,
        /// Communication administratively prohibited.
        AdminProhibited = 13,
    }
}

enum_with_unknown! {
    /// Codes of the time-exceeded message.
    pub enum Icmpv4TimeExceeded(u8) {
        /// TTL reached zero in transit.
        TtlExpired = 0,
        /// Fragment reassembly time exceeded.
        FragReassembly = 1,
    }
}

mod field {
    use super::{Field, Rest};

    pub(crate) const TYPE: usize = 0;
    pub(crate) const CODE: usize = 1;
    pub(crate) const CHECKSUM: Field = 2..4;
    pub(crate) const REST: Field = 4..8;
    pub(crate) const ECHO_IDENT: Field = 4..6;
    pub(crate) const ECHO_SEQNO: Field = 6..8;
    pub(crate) const NEXT_HOP_MTU: Field = 6..8;
    pub(crate) const DATA: Rest = REST.end..;
}

/// Length of the ICMPv4 header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::DATA.start;

/// Bytes of the offending datagram's payload quoted in an error (RFC 792).
const QUOTED_PAYLOAD: usize = 8;

/// A zero-copy view of an ICMPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure the 8-byte header is present.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> Icmpv4Message {
        Icmpv4Message::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Echo identifier (bytes 4..6).
    pub fn echo_ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// Echo sequence number (bytes 6..8).
    pub fn echo_seq_no(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_SEQNO])
    }

    /// Next-hop MTU of a fragmentation-needed message (bytes 6..8).
    pub fn next_hop_mtu(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// The whole "rest of header" word (bytes 4..8).
    pub fn rest_of_header(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::REST])
    }

    /// Whether the checksum over the whole message is valid.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv4Packet<&'a T> {
    /// The data after the 8-byte header (echo payload, or the quoted datagram).
    pub fn data(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Set the message type.
    pub fn set_msg_type(&mut self, msg: Icmpv4Message) {
        self.buffer.as_mut()[field::TYPE] = msg.into();
    }

    /// Set the message code.
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Set the echo identifier.
    pub fn set_echo_ident(&mut self, ident: u16) {
        put16(&mut self.buffer.as_mut()[field::ECHO_IDENT], ident);
    }

    /// Set the echo sequence number.
    pub fn set_echo_seq_no(&mut self, seq: u16) {
        put16(&mut self.buffer.as_mut()[field::ECHO_SEQNO], seq);
    }

    /// Set the next-hop MTU (fragmentation needed).
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        put16(&mut self.buffer.as_mut()[field::NEXT_HOP_MTU], mtu);
    }

    /// Set the whole "rest of header" word.
    pub fn set_rest_of_header(&mut self, value: u32) {
        put32(&mut self.buffer.as_mut()[field::REST], value);
    }

    /// Recompute the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(value);
    }

    /// Mutable access to the data after the header.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }
}

/// The ICMP errors a switch/router originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpErrorKind {
    /// Destination unreachable, code 0.
    NetUnreachable,
    /// Destination unreachable, code 1.
    HostUnreachable,
    /// Destination unreachable, code 2.
    ProtocolUnreachable,
    /// Destination unreachable, code 3.
    PortUnreachable,
    /// Destination unreachable, code 4, carrying the next-hop MTU.
    FragmentationNeeded {
        /// MTU of the link the datagram did not fit.
        next_hop_mtu: u16,
    },
    /// Destination unreachable, code 13.
    AdminProhibited,
    /// Time exceeded, code 0 (TTL expired in transit).
    TtlExceeded,
}

impl IcmpErrorKind {
    /// ICMP type and code of this error.
    pub fn type_code(&self) -> (Icmpv4Message, u8) {
        use Icmpv4DstUnreachable as D;
        let unreachable = |code: D| (Icmpv4Message::DstUnreachable, u8::from(code));
        match self {
            IcmpErrorKind::NetUnreachable => unreachable(D::NetUnreachable),
            IcmpErrorKind::HostUnreachable => unreachable(D::HostUnreachable),
            IcmpErrorKind::ProtocolUnreachable => unreachable(D::ProtoUnreachable),
            IcmpErrorKind::PortUnreachable => unreachable(D::PortUnreachable),
            IcmpErrorKind::FragmentationNeeded { .. } => unreachable(D::FragRequired),
            IcmpErrorKind::AdminProhibited => unreachable(D::AdminProhibited),
            IcmpErrorKind::TtlExceeded => (
                Icmpv4Message::TimeExceeded,
                Icmpv4TimeExceeded::TtlExpired.into(),
            ),
        }
    }

    /// The "rest of header" word: the next-hop MTU for fragmentation needed, else 0.
    pub fn rest_of_header(&self) -> u32 {
        match self {
            IcmpErrorKind::FragmentationNeeded { next_hop_mtu } => u32::from(*next_hop_mtu),
            _ => 0,
        }
    }
}

/// Whether `addr` may appear as the source of a datagram (a unique host address).
fn is_host_addr(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast())
}

/// Whether RFC 1122 §3.2.2 / RFC 1812 §4.3.2.7 allow an ICMP error about this datagram.
///
/// Not allowed for: ICMP error messages (or ICMP too short to tell), non-first
/// fragments, datagrams to broadcast or multicast, and datagrams whose source
/// is not a unique host (unspecified, broadcast, multicast, loopback).
pub fn icmp_error_allowed(offending: &Ipv4Packet<&[u8]>) -> bool {
    if offending.check_len().is_err() || offending.frag_offset() != 0 {
        return false;
    }
    let dst = offending.dst_addr();
    if dst.is_broadcast() || dst.is_multicast() {
        return false;
    }
    let src = offending.src_addr();
    if !is_host_addr(src) || src.is_loopback() {
        return false;
    }
    if offending.protocol() == IpProtocol::Icmp {
        return match offending.payload().first() {
            Some(&t) => !Icmpv4Message::from(t).is_error(),
            None => false,
        };
    }
    true
}

/// Build the ICMP error `kind` about `offending` (an IPv4 datagram) into `buf`.
///
/// Writes IPv4 (TTL 64, from `our_src` to the offender's source) + ICMP
/// carrying the offending header (with options) and the first 8 bytes of
/// its payload, both checksums filled in. Returns the datagram length.
///
/// Errors: the offending datagram is malformed (any [`Ipv4Packet`] check
/// error), [`WireError::IcmpErrorSuppressed`] (see [`icmp_error_allowed`]),
/// [`WireError::BadAddress`] if `our_src` is not a host address, or
/// [`WireError::BufferTooSmall`].
pub fn emit_error(
    kind: IcmpErrorKind,
    offending: &[u8],
    our_src: Ipv4Addr,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let packet = Ipv4Packet::new_checked(offending)?;
    if !icmp_error_allowed(&packet) {
        return Err(WireError::IcmpErrorSuppressed);
    }
    if !is_host_addr(our_src) {
        return Err(WireError::BadAddress);
    }
    let quote_len = packet.header_len() + packet.payload().len().min(QUOTED_PAYLOAD);
    let quote = offending.get(..quote_len).ok_or(WireError::Truncated)?;
    let repr = Ipv4Repr {
        src_addr: our_src,
        dst_addr: packet.src_addr(),
        protocol: IpProtocol::Icmp,
        ttl: DEFAULT_TTL,
        ident: 0,
        dont_frag: false,
        payload_len: HEADER_LEN + quote_len,
    };
    let total = repr.emit(buf)?;
    let icmp_buf = buf
        .get_mut(IPV4_HEADER_LEN..total)
        .ok_or(WireError::BufferTooSmall)?;
    let mut icmp = Icmpv4Packet::new_checked(icmp_buf)?;
    let (msg, code) = kind.type_code();
    icmp.set_msg_type(msg);
    icmp.set_code(code);
    icmp.set_rest_of_header(kind.rest_of_header());
    icmp.data_mut().copy_from_slice(quote);
    icmp.fill_checksum();
    Ok(total)
}

/// Build the echo reply to `request` (an IPv4 datagram carrying an echo request) into `buf`.
///
/// Addresses are swapped, identifier, sequence number and data are kept,
/// IP options are dropped, TTL is 64, and both checksums are recomputed.
/// Returns the datagram length.
///
/// Errors: malformed IPv4/ICMP ([`Ipv4Packet`]/[`Icmpv4Packet`] check
/// errors), [`WireError::BadChecksum`] for either checksum,
/// [`WireError::Fragmented`], [`WireError::UnexpectedMessage`] if this is
/// not an ICMP echo request, [`WireError::BadAddress`] if either address is
/// not a unique host (no replies to broadcast pings), or
/// [`WireError::BufferTooSmall`].
pub fn emit_echo_reply(request: &[u8], buf: &mut [u8]) -> Result<usize, WireError> {
    let ip = Ipv4Packet::new_checked(request)?;
    if !ip.verify_checksum() {
        return Err(WireError::BadChecksum);
    }
    if ip.is_fragment() {
        return Err(WireError::Fragmented);
    }
    if ip.protocol() != IpProtocol::Icmp {
        return Err(WireError::UnexpectedMessage);
    }
    let message = ip.payload();
    let icmp = Icmpv4Packet::new_checked(message)?;
    if icmp.msg_type() != Icmpv4Message::EchoRequest {
        return Err(WireError::UnexpectedMessage);
    }
    if !icmp.verify_checksum() {
        return Err(WireError::BadChecksum);
    }
    if !is_host_addr(ip.src_addr()) || !is_host_addr(ip.dst_addr()) {
        return Err(WireError::BadAddress);
    }
    let repr = Ipv4Repr {
        src_addr: ip.dst_addr(),
        dst_addr: ip.src_addr(),
        protocol: IpProtocol::Icmp,
        ttl: DEFAULT_TTL,
        ident: ip.ident(),
        dont_frag: false,
        payload_len: message.len(),
    };
    let total = repr.emit(buf)?;
    let icmp_buf = buf
        .get_mut(IPV4_HEADER_LEN..total)
        .ok_or(WireError::BufferTooSmall)?;
    icmp_buf.copy_from_slice(message);
    let mut reply = Icmpv4Packet::new_checked(icmp_buf)?;
    reply.set_msg_type(Icmpv4Message::EchoReply);
    reply.set_code(0);
    reply.fill_checksum();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::super::samples;
    use super::*;

    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

    fn echo_ip() -> &'static [u8] {
        &samples::ICMP_ECHO[14..]
    }

    /// Known-answer vector: TTL exceeded about samples::TCP_SYN from 192.168.1.1.
    static TTL_EXCEEDED: [u8; 56] = [
        0x45, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x40, 0x01, 0xf7, 0x69, 0xc0, 0xa8, 0x01,
        0x01, 0xc0, 0xa8, 0x01, 0x0a, 0x0b, 0x00, 0xb7, 0xd1, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00,
        0x00, 0x3c, 0xbe, 0xef, 0x40, 0x00, 0x40, 0x06, 0x84, 0x3f, 0xc0, 0xa8, 0x01, 0x0a, 0x5d,
        0xb8, 0xd8, 0x22, 0xd4, 0x31, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78,
    ];

    #[test]
    fn deconstruct_echo() {
        let ip = Ipv4Packet::new_checked(echo_ip()).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Icmpv4Message::EchoRequest);
        assert_eq!(icmp.code(), 0);
        assert_eq!(icmp.checksum(), 0x3b27);
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.echo_ident(), 0x1234);
        assert_eq!(icmp.echo_seq_no(), 1);
        assert_eq!(icmp.rest_of_header(), 0x1234_0001);
        assert_eq!(icmp.data(), b"abcdefghijklmnopqrstuvwabcdefghi");
    }

    #[test]
    fn construct_with_setters() {
        let mut bytes = [0u8; 12];
        let mut icmp = Icmpv4Packet::new_checked(&mut bytes[..]).unwrap();
        icmp.set_msg_type(Icmpv4Message::DstUnreachable);
        icmp.set_code(Icmpv4DstUnreachable::FragRequired.into());
        icmp.set_next_hop_mtu(1400);
        icmp.data_mut().copy_from_slice(&[1, 2, 3, 4]);
        icmp.fill_checksum();
        assert!(icmp.verify_checksum());
        icmp.set_echo_ident(9);
        icmp.set_echo_seq_no(10);
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (9, 10));
        assert_eq!(icmp.next_hop_mtu(), 10);
        icmp.set_checksum(0);
        assert!(!icmp.verify_checksum());
        assert_eq!(icmp.into_inner()[8..], [1, 2, 3, 4]);
    }

    #[test]
    fn echo_reply_known_answer() {
        let mut buf = [0u8; 128];
        let n = emit_echo_reply(echo_ip(), &mut buf).unwrap();
        assert_eq!(n, 60);
        let ip = Ipv4Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!((ip.ttl(), ip.ident(), ip.checksum()), (64, 0x1c46, 0x4a79));
        assert!(ip.verify_checksum());
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Icmpv4Message::EchoReply);
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 1));
        assert_eq!(icmp.checksum(), 0x4327);
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.data(), &echo_ip()[28..]);
        assert_eq!(
            emit_echo_reply(echo_ip(), &mut buf[..59]),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn echo_reply_rejections() {
        let reply_to = |edit: &dyn Fn(&mut [u8; 60]), fix_ip_checksum: bool| {
            let mut b = [0u8; 60];
            b.copy_from_slice(echo_ip());
            edit(&mut b);
            if fix_ip_checksum {
                Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
            }
            emit_echo_reply(&b, &mut [0u8; 128])
        };
        assert_eq!(
            emit_echo_reply(&echo_ip()[..30], &mut [0u8; 128]),
            Err(WireError::Truncated)
        );
        type Edit = &'static dyn Fn(&mut [u8; 60]);
        let cases: [(Edit, bool, WireError); 9] = [
            (&|b| b[11] ^= 1, false, WireError::BadChecksum),
            (&|b| b[6] = 0x60, true, WireError::Fragmented),
            (&|b| b[9] = 17, true, WireError::UnexpectedMessage),
            (&|b| b[20] = 0, true, WireError::UnexpectedMessage),
            (&|b| b[22] ^= 1, true, WireError::BadChecksum),
            (&|b| b[16..20].fill(255), true, WireError::BadAddress),
            (&|b| b[16] = 224, true, WireError::BadAddress),
            (&|b| b[12..16].fill(0), true, WireError::BadAddress),
            (
                &|b| b[2..4].copy_from_slice(&24u16.to_be_bytes()),
                true,
                WireError::Truncated,
            ),
        ];
        for (i, (edit, fix, expected)) in cases.into_iter().enumerate() {
            assert_eq!(reply_to(edit, fix), Err(expected), "case {i}");
        }
        assert!(reply_to(&|_| {}, false).is_ok());
    }

    #[test]
    fn ttl_exceeded_known_answer() {
        let mut buf = [0u8; 128];
        let n = emit_error(
            IcmpErrorKind::TtlExceeded,
            &samples::TCP_SYN[14..],
            ROUTER,
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..n], &TTL_EXCEEDED[..]);
    }

    #[test]
    fn frag_needed_carries_mtu() {
        let mut buf = [0u8; 128];
        let kind = IcmpErrorKind::FragmentationNeeded { next_hop_mtu: 1400 };
        let n = emit_error(kind, &samples::UDP_DNS_VLAN[18..], ROUTER, &mut buf).unwrap();
        assert_eq!(n, 56);
        let ip = Ipv4Packet::new_checked(&buf[..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.checksum(), 0xf769);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Icmpv4Message::DstUnreachable);
        assert_eq!(icmp.code(), 4);
        assert_eq!(icmp.next_hop_mtu(), 1400);
        assert_eq!(icmp.checksum(), 0x44b8);
        assert_eq!(icmp.data(), &samples::UDP_DNS_VLAN[18..18 + 28]);
    }

    #[test]
    fn every_error_kind_type_code() {
        let cases = [
            (IcmpErrorKind::NetUnreachable, 3, 0),
            (IcmpErrorKind::HostUnreachable, 3, 1),
            (IcmpErrorKind::ProtocolUnreachable, 3, 2),
            (IcmpErrorKind::PortUnreachable, 3, 3),
            (IcmpErrorKind::FragmentationNeeded { next_hop_mtu: 1 }, 3, 4),
            (IcmpErrorKind::AdminProhibited, 3, 13),
            (IcmpErrorKind::TtlExceeded, 11, 0),
        ];
        let mut buf = [0u8; 128];
        for (kind, t, c) in cases {
            let n = emit_error(kind, echo_ip(), ROUTER, &mut buf).unwrap();
            let ip = Ipv4Packet::new_checked(&buf[..n]).unwrap();
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            assert_eq!((u8::from(icmp.msg_type()), icmp.code()), (t, c));
            assert!(icmp.verify_checksum() && ip.verify_checksum());
            assert_eq!(icmp.data().len(), 28);
        }
    }

    #[test]
    fn short_payload_quotes_what_exists() {
        // A 24-byte datagram: header plus 4 payload bytes.
        let mut b = [0u8; 24];
        b[..20].copy_from_slice(&samples::TCP_SYN[14..34]);
        b[2..4].copy_from_slice(&24u16.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let mut buf = [0u8; 64];
        let n = emit_error(IcmpErrorKind::HostUnreachable, &b, ROUTER, &mut buf).unwrap();
        assert_eq!(n, 20 + 8 + 24);
        assert_eq!(
            emit_error(IcmpErrorKind::HostUnreachable, &b, ROUTER, &mut buf[..51]),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn error_suppression_rules() {
        let mut buf = [0u8; 128];
        let kind = IcmpErrorKind::HostUnreachable;
        let try_with = |edit: &dyn Fn(&mut [u8; 60])| {
            let mut b = [0u8; 60];
            b.copy_from_slice(echo_ip());
            edit(&mut b);
            Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
            emit_error(kind, &b, ROUTER, &mut [0u8; 128])
        };
        assert!(try_with(&|_| {}).is_ok());
        let suppressed = [
            try_with(&|b| b[7] = 1),            // non-first fragment
            try_with(&|b| b[16..20].fill(255)), // broadcast dst
            try_with(&|b| b[16] = 239),         // multicast dst
            try_with(&|b| b[12..16].fill(0)),   // unspecified src
            try_with(&|b| b[12] = 127),         // loopback src
            try_with(&|b| b[12] = 224),         // multicast src
            try_with(&|b| b[20] = 11),          // ICMP time exceeded
            try_with(&|b| b[20] = 3),           // ICMP unreachable
        ];
        for (i, r) in suppressed.iter().enumerate() {
            assert_eq!(*r, Err(WireError::IcmpErrorSuppressed), "case {i}");
        }
        // ICMP with no payload at all cannot be classified: suppressed.
        assert_eq!(
            try_with(&|b| b[2..4].copy_from_slice(&20u16.to_be_bytes())),
            Err(WireError::IcmpErrorSuppressed)
        );
        // First fragment (MF, offset 0) is fine.
        assert!(try_with(&|b| b[6] = 0x20).is_ok());
        assert_eq!(
            emit_error(kind, echo_ip(), Ipv4Addr::BROADCAST, &mut buf),
            Err(WireError::BadAddress)
        );
        assert_eq!(
            emit_error(kind, &echo_ip()[..19], ROUTER, &mut buf),
            Err(WireError::Truncated)
        );
        assert!(!icmp_error_allowed(&Ipv4Packet::new_unchecked(
            &[0u8; 4][..]
        )));
    }

    #[test]
    fn message_classification() {
        assert!(Icmpv4Message::DstUnreachable.is_error());
        assert!(Icmpv4Message::Unknown(4).is_error());
        assert!(Icmpv4Message::Redirect.is_error());
        assert!(Icmpv4Message::ParamProblem.is_error());
        assert!(!Icmpv4Message::EchoRequest.is_error());
        assert!(!Icmpv4Message::Unknown(13).is_error());
        assert_eq!(u8::from(Icmpv4TimeExceeded::FragReassembly), 1);
        assert_eq!(
            Icmpv4DstUnreachable::from(13),
            Icmpv4DstUnreachable::AdminProhibited
        );
    }
}
