//! Live trace requests: `POST /v1/trace_requests` asks every agent to
//! record the real packets that match; `GET /v1/trace_requests/{id}/events`
//! streams them as server-sent events, joined across hosts and rendered as
//! `plexus trace` prints; `DELETE` ends a request before its time.
//!
//! Agents publish what they record through the NSDB (see
//! `vswitch::tracing_live` for why), so any API server can stream any
//! request, and a request ends with its lease everywhere at once.

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{delete, get, post};
use axum::Json;
use futures::Stream;
use ipnet::IpNet;
use nsdb::kv::{KvEventKind, WatchMessage};
use nsdb::livetrace::{parse_trace_request_key, trace_events_prefix};
use nsdb::{Bridge, LiveTraceRequest, Port, Record, Router, TraceMatch};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;
use vswitch::core::LiveTraceEvent;

use crate::auth::{unix_now, Caller};
use crate::extract::{from_json, JsonObject, Path};
use crate::livetrace::{Joined, Joiner};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::Visibility;
use crate::server::AppState;

/// Most packets one host records for one request.
pub const MAX_LIMIT_PACKETS: u32 = 10_000;
/// Longest a request lasts.
pub const MAX_LIMIT_SECONDS: u64 = 3_600;

fn default_limit_packets() -> u32 {
    10
}

fn default_limit_seconds() -> u64 {
    60
}

/// The body of `POST /v1/trace_requests`: which packets, for how long.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceRequestBody {
    /// A port the packets enter or leave by.
    #[serde(default)]
    pub port_id: Option<Uuid>,
    /// A bridge or router the packets cross.
    #[serde(default)]
    pub device_id: Option<Uuid>,
    /// Source address or network (`10.0.0.5`, `10.0.0.0/24`, `2001:db8::/64`).
    #[serde(default)]
    pub src_ip: Option<String>,
    /// Destination address or network.
    #[serde(default)]
    pub dst_ip: Option<String>,
    /// `icmp`, `tcp`, `udp`, `icmpv6`, `sctp` or an IP protocol number.
    #[serde(default)]
    pub protocol: Option<String>,
    /// TCP/UDP source port.
    #[serde(default)]
    pub src_port: Option<u16>,
    /// TCP/UDP destination port.
    #[serde(default)]
    pub dst_port: Option<u16>,
    /// How many packets each host records at most (1–10000; default 10).
    #[serde(default = "default_limit_packets")]
    pub limit_packets: u32,
    /// How long the request lasts, in seconds (1–3600; default 60).
    #[serde(default = "default_limit_seconds")]
    pub limit_seconds: u64,
}

/// A live trace request, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceRequestInfo {
    /// Its id.
    pub id: Uuid,
    /// The tenant it belongs to (`null`: made by an administrator).
    pub tenant_id: Option<Uuid>,
    /// A port the packets enter or leave by.
    pub port_id: Option<Uuid>,
    /// A device the packets cross.
    pub device_id: Option<Uuid>,
    /// Source network.
    pub src_ip: Option<String>,
    /// Destination network.
    pub dst_ip: Option<String>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// TCP/UDP source port.
    pub src_port: Option<u16>,
    /// TCP/UDP destination port.
    pub dst_port: Option<u16>,
    /// Packets each host records at most.
    pub limit_packets: u32,
    /// When it ends (milliseconds since the Unix epoch).
    pub expires_at_ms: u64,
}

impl From<&LiveTraceRequest> for TraceRequestInfo {
    fn from(r: &LiveTraceRequest) -> TraceRequestInfo {
        let m = &r.matcher;
        TraceRequestInfo {
            id: r.id,
            tenant_id: r.tenant_id,
            port_id: m.port_id,
            device_id: m.device_id,
            src_ip: m.src_ip.map(|n| n.to_string()),
            dst_ip: m.dst_ip.map(|n| n.to_string()),
            protocol: m.protocol,
            src_port: m.src_port,
            dst_port: m.dst_port,
            limit_packets: r.limit_packets,
            expires_at_ms: r.expires_at_ms,
        }
    }
}

fn invalid(field: &str, detail: String) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-trace-request",
        "The trace request is invalid",
        detail,
    )
    .with_field(field)
}

fn network(field: &str, text: &Option<String>) -> Result<Option<IpNet>, Problem> {
    let Some(text) = text else { return Ok(None) };
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(Some(net.trunc()));
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(Some(IpNet::from(ip))),
        Err(_) => Err(invalid(
            field,
            format!("'{text}' is neither an IP address nor a network"),
        )),
    }
}

fn protocol(text: &Option<String>) -> Result<Option<u8>, Problem> {
    let Some(text) = text else { return Ok(None) };
    let number = match text.to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "icmpv6" => 58,
        "sctp" => 132,
        other => other.parse().map_err(|_| {
            invalid(
                "protocol",
                format!("'{text}' is not icmp, tcp, udp, icmpv6, sctp or a protocol number"),
            )
        })?,
    };
    Ok(Some(number))
}

/// Checks that the port or device the request names exists and that the
/// caller sees it; a tenant must name one (its trace sees only its own).
async fn check_scope(
    state: &AppState,
    caller: Caller,
    matcher: &TraceMatch,
) -> Result<(), Problem> {
    if matches!(caller, Caller::Tenant(_))
        && matcher.port_id.is_none()
        && matcher.device_id.is_none()
    {
        return Err(invalid(
            "port_id",
            "a tenant's trace request names one of its ports or devices (port_id or device_id)"
                .into(),
        ));
    }
    let visibility = Visibility::of(&state.nsdb, caller).await?;
    if let Some(id) = matcher.port_id {
        match state.nsdb.get::<Port>(id).await? {
            Some(port) if visibility.sees(&Record::Port(port.clone())) => {}
            _ => return Err(Problem::not_found(format!("port {id}")).with_field("port_id")),
        }
    }
    if let Some(id) = matcher.device_id {
        let device = match state.nsdb.get::<Bridge>(id).await? {
            Some(bridge) => Some(Record::Bridge(bridge)),
            None => state.nsdb.get::<Router>(id).await?.map(Record::Router),
        };
        match device {
            Some(record) if visibility.sees(&record) => {}
            _ => return Err(Problem::not_found(format!("device {id}")).with_field("device_id")),
        }
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<TraceRequestInfo>), Problem> {
    let body: TraceRequestBody = from_json(body.into())?;
    if !(1..=MAX_LIMIT_PACKETS).contains(&body.limit_packets) {
        return Err(invalid(
            "limit_packets",
            format!("limit_packets must be 1 to {MAX_LIMIT_PACKETS}"),
        ));
    }
    if !(1..=MAX_LIMIT_SECONDS).contains(&body.limit_seconds) {
        return Err(invalid(
            "limit_seconds",
            format!("limit_seconds must be 1 to {MAX_LIMIT_SECONDS}"),
        ));
    }
    let matcher = TraceMatch {
        port_id: body.port_id,
        device_id: body.device_id,
        src_ip: network("src_ip", &body.src_ip)?,
        dst_ip: network("dst_ip", &body.dst_ip)?,
        protocol: protocol(&body.protocol)?,
        src_port: body.src_port,
        dst_port: body.dst_port,
    };
    check_scope(&state, caller, &matcher).await?;
    let request = LiveTraceRequest {
        id: Uuid::new_v4(),
        tenant_id: match caller {
            Caller::Admin => None,
            Caller::Tenant(tenant) => Some(tenant),
        },
        matcher,
        limit_packets: body.limit_packets,
        expires_at_ms: unix_now() * 1000 + body.limit_seconds * 1000,
        lease: 0,
    };
    let ttl = Duration::from_secs(body.limit_seconds);
    let stored = state.nsdb.create_trace_request(request, ttl).await?;
    Ok((StatusCode::CREATED, Json(TraceRequestInfo::from(&stored))))
}

/// The request `id`, if the caller may see it.
async fn visible(state: &AppState, caller: Caller, id: &str) -> Result<LiveTraceRequest, Problem> {
    let what = format!("trace request {id}");
    let id = Uuid::parse_str(id).map_err(|_| Problem::not_found(&what))?;
    match state.nsdb.trace_request(id).await? {
        Some(request) if caller.can_see(request.tenant_id) => Ok(request),
        _ => Err(Problem::not_found(what)),
    }
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TraceRequestInfo>>, Problem> {
    let (requests, _) = state.nsdb.trace_requests().await?;
    Ok(Json(
        requests
            .iter()
            .filter(|r| caller.can_see(r.tenant_id))
            .map(TraceRequestInfo::from)
            .collect(),
    ))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TraceRequestInfo>, Problem> {
    Ok(Json(TraceRequestInfo::from(
        &visible(&state, caller, &id).await?,
    )))
}

async fn end(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let request = visible(&state, caller, &id).await?;
    state.nsdb.delete_trace_request(request.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One message of the event stream.
enum Streamed {
    Trace(Value),
    End(&'static str),
}

async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let request = visible(&state, caller, &id).await?;
    let visibility = Visibility::of(&state.nsdb, caller).await?;
    let records: Vec<Record> = state
        .nsdb
        .snapshot()
        .await?
        .records
        .into_iter()
        .filter(|r| visibility.sees(r) || matches!(r, Record::Host(_)))
        .collect();
    let names = topology::Names::of(&records);
    let (earlier, revision) = state.nsdb.trace_events(request.id).await?;
    let mut watch = state.nsdb.watch_trace(revision + 1).await?;
    let (tx, rx) = mpsc::channel::<Streamed>(64);
    tokio::spawn(async move {
        let mut joiner = Joiner::default();
        let send = |joined: Vec<Joined>| {
            let tx = tx.clone();
            let out: Vec<Value> = joined.iter().map(|j| j.json(&names)).collect();
            async move {
                for value in out {
                    if tx.send(Streamed::Trace(value)).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        for value in earlier {
            if let Ok(event) = serde_json::from_slice::<LiveTraceEvent>(&value) {
                if !send(joiner.push(event, Instant::now())).await {
                    return;
                }
            }
        }
        let prefix = trace_events_prefix(request.id);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let reason = loop {
            tokio::select! {
                message = watch.recv() => {
                    let Some(WatchMessage::Events(changes)) = message else {
                        break "the NSDB watch ended";
                    };
                    let mut ended = false;
                    let mut joined = Vec::new();
                    for change in changes {
                        if parse_trace_request_key(&change.key) == Some(request.id)
                            && change.kind == KvEventKind::Delete
                        {
                            ended = true;
                        } else if change.key.starts_with(&prefix) && change.kind == KvEventKind::Put {
                            if let Ok(event) = serde_json::from_slice::<LiveTraceEvent>(&change.value) {
                                joined.extend(joiner.push(event, Instant::now()));
                            }
                        }
                    }
                    if !send(joined).await {
                        return;
                    }
                    if ended {
                        let _ = send(joiner.expire(Instant::now() + crate::livetrace::JOIN_WAIT)).await;
                        break "the trace request ended";
                    }
                }
                _ = tick.tick() => {
                    if joiner.is_waiting() && !send(joiner.expire(Instant::now())).await {
                        return;
                    }
                }
            }
        };
        let _ = tx.send(Streamed::End(reason)).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await? {
            Streamed::Trace(value) => Event::default().event("trace").data(value.to_string()),
            Streamed::End(reason) => Event::default().event("end").data(reason),
        };
        Some((Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Adds the live trace routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    api.add(
        RouteDoc::new(
            Method::POST,
            "/v1/trace_requests",
            "trace",
            "Ask every agent to record the real packets that match (a port or device, addresses, protocol, ports) for a while: a live trace",
        )
        .request::<TraceRequestBody>()
        .response::<TraceRequestInfo>(201),
        post(create),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            "/v1/trace_requests",
            "trace",
            "The live trace requests in force that the caller may see",
        )
        .response::<Vec<TraceRequestInfo>>(200),
        get(list),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            "/v1/trace_requests/{id}",
            "trace",
            "One live trace request",
        )
        .response::<TraceRequestInfo>(200),
        get(show),
    )
    .add(
        RouteDoc::new(
            Method::DELETE,
            "/v1/trace_requests/{id}",
            "trace",
            "End a live trace request now (what it recorded goes with it)",
        )
        .empty(204),
        delete(end),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            "/v1/trace_requests/{id}/events",
            "trace",
            "The packets recorded for a live trace request, as server-sent events: `trace` events (JSON: the deciding host's steps in the offline trace's form, the receiving hosts' deliveries, and `text` as plexus trace prints it), then one `end` event when the request ends",
        )
        .text(200, "text/event-stream"),
        get(events),
    )
}
