//! Ethernet II frames, with at most one 802.1Q VLAN tag.
//!
//! After [`EthernetFrame::check_len`] succeeds no getter panics: the check
//! covers the 14-byte header and, when the outer EtherType is 802.1Q, the
//! 4-byte tag that follows it.

use core::fmt;

use super::field::{Field, Rest};
use super::{be16, put16, WireError};

enum_with_unknown! {
    /// The EtherType field (values below 0x0600 are 802.3 lengths and stay `Unknown`).
    pub enum EtherType(u16) {
        /// Internet Protocol version 4.
        Ipv4 = 0x0800,
        /// Address Resolution Protocol.
        Arp = 0x0806,
        /// IEEE 802.1Q VLAN tag.
        Vlan = 0x8100,
        /// Internet Protocol version 6.
        Ipv6 = 0x86DD,
    }
}

/// A 48-bit IEEE 802 MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);
    /// The all-zero address (used as "unknown" in ARP requests).
    pub const ZERO: EthernetAddress = EthernetAddress([0; 6]);

    /// Build an address from a slice, or `None` unless it is exactly 6 bytes.
    pub fn from_bytes(data: &[u8]) -> Option<EthernetAddress> {
        let bytes: [u8; 6] = data.try_into().ok()?;
        Some(EthernetAddress(bytes))
    }

    /// The six octets of the address.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit is set (broadcast is multicast too).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (non-group) address.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether the locally-administered bit is set.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Read a MAC address from the first six bytes of `b`.
#[inline]
pub(crate) fn mac_at(b: &[u8]) -> EthernetAddress {
    let mut octets = [0u8; 6];
    octets.copy_from_slice(&b[..6]);
    EthernetAddress(octets)
}

mod field {
    use super::{Field, Rest};

    pub(crate) const DESTINATION: Field = 0..6;
    pub(crate) const SOURCE: Field = 6..12;
    pub(crate) const ETHERTYPE: Field = 12..14;
    pub(crate) const PAYLOAD: Rest = ETHERTYPE.end..;
    pub(crate) const VLAN_TCI: Field = 14..16;
    pub(crate) const VLAN_ETHERTYPE: Field = 16..18;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Length of an Ethernet header carrying one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = field::VLAN_ETHERTYPE.end;

/// A zero-copy view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Ensure the header (and the VLAN tag, if announced) fits in the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || (self.is_vlan_tagged() && len < VLAN_HEADER_LEN) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> EthernetAddress {
        mac_at(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> EthernetAddress {
        mac_at(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType at bytes 12..14 (the TPID when the frame is tagged).
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType::from(be16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// Whether the frame carries an 802.1Q tag.
    ///
    /// Usable before `check_len`: it returns `false` on a buffer too short to tell.
    pub fn is_vlan_tagged(&self) -> bool {
        self.buffer
            .as_ref()
            .get(field::ETHERTYPE)
            .is_some_and(|b| be16(b) == u16::from(EtherType::Vlan))
    }

    /// The full 16-bit tag control information (PCP, DEI, VID), if tagged.
    pub fn vlan_tci(&self) -> Option<u16> {
        if self.is_vlan_tagged() {
            Some(be16(&self.buffer.as_ref()[field::VLAN_TCI]))
        } else {
            None
        }
    }

    /// The 12-bit VLAN identifier, if tagged.
    pub fn vlan(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    /// The 3-bit priority code point, if tagged.
    pub fn vlan_pcp(&self) -> Option<u8> {
        self.vlan_tci().map(|tci| (tci >> 13) as u8)
    }

    /// The EtherType describing the payload (the inner one when tagged).
    pub fn ethertype(&self) -> EtherType {
        if self.is_vlan_tagged() {
            EtherType::from(be16(&self.buffer.as_ref()[field::VLAN_ETHERTYPE]))
        } else {
            self.outer_ethertype()
        }
    }

    /// Offset of the payload: 14, or 18 when tagged.
    pub fn payload_offset(&self) -> usize {
        if self.is_vlan_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// The payload following the header (and tag), including any padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.payload_offset()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Set the source MAC address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Set the EtherType at bytes 12..14 (writing `Vlan` makes the frame tagged).
    pub fn set_outer_ethertype(&mut self, ethertype: EtherType) {
        put16(
            &mut self.buffer.as_mut()[field::ETHERTYPE],
            ethertype.into(),
        );
    }

    /// Set the payload EtherType (the inner one when tagged).
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let at = self.payload_offset() - 2;
        put16(&mut self.buffer.as_mut()[at..], ethertype.into());
    }

    /// Set the tag control information of an already tagged frame; no-op if untagged.
    pub fn set_vlan_tci(&mut self, tci: u16) {
        if self.is_vlan_tagged() {
            put16(&mut self.buffer.as_mut()[field::VLAN_TCI], tci);
        }
    }

    /// Mutable access to the payload.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.payload_offset();
        &mut self.buffer.as_mut()[at..]
    }
}

/// The decoded Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Destination MAC address.
    pub dst_addr: EthernetAddress,
    /// Source MAC address.
    pub src_addr: EthernetAddress,
    /// 802.1Q tag control information, if the frame is tagged.
    pub vlan_tci: Option<u16>,
    /// EtherType of the payload.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Decode the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr, WireError> {
        frame.check_len()?;
        Ok(EthernetRepr {
            dst_addr: frame.dst_addr(),
            src_addr: frame.src_addr(),
            vlan_tci: frame.vlan_tci(),
            ethertype: frame.ethertype(),
        })
    }

    /// Length of the header this repr emits (14 or 18).
    pub fn header_len(&self) -> usize {
        if self.vlan_tci.is_some() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Write the header into the start of `buf`; returns the header length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.header_len();
        let header = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        header[field::DESTINATION].copy_from_slice(&self.dst_addr.0);
        header[field::SOURCE].copy_from_slice(&self.src_addr.0);
        match self.vlan_tci {
            Some(tci) => {
                put16(&mut header[field::ETHERTYPE], EtherType::Vlan.into());
                put16(&mut header[field::VLAN_TCI], tci);
                put16(&mut header[field::VLAN_ETHERTYPE], self.ethertype.into());
            }
            None => put16(&mut header[field::ETHERTYPE], self.ethertype.into()),
        }
        Ok(len)
    }
}

/// Write an untagged 14-byte Ethernet header in front of a payload of
/// `payload_len` bytes that the caller places at `buf[14..]`.
///
/// Returns the total frame length `14 + payload_len`, or
/// [`WireError::BufferTooSmall`] if `buf` cannot hold the whole frame.
pub fn emit_ethernet(
    dst: EthernetAddress,
    src: EthernetAddress,
    ethertype: EtherType,
    payload_len: usize,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let total = HEADER_LEN
        .checked_add(payload_len)
        .ok_or(WireError::BufferTooSmall)?;
    if buf.len() < total {
        return Err(WireError::BufferTooSmall);
    }
    let repr = EthernetRepr {
        dst_addr: dst,
        src_addr: src,
        vlan_tci: None,
        ethertype,
    };
    repr.emit(buf)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::super::samples;
    use super::*;

    const HOST_A: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    #[test]
    fn deconstruct_untagged() {
        let frame = EthernetFrame::new_checked(&samples::ARP_REQUEST[..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(frame.src_addr(), HOST_A);
        assert_eq!(frame.ethertype(), EtherType::Arp);
        assert_eq!(frame.outer_ethertype(), EtherType::Arp);
        assert_eq!(frame.vlan(), None);
        assert_eq!(frame.vlan_pcp(), None);
        assert_eq!(frame.payload_offset(), 14);
        assert_eq!(frame.payload().len(), 46);
    }

    #[test]
    fn deconstruct_tagged() {
        let frame = EthernetFrame::new_checked(&samples::UDP_DNS_VLAN[..]).unwrap();
        assert!(frame.is_vlan_tagged());
        assert_eq!(frame.outer_ethertype(), EtherType::Vlan);
        assert_eq!(frame.vlan_tci(), Some(0xa064));
        assert_eq!(frame.vlan(), Some(100));
        assert_eq!(frame.vlan_pcp(), Some(5));
        assert_eq!(frame.ethertype(), EtherType::Ipv4);
        assert_eq!(frame.payload_offset(), 18);
        assert_eq!(frame.payload()[0], 0x45);
    }

    #[test]
    fn repr_round_trip_untagged_and_tagged() {
        for sample in [&samples::ICMP_ECHO[..], &samples::UDP_DNS_VLAN[..]] {
            let frame = EthernetFrame::new_checked(sample).unwrap();
            let repr = EthernetRepr::parse(&frame).unwrap();
            let mut out = [0u8; 18];
            let n = repr.emit(&mut out).unwrap();
            assert_eq!(n, frame.payload_offset());
            assert_eq!(&out[..n], &sample[..n]);
        }
    }

    #[test]
    fn construct_with_setters() {
        let mut bytes = [0u8; 18 + 4];
        bytes[12] = 0x81; // tagged
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        frame.set_dst_addr(EthernetAddress::BROADCAST);
        frame.set_src_addr(HOST_A);
        frame.set_vlan_tci(0x0064);
        frame.set_ethertype(EtherType::Ipv4);
        frame.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.vlan(), Some(100));
        assert_eq!(frame.ethertype(), EtherType::Ipv4);
        assert_eq!(frame.payload(), &[1, 2, 3, 4]);
        let mut bytes = [0u8; 14];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        frame.set_outer_ethertype(EtherType::Ipv6);
        frame.set_vlan_tci(7); // untagged: ignored
        assert_eq!(frame.ethertype(), EtherType::Ipv6);
        assert_eq!(frame.into_inner()[12..], [0x86, 0xdd]);
    }

    #[test]
    fn emit_ethernet_header() {
        let mut buf = [0u8; 64];
        let n = emit_ethernet(
            EthernetAddress::BROADCAST,
            HOST_A,
            EtherType::Arp,
            46,
            &mut buf,
        )
        .unwrap();
        assert_eq!(n, 60);
        assert_eq!(&buf[..14], &samples::ARP_REQUEST[..14]);
        assert_eq!(
            emit_ethernet(HOST_A, HOST_A, EtherType::Arp, 51, &mut buf),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(
            emit_ethernet(HOST_A, HOST_A, EtherType::Arp, usize::MAX, &mut buf),
            Err(WireError::BufferTooSmall)
        );
        let tagged = EthernetRepr {
            dst_addr: HOST_A,
            src_addr: HOST_A,
            vlan_tci: Some(1),
            ethertype: EtherType::Ipv4,
        };
        assert_eq!(tagged.emit(&mut buf[..17]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn truncation_errors() {
        assert_eq!(
            EthernetFrame::new_checked(&samples::ICMP_ECHO[..13]).unwrap_err(),
            WireError::Truncated
        );
        assert!(EthernetFrame::new_checked(&samples::ICMP_ECHO[..14]).is_ok());
        // A VLAN TPID without room for the tag.
        assert_eq!(
            EthernetFrame::new_checked(&samples::UDP_DNS_VLAN[..17]).unwrap_err(),
            WireError::Truncated
        );
        assert!(EthernetFrame::new_checked(&samples::UDP_DNS_VLAN[..18]).is_ok());
        assert!(!EthernetFrame::new_unchecked(&[0x81u8][..]).is_vlan_tagged());
    }

    #[test]
    fn address_classes_and_display() {
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(!EthernetAddress::BROADCAST.is_unicast());
        let mcast = EthernetAddress([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast());
        assert!(HOST_A.is_unicast() && HOST_A.is_local());
        assert!(!EthernetAddress([0, 0x1b, 0x21, 0, 0, 1]).is_local());
        assert_eq!(HOST_A.to_string(), "52:54:00:12:34:56");
        assert_eq!(EthernetAddress::BROADCAST.to_string(), "ff:ff:ff:ff:ff:ff");
        assert_eq!(EthernetAddress::from_bytes(&[1, 2, 3, 4, 5]), None);
        assert_eq!(EthernetAddress::from_bytes(HOST_A.as_bytes()), Some(HOST_A));
        assert_eq!(EthernetAddress::default(), EthernetAddress::ZERO);
    }

    #[test]
    fn ethertype_values() {
        assert_eq!(EtherType::from(0x0800), EtherType::Ipv4);
        assert_eq!(EtherType::from(0x0806), EtherType::Arp);
        assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
        assert_eq!(EtherType::from(0x8100), EtherType::Vlan);
        assert_eq!(EtherType::from(0x88cc), EtherType::Unknown(0x88cc));
        assert_eq!(u16::from(EtherType::Unknown(0x002e)), 0x002e);
    }
}
