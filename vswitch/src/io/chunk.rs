//! Offloaded super-frames between agents in wire-sized pieces.
//!
//! A TCP super-frame (up to 64 KiB with one set of headers) goes to another
//! agent whole, with its offload header, so that neither agent touches
//! every segment. Sent as one 64 KiB datagram it is IP-fragmented on the
//! way, and every fragment is an skb of its own on both hosts. Instead the
//! agent cuts it into pieces that each fit the underlay and sends them as
//! consecutive datagrams of one size with `UDP_SEGMENT`: the kernel keeps
//! them one GSO packet down to the underlay device (a veth or bridge
//! carries it whole, a NIC with USO segments it in hardware), and the
//! receiving socket, with `UDP_GRO`, reads them back in one buffer. No
//! datagram exceeds the underlay MTU, so nothing on the path fragments.
//!
//! Each piece is a VXLAN datagram on the reserved [`OFFLOAD_KEY`]:
//!
//! ```text
//! VXLAN | Ethernet (PLEXUS_ETHERTYPE) | "PLXC" | frame id u32 | index u16 | count u16 | piece
//! ```
//!
//! The pieces of a frame, concatenated, are the destination key (u32), the
//! 10-byte offload header and the frame. The receiver ([`Reassembly`])
//! collects them per sender in order; a missing or reordered piece drops
//! the frame (as a lost IP fragment would) and is counted.

use std::net::SocketAddr;

use super::encap::{plexus_ethernet_header, vxlan_header, Datagrams, OFFLOAD_KEY};
use super::vnet::VnetHeader;
use crate::wire::{Vni, VXLAN_HEADER_LEN};

const CHUNK_MAGIC: &[u8; 4] = b"PLXC";
/// Bytes in front of each piece: Ethernet header, magic, frame id, index, count.
pub const CHUNK_HEADER: usize = 14 + 4 + 4 + 2 + 2;
/// Bytes in front of the frame in the concatenated pieces: key, offload header.
const FRAME_PREFIX: usize = 4 + 10;
/// The most datagrams one `UDP_SEGMENT` send carries: one under the
/// kernel's 64, which kernels before 6.0 compared with the length
/// headers included.
pub const MAX_SEGMENTS: usize = 63;
/// The most bytes one `UDP_SEGMENT` send carries (below the UDP limit of
/// either family).
pub(super) const MAX_GSO_BYTES: usize = 65_000;
/// Senders with a frame half received at once; past it the oldest go.
const MAX_PARTIAL: usize = 1024;

/// How one frame is cut into pieces for a tunnel: the piece size, how
/// many, and how many go in one `UDP_SEGMENT` send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiecePlan {
    /// Bytes of prefix and frame per piece (the last may hold fewer).
    piece: usize,
    /// Key, offload header and frame: the bytes the pieces carry.
    total: usize,
    /// How many pieces.
    pub count: u16,
    /// Pieces per `UDP_SEGMENT` send.
    pub per_send: usize,
}

/// The bytes in front of each piece: VXLAN and chunk headers.
pub type PieceHeader = [u8; VXLAN_HEADER_LEN + CHUNK_HEADER];

impl PiecePlan {
    /// The plan for a frame of `frame_len` bytes through a tunnel carrying
    /// IP packets of `max_ip_len` bytes, if it can be cut (a tunnel too
    /// small, or more pieces than an index holds, cannot).
    pub fn new(frame_len: usize, max_ip_len: usize) -> Option<PiecePlan> {
        // A piece's datagram is as big as a full frame's would be: VXLAN,
        // then CHUNK_HEADER in place of Ethernet's 14 bytes.
        let piece = (max_ip_len + 14).saturating_sub(CHUNK_HEADER);
        let total = FRAME_PREFIX + frame_len;
        if piece < 64 || total.div_ceil(piece) > usize::from(u16::MAX) {
            return None;
        }
        let datagram = VXLAN_HEADER_LEN + CHUNK_HEADER + piece;
        Some(PiecePlan {
            piece,
            total,
            count: total.div_ceil(piece) as u16,
            per_send: MAX_SEGMENTS.min(MAX_GSO_BYTES / datagram).max(1),
        })
    }

    /// The size of every datagram but the last: the `UDP_SEGMENT` size.
    pub fn datagram_len(&self) -> usize {
        VXLAN_HEADER_LEN + CHUNK_HEADER + self.piece
    }

    /// The pieces of each send, in order.
    pub fn sends(&self) -> impl Iterator<Item = std::ops::Range<u16>> + '_ {
        let per_send = u16::try_from(self.per_send).unwrap_or(u16::MAX);
        (0..self.count)
            .step_by(usize::from(per_send))
            .map(move |first| first..first.saturating_add(per_send).min(self.count))
    }

    /// The headers of piece `index` of frame `id`.
    pub fn header(&self, id: u32, index: u16) -> PieceHeader {
        let mut header = [0u8; VXLAN_HEADER_LEN + CHUNK_HEADER];
        if let Some(vni) = Vni::new(OFFLOAD_KEY) {
            header[..VXLAN_HEADER_LEN].copy_from_slice(&vxlan_header(vni));
        }
        let chunk = &mut header[VXLAN_HEADER_LEN..];
        chunk[..14].copy_from_slice(&plexus_ethernet_header());
        chunk[14..18].copy_from_slice(CHUNK_MAGIC);
        chunk[18..22].copy_from_slice(&id.to_be_bytes());
        chunk[22..24].copy_from_slice(&index.to_be_bytes());
        chunk[24..26].copy_from_slice(&self.count.to_be_bytes());
        header
    }

    /// Piece `index`'s bytes: the part of `prefix` and the part of
    /// `frame` it carries (either may be empty).
    pub fn piece<'a>(
        &self,
        index: u16,
        prefix: &'a FramePrefix,
        frame: &'a [u8],
    ) -> (&'a [u8], &'a [u8]) {
        let start = usize::from(index) * self.piece;
        let end = (start + self.piece).min(self.total);
        let head = &prefix[start.min(FRAME_PREFIX)..end.min(FRAME_PREFIX)];
        let (from, to) = (start.max(FRAME_PREFIX), end.max(FRAME_PREFIX));
        let tail = frame
            .get(from - FRAME_PREFIX..to - FRAME_PREFIX)
            .unwrap_or(&[]);
        (head, tail)
    }
}

/// What the pieces carry in front of the frame: its key and offload header.
pub type FramePrefix = [u8; FRAME_PREFIX];

/// The prefix of a frame for `key` with offload header `vnet`.
pub fn frame_prefix(key: u32, vnet: &VnetHeader) -> FramePrefix {
    let mut prefix = [0u8; FRAME_PREFIX];
    prefix[..4].copy_from_slice(&key.to_be_bytes());
    prefix[4..].copy_from_slice(&vnet.to_bytes());
    prefix
}

impl Datagrams {
    /// Queues a GSO super-frame for another agent as pieces, copied, in
    /// the groups [`TunnelSocket::send_pieces`](super::TunnelSocket::send_pieces)
    /// sends without copying: what the tests read back. Returns false
    /// (nothing queued) when the frame cannot be cut.
    #[cfg(test)]
    pub(crate) fn push_chunked(
        &mut self,
        dest: SocketAddr,
        key: u32,
        vnet: &VnetHeader,
        frame: &[u8],
        max_ip_len: usize,
        id: u32,
    ) -> bool {
        let Some(plan) = PiecePlan::new(frame.len(), max_ip_len) else {
            return false;
        };
        let prefix = frame_prefix(key, vnet);
        for send in plan.sends() {
            let segment = if send.len() > 1 {
                plan.datagram_len()
            } else {
                0
            };
            let buf = self.next_group(dest, segment);
            for index in send {
                buf.extend_from_slice(&plan.header(id, index));
                let (head, tail) = plan.piece(index, &prefix, frame);
                buf.extend_from_slice(head);
                buf.extend_from_slice(tail);
            }
        }
        true
    }
}

/// One received piece of an offloaded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The frame it belongs to (per sender).
    pub id: u32,
    /// Its place among the frame's pieces.
    pub index: u16,
    /// How many pieces the frame has.
    pub count: u16,
    /// Its bytes.
    pub piece: &'a [u8],
}

/// The piece in `inner` (a datagram's bytes after the VXLAN header, on
/// [`OFFLOAD_KEY`]), if it is one.
pub fn parse_chunk(inner: &[u8]) -> Option<Chunk<'_>> {
    let head = inner.get(..CHUNK_HEADER)?;
    if head[12..14] != super::encap::PLEXUS_ETHERTYPE.to_be_bytes() || &head[14..18] != CHUNK_MAGIC
    {
        return None;
    }
    let chunk = Chunk {
        id: u32::from_be_bytes([head[18], head[19], head[20], head[21]]),
        index: u16::from_be_bytes([head[22], head[23]]),
        count: u16::from_be_bytes([head[24], head[25]]),
        piece: &inner[CHUNK_HEADER..],
    };
    (chunk.index < chunk.count).then_some(chunk)
}

/// A frame being put back together from its pieces.
#[derive(Debug, Default)]
struct Partial {
    next: u16,
    count: u16,
    bytes: Vec<u8>,
    /// When it was last added to (a sequence number, for eviction).
    touched: u64,
}

/// Puts offloaded frames back together from their pieces, per sender and
/// frame id: a sender's worker threads may send two frames' groups of
/// pieces interleaved, and each frame's pieces arrive in order. At most
/// [`MAX_PARTIAL`] frames are in progress; past that the least recently
/// added to goes (counted lost).
#[derive(Debug, Default)]
pub struct Reassembly {
    partial: crate::FastMap<(SocketAddr, u32), Partial>,
    /// Buffers of finished frames, for the next ones.
    spare: Vec<Vec<u8>>,
    /// The frame completed last (its buffer lives here until the next push).
    done: Vec<u8>,
    clock: u64,
    /// Frames given up: a piece missing, out of order, or malformed.
    pub lost: u64,
}

/// A frame put back together: its destination key, offload header and bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Reassembled<'a> {
    /// The destination key (a port's or a bridge's flood key).
    pub key: u32,
    /// The frame's offload header.
    pub vnet: VnetHeader,
    /// The frame.
    pub frame: &'a [u8],
}

/// The most bytes a frame's pieces carry: key, offload header and the
/// largest frame a port takes.
const MAX_REASSEMBLED: usize = FRAME_PREFIX + super::batch::MAX_FRAME_LEN;

impl Reassembly {
    /// Adds `chunk` from `source`; returns the frame once its last piece is in.
    pub fn push(&mut self, source: SocketAddr, chunk: Chunk<'_>) -> Option<Reassembled<'_>> {
        self.clock += 1;
        let key = (source, chunk.id);
        if chunk.index == 0 {
            if !self.partial.contains_key(&key) && self.partial.len() >= MAX_PARTIAL {
                self.evict_oldest();
            }
            let mut bytes = self.spare.pop().unwrap_or_default();
            bytes.clear();
            let fresh = Partial {
                next: 0,
                count: chunk.count,
                bytes,
                touched: self.clock,
            };
            if let Some(stale) = self.partial.insert(key, fresh) {
                self.lost += 1; // the same id again before it completed
                self.spare.push(stale.bytes);
            }
        }
        let Some(partial) = self.partial.get_mut(&key) else {
            // Its first piece was lost (or the frame was given up).
            return None;
        };
        let fits = partial.bytes.len() + chunk.piece.len() <= MAX_REASSEMBLED;
        if partial.next != chunk.index || partial.count != chunk.count || !fits {
            self.lost += 1;
            if let Some(gone) = self.partial.remove(&key) {
                self.spare.push(gone.bytes);
            }
            return None;
        }
        partial.bytes.extend_from_slice(chunk.piece);
        partial.next += 1;
        partial.touched = self.clock;
        if partial.next < partial.count {
            return None;
        }
        let finished = self.partial.remove(&key)?;
        let previous = std::mem::replace(&mut self.done, finished.bytes);
        if self.spare.len() < 4 {
            self.spare.push(previous);
        }
        let bytes = &self.done;
        let vnet = bytes.get(4..FRAME_PREFIX).and_then(VnetHeader::parse);
        match (bytes.get(..4), vnet) {
            (Some(key), Some(vnet)) => Some(Reassembled {
                key: u32::from_be_bytes([key[0], key[1], key[2], key[3]]),
                vnet,
                frame: &bytes[FRAME_PREFIX..],
            }),
            _ => {
                self.lost += 1;
                None
            }
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .partial
            .iter()
            .min_by_key(|(_, p)| p.touched)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            if let Some(gone) = self.partial.remove(&key) {
                self.lost += 1;
                self.spare.push(gone.bytes);
            }
        }
    }
}

/// The most pieces [`gather`] collects: a frame of the largest size a
/// port takes, in pieces for a 1280-byte tunnel MTU, fits.
pub const MAX_GATHERED: usize = 64;

/// A frame whose pieces all arrived, in order, in consecutive receive
/// slots: its key, offload header, its bytes as they lie in the slots,
/// and how many slots they filled.
#[derive(Debug)]
pub struct Gathered<'a> {
    /// The destination key.
    pub key: u32,
    /// The frame's offload header.
    pub vnet: VnetHeader,
    /// The frame's bytes, piece by piece (`parts[..count]`).
    parts: [&'a [u8]; MAX_GATHERED],
    /// How many of `parts` hold the frame.
    count: usize,
    /// How many slots its pieces filled.
    pub slots: usize,
}

impl Gathered<'_> {
    /// The frame's bytes, piece by piece.
    pub fn parts(&self) -> &[&[u8]] {
        &self.parts[..self.count]
    }

    /// The frame's length.
    pub fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    /// True for an empty frame (never gathered).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The frame whose pieces begin the first of `slots` (each: the bytes of
/// one receive slot, datagrams back to back, VXLAN header first, and the
/// size of each but the last) and end exactly where one of them ends, all
/// of one frame and in order, with no trace mark; `None` otherwise (the
/// pieces then go through [`Reassembly`], which copies them). Nothing is
/// copied: the parts point into the slots.
pub fn gather<'a>(slots: impl IntoIterator<Item = (&'a [u8], usize)>) -> Option<Gathered<'a>> {
    let mut gathered = Gathered {
        key: 0,
        vnet: VnetHeader::NONE,
        parts: [&[]; MAX_GATHERED],
        count: 0,
        slots: 0,
    };
    let mut frame: Option<(u32, u16)> = None;
    let mut total = 0;
    for (bytes, size) in slots {
        gathered.slots += 1;
        for datagram in bytes.chunks(size.max(1)) {
            let packet = crate::wire::VxlanPacket::new_checked(datagram).ok()?;
            if packet.vni().get() != OFFLOAD_KEY || packet.trace_mark().is_some() {
                return None;
            }
            let chunk = parse_chunk(&datagram[VXLAN_HEADER_LEN..])?;
            let (id, count) = *frame.get_or_insert((chunk.id, chunk.count));
            let next = gathered.count;
            if chunk.id != id
                || chunk.count != count
                || usize::from(chunk.index) != next
                || next >= MAX_GATHERED
            {
                return None;
            }
            gathered.parts[next] = chunk.piece;
            gathered.count += 1;
            total += chunk.piece.len();
            if total > MAX_REASSEMBLED {
                return None; // too big for a port: Reassembly counts it lost
            }
        }
        let (_, count) = frame?;
        if gathered.count == usize::from(count) {
            // The frame ended with this slot: its prefix leads the first piece.
            let first = gathered.parts[0];
            let key = first.get(..4)?;
            gathered.key = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
            gathered.vnet = VnetHeader::parse(first.get(4..FRAME_PREFIX)?)?;
            gathered.parts[0] = &first[FRAME_PREFIX..];
            return Some(gathered);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> SocketAddr {
        "192.0.2.2:4789".parse().unwrap()
    }

    fn gso() -> VnetHeader {
        VnetHeader {
            flags: 1,
            gso_type: VnetHeader::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    /// Every datagram queued, split at the segment sizes they are sent with.
    fn datagrams(queued: &Datagrams) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (_, bytes, segment) in queued.iter_segmented() {
            let size = if segment == 0 { bytes.len() } else { segment };
            out.extend(bytes.chunks(size).map(<[u8]>::to_vec));
        }
        out
    }

    /// The receive slots the sends of `queued` arrive in (one a send, as
    /// UDP GRO reads them), each with its datagram size.
    fn slots(queued: &Datagrams) -> Vec<(Vec<u8>, usize)> {
        queued
            .iter_segmented()
            .map(|(_, bytes, segment)| {
                let size = if segment == 0 { bytes.len() } else { segment };
                (bytes.to_vec(), size)
            })
            .collect()
    }

    fn gather_from(slots: &[(Vec<u8>, usize)]) -> Option<Gathered<'_>> {
        gather(slots.iter().map(|(bytes, size)| (bytes.as_slice(), *size)))
    }

    #[test]
    fn a_frame_whose_pieces_all_arrived_is_gathered_from_its_slots() {
        let frame: Vec<u8> = (0..65_226u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut queued = Datagrams::default();
        assert!(queued.push_chunked(dest(), 0x1234, &gso(), &frame, 1450, 9));
        let mut all = slots(&queued);
        assert!(all.len() >= 2, "the frame takes two sends: {}", all.len());
        let own = all.len();
        let gathered = gather_from(&all).expect("gathered");
        assert_eq!(gathered.key, 0x1234);
        assert_eq!(gathered.vnet, gso());
        assert_eq!(gathered.slots, own);
        assert_eq!(gathered.parts().concat(), frame);
        assert_eq!(gathered.len(), frame.len());
        // Followed by another frame's slots, it takes only its own.
        let mut next = Datagrams::default();
        assert!(next.push_chunked(dest(), 7, &gso(), &[1u8; 3000], 1450, 10));
        all.extend(slots(&next));
        assert_eq!(gather_from(&all).expect("gathered").slots, own);
        assert_eq!(
            gather_from(&all[own..]).expect("the next").parts().concat(),
            [1u8; 3000]
        );
    }

    #[test]
    fn pieces_that_are_not_one_whole_frame_are_left_to_reassembly() {
        let frame = [3u8; 20_000];
        let mut queued = Datagrams::default();
        assert!(queued.push_chunked(dest(), 7, &gso(), &frame, 1450, 1));
        let whole = slots(&queued);
        assert_eq!(whole.len(), 1, "one send");
        assert!(gather_from(&whole).is_some());
        let (bytes, size) = &whole[0];
        let size = *size;

        // The last piece still to come, or a piece lost on the way.
        let mut cut = whole.clone();
        cut[0].0.truncate((bytes.len() - 1) / size * size);
        assert!(gather_from(&cut).is_none(), "the last piece missing");
        let mut gap = whole.clone();
        gap[0].0.drain(size..2 * size);
        assert!(gather_from(&gap).is_none(), "a piece missing");
        // The first piece missing.
        assert!(gather_from(&[(bytes[size..].to_vec(), size)]).is_none());
        // A traced piece: the usual path tells the trace.
        let mut traced = whole.clone();
        crate::wire::VxlanPacket::new_unchecked(&mut traced[0].0[..]).set_trace_mark(5, 1);
        assert!(gather_from(&traced).is_none(), "a traced piece");
        // A frame ending inside a slot that goes on with another's pieces:
        // two full pieces (prefix and frame fill them exactly), then more.
        let piece = size - VXLAN_HEADER_LEN - CHUNK_HEADER;
        let mut a = Datagrams::default();
        assert!(a.push_chunked(
            dest(),
            7,
            &gso(),
            &vec![4u8; 2 * piece - FRAME_PREFIX],
            1450,
            2
        ));
        let a = slots(&a);
        assert_eq!(a[0].0.len(), 2 * size);
        let mut both = a[0].0.clone();
        both.extend_from_slice(&bytes[..size]);
        assert!(
            gather_from(&[(both, size)]).is_none(),
            "two frames in one slot"
        );
        assert!(gather_from(&a).is_some());
        // Not a piece at all.
        let plain = vec![0u8; 100];
        assert!(gather_from(&[(plain, 100)]).is_none());
        // Whole, but bigger than a port takes (Reassembly counts it lost).
        let mut big = Datagrams::default();
        let oversize = vec![6u8; MAX_REASSEMBLED];
        assert!(big.push_chunked(dest(), 7, &gso(), &oversize, 1450, 3));
        let big = slots(&big);
        assert!(big.iter().map(|(b, s)| b.len().div_ceil(*s)).sum::<usize>() <= MAX_GATHERED);
        assert!(gather_from(&big).is_none(), "a frame too big");
    }

    #[test]
    fn a_super_frame_goes_in_pieces_that_fit_and_comes_back_whole() {
        let frame: Vec<u8> = (0..65_226u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut queued = Datagrams::default();
        assert!(queued.push_chunked(dest(), 0x1234, &gso(), &frame, 1450, 9));
        let sent = datagrams(&queued);
        // Every datagram fits the underlay: a full frame's datagram at most.
        let largest = sent.iter().map(Vec::len).max().unwrap();
        assert_eq!(largest, VXLAN_HEADER_LEN + 14 + 1450);
        // One size for all but the last of each send (what UDP_SEGMENT needs).
        for (_, bytes, segment) in queued.iter_segmented() {
            if segment > 0 {
                assert!(bytes.len() > segment && bytes.len() <= MAX_GSO_BYTES);
                assert!(bytes.len().div_ceil(segment) <= MAX_SEGMENTS);
            }
        }
        assert!(queued.len() >= 2, "more than one send: {}", queued.len());
        let mut reassembly = Reassembly::default();
        let source: SocketAddr = "192.0.2.1:4789".parse().unwrap();
        let mut whole = None;
        for datagram in &sent {
            let chunk = parse_chunk(&datagram[VXLAN_HEADER_LEN..]).expect("a piece");
            assert_eq!(chunk.id, 9);
            if let Some(done) = reassembly.push(source, chunk) {
                whole = Some((done.key, done.vnet, done.frame.to_vec()));
            }
        }
        assert_eq!(whole, Some((0x1234, gso(), frame)));
        assert_eq!(reassembly.lost, 0);
    }

    #[test]
    fn a_missing_or_reordered_piece_loses_only_its_frame() {
        let source: SocketAddr = "192.0.2.1:4789".parse().unwrap();
        let pieces = |id: u32| {
            let mut queued = Datagrams::default();
            assert!(queued.push_chunked(dest(), 7, &gso(), &[5u8; 5000], 1450, id));
            datagrams(&queued)
        };
        let mut reassembly = Reassembly::default();
        let first = pieces(1);
        assert!(first.len() >= 4);
        for (k, datagram) in first.iter().enumerate() {
            if k == 2 {
                continue; // lost on the way
            }
            let chunk = parse_chunk(&datagram[VXLAN_HEADER_LEN..]).unwrap();
            assert!(reassembly.push(source, chunk).is_none());
        }
        assert_eq!(reassembly.lost, 1);
        // The next frame starts afresh and completes.
        let mut done = 0;
        for datagram in &pieces(2) {
            let chunk = parse_chunk(&datagram[VXLAN_HEADER_LEN..]).unwrap();
            done += usize::from(reassembly.push(source, chunk).is_some());
        }
        assert_eq!((done, reassembly.lost), (1, 1));
        // A piece of a frame whose start was never seen completes nothing.
        let third = pieces(3);
        let chunk = parse_chunk(&third[1][VXLAN_HEADER_LEN..]).unwrap();
        assert!(reassembly.push(source, chunk).is_none());
    }

    #[test]
    fn pieces_are_told_from_other_datagrams() {
        assert_eq!(parse_chunk(&[0u8; 10]), None);
        assert_eq!(parse_chunk(&[0u8; 64]), None);
        let mut queued = Datagrams::default();
        assert!(queued.push_chunked(dest(), 7, &gso(), &[1u8; 3000], 1450, 1));
        let mut datagram = datagrams(&queued).remove(0);
        // An index past the count is refused.
        datagram[VXLAN_HEADER_LEN + 22..VXLAN_HEADER_LEN + 24].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(parse_chunk(&datagram[VXLAN_HEADER_LEN..]), None);
        // A tunnel too small to carry pieces queues nothing.
        assert!(!queued.push_chunked(dest(), 7, &gso(), &[1u8; 3000], 40, 2));
    }

    #[test]
    fn two_frames_whose_groups_interleave_both_complete() {
        let source: SocketAddr = "192.0.2.1:4789".parse().unwrap();
        let pieces = |id: u32, fill: u8| {
            let mut queued = Datagrams::default();
            assert!(queued.push_chunked(dest(), 7, &gso(), &[fill; 65_000], 1450, id));
            datagrams(&queued)
        };
        let (a, b) = (pieces(1, 0xaa), pieces(2, 0xbb));
        let split = 44; // one send's worth
        let order = a[..split]
            .iter()
            .chain(&b[..split])
            .chain(&a[split..])
            .chain(&b[split..]);
        let mut reassembly = Reassembly::default();
        let mut done = Vec::new();
        for datagram in order {
            let chunk = parse_chunk(&datagram[VXLAN_HEADER_LEN..]).unwrap();
            if let Some(frame) = reassembly.push(source, chunk) {
                done.push((frame.frame.len(), frame.frame[0]));
            }
        }
        assert_eq!(done, vec![(65_000, 0xaa), (65_000, 0xbb)]);
        assert_eq!(reassembly.lost, 0);
    }
}
