//! The caller's scope, checked inside the write's transaction: a write made
//! for a tenant may only touch that tenant's records and reference that
//! tenant's records. Deciding it here, once, against the transaction's own
//! reads, leaves no gap for a concurrent change to slip through between a
//! check and the commit.

use uuid::Uuid;

use super::{added_references, owning_tenant, owning_tenant_committed, Touched};
use crate::error::NsdbError;
use crate::model::Kind;
use crate::txn::Tx;

/// On whose behalf a write is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The operator: every record.
    #[default]
    Admin,
    /// One tenant: its own records only.
    Tenant(Uuid),
}

/// Checks one touched record against `scope`: the record as it was and as
/// it will be belongs to the tenant, and so does every record it newly
/// references (a foreign one is reported as missing, so ids cannot be
/// probed).
pub(super) async fn check_scope(tx: &mut Tx, t: &Touched, scope: Scope) -> Result<(), NsdbError> {
    let Scope::Tenant(tenant) = scope else {
        return Ok(());
    };
    if let Some(old) = &t.old {
        if owning_tenant_committed(tx, old).await? != Some(tenant) {
            return Err(NsdbError::NotFound {
                kind: t.kind,
                id: t.id,
            });
        }
    }
    let Some(new) = &t.new else {
        return Ok(());
    };
    if owning_tenant(tx, new).await? != Some(tenant) {
        return Err(NsdbError::OutOfScope {
            kind: t.kind,
            id: t.id,
            tenant,
        });
    }
    for r in added_references(t, new) {
        if r.kind == Kind::Tenant {
            continue; // the owner, checked above
        }
        let Some(target) = super::read(tx, r.kind, r.id).await? else {
            continue; // reported as a missing reference
        };
        if owning_tenant(tx, &target).await? != Some(tenant) {
            return Err(NsdbError::MissingReference {
                kind: t.kind,
                id: t.id,
                field: r.field.to_string(),
                target_kind: r.kind,
                target_id: r.id,
            });
        }
    }
    Ok(())
}
