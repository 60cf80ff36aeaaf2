//! `/v1/tenants` and tenant tokens.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use nsdb::{ApiToken, Kind, Mutation, Tenant};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::crud_docs;
use crate::auth::{generate_token, tenant_token_record, unix_now, Caller};
use crate::extract::{from_json, IfMatch, JsonObject, Path};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::{create_top, fetch_visible, get_one, list_all, parse_id, patch_one};
use crate::server::AppState;

/// The body of `POST /v1/tenants/{id}/tokens`.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Who or what will hold the token.
    #[serde(default)]
    pub description: String,
    /// Seconds until the token stops working (1 to 10 years' worth);
    /// without it the token lives until it is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// The longest `expires_in`: ten years.
pub const MAX_EXPIRES_IN_S: u64 = 10 * 365 * 24 * 3600;

/// A newly issued tenant token: the secret is shown this once.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct IssuedToken {
    /// The token's id.
    pub id: Uuid,
    /// The tenant it acts for.
    pub tenant_id: Uuid,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// The description given.
    pub description: String,
    /// When it stops working (RFC 3339), if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

async fn create_tenant(
    state: State<AppState>,
    caller: Caller,
    body: JsonObject,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    create_top::<Tenant>(state, caller, body).await
}

async fn patch_tenant(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    if_match: IfMatch,
    body: JsonObject,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    patch_one::<Tenant>(state, caller, id, if_match, body).await
}

/// Deletes a tenant together with its API tokens (but nothing else: its
/// devices must be gone first).
async fn delete_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let tenant: Tenant = fetch_visible(&state.nsdb, caller, parse_id("tenant", &id)?).await?;
    let mut batch: Vec<Mutation> = state
        .nsdb
        .list::<ApiToken>()
        .await?
        .into_iter()
        .filter(|t| t.tenant_id == tenant.id)
        .map(|t| Mutation::Delete {
            kind: Kind::ApiToken,
            id: t.id,
            expected_revision: None,
        })
        .collect();
    batch.push(Mutation::Delete {
        kind: Kind::Tenant,
        id: tenant.id,
        expected_revision: expected,
    });
    state.nsdb.apply(batch).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn issue_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let tenant: Tenant = fetch_visible(&state.nsdb, caller, parse_id("tenant", &id)?).await?;
    let request: TokenRequest = from_json(body.into())?;
    if let Some(seconds) = request.expires_in {
        if !(1..=MAX_EXPIRES_IN_S).contains(&seconds) {
            return Err(Problem::bad_request(format!(
                "expires_in {seconds} is outside 1-{MAX_EXPIRES_IN_S} seconds"
            ))
            .with_field("expires_in"));
        }
    }
    let now = unix_now();
    let secret = generate_token();
    let expires_at = request.expires_in.map(|s| now + s);
    let record = tenant_token_record(tenant.id, &secret, request.description, now, expires_at);
    let stored = state.nsdb.create(record).await?;
    let issued = IssuedToken {
        id: stored.id,
        tenant_id: tenant.id,
        token: secret,
        description: stored.description,
        expires_at: stored.expires_at.map(super::tokens::rfc3339),
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// Adds the tenant routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    let docs = crud_docs::<Tenant>(
        "/v1/tenants",
        "/v1/tenants/{id}",
        "tenants",
        &["limit", "after"],
    );
    api.add(docs.list, get(list_all::<Tenant>))
        .add(docs.create, post(create_tenant))
        .add(docs.get, get(get_one::<Tenant>))
        .add(docs.patch, axum::routing::patch(patch_tenant))
        .add(docs.delete, axum::routing::delete(delete_tenant))
        .add(
            RouteDoc::new(
                Method::POST,
                "/v1/tenants/{id}/tokens",
                "tenants",
                "Issue a tenant-scoped token (admin)",
            )
            .request::<TokenRequest>()
            .response::<IssuedToken>(201),
            post(issue_token),
        )
}
