//! `/v1/chains` and their rules (`/v1/chains/{id}/rules`, `/v1/rules/{id}`).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Json;
use nsdb::{Chain, NsdbError, Record, Rule};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::crud_docs;
use crate::auth::Caller;
use crate::extract::{from_json, JsonObject, Path, Query};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::positions;
use crate::problem::Problem;
use crate::resource::{
    create_top, fetch_visible, list_all, object_response, parse_id, set_from_path, with_new_id,
    ListQuery, Page,
};
use crate::server::AppState;

/// How often an insert is retried when another writer moved rules meanwhile.
const INSERT_ATTEMPTS: usize = 5;

/// `POST /v1/chains/{id}/rules`: inserts at `position` (shifting the rules
/// at and after it down by one, in the same transaction) or appends.
async fn insert_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(chain): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    let chain: Chain = fetch_visible(&state.nsdb, caller, parse_id("chain", &chain)?).await?;
    let mut body = with_new_id(body);
    set_from_path(&mut body, "chain_id", Value::String(chain.id.to_string()))?;
    let explicit = body.contains_key("position");
    body.entry("position").or_insert(Value::from(0));
    let mut rule: Rule = from_json(Value::Object(body))?;
    let full = || {
        Problem::new(
            StatusCode::CONFLICT,
            "no-room",
            "No room in the chain",
            "a rule already sits at the highest position; there is no position after it",
        )
        .with_field("position")
    };
    for _ in 0..INSERT_ATTEMPTS {
        let existing = state.nsdb.list_by_parent::<Rule>(chain.id).await?;
        if !explicit {
            rule.position = positions::next_position(&existing).map_err(|_| full())?;
        }
        let batch = positions::insert(&existing, rule.clone()).map_err(|_| full())?;
        match state.nsdb.scoped(caller.scope()).apply(batch).await {
            Ok(applied) => {
                let created = applied
                    .records
                    .into_iter()
                    .flatten()
                    .find_map(|r| match r {
                        Record::Rule(r) if r.id == rule.id => Some(r),
                        _ => None,
                    })
                    .ok_or_else(|| Problem::bad_request("the rule was not stored"))?;
                return Ok(object_response(StatusCode::CREATED, &created));
            }
            Err(error) if moved_meanwhile(&error) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(NsdbError::Contention {
        attempts: INSERT_ATTEMPTS as u32,
    }
    .into())
}

/// Another writer inserted or moved rules between our read and our commit.
fn moved_meanwhile(error: &NsdbError) -> bool {
    match error {
        NsdbError::RevisionConflict { .. } => true,
        NsdbError::Duplicate { constraint, .. } => constraint == "position in chain",
        _ => false,
    }
}

/// The body of `PUT /v1/rules/{id}/position`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRule {
    /// The rule's new position; rules in the way shift down by one.
    pub position: u32,
}

/// `PUT /v1/rules/{id}/position`: moves a rule within its chain.
async fn move_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    let request: MoveRule = from_json(Value::Object(body))?;
    let id = parse_id("rule", &id)?;
    for _ in 0..INSERT_ATTEMPTS {
        let rule: Rule = fetch_visible(&state.nsdb, caller, id).await?;
        let existing = state.nsdb.list_by_parent::<Rule>(rule.chain_id).await?;
        let batch = positions::move_to(&existing, &rule, request.position).map_err(|_| {
            Problem::new(
                StatusCode::CONFLICT,
                "no-room",
                "No room in the chain",
                "the rules after that position reach the highest position",
            )
            .with_field("position")
        })?;
        match state.nsdb.scoped(caller.scope()).apply(batch).await {
            Ok(_) => {
                let moved: Rule = fetch_visible(&state.nsdb, caller, id).await?;
                return Ok(object_response(StatusCode::OK, &moved));
            }
            Err(error) if moved_meanwhile(&error) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(NsdbError::Contention {
        attempts: INSERT_ATTEMPTS as u32,
    }
    .into())
}

/// `GET /v1/chains/{id}/rules`: the chain's rules in evaluation order.
async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
    Path(chain): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<Rule>>, Problem> {
    let chain: Chain = fetch_visible(&state.nsdb, caller, parse_id("chain", &chain)?).await?;
    let query = ListQuery::parse(params, &[])?;
    let mut rules = state.nsdb.list_by_parent::<Rule>(chain.id).await?;
    rules.sort_by_key(|r| r.position);
    Ok(Json(query.paginate(rules)))
}

/// Adds the chain and rule routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let c = crud_docs::<Chain>(
        "/v1/chains",
        "/v1/chains/{id}",
        "chains",
        &["tenant_id", "limit", "after"],
    );
    let r = crud_docs::<Rule>(
        "/v1/chains/{id}/rules",
        "/v1/rules/{id}",
        "rules",
        &["limit", "after"],
    );
    let api = c.register::<Chain>(api, get(list_all::<Chain>), post(create_top::<Chain>));
    r.register::<Rule>(api, get(list_rules), post(insert_rule))
        .add(
            RouteDoc::new(
                Method::PUT,
                "/v1/rules/{id}/position",
                "rules",
                "Move a rule to another position in its chain",
            )
            .request::<MoveRule>()
            .response::<Rule>(200),
            put(move_rule),
        )
}
