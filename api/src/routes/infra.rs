//! Provider infrastructure (admin only): `/v1/hosts` and `/v1/ip_pools`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::Method;
use axum::routing::{get, post};
use axum::Json;
use nsdb::{Host, IpLease, IpPool};

use super::crud_docs;
use crate::auth::Caller;
use crate::extract::{Path, Query};
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
}
