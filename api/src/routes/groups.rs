//! `/v1/port_groups` and `/v1/ip_address_groups`, with member management.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use ipnet::IpNet;
use nsdb::{IpAddressGroup, Port, PortGroup};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::crud_docs;
use crate::auth::Caller;
use crate::extract::{from_json, JsonObject};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::{create_top, fetch_visible, list_all, object_response, parse_id};
use crate::server::AppState;

/// The body of `POST /v1/ip_address_groups/{id}/addresses`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    /// A prefix or host address (`10.0.0.0/24`, `10.0.0.5/32`).
    pub address: IpNet,
}

async fn add_port(
    State(state): State<AppState>,
    caller: Caller,
    Path((group, port)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let mut group: PortGroup =
        fetch_visible(&state.nsdb, caller, parse_id("port group", &group)?).await?;
    let port: Port = fetch_visible(&state.nsdb, caller, parse_id("port", &port)?).await?;
    if !group.port_ids.contains(&port.id) {
        let revision = group.revision;
        group.port_ids.push(port.id);
        group = state.nsdb.update(group, Some(revision)).await?;
    }
    Ok(object_response(StatusCode::OK, &group))
}

async fn remove_port(
    State(state): State<AppState>,
    caller: Caller,
    Path((group, port)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let mut group: PortGroup =
        fetch_visible(&state.nsdb, caller, parse_id("port group", &group)?).await?;
    let port = parse_id("port", &port)?;
    if group.port_ids.contains(&port) {
        let revision = group.revision;
        group.port_ids.retain(|p| *p != port);
        group = state.nsdb.update(group, Some(revision)).await?;
    }
    Ok(object_response(StatusCode::OK, &group))
}

async fn add_address(
    State(state): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    let request: AddressRequest = from_json(body.into())?;
    let mut group: IpAddressGroup =
        fetch_visible(&state.nsdb, caller, parse_id("ip address group", &group)?).await?;
    if !group.addresses.contains(&request.address) {
        let revision = group.revision;
        group.addresses.push(request.address);
        group = state.nsdb.update(group, Some(revision)).await?;
    }
    Ok(object_response(StatusCode::OK, &group))
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
    let mut group: IpAddressGroup =
        fetch_visible(&state.nsdb, caller, parse_id("ip address group", &group)?).await?;
    if group.addresses.contains(&address) {
        let revision = group.revision;
        group.addresses.retain(|a| *a != address);
        group = state.nsdb.update(group, Some(revision)).await?;
    }
    Ok(object_response(StatusCode::OK, &group))
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
