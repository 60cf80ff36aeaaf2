//! Health monitors: which pool members this agent probes, the probes
//! themselves (a small TCP client in the agent, see [`session`]) and the
//! results that move members up and down ([`prober`]).
//!
//! # Who probes what
//!
//! A probe is a TCP segment from the load balancer's router: it enters the
//! router by the port that routes to the member, with that port's address
//! as its source and a source port from [`crate::engine::PROBE_PORTS`], and
//! the router forwards it like any packet. The member's answer comes back
//! to the router's address, and the router hands segments to those ports
//! to the local agent ([`crate::engine::Simulation::local`]). Answers enter
//! the virtual network on the host the member's port is bound on, so that
//! host's agent probes the member: each agent simulates a probe toward
//! every monitored member (with what its datapath has learned) and keeps
//! those whose probe leaves by a port of its own host. Every member so has
//! one prober, the work spreads with the members, and probes never cross
//! the tunnel. A member whose probe has no single bound egress yet (an
//! address neither the NSDB nor ARP has placed) is probed by nobody: it
//! keeps its health until traffic places it and the next plan (on every
//! topology change, and every few seconds) picks it up.

pub mod prober;
pub mod session;
mod task;

pub use task::run_health;

use std::collections::HashSet;

use nsdb::MonitorType;
use uuid::Uuid;

use crate::engine::{Simulation, PROBE_PORTS};
use crate::snapshot::Topology;
use prober::Target;
use session::{Check, Endpoints, Session};

/// The members `host` probes in `topo`, with how; `simulate` decides a
/// frame entering by a port (the datapath's engine and learned state).
pub fn targets(
    topo: &Topology,
    host: Uuid,
    simulate: impl Fn(Uuid, &[u8]) -> Simulation,
) -> Vec<Target> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut routers: Vec<_> = topo.load_balancers.iter().collect();
    routers.sort_by_key(|(id, _)| **id);
    for (router, lb) in routers {
        let Some(info) = topo.routers.get(router) else {
            continue;
        };
        for vip in lb.vips.values() {
            let Some(monitor) = topo.monitors.get(&vip.pool) else {
                continue;
            };
            for member in &vip.members {
                if !seen.insert(member.id) {
                    continue;
                }
                let Some(route) =
                    info.routes
                        .lookup(std::net::Ipv4Addr::UNSPECIFIED, member.address, 0)
                else {
                    continue;
                };
                let Some(port) = route.port.and_then(|p| topo.ports.get(&p)) else {
                    continue;
                };
                let Some(address) = port.address else {
                    continue;
                };
                let ends = Endpoints {
                    router_mac: port.mac,
                    src: address.addr(),
                    sport: *PROBE_PORTS.start(),
                    dst: member.address,
                    dport: member.port,
                };
                let (_, syn) = Session::start(ends, Check::Connect, 0);
                if egress_host(&simulate(port.id, &syn)) != Some(host) {
                    continue;
                }
                out.push(Target {
                    member: member.id,
                    ingress: port.id,
                    ends,
                    check: match monitor.kind {
                        MonitorType::Tcp => Check::Connect,
                        MonitorType::Http => Check::Http {
                            path: monitor.http_path.clone(),
                            status: monitor.expected_status,
                        },
                    },
                    interval_ms: u64::from(monitor.interval_ms),
                    timeout_ms: u64::from(monitor.timeout_ms),
                    failures_to_down: monitor.failures_to_down,
                    successes_to_up: monitor.successes_to_up,
                    health: member.health,
                });
            }
        }
    }
    out
}

/// The one host a simulated frame leaves on, if there is one.
fn egress_host(sim: &Simulation) -> Option<Uuid> {
    let hosts: HashSet<Uuid> = sim.outputs.iter().filter_map(|o| o.egress.host).collect();
    match (hosts.len(), hosts.into_iter().next()) {
        (1, host) => host,
        _ => None,
    }
}
