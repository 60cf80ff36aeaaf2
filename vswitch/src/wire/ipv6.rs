//! IPv6 (RFC 8200) fixed headers and the extension-header chain.
//!
//! [`Ipv6Packet::check_len`] validates the version and the payload length
//! against the buffer; afterwards no getter panics, and
//! [`payload`](Ipv6Packet::payload) honours `payload_len`, so Ethernet
//! padding is never treated as payload. [`upper_layer`] walks the extension
//! headers (hop-by-hop, routing, fragment, destination options,
//! authentication) to the transport header, bounded by
//! [`MAX_EXTENSION_HEADERS`], and is total.

use core::net::Ipv6Addr;

use super::field::Field;
use super::{be16, be32, put16, WireError};

mod field {
    use super::Field;

    pub(crate) const VER_TC_FLOW: Field = 0..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const NEXT_HEADER: usize = 6;
    pub(crate) const HOP_LIMIT: usize = 7;
    pub(crate) const SRC_ADDR: Field = 8..24;
    pub(crate) const DST_ADDR: Field = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// How many extension headers [`upper_layer`] follows before it gives up
/// on a packet (a chain that long is an attack, not traffic).
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Next-header values of the extension headers [`upper_layer`] walks.
pub mod next_header {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Authentication header.
    pub const AUTH: u8 = 51;
    /// No next header.
    pub const NONE: u8 = 59;
    /// Destination options.
    pub const DST_OPTIONS: u8 = 60;
}

/// A zero-copy view of an IPv6 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr_at(b: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[..16]);
    Ipv6Addr::from(octets)
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wrap a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// Wrap a buffer and validate it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validate version 6 and `HEADER_LEN + payload_len <= buffer`.
    ///
    /// The buffer may be longer (link-layer padding).
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::BadVersion);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (6 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::VER_TC_FLOW]) & 0x000f_ffff
    }

    /// Length of everything after the fixed header.
    pub fn payload_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The header that follows the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr_at(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr_at(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// Everything after the fixed header, up to `payload_len`.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Set version 6, traffic class 0 and flow label 0.
    pub fn set_version_defaults(&mut self) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    /// Set the payload length.
    pub fn set_payload_len(&mut self, value: u16) {
        put16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Set the next header.
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }
}

/// A fragment header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Fragment {
    /// Offset of this fragment's data in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification shared by the fragments of one packet.
    pub ident: u32,
}

/// Where the transport header of an IPv6 packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// The transport protocol (the last next-header value).
    pub protocol: u8,
    /// Offset of the transport header from the start of the IPv6 payload.
    pub offset: usize,
    /// The fragment header, if the packet is a fragment.
    pub fragment: Option<Ipv6Fragment>,
}

/// Walks the extension headers starting with `first` over `payload` (the
/// IPv6 payload) to the transport header. A later fragment ends the walk at
/// its fragment header: nothing after it can be read.
pub fn upper_layer(first: u8, payload: &[u8]) -> Result<UpperLayer, WireError> {
    let mut protocol = first;
    let mut offset = 0usize;
    let mut fragment = None;
    for _ in 0..=MAX_EXTENSION_HEADERS {
        let len = match protocol {
            next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DST_OPTIONS => {
                let len = payload.get(offset + 1).ok_or(WireError::Truncated)?;
                (usize::from(*len) + 1) * 8
            }
            next_header::AUTH => {
                let len = payload.get(offset + 1).ok_or(WireError::Truncated)?;
                (usize::from(*len) + 2) * 4
            }
            next_header::FRAGMENT => {
                let header = payload
                    .get(offset..offset + 8)
                    .ok_or(WireError::Truncated)?;
                if fragment.is_some() {
                    return Err(WireError::BadHeaderLength);
                }
                let word = be16(&header[2..4]);
                let this = Ipv6Fragment {
                    offset: word & 0xfff8,
                    more: word & 1 != 0,
                    ident: be32(&header[4..8]),
                };
                fragment = Some(this);
                if this.offset != 0 {
                    return Ok(UpperLayer {
                        protocol: header[0],
                        offset: offset + 8,
                        fragment,
                    });
                }
                8
            }
            _ => {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragment,
                })
            }
        };
        if offset + len > payload.len() {
            return Err(WireError::Truncated);
        }
        protocol = payload[offset];
        offset += len;
    }
    Err(WireError::BadHeaderLength)
}

/// The modified EUI-64 link-local address (RFC 4291, appendix A) a host
/// derives from its MAC.
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fd00::1 → fd00::2, TCP, with a hop-by-hop header of 8 bytes.
    fn packet(ext: &[u8], next: u8, l4: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_LEN];
        let mut p = Ipv6Packet::new_unchecked(&mut v[..]);
        p.set_version_defaults();
        p.set_payload_len((ext.len() + l4.len()) as u16);
        p.set_next_header(next);
        p.set_hop_limit(64);
        p.set_src_addr("fd00::1".parse().unwrap());
        p.set_dst_addr("fd00::2".parse().unwrap());
        v.extend_from_slice(ext);
        v.extend_from_slice(l4);
        v
    }

    #[test]
    fn fixed_header_round_trips() {
        let v = packet(&[], 6, &[0; 20]);
        let p = Ipv6Packet::new_checked(&v[..]).unwrap();
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0, 0));
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (20, 6, 64)
        );
        assert_eq!(p.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload().len(), 20);
    }

    #[test]
    fn length_and_version_are_checked() {
        let mut v = packet(&[], 6, &[0; 20]);
        assert_eq!(
            Ipv6Packet::new_checked(&v[..30]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&v[..50]).unwrap_err(),
            WireError::Truncated
        );
        v[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&v[..]).unwrap_err(),
            WireError::BadVersion
        );
        // Padding after the payload is fine and not payload.
        let mut padded = packet(&[], 59, &[]);
        padded.extend_from_slice(&[0; 6]);
        assert!(Ipv6Packet::new_checked(&padded[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn extension_headers_are_walked() {
        let hop_by_hop = [6, 0, 1, 4, 0, 0, 0, 0];
        let v = packet(&hop_by_hop, next_header::HOP_BY_HOP, &[0; 20]);
        let p = Ipv6Packet::new_checked(&v[..]).unwrap();
        let upper = upper_layer(p.next_header(), p.payload()).unwrap();
        assert_eq!((upper.protocol, upper.offset, upper.fragment), (6, 8, None));
    }

    #[test]
    fn fragments_first_and_later() {
        // First fragment: offset 0, M=1, ident 0x01020304; TCP follows.
        let first = [6, 0, 0, 1, 1, 2, 3, 4];
        let upper = upper_layer(next_header::FRAGMENT, &[&first[..], &[0; 20]].concat()).unwrap();
        assert_eq!((upper.protocol, upper.offset), (6, 8));
        assert_eq!(
            upper.fragment,
            Some(Ipv6Fragment {
                offset: 0,
                more: true,
                ident: 0x0102_0304
            })
        );
        // Later fragment: offset 1448, last; the bytes after are data.
        let later = [17, 0, 0x05, 0xa8, 1, 2, 3, 4];
        let upper = upper_layer(next_header::FRAGMENT, &[&later[..], &[0xff; 3]].concat()).unwrap();
        assert_eq!(upper.protocol, 17);
        assert_eq!(upper.fragment.unwrap().offset, 1448);
        assert!(!upper.fragment.unwrap().more);
    }

    #[test]
    fn hostile_chains_are_errors() {
        // Truncated extension header.
        assert_eq!(
            upper_layer(next_header::DST_OPTIONS, &[6, 1, 0, 0]),
            Err(WireError::Truncated)
        );
        // An endless chain of destination options.
        let chain: Vec<u8> = (0..20).flat_map(|_| [60, 0, 1, 4, 0, 0, 0, 0]).collect();
        assert_eq!(
            upper_layer(next_header::DST_OPTIONS, &chain),
            Err(WireError::BadHeaderLength)
        );
        // Two fragment headers.
        let twice = [44, 0, 0, 1, 0, 0, 0, 1, 6, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(
            upper_layer(next_header::FRAGMENT, &twice),
            Err(WireError::BadHeaderLength)
        );
        // Every prefix of a valid chain is an error or a result, never a panic.
        let v = [0u8, 0, 1, 4, 0, 0, 0, 0, 44, 0, 0, 0, 0, 0, 0, 1, 6];
        for n in 0..v.len() {
            let _ = upper_layer(next_header::HOP_BY_HOP, &v[..n]);
        }
    }

    #[test]
    fn eui64_link_local() {
        assert_eq!(
            link_local_from_mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }
}
