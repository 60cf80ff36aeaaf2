//! `/v1/tokens`: tenant tokens without their secrets — listing, reading
//! and revoking. A tenant token sees and revokes its own tenant's tokens;
//! the admin token sees them all. Tokens are issued by
//! `POST /v1/tenants/{id}/tokens`.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::Json;
use nsdb::ApiToken;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{Path, Query};
use crate::openapi::{ApiRouter, RouteDoc};
use crate::problem::Problem;
use crate::resource::{parse_id, ListQuery, Page};
use crate::server::AppState;

/// A tenant token as listed: never its secret or the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct TokenInfo {
    /// The token's id.
    pub id: Uuid,
    /// The tenant it acts for.
    pub tenant_id: Uuid,
    /// Who or what holds it.
    pub description: String,
    /// When it was issued (RFC 3339), if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When it stops working (RFC 3339), if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it last authenticated a request (RFC 3339, to the minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// Seconds since the Unix epoch as RFC 3339 (UTC, whole seconds).
pub fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

impl From<&ApiToken> for TokenInfo {
    fn from(token: &ApiToken) -> TokenInfo {
        TokenInfo {
            id: token.id,
            tenant_id: token.tenant_id,
            description: token.description.clone(),
            created_at: (token.created_at > 0).then(|| rfc3339(token.created_at)),
            expires_at: token.expires_at.map(rfc3339),
            last_used_at: token.last_used_at.map(rfc3339),
        }
    }
}

/// A token the caller may see, or 404 (also for other tenants' tokens).
async fn visible_token(state: &AppState, caller: Caller, id: &str) -> Result<ApiToken, Problem> {
    let id = parse_id("api_token", id)?;
    let not_found = || Problem::not_found(format!("token {id}"));
    let token = state
        .nsdb
        .get::<ApiToken>(id)
        .await?
        .ok_or_else(not_found)?;
    if caller.can_see(Some(token.tenant_id)) {
        Ok(token)
    } else {
        Err(not_found())
    }
}

async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<TokenInfo>>, Problem> {
    let query = ListQuery::parse(params, &["tenant_id"])?;
    let wanted = query.filter("tenant_id");
    let tokens: Vec<ApiToken> = state
        .nsdb
        .list::<ApiToken>()
        .await?
        .into_iter()
        .filter(|t| caller.can_see(Some(t.tenant_id)))
        .filter(|t| wanted.is_none_or(|w| t.tenant_id == w))
        .collect();
    let page = query.paginate(tokens);
    Ok(Json(Page {
        items: page.items.iter().map(TokenInfo::from).collect(),
        next_after: page.next_after,
    }))
}

async fn get_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, Problem> {
    Ok(Json(TokenInfo::from(
        &visible_token(&state, caller, &id).await?,
    )))
}

async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let token = visible_token(&state, caller, &id).await?;
    state
        .nsdb
        .scoped(caller.scope())
        .delete::<ApiToken>(token.id, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds the token routes.
pub fn routes(api: ApiRouter) -> ApiRouter {
    api.add(
        RouteDoc::new(
            Method::GET,
            "/v1/tokens",
            "tokens",
            "List tenant tokens (never their secrets)",
        )
        .response::<Page<TokenInfo>>(200)
        .query(&["tenant_id", "limit", "after"]),
        get(list_tokens),
    )
    .add(
        RouteDoc::new(
            Method::GET,
            "/v1/tokens/{id}",
            "tokens",
            "Get a tenant token",
        )
        .response::<TokenInfo>(200),
        get(get_token),
    )
    .add(
        RouteDoc::new(
            Method::DELETE,
            "/v1/tokens/{id}",
            "tokens",
            "Revoke a tenant token: it answers 401 at once, on every API server",
        )
        .empty(204),
        axum::routing::delete(revoke_token),
    )
}
