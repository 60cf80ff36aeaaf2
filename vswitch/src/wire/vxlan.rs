//! VXLAN (RFC 7348) headers.
//!
//! ```text
//!  0               1               2               3
//! |R|R|R|R|I|R|R|R|            Reserved (24 bits)               |
//! |          VXLAN Network Identifier (VNI)       |  Reserved   |
//! ```
//!
//! [`VxlanPacket::check_len`] requires the 8-byte header and the I flag
//! (a header without it carries no valid VNI and is rejected with
//! [`WireError::MissingVxlanFlag`]). Reserved bits are written as zero and
//! ignored on receive, with one exception between Plexus agents: a
//! datagram of a live-traced packet sets the lowest flag bit (the trace
//! flag) and carries its trace mark in the reserved fields (24 bits of
//! sequence, the request's byte in the last octet); receivers that do not
//! know it ignore it, as RFC 7348 says. After the check no getter panics.

use core::fmt;

use super::field::{Field, Rest};
use super::{be32, put32, WireError};

/// IANA-assigned UDP destination port for VXLAN.
pub const VXLAN_PORT: u16 = 4789;

/// The I flag: the VNI is valid.
const FLAG_I: u8 = 0x08;

/// The trace flag (a reserved bit, used between Plexus agents only): the
/// reserved fields carry a trace mark.
const FLAG_TRACE: u8 = 0x01;

/// The pieces flag (a reserved bit, used between Plexus agents only, on
/// flow-state datagrams): the sender reads super-frames sent in pieces.
const FLAG_PIECES: u8 = 0x02;

mod field {
    use super::{Field, Rest};

    pub(crate) const FLAGS: usize = 0;
    pub(crate) const RESERVED: Field = 1..4;
    pub(crate) const LAST: usize = 7;
    pub(crate) const VNI_RESERVED: Field = 4..8;
    pub(crate) const PAYLOAD: Rest = VNI_RESERVED.end..;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A 24-bit VXLAN network identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vni(u32);

impl Vni {
    /// Largest valid VNI.
    pub const MAX: Vni = Vni(0x00ff_ffff);

    /// A VNI, or `None` if `value` does not fit in 24 bits.
    pub const fn new(value: u32) -> Option<Vni> {
        if value <= Self::MAX.0 {
            Some(Vni(value))
        } else {
            None
        }
    }

    /// The numeric value.
    pub const fn get(&self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A zero-copy view of a VXLAN header followed by the inner Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> VxlanPacket<T> {
        VxlanPacket { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<VxlanPacket<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure the 8-byte header is present and the I flag is set.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.flags() & FLAG_I == 0 {
            return Err(WireError::MissingVxlanFlag);
        }
        Ok(())
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The raw flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit network identifier.
    pub fn vni(&self) -> Vni {
        Vni(be32(&self.buffer.as_ref()[field::VNI_RESERVED]) >> 8)
    }
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Whether the pieces flag is set: the sender (another agent) reads
    /// super-frames sent in pieces.
    pub fn reads_pieces(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_PIECES != 0
    }

    /// The trace mark, if the trace flag is set: the sender's sequence
    /// number (24 bits) and the request's byte.
    pub fn trace_mark(&self) -> Option<(u32, u8)> {
        let data = self.buffer.as_ref();
        if data[field::FLAGS] & FLAG_TRACE == 0 {
            return None;
        }
        let r = &data[field::RESERVED];
        let seq = u32::from_be_bytes([0, r[0], r[1], r[2]]);
        Some((seq, data[field::LAST]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VxlanPacket<&'a T> {
    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Write flags = I and zero all reserved fields.
    pub fn clear_header(&mut self) {
        let data = self.buffer.as_mut();
        data[..HEADER_LEN].fill(0);
        data[field::FLAGS] = FLAG_I;
    }

    /// Set the network identifier (the trailing reserved byte is zeroed).
    pub fn set_vni(&mut self, vni: Vni) {
        put32(&mut self.buffer.as_mut()[field::VNI_RESERVED], vni.0 << 8);
    }

    /// Sets the pieces flag: the sender reads super-frames in pieces.
    pub fn set_reads_pieces(&mut self) {
        self.buffer.as_mut()[field::FLAGS] |= FLAG_PIECES;
    }

    /// Sets the trace flag and mark: `seq` (its low 24 bits) and the
    /// request's byte.
    pub fn set_trace_mark(&mut self, seq: u32, request_byte: u8) {
        let data = self.buffer.as_mut();
        data[field::FLAGS] |= FLAG_TRACE;
        data[field::RESERVED].copy_from_slice(&seq.to_be_bytes()[1..]);
        data[field::LAST] = request_byte;
    }

    /// Mutable access to the encapsulated frame.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A decoded VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VxlanRepr {
    /// The network identifier.
    pub vni: Vni,
}

impl VxlanRepr {
    /// Decode a header; fails without the I flag.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Result<VxlanRepr, WireError> {
        packet.check_len()?;
        Ok(VxlanRepr { vni: packet.vni() })
    }

    /// Number of bytes [`emit`](Self::emit) writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the 8-byte header into the start of `buf`; returns 8.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut packet = VxlanPacket::new_unchecked(header);
        packet.clear_header();
        packet.set_vni(self.vni);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples;
    use super::*;

    fn vxlan() -> &'static [u8] {
        &samples::VXLAN_ICMP[42..]
    }

    #[test]
    fn deconstruct() {
        let packet = VxlanPacket::new_checked(vxlan()).unwrap();
        assert_eq!(packet.flags(), 0x08);
        assert_eq!(packet.vni(), Vni::new(5001).unwrap());
        assert_eq!(packet.payload(), &samples::ICMP_ECHO[..]);
    }

    #[test]
    fn repr_round_trip() {
        let packet = VxlanPacket::new_checked(vxlan()).unwrap();
        let repr = VxlanRepr::parse(&packet).unwrap();
        assert_eq!(repr.vni.get(), 5001);
        let mut out = [0xffu8; 8];
        assert_eq!(repr.emit(&mut out), Ok(repr.buffer_len()));
        assert_eq!(&out[..], &vxlan()[..8]);
        assert_eq!(repr.emit(&mut out[..7]), Err(WireError::BufferTooSmall));
        let max = VxlanRepr { vni: Vni::MAX };
        max.emit(&mut out).unwrap();
        assert_eq!(out, [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0]);
        let parsed = VxlanRepr::parse(&VxlanPacket::new_checked(&out[..]).unwrap());
        assert_eq!(parsed, Ok(max));
    }

    #[test]
    fn trace_mark_round_trips_and_leaves_the_vni() {
        let mut bytes = vxlan().to_vec();
        let mut packet = VxlanPacket::new_checked(&mut bytes[..]).unwrap();
        let vni = packet.vni();
        assert_eq!(packet.trace_mark(), None);
        packet.set_trace_mark(0x0123_4567, 0xab);
        assert_eq!(packet.trace_mark(), Some((0x23_4567, 0xab)));
        assert_eq!(packet.vni(), vni);
        assert_eq!(packet.flags(), 0x09);
    }

    #[test]
    fn the_pieces_flag_round_trips_beside_the_trace_mark() {
        let mut bytes = vxlan().to_vec();
        let mut packet = VxlanPacket::new_checked(&mut bytes[..]).unwrap();
        let vni = packet.vni();
        assert!(!packet.reads_pieces());
        packet.set_reads_pieces();
        packet.set_trace_mark(7, 9);
        assert!(packet.reads_pieces());
        assert_eq!((packet.vni(), packet.trace_mark()), (vni, Some((7, 9))));
        assert_eq!(packet.flags(), 0x0b, "I, trace and pieces");
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let mut b = [0xffu8; 8];
        let packet = VxlanPacket::new_checked(&b[..]).unwrap();
        assert_eq!(packet.vni(), Vni::MAX);
        let mut packet = VxlanPacket::new_unchecked(&mut b[..]);
        packet.clear_header();
        packet.set_vni(Vni::new(7).unwrap());
        assert_eq!(packet.into_inner(), &[0x08, 0, 0, 0, 0, 0, 7, 0]);
    }

    #[test]
    fn error_paths() {
        for len in 0..8 {
            assert_eq!(
                VxlanPacket::new_checked(&vxlan()[..len]).unwrap_err(),
                WireError::Truncated
            );
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&vxlan()[..8]);
        b[0] = 0xf7; // every bit but I
        assert_eq!(
            VxlanPacket::new_checked(&b[..]).unwrap_err(),
            WireError::MissingVxlanFlag
        );
        let unchecked = VxlanPacket::new_unchecked(&b[..]);
        assert_eq!(
            VxlanRepr::parse(&unchecked),
            Err(WireError::MissingVxlanFlag)
        );
    }

    #[test]
    fn vni_range() {
        assert_eq!(Vni::new(0x0100_0000), None);
        assert_eq!(Vni::new(0x00ff_ffff), Some(Vni::MAX));
        assert_eq!(Vni::default().get(), 0);
        assert_eq!(Vni::new(5001).unwrap().to_string(), "5001");
    }
}
