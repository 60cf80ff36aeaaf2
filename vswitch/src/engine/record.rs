//! A simulation as data: what a trace shows of it, owned, serializable,
//! without the frames. The offline trace and the live trace (recorded by
//! agents for real packets, stored in the NSDB, rendered by the API) both
//! render from it, so they print the same way.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Rewrite, RuleHit, Simulation, Stage};
use crate::snapshot::Device;

/// One step of the walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The device acting (`None`: the walk itself).
    pub device: Option<Device>,
    /// The port involved.
    pub port: Option<Uuid>,
    /// The pipeline stage.
    pub stage: Stage,
    /// What happened, in words (ids, not names).
    pub detail: String,
}

/// The packet out of one exterior port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The port.
    pub port: Uuid,
    /// The host it is bound on.
    pub host: Option<Uuid>,
    /// The rewrites applied.
    pub rewrite: Rewrite,
}

/// A frame a device generated in answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRecord {
    /// The port it leaves by.
    pub port: Uuid,
    /// Its length.
    pub bytes: usize,
}

/// What a trace shows of one simulation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// The verdict in one word (see [`Simulation::verdict`]).
    pub verdict: String,
    /// Every step.
    pub steps: Vec<StepRecord>,
    /// Where the packet went.
    pub outputs: Vec<OutputRecord>,
    /// What devices answered.
    pub replies: Vec<ReplyRecord>,
    /// Why branches ended (debug form of the engine's reasons).
    pub drops: Vec<String>,
    /// The rules that matched, in order.
    pub rules: Vec<RuleHit>,
    /// The next hop (router, address) the packet waits for.
    pub held_for: Option<(Uuid, IpAddr)>,
}

impl From<&Simulation> for TraceRecord {
    fn from(sim: &Simulation) -> TraceRecord {
        TraceRecord {
            verdict: sim.verdict().to_string(),
            steps: sim
                .trace
                .iter()
                .map(|s| StepRecord {
                    device: s.device,
                    port: s.port,
                    stage: s.stage,
                    detail: s.detail.clone(),
                })
                .collect(),
            outputs: sim
                .outputs
                .iter()
                .map(|o| OutputRecord {
                    port: o.egress.port,
                    host: o.egress.host,
                    rewrite: o.rewrite,
                })
                .collect(),
            replies: sim
                .generated
                .iter()
                .map(|g| ReplyRecord {
                    port: g.egress.port,
                    bytes: g.frame.len(),
                })
                .collect(),
            drops: sim.drops.iter().map(|d| format!("{d:?}")).collect(),
            rules: sim.rules.clone(),
            held_for: sim.held_for,
        }
    }
}

impl TraceRecord {
    /// Records that the datapath refused the copies for other hosts as too
    /// big for the tunnel (the sender was answered with ICMP
    /// fragmentation-needed or packet-too-big): a core decision after the
    /// engine's, shown as the final step.
    pub fn note_tunnel_refusal(&mut self, mtu: usize, host: Uuid) {
        self.steps.push(StepRecord {
            device: None,
            port: None,
            stage: Stage::Tunnel,
            detail: format!(
                "too big for the tunnel (carries IP packets of up to {mtu} bytes) and not to be \
                 fragmented: the copies for other hosts were refused and the sender told the MTU"
            ),
        });
        self.outputs.retain(|o| o.host == Some(host));
        self.drops.push("TunnelFragNeeded".into());
        if self.outputs.is_empty() {
            self.verdict = "reply".into();
        }
    }

    /// Whether the walk crossed `device` (a bridge or router id).
    pub fn crosses(&self, device: Uuid) -> bool {
        self.steps.iter().any(
            |s| matches!(s.device, Some(Device::Bridge(id) | Device::Router(id)) if id == device),
        )
    }

    /// Whether the packet entered or left by `port`, or crossed it.
    pub fn touches_port(&self, port: Uuid) -> bool {
        self.outputs.iter().any(|o| o.port == port)
            || self.steps.iter().any(|s| s.port == Some(port))
    }
}
