//! `GET /v1/port_counters`: the per-port counters of the datapath this
//! server runs (`plexus serve`), filtered to the ports the caller sees.
//!
//! The counters live in the agents, not in the NSDB: a server answers only
//! for the host whose datapath runs in its own process, and says which
//! host that is. A stateless `plexus api` has none (each agent's own
//! `/metrics` has its ports).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::routing::get;
use axum::Json;
use nsdb::{Bridge, Port, Record, Router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::Query;
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::Visibility;
use crate::server::AppState;

/// The counters of one port, as the datapath serving it counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortCounterSample {
    /// The port.
    pub port_id: Uuid,
    /// The host whose datapath serves it.
    pub host_id: Uuid,
    /// The interface it is bound to on that host.
    pub interface: String,
    /// Frames received from the interface.
    pub rx_packets: u64,
    /// Bytes received (offloaded frames counted whole).
    pub rx_bytes: u64,
    /// Frames sent to the interface.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames received and dropped.
    pub rx_dropped: u64,
    /// Frames received and answered by a device instead of forwarded (ARP,
    /// ICMP echo and errors): not drops.
    pub rx_answered: u64,
    /// Frames received and held (waiting for an ARP answer or a first
    /// fragment).
    pub rx_held: u64,
}

/// The counters of one host's datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathCounters {
    /// The host.
    pub host_id: Uuid,
    /// Every port the datapath serves.
    pub ports: Vec<PortCounterSample>,
}

/// Reads the counters of the datapath running in this process.
pub type PortCounterSource = Arc<dyn Fn() -> DatapathCounters + Send + Sync>;

/// The answer of `GET /v1/port_counters`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortCounterList {
    /// The hosts whose datapath counters this server reads (empty on a
    /// server without a datapath, such as `plexus api`).
    pub hosts: Vec<Uuid>,
    /// The ports the caller sees that those datapaths serve, by port id.
    pub items: Vec<PortCounterSample>,
}

/// The routers and bridges of `tenant`.
async fn devices_of(state: &AppState, tenant: Uuid) -> Result<HashSet<Uuid>, Problem> {
    let mut devices: HashSet<Uuid> = state
        .nsdb
        .list::<Router>()
        .await?
        .into_iter()
        .filter(|r| r.tenant_id == tenant)
        .map(|r| r.id)
        .collect();
    devices.extend(
        state
            .nsdb
            .list::<Bridge>()
            .await?
            .into_iter()
            .filter(|b| b.tenant_id == tenant)
            .map(|b| b.id),
    );
    Ok(devices)
}

async fn list_counters(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<PortCounterList>, Problem> {
    let mut tenant = None;
    for (name, value) in &params {
        match name.as_str() {
            "tenant_id" => {
                tenant = Some(Uuid::parse_str(value).map_err(|_| {
                    Problem::bad_request(format!("tenant_id '{value}' is not a UUID"))
                        .with_field("tenant_id")
                })?)
            }
            _ => {
                return Err(
                    Problem::bad_request(format!("unknown query parameter '{name}'"))
                        .with_field(name.clone()),
                )
            }
        }
    }
    let Some(source) = &state.port_counters else {
        return Ok(Json(PortCounterList {
            hosts: Vec::new(),
            items: Vec::new(),
        }));
    };
    let counters = source();
    let visibility = Visibility::of(&state.nsdb, caller).await?;
    let devices = match tenant {
        Some(tenant) => Some(devices_of(&state, tenant).await?),
        None => None,
    };
    let ports: HashMap<Uuid, Port> = state
        .nsdb
        .list::<Port>()
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let mut items: Vec<PortCounterSample> = counters
        .ports
        .into_iter()
        .filter(|sample| {
            ports.get(&sample.port_id).is_some_and(|port| {
                devices.as_ref().is_none_or(|d| d.contains(&port.device_id))
                    && visibility.sees(&Record::Port(port.clone()))
            })
        })
        .collect();
    items.sort_by_key(|s| s.port_id);
    Ok(Json(PortCounterList {
        hosts: vec![counters.host_id],
        items,
    }))
}

/// Adds `GET /v1/port_counters`.
pub fn routes(api: ApiRouter) -> ApiRouter {
    api.add(
        RouteDoc::new(
            Method::GET,
            "/v1/port_counters",
            "ports",
            "Per-port counters of the datapath this server runs (plexus serve; none from plexus api), for the ports the caller sees",
        )
        .response::<PortCounterList>(200)
        .query(&["tenant_id"]),
        get(list_counters),
    )
}
