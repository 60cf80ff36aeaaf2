//! The L4 load balancer: `/v1/load_balancers`, `/v1/pools`, `/v1/vips`,
//! `/v1/members` and `/v1/health_monitors`. Each object belongs to the
//! tenant of its parent (router, load balancer or pool), which a create
//! need not repeat.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use nsdb::{HealthMonitor, Kind, LoadBalancer, MemberHealth, NsdbError, Pool, PoolMember, Vip};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::crud_docs;
use crate::auth::Caller;
use crate::extract::JsonObject;
use crate::openapi::ApiRouter;
use crate::problem::Problem;
use crate::resource::{create_checked, list_all, owner_tenant, with_new_id, ApiResource};
use crate::server::AppState;

/// Fills a create body's `tenant_id` from the parent named by `field` (a
/// `kind`) when the body leaves it out. A parent that does not exist, or
/// that a tenant caller cannot see, is a missing reference.
async fn tenant_from_parent<R: ApiResource>(
    state: &AppState,
    caller: Caller,
    body: &mut Map<String, Value>,
    field: &str,
    kind: Kind,
) -> Result<(), Problem> {
    if body.contains_key("tenant_id") {
        return Ok(());
    }
    let Some(given) = body.get(field) else {
        return Err(Problem::bad_request(format!("{field} is required")).with_field(field));
    };
    let Some(parent) = given.as_str().and_then(|s| Uuid::parse_str(s).ok()) else {
        return Err(Problem::bad_request(format!("{given} is not a UUID")).with_field(field));
    };
    let owner = match state.nsdb.get_record(kind, parent).await? {
        Some(record) => owner_tenant(&state.nsdb, &record).await?,
        None => None,
    };
    match owner.filter(|owner| caller.can_see(Some(*owner))) {
        Some(owner) => {
            body.insert("tenant_id".into(), Value::String(owner.to_string()));
            Ok(())
        }
        None => Err(NsdbError::MissingReference {
            kind: R::KIND,
            id: body
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .unwrap_or_default(),
            field: field.to_string(),
            target_kind: kind,
            target_id: parent,
        }
        .into()),
    }
}

/// `POST` of a load-balancer object whose parent is `field` (a `kind`).
async fn create_child<R: ApiResource>(
    state: AppState,
    caller: Caller,
    body: Map<String, Value>,
    field: &str,
    kind: Kind,
) -> Result<Response, Problem> {
    let mut body = with_new_id(body);
    tenant_from_parent::<R>(&state, caller, &mut body, field, kind).await?;
    if R::KIND == Kind::PoolMember {
        let unknown = serde_json::to_value(MemberHealth::Unknown).unwrap_or(Value::Null);
        match body.get("health") {
            Some(given) if *given != unknown => {
                return Err(Problem::bad_request(
                    "health is written by the agents running the pool's monitor",
                )
                .with_field("health"))
            }
            _ => {}
        }
    }
    create_checked::<R>(&state.nsdb, caller, body).await
}

async fn create_load_balancer(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    create_child::<LoadBalancer>(state, caller, body, "router_id", Kind::Router).await
}

async fn create_pool(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    create_child::<Pool>(state, caller, body, "load_balancer_id", Kind::LoadBalancer).await
}

async fn create_vip(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    create_child::<Vip>(state, caller, body, "load_balancer_id", Kind::LoadBalancer).await
}

async fn create_member(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    create_child::<PoolMember>(state, caller, body, "pool_id", Kind::Pool).await
}

async fn create_monitor(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    create_child::<HealthMonitor>(state, caller, body, "pool_id", Kind::Pool).await
}

/// Adds the load-balancer routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let by_router: &[&str] = &["tenant_id", "router_id", "limit", "after"];
    let by_lb: &[&str] = &["tenant_id", "load_balancer_id", "limit", "after"];
    let by_pool: &[&str] = &["tenant_id", "pool_id", "limit", "after"];
    let api = crud_docs::<LoadBalancer>(
        "/v1/load_balancers",
        "/v1/load_balancers/{id}",
        "load_balancers",
        by_router,
    )
    .register::<LoadBalancer>(
        api,
        get(list_all::<LoadBalancer>),
        post(create_load_balancer),
    );
    let api = crud_docs::<Pool>("/v1/pools", "/v1/pools/{id}", "load_balancers", by_lb)
        .register::<Pool>(api, get(list_all::<Pool>), post(create_pool));
    let api = crud_docs::<Vip>("/v1/vips", "/v1/vips/{id}", "load_balancers", by_lb)
        .register::<Vip>(api, get(list_all::<Vip>), post(create_vip));
    let api = crud_docs::<PoolMember>("/v1/members", "/v1/members/{id}", "load_balancers", by_pool)
        .register::<PoolMember>(api, get(list_all::<PoolMember>), post(create_member));
    crud_docs::<HealthMonitor>(
        "/v1/health_monitors",
        "/v1/health_monitors/{id}",
        "load_balancers",
        by_pool,
    )
    .register::<HealthMonitor>(api, get(list_all::<HealthMonitor>), post(create_monitor))
}
