//! The API server: shared state, the assembled router, and the endpoints
//! that are not about a resource (health, metrics, OpenAPI).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use nsdb::Nsdb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::extract::MAX_BODY_BYTES;
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::routes;
use crate::routes::counters::PortCounterSource;

/// Request counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    fn record(&self, method: &Method, status: StatusCode) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests
                .entry((method.to_string(), status.as_u16()))
                .or_default() += 1;
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The NSDB.
    pub nsdb: Nsdb,
    /// SHA-256 of the admin token.
    pub admin_token_hash: [u8; 32],
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// The OpenAPI document of the assembled router.
    pub openapi: Arc<Value>,
    /// More Prometheus text to append to `/metrics` (e.g. the datapath's).
    pub extra_metrics: Option<ExtraMetrics>,
    /// The per-port counters of the datapath in this process, if any.
    pub port_counters: Option<PortCounterSource>,
    /// Traces on the learned state of the datapath in this process, if any.
    pub live_trace: Option<LiveTrace>,
}

/// What a server that runs a datapath in its own process adds to the API.
#[derive(Clone, Default)]
pub struct DatapathHooks {
    /// More Prometheus text for `/metrics`.
    pub metrics: Option<ExtraMetrics>,
    /// The counters `GET /v1/port_counters` answers with.
    pub port_counters: Option<PortCounterSource>,
    /// Runs a trace on what this process's datapath has learned.
    pub live_trace: Option<LiveTrace>,
}

/// Runs a trace of `spec` on `records` with a datapath's learned state.
pub type RunLiveTrace = Arc<
    dyn Fn(
            &[nsdb::Record],
            &topology::TraceSpec,
        ) -> Result<topology::TraceRun, topology::TraceError>
        + Send
        + Sync,
>;

/// Traces on the learned state of the datapath in this process.
#[derive(Clone)]
pub struct LiveTrace {
    /// The host whose datapath it is.
    pub host: uuid::Uuid,
    /// Runs a trace on its learned state.
    pub run: RunLiveTrace,
}

/// A source of extra Prometheus text.
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// The body of `GET /healthz` when the NSDB answers.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Healthy {
    /// Always `ok`.
    pub status: String,
    /// The NSDB revision this server sees.
    pub nsdb_revision: nsdb::Revision,
}

/// The body of `GET /healthz` (503) when the NSDB cannot be read.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unhealthy {
    /// Always `unavailable`.
    pub status: String,
    /// Why the NSDB cannot be read.
    pub error: String,
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.nsdb.current_revision().await {
        Ok(revision) => Json(Healthy {
            status: "ok".into(),
            nsdb_revision: revision,
        })
        .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Unhealthy {
                status: "unavailable".into(),
                error: error.to_string(),
            }),
        )
            .into_response(),
    }
}

async fn openapi_json(State(state): State<AppState>) -> Json<Value> {
    Json((*state.openapi).clone())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP plexus_api_requests_total API requests by method and status.\n");
    out.push_str("# TYPE plexus_api_requests_total counter\n");
    if let Ok(requests) = state.metrics.requests.lock() {
        for ((method, status), count) in requests.iter() {
            out.push_str(&format!(
                "plexus_api_requests_total{{method=\"{method}\",code=\"{status}\"}} {count}\n"
            ));
        }
    }
    if let Ok(revision) = state.nsdb.current_revision().await {
        out.push_str("# HELP plexus_nsdb_revision The NSDB revision this server sees.\n");
        out.push_str("# TYPE plexus_nsdb_revision gauge\n");
        out.push_str(&format!("plexus_nsdb_revision {revision}\n"));
    }
    if let Some(extra) = &state.extra_metrics {
        out.push_str(&extra());
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    state.metrics.record(&method, response.status());
    response
}

async fn no_such_route() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-route",
        "No such route",
        "see /openapi.json for the routes",
    )
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "see /openapi.json for the methods each route accepts",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "the server hit a bug",
    )
    .into_response()
}

/// Every route of the API, documented.
pub fn api_routes() -> ApiRouter {
    let api = ApiRouter::default()
        .add(
            RouteDoc::new(
                Method::GET,
                "/healthz",
                "meta",
                "Health check (no token needed)",
            )
            .response::<Healthy>(200)
            .response::<Unhealthy>(503)
            .public(),
            get(healthz),
        )
        .add(
            RouteDoc::new(
                Method::GET,
                "/openapi.json",
                "meta",
                "This OpenAPI document (no token needed)",
            )
            .response::<serde_json::Map<String, Value>>(200)
            .public(),
            get(openapi_json),
        )
        .add(
            RouteDoc::new(Method::GET, "/metrics", "meta", "Prometheus metrics")
                .text(200, "text/plain")
                .public(),
            get(metrics),
        );
    let api = routes::tenants::routes(api);
    let api = routes::devices::routes(api);
    let api = routes::ports::routes(api);
    let api = routes::chains::routes(api);
    let api = routes::groups::routes(api);
    let api = routes::network::routes(api);
    let api = routes::attachments::routes(api);
    let api = routes::lb::routes(api);
    let api = routes::tokens::routes(api);
    let api = routes::batch::routes(api);
    let api = routes::trace::routes(api);
    let api = routes::trace_requests::routes(api);
    let api = routes::counters::routes(api);
    routes::infra::routes(api)
}

/// The complete HTTP application over `nsdb`, authenticating the admin by
/// the SHA-256 of its token.
pub fn app(nsdb: Nsdb, admin_token_hash: [u8; 32]) -> axum::Router {
    app_with_metrics(nsdb, admin_token_hash, None)
}

/// [`app`], with more Prometheus text appended to `/metrics`.
pub fn app_with_metrics(
    nsdb: Nsdb,
    admin_token_hash: [u8; 32],
    extra_metrics: Option<ExtraMetrics>,
) -> axum::Router {
    let hooks = DatapathHooks {
        metrics: extra_metrics,
        ..DatapathHooks::default()
    };
    app_with_datapath(nsdb, admin_token_hash, hooks)
}

/// [`app`], reporting on the datapath that runs in this process.
pub fn app_with_datapath(
    nsdb: Nsdb,
    admin_token_hash: [u8; 32],
    hooks: DatapathHooks,
) -> axum::Router {
    let (router, openapi) = api_routes().finish();
    let state = AppState {
        nsdb,
        admin_token_hash,
        metrics: Arc::default(),
        openapi: Arc::new(openapi),
        extra_metrics: hooks.metrics,
        port_counters: hooks.port_counters,
        live_trace: hooks.live_trace,
    };
    router
        .merge(crate::ui::routes())
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}
