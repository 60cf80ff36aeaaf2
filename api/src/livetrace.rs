//! Joining what the agents recorded for a live trace into traces: a packet
//! one host decided and sent through the tunnel, and its delivery by the
//! receiving host (matched by the sending host and the trace mark the
//! datagram carried), become one trace; rendered with the names the caller
//! may see, in the offline trace's format.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use topology::dump::Names;
use uuid::Uuid;
use vswitch::core::{LiveTraceEvent, TraceEventKind, TunnelTag};

/// How long a sent packet waits for its deliveries before it is shown
/// without the missing ones (and a delivery for its packet).
pub const JOIN_WAIT: Duration = Duration::from_secs(2);

/// A decided packet waiting for its deliveries.
struct Pending {
    event: LiveTraceEvent,
    /// The other hosts it was sent to.
    expected: Vec<Uuid>,
    deliveries: Vec<LiveTraceEvent>,
    deadline: Instant,
}

/// Events in, joined traces out.
#[derive(Default)]
pub struct Joiner {
    /// Sent packets by (sending host, mark).
    pending: HashMap<(Uuid, TunnelTag), Pending>,
    /// Deliveries whose packet has not been seen yet.
    early: HashMap<(Uuid, TunnelTag), (Vec<LiveTraceEvent>, Instant)>,
}

/// A joined trace: the sending host's event and the deliveries.
pub struct Joined {
    /// The event of the host that decided the packet.
    pub decided: LiveTraceEvent,
    /// The receiving hosts' deliveries.
    pub deliveries: Vec<LiveTraceEvent>,
    /// Whether every host it was sent to reported its delivery.
    pub complete: bool,
}

impl Joiner {
    /// Takes one event; returns the traces it completes.
    pub fn push(&mut self, event: LiveTraceEvent, now: Instant) -> Vec<Joined> {
        match &event.kind {
            TraceEventKind::Decided {
                trace, tunnel_tag, ..
            } => {
                let mut expected: Vec<Uuid> = trace
                    .outputs
                    .iter()
                    .filter_map(|o| o.host)
                    .filter(|h| *h != event.host)
                    .collect();
                expected.sort();
                expected.dedup();
                let Some(tag) = *tunnel_tag else {
                    return vec![Joined {
                        decided: event,
                        deliveries: Vec::new(),
                        complete: true,
                    }];
                };
                let key = (event.host, tag);
                let deliveries = self.early.remove(&key).map(|(d, _)| d).unwrap_or_default();
                let pending = Pending {
                    event,
                    expected,
                    deliveries,
                    deadline: now + JOIN_WAIT,
                };
                if pending.is_complete() {
                    return vec![pending.joined()];
                }
                self.pending.insert(key, pending);
                Vec::new()
            }
            TraceEventKind::Delivered {
                from_host: Some(from),
                tunnel_tag,
                ..
            } => {
                let key = (*from, *tunnel_tag);
                match self.pending.get_mut(&key) {
                    Some(pending) => {
                        pending.deliveries.push(event);
                        if pending.is_complete() {
                            let done = self.pending.remove(&key).map(Pending::joined);
                            return done.into_iter().collect();
                        }
                        Vec::new()
                    }
                    None => {
                        let entry = self
                            .early
                            .entry(key)
                            .or_insert_with(|| (Vec::new(), now + JOIN_WAIT));
                        entry.0.push(event);
                        Vec::new()
                    }
                }
            }
            // A delivery from a host nobody knows cannot be joined.
            TraceEventKind::Delivered {
                from_host: None, ..
            } => Vec::new(),
        }
    }

    /// The traces whose wait is over, as they are.
    pub fn expire(&mut self, now: Instant) -> Vec<Joined> {
        self.early.retain(|_, (_, deadline)| *deadline > now);
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        due.into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .map(Pending::joined)
            .collect()
    }

    /// Whether traces are waiting for deliveries.
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl Pending {
    fn is_complete(&self) -> bool {
        self.expected
            .iter()
            .all(|h| self.deliveries.iter().any(|d| d.host == *h))
    }

    fn joined(self) -> Joined {
        let complete = self.is_complete();
        Joined {
            decided: self.event,
            deliveries: self.deliveries,
            complete,
        }
    }
}

impl Joined {
    /// The trace as `plexus trace --live` prints it: per host, what it
    /// did, in the offline trace's format.
    pub fn text(&self, names: &Names) -> String {
        let mut out = String::new();
        if let TraceEventKind::Decided {
            in_port,
            flow,
            fate,
            trace,
            ..
        } = &self.decided.kind
        {
            let flow = match flow {
                vswitch::core::FlowUse::Hit => "flow-cache hit",
                vswitch::core::FlowUse::Miss => "flow-cache miss",
            };
            out.push_str(&format!(
                "{}: packet {} in by port {} ({flow}, {fate})\n",
                names.describe(self.decided.host),
                self.decided.seq,
                names.name(*in_port),
            ));
            out.push_str(&topology::render_trace(trace, names));
        }
        for delivery in &self.deliveries {
            if let TraceEventKind::Delivered { ports, .. } = &delivery.kind {
                let ports: Vec<String> = ports.iter().map(|p| names.name(*p)).collect();
                out.push_str(&format!(
                    "{}: received through the tunnel, delivered to port {}\n",
                    names.describe(delivery.host),
                    ports.join(", ")
                ));
            }
        }
        if !self.complete {
            out.push_str("    (no delivery reported by a host it was sent to)\n");
        }
        out
    }

    /// The trace as JSON (`plexus trace --live --format json`): the
    /// deciding host's event with the offline trace's JSON, and the
    /// deliveries.
    pub fn json(&self, names: &Names) -> Value {
        let mut decided = json!({
            "host": self.decided.host,
            "host_name": names.name(self.decided.host),
            "seq": self.decided.seq,
            "at_ms": self.decided.at_ms,
        });
        if let TraceEventKind::Decided {
            in_port,
            flow,
            fate,
            trace,
            ..
        } = &self.decided.kind
        {
            decided["in_port"] = json!(in_port);
            decided["flow"] = json!(flow);
            decided["fate"] = json!(fate);
            decided["trace"] = topology::trace_json(trace, names);
        }
        let deliveries: Vec<Value> = self
            .deliveries
            .iter()
            .filter_map(|d| match &d.kind {
                TraceEventKind::Delivered { ports, .. } => Some(json!({
                    "host": d.host,
                    "host_name": names.name(d.host),
                    "at_ms": d.at_ms,
                    "ports": ports,
                })),
                TraceEventKind::Decided { .. } => None,
            })
            .collect();
        json!({
            "request": self.decided.request,
            "decided": decided,
            "deliveries": deliveries,
            "complete": self.complete,
            "text": self.text(names),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::core::FlowUse;
    use vswitch::engine::{OutputRecord, TraceRecord};

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);

    fn decided(seq: u32, to: Option<Uuid>) -> LiveTraceEvent {
        LiveTraceEvent {
            request: Uuid::nil(),
            lease: 0,
            host: A,
            seq,
            at_ms: 1,
            kind: TraceEventKind::Decided {
                in_port: Uuid::from_u128(1),
                flow: FlowUse::Miss,
                fate: "sent".into(),
                trace: TraceRecord {
                    verdict: "deliver".into(),
                    steps: Vec::new(),
                    outputs: vec![OutputRecord {
                        port: Uuid::from_u128(2),
                        host: Some(to.unwrap_or(A)),
                        rewrite: Default::default(),
                    }],
                    replies: Vec::new(),
                    drops: Vec::new(),
                    rules: Vec::new(),
                    held_for: None,
                },
                tunnel_tag: to.map(|_| TunnelTag {
                    request_byte: 0,
                    seq,
                }),
            },
        }
    }

    fn delivered(seq: u32) -> LiveTraceEvent {
        LiveTraceEvent {
            request: Uuid::nil(),
            lease: 0,
            host: B,
            seq: 1 << 31,
            at_ms: 2,
            kind: TraceEventKind::Delivered {
                from_host: Some(A),
                tunnel_tag: TunnelTag {
                    request_byte: 0,
                    seq,
                },
                ports: vec![Uuid::from_u128(2)],
            },
        }
    }

    #[test]
    fn a_sent_packet_joins_its_delivery_in_either_order() {
        let now = Instant::now();
        let mut joiner = Joiner::default();
        let local = joiner.push(decided(0, None), now);
        assert_eq!(local.len(), 1, "a packet for this host needs no delivery");
        assert!(joiner.push(decided(1, Some(B)), now).is_empty());
        let joined = joiner.push(delivered(1), now);
        assert_eq!(joined.len(), 1);
        assert!(joined[0].complete && joined[0].deliveries.len() == 1);
        assert!(joiner.push(delivered(2), now).is_empty(), "early");
        let joined = joiner.push(decided(2, Some(B)), now);
        assert!(joined.len() == 1 && joined[0].complete);
        assert!(!joiner.is_waiting());
    }

    #[test]
    fn a_lost_delivery_shows_the_trace_incomplete_after_the_wait() {
        let now = Instant::now();
        let mut joiner = Joiner::default();
        assert!(joiner.push(decided(3, Some(B)), now).is_empty());
        assert!(joiner.expire(now).is_empty());
        let late = joiner.expire(now + JOIN_WAIT);
        assert!(late.len() == 1 && !late[0].complete);
        let names = Names::of(&[]);
        assert!(late[0].text(&names).contains("no delivery reported"));
    }
}
