//! `POST /v1/batch`: several puts and deletes of tenant objects in one NSDB
//! transaction: all of them, or (on any error) none. A controller that
//! keeps a set of objects in step with what it follows (the Kubernetes
//! reconcile writes a NetworkPolicy's chains, rules and groups this way)
//! never leaves half a change applied.
//!
//! A put creates the record when its id is free and replaces it otherwise
//! (every field as given; fields a PATCH may not change must stay as they
//! are); a delete of a missing record does nothing, so a batch can be sent
//! again. Each target is read first and the commit fails with 409 when one
//! changed meanwhile (or with 412 when `if_revision` does not match).

use axum::extract::State;
use axum::http::Method;
use axum::routing::post;
use axum::Json;
use nsdb::{Mutation, Record};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{from_json, JsonObject};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::{fetch_visible, ApiResource};
use crate::server::AppState;

/// The most operations one batch may carry: an etcd transaction is bounded
/// (128 operations and 128 comparisons by default), and a record takes
/// several of each (`tests/batch_api.rs` commits the largest batch on etcd).
pub const MAX_OPERATIONS: usize = 25;

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchOperation {
    /// Create or replace a record.
    Put {
        /// The collection, as in its path: `chains`, `rules`, `port_groups`,
        /// `ip_address_groups`, `ports`, `load_balancers`, `pools`, `vips`,
        /// `members`, `health_monitors`.
        collection: String,
        /// The whole record, with its `id`.
        record: Map<String, Value>,
        /// Replace only if the stored record is at this revision.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_revision: Option<i64>,
    },
    /// Delete a record (nothing happens when it does not exist).
    Delete {
        /// The collection, as in its path.
        collection: String,
        /// The record's id.
        id: Uuid,
        /// Delete only if the stored record is at this revision.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_revision: Option<i64>,
    },
}

/// The body of `POST /v1/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The operations, applied together.
    pub operations: Vec<BatchOperation>,
}

/// The answer of `POST /v1/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchResult {
    /// The NSDB revision of the commit (absent when nothing changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The stored records, one per operation: the record for a put, `null`
    /// for a delete.
    pub records: Vec<Value>,
}

/// A record's JSON.
fn record_json<R: ApiResource>(record: Record) -> Value {
    R::from_record(record)
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or(Value::Null)
}

/// A problem about operation `index`.
fn at(index: usize, problem: Problem) -> Problem {
    let operation = format!("operations[{index}]");
    let field = match &problem.field {
        Some(field) => format!("{operation}.{field}"),
        None => operation.clone(),
    };
    let detail = format!("{operation}: {}", problem.detail);
    Problem { detail, ..problem }.with_field(field)
}

/// Stages a put of `R`: a create when the id is free, else a replacement
/// that keeps the fields a PATCH may not change.
async fn stage_put<R: ApiResource>(
    state: &AppState,
    caller: Caller,
    mut body: Map<String, Value>,
    if_revision: Option<i64>,
) -> Result<Mutation, Problem> {
    if R::ADMIN_ONLY {
        caller.require_admin()?;
    }
    body.remove("revision");
    let record: R = from_json(Value::Object(body.clone()))?;
    let Some(current) = state.nsdb.get::<R>(record.id()).await? else {
        if if_revision.is_some() {
            return Err(Problem::not_found(format!("{} {}", R::KIND, record.id())));
        }
        return Ok(Mutation::Create(record.into_record()));
    };
    let current: R = fetch_visible(&state.nsdb, caller, current.id()).await?;
    let stored = serde_json::to_value(&current).map_err(|e| Problem::bad_request(e.to_string()))?;
    let given = serde_json::to_value(&record).map_err(|e| Problem::bad_request(e.to_string()))?;
    let fixed = R::FIXED
        .iter()
        .chain([("tenant_id", "an object cannot move to another tenant")].iter());
    for (field, why) in fixed {
        if stored.get(field) != given.get(field) {
            return Err(
                Problem::bad_request(format!("{field} cannot be changed: {why}"))
                    .with_field(*field),
            );
        }
    }
    Ok(Mutation::Update {
        expected_revision: Some(if_revision.unwrap_or(current.revision())),
        record: record.into_record(),
    })
}

/// Stages a delete of `R`, or nothing when it does not exist.
async fn stage_delete<R: ApiResource>(
    state: &AppState,
    caller: Caller,
    id: Uuid,
    if_revision: Option<i64>,
) -> Result<Option<Mutation>, Problem> {
    if R::ADMIN_ONLY {
        caller.require_admin()?;
    }
    if state.nsdb.get::<R>(id).await?.is_none() && if_revision.is_none() {
        return Ok(None);
    }
    let current: R = fetch_visible(&state.nsdb, caller, id).await?;
    Ok(Some(Mutation::Delete {
        kind: R::KIND,
        id,
        expected_revision: Some(if_revision.unwrap_or(current.revision())),
    }))
}

/// Runs `$body` with `$ty` bound to the type of collection `$collection`.
macro_rules! by_collection {
    ($collection:expr, $ty:ident => $body:expr) => {
        match $collection {
            "chains" => {
                type $ty = nsdb::Chain;
                $body
            }
            "rules" => {
                type $ty = nsdb::Rule;
                $body
            }
            "port_groups" => {
                type $ty = nsdb::PortGroup;
                $body
            }
            "ip_address_groups" => {
                type $ty = nsdb::IpAddressGroup;
                $body
            }
            "ports" => {
                type $ty = nsdb::Port;
                $body
            }
            "load_balancers" => {
                type $ty = nsdb::LoadBalancer;
                $body
            }
            "pools" => {
                type $ty = nsdb::Pool;
                $body
            }
            "vips" => {
                type $ty = nsdb::Vip;
                $body
            }
            "members" => {
                type $ty = nsdb::PoolMember;
                $body
            }
            "health_monitors" => {
                type $ty = nsdb::HealthMonitor;
                $body
            }
            other => Err(
                Problem::bad_request(format!("'{other}' cannot be changed in a batch"))
                    .with_field("collection"),
            ),
        }
    };
}

/// The JSON of a stored record of `collection`.
fn stored_json(collection: &str, record: Record) -> Value {
    let json: Result<Value, Problem> =
        by_collection!(collection, R => Ok(record_json::<R>(record)));
    json.unwrap_or(Value::Null)
}

async fn apply_batch(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Json<BatchResult>, Problem> {
    let request: BatchRequest = from_json(Value::Object(body))?;
    if request.operations.len() > MAX_OPERATIONS {
        return Err(Problem::bad_request(format!(
            "{} operations; a batch carries at most {MAX_OPERATIONS}",
            request.operations.len()
        ))
        .with_field("operations"));
    }
    let mut mutations = Vec::new();
    // For each operation: where its mutation sits in the batch, if any.
    let mut slots = Vec::new();
    let mut targets = std::collections::HashSet::new();
    for (index, operation) in request.operations.iter().enumerate() {
        let (collection, mutation) = match operation.clone() {
            BatchOperation::Put {
                collection,
                record,
                if_revision,
            } => {
                let mutation: Result<Mutation, Problem> = by_collection!(collection.as_str(), R =>
                    stage_put::<R>(&state, caller, record, if_revision).await);
                (collection, Some(mutation.map_err(|p| at(index, p))?))
            }
            BatchOperation::Delete {
                collection,
                id,
                if_revision,
            } => {
                let mutation: Result<Option<Mutation>, Problem> = by_collection!(collection.as_str(), R =>
                    stage_delete::<R>(&state, caller, id, if_revision).await);
                (collection, mutation.map_err(|p| at(index, p))?)
            }
        };
        if let Some(mutation) = mutation {
            let target = match &mutation {
                Mutation::Create(r) | Mutation::Update { record: r, .. } => (r.kind(), r.id()),
                Mutation::Delete { kind, id, .. } => (*kind, *id),
            };
            if !targets.insert(target) {
                return Err(at(
                    index,
                    Problem::bad_request(format!(
                        "{} {} is named twice in the batch",
                        target.0, target.1
                    )),
                ));
            }
            slots.push((collection, Some(mutations.len())));
            mutations.push(mutation);
        } else {
            slots.push((collection, None));
        }
    }
    if mutations.is_empty() {
        return Ok(Json(BatchResult {
            revision: None,
            records: vec![Value::Null; slots.len()],
        }));
    }
    let applied = state.nsdb.scoped(caller.scope()).apply(mutations).await?;
    let records = slots
        .into_iter()
        .map(|(collection, slot)| {
            slot.and_then(|i| applied.records.get(i).cloned().flatten())
                .map_or(Value::Null, |r| stored_json(&collection, r))
        })
        .collect();
    Ok(Json(BatchResult {
        revision: Some(applied.revision),
        records,
    }))
}

/// The batch route.
pub fn routes(api: ApiRouter) -> ApiRouter {
    api.add(
        RouteDoc::new(
            Method::POST,
            "/v1/batch",
            "batch",
            "Put and delete several tenant objects in one transaction",
        )
        .request::<BatchRequest>()
        .response::<BatchResult>(200),
        post(apply_batch),
    )
}
