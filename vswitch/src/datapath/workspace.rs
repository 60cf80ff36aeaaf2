//! What a port task borrows for one batch: receive buffers and the
//! scratch space the driver and the core reuse (a pool shared by every
//! port, about one workspace per worker thread), and the batch's sends
//! gathered per egress port.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::core::{Action, CoreScratch};
use crate::io::{Datagrams, RxBatch};

/// Frames a port task receives in one batch.
const RX_BATCH: usize = 64;

/// What a port task needs for one batch: receive buffers and scratch.
pub struct Workspace {
    /// The receive buffers.
    pub(super) rx: RxBatch,
    /// The scratch space.
    pub(super) scratch: Scratch,
}

/// Workspaces shared by the port tasks (and the poller, and the tunnel's
/// receivers for frames from VTEPs). A task borrows one after its port
/// is readable and returns it once the batch is handled, without awaiting
/// in between, so no more are ever made than batches are handled at once
/// (about one per thread that handles them). Taking and returning do not
/// allocate once the pool has grown to that size.
#[derive(Default)]
pub(crate) struct WorkspacePool {
    free: Mutex<Vec<Workspace>>,
}

impl WorkspacePool {
    /// A free workspace, or a new one if all are lent.
    pub(crate) fn take(&self) -> Workspace {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        free.unwrap_or_else(|| Workspace {
            rx: RxBatch::new(RX_BATCH),
            scratch: Scratch::default(),
        })
    }

    /// Returns a workspace for other tasks.
    pub(crate) fn put(&self, workspace: Workspace) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(workspace);
    }

    /// How many workspaces exist and are not lent.
    pub(crate) fn free(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Receive-batch indexes to send, by egress port, for one batch. Only the
/// ports of the batch at hand are visited (a pooled workspace meets every
/// port of the host over time), and their index buffers are kept for the
/// next batches.
#[derive(Default)]
pub(crate) struct PortSends {
    /// `lists[..used]` are this batch's; the rest keep their buffers.
    lists: Vec<(Uuid, Vec<usize>)>,
    used: usize,
    /// Where each of this batch's ports is in `lists` (looked up once per
    /// frame: a fast hasher, the keys being the host's own port ids).
    slot: HashMap<Uuid, usize, foldhash::fast::RandomState>,
}

impl PortSends {
    /// Forgets the previous batch.
    pub(crate) fn clear(&mut self) {
        self.slot.clear();
        self.used = 0;
    }

    /// Adds frame `i` to `port`'s sends.
    pub(crate) fn push(&mut self, port: Uuid, i: usize) {
        let slot = match self.slot.get(&port) {
            Some(&slot) => slot,
            None => {
                let slot = self.used;
                match self.lists.get_mut(slot) {
                    Some((id, list)) => {
                        *id = port;
                        list.clear();
                    }
                    None => self.lists.push((port, Vec::new())),
                }
                self.used += 1;
                self.slot.insert(port, slot);
                slot
            }
        };
        self.lists[slot].1.push(i);
    }

    /// This batch's ports and the frames each sends, to rearrange.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&Uuid, &mut Vec<usize>)> {
        self.lists[..self.used]
            .iter_mut()
            .map(|(id, list)| (&*id, list))
    }

    /// The frames (of the first 64) that more than one port sends.
    pub(crate) fn shared(&self) -> u64 {
        let (mut seen, mut shared) = (0u64, 0u64);
        for (_, list) in &self.lists[..self.used] {
            for &i in list.iter().filter(|&&i| i < 64) {
                shared |= seen & (1 << i);
                seen |= 1 << i;
            }
        }
        shared
    }
}

/// Per-task scratch space, reused across batches so the hot path does not allocate.
#[derive(Default)]
pub struct Scratch {
    /// What the core decided for the frame at hand.
    pub(super) actions: Vec<Action>,
    /// The core's own scratch.
    pub(super) core: CoreScratch,
    /// Receive-batch indexes to send, by local egress port.
    pub(super) sends: PortSends,
    /// Frames the core made, sent once the batch's own frames are.
    pub(super) made: Vec<Action>,
    /// Tunnel datagrams, in the order the actions named them.
    pub(super) datagrams: Datagrams,
    /// The time of the batch at hand (`Datapath::now_ms`), read once a
    /// batch rather than once a frame.
    pub(super) now: u64,
    /// What each frame of a port's sends carries once runs of one flow's
    /// frames are merged (`io::coalesce`).
    pub(super) runs: Vec<crate::io::Run>,
}
