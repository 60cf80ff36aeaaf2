//! Frames from standard VTEPs, decided by the tunnel receiver that got
//! them: each is copied once into a borrowed workspace's receive batch
//! (its offload header fixed on the way, `VtepPort::offload_of`), and a
//! run of one VTEP port's frames is handled as that port's batch, as if
//! the port had received it. No queue, no allocation and no other task
//! between the tunnel socket and the decision.

use std::sync::Arc;

use uuid::Uuid;

use super::{Datapath, PortHandle, Workspace};
use crate::io::Port;

/// The VTEP frames of one tunnel batch waiting to be decided: whose they
/// are, and where they wait (borrowed from the pool on the first one).
#[derive(Default)]
pub(super) struct FromVteps {
    port: Option<Arc<PortHandle>>,
    workspace: Option<Workspace>,
}

impl Datapath {
    /// Queues `frame`, sent by the endpoint of VTEP port `port`, to be
    /// decided with the port's other frames; the frames of another port
    /// queued before it are decided first.
    pub(super) fn queue_vtep_frame(&self, vteps: &mut FromVteps, port: Uuid, frame: &[u8]) {
        let same = vteps.port.as_ref().is_some_and(|p| p.id == port);
        let full = vteps.workspace.as_ref().is_some_and(|w| w.rx.is_full());
        if !same || full {
            self.decide_vtep_frames(vteps);
        }
        if vteps.port.is_none() {
            match self.port(port) {
                Some(handle) if matches!(handle.io, Port::Vtep(_)) => vteps.port = Some(handle),
                _ => {
                    self.count("tunnel_vtep_not_attached");
                    return;
                }
            }
        }
        let (Some(handle), workspace) = (&vteps.port, &mut vteps.workspace) else {
            return;
        };
        let Port::Vtep(vtep) = &handle.io else {
            return;
        };
        let workspace = workspace.get_or_insert_with(|| self.workspaces.take());
        if !workspace.rx.push(frame, |f| vtep.offload_of(f)) {
            handle
                .counters
                .drops
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Decides the queued frames as their port's batch.
    pub(super) fn decide_vtep_frames(&self, vteps: &mut FromVteps) {
        let port = vteps.port.take();
        let Some(Workspace { rx, scratch }) = vteps.workspace.as_mut() else {
            return;
        };
        if let (Some(port), false) = (port, rx.is_empty()) {
            self.handle_batch(&port, rx, scratch);
        }
        rx.begin_fill();
    }

    /// Decides the queued frames and gives the workspace back to the pool.
    pub(super) fn finish_vtep_frames(&self, vteps: &mut FromVteps) {
        self.decide_vtep_frames(vteps);
        if let Some(workspace) = vteps.workspace.take() {
            self.workspaces.put(workspace);
        }
    }
}
