//! `/v1/routers`, `/v1/bridges` and routes (`/v1/routers/{id}/routes`, `/v1/routes/{id}`).

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Json;
use nsdb::{Bridge, Route, Router};
use serde_json::Value;

use super::crud_docs;
use crate::auth::Caller;
use crate::extract::{JsonObject, Path, Query};
use crate::openapi::ApiRouter;
use crate::problem::Problem;
use crate::resource::{
    create_checked, create_top, fetch_visible, list_all, list_page, parse_id, set_from_path,
    with_new_id, ListQuery, Page,
};
use crate::server::AppState;

async fn create_route(
    State(state): State<AppState>,
    caller: Caller,
    Path(router): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    let router: Router = fetch_visible(&state.nsdb, caller, parse_id("router", &router)?).await?;
    let mut body = with_new_id(body);
    set_from_path(&mut body, "router_id", Value::String(router.id.to_string()))?;
    create_checked::<Route>(&state.nsdb, caller, body).await
}

async fn list_routes(
    State(state): State<AppState>,
    caller: Caller,
    Path(router): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<Route>>, Problem> {
    let router: Router = fetch_visible(&state.nsdb, caller, parse_id("router", &router)?).await?;
    let query = ListQuery::parse(params, &[])?.with_filter("router_id", router.id);
    Ok(Json(list_page(&state.nsdb, caller, query).await?))
}

/// Adds router, bridge and route routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let list_query: &[&str] = &["tenant_id", "limit", "after"];
    let r = crud_docs::<Router>("/v1/routers", "/v1/routers/{id}", "routers", list_query);
    let b = crud_docs::<Bridge>("/v1/bridges", "/v1/bridges/{id}", "bridges", list_query);
    let rt = crud_docs::<Route>(
        "/v1/routers/{id}/routes",
        "/v1/routes/{id}",
        "routes",
        &["limit", "after"],
    );
    let api = r.register::<Router>(api, get(list_all::<Router>), post(create_top::<Router>));
    let api = b.register::<Bridge>(api, get(list_all::<Bridge>), post(create_top::<Bridge>));
    rt.register::<Route>(api, get(list_routes), post(create_route))
}
