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
