//! Live trace: recording what the core decided for the real packets that
//! match an operator's trace request (see `nsdb::livetrace`).
//!
//! With no request active, a packet pays one relaxed atomic load. With
//! requests active, a packet pays a comparison of its headers with each
//! request's header terms; only a packet that passes them is checked
//! further (its ports and, on a cache hit, whether its flow crosses the
//! device asked for), and only a packet that matches is simulated again
//! for its steps (a cache hit) or has its simulation kept (a miss). The
//! core hands the recording to its driver as an [`super::Action::Traced`],
//! before the frame's own actions: the driver stamps the time, marks the
//! frame's tunnel datagrams with [`TunnelTag`] so the receiving host can
//! record the delivery under the same trace, and publishes the event.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use nsdb::kv::LeaseId;
use nsdb::LiveTraceRequest;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::{PacketInfo, TraceRecord};

/// At most this many requests are matched at once on one host (the rest
/// wait until one ends).
pub const MAX_ACTIVE_TRACES: usize = 64;

/// The trace mark a tunnel datagram of a traced packet carries in the
/// VXLAN header's reserved fields: the request's tag byte and the sending
/// host's sequence number of the packet (its low 24 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TunnelTag {
    /// [`LiveTraceRequest::tag_byte`] of the request.
    pub request_byte: u8,
    /// The sender's sequence number, modulo 2^24.
    pub seq: u32,
}

/// How the core decided a traced packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowUse {
    /// A cached flow decided it (the steps are the engine's, run again).
    Hit,
    /// The engine decided it (and the flow may now be cached).
    Miss,
}

/// What an event of a live trace says happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceEventKind {
    /// The host received the packet on a local port and decided its fate.
    Decided {
        /// The port it entered by.
        in_port: Uuid,
        /// Cache hit or miss.
        flow: FlowUse,
        /// `sent`, `dropped`, `answered` or `held`.
        fate: String,
        /// The engine's steps and verdict.
        trace: TraceRecord,
        /// The mark its tunnel datagrams carry, if any left for a host.
        tunnel_tag: Option<TunnelTag>,
    },
    /// The host received the packet through the tunnel and delivered it.
    Delivered {
        /// The host that sent it, if known by its address.
        from_host: Option<Uuid>,
        /// The mark it carried.
        tunnel_tag: TunnelTag,
        /// The local ports it was delivered to.
        ports: Vec<Uuid>,
    },
}

/// One recorded event, as stored under the request in the NSDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTraceEvent {
    /// The request it answers.
    pub request: Uuid,
    /// The lease it is stored under (the request's; not stored).
    #[serde(skip)]
    pub lease: LeaseId,
    /// The host that recorded it.
    pub host: Uuid,
    /// Its number among the host's events for the request.
    pub seq: u32,
    /// When (milliseconds since the Unix epoch; set by the driver).
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: TraceEventKind,
}

/// One request as the core matches it.
#[derive(Debug)]
pub(crate) struct Active {
    request: LiveTraceRequest,
    /// Packets recorded so far (the next sequence number).
    recorded: AtomicU32,
    /// Tunnel deliveries recorded so far.
    delivered: AtomicU32,
}

/// Sequence numbers of deliveries have this bit set (they follow the
/// senders' limits, not this host's, and must not take its numbers).
const DELIVERY_SEQ: u32 = 1 << 31;

impl Active {
    /// The next sequence number of a decided packet, unless the limit is
    /// reached.
    fn next_seq(&self) -> Option<u32> {
        let seq = self.recorded.fetch_add(1, Ordering::Relaxed);
        (seq < self.request.limit_packets).then_some(seq)
    }

    /// The next sequence number of a delivery.
    fn next_delivery_seq(&self) -> u32 {
        DELIVERY_SEQ | (self.delivered.fetch_add(1, Ordering::Relaxed) & !DELIVERY_SEQ)
    }
}

/// The requests this host matches packets against.
#[derive(Debug, Default)]
pub(crate) struct Tracer {
    active: AtomicBool,
    requests: ArcSwap<Vec<Active>>,
}

/// Requests (bit `i`: request `i` of the tracer's list) a packet may match.
pub(crate) type Candidates = u64;

impl Tracer {
    /// Replaces the requests; keeps the counts of those that stay.
    pub(crate) fn set(&self, requests: Vec<LiveTraceRequest>) {
        let old = self.requests.load();
        let next: Vec<Active> = requests
            .into_iter()
            .take(MAX_ACTIVE_TRACES)
            .map(|request| {
                let kept = old.iter().find(|a| a.request.id == request.id);
                let count =
                    |a: &Active, which: fn(&Active) -> &AtomicU32| which(a).load(Ordering::Relaxed);
                Active {
                    request,
                    recorded: AtomicU32::new(kept.map_or(0, |a| count(a, |a| &a.recorded))),
                    delivered: AtomicU32::new(kept.map_or(0, |a| count(a, |a| &a.delivered))),
                }
            })
            .collect();
        self.active.store(!next.is_empty(), Ordering::Release);
        self.requests.store(Arc::new(next));
    }

    /// The requests in force, if any (one relaxed load when none).
    pub(crate) fn current(&self) -> Option<arc_swap::Guard<Arc<Vec<Active>>>> {
        if !self.active.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.requests.load())
    }
}

/// The requests whose header terms `info` satisfies.
pub(crate) fn header_candidates(requests: &[Active], info: &PacketInfo) -> Candidates {
    let ip = info.ip();
    let mut candidates = 0;
    for (i, active) in requests.iter().enumerate() {
        let m = &active.request.matcher;
        let passes = match &ip {
            Some(ip) => m.matches_headers(ip.src, ip.dst, ip.proto, ip.ports),
            None => !m.has_header_terms(),
        };
        if passes {
            candidates |= 1 << i;
        }
    }
    candidates
}

/// Of `candidates`, those whose port and device terms may hold for a packet
/// in by `in_port` and out of `out_ports`; `crosses` says whether the
/// decision crossed a device (asked only when a request names one).
pub(crate) fn refine(
    requests: &[Active],
    mut candidates: Candidates,
    in_port: Uuid,
    out_ports: impl Fn(Uuid) -> bool,
    crosses: impl Fn(Uuid) -> bool,
) -> Candidates {
    for (i, active) in requests.iter().enumerate() {
        if candidates & (1 << i) == 0 {
            continue;
        }
        let m = &active.request.matcher;
        let port_ok = m.port_id.is_none_or(|p| p == in_port || out_ports(p));
        if !port_ok || !m.device_id.is_none_or(&crosses) {
            candidates &= !(1 << i);
        }
    }
    candidates
}

/// Events for the candidates a recorded decision matches (each within its
/// request's limit); the first's tag marks the frame's tunnel datagrams.
pub(crate) fn decided_events(
    requests: &[Active],
    candidates: Candidates,
    host: Uuid,
    in_port: Uuid,
    flow: FlowUse,
    fate: &str,
    trace: &TraceRecord,
) -> Vec<LiveTraceEvent> {
    let mut events = Vec::new();
    let leaves = trace.outputs.iter().any(|o| o.host != Some(host));
    for (i, active) in requests.iter().enumerate() {
        if candidates & (1 << i) == 0 {
            continue;
        }
        let m = &active.request.matcher;
        let matched = m
            .port_id
            .is_none_or(|p| p == in_port || trace.touches_port(p))
            && m.device_id.is_none_or(|d| trace.crosses(d));
        if !matched {
            continue;
        }
        let Some(seq) = active.next_seq() else {
            continue;
        };
        let tunnel_tag = (leaves && events.is_empty()).then(|| TunnelTag {
            request_byte: active.request.tag_byte(),
            seq: seq & 0x00ff_ffff,
        });
        events.push(LiveTraceEvent {
            request: active.request.id,
            lease: active.request.lease,
            host,
            seq,
            at_ms: 0,
            kind: TraceEventKind::Decided {
                in_port,
                flow,
                fate: fate.to_string(),
                trace: trace.clone(),
                tunnel_tag,
            },
        });
    }
    events
}

/// Events recording the delivery of a tunnel datagram marked `tag` from
/// `from_host` to local `ports`, for each request the tag's byte names.
pub(crate) fn delivered_events(
    requests: &[Active],
    host: Uuid,
    from_host: Option<Uuid>,
    tag: TunnelTag,
    ports: &[Uuid],
) -> Vec<LiveTraceEvent> {
    requests
        .iter()
        .filter(|a| a.request.tag_byte() == tag.request_byte)
        .map(|active| LiveTraceEvent {
            request: active.request.id,
            lease: active.request.lease,
            host,
            seq: active.next_delivery_seq(),
            at_ms: 0,
            kind: TraceEventKind::Delivered {
                from_host,
                tunnel_tag: tag,
                ports: ports.to_vec(),
            },
        })
        .collect()
}
