//! The agent's own traffic: frames it sends into the virtual network
//! (health probes) and frames routers hand back to it (their answers).

use uuid::Uuid;

use super::Datapath;
use crate::engine::Simulation;

/// The most frames waiting for the agent in [`Datapath::take_local`].
const MAX_LOCAL: usize = 1024;

impl Datapath {
    /// Sends `frame` into the virtual network as if it arrived by the
    /// interior port `ingress` (the agent's own traffic: health probes).
    pub fn inject(&self, ingress: Uuid, frame: Vec<u8>) {
        self.decide(|core, topology, now, actions| {
            core.inject(topology, ingress, frame, now, actions)
        });
    }

    /// Reads what this datapath has learned (MACs, ARP answers,
    /// connections), e.g. to trace a packet on it.
    pub fn with_learned<R>(&self, read: impl FnOnce(&crate::learned::LearnedTables) -> R) -> R {
        self.core.with_learned(read)
    }

    /// What the engine decides for `frame` entering by `ingress` with what
    /// this datapath has learned, without doing it (plans, not traffic).
    pub fn dry_run(&self, ingress: Uuid, frame: &[u8]) -> Simulation {
        let topology = self.topology.load();
        self.core.dry_run(&topology, ingress, frame)
    }

    /// The frames routers handed to this agent since the last call.
    pub fn take_local(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.local.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until [`Datapath::take_local`] has frames (or may have).
    pub async fn local_ready(&self) {
        self.local_ready.notified().await;
    }

    /// Queues a frame for the agent (dropped and counted past the cap).
    pub(super) fn hand_local(&self, frame: Vec<u8>) {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let full = local.len() >= MAX_LOCAL;
        if !full {
            local.push(frame);
        }
        drop(local);
        if full {
            self.count("local_overflow");
        }
        self.local_ready.notify_one();
    }
}
