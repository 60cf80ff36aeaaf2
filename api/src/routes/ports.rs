//! Ports under bridges and routers, `/v1/ports/{id}`, links and bindings.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};
use axum::Json;
use nsdb::{Bridge, DeviceType, Host, MacAddr, Port, Router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::crud_docs;
use crate::auth::Caller;
use crate::extract::{from_json, IfMatch, JsonObject, Path, Query};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::{
    create_checked, delete_one, fetch_visible, get_one, list_all, list_page, object_response,
    parse_id, patch_one, set_from_path, with_new_id, ListQuery, Page,
};
use crate::server::AppState;

/// The body of `PUT /v1/ports/{id}/link`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The port to link to (router↔bridge or router↔router).
    pub peer_id: Uuid,
}

/// The body of `PUT /v1/ports/{id}/binding`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingRequest {
    /// The host whose agent serves the port.
    pub host_id: Uuid,
    /// The interface on that host (TAP or host-side veth).
    pub interface_name: String,
}

async fn device_of(
    state: &AppState,
    caller: Caller,
    device_type: DeviceType,
    raw: &str,
) -> Result<Uuid, Problem> {
    Ok(match device_type {
        DeviceType::Bridge => {
            fetch_visible::<Bridge>(&state.nsdb, caller, parse_id("bridge", raw)?)
                .await?
                .id
        }
        DeviceType::Router => {
            fetch_visible::<Router>(&state.nsdb, caller, parse_id("router", raw)?)
                .await?
                .id
        }
    })
}

async fn create_port(
    state: &AppState,
    caller: Caller,
    device_type: DeviceType,
    device: &str,
    body: serde_json::Map<String, Value>,
) -> Result<Response, Problem> {
    let device_id = device_of(state, caller, device_type, device).await?;
    let mut body = with_new_id(body);
    set_from_path(&mut body, "device_id", Value::String(device_id.to_string()))?;
    set_from_path(
        &mut body,
        "device_type",
        serde_json::to_value(device_type).unwrap_or(Value::Null),
    )?;
    for field in ["peer_id", "host_id", "interface_name"] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            let how = if field == "peer_id" {
                "link"
            } else {
                "binding"
            };
            return Err(Problem::bad_request(format!(
                "set {field} with PUT /v1/ports/{{id}}/{how}"
            ))
            .with_field(field));
        }
    }
    body.entry("mac")
        .or_insert_with(|| Value::String(MacAddr::random_local().to_string()));
    create_checked::<Port>(&state.nsdb, caller, body).await
}

async fn create_bridge_port(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    create_port(&state, caller, DeviceType::Bridge, &device, body).await
}

async fn create_router_port(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    create_port(&state, caller, DeviceType::Router, &device, body).await
}

async fn list_device_ports(
    state: &AppState,
    caller: Caller,
    device_type: DeviceType,
    device: &str,
    params: HashMap<String, String>,
) -> Result<Json<Page<Port>>, Problem> {
    let device_id = device_of(state, caller, device_type, device).await?;
    let query = ListQuery::parse(params, &[])?.with_filter("device_id", device_id);
    Ok(Json(list_page(&state.nsdb, caller, query).await?))
}

async fn list_bridge_ports(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<Port>>, Problem> {
    list_device_ports(&state, caller, DeviceType::Bridge, &device, params).await
}

async fn list_router_ports(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<Port>>, Problem> {
    list_device_ports(&state, caller, DeviceType::Router, &device, params).await
}

async fn link(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    let request: LinkRequest = from_json(body.into())?;
    let port: Port = fetch_visible(&state.nsdb, caller, parse_id("port", &id)?).await?;
    let peer: Port = fetch_visible(&state.nsdb, caller, request.peer_id)
        .await
        .map_err(|p| {
            if p.status == 404 {
                Problem {
                    status: 422,
                    ..p.with_field("peer_id")
                }
            } else {
                p
            }
        })?;
    if port.peer_id == Some(peer.id) {
        return Ok(object_response(StatusCode::OK, &port));
    }
    let (linked, _) = state
        .nsdb
        .scoped(caller.scope())
        .link_ports(port.id, peer.id)
        .await?;
    Ok(object_response(StatusCode::OK, &linked))
}

async fn unlink(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let port: Port = fetch_visible(&state.nsdb, caller, parse_id("port", &id)?).await?;
    if port.peer_id.is_none() {
        return Ok(object_response(StatusCode::OK, &port));
    }
    let (unlinked, _) = state
        .nsdb
        .scoped(caller.scope())
        .unlink_port(port.id)
        .await?;
    Ok(object_response(StatusCode::OK, &unlinked))
}

async fn bind(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let request: BindingRequest = from_json(body.into())?;
    let mut port: Port = fetch_visible(&state.nsdb, caller, parse_id("port", &id)?).await?;
    if state.nsdb.get::<Host>(request.host_id).await?.is_none() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing-reference",
            "A referenced object does not exist",
            format!("host {} not found", request.host_id),
        )
        .with_field("host_id"));
    }
    let expected = if_match.0.unwrap_or(port.revision);
    port.host_id = Some(request.host_id);
    port.interface_name = Some(request.interface_name);
    let stored = state
        .nsdb
        .update(port, Some(expected))
        .await
        .map_err(|e| crate::resource::conflict_status(&if_match, e))?;
    Ok(object_response(StatusCode::OK, &stored))
}

async fn unbind(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let mut port: Port = fetch_visible(&state.nsdb, caller, parse_id("port", &id)?).await?;
    let expected = if_match.0.unwrap_or(port.revision);
    port.host_id = None;
    port.interface_name = None;
    let stored = state
        .nsdb
        .update(port, Some(expected))
        .await
        .map_err(|e| crate::resource::conflict_status(&if_match, e))?;
    Ok(object_response(StatusCode::OK, &stored))
}

/// Adds the port routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let on_bridge = crud_docs::<Port>(
        "/v1/bridges/{id}/ports",
        "/v1/ports/{id}",
        "ports",
        &["limit", "after"],
    );
    let on_router = crud_docs::<Port>(
        "/v1/routers/{id}/ports",
        "/v1/ports/{id}",
        "ports",
        &["limit", "after"],
    );
    let all = crud_docs::<Port>(
        "/v1/ports",
        "/v1/ports/{id}",
        "ports",
        &["device_id", "host_id", "peer_id", "limit", "after"],
    );
    api.add(on_bridge.list, get(list_bridge_ports))
        .add(on_bridge.create, post(create_bridge_port))
        .add(on_router.list, get(list_router_ports))
        .add(on_router.create, post(create_router_port))
        .add(all.list, get(list_all::<Port>))
        .add(all.get, get(get_one::<Port>))
        .add(all.patch, patch(patch_one::<Port>))
        .add(all.delete, delete(delete_one::<Port>))
        .add(
            RouteDoc::new(
                Method::PUT,
                "/v1/ports/{id}/link",
                "ports",
                "Link two ports (router↔bridge, router↔router)",
            )
            .request::<LinkRequest>()
            .response::<Port>(200),
            put(link),
        )
        .add(
            RouteDoc::new(
                Method::DELETE,
                "/v1/ports/{id}/link",
                "ports",
                "Unlink a port (both sides)",
            )
            .response::<Port>(200),
            delete(unlink),
        )
        .add(
            RouteDoc::new(
                Method::PUT,
                "/v1/ports/{id}/binding",
                "ports",
                "Bind a port to an interface on a host (admin)",
            )
            .request::<BindingRequest>()
            .response::<Port>(200),
            put(bind),
        )
        .add(
            RouteDoc::new(
                Method::DELETE,
                "/v1/ports/{id}/binding",
                "ports",
                "Unbind a port (admin)",
            )
            .response::<Port>(200),
            delete(unbind),
        )
}
