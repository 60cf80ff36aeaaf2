//! UDP (RFC 768) datagrams over IPv4.
//!
//! [`UdpPacket::check_len`] validates the length field (`8 <= len <= buffer`);
//! afterwards no getter panics and [`payload`](UdpPacket::payload) honours
//! the length field. Checksums use the IPv4 pseudo-header; a zero checksum
//! means "not computed" and is accepted by [`verify_checksum`](UdpPacket::verify_checksum).

use core::net::Ipv4Addr;

use super::field::Field;
use super::{be16, checksum, put16, IpProtocol, WireError};

mod field {
    use super::Field;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A zero-copy view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure the header is present and `8 <= length field <= buffer length`.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if field_len > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// Length field (header plus payload).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Checksum field (0 means none was computed).
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Whether the checksum is valid for these IPv4 addresses (true if it is 0).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::Udp, u32::from(len));
        checksum::combine(pseudo, checksum::sum(data)) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload, up to the length field.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Set the source port.
    pub fn set_src_port(&mut self, port: u16) {
        put16(&mut self.buffer.as_mut()[field::SRC_PORT], port);
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        put16(&mut self.buffer.as_mut()[field::DST_PORT], port);
    }

    /// Set the length field.
    pub fn set_len(&mut self, len: u16) {
        put16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Compute the checksum over the pseudo-header, header and payload.
    ///
    /// A computed value of 0 is sent as `0xffff` (RFC 768).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::Udp, u32::from(len));
        let value = !checksum::combine(pseudo, checksum::sum(data));
        self.set_checksum(if value == 0 { 0xffff } else { value });
    }

    /// Apply an incremental checksum update, leaving a zero ("none") checksum alone.
    fn adjust_checksum(&mut self, update: impl FnOnce(u16) -> u16) {
        let hc = self.checksum();
        if hc != 0 {
            let new = update(hc);
            self.set_checksum(if new == 0 { 0xffff } else { new });
        }
    }

    /// Replace the source port, updating the checksum incrementally (for NAT).
    pub fn rewrite_src_port(&mut self, port: u16) {
        let old = self.src_port();
        self.set_src_port(port);
        self.adjust_checksum(|hc| checksum::update(hc, old, port));
    }

    /// Replace the destination port, updating the checksum incrementally (for NAT).
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        self.set_dst_port(port);
        self.adjust_checksum(|hc| checksum::update(hc, old, port));
    }

    /// Account in the checksum for an IP address change in the pseudo-header.
    ///
    /// Call it alongside `Ipv4Packet::rewrite_src_addr`/`rewrite_dst_addr`.
    pub fn rewrite_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        self.adjust_checksum(|hc| checksum::update_addr(hc, old, new));
    }

    /// Mutable access to the payload, up to the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The port pair of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Decode a datagram, verifying its checksum (unless it is 0).
    pub fn parse<T: AsRef<[u8]>>(
        packet: &UdpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<UdpRepr, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum);
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    fn emit_header(&self, payload_len: usize, buf: &mut [u8]) -> Result<usize, WireError> {
        let total = HEADER_LEN.saturating_add(payload_len);
        let len = u16::try_from(total).map_err(|_| WireError::BadLength)?;
        let bytes = buf.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
        let mut packet = UdpPacket::new_unchecked(bytes);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        Ok(total)
    }

    /// Write the header for the `payload_len` bytes already at `buf[8..]`, with checksum.
    ///
    /// Returns the datagram length; [`WireError::BadLength`] above 65535
    /// bytes, [`WireError::BufferTooSmall`] if `buf` is shorter than that.
    pub fn emit(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload_len: usize,
        buf: &mut [u8],
    ) -> Result<usize, WireError> {
        let total = self.emit_header(payload_len, buf)?;
        if let Some(bytes) = buf.get_mut(..total) {
            UdpPacket::new_unchecked(bytes).fill_checksum(src, dst);
        }
        Ok(total)
    }

    /// Like [`emit`](Self::emit) but leaves the checksum 0 (as VXLAN senders usually do).
    pub fn emit_without_checksum(
        &self,
        payload_len: usize,
        buf: &mut [u8],
    ) -> Result<usize, WireError> {
        self.emit_header(payload_len, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples;
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    fn dns() -> &'static [u8] {
        &samples::UDP_DNS_VLAN[38..]
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn deconstruct_dns_query() {
        let udp = UdpPacket::new_checked(dns()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (53000, 53));
        assert_eq!(udp.len(), 37);
        assert_eq!(udp.checksum(), 0xe368);
        assert!(udp.verify_checksum(SRC, DST));
        assert!(!udp.verify_checksum(SRC, Ipv4Addr::new(8, 8, 4, 4)));
        assert_eq!(&udp.payload()[..2], &[0xab, 0xcd]);
        assert_eq!(udp.payload().len(), 29);
    }

    #[test]
    fn repr_round_trip() {
        let udp = UdpPacket::new_checked(dns()).unwrap();
        let repr = UdpRepr::parse(&udp, SRC, DST).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 53000,
                dst_port: 53
            }
        );
        let mut out = [0u8; 37];
        out[8..].copy_from_slice(udp.payload());
        assert_eq!(repr.emit(SRC, DST, 29, &mut out), Ok(37));
        assert_eq!(&out[..], dns());
        assert_eq!(repr.emit_without_checksum(29, &mut out), Ok(37));
        assert_eq!(UdpPacket::new_checked(&out[..]).unwrap().checksum(), 0);
        assert_eq!(
            repr.emit(SRC, DST, 30, &mut out),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(
            repr.emit(SRC, DST, 65528, &mut out),
            Err(WireError::BadLength)
        );
    }

    #[test]
    fn zero_checksum_is_accepted_and_zero_result_is_sent_as_ffff() {
        let mut b = [0u8; 37];
        b.copy_from_slice(dns());
        b[6..8].fill(0);
        let udp = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(udp.verify_checksum(SRC, Ipv4Addr::new(1, 1, 1, 1)));
        // With a zero payload the checksum is !S; a payload word equal to it
        // makes the sum 0xffff, i.e. a computed checksum of 0.
        let mut b = [0, 1, 0, 2, 0, 10, 0, 0, 0, 0];
        let mut q = UdpPacket::new_checked(&mut b[..]).unwrap();
        q.fill_checksum(SRC, DST);
        let word = q.checksum();
        q.payload_mut().copy_from_slice(&word.to_be_bytes());
        q.fill_checksum(SRC, DST);
        assert_eq!(q.checksum(), 0xffff);
        assert!(q.verify_checksum(SRC, DST));
    }

    #[test]
    fn error_paths() {
        for len in 0..8 {
            assert_eq!(
                UdpPacket::new_checked(&dns()[..len]).unwrap_err(),
                WireError::Truncated
            );
        }
        assert_eq!(
            UdpPacket::new_checked(&dns()[..36]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = [0u8; 37];
        b.copy_from_slice(dns());
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::BadLength
        );
        b.copy_from_slice(dns());
        b[20] ^= 0x40;
        let udp = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(UdpRepr::parse(&udp, SRC, DST), Err(WireError::BadChecksum));
        let short = UdpPacket::new_unchecked(&b[..4]);
        assert_eq!(UdpRepr::parse(&short, SRC, DST), Err(WireError::Truncated));
        assert_eq!(UdpPacket::new_unchecked(&b[..]).into_inner().len(), 37);
    }

    #[test]
    fn nat_rewrites_match_full_recompute() {
        let mut state = 0x5555_aaaa_1234_9876;
        for _ in 0..5_000 {
            let mut b = [0u8; 37];
            b.copy_from_slice(dns());
            let mut udp = UdpPacket::new_checked(&mut b[..]).unwrap();
            let new_src = Ipv4Addr::from(xorshift(&mut state) as u32);
            let new_dst = Ipv4Addr::from(xorshift(&mut state) as u32);
            udp.rewrite_src_port(xorshift(&mut state) as u16);
            udp.rewrite_dst_port(xorshift(&mut state) as u16);
            udp.rewrite_addr(SRC, new_src);
            udp.rewrite_addr(DST, new_dst);
            assert!(udp.verify_checksum(new_src, new_dst));
            let incremental = udp.checksum();
            udp.fill_checksum(new_src, new_dst);
            assert_eq!(incremental, udp.checksum());
        }
    }

    #[test]
    fn nat_rewrite_keeps_absent_checksum() {
        let mut b = [0u8; 37];
        b.copy_from_slice(dns());
        let mut udp = UdpPacket::new_checked(&mut b[..]).unwrap();
        udp.set_checksum(0);
        udp.rewrite_src_port(1);
        udp.rewrite_addr(SRC, DST);
        assert_eq!((udp.src_port(), udp.checksum()), (1, 0));
    }
}
