//! Health of `plexus k8s run`, for the Deployment's probes: `/healthz`
//! answers while the process runs; `/readyz` answers 200 once a reconcile
//! has succeeded and the last one did, else 503 with what failed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::get;
use k8s::controller::Reconciler;
use k8s::objects::Objects;

/// What the probes report.
#[derive(Debug, Default)]
pub struct Health {
    /// `None` before the first reconcile; then whether the last one
    /// succeeded, with its error.
    last: Mutex<Option<Result<(), String>>>,
}

impl Health {
    /// The readiness answer.
    fn readiness(&self) -> (StatusCode, String) {
        match &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(())) => (StatusCode::OK, "ready\n".into()),
            Some(Err(error)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the last reconcile failed: {error}\n"),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no reconcile yet (waiting for every kind's first list)\n".into(),
            ),
        }
    }
}

/// A reconciler that records its outcomes in a [`Health`].
pub struct Recorded {
    /// The reconciler doing the work.
    pub inner: Box<dyn Reconciler>,
    /// Where outcomes go.
    pub health: Arc<Health>,
}

#[async_trait::async_trait]
impl Reconciler for Recorded {
    async fn reconcile(&self, objects: &Objects) -> Result<(), String> {
        let outcome = self.inner.reconcile(objects).await;
        *self.health.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome.clone());
        outcome
    }
}

/// Serves `/healthz` and `/readyz` on `listen` until the process ends.
pub async fn serve(listen: SocketAddr, health: Arc<Health>) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move { health.readiness() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "health endpoints serving");
    axum::serve(listener, app).await?;
    Ok(())
}
