//! Provisioning routes: the provider settings, tenant networks
//! (`/v1/tenants/{id}/network`) and floating IPs (`/v1/floating_ips`).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use ipnet::{Ipv4Net, Ipv6Net};
use nsdb::{FloatingIp, Provider, Tenant};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::extract::{from_json, JsonObject, OptionalJsonObject, Path, Query};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::provision::{self, FloatingIpRequest, TenantNetwork};
use crate::resource::{
    fetch_visible, get_one, list_page, object_response, parse_id, ListQuery, Page,
};
use crate::server::AppState;

/// The body of `POST /v1/tenants/{id}/network` (optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// The pod subnet (default: the next free one of the provider's pod range).
    #[serde(default)]
    pub pod_cidr: Option<Ipv4Net>,
    /// The IPv6 pod prefix of a dual-stack network (default: the next free
    /// one of the provider's IPv6 pod range; refused with 409 when the
    /// deployment has no IPv6 plan).
    #[serde(default)]
    pub pod_cidr6: Option<Ipv6Net>,
    /// Accept that the host reaches the pods only through NAT. Needed for a
    /// pod subnet that overlaps another tenant's (refused with 409
    /// `pod-subnet-overlap` otherwise); pods then reach the host
    /// masqueraded and the host cannot open connections to them.
    #[serde(default)]
    pub nat_only: bool,
}

async fn init_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let tenant: Tenant = fetch_visible(&state.nsdb, caller, parse_id("tenant", &id)?).await?;
    let request: NetworkRequest = from_json(Value::Object(body))?;
    let (network, created) = provision::init_tenant_network(
        &state.nsdb,
        tenant.id,
        (request.pod_cidr, request.pod_cidr6),
        request.nat_only,
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(network)).into_response())
}

async fn get_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TenantNetwork>, Problem> {
    let tenant: Tenant = fetch_visible(&state.nsdb, caller, parse_id("tenant", &id)?).await?;
    provision::tenant_network(&state.nsdb, tenant.id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("network of tenant {}", tenant.id)))
}

async fn delete_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let tenant: Tenant = fetch_visible(&state.nsdb, caller, parse_id("tenant", &id)?).await?;
    if provision::delete_tenant_network(&state.nsdb, tenant.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "network of tenant {}",
            tenant.id
        )))
    }
}

async fn get_provider(State(state): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    caller.require_admin()?;
    let provider = state
        .nsdb
        .list::<Provider>()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Problem::not_found("provider (this deployment has none)"))?;
    Ok(object_response(StatusCode::OK, &provider))
}

async fn list_floating(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<FloatingIp>>, Problem> {
    let query = ListQuery::parse(params, &["tenant_id", "router_id"])?;
    Ok(Json(list_page(&state.nsdb, caller, query).await?))
}

async fn create_floating(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let request: FloatingIpRequest = from_json(Value::Object(body))?;
    let _: Tenant = fetch_visible(&state.nsdb, caller, request.tenant_id).await?;
    let created = provision::create_floating_ip(&state.nsdb, &request).await?;
    Ok(object_response(StatusCode::CREATED, &created))
}

async fn delete_floating(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let fip: FloatingIp = fetch_visible(&state.nsdb, caller, parse_id("floating_ip", &id)?).await?;
    provision::delete_floating_ip(&state.nsdb, fip.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds the provisioning routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let network = "/v1/tenants/{id}/network";
    api.add(
        RouteDoc::new(
            Method::POST,
            network,
            "tenants",
            "Initialise the tenant's default network (admin; idempotent: 201 created, 200 existed)",
        )
        .optional_request::<NetworkRequest>()
        .response::<TenantNetwork>(201)
        .response::<TenantNetwork>(200),
        post(init_network),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            network,
            "tenants",
            "Show the tenant's default network",
        )
        .response::<TenantNetwork>(200),
        get(get_network),
    )
    .add(
        RouteDoc::new(
            Method::DELETE,
            network,
            "tenants",
            "Remove the tenant's default network (admin; its pods must be gone)",
        )
        .empty(204),
        delete(delete_network),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            "/v1/provider",
            "provider",
            "Show the provider settings (admin)",
        )
        .response::<Provider>(200),
        get(get_provider),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            "/v1/floating_ips",
            "floating_ips",
            "List floating IPs (admin)",
        )
        .response::<Page<FloatingIp>>(200)
        .query(&["tenant_id", "router_id", "limit", "after"]),
        get(list_floating),
    )
    .add(
        RouteDoc::new(
            Method::POST,
            "/v1/floating_ips",
            "floating_ips",
            "Create a floating IP: static NAT of an external address to a pod address (admin)",
        )
        .request::<FloatingIpRequest>()
        .response::<FloatingIp>(201),
        post(create_floating),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            "/v1/floating_ips/{id}",
            "floating_ips",
            "Get a floating IP (admin)",
        )
        .response::<FloatingIp>(200),
        get(get_one::<FloatingIp>),
    )
    .add(
        RouteDoc::new(
            Method::DELETE,
            "/v1/floating_ips/{id}",
            "floating_ips",
            "Delete a floating IP with its rules and route (admin)",
        )
        .empty(204),
        delete(delete_floating),
    )
}
