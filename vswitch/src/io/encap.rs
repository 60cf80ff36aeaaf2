//! VXLAN encapsulation of frames that carry offload metadata.
//!
//! A frame read from a veth or TAP may be a GSO super-frame (up to 64 KiB of
//! TCP payload with one set of headers) or carry a partial checksum; both
//! are fine between local ports, whose kernels finish the job, but a tunnel
//! carries wire-sized, complete frames. [`Datagrams::push_frame`] therefore
//! does in software what a NIC would: it completes partial checksums and
//! segments TCP super-frames at an MSS that fits the tunnel, then prefixes
//! each segment with the VXLAN header. Buffers are reused across batches.

use std::net::SocketAddr;

use super::chunk::{MAX_GSO_BYTES, MAX_SEGMENTS};
use super::vnet::VnetHeader;
use crate::wire::checksum;
use crate::wire::{
    IpProtocol, Ipv4Packet, TcpFlags, TcpPacket, Vni, VxlanPacket, VXLAN_HEADER_LEN,
};

const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;

/// Why a frame could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapError {
    /// The IPv4 packet is larger than the tunnel carries and forbids
    /// fragmentation: the sender needs an ICMP fragmentation-needed with
    /// this MTU.
    TooBig {
        /// The largest IP packet the tunnel carries.
        mtu: u16,
    },
    /// A GSO type this module cannot segment (IPv6, UDP).
    UnsupportedGso(u8),
    /// The offload metadata does not match the frame's headers.
    Malformed,
}

impl EncapError {
    /// A short stable name, for counters.
    pub fn name(&self) -> &'static str {
        match self {
            EncapError::TooBig { .. } => "tunnel_too_big",
            EncapError::UnsupportedGso(_) => "tunnel_unsupported_gso",
            EncapError::Malformed => "tunnel_malformed_offload",
        }
    }
}

/// The VXLAN header for `vni` (I flag set, reserved bits zero).
pub fn vxlan_header(vni: Vni) -> [u8; VXLAN_HEADER_LEN] {
    let v = vni.get().to_be_bytes();
    [0x08, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// The reserved key of offloaded super-frames between agents (see
/// [`Datagrams::push_offloaded`]).
pub const OFFLOAD_KEY: u32 = 0x00ff_fffe;
/// EtherType of Plexus's own messages inside the tunnel (IEEE local experimental).
pub const PLEXUS_ETHERTYPE: u16 = 0x88b5;
const OFFLOAD_MAGIC: &[u8; 4] = b"PLXG";
/// Bytes in front of an offloaded frame: Ethernet header, magic, key, offload header.
pub const OFFLOAD_PREAMBLE: usize = ETH_LEN + 4 + 4 + 10;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;

/// The Ethernet header of Plexus's own messages in the tunnel (offloaded
/// super-frames, flow state): locally administered addresses, [`PLEXUS_ETHERTYPE`].
pub fn plexus_ethernet_header() -> [u8; ETH_LEN] {
    let mut h = [0u8; ETH_LEN];
    h[0] = 0x02;
    h[6] = 0x02;
    h[12..].copy_from_slice(&PLEXUS_ETHERTYPE.to_be_bytes());
    h
}

/// An offloaded super-frame's destination key and offload header, read
/// from the preamble `bytes` (the inner frame of an [`OFFLOAD_KEY`] datagram).
pub fn parse_offloaded(bytes: &[u8]) -> Option<(u32, VnetHeader)> {
    let pre = bytes.get(..OFFLOAD_PREAMBLE)?;
    if pre[12..14] != PLEXUS_ETHERTYPE.to_be_bytes() || &pre[14..18] != OFFLOAD_MAGIC {
        return None;
    }
    let key = u32::from_be_bytes([pre[18], pre[19], pre[20], pre[21]]);
    let v = &pre[22..32];
    let le = |i: usize| u16::from_le_bytes([v[i], v[i + 1]]);
    Some((
        key,
        VnetHeader {
            flags: v[0],
            gso_type: v[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        },
    ))
}

/// UDP datagrams queued for the tunnel socket, with their destinations.
#[derive(Debug, Default)]
pub struct Datagrams {
    bufs: Vec<Vec<u8>>,
    dests: Vec<SocketAddr>,
    /// Per queued buffer: 0 for one datagram, else the size of each of the
    /// datagrams it holds back to back (the last may be shorter), sent at
    /// once with `UDP_SEGMENT`.
    segments: Vec<usize>,
    len: usize,
    /// Which of the tunnel's sending sockets carries them (the same for
    /// everything one local port sends: see `tunnel::Tunnel`).
    lane: usize,
}

impl Datagrams {
    /// Sets which of the tunnel's sending sockets carries what is queued
    /// from now on (kept across [`Self::clear`]).
    pub fn set_lane(&mut self, lane: usize) {
        self.lane = lane;
    }

    /// Which of the tunnel's sending sockets carries them.
    pub fn lane(&self) -> usize {
        self.lane
    }

    /// Forgets the queued datagrams (their buffers are kept for reuse).
    pub fn clear(&mut self) {
        self.len = 0;
        self.dests.clear();
        self.segments.clear();
    }

    /// Number of queued datagrams.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The queued datagrams in order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.dests
            .iter()
            .zip(&self.bufs[..self.len])
            .map(|(d, b)| (*d, b.as_slice()))
    }

    /// The queued buffers in order, each with its segment size (0: one
    /// datagram; else datagrams of that size back to back).
    pub fn iter_segmented(&self) -> impl Iterator<Item = (SocketAddr, &[u8], usize)> + '_ {
        self.iter()
            .zip(&self.segments)
            .map(|((dest, bytes), segment)| (dest, bytes, *segment))
    }

    fn next(&mut self, dest: SocketAddr) -> &mut Vec<u8> {
        self.next_group(dest, 0)
    }

    /// A fresh buffer for `dest` holding datagrams of `segment` bytes each
    /// (0: one datagram).
    pub(super) fn next_group(&mut self, dest: SocketAddr, segment: usize) -> &mut Vec<u8> {
        if self.bufs.len() == self.len {
            self.bufs.push(Vec::with_capacity(2048));
        }
        self.segments.push(segment);
        self.dests.push(dest);
        let buf = &mut self.bufs[self.len];
        self.len += 1;
        buf.clear();
        buf
    }

    /// Marks the datagrams queued from index `from` on (one frame's,
    /// segments included) with a live trace mark.
    pub fn mark_from(&mut self, from: usize, seq: u32, request_byte: u8) {
        let from = from.min(self.len);
        for (buf, segment) in self.bufs[from..self.len]
            .iter_mut()
            .zip(&self.segments[from..])
        {
            let size = if *segment == 0 { buf.len() } else { *segment };
            for datagram in buf.chunks_mut(size.max(1)) {
                if let Ok(mut packet) = VxlanPacket::new_checked(datagram) {
                    packet.set_trace_mark(seq, request_byte);
                }
            }
        }
    }

    /// Merges the datagram queued last into the buffer before it when both
    /// go to the same destination, it is at most `max_datagram` bytes (the
    /// underlay's MTU less the outer IP and UDP headers) and that buffer
    /// holds datagrams of exactly its size (at most [`MAX_SEGMENTS`] of
    /// them, 64 KiB in all):
    /// they then leave in one `UDP_SEGMENT` send, one packet through both
    /// hosts' stacks instead of one each. Returns whether it merged. Only
    /// for agents, which read coalesced datagrams back (`UDP_GRO`), not
    /// for external VTEPs.
    pub fn coalesce_last(&mut self, max_datagram: usize) -> bool {
        if self.len < 2 || self.segments[self.len - 1] != 0 {
            return false;
        }
        let (last, prev) = (self.len - 1, self.len - 2);
        let size = self.bufs[last].len();
        if size > max_datagram {
            // Bigger than the underlay takes whole: a UDP_SEGMENT send of
            // it would be refused, where alone it is fragmented.
            return false;
        }
        let prev_size = match self.segments[prev] {
            0 => self.bufs[prev].len(),
            segment => segment,
        };
        let fits = self.bufs[prev].len().is_multiple_of(size.max(1))
            && self.bufs[prev].len() / size.max(1) < MAX_SEGMENTS
            && self.bufs[prev].len() + size <= MAX_GSO_BYTES;
        if self.dests[prev] != self.dests[last] || prev_size != size || size == 0 || !fits {
            return false;
        }
        let (head, tail) = self.bufs.split_at_mut(last);
        head[prev].extend_from_slice(&tail[0]);
        self.segments[prev] = size;
        self.unpush();
        true
    }

    /// Sets the pieces flag on the datagram queued last (see
    /// `VxlanPacket::set_reads_pieces`).
    pub fn flag_last_reads_pieces(&mut self) {
        if let Some(buf) = self.len.checked_sub(1).and_then(|i| self.bufs.get_mut(i)) {
            if let Ok(mut packet) = VxlanPacket::new_checked(&mut buf[..]) {
                packet.set_reads_pieces();
            }
        }
    }

    fn unpush(&mut self) {
        self.len -= 1;
        self.dests.pop();
        self.segments.pop();
    }

    /// Queues `payload` (an Ethernet frame needing no offload work) to `dest` on `vni`.
    pub fn push_raw(&mut self, dest: SocketAddr, vni: Vni, payload: &[u8]) {
        let buf = self.next(dest);
        buf.extend_from_slice(&vxlan_header(vni));
        buf.extend_from_slice(payload);
    }

    /// Queues a GSO super-frame for another agent as it is, with its offload
    /// header, on [`OFFLOAD_KEY`]: the receiving agent hands it to the
    /// egress port with that header and the kernel there segments (or
    /// just delivers) it, so neither agent touches every segment. The outer
    /// datagram is larger than the underlay MTU and the kernel fragments it.
    /// Returns false (nothing queued) when the frame does not fit one
    /// datagram.
    pub fn push_offloaded(
        &mut self,
        dest: SocketAddr,
        key: u32,
        vnet: &VnetHeader,
        frame: &[u8],
    ) -> bool {
        if VXLAN_HEADER_LEN + OFFLOAD_PREAMBLE + frame.len() > MAX_DATAGRAM {
            return false;
        }
        let Some(vni) = Vni::new(OFFLOAD_KEY) else {
            return false;
        };
        let buf = self.next(dest);
        buf.extend_from_slice(&vxlan_header(vni));
        buf.extend_from_slice(&plexus_ethernet_header());
        buf.extend_from_slice(OFFLOAD_MAGIC);
        buf.extend_from_slice(&key.to_be_bytes());
        buf.push(vnet.flags);
        buf.push(vnet.gso_type);
        for field in [
            vnet.hdr_len,
            vnet.gso_size,
            vnet.csum_start,
            vnet.csum_offset,
        ] {
            buf.extend_from_slice(&field.to_le_bytes());
        }
        buf.extend_from_slice(frame);
        true
    }

    /// Queues `frame` (with its offload header `vnet`) to `dest` on `vni`:
    /// checksums completed, TCP super-frames segmented so that no IP packet
    /// exceeds `max_ip_len` bytes. Returns how many datagrams were queued.
    pub fn push_frame(
        &mut self,
        dest: SocketAddr,
        vni: Vni,
        vnet: &VnetHeader,
        frame: &[u8],
        max_ip_len: usize,
    ) -> Result<usize, EncapError> {
        if vnet.is_gso() {
            return match vnet.gso_kind() {
                VnetHeader::GSO_TCPV4 => {
                    self.push_tcp4_segments(dest, vni, vnet, frame, max_ip_len)
                }
                other => Err(EncapError::UnsupportedGso(other)),
            };
        }
        if let Some(ip) = ipv4_of(frame) {
            if usize::from(ip.total_len()) > max_ip_len && ip.dont_frag() {
                return Err(EncapError::TooBig {
                    mtu: u16::try_from(max_ip_len).unwrap_or(u16::MAX),
                });
            }
        }
        let header = vxlan_header(vni);
        let buf = self.next(dest);
        buf.extend_from_slice(&header);
        buf.extend_from_slice(frame);
        if vnet.needs_csum() {
            let start = VXLAN_HEADER_LEN + usize::from(vnet.csum_start);
            let at = start + usize::from(vnet.csum_offset);
            if at + 2 > buf.len() {
                self.unpush();
                return Err(EncapError::Malformed);
            }
            // The field holds the pseudo-header sum; summing the whole
            // region over it and complementing gives the full checksum.
            let sum = !checksum::sum(&buf[start..]);
            buf[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        Ok(1)
    }

    fn push_tcp4_segments(
        &mut self,
        dest: SocketAddr,
        vni: Vni,
        vnet: &VnetHeader,
        frame: &[u8],
        max_ip_len: usize,
    ) -> Result<usize, EncapError> {
        let ip = ipv4_of(frame).ok_or(EncapError::Malformed)?;
        if ip.protocol() != IpProtocol::Tcp {
            return Err(EncapError::Malformed);
        }
        let tcp = TcpPacket::new_checked(ip.payload()).map_err(|_| EncapError::Malformed)?;
        let (ip_hl, tcp_hl) = (ip.header_len(), tcp.header_len());
        let headers = ETH_LEN + ip_hl + tcp_hl;
        let payload = &frame[headers..ETH_LEN + usize::from(ip.total_len())];
        if payload.is_empty() {
            let single = VnetHeader {
                gso_type: VnetHeader::GSO_NONE,
                ..*vnet
            };
            return self.push_frame(dest, vni, &single, frame, usize::MAX);
        }
        let fits = max_ip_len.saturating_sub(ip_hl + tcp_hl);
        let mss = usize::from(vnet.gso_size).min(fits);
        if mss == 0 {
            return Err(EncapError::Malformed);
        }
        let (src, dst, ident) = (ip.src_addr(), ip.dst_addr(), ip.ident());
        let (seq, flags) = (tcp.seq_number(), tcp.flags().bits());
        let chunks = payload.len().div_ceil(mss);
        let header = vxlan_header(vni);
        let l3 = VXLAN_HEADER_LEN + ETH_LEN;
        for (k, chunk) in payload.chunks(mss).enumerate() {
            let buf = self.next(dest);
            buf.extend_from_slice(&header);
            buf.extend_from_slice(&frame[..headers]);
            buf.extend_from_slice(chunk);
            let mut seg_ip = Ipv4Packet::new_unchecked(&mut buf[l3..]);
            seg_ip.set_total_len((ip_hl + tcp_hl + chunk.len()) as u16);
            seg_ip.set_ident(ident.wrapping_add(k as u16));
            seg_ip.fill_checksum();
            let mut seg_tcp = TcpPacket::new_unchecked(&mut buf[l3 + ip_hl..]);
            seg_tcp.set_seq_number(seq.wrapping_add((k * mss) as u32));
            let mut f = flags;
            if k + 1 != chunks {
                f &= !(TcpFlags::FIN.bits() | TcpFlags::PSH.bits());
            }
            if k > 0 {
                f &= !TcpFlags::CWR.bits();
            }
            seg_tcp.set_flags(TcpFlags::from_bits(f));
            seg_tcp.fill_checksum(src, dst);
        }
        Ok(chunks)
    }
}

/// Completes the TCP/UDP checksum of an IPv4 frame that arrived with the
/// checksum still partial (the field holding only the pseudo-header sum),
/// as frames from a kernel VXLAN device on the same machine do when the
/// kernel left checksumming to an offload that never ran. A frame whose
/// checksum is already right, or that is not a whole TCP/UDP packet, is
/// left alone. Returns true if it changed the frame.
pub fn complete_partial_checksum(frame: &mut [u8]) -> bool {
    let Some(ip) = ipv4_of(frame) else {
        return false;
    };
    let (proto, at) = match ip.protocol() {
        IpProtocol::Tcp => (IpProtocol::Tcp, 16),
        IpProtocol::Udp => (IpProtocol::Udp, 6),
        _ => return false,
    };
    let ip_hl = ip.header_len();
    let l4_len = usize::from(ip.total_len()) - ip_hl;
    if ip.is_fragment() || l4_len < at + 2 {
        return false;
    }
    let pseudo = checksum::pseudo_header(ip.src_addr(), ip.dst_addr(), proto, l4_len as u32);
    let start = ETH_LEN + ip_hl;
    let field = start + at;
    let l4 = &frame[start..start + l4_len];
    let current = u16::from_be_bytes([frame[field], frame[field + 1]]);
    let valid = checksum::combine(pseudo, checksum::sum(l4)) == 0xffff;
    if valid || current != pseudo {
        return false;
    }
    frame[field..field + 2].copy_from_slice(&[0, 0]);
    let mut sum = !checksum::combine(pseudo, checksum::sum(&frame[start..start + l4_len]));
    if proto == IpProtocol::Udp && sum == 0 {
        sum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

/// The offload header for a frame received from a kernel VXLAN device on
/// the same machine: such a device hands its underlay a TCP super-frame
/// (tunnel GSO that no NIC ever segments), which arrives here whole with a
/// partial checksum; it goes on as GSO, to be segmented (at an MSS that
/// fits `max_ip_len`) by whoever sends it next. Other frames get their
/// partial checksums completed and no offload.
pub fn offload_of_received(frame: &mut [u8], max_ip_len: usize) -> VnetHeader {
    let tcp = ipv4_of(frame).filter(|ip| {
        ip.protocol() == IpProtocol::Tcp
            && !ip.is_fragment()
            && usize::from(ip.total_len()) > max_ip_len
    });
    if let Some(ip) = tcp {
        let ip_hl = ip.header_len();
        if let Ok(tcp) = TcpPacket::new_checked(ip.payload()) {
            let tcp_hl = tcp.header_len();
            let mss = max_ip_len.saturating_sub(ip_hl + tcp_hl);
            if mss > 0 {
                return VnetHeader {
                    flags: VnetHeader::F_NEEDS_CSUM,
                    gso_type: VnetHeader::GSO_TCPV4,
                    hdr_len: (ETH_LEN + ip_hl + tcp_hl) as u16,
                    gso_size: mss as u16,
                    csum_start: (ETH_LEN + ip_hl) as u16,
                    csum_offset: 16,
                };
            }
        }
    }
    complete_partial_checksum(frame);
    VnetHeader::NONE
}

/// The IPv4 packet of an untagged IPv4 frame, if its header checks out.
pub(crate) fn ipv4_of(frame: &[u8]) -> Option<Ipv4Packet<&[u8]>> {
    if frame.len() < ETH_LEN || frame[12..14] != ETHERTYPE_IPV4.to_be_bytes() {
        return None;
    }
    Ipv4Packet::new_checked(&frame[ETH_LEN..]).ok()
}

#[cfg(test)]
#[path = "encap_tests.rs"]
mod tests;
