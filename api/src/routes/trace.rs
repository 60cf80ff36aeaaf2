//! `POST /v1/trace`: the offline trace `plexus trace` prints, run by the
//! server on the records the caller may see, so that a client without the
//! engine (the web UI) can ask what happens to a packet.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::Json;
use nsdb::MacAddr;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

use nsdb::livetrace::StateAsk;
use nsdb::Host;
use topology::probe::{ProbeProtocol, TraceError, TraceSpec};
use uuid::Uuid;
use vswitch::tracing_live::{to_hex, StateAnswer};

use crate::auth::Caller;
use crate::extract::{from_json, JsonObject};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::Visibility;
use crate::server::AppState;

/// The transport of a traced packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TraceProtocol {
    /// An ICMP echo request.
    #[default]
    Icmp,
    /// A TCP SYN.
    Tcp,
    /// A UDP datagram.
    Udp,
}

fn default_src_port() -> u16 {
    49152
}

fn default_dst_port() -> u16 {
    80
}

fn default_ttl() -> u8 {
    64
}

/// The body of `POST /v1/trace`: the fields of `plexus trace`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    /// The port the packet enters at.
    pub port_id: Uuid,
    /// Destination IPv4 address.
    pub dst_ip: IpAddr,
    /// Source IPv4 address (default: the port's allowed or own address).
    #[serde(default)]
    pub src_ip: Option<IpAddr>,
    /// Source MAC (default: the port's MAC).
    #[serde(default)]
    pub src_mac: Option<MacAddr>,
    /// Destination MAC (default: the owner of `dst_ip` on the bridge, else
    /// its gateway; required at a router port).
    #[serde(default)]
    pub dst_mac: Option<MacAddr>,
    /// Transport.
    #[serde(default)]
    pub protocol: TraceProtocol,
    /// Source port (TCP/UDP).
    #[serde(default = "default_src_port")]
    pub src_port: u16,
    /// Destination port (TCP/UDP).
    #[serde(default = "default_dst_port")]
    pub dst_port: u16,
    /// Time to live.
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    /// What the engine knows: `empty` (nothing learned: what the NSDB
    /// alone says) or `live` (what this server's agent has learned: MACs,
    /// ARP answers, connections and their NAT; only `plexus serve` has one).
    #[serde(default)]
    pub state: TraceState,
    /// With `state: live`: the host whose agent's state to use (default:
    /// the agent in this server's process; required from a server without
    /// one, such as `plexus api`). The agent is asked through the NSDB.
    #[serde(default)]
    pub host_id: Option<Uuid>,
}

/// The learned state a trace runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TraceState {
    /// Nothing learned.
    #[default]
    Empty,
    /// The state of the agent in this server's process.
    Live,
}

/// The answer of `POST /v1/trace`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TraceAnswer {
    /// What was sent, from where (the first line of `plexus trace`).
    pub summary: String,
    /// The trace as `plexus trace` prints it, without the summary line.
    pub text: String,
    /// The trace as `plexus trace --format json` prints it: `verdict`,
    /// `steps` (each with `device`, `port`, `stage`, `detail`), `outputs`,
    /// `replies`, `drops` and `held_for`.
    pub trace: Map<String, Value>,
    /// The state it ran on, in words: `empty (nothing learned)` or
    /// `live (learned by host <id>)`.
    pub state: String,
}

impl TraceRequest {
    fn spec(&self) -> TraceSpec {
        TraceSpec {
            port: self.port_id,
            dst_ip: self.dst_ip,
            src_ip: self.src_ip,
            src_mac: self.src_mac.map(|m| m.0),
            dst_mac: self.dst_mac.map(|m| m.0),
            protocol: match self.protocol {
                TraceProtocol::Icmp => ProbeProtocol::Icmp,
                TraceProtocol::Tcp => ProbeProtocol::Tcp,
                TraceProtocol::Udp => ProbeProtocol::Udp,
            },
            src_port: self.src_port,
            dst_port: self.dst_port,
            ttl: self.ttl,
        }
    }
}

fn trace_problem(error: TraceError) -> Problem {
    let field = match &error {
        TraceError::NoSuchPort(id) => return Problem::not_found(format!("port {id}")),
        TraceError::NoSourceAddress => "src_ip",
        TraceError::RouterPortNeedsDstMac => "dst_mac",
        TraceError::MissingBridge(_) | TraceError::Probe(_) => "port_id",
    };
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "untraceable",
        "The packet cannot be traced as given",
        error.to_string(),
    )
    .with_field(field)
}

async fn run_trace(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Json<TraceAnswer>, Problem> {
    let request: TraceRequest = from_json(body.into())?;
    // The trace sees what the caller sees, as `plexus trace` does when it
    // reads the records through the API with the same token.
    let visibility = Visibility::of(&state.nsdb, caller).await?;
    let records: Vec<nsdb::Record> = state
        .nsdb
        .snapshot()
        .await?
        .records
        .into_iter()
        .filter(|r| visibility.sees(r))
        .collect();
    let (run, state) = match (request.state, request.host_id, &state.live_trace) {
        (TraceState::Empty, _, _) => (
            topology::run_trace(&records, &request.spec()),
            "empty (nothing learned)".to_string(),
        ),
        (TraceState::Live, host, Some(live)) if host.is_none_or(|h| h == live.host) => {
            let run = (live.run)(&records, &request.spec());
            (run, format!("live (learned by host {})", live.host))
        }
        (TraceState::Live, Some(host), _) => {
            return ask_agent(&state, &records, &request, host).await.map(Json)
        }
        (TraceState::Live, None, _) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no-live-state",
                "No learned state here",
                "this API server runs no datapath: a live-state trace names the host whose \
                 agent to ask (host_id), or trace with state empty",
            )
            .with_field("state"))
        }
    };
    let run = run.map_err(trace_problem)?;
    let trace = match run.json() {
        Value::Object(map) => map,
        other => Map::from_iter([("trace".to_string(), other)]),
    };
    Ok(Json(TraceAnswer {
        summary: run.header(),
        text: run.text(),
        trace,
        state,
    }))
}

/// How long an agent has to answer a state question.
const AGENT_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Runs the trace on the state of `host`'s agent: builds the packet here,
/// asks the agent through the NSDB what its engine decides on what it has
/// learned, and renders the answer with the caller's names.
async fn ask_agent(
    state: &AppState,
    records: &[nsdb::Record],
    request: &TraceRequest,
    host: Uuid,
) -> Result<TraceAnswer, Problem> {
    let host_record: Option<Host> = state.nsdb.get(host).await?;
    if !host_record.as_ref().is_some_and(|h| h.alive) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "host-not-alive",
            "No such live host",
            format!("host {host} is not registered or its agent is not alive"),
        )
        .with_field("host_id"));
    }
    // The packet as the empty-state trace builds it (defaults filled in).
    let probe = topology::run_trace(records, &request.spec()).map_err(trace_problem)?;
    let frame = probe
        .probe
        .frame()
        .map_err(|e| trace_problem(TraceError::Probe(e.to_string())))?;
    let ask = StateAsk {
        id: Uuid::new_v4(),
        port: request.port_id,
        frame_hex: to_hex(&frame),
        lease: 0,
    };
    let answer = state
        .nsdb
        .ask_agent_state(host, ask, AGENT_ANSWER_WAIT)
        .await?
        .and_then(|bytes| serde_json::from_slice::<StateAnswer>(&bytes).ok())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent-did-not-answer",
                "The agent did not answer",
                format!(
                    "host {host}'s agent did not answer within {} s",
                    AGENT_ANSWER_WAIT.as_secs()
                ),
            )
        })?;
    let trace = match topology::trace_json(&answer.trace, &probe.names) {
        Value::Object(map) => map,
        other => Map::from_iter([("trace".to_string(), other)]),
    };
    Ok(TraceAnswer {
        summary: probe.header(),
        text: topology::render_trace(&answer.trace, &probe.names),
        trace,
        state: format!("live (learned by host {})", answer.host),
    })
}

/// Adds `POST /v1/trace`.
pub fn routes(api: ApiRouter) -> ApiRouter {
    api.add(
        RouteDoc::new(
            Method::POST,
            "/v1/trace",
            "trace",
            "Simulate a packet entering at a port, on the records the caller sees, with nothing learned (what `plexus trace` prints) or with what this server's agent learned (`state: live`)",
        )
        .request::<TraceRequest>()
        .response::<TraceAnswer>(200),
        post(run_trace),
    )
}
