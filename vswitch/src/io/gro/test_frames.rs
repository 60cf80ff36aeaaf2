//! Test helpers for the GRO tests: a receive batch holding given frames.

use crate::io::batch::RxBatch;
use crate::io::vnet::VnetHeader;

/// A receive batch holding `frames`, in order, with their offload headers.
pub(super) fn batch(frames: &[(VnetHeader, Vec<u8>)]) -> RxBatch {
    let mut rx = RxBatch::new(frames.len());
    rx.begin_fill();
    for (i, (vnet, frame)) in frames.iter().enumerate() {
        let slot = &mut rx.slots_mut()[i];
        slot[..10].copy_from_slice(&vnet.to_bytes());
        slot[10..10 + frame.len()].copy_from_slice(frame);
        rx.commit(i, 10 + frame.len(), false);
    }
    rx
}
