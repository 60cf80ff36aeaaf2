//! The controller (`plexus k8s run`): follows a cluster's Namespaces, Pods,
//! NetworkPolicies, Services and EndpointSlices and hands the whole of them
//! to a [`Reconciler`], level-triggered.
//!
//! Each kind is watched cluster-wide into a store of its own (see
//! [`watch`] and [`store`]). Every reconcile gets the full state, never a
//! delta, so a missed event costs nothing once the next reconcile runs:
//! after a burst of changes (debounced), after every relist (a restart or a
//! 410 Gone), periodically (resync), and again with backoff after a
//! failure (see [`schedule`]). Nothing is reconciled until every kind has
//! been listed once, else the reconcile would remove what it has not seen
//! yet.

use std::convert::Infallible;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::objects::Objects;

pub mod schedule;
pub mod store;
mod watch;

pub use schedule::Timing;
use schedule::{Next, Schedule};
pub use store::Kind;
use store::{Effect, Stores};

/// What the controller drives: makes Plexus match the cluster.
#[async_trait]
pub trait Reconciler: Send + Sync {
    /// Makes Plexus match `objects`, the whole cluster as the watches see
    /// it. Idempotent; an error (what went wrong, for the log) is retried
    /// with backoff on the then newest state.
    async fn reconcile(&self, objects: &Objects) -> Result<(), String>;
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch task ended, which only a panic does.
    #[error("the watch of {kind} stopped: {reason}")]
    WatchStopped {
        /// Which kind's watch, if known.
        kind: String,
        /// The task's end.
        reason: String,
    },
}

/// Runs the controller on `client` until the future is dropped (or a watch
/// task panics). Watch failures are retried within, never returned.
pub async fn run(
    client: kube::Client,
    reconciler: &dyn Reconciler,
    timing: Timing,
) -> Result<Infallible, Error> {
    let (updates, mut received) = mpsc::channel(1024);
    let mut watches = JoinSet::new();
    let backoff = watch::Backoff {
        min: timing.retry_min,
        max: timing.retry_max,
    };
    watch::spawn_all(&client, backoff, &updates, &mut watches);
    drop(updates);

    let mut stores = Stores::default();
    let mut schedule = Schedule::new(timing, Instant::now());
    // The state of the last successful reconcile.
    let mut reconciled: Option<Objects> = None;
    let mut was_ready = false;
    loop {
        let ready = stores.ready();
        if ready && !was_ready {
            tracing::info!("every kind listed; reconciling from now on");
            was_ready = true;
        }
        match schedule.next(Instant::now(), ready) {
            Next::Reconcile { forced } => {
                let (objects, unreadable) = stores.objects();
                for object in &unreadable {
                    tracing::warn!(%object, "cannot read it; left out of the reconcile");
                }
                if !forced && reconciled.as_ref() == Some(&objects) {
                    // Changes the reconcile does not see (a pod's status).
                    schedule.succeeded(Instant::now());
                    continue;
                }
                match reconciler.reconcile(&objects).await {
                    Ok(()) => {
                        schedule.succeeded(Instant::now());
                        reconciled = Some(objects);
                    }
                    Err(error) => {
                        let retry_in = schedule.failed(Instant::now());
                        tracing::warn!(%error, ?retry_in, "reconcile failed");
                    }
                }
            }
            Next::WaitUntil(at) => {
                tokio::select! {
                    update = received.recv() => {
                        let Some((kind, update)) = update else {
                            return Err(Error::WatchStopped {
                                kind: "every kind".into(),
                                reason: "all watches ended".into(),
                            });
                        };
                        match stores.apply(kind, update) {
                            Effect::None => {}
                            Effect::Changed => schedule.changed(Instant::now()),
                            Effect::Relisted => {
                                tracing::info!(?kind, "listed");
                                if !stores.ready() {
                                    tracing::info!(waiting_for = ?stores.unlisted(), "not reconciling yet");
                                }
                                schedule.relisted(Instant::now());
                            }
                        }
                    }
                    stopped = watches.join_next() => {
                        let (kind, reason) = match stopped {
                            Some(Ok(kind)) => (format!("{kind:?}"), "ended".to_string()),
                            Some(Err(error)) => ("a kind".to_string(), error.to_string()),
                            None => ("every kind".to_string(), "no watches".to_string()),
                        };
                        return Err(Error::WatchStopped { kind, reason });
                    }
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
        }
    }
}
