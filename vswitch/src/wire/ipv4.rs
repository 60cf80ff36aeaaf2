//! IPv4 (RFC 791) headers, including options.
//!
//! [`Ipv4Packet::check_len`] validates the version, the header length and
//! the total length against the buffer; afterwards no getter panics, and
//! [`payload`](Ipv4Packet::payload) honours `total_len`, so Ethernet padding
//! after the datagram is never treated as payload.

use core::net::Ipv4Addr;

use super::checksum;
use super::field::Field;
use super::{be16, ipv4_at, put16, WireError};

enum_with_unknown! {
    /// The IPv4 protocol field (IPv6's next header).
    pub enum IpProtocol(u8) {
        /// Internet Control Message Protocol.
        Icmp = 1,
        /// Transmission Control Protocol.
        Tcp = 6,
        /// User Datagram Protocol.
        Udp = 17,
        /// Internet Control Message Protocol for IPv6.
        Icmpv6 = 58,
        /// Stream Control Transmission Protocol.
        Sctp = 132,
    }
}

mod field {
    use super::Field;

    pub(crate) const VER_IHL: usize = 0;
    pub(crate) const DSCP_ECN: usize = 1;
    pub(crate) const LENGTH: Field = 2..4;
    pub(crate) const IDENT: Field = 4..6;
    pub(crate) const FLG_OFF: Field = 6..8;
    pub(crate) const TTL: usize = 8;
    pub(crate) const PROTOCOL: usize = 9;
    pub(crate) const TTL_PROTOCOL: Field = TTL..PROTOCOL + 1;
    pub(crate) const CHECKSUM: Field = 10..12;
    pub(crate) const SRC_ADDR: Field = 12..16;
    pub(crate) const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Largest possible IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;
/// TTL used for packets this switch originates.
pub const DEFAULT_TTL: u8 = 64;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validate version 4, IHL >= 5, and `header_len <= total_len <= buffer`.
    ///
    /// The buffer may be longer than `total_len` (link-layer padding).
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(WireError::BadHeaderLength);
        }
        if header_len > len {
            return Err(WireError::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(WireError::BadLength);
        }
        if total_len > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (4 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in 32-bit words (IHL).
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// Differentiated services code point.
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits.
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length of the datagram (header plus payload).
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    fn flags_offset(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field value times 8).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) << 3
    }

    /// Whether this datagram is a fragment (MF set or non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        ipv4_at(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        ipv4_at(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// Whether the header checksum (over the whole header, options included) is valid.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The options between the fixed header and the payload.
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload, up to `total_len` (padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set the version field.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Set the header length in bytes (rounded down to 32-bit words).
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Set the DSCP field.
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Set the ECN field.
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (ecn & 0x03);
    }

    /// Set the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        put16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Set the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        put16(&mut self.buffer.as_mut()[field::IDENT], ident);
    }

    fn set_flags_offset(&mut self, value: u16) {
        put16(&mut self.buffer.as_mut()[field::FLG_OFF], value);
    }

    /// Set or clear the don't-fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        let raw = self.flags_offset() & !FLAG_DF;
        self.set_flags_offset(if value { raw | FLAG_DF } else { raw });
    }

    /// Set or clear the more-fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        let raw = self.flags_offset() & !FLAG_MF;
        self.set_flags_offset(if value { raw | FLAG_MF } else { raw });
    }

    /// Set the fragment offset in bytes (must be a multiple of 8).
    pub fn set_frag_offset(&mut self, offset: u16) {
        let raw = self.flags_offset() & !OFFSET_MASK;
        self.set_flags_offset(raw | (offset >> 3));
    }

    /// Set the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Set the protocol field.
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.into();
    }

    /// Set the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(value);
    }

    /// Decrement the TTL, updating the checksum incrementally (RFC 1624).
    ///
    /// Returns the new TTL, or `None` (and changes nothing) if it was already 0.
    /// A router drops the packet and sends Time Exceeded when the TTL it
    /// received was 0 or 1.
    pub fn decrement_ttl(&mut self) -> Option<u8> {
        let data = self.buffer.as_ref();
        let old = be16(&data[field::TTL_PROTOCOL]);
        let ttl = data[field::TTL].checked_sub(1)?;
        let new = old - 0x0100;
        let hc = checksum::update(self.checksum(), old, new);
        self.set_ttl(ttl);
        self.set_checksum(hc);
        Some(ttl)
    }

    /// Replace the source address, updating the header checksum incrementally.
    ///
    /// L4 checksums cover the address too; see `UdpPacket::rewrite_addr` and
    /// `TcpPacket::rewrite_addr`.
    pub fn rewrite_src_addr(&mut self, addr: Ipv4Addr) {
        let hc = checksum::update_addr(self.checksum(), self.src_addr(), addr);
        self.set_src_addr(addr);
        self.set_checksum(hc);
    }

    /// Replace the destination address, updating the header checksum incrementally.
    pub fn rewrite_dst_addr(&mut self, addr: Ipv4Addr) {
        let hc = checksum::update_addr(self.checksum(), self.dst_addr(), addr);
        self.set_dst_addr(addr);
        self.set_checksum(hc);
    }

    /// Mutable access to the payload, up to `total_len`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// The fields of an unfragmented IPv4 datagram without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Time to live.
    pub ttl: u8,
    /// Identification field.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Decode a datagram, verifying its checksum and rejecting fragments (options are dropped).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        if packet.is_fragment() {
            return Err(WireError::Fragmented);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
        })
    }

    /// Total datagram length this repr describes (`20 + payload_len`).
    pub fn total_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len)
    }

    /// Write a 20-byte header (with checksum) for a payload the caller puts at `buf[20..]`.
    ///
    /// Returns the total datagram length. Fails with [`WireError::BadLength`]
    /// if the datagram would exceed 65535 bytes, or
    /// [`WireError::BufferTooSmall`] if `buf` cannot hold all of it.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let total = self.total_len();
        let total_u16 = u16::try_from(total).map_err(|_| WireError::BadLength)?;
        let header = buf.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
        let mut packet = Ipv4Packet::new_unchecked(header);
        packet.buffer[..HEADER_LEN].fill(0);
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_total_len(total_u16);
        packet.set_ident(self.ident);
        packet.set_dont_frag(self.dont_frag);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples;
    use super::*;

    fn icmp_ip() -> &'static [u8] {
        &samples::ICMP_ECHO[14..]
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn deconstruct() {
        let p = Ipv4Packet::new_checked(icmp_ip()).unwrap();
        assert_eq!((p.version(), p.ihl(), p.header_len()), (4, 5, 20));
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 60);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Icmp);
        assert_eq!(p.checksum(), 0x0a79);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.options(), &[] as &[u8]);
        assert_eq!(p.payload(), &icmp_ip()[20..]);
        let tcp = Ipv4Packet::new_checked(&samples::TCP_SYN[14..]).unwrap();
        assert_eq!((tcp.protocol(), tcp.checksum()), (IpProtocol::Tcp, 0x843f));
        assert!(tcp.verify_checksum());
        let udp = Ipv4Packet::new_checked(&samples::UDP_DNS_VLAN[18..]).unwrap();
        assert_eq!((udp.protocol(), udp.checksum()), (IpProtocol::Udp, 0xa420));
        assert!(!udp.dont_frag() && udp.verify_checksum());
    }

    #[test]
    fn payload_ignores_padding() {
        let mut padded = [0u8; 80];
        padded[..60].copy_from_slice(icmp_ip());
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 40);
    }

    #[test]
    fn construct_with_setters_and_options() {
        let mut bytes = [0u8; 28];
        let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
        p.set_version(4);
        p.set_header_len(24);
        p.set_dscp(46);
        p.set_ecn(1);
        p.set_total_len(28);
        p.set_ident(7);
        p.set_more_frags(true);
        p.set_dont_frag(true);
        p.set_dont_frag(false);
        p.set_frag_offset(1480);
        p.set_ttl(1);
        p.set_protocol(IpProtocol::Udp);
        p.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 51, 100, 2));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&[9, 9, 9, 9]);
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.header_len(), p.dscp(), p.ecn()), (24, 46, 1));
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!(p.options(), &[0, 0, 0, 0]);
        assert_eq!(p.payload(), &[9, 9, 9, 9]);
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::Fragmented));
        assert_eq!(p.into_inner().len(), 28);
    }

    #[test]
    fn repr_round_trip() {
        let p = Ipv4Packet::new_checked(icmp_ip()).unwrap();
        let repr = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(repr.payload_len, 40);
        assert_eq!(repr.total_len(), 60);
        let mut out = [0u8; 60];
        out[20..].copy_from_slice(p.payload());
        assert_eq!(repr.emit(&mut out), Ok(60));
        assert_eq!(&out[..], icmp_ip());
        assert_eq!(repr.emit(&mut out[..59]), Err(WireError::BufferTooSmall));
        let huge = Ipv4Repr {
            payload_len: 65516,
            ..repr
        };
        assert_eq!(huge.emit(&mut out), Err(WireError::BadLength));
    }

    #[test]
    fn error_paths() {
        for len in 0..20 {
            assert_eq!(
                Ipv4Packet::new_checked(&icmp_ip()[..len]).unwrap_err(),
                WireError::Truncated
            );
        }
        // total_len (60) larger than the buffer.
        assert_eq!(
            Ipv4Packet::new_checked(&icmp_ip()[..59]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = [0u8; 60];
        b.copy_from_slice(icmp_ip());
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadVersion
        );
        b[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadHeaderLength
        );
        b[0] = 0x4f; // 60-byte header fits in the buffer, but total_len...
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadLength
        );
        assert_eq!(
            Ipv4Packet::new_checked(&b[..40]).unwrap_err(),
            WireError::Truncated
        );
        b.copy_from_slice(icmp_ip());
        b[10] ^= 1;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadChecksum));
        let unchecked = Ipv4Packet::new_unchecked(&b[..10]);
        assert_eq!(Ipv4Repr::parse(&unchecked), Err(WireError::Truncated));
    }

    #[test]
    fn decrement_ttl_matches_full_recompute() {
        let mut state = 0xdead_beef_cafe_f00d;
        for round in 0..20_000 {
            let mut b = [0u8; 60];
            for x in b.iter_mut() {
                *x = xorshift(&mut state) as u8;
            }
            let header_len = 20 + 4 * (round % 11);
            b[0] = 0x40 | (header_len / 4) as u8;
            b[2..4].copy_from_slice(&60u16.to_be_bytes());
            if round % 7 == 0 {
                b[8] = 1 + (round % 2) as u8; // TTL 1 and 2 edge cases
            }
            let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            p.fill_checksum();
            let old_ttl = p.ttl();
            let result = p.decrement_ttl();
            let incremental = p.checksum();
            if old_ttl == 0 {
                assert_eq!(result, None);
                continue;
            }
            assert_eq!(result, Some(old_ttl - 1));
            assert_eq!(p.ttl(), old_ttl - 1);
            assert!(p.verify_checksum());
            p.fill_checksum();
            assert_eq!(incremental, p.checksum(), "round {round}");
        }
    }

    #[test]
    fn decrement_ttl_zero_is_noop() {
        let mut b = [0u8; 60];
        b.copy_from_slice(icmp_ip());
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_ttl(0);
        p.fill_checksum();
        let before = p.checksum();
        assert_eq!(p.decrement_ttl(), None);
        assert_eq!((p.ttl(), p.checksum()), (0, before));
    }

    #[test]
    fn address_rewrite_matches_full_recompute() {
        let mut state = 0x0123_4567_89ab_cdef;
        for _ in 0..5_000 {
            let mut b = [0u8; 60];
            b.copy_from_slice(icmp_ip());
            let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            let src = Ipv4Addr::from(xorshift(&mut state) as u32);
            let dst = Ipv4Addr::from(xorshift(&mut state) as u32);
            p.rewrite_src_addr(src);
            p.rewrite_dst_addr(dst);
            let incremental = p.checksum();
            assert_eq!((p.src_addr(), p.dst_addr()), (src, dst));
            p.fill_checksum();
            assert_eq!(incremental, p.checksum());
        }
    }
}
