//! The agent's own traffic: frames it sends into the virtual network
//! (health probes) and frames routers hand back to it (their answers).

use uuid::Uuid;

use super::{Datapath, HeldFrame, Scratch};
use crate::engine::{self, Simulation};

/// The most frames waiting for the agent in [`Datapath::take_local`].
const MAX_LOCAL: usize = 1024;

impl Datapath {
    /// Sends `frame` into the virtual network as if it arrived by the
    /// interior port `ingress` (the agent's own traffic: health probes).
    pub fn inject(&self, ingress: Uuid, frame: Vec<u8>) {
        let now = self.now_ms();
        let topology = self.topology.load();
        let mut scratch = Scratch::default();
        let held = HeldFrame {
            next_hop: None,
            in_port: ingress,
            frame,
            since_ms: now,
        };
        let mut state = self.state();
        self.release_held(&mut state, &topology, vec![held], &mut scratch, now);
        drop(state);
        self.send_all_generated(&topology, &mut scratch);
    }

    /// What the engine decides for `frame` entering by `ingress` with what
    /// this datapath has learned, without doing it (plans, not traffic).
    pub fn dry_run(&self, ingress: Uuid, frame: &[u8]) -> Simulation {
        let topology = self.topology.load();
        let state = self.state();
        engine::simulate(&topology, &state.learned, ingress, frame)
    }

    /// The frames routers handed to this agent since the last call.
    pub fn take_local(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.local.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until [`Datapath::take_local`] has frames (or may have).
    pub async fn local_ready(&self) {
        self.local_ready.notified().await;
    }

    pub(super) fn hand_local(&self, frames: Vec<Vec<u8>>) {
        if frames.is_empty() {
            return;
        }
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_LOCAL.saturating_sub(local.len());
        if frames.len() > room {
            self.count("local_overflow");
        }
        local.extend(frames.into_iter().take(room));
        drop(local);
        self.local_ready.notify_one();
    }
}
