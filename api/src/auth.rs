//! Bearer-token authentication: one admin token, and tenant tokens stored
//! (hashed) in the NSDB.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use nsdb::{ApiToken, Nsdb};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::problem::Problem;
use crate::server::AppState;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The operator: sees and changes everything.
    Admin,
    /// A tenant: sees and changes only its own resources.
    Tenant(Uuid),
}

impl Caller {
    /// Fails with 403 unless the caller is the admin.
    pub fn require_admin(&self) -> Result<(), Problem> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(Problem::forbidden(
                "this operation is reserved to the admin token",
            )),
        }
    }

    /// The scope the caller's writes are checked against, inside their
    /// NSDB transaction.
    pub fn scope(&self) -> nsdb::Scope {
        match self {
            Caller::Admin => nsdb::Scope::Admin,
            Caller::Tenant(tenant) => nsdb::Scope::Tenant(*tenant),
        }
    }

    /// Whether the caller may see an object owned by `tenant` (`None`:
    /// provider infrastructure).
    pub fn can_see(&self, tenant: Option<Uuid>) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Tenant(own) => tenant == Some(*own),
        }
    }
}

/// The SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id under which the tenant token with this hash is stored.
pub fn token_id(hash: &[u8; 32]) -> Uuid {
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash[..16]);
    uuid::Builder::from_random_bytes(id).into_uuid()
}

/// Constant-time equality, so response timing leaks nothing about a token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random token with a recognisable prefix.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("plx_{}", hex(&bytes))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How stale a token's `last_used_at` may get before a request refreshes
/// it: one write per token per minute at most, not one per request.
pub const LAST_USED_GRANULARITY_S: u64 = 60;

/// A new tenant token record for `secret` (the secret itself is not kept),
/// issued at `now`, valid until `expires_at` if given.
pub fn tenant_token_record(
    tenant_id: Uuid,
    secret: &str,
    description: String,
    now: u64,
    expires_at: Option<u64>,
) -> ApiToken {
    let hash = token_hash(secret);
    ApiToken {
        id: token_id(&hash),
        revision: 0,
        tenant_id,
        secret_sha256: hex(&hash),
        description,
        created_at: now,
        expires_at,
        last_used_at: None,
    }
}

/// Checks a presented token at `now` (seconds since the Unix epoch). The
/// token is read from the NSDB on every request, so a revoked token fails
/// at once on every API server; an expired one fails from its expiry.
pub async fn authenticate(
    nsdb: &Nsdb,
    admin_hash: &[u8; 32],
    token: &str,
    now: u64,
) -> Result<Caller, Problem> {
    let hash = token_hash(token);
    if same(&hash, admin_hash) {
        return Ok(Caller::Admin);
    }
    match nsdb
        .get::<ApiToken>(token_id(&hash))
        .await
        .map_err(Problem::from)?
    {
        Some(stored)
            if same(stored.secret_sha256.as_bytes(), hex(&hash).as_bytes())
                && !stored.expired(now) =>
        {
            let stale = stored
                .last_used_at
                .is_none_or(|at| now.saturating_sub(at) >= LAST_USED_GRANULARITY_S);
            if stale {
                tokio::spawn(record_use(nsdb.clone(), stored.clone(), now));
            }
            Ok(Caller::Tenant(stored.tenant_id))
        }
        _ => Err(Problem::unauthorized()),
    }
}

/// Records that `token` was used at `now`, unless it changed (or was
/// revoked) since it was read: best effort, never resurrecting a token.
async fn record_use(nsdb: Nsdb, mut token: ApiToken, now: u64) {
    let revision = token.revision;
    token.last_used_at = Some(now);
    if let Err(error) = nsdb.update(token, Some(revision)).await {
        tracing::debug!(%error, "token last-use not recorded");
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Problem> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(Problem::unauthorized)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(Problem::unauthorized)?;
        authenticate(&state.nsdb, &state.admin_token_hash, token, unix_now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_stable_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert!(a.starts_with("plx_") && a.len() == 68);
        assert_eq!(token_id(&token_hash(&a)), token_id(&token_hash(&a)));
        assert_ne!(token_id(&token_hash(&a)), token_id(&token_hash(&b)));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
