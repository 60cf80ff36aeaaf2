//! Provider infrastructure (admin only): `/v1/hosts` and `/v1/ip_pools`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use nsdb::{Host, IpLease, IpPool};

use super::crud_docs;
use crate::auth::Caller;
use crate::extract::{from_json, JsonObject, Path, Query};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::{create_top, fetch_visible, list_all, parse_id, Page};
use crate::server::AppState;

async fn list_leases(
    State(state): State<AppState>,
    caller: Caller,
    Path(pool): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<IpLease>>, Problem> {
    let pool: IpPool = fetch_visible(&state.nsdb, caller, parse_id("ip pool", &pool)?).await?;
    if let Some(name) = params.keys().next() {
        return Err(
            Problem::bad_request(format!("unknown query parameter '{name}'"))
                .with_field(name.clone()),
        );
    }
    // A pool's leases are bounded by its size; they come in one page.
    let leases = state.nsdb.leases(pool.id).await?;
    Ok(Json(Page {
        items: leases,
        next_after: None,
    }))
}

/// The body of `POST /v1/ip_pools/{id}/leases`.
#[derive(Debug, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Who holds the address (e.g. a container id and interface name).
    pub owner: String,
}

async fn allocate_lease(
    State(state): State<AppState>,
    caller: Caller,
    Path(pool): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let request: LeaseRequest = from_json(body.into())?;
    let pool: IpPool = fetch_visible(&state.nsdb, caller, parse_id("ip pool", &pool)?).await?;
    let held = state
        .nsdb
        .leases(pool.id)
        .await?
        .into_iter()
        .any(|l| l.owner == request.owner);
    let lease = state.nsdb.allocate_ip(pool.id, &request.owner).await?;
    let status = if held {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(lease)).into_response())
}

async fn release_lease(
    State(state): State<AppState>,
    caller: Caller,
    Path((pool, owner)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let pool: IpPool = fetch_visible(&state.nsdb, caller, parse_id("ip pool", &pool)?).await?;
    state.nsdb.release_ip(pool.id, &owner).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds the host and pool routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let h = crud_docs::<Host>("/v1/hosts", "/v1/hosts/{id}", "hosts", &["limit", "after"]);
    let p = crud_docs::<IpPool>(
        "/v1/ip_pools",
        "/v1/ip_pools/{id}",
        "ip_pools",
        &["tenant_id", "limit", "after"],
    );
    let api = h.register::<Host>(api, get(list_all::<Host>), post(create_top::<Host>));
    p.register::<IpPool>(api, get(list_all::<IpPool>), post(create_top::<IpPool>))
        .add(
            RouteDoc::new(
                Method::GET,
                "/v1/ip_pools/{id}/leases",
                "ip_pools",
                "List a pool's leases (read-only)",
            )
            .response::<Page<IpLease>>(200),
            get(list_leases),
        )
        .add(
            RouteDoc::new(
                Method::POST,
                "/v1/ip_pools/{id}/leases",
                "ip_pools",
                "Lease an address to an owner (admin; idempotent per owner: 201 leased, 200 the owner's existing lease)",
            )
            .request::<LeaseRequest>()
            .response::<IpLease>(201)
            .response::<IpLease>(200),
            post(allocate_lease),
        )
        .add(
            RouteDoc::new(
                Method::DELETE,
                "/v1/ip_pools/{id}/leases/{owner}",
                "ip_pools",
                "Release an owner's lease (admin; 204 also when it held none)",
            )
            .empty(204),
            delete(release_lease),
        )
}
