//! The agent's side of live trace: it follows the trace requests in the
//! NSDB (handing them to the datapath, which matches packets against them)
//! and publishes what the datapath recorded under each request.
//!
//! Events go through the NSDB rather than to the API directly: every agent
//! already reaches the NSDB and writes to it, agents have no endpoint of
//! their own to be called on, the API that streams a request may be any
//! replica (or restart), and the request's lease removes its events with
//! it. A request's packet limit bounds the writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nsdb::kv::WatchMessage;
use nsdb::livetrace::TraceRequestEvent;
use nsdb::{LiveTraceRequest, Nsdb};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::core::LiveTraceEvent;
use crate::datapath::Datapath;

/// Events waiting to be published; more are counted as lost.
pub const TRACE_EVENT_QUEUE: usize = 1024;

/// Follows the live trace requests and keeps the datapath matching them,
/// until the task is dropped. Re-reads them all after any watch failure.
pub async fn follow_trace_requests(nsdb: Nsdb, datapath: Arc<Datapath>) {
    loop {
        if let Err(error) = follow_once(&nsdb, &datapath).await {
            tracing::debug!(%error, "following trace requests; reading them again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_once(nsdb: &Nsdb, datapath: &Datapath) -> Result<(), String> {
    let (list, revision) = nsdb.trace_requests().await.map_err(|e| e.to_string())?;
    let mut requests: BTreeMap<Uuid, LiveTraceRequest> =
        list.into_iter().map(|r| (r.id, r)).collect();
    datapath.set_trace_requests(requests.values().cloned().collect());
    let mut watch = nsdb
        .watch_trace_requests(revision + 1)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(message) = watch.recv().await {
        let WatchMessage::Events(events) = message else {
            return Err(format!("{message:?}"));
        };
        for event in &events {
            match nsdb.trace_request_event(event) {
                Some(Ok(TraceRequestEvent::Put(request))) => {
                    tracing::info!(request = %request.id, "live trace started");
                    requests.insert(request.id, request);
                }
                Some(Ok(TraceRequestEvent::Gone(id))) if requests.remove(&id).is_some() => {
                    tracing::info!(request = %id, "live trace ended");
                }
                Some(Err(error)) => tracing::warn!(%error, "unreadable trace request"),
                Some(Ok(TraceRequestEvent::Gone(_))) | None => {}
            }
        }
        datapath.set_trace_requests(requests.values().cloned().collect());
    }
    Err("the watch ended".into())
}

/// Writes each recorded event under its request, until the datapath's
/// sending side is gone. A request that ended meanwhile loses its events
/// (its lease is gone), which is what it asked for.
pub async fn publish_trace_events(nsdb: Nsdb, mut events: mpsc::Receiver<LiveTraceEvent>) {
    while let Some(event) = events.recv().await {
        let value = match serde_json::to_vec(&event) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(%error, "encoding a trace event");
                continue;
            }
        };
        let written = nsdb
            .put_trace_event(event.request, event.lease, event.host, event.seq, value)
            .await;
        if let Err(error) = written {
            tracing::debug!(request = %event.request, %error, "trace event not recorded");
        }
    }
}

/// An agent's answer to a state question: what its engine decides for the
/// frame on what it has learned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateAnswer {
    /// The host that answered.
    pub host: Uuid,
    /// The engine's steps and verdict.
    pub trace: crate::engine::TraceRecord,
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The hex form of a frame, as a state question carries it.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn answer(nsdb: &Nsdb, datapath: &Datapath, ask: &nsdb::livetrace::StateAsk) {
    let Some(frame) = from_hex(&ask.frame_hex) else {
        tracing::warn!(ask = %ask.id, "a state question with a frame that is not hex");
        return;
    };
    let sim = datapath.dry_run(ask.port, &frame);
    let answer = StateAnswer {
        host: datapath.host(),
        trace: crate::engine::TraceRecord::from(&sim),
    };
    let Ok(value) = serde_json::to_vec(&answer) else {
        return;
    };
    if let Err(error) = nsdb.answer_state_ask(ask, value).await {
        tracing::debug!(ask = %ask.id, %error, "state question not answered");
    }
}

/// Answers the state questions asked of this host (`plexus trace --state
/// live --host H` through an API server without a datapath), until the
/// task is dropped.
pub async fn answer_state_asks(nsdb: Nsdb, datapath: Arc<Datapath>) {
    loop {
        if let Err(error) = answer_once(&nsdb, &datapath).await {
            tracing::debug!(%error, "following state questions; reading them again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn answer_once(nsdb: &Nsdb, datapath: &Datapath) -> Result<(), String> {
    let host = datapath.host();
    let (asks, revision) = nsdb.state_asks(host).await.map_err(|e| e.to_string())?;
    for ask in &asks {
        answer(nsdb, datapath, ask).await;
    }
    let mut watch = nsdb
        .watch_state_asks(host, revision + 1)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(message) = watch.recv().await {
        let WatchMessage::Events(events) = message else {
            return Err(format!("{message:?}"));
        };
        for event in events
            .iter()
            .filter(|e| e.kind == nsdb::kv::KvEventKind::Put)
        {
            match serde_json::from_slice::<nsdb::livetrace::StateAsk>(&event.value) {
                Ok(ask) => answer(nsdb, datapath, &ask).await,
                Err(error) => tracing::warn!(%error, "unreadable state question"),
            }
        }
    }
    Err("the watch ended".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_hex_and_bad_hex_is_refused() {
        let frame = [0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&frame)), Some(frame.to_vec()));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
    }
}
