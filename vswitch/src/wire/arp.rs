//! ARP (RFC 826) for Ethernet hardware and IPv4 protocol addresses only.
//!
//! [`ArpPacket::check_len`] rejects every other hardware/protocol
//! combination with [`WireError::UnsupportedHardware`], so all address
//! offsets are fixed and, once the check has passed, no getter panics.

use core::net::Ipv4Addr;

use super::ethernet::mac_at;
use super::field::Field;
use super::{be16, ipv4_at, put16, EtherType, EthernetAddress, WireError};

enum_with_unknown! {
    /// The ARP operation code.
    pub enum ArpOperation(u16) {
        /// Who has `target_ip`?
        Request = 1,
        /// `sender_ip` is at `sender_mac`.
        Reply = 2,
    }
}

mod field {
    use super::Field;

    pub(crate) const HTYPE: Field = 0..2;
    pub(crate) const PTYPE: Field = 2..4;
    pub(crate) const HLEN: usize = 4;
    pub(crate) const PLEN: usize = 5;
    pub(crate) const OPER: Field = 6..8;
    pub(crate) const SHA: Field = 8..14;
    pub(crate) const SPA: Field = 14..18;
    pub(crate) const THA: Field = 18..24;
    pub(crate) const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const HEADER_LEN: usize = field::TPA.end;

/// Hardware type for Ethernet.
const HTYPE_ETHERNET: u16 = 1;

/// A zero-copy view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure this is Ethernet/IPv4 ARP and that all 28 bytes are present.
    ///
    /// Trailing bytes (Ethernet padding) are allowed and ignored.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < field::OPER.start {
            return Err(WireError::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != u16::from(EtherType::Ipv4)
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(WireError::UnsupportedHardware);
        }
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 for Ethernet).
    pub fn hardware_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::HTYPE])
    }

    /// Protocol type (0x0800 for IPv4).
    pub fn protocol_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PTYPE])
    }

    /// Hardware address length (6).
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (4).
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation code.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(be16(&self.buffer.as_ref()[field::OPER]))
    }

    /// Sender hardware address.
    pub fn sender_hardware_addr(&self) -> EthernetAddress {
        mac_at(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender protocol address.
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        ipv4_at(&self.buffer.as_ref()[field::SPA])
    }

    /// Target hardware address.
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        mac_at(&self.buffer.as_ref()[field::THA])
    }

    /// Target protocol address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        ipv4_at(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Write the fixed Ethernet/IPv4 hardware type, protocol type and lengths.
    pub fn set_ethernet_ipv4(&mut self) {
        let data = self.buffer.as_mut();
        put16(&mut data[field::HTYPE], HTYPE_ETHERNET);
        put16(&mut data[field::PTYPE], EtherType::Ipv4.into());
        data[field::HLEN] = 6;
        data[field::PLEN] = 4;
    }

    /// Set the operation code.
    pub fn set_operation(&mut self, op: ArpOperation) {
        put16(&mut self.buffer.as_mut()[field::OPER], op.into());
    }

    /// Set the sender hardware address.
    pub fn set_sender_hardware_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    /// Set the sender protocol address.
    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Set the target hardware address.
    pub fn set_target_hardware_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    /// Set the target protocol address.
    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }
}

/// A decoded Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request or reply (never `Unknown` when produced by `parse`).
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sender_mac: EthernetAddress,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in a request).
    pub target_mac: EthernetAddress,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Decode a packet; anything but a request or reply is [`WireError::BadOperation`].
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr, WireError> {
        packet.check_len()?;
        let operation = packet.operation();
        if !matches!(operation, ArpOperation::Request | ArpOperation::Reply) {
            return Err(WireError::BadOperation);
        }
        Ok(ArpRepr {
            operation,
            sender_mac: packet.sender_hardware_addr(),
            sender_ip: packet.sender_protocol_addr(),
            target_mac: packet.target_hardware_addr(),
            target_ip: packet.target_protocol_addr(),
        })
    }

    /// Number of bytes [`emit`](Self::emit) writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the packet into the start of `buf`; returns its length (28).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let bytes = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut packet = ArpPacket::new_unchecked(bytes);
        packet.set_ethernet_ipv4();
        packet.set_operation(self.operation);
        packet.set_sender_hardware_addr(self.sender_mac);
        packet.set_sender_protocol_addr(self.sender_ip);
        packet.set_target_hardware_addr(self.target_mac);
        packet.set_target_protocol_addr(self.target_ip);
        Ok(HEADER_LEN)
    }

    /// The reply answering this request with `our_mac`, or `None` if this is not a request.
    pub fn reply(&self, our_mac: EthernetAddress) -> Option<ArpRepr> {
        (self.operation == ArpOperation::Request).then_some(ArpRepr {
            operation: ArpOperation::Reply,
            sender_mac: our_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples;
    use super::*;

    const HOST_A: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const HOST_B: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

    fn arp_bytes() -> &'static [u8] {
        &samples::ARP_REQUEST[14..]
    }

    fn request() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: HOST_A,
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: EthernetAddress::ZERO,
            target_ip: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn deconstruct() {
        let packet = ArpPacket::new_checked(arp_bytes()).unwrap();
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), 0x0800);
        assert_eq!(packet.hardware_len(), 6);
        assert_eq!(packet.protocol_len(), 4);
        assert_eq!(packet.operation(), ArpOperation::Request);
        assert_eq!(packet.sender_hardware_addr(), HOST_A);
        assert_eq!(packet.sender_protocol_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(packet.target_hardware_addr(), EthernetAddress::ZERO);
        assert_eq!(packet.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn parse_and_emit_round_trip() {
        let packet = ArpPacket::new_checked(arp_bytes()).unwrap();
        let repr = ArpRepr::parse(&packet).unwrap();
        assert_eq!(repr, request());
        let mut out = [0u8; HEADER_LEN];
        assert_eq!(repr.emit(&mut out).unwrap(), repr.buffer_len());
        assert_eq!(&out[..], &arp_bytes()[..HEADER_LEN]);
        let reply = repr.reply(HOST_B).unwrap();
        reply.emit(&mut out).unwrap();
        let parsed = ArpRepr::parse(&ArpPacket::new_checked(&out[..]).unwrap()).unwrap();
        assert_eq!(parsed, reply);
        assert_eq!(parsed.operation, ArpOperation::Reply);
        assert_eq!(parsed.sender_mac, HOST_B);
        assert_eq!(parsed.sender_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(parsed.target_mac, HOST_A);
        assert_eq!(parsed.reply(HOST_B), None);
    }

    #[test]
    fn emit_into_small_buffer_fails() {
        let mut out = [0u8; HEADER_LEN - 1];
        assert_eq!(request().emit(&mut out), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                ArpPacket::new_checked(&arp_bytes()[..len]).unwrap_err(),
                WireError::Truncated,
                "len {len}"
            );
        }
    }

    #[test]
    fn unsupported_hardware() {
        for (index, value) in [(1, 6), (3, 0xdd), (4, 8), (5, 16)] {
            let mut bytes = [0u8; HEADER_LEN];
            bytes.copy_from_slice(&arp_bytes()[..HEADER_LEN]);
            bytes[index] = value;
            assert_eq!(
                ArpPacket::new_checked(&bytes[..]).unwrap_err(),
                WireError::UnsupportedHardware
            );
            // Even when truncated right after the fixed fields.
            assert_eq!(
                ArpPacket::new_checked(&bytes[..8]).unwrap_err(),
                WireError::UnsupportedHardware
            );
        }
    }

    #[test]
    fn bad_operation() {
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(&arp_bytes()[..HEADER_LEN]);
        bytes[7] = 3; // RARP request
        let packet = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.operation(), ArpOperation::Unknown(3));
        assert_eq!(ArpRepr::parse(&packet), Err(WireError::BadOperation));
        // An unchecked view is re-checked by parse.
        let short = ArpPacket::new_unchecked(&bytes[..10]);
        assert_eq!(ArpRepr::parse(&short), Err(WireError::Truncated));
        assert_eq!(ArpPacket::new_unchecked(&bytes[..]).into_inner().len(), 28);
    }
}
