//! Live trace requests and what agents recorded for them.
//!
//! A trace request asks every agent to record the real packets that match
//! it. It lives under its own lease (`trace/req/{id}`), granted for the
//! request's duration: when the lease ends (expiry or delete) the request
//! and everything recorded for it go at once, on every backend. Agents
//! watch `trace/req/` and write what they record under
//! `trace/ev/{request}/{host}/{seq}` with the request's lease, so the API
//! that streams a request's events only watches one prefix, and no agent
//! needs an endpoint of its own.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{NsdbError, StoreError};
use crate::kv::{CommitOutcome, Compare, LeaseId, Op, Revision, WatchReceiver};
use crate::store::Nsdb;

/// Prefix of the live trace requests.
pub const TRACE_REQUESTS: &str = "trace/req/";

/// The key of one trace request.
pub fn trace_request_key(id: Uuid) -> String {
    format!("{TRACE_REQUESTS}{id}")
}

/// The prefix of the events recorded for one request.
pub fn trace_events_prefix(request: Uuid) -> String {
    format!("trace/ev/{request}/")
}

/// The key of one recorded event: per request, host and sequence number.
pub fn trace_event_key(request: Uuid, host: Uuid, seq: u32) -> String {
    format!("trace/ev/{request}/{host}/{seq:010}")
}

/// The prefix of the state-trace questions for one host's agent.
pub fn state_asks_prefix(host: Uuid) -> String {
    format!("trace/ask/{host}/")
}

/// The key of one state-trace answer.
pub fn state_answer_key(id: Uuid) -> String {
    format!("trace/answer/{id}")
}

/// A question for one agent: what would you do with this frame entering
/// at this port, on what you have learned? (`plexus trace --state live
/// --host H`, asked by an API server that runs no datapath of its own.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateAsk {
    /// Its id (the answer's key).
    pub id: Uuid,
    /// The ingress port.
    pub port: Uuid,
    /// The frame, as hex.
    pub frame_hex: String,
    /// The lease the question and its answer live under.
    pub lease: LeaseId,
}

/// Which packets a live trace records; every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceMatch {
    /// A port the packet enters or leaves by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_id: Option<Uuid>,
    /// A bridge or router the packet crosses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<Uuid>,
    /// The packet's source address is in this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpNet>,
    /// The packet's destination address is in this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpNet>,
    /// The IP protocol number (1 ICMP, 6 TCP, 17 UDP, 58 ICMPv6, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    /// The TCP/UDP source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// The TCP/UDP destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
}

impl TraceMatch {
    /// Whether the match constrains addresses, protocol or ports (what an
    /// agent can check on the packet's headers alone).
    pub fn has_header_terms(&self) -> bool {
        self.src_ip.is_some()
            || self.dst_ip.is_some()
            || self.protocol.is_some()
            || self.src_port.is_some()
            || self.dst_port.is_some()
    }

    /// Whether an address pair, protocol and ports satisfy the header terms.
    pub fn matches_headers(
        &self,
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        ports: Option<(u16, u16)>,
    ) -> bool {
        self.src_ip.is_none_or(|net| net.contains(&src))
            && self.dst_ip.is_none_or(|net| net.contains(&dst))
            && self.protocol.is_none_or(|p| p == protocol)
            && self
                .src_port
                .is_none_or(|p| ports.is_some_and(|(s, _)| s == p))
            && self
                .dst_port
                .is_none_or(|p| ports.is_some_and(|(_, d)| d == p))
    }
}

/// A live trace request, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTraceRequest {
    /// Its id.
    pub id: Uuid,
    /// The tenant it was made for (`None`: by an administrator).
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    /// Which packets.
    #[serde(rename = "match")]
    pub matcher: TraceMatch,
    /// How many packets each host records at most.
    pub limit_packets: u32,
    /// When it ends (milliseconds since the Unix epoch).
    pub expires_at_ms: u64,
    /// The lease it and its events live under.
    pub lease: LeaseId,
}

impl LiveTraceRequest {
    /// The byte a tunnel datagram of a traced packet names the request by
    /// (see `vswitch`'s tunnel trace tag): a receiving host records the
    /// delivery for the requests whose byte it is.
    pub fn tag_byte(&self) -> u8 {
        self.id.as_bytes()[15]
    }
}

/// One change to the set of live trace requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceRequestEvent {
    /// A request was made.
    Put(LiveTraceRequest),
    /// A request ended.
    Gone(Uuid),
}

fn decode_request(key: &str, value: &[u8]) -> Result<LiveTraceRequest, NsdbError> {
    serde_json::from_slice(value).map_err(|error| {
        StoreError::Corrupt {
            key: key.to_string(),
            reason: error.to_string(),
        }
        .into()
    })
}

/// The request id a key under [`TRACE_REQUESTS`] names.
pub fn parse_trace_request_key(key: &str) -> Option<Uuid> {
    Uuid::parse_str(key.strip_prefix(TRACE_REQUESTS)?).ok()
}

impl Nsdb {
    /// Stores a new live trace request for `ttl` under a lease of its own
    /// (filled into `request.lease`); returns it as stored.
    pub async fn create_trace_request(
        &self,
        mut request: LiveTraceRequest,
        ttl: Duration,
    ) -> Result<LiveTraceRequest, NsdbError> {
        let lease = self.backend().grant_lease(ttl).await?;
        request.lease = lease;
        let value = serde_json::to_vec(&request)
            .map_err(|e| StoreError::Backend(format!("encoding a trace request: {e}")))?;
        let key = trace_request_key(request.id);
        let put = Op::Put {
            key: key.clone(),
            value,
            lease: Some(lease),
        };
        let absent = Compare::ModRevisionEquals { key, revision: 0 };
        match self.backend().commit(vec![absent], vec![put]).await {
            Ok(CommitOutcome::Committed(_)) => Ok(request),
            Ok(CommitOutcome::CompareFailed) => {
                let _ = self.backend().revoke_lease(lease).await;
                Err(StoreError::Backend(format!("trace request {} exists", request.id)).into())
            }
            Err(error) => {
                let _ = self.backend().revoke_lease(lease).await;
                Err(error.into())
            }
        }
    }

    /// One live trace request, if it has not ended.
    pub async fn trace_request(&self, id: Uuid) -> Result<Option<LiveTraceRequest>, NsdbError> {
        let key = trace_request_key(id);
        match self.backend().get(&key).await? {
            Some(entry) => Ok(Some(decode_request(&key, &entry.value)?)),
            None => Ok(None),
        }
    }

    /// Every live trace request, and the revision they were read at.
    pub async fn trace_requests(&self) -> Result<(Vec<LiveTraceRequest>, Revision), NsdbError> {
        let range = self.backend().range(TRACE_REQUESTS).await?;
        let requests = range
            .entries
            .iter()
            .map(|e| decode_request(&e.key, &e.value))
            .collect::<Result<_, _>>()?;
        Ok((requests, range.revision))
    }

    /// Ends a live trace request and drops what was recorded for it.
    /// Returns whether it existed.
    pub async fn delete_trace_request(&self, id: Uuid) -> Result<bool, NsdbError> {
        let Some(request) = self.trace_request(id).await? else {
            return Ok(false);
        };
        match self.backend().revoke_lease(request.lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => Ok(true),
            Err(error) => Err(error.into()),
        }
    }

    /// Decodes one watch event under [`TRACE_REQUESTS`] (`None`: not a
    /// request key).
    pub fn trace_request_event(
        &self,
        event: &crate::kv::KvEvent,
    ) -> Option<Result<TraceRequestEvent, NsdbError>> {
        let id = parse_trace_request_key(&event.key)?;
        Some(match event.kind {
            crate::kv::KvEventKind::Put => {
                decode_request(&event.key, &event.value).map(TraceRequestEvent::Put)
            }
            crate::kv::KvEventKind::Delete => Ok(TraceRequestEvent::Gone(id)),
        })
    }

    /// Watches the live trace requests from `from` on.
    pub async fn watch_trace_requests(&self, from: Revision) -> Result<WatchReceiver, NsdbError> {
        Ok(self.backend().watch(TRACE_REQUESTS, from).await?)
    }

    /// Records one event for `request` (under its lease): fails quietly
    /// for the caller to count when the request has ended.
    pub async fn put_trace_event(
        &self,
        request: Uuid,
        lease: LeaseId,
        host: Uuid,
        seq: u32,
        value: Vec<u8>,
    ) -> Result<(), NsdbError> {
        let put = Op::Put {
            key: trace_event_key(request, host, seq),
            value,
            lease: Some(lease),
        };
        match self.backend().commit(Vec::new(), vec![put]).await? {
            CommitOutcome::Committed(_) => Ok(()),
            CommitOutcome::CompareFailed => Err(StoreError::Backend(
                "trace event: a commit without comparisons failed".into(),
            )
            .into()),
        }
    }

    /// Every event recorded for `request` so far (raw), and the revision
    /// read at: watch [`trace_events_prefix`] from the next one.
    pub async fn trace_events(&self, request: Uuid) -> Result<(Vec<Vec<u8>>, Revision), NsdbError> {
        let range = self.backend().range(&trace_events_prefix(request)).await?;
        Ok((
            range.entries.into_iter().map(|e| e.value).collect(),
            range.revision,
        ))
    }

    /// Watches the events recorded for `request` and the request itself
    /// (its deletion ends the trace) from `from` on.
    pub async fn watch_trace(&self, from: Revision) -> Result<WatchReceiver, NsdbError> {
        Ok(self.backend().watch("trace/", from).await?)
    }
}

impl Nsdb {
    /// Asks `host`'s agent a state question and waits up to `wait` for its
    /// answer (raw); `None` if none came. The question and the answer
    /// live under a lease of their own that outlives the wait briefly.
    pub async fn ask_agent_state(
        &self,
        host: Uuid,
        mut ask: StateAsk,
        wait: Duration,
    ) -> Result<Option<Vec<u8>>, NsdbError> {
        let lease = self
            .backend()
            .grant_lease(wait + Duration::from_secs(5))
            .await?;
        ask.lease = lease;
        let answer_key = state_answer_key(ask.id);
        let start = self.backend().current_revision().await?;
        let mut watch = self.backend().watch(&answer_key, start + 1).await?;
        let value = serde_json::to_vec(&ask)
            .map_err(|e| StoreError::Backend(format!("encoding a state question: {e}")))?;
        let put = Op::Put {
            key: format!("{}{}", state_asks_prefix(host), ask.id),
            value,
            lease: Some(lease),
        };
        self.backend().commit(Vec::new(), vec![put]).await?;
        let answered = tokio::time::timeout(wait, async {
            while let Some(message) = watch.recv().await {
                if let crate::kv::WatchMessage::Events(events) = message {
                    if let Some(event) = events
                        .into_iter()
                        .find(|e| e.key == answer_key && e.kind == crate::kv::KvEventKind::Put)
                    {
                        return Some(event.value);
                    }
                }
            }
            None
        })
        .await;
        let _ = self.backend().revoke_lease(lease).await;
        Ok(answered.ok().flatten())
    }

    /// Watches the state questions for `host` from `from` on (and reads
    /// those asked before: see [`Nsdb::state_asks`]).
    pub async fn watch_state_asks(
        &self,
        host: Uuid,
        from: Revision,
    ) -> Result<WatchReceiver, NsdbError> {
        Ok(self.backend().watch(&state_asks_prefix(host), from).await?)
    }

    /// The state questions for `host` waiting now, and the revision read at.
    pub async fn state_asks(&self, host: Uuid) -> Result<(Vec<StateAsk>, Revision), NsdbError> {
        let range = self.backend().range(&state_asks_prefix(host)).await?;
        let asks = range
            .entries
            .iter()
            .filter_map(|e| serde_json::from_slice(&e.value).ok())
            .collect();
        Ok((asks, range.revision))
    }

    /// Answers a state question (under its lease).
    pub async fn answer_state_ask(&self, ask: &StateAsk, value: Vec<u8>) -> Result<(), NsdbError> {
        let put = Op::Put {
            key: state_answer_key(ask.id),
            value,
            lease: Some(ask.lease),
        };
        self.backend().commit(Vec::new(), vec![put]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_terms_match_what_they_name_only() {
        let m = TraceMatch {
            dst_ip: Some("10.0.0.0/24".parse().unwrap()),
            protocol: Some(6),
            dst_port: Some(22),
            ..TraceMatch::default()
        };
        let a: IpAddr = "10.1.0.5".parse().unwrap();
        let b: IpAddr = "10.0.0.7".parse().unwrap();
        assert!(m.has_header_terms());
        assert!(m.matches_headers(a, b, 6, Some((40000, 22))));
        assert!(!m.matches_headers(a, b, 6, Some((40000, 80))));
        assert!(!m.matches_headers(a, b, 17, Some((40000, 22))));
        assert!(!m.matches_headers(b, a, 6, Some((40000, 22))));
        assert!(!m.matches_headers(a, b, 6, None));
        let any_port = TraceMatch {
            port_id: Some(Uuid::nil()),
            ..TraceMatch::default()
        };
        assert!(!any_port.has_header_terms());
        assert!(any_port.matches_headers(a, b, 1, None));
    }

    #[test]
    fn keys_sort_events_per_host_in_sequence() {
        let r = Uuid::from_u128(1);
        let h = Uuid::from_u128(2);
        assert!(trace_event_key(r, h, 9) < trace_event_key(r, h, 10));
        assert!(trace_event_key(r, h, 1).starts_with(&trace_events_prefix(r)));
        assert_eq!(parse_trace_request_key(&trace_request_key(r)), Some(r));
    }
}
