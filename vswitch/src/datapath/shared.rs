//! Serving veth ports through the agent's [`SharedSockets`]: a receiver
//! task per socket takes the frames of every such port, each frame handed
//! to the core as coming from the port its interface index names.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{Datapath, PortCounters, PortHandle, Scratch};
use crate::io::{Port, RxBatch, SharedSockets};
use crate::snapshot::Topology;
use crate::FastMap;

/// The shared sockets' state inside the datapath.
#[derive(Debug, Default)]
pub(super) struct SharedServing {
    /// The sockets, once [`Datapath::serve_shared`] was called.
    sockets: OnceLock<Arc<SharedSockets>>,
    /// The ports served through them, by interface index.
    by_ifindex: RwLock<FastMap<u32, Arc<PortHandle>>>,
    /// A handle and a task per socket.
    receivers: Mutex<Vec<(Arc<PortHandle>, JoinHandle<()>)>>,
    /// Veth ports that get a socket of their own before the shared
    /// sockets take the rest (see [`PacketSockets::Auto`]).
    dedicated: std::sync::atomic::AtomicUsize,
}

impl Datapath {
    /// Serves ports opened on `sockets` from now on: starts a receiver task
    /// for each socket (once only). While fewer than `dedicated` veth ports
    /// have a socket of their own, a new one gets its own too.
    pub fn serve_shared(self: &Arc<Self>, sockets: Arc<SharedSockets>, dedicated: usize) {
        self.shared.dedicated.store(dedicated, Ordering::Relaxed);
        if self.shared.sockets.set(sockets.clone()).is_err() {
            return;
        }
        let mut receivers = self.shared.lock_receivers();
        for receiver in sockets.receivers() {
            let handle = Arc::new(PortHandle {
                id: Uuid::nil(),
                io: Port::Receiver(receiver),
                counters: PortCounters::default(),
                poll: Default::default(),
                lane: self.next_lane(),
            });
            let datapath = self.clone();
            let served = handle.clone();
            // Its ports have no other reader: it goes on after an error
            // (a stopped receiver would leave them deaf for good).
            let task = tokio::spawn(async move {
                loop {
                    if let Err(error) = datapath.serve_port(served.clone()).await {
                        tracing::warn!(%error, "a shared packet socket failed to receive; going on");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            });
            receivers.push((handle, task));
        }
    }

    /// How many shared packet sockets serve ports (0: every port has its own).
    pub fn shared_socket_count(&self) -> usize {
        self.shared.sockets.get().map_or(0, |sockets| sockets.len())
    }

    /// The shared sockets, if ports are served through them.
    pub fn shared_sockets(&self) -> Option<&Arc<SharedSockets>> {
        self.shared.sockets.get()
    }

    /// Stops the shared sockets' receivers (the sockets close with the
    /// datapath).
    pub fn stop_shared(&self) {
        for (handle, task) in self.shared.lock_receivers().drain(..) {
            handle.poll.detach();
            task.abort();
        }
    }

    /// How many more veth ports get a socket of their own (all of them
    /// without shared sockets).
    pub fn dedicated_room(&self) -> usize {
        if self.shared.sockets.get().is_none() {
            return usize::MAX;
        }
        let dedicated = self.shared.dedicated.load(Ordering::Relaxed);
        let ports = self.ports.read().unwrap_or_else(|p| p.into_inner());
        let own = ports
            .values()
            .filter(|port| matches!(port.io, Port::AfPacket(_)))
            .count();
        dedicated.saturating_sub(own)
    }

    /// The receivers' handles (the poller polls them in always mode).
    pub(super) fn receivers(&self) -> Vec<Arc<PortHandle>> {
        let receivers = self.shared.lock_receivers();
        receivers.iter().map(|(handle, _)| handle.clone()).collect()
    }

    /// Notes a port attached: a shared one is found by its interface index.
    pub(super) fn shared_attached(&self, handle: &Arc<PortHandle>) {
        if let Port::Shared(port) = &handle.io {
            self.shared.write().insert(port.ifindex(), handle.clone());
        }
    }

    /// Notes a port detached.
    pub(super) fn shared_detached(&self, handle: &PortHandle) {
        if let Port::Shared(port) = &handle.io {
            let mut by_ifindex = self.shared.write();
            // Only if it is this port's entry (not a newer one on the same index).
            if by_ifindex
                .get(&port.ifindex())
                .is_some_and(|h| h.id == handle.id)
            {
                by_ifindex.remove(&port.ifindex());
            }
        }
    }

    /// Decides every frame of a batch a receiver took, each as coming from
    /// the port of its interface (a frame of an interface no longer served,
    /// received just before its port was detached, is dropped as unbound).
    pub(super) fn decide_shared(
        &self,
        topology: &Topology,
        rx: &mut RxBatch,
        scratch: &mut Scratch,
    ) {
        let ports = self
            .shared
            .by_ifindex
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for i in 0..rx.len() {
            match ports.get(&rx.source(i)) {
                Some(port) => {
                    let counters = &port.counters;
                    counters.rx.fetch_add(1, Ordering::Relaxed);
                    let bytes = rx.frame(i).len() as u64;
                    counters.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
                    self.decide_frame(topology, port, rx, i, scratch);
                }
                None => self.count(crate::engine::DropReason::Unbound.name()),
            }
        }
    }
}

impl SharedServing {
    fn lock_receivers(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<PortHandle>, JoinHandle<()>)>> {
        self.receivers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, FastMap<u32, Arc<PortHandle>>> {
        self.by_ifindex.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// How an agent receives from the veths of its ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PacketSockets {
    /// A socket per port for the first [`PacketSockets::DEDICATED`] veth
    /// ports (the fastest per packet), the shared sockets for the rest (no
    /// per-port socket to create, register or wake).
    #[default]
    Auto,
    /// A few sockets for all ports, with an eBPF filter naming the ports'
    /// interfaces.
    Shared,
    /// A socket per port.
    PerPort,
}

impl PacketSockets {
    /// Veth ports with a socket of their own in `Auto`: creating a packet
    /// socket walks every other one in the namespace (the kernel's list),
    /// so a few hundred cost nothing and ten thousand seconds.
    pub const DEDICATED: usize = 512;

    /// How many veth ports get a socket of their own when shared sockets
    /// can be opened.
    pub fn dedicated(self) -> usize {
        match self {
            PacketSockets::Auto => Self::DEDICATED,
            PacketSockets::Shared => 0,
            PacketSockets::PerPort => usize::MAX,
        }
    }
}

impl std::str::FromStr for PacketSockets {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(PacketSockets::Auto),
            "shared" => Ok(PacketSockets::Shared),
            "per-port" => Ok(PacketSockets::PerPort),
            other => Err(format!(
                "unknown packet sockets {other:?}: auto, shared or per-port"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PacketSockets;

    #[test]
    fn packet_sockets_parse() {
        assert_eq!("auto".parse(), Ok(PacketSockets::Auto));
        assert_eq!("shared".parse(), Ok(PacketSockets::Shared));
        assert_eq!("per-port".parse(), Ok(PacketSockets::PerPort));
        assert_eq!(PacketSockets::default(), PacketSockets::Auto);
        assert_eq!(PacketSockets::Shared.dedicated(), 0);
        assert_eq!(PacketSockets::PerPort.dedicated(), usize::MAX);
        assert!("one".parse::<PacketSockets>().is_err());
    }
}
