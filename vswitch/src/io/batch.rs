//! Preallocated packet buffers reused across receive and send calls.
//!
//! Every slot holds one frame in wire format, `[virtio_net_hdr | frame]`,
//! exactly what AF_PACKET (with `PACKET_VNET_HDR`) and the TAP (with
//! `IFF_VNET_HDR`) read and write. A received slot can therefore be sent to
//! another port without copying (see `send_rx` on the ports). Slots are
//! allocated once, when the batch is created; the hot path never allocates.

use super::vnet::{VnetHeader, VNET_HDR_LEN};

/// Largest frame (without the vnet header) a default slot holds: a 64 KiB GSO
/// super-frame plus room for the Ethernet and VLAN headers.
pub const MAX_FRAME_LEN: usize = 64 * 1024 + 128;

/// A default slot: [`VNET_HDR_LEN`] + [`MAX_FRAME_LEN`] bytes.
pub const SLOT_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

fn alloc_slots(capacity: usize, max_frame_len: usize) -> Vec<Box<[u8]>> {
    let slot = VNET_HDR_LEN + max_frame_len.max(1);
    // vec![0; n] is calloc'ed: untouched pages of big slots cost no memory.
    (0..capacity.max(1))
        .map(|_| vec![0u8; slot].into_boxed_slice())
        .collect()
}

/// Receive buffers for up to `capacity` frames, filled by one `recv_batch` call.
#[derive(Debug)]
pub struct RxBatch {
    slots: Vec<Box<[u8]>>,
    /// Wire length (header + frame) of slots `0..count`.
    lens: Vec<usize>,
    /// The interface index each frame of `0..count` came from (0: not recorded).
    sources: Vec<u32>,
    count: usize,
    dropped: usize,
}

impl RxBatch {
    /// A batch of `capacity` (at least 1) slots of [`SLOT_LEN`] bytes.
    pub fn new(capacity: usize) -> RxBatch {
        Self::with_max_frame_len(capacity, MAX_FRAME_LEN)
    }

    /// A batch whose slots hold frames of up to `max_frame_len` bytes (larger ones are dropped).
    pub fn with_max_frame_len(capacity: usize, max_frame_len: usize) -> RxBatch {
        let slots = alloc_slots(capacity, max_frame_len);
        let lens = vec![0; slots.len()];
        let sources = vec![0; slots.len()];
        RxBatch {
            slots,
            lens,
            sources,
            count: 0,
            dropped: 0,
        }
    }

    /// Maximum number of frames one receive call returns.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of frames currently held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if no frame is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forgets the held frames (the buffers are kept).
    pub fn clear(&mut self) {
        self.count = 0;
        self.dropped = 0;
    }

    /// Frames the kernel consumed during the last receive but that are not in the
    /// batch (truncated because larger than a slot, or an offload the kernel
    /// could not describe in a vnet header).
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The vnet header of frame `i` (`NONE` if `i` is out of range).
    pub fn vnet(&self, i: usize) -> VnetHeader {
        self.wire(i).and_then(VnetHeader::parse).unwrap_or_default()
    }

    /// Rewrites the vnet header of frame `i`; false if `i` is out of range.
    pub fn set_vnet(&mut self, i: usize, vnet: &VnetHeader) -> bool {
        if i >= self.count {
            return false;
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        vnet.write_to(&mut hdr);
        self.slots[i][..VNET_HDR_LEN].copy_from_slice(&hdr);
        true
    }

    /// The bytes of the frames at `indexes` (without vnet headers).
    pub fn bytes_of(&self, indexes: impl IntoIterator<Item = usize>) -> usize {
        indexes.into_iter().map(|i| self.frame(i).len()).sum()
    }

    /// The Ethernet frame `i` (without vnet header); empty if out of range.
    pub fn frame(&self, i: usize) -> &[u8] {
        self.wire(i).map(|w| &w[VNET_HDR_LEN..]).unwrap_or(&[])
    }

    /// The Ethernet frame `i`, mutable for in-place rewrites; empty if out of range.
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        if i >= self.count {
            return &mut [];
        }
        let len = self.lens[i];
        &mut self.slots[i][VNET_HDR_LEN..len]
    }

    /// Frame `i` in wire format (vnet header then frame), as ports send it.
    pub fn wire(&self, i: usize) -> Option<&[u8]> {
        if i >= self.count {
            return None;
        }
        Some(&self.slots[i][..self.lens[i]])
    }

    /// Iterates over `(vnet header, frame)` of the held frames.
    pub fn iter(&self) -> impl Iterator<Item = (VnetHeader, &[u8])> + '_ {
        (0..self.count).map(move |i| (self.vnet(i), self.frame(i)))
    }

    /// Resets the batch before a receive fills it.
    pub(crate) fn begin_fill(&mut self) {
        self.count = 0;
        self.dropped = 0;
    }

    /// The slot buffers, to receive into (slot `i` is committed with [`RxBatch::commit`]).
    pub(crate) fn slots_mut(&mut self) -> &mut [Box<[u8]>] {
        &mut self.slots
    }

    /// Records that slot `i` received `wire_len` bytes (`truncated`: did not fit).
    ///
    /// Slots must be committed in increasing order starting at 0; a dropped
    /// frame's slot is swapped to the end so kept frames stay contiguous.
    pub(crate) fn commit(&mut self, i: usize, wire_len: usize, truncated: bool) {
        self.commit_from(i, wire_len, truncated, 0)
    }

    /// As [`RxBatch::commit`], recording the interface the frame came from.
    pub(crate) fn commit_from(&mut self, i: usize, wire_len: usize, truncated: bool, source: u32) {
        if truncated || wire_len < VNET_HDR_LEN || wire_len > self.slots[i].len() {
            self.dropped += 1;
            return;
        }
        if i != self.count {
            self.slots.swap(i, self.count);
        }
        self.lens[self.count] = wire_len;
        self.sources[self.count] = source;
        self.count += 1;
    }

    /// The index of the interface frame `i` came from, when the receiving
    /// socket serves several (0 otherwise, or if `i` is out of range).
    pub fn source(&self, i: usize) -> u32 {
        if i < self.count {
            self.sources[i]
        } else {
            0
        }
    }

    /// Drops the first `n` bytes of frame `i` and gives it the offload
    /// header `vnet`; false (nothing changed) if `i` is out of range or the
    /// frame is shorter than `n`.
    pub(crate) fn strip_front(&mut self, i: usize, n: usize, vnet: &VnetHeader) -> bool {
        if i >= self.count || VNET_HDR_LEN + n > self.lens[i] {
            return false;
        }
        let len = self.lens[i];
        self.slots[i].copy_within(VNET_HDR_LEN + n..len, VNET_HDR_LEN);
        self.lens[i] = len - n;
        self.set_vnet(i, vnet)
    }

    /// Appends frame `src`'s bytes from `skip` on to frame `dst`; false
    /// (nothing changed) if either is out of range, they are the same, or
    /// `dst`'s slot has no room.
    pub(crate) fn append_from(&mut self, dst: usize, src: usize, skip: usize) -> bool {
        if dst >= self.count || src >= self.count || dst == src {
            return false;
        }
        let (dst_len, src_len) = (self.lens[dst], self.lens[src]);
        let from = VNET_HDR_LEN + skip;
        if from > src_len || dst_len + (src_len - from) > self.slots[dst].len() {
            return false;
        }
        let (d, s) = if dst < src {
            let (low, high) = self.slots.split_at_mut(src);
            (&mut low[dst], &high[0])
        } else {
            let (low, high) = self.slots.split_at_mut(dst);
            (&mut high[0], &low[src])
        };
        d[dst_len..dst_len + (src_len - from)].copy_from_slice(&s[from..src_len]);
        self.lens[dst] = dst_len + (src_len - from);
        true
    }

    /// The longest frame slot `i` holds (0 past the slots).
    pub fn room(&self, i: usize) -> usize {
        self.slots
            .get(i)
            .map_or(0, |s| s.len().saturating_sub(VNET_HDR_LEN))
    }

    /// Whether every slot holds a frame.
    pub fn is_full(&self) -> bool {
        self.count == self.slots.len()
    }

    /// Copies `frame` into the next free slot, lets `offload` fix it in
    /// place and name its offload header, and keeps it; false (nothing
    /// kept) if the batch is full or the frame does not fit a slot.
    pub(crate) fn push(
        &mut self,
        frame: &[u8],
        offload: impl FnOnce(&mut [u8]) -> VnetHeader,
    ) -> bool {
        let i = self.count;
        let wire_len = VNET_HDR_LEN + frame.len();
        let Some(slot) = self.slots.get_mut(i).filter(|s| s.len() >= wire_len) else {
            return false;
        };
        slot[VNET_HDR_LEN..wire_len].copy_from_slice(frame);
        let vnet = offload(&mut slot[VNET_HDR_LEN..wire_len]);
        slot[..VNET_HDR_LEN].copy_from_slice(&vnet.to_bytes());
        self.commit(i, wire_len, false);
        true
    }

    /// Counts a frame the kernel discarded without delivering it to us.
    pub(crate) fn note_dropped(&mut self) {
        self.dropped += 1;
    }
}

/// Send buffers: frames queued with `push*`, drained by `send_batch` calls.
///
/// A send that is cut short (the socket buffer is full) leaves the unsent
/// frames queued, in order; the batch empties itself once all were sent.
#[derive(Debug)]
pub struct TxBatch {
    slots: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    head: usize,
    tail: usize,
}

impl TxBatch {
    /// A batch of `capacity` (at least 1) slots of [`SLOT_LEN`] bytes.
    pub fn new(capacity: usize) -> TxBatch {
        Self::with_max_frame_len(capacity, MAX_FRAME_LEN)
    }

    /// A batch whose slots hold frames of up to `max_frame_len` bytes.
    pub fn with_max_frame_len(capacity: usize, max_frame_len: usize) -> TxBatch {
        let slots = alloc_slots(capacity, max_frame_len);
        let lens = vec![0; slots.len()];
        TxBatch {
            slots,
            lens,
            head: 0,
            tail: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of frames queued and not yet sent.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// True if no further frame can be pushed before a send.
    pub fn is_full(&self) -> bool {
        self.tail == self.slots.len()
    }

    /// Drops every queued frame.
    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// Largest frame (without vnet header) a slot holds.
    pub fn max_frame_len(&self) -> usize {
        self.slots.first().map_or(0, |s| s.len() - VNET_HDR_LEN)
    }

    /// Queues a copy of `frame` with `vnet`; false if full or the frame does not fit.
    pub fn push(&mut self, vnet: &VnetHeader, frame: &[u8]) -> bool {
        self.push_with(vnet, |buf| match buf.get_mut(..frame.len()) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                frame.len()
            }
            None => usize::MAX,
        })
    }

    /// Queues a frame already in wire format (vnet header then frame), e.g. `RxBatch::wire`.
    pub fn push_wire(&mut self, wire: &[u8]) -> bool {
        if self.is_full() || wire.len() < VNET_HDR_LEN || wire.len() > self.slots[self.tail].len() {
            return false;
        }
        self.slots[self.tail][..wire.len()].copy_from_slice(wire);
        self.lens[self.tail] = wire.len();
        self.tail += 1;
        true
    }

    /// Builds a frame in place: `build` fills the buffer and returns the frame
    /// length; false (nothing queued) if full or the length exceeds the buffer.
    pub fn push_with(&mut self, vnet: &VnetHeader, build: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.is_full() {
            return false;
        }
        let slot = &mut self.slots[self.tail];
        let len = build(&mut slot[VNET_HDR_LEN..]);
        if len > slot.len() - VNET_HDR_LEN {
            return false;
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        vnet.write_to(&mut hdr);
        slot[..VNET_HDR_LEN].copy_from_slice(&hdr);
        self.lens[self.tail] = VNET_HDR_LEN + len;
        self.tail += 1;
        true
    }

    /// The queued frames in wire format, oldest first.
    pub(crate) fn pending(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (self.head..self.tail).map(move |i| &self.slots[i][..self.lens[i]])
    }

    /// Marks the `n` oldest queued frames as sent (or dropped).
    pub(crate) fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.tail);
        if self.head == self.tail {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_commit_compacts_dropped_slots() {
        let mut rx = RxBatch::with_max_frame_len(3, 100);
        rx.begin_fill();
        let slots = rx.slots_mut();
        slots[0][VNET_HDR_LEN] = 0xaa;
        slots[1][VNET_HDR_LEN] = 0xbb;
        slots[2][VNET_HDR_LEN] = 0xcc;
        rx.commit(0, VNET_HDR_LEN + 1, false);
        rx.commit(1, VNET_HDR_LEN + 100, true);
        rx.commit(2, VNET_HDR_LEN + 2, false);
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.dropped(), 1);
        assert_eq!(rx.frame(0), &[0xaa]);
        assert_eq!(rx.frame(1), &[0xcc, 0]);
        assert_eq!(rx.frame(2), &[] as &[u8]);
        assert!(rx.set_vnet(
            1,
            &VnetHeader {
                gso_size: 7,
                ..VnetHeader::NONE
            }
        ));
        assert_eq!(rx.vnet(1).gso_size, 7);
        assert_eq!(rx.iter().count(), 2);
    }

    #[test]
    fn tx_queue_and_consume() {
        let mut tx = TxBatch::with_max_frame_len(2, 10);
        assert!(tx.push(&VnetHeader::NONE, &[1, 2, 3]));
        assert!(!tx.push(&VnetHeader::NONE, &[0; 11]));
        assert!(tx.push_wire(&[0; VNET_HDR_LEN + 4]));
        assert!(tx.is_full());
        assert!(!tx.push(&VnetHeader::NONE, &[1]));
        assert_eq!(tx.len(), 2);
        let first: Vec<usize> = tx.pending().map(|w| w.len()).collect();
        assert_eq!(first, vec![VNET_HDR_LEN + 3, VNET_HDR_LEN + 4]);
        tx.consume(1);
        assert_eq!(tx.len(), 1);
        tx.consume(1);
        assert!(tx.is_empty() && !tx.is_full());
    }
}
