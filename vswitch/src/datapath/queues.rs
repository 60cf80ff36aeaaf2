//! A port's extra receive queues: more sockets on its veth in a flow-hash
//! fanout group (see [`crate::io::AfPacket::add_queues`]) or a multi-queue
//! TAP's other queues ([`crate::io::Tap::open_queues`]), each served by a
//! task of its own, so that a port's different flows are decided on
//! different cores at once while each flow stays on one socket, in order.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Datapath, PortHandle};
use crate::io::{Port, PortIo};

/// Most ports with extra receive queues: each queue is a socket, and
/// sockets cost the kernel more to create the more a namespace holds.
pub const QUEUED_PORTS: usize = 512;

impl Datapath {
    /// How many extra receive queues each port opened now gets: none while
    /// a poller runs (it serves a port's own socket alone, and a flow hashed
    /// to another queue would wait for wakeups).
    pub fn port_queues(&self) -> usize {
        if self.polls() {
            return 0;
        }
        self.port_queues.load(Ordering::Relaxed)
    }

    /// Sets the extra receive queues of ports opened from now on.
    pub fn set_port_queues(&self, queues: usize) {
        self.port_queues.store(queues, Ordering::Relaxed);
    }

    /// How many more ports get extra receive queues (the first
    /// [`QUEUED_PORTS`] with a socket of their own).
    pub fn queued_room(&self) -> usize {
        let ports = self.ports.read().unwrap_or_else(|p| p.into_inner());
        let queued = ports
            .values()
            .filter(|port| port.io.queue_count() > 0)
            .count();
        QUEUED_PORTS.saturating_sub(queued)
    }

    /// Serves `port` (see [`Datapath::serve_port`]) and each of its extra
    /// receive queues on a task of its own, until the port's socket or any
    /// of its queues fails to receive (a queue no one reads would lose its
    /// flows, so the port ends with it and is opened again). The queues'
    /// tasks end with this future, also when it is dropped (as an aborted
    /// task's is).
    pub async fn serve(self: Arc<Self>, port: Arc<PortHandle>) -> std::io::Result<()> {
        let queues = port.io.queue_count();
        let mut queue_tasks = tokio::task::JoinSet::new();
        for k in 0..queues {
            let (datapath, port) = (self.clone(), port.clone());
            queue_tasks.spawn(async move { datapath.serve_queue(&port, k).await });
        }
        tokio::select! {
            served = self.serve_port(port.clone()) => served,
            Some(ended) = queue_tasks.join_next() => match ended {
                Ok(Err(error)) => Err(std::io::Error::new(
                    error.kind(),
                    format!("receive queue: {error}"),
                )),
                Ok(Ok(())) => Err(std::io::Error::other("a receive queue ended")),
                Err(join) => Err(std::io::Error::other(join)),
            },
        }
    }

    /// Receives from `port`'s extra queue `k` and forwards until it fails.
    async fn serve_queue(&self, port: &PortHandle, k: usize) -> std::io::Result<()> {
        match &port.io {
            Port::AfPacket(socket) => match socket.queues().get(k) {
                Some(queue) => self.serve_queue_on(port, queue).await,
                None => Ok(()),
            },
            Port::Tap(tap) => match tap.queues().get(k) {
                Some(queue) => self.serve_queue_on(port, queue).await,
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Receives from `queue`, one of `port`'s, and forwards as from `port`,
    /// borrowing a workspace for each batch as the port's own task does.
    async fn serve_queue_on<Q: PortIo + Sync>(
        &self,
        port: &PortHandle,
        queue: &Q,
    ) -> std::io::Result<()> {
        loop {
            queue.readable().await?;
            let mut workspace = self.workspaces.take();
            let received = queue.try_recv_batch(&mut workspace.rx);
            if let Ok(n) = received {
                if n > 0 {
                    let super::Workspace { rx, scratch } = &mut workspace;
                    self.handle_batch(port, rx, scratch);
                    self.queue_frames.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            self.workspaces.put(workspace);
            received?;
        }
    }

    /// Frames received by ports' extra queues.
    pub fn queue_frames(&self) -> u64 {
        self.queue_frames.load(Ordering::Relaxed)
    }
}
