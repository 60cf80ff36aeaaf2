//! `/v1/port_groups` and `/v1/ip_address_groups`, with member management.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use ipnet::IpNet;
use nsdb::{IpAddressGroup, NsdbError, Port, PortGroup};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::crud_docs;
use crate::auth::Caller;
use crate::extract::{from_json, JsonObject, Path};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::{
    create_top, fetch_visible, list_all, object_response, parse_id, ApiResource,
};
use crate::server::AppState;

/// The body of `POST /v1/ip_address_groups/{id}/addresses`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    /// A prefix or host address (`10.0.0.0/24`, `10.0.0.5/32`).
    pub address: IpNet,
}

/// Applies `edit` to the group and stores it, reading it again when a
/// concurrent writer got there first (members are added and removed
/// concurrently by design; nobody should see a conflict for it).
async fn edit_group<R: ApiResource>(
    state: &AppState,
    caller: Caller,
    id: Uuid,
    edit: impl Fn(&mut R) -> bool,
) -> Result<Response, Problem> {
    for _ in 0..MEMBER_ATTEMPTS {
        let mut group: R = fetch_visible(&state.nsdb, caller, id).await?;
        let revision = group.revision();
        if !edit(&mut group) {
            return Ok(object_response(StatusCode::OK, &group));
        }
        match state
            .nsdb
            .scoped(caller.scope())
            .update(group, Some(revision))
            .await
        {
            Ok(stored) => return Ok(object_response(StatusCode::OK, &stored)),
            Err(NsdbError::RevisionConflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(NsdbError::Contention {
        attempts: MEMBER_ATTEMPTS,
    }
    .into())
}

const MEMBER_ATTEMPTS: u32 = 16;

async fn add_port(
    State(state): State<AppState>,
    caller: Caller,
    Path((group, port)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let group = parse_id("port group", &group)?;
    let port: Port = fetch_visible(&state.nsdb, caller, parse_id("port", &port)?).await?;
    edit_group(&state, caller, group, |g: &mut PortGroup| {
        let add = !g.port_ids.contains(&port.id);
        if add {
            g.port_ids.push(port.id);
        }
        add
    })
    .await
}

async fn remove_port(
    State(state): State<AppState>,
    caller: Caller,
    Path((group, port)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let group = parse_id("port group", &group)?;
    let port = parse_id("port", &port)?;
    edit_group(&state, caller, group, |g: &mut PortGroup| {
        let before = g.port_ids.len();
        g.port_ids.retain(|p| *p != port);
        g.port_ids.len() != before
    })
    .await
}

async fn add_address(
    State(state): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    let request: AddressRequest = from_json(body.into())?;
    let group = parse_id("ip address group", &group)?;
    edit_group(&state, caller, group, |g: &mut IpAddressGroup| {
        let add = !g.addresses.contains(&request.address);
        if add {
            g.addresses.push(request.address);
        }
        add
    })
    .await
}

async fn remove_address(
    State(state): State<AppState>,
    caller: Caller,
    Path((group, address)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let address: IpNet = address
        .parse()
        .or_else(|_| address.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            Problem::bad_request(format!("'{address}' is not an address or prefix"))
                .with_field("address")
        })?;
    let group = parse_id("ip address group", &group)?;
    edit_group(&state, caller, group, |g: &mut IpAddressGroup| {
        let before = g.addresses.len();
        g.addresses.retain(|a| *a != address);
        g.addresses.len() != before
    })
    .await
}

/// Adds the group routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let list_query: &[&str] = &["tenant_id", "limit", "after"];
    let pg = crud_docs::<PortGroup>(
        "/v1/port_groups",
        "/v1/port_groups/{id}",
        "port_groups",
        list_query,
    );
    let ag = crud_docs::<IpAddressGroup>(
        "/v1/ip_address_groups",
        "/v1/ip_address_groups/{id}",
        "ip_address_groups",
        list_query,
    );
    let api = pg.register::<PortGroup>(
        api,
        get(list_all::<PortGroup>),
        post(create_top::<PortGroup>),
    );
    let api = api
        .add(
            RouteDoc::new(
                Method::PUT,
                "/v1/port_groups/{id}/ports/{port_id}",
                "port_groups",
                "Add a port to a group",
            )
            .response::<PortGroup>(200),
            put(add_port),
        )
        .add(
            RouteDoc::new(
                Method::DELETE,
                "/v1/port_groups/{id}/ports/{port_id}",
                "port_groups",
                "Remove a port from a group",
            )
            .response::<PortGroup>(200),
            delete(remove_port),
        );
    let api = ag.register::<IpAddressGroup>(
        api,
        get(list_all::<IpAddressGroup>),
        post(create_top::<IpAddressGroup>),
    );
    api.add(
        RouteDoc::new(
            Method::POST,
            "/v1/ip_address_groups/{id}/addresses",
            "ip_address_groups",
            "Add an address",
        )
        .request::<AddressRequest>()
        .response::<IpAddressGroup>(200),
        post(add_address),
    )
    .add(
        RouteDoc::new(
            Method::DELETE,
            "/v1/ip_address_groups/{id}/addresses/{address}",
            "ip_address_groups",
            "Remove an address (URL-encode the '/' of a prefix as %2F)",
        )
        .response::<IpAddressGroup>(200),
        delete(remove_address),
    )
}
