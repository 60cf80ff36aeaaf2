//! The `virtio_net_hdr` that travels in front of every frame on our ports.
//!
//! Both AF_PACKET with `PACKET_VNET_HDR` and a TAP with `IFF_VNET_HDR` (and a
//! header size of 10, see [`crate::io::tap`]) use exactly this 10-byte
//! layout, so a received `[header | frame]` buffer can be sent to any other
//! port byte for byte. Fields are in host byte order: both the packet socket
//! (`vio_le()`) and a TAP without `TUNSETVNETLE`/`TUNSETVNETBE` use the
//! legacy virtio convention, which is native endianness.

/// Size in bytes of the `virtio_net_hdr` in front of every frame.
pub const VNET_HDR_LEN: usize = 10;

/// The offload metadata of one frame (`struct virtio_net_hdr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VnetHeader {
    /// `VIRTIO_NET_HDR_F_*` bits ([`VnetHeader::F_NEEDS_CSUM`], ...).
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` type, optionally or-ed with [`VnetHeader::GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + L4) to replicate per segment.
    pub hdr_len: u16,
    /// Payload bytes per segment when `gso_type` is not `GSO_NONE` (the MSS).
    pub gso_size: u16,
    /// Offset from the frame start where checksumming starts (`NEEDS_CSUM`).
    pub csum_start: u16,
    /// Offset after `csum_start` where the checksum is stored (`NEEDS_CSUM`).
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Flag: the L4 checksum is partial and must be completed (CHECKSUM_PARTIAL).
    pub const F_NEEDS_CSUM: u8 = 1;
    /// Flag: the checksum was already verified (CHECKSUM_UNNECESSARY), receive only.
    pub const F_DATA_VALID: u8 = 2;
    /// Flag: `csum_start`/`csum_offset` carry coalescing info (never seen here).
    pub const F_RSC_INFO: u8 = 4;

    /// GSO type: not a GSO frame.
    pub const GSO_NONE: u8 = 0;
    /// GSO type: TCP over IPv4 (TSO4).
    pub const GSO_TCPV4: u8 = 1;
    /// GSO type: legacy UDP fragmentation offload (UFO).
    pub const GSO_UDP: u8 = 3;
    /// GSO type: TCP over IPv6 (TSO6).
    pub const GSO_TCPV6: u8 = 4;
    /// GSO type: UDP segmentation (USO, `UDP_SEGMENT`).
    pub const GSO_UDP_L4: u8 = 5;
    /// GSO modifier bit: the TCP stream uses ECN (CWR must be kept on the first segment).
    pub const GSO_ECN: u8 = 0x80;

    /// The "no offload" header: a complete, checksummed, single frame.
    pub const NONE: VnetHeader = VnetHeader {
        flags: 0,
        gso_type: Self::GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Decodes the first [`VNET_HDR_LEN`] bytes of `bytes`; `None` if too short.
    pub fn parse(bytes: &[u8]) -> Option<VnetHeader> {
        let raw: &[u8; VNET_HDR_LEN] = bytes.get(..VNET_HDR_LEN)?.try_into().ok()?;
        Some(Self::from_bytes(raw))
    }

    /// Decodes a header from its exact wire bytes.
    pub fn from_bytes(raw: &[u8; VNET_HDR_LEN]) -> VnetHeader {
        let u16_at = |i: usize| u16::from_ne_bytes([raw[i], raw[i + 1]]);
        VnetHeader {
            flags: raw[0],
            gso_type: raw[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// The header and frame length of one read of `read` bytes (header
    /// included) into a `capacity`-byte frame buffer; a frame longer than
    /// the buffer is an error, not a silent truncation.
    pub(super) fn received(
        raw: &[u8; VNET_HDR_LEN],
        read: usize,
        capacity: usize,
    ) -> std::io::Result<(VnetHeader, usize)> {
        let len = read.saturating_sub(VNET_HDR_LEN);
        if len > capacity {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {len} bytes does not fit a {capacity}-byte buffer"),
            ));
        }
        Ok((VnetHeader::from_bytes(raw), len))
    }

    /// Encodes the header into `out` (exactly [`VNET_HDR_LEN`] bytes).
    pub fn write_to(&self, out: &mut [u8; VNET_HDR_LEN]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// Returns the encoded header.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut out = [0u8; VNET_HDR_LEN];
        self.write_to(&mut out);
        out
    }

    /// True if this is a GSO super-frame the kernel will segment on egress.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    /// True if the L4 checksum is partial (must be completed before leaving the host).
    pub fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }

    /// The GSO type without the ECN modifier bit.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !Self::GSO_ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_layout() {
        let h = VnetHeader {
            flags: VnetHeader::F_NEEDS_CSUM,
            gso_type: VnetHeader::GSO_TCPV4 | VnetHeader::GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 0x81);
        assert_eq!(&b[2..4], &66u16.to_ne_bytes());
        assert_eq!(&b[4..6], &1448u16.to_ne_bytes());
        assert_eq!(VnetHeader::from_bytes(&b), h);
        assert_eq!(VnetHeader::parse(&b), Some(h));
        assert!(h.is_gso() && h.needs_csum());
        assert_eq!(h.gso_kind(), VnetHeader::GSO_TCPV4);
        assert_eq!(VnetHeader::parse(&b[..9]), None);
        assert_eq!(VnetHeader::default(), VnetHeader::NONE);
        assert!(!VnetHeader::NONE.is_gso());
        assert_eq!(VnetHeader::NONE.to_bytes(), [0u8; VNET_HDR_LEN]);
    }
}
