//! Routed pod subnets never overlap: the provider router routes each one
//! back to its tenant, so the host can reach every pod by its own address
//! only while no two tenants claim the same addresses. A tenant network
//! that opts in to NAT-only reachability claims nothing. A dual-stack
//! network claims its IPv4 subnet and its IPv6 prefix.
//!
//! The index (`podnets/…`, value: the tenant id) is read as a prefix
//! inside the writing transaction, so of two concurrent writers claiming
//! overlapping subnets, the second one's commit fails, re-checks and sees
//! the first.

use ipnet::IpNet;
use uuid::Uuid;

use super::{read, Touched};
use crate::error::NsdbError;
use crate::keys;
use crate::model::{Kind, Record};
use crate::txn::Tx;

/// The subnets `record` claims in the index (its IPv4 pod subnet and its
/// IPv6 pod prefix), if it is a tenant with a routed network.
fn claimed(record: &Option<Record>) -> Vec<IpNet> {
    match record {
        Some(Record::Tenant(t)) => t
            .network
            .filter(|n| !n.nat_only)
            .map(|n| {
                [n.pod_cidr, n.pod_cidr6]
                    .into_iter()
                    .flatten()
                    .map(|c| c.trunc())
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Moves the index entries of the batch's tenants, refusing a subnet that
/// overlaps another tenant's. Releases come first, so one batch can hand
/// a subnet from one tenant to another.
pub(super) async fn write_index(tx: &mut Tx, touched: &[Touched]) -> Result<(), NsdbError> {
    let changed: Vec<&Touched> = touched
        .iter()
        .filter(|t| t.kind == Kind::Tenant && claimed(&t.old) != claimed(&t.new))
        .collect();
    for t in &changed {
        for old in claimed(&t.old) {
            tx.delete(keys::pod_subnet(old));
        }
    }
    for t in changed {
        for new in claimed(&t.new) {
            claim(tx, t.id, new).await?;
        }
    }
    Ok(())
}

/// Puts `new` in the index for `tenant`, unless another tenant's claim overlaps it.
async fn claim(tx: &mut Tx, tenant: Uuid, new: IpNet) -> Result<(), NsdbError> {
    for (key, owner) in tx.range(keys::POD_SUBNETS).await? {
        let Some(other_cidr) = keys::parse_pod_subnet(&key) else {
            continue;
        };
        let Ok(other_tenant) = String::from_utf8_lossy(&owner).parse::<Uuid>() else {
            continue;
        };
        if other_tenant != tenant && overlaps(&other_cidr, &new) {
            let other_name = match read(tx, Kind::Tenant, other_tenant).await? {
                Some(Record::Tenant(other)) => other.name,
                _ => "(deleted)".into(),
            };
            return Err(NsdbError::PodSubnetOverlap {
                tenant,
                pod_cidr: new,
                other_tenant,
                other_name,
                other_cidr,
            });
        }
    }
    tx.put(keys::pod_subnet(new), tenant.to_string().into_bytes());
    Ok(())
}
