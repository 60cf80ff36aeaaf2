//! Pod attachments (admin; what the CNI plugin calls):
//! `/v1/attachments/{network}/{container_id}/{ifname}`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::Json;
use serde_json::Value;

use crate::auth::Caller;
use crate::extract::{from_json, JsonObject, Path, Query};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::provision::{self, Attachment, AttachmentKey, AttachmentRequest};
use crate::resource::{parse_id, Page};
use crate::server::AppState;

fn key((network, container_id, ifname): (String, String, String)) -> AttachmentKey {
    AttachmentKey {
        network,
        container_id,
        ifname,
    }
}

async fn put_attachment(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let request: AttachmentRequest = from_json(Value::Object(body))?;
    let (attachment, created) =
        provision::ensure_attachment(&state.nsdb, &key(path), &request).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(attachment)).into_response())
}

async fn get_attachment(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<Attachment>, Problem> {
    caller.require_admin()?;
    let key = key(path);
    provision::attachment(&state.nsdb, &key)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("attachment {}", key.owner())))
}

async fn delete_attachment(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    provision::delete_attachment(&state.nsdb, &key(path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_attachments(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<Attachment>>, Problem> {
    caller.require_admin()?;
    let mut host = None;
    let mut network = None;
    for (name, value) in &params {
        match name.as_str() {
            "host_id" => host = Some(parse_id("host", value)?),
            "network" => network = Some(value.as_str()),
            other => {
                return Err(
                    Problem::bad_request(format!("unknown query parameter '{other}'"))
                        .with_field(other),
                )
            }
        }
    }
    // Attachments are bounded by the pools' sizes; they come in one page.
    let items = provision::attachments(&state.nsdb, host, network).await?;
    Ok(Json(Page {
        items,
        next_after: None,
    }))
}

/// Adds the attachment routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let item = "/v1/attachments/{network}/{container_id}/{ifname}";
    api.add(
        RouteDoc::new(
            Method::GET,
            "/v1/attachments",
            "attachments",
            "List pod attachments (admin)",
        )
        .response::<Page<Attachment>>(200)
        .query(&["host_id", "network"]),
        get(list_attachments),
    )
    .add(
        RouteDoc::new(
            Method::PUT,
            item,
            "attachments",
            "Attach a pod interface: tenant and network if missing, port, binding and lease in one commit (admin; idempotent: 201 created, 200 existed)",
        )
        .request::<AttachmentRequest>()
        .response::<Attachment>(201)
        .response::<Attachment>(200),
        put(put_attachment),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            item,
            "attachments",
            "Get a pod attachment and whether its agent serves it (admin)",
        )
        .response::<Attachment>(200),
        get(get_attachment),
    )
    .add(
        RouteDoc::new(
            Method::DELETE,
            item,
            "attachments",
            "Detach a pod interface: port, binding and lease in one commit (admin; 204 also when absent)",
        )
        .empty(204),
        delete(delete_attachment),
    )
}
