//! TCP (RFC 9293) segment headers over IPv4.
//!
//! A [`TcpPacket`] wraps exactly one segment (the IPv4 payload), since TCP
//! has no length field of its own and its checksum covers the whole
//! segment. [`TcpPacket::check_len`] validates the data offset against the
//! buffer; afterwards no getter panics.

use core::fmt;
use core::net::Ipv4Addr;
use core::ops::{BitOr, BitOrAssign};

use super::field::Field;
use super::{be16, be32, checksum, put16, put32, IpProtocol, WireError};

/// The nine TCP control bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TcpFlags(u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x001);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x002);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x004);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x008);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x010);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x020);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x040);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x080);
    /// ECN nonce (historic).
    pub const NS: TcpFlags = TcpFlags(0x100);
    /// No flags.
    pub const NONE: TcpFlags = TcpFlags(0);

    /// Build from raw bits; bits outside the nine flags are dropped.
    pub const fn from_bits(bits: u16) -> TcpFlags {
        TcpFlags(bits & 0x01ff)
    }

    /// The raw bits.
    pub const fn bits(&self) -> u16 {
        self.0
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(&self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 9] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"];
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

mod field {
    use super::Field;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const SEQ_NUM: Field = 4..8;
    pub(crate) const ACK_NUM: Field = 8..12;
    pub(crate) const OFF_FLAGS: Field = 12..14;
    pub(crate) const WINDOW: Field = 14..16;
    pub(crate) const CHECKSUM: Field = 16..18;
    pub(crate) const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// A zero-copy view of a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure `20 <= data offset * 4 <= buffer length`.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(WireError::BadHeaderLength);
        }
        if header_len > len {
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

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// Header length in bytes (data offset times 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS.start] >> 4) * 4
    }

    /// Control flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits(be16(&self.buffer.as_ref()[field::OFF_FLAGS]))
    }

    /// Receive window.
    pub fn window_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WINDOW])
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }

    fn pseudo_header(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
        let len = u32::try_from(self.buffer.as_ref().len()).unwrap_or(u32::MAX);
        checksum::pseudo_header(src, dst, IpProtocol::Tcp, len)
    }

    /// Whether the checksum over pseudo-header and whole segment is valid.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = checksum::sum(self.buffer.as_ref());
        checksum::combine(self.pseudo_header(src, dst), data) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The options between the fixed header and the payload.
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The segment payload (everything after the header).
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Set the source port.
    pub fn set_src_port(&mut self, port: u16) {
        put16(&mut self.buffer.as_mut()[field::SRC_PORT], port);
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        put16(&mut self.buffer.as_mut()[field::DST_PORT], port);
    }

    /// Set the sequence number.
    pub fn set_seq_number(&mut self, seq: u32) {
        put32(&mut self.buffer.as_mut()[field::SEQ_NUM], seq);
    }

    /// Set the acknowledgment number.
    pub fn set_ack_number(&mut self, ack: u32) {
        put32(&mut self.buffer.as_mut()[field::ACK_NUM], ack);
    }

    /// Set the header length in bytes (rounded down to 32-bit words).
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::OFF_FLAGS.start];
        *b = (*b & 0x0f) | (((len / 4) as u8) << 4);
    }

    /// Set the control flags, keeping the data offset.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        let raw = be16(&self.buffer.as_ref()[field::OFF_FLAGS]) & !0x01ff;
        put16(
            &mut self.buffer.as_mut()[field::OFF_FLAGS],
            raw | flags.bits(),
        );
    }

    /// Set the receive window.
    pub fn set_window_len(&mut self, window: u16) {
        put16(&mut self.buffer.as_mut()[field::WINDOW], window);
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Set the urgent pointer.
    pub fn set_urgent_at(&mut self, at: u16) {
        put16(&mut self.buffer.as_mut()[field::URGENT], at);
    }

    /// Compute the checksum over the pseudo-header and the whole segment.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let data = checksum::sum(self.buffer.as_ref());
        let value = !checksum::combine(self.pseudo_header(src, dst), data);
        self.set_checksum(value);
    }

    /// Replace the source port, updating the checksum incrementally (for NAT).
    pub fn rewrite_src_port(&mut self, port: u16) {
        let hc = checksum::update(self.checksum(), self.src_port(), port);
        self.set_src_port(port);
        self.set_checksum(hc);
    }

    /// Replace the destination port, updating the checksum incrementally (for NAT).
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let hc = checksum::update(self.checksum(), self.dst_port(), port);
        self.set_dst_port(port);
        self.set_checksum(hc);
    }

    /// Account in the checksum for an IP address change in the pseudo-header.
    ///
    /// Call it alongside `Ipv4Packet::rewrite_src_addr`/`rewrite_dst_addr`.
    pub fn rewrite_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let hc = checksum::update_addr(self.checksum(), old, new);
        self.set_checksum(hc);
    }

    /// Mutable access to the payload.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples;
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    fn syn() -> &'static [u8] {
        &samples::TCP_SYN[34..]
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn deconstruct_syn() {
        let tcp = TcpPacket::new_checked(syn()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (54321, 80));
        assert_eq!((tcp.seq_number(), tcp.ack_number()), (0x1234_5678, 0));
        assert_eq!(tcp.header_len(), 40);
        assert_eq!(tcp.flags(), TcpFlags::SYN);
        assert!(!tcp.flags().contains(TcpFlags::ACK));
        assert_eq!(tcp.window_len(), 64240);
        assert_eq!(tcp.checksum(), 0xe1fb);
        assert_eq!(tcp.urgent_at(), 0);
        assert!(tcp.verify_checksum(SRC, DST));
        assert!(!tcp.verify_checksum(DST, DST));
        assert_eq!(&tcp.options()[..4], &[0x02, 0x04, 0x05, 0xb4]); // MSS 1460
        assert_eq!(tcp.options().len(), 20);
        assert!(tcp.payload().is_empty());
    }

    #[test]
    fn construct_matches_sample() {
        let mut b = [0u8; 40];
        b[20..].copy_from_slice(&syn()[20..]);
        let mut tcp = TcpPacket::new_unchecked(&mut b[..]);
        tcp.set_src_port(54321);
        tcp.set_dst_port(80);
        tcp.set_seq_number(0x1234_5678);
        tcp.set_ack_number(0);
        tcp.set_header_len(40);
        tcp.set_flags(TcpFlags::SYN | TcpFlags::ACK);
        tcp.set_flags(TcpFlags::SYN);
        tcp.set_window_len(64240);
        tcp.set_urgent_at(0);
        tcp.fill_checksum(SRC, DST);
        assert_eq!(tcp.header_len(), 40);
        assert_eq!(&tcp.into_inner()[..], syn());
    }

    #[test]
    fn payload_follows_options() {
        let mut b = [0u8; 44];
        b[..40].copy_from_slice(syn());
        let mut tcp = TcpPacket::new_checked(&mut b[..]).unwrap();
        tcp.payload_mut().copy_from_slice(b"GET ");
        tcp.fill_checksum(SRC, DST);
        let tcp = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(tcp.payload(), b"GET ");
        assert!(tcp.verify_checksum(SRC, DST));
    }

    #[test]
    fn error_paths() {
        for len in 0..20 {
            assert_eq!(
                TcpPacket::new_checked(&syn()[..len]).unwrap_err(),
                WireError::Truncated
            );
        }
        // Data offset 10 (40 bytes) but only 39 bytes present.
        assert_eq!(
            TcpPacket::new_checked(&syn()[..39]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = [0u8; 40];
        b.copy_from_slice(syn());
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::BadHeaderLength
        );
        b[12] = 0xf0;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn nat_rewrites_match_full_recompute() {
        let mut state = 0x0f0f_f0f0_1357_2468;
        for _ in 0..5_000 {
            let mut b = [0u8; 40];
            b.copy_from_slice(syn());
            let mut tcp = TcpPacket::new_checked(&mut b[..]).unwrap();
            let new_src = Ipv4Addr::from(xorshift(&mut state) as u32);
            let new_dst = Ipv4Addr::from(xorshift(&mut state) as u32);
            tcp.rewrite_src_port(xorshift(&mut state) as u16);
            tcp.rewrite_dst_port(xorshift(&mut state) as u16);
            tcp.rewrite_addr(SRC, new_src);
            tcp.rewrite_addr(DST, new_dst);
            assert!(tcp.verify_checksum(new_src, new_dst));
            let incremental = tcp.checksum();
            tcp.fill_checksum(new_src, new_dst);
            assert_eq!(incremental, tcp.checksum());
        }
    }

    #[test]
    fn flags_operations() {
        let mut f = TcpFlags::SYN | TcpFlags::ACK;
        assert!(f.contains(TcpFlags::SYN) && f.contains(TcpFlags::ACK));
        assert!(!f.contains(TcpFlags::FIN));
        f |= TcpFlags::FIN;
        assert_eq!(f.bits(), 0x013);
        assert_eq!(f.to_string(), "FIN|SYN|ACK");
        assert_eq!(TcpFlags::NONE.to_string(), "-");
        assert_eq!(TcpFlags::from_bits(0xffff).bits(), 0x01ff);
        assert_eq!(
            TcpFlags::from_bits(0x01ff).to_string(),
            "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR|NS"
        );
        assert_eq!(TcpFlags::default(), TcpFlags::NONE);
    }
}
