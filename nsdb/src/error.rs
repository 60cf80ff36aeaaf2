//! Errors of the store backends and of the typed NSDB.

use ipnet::IpNet;
use uuid::Uuid;

use crate::kv::Revision;
use crate::model::Kind;

/// A failure of a key-value backend.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The backend could not be reached or did not answer.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error.
    #[error("store error: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("corrupt value at key {key}: {reason}")]
    Corrupt {
        /// The key whose value is bad.
        key: String,
        /// Why decoding failed.
        reason: String,
    },
    /// The requested revision has been compacted away.
    #[error("revision {requested} is compacted; the oldest available is {compact_revision}")]
    Compacted {
        /// The revision that was asked for.
        requested: Revision,
        /// The oldest revision still available.
        compact_revision: Revision,
    },
    /// The lease has expired or never existed.
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
    /// The backend configuration is invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

/// One record that still references an object being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// The kind of the referencing record.
    pub kind: Kind,
    /// Its id (a UUID, or the owner of an IP lease).
    pub id: String,
    /// The field that holds the reference.
    pub field: String,
}

impl std::fmt::Display for Referrer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.kind, self.id, self.field)
    }
}

fn list_referrers(referrers: &[Referrer]) -> String {
    referrers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rejected or failed NSDB operation. Whatever the variant, a rejected
/// write has changed nothing.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NsdbError {
    /// The backend failed; the write may be retried.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// The kind looked up.
        kind: Kind,
        /// The id looked up.
        id: Uuid,
    },
    /// An object with this id already exists.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// The kind created.
        kind: Kind,
        /// The id that is taken.
        id: Uuid,
    },
    /// The object changed since the revision the caller based its write on.
    #[error("{kind} {id} is at revision {actual}, not the expected {expected}")]
    RevisionConflict {
        /// The kind written.
        kind: Kind,
        /// The id written.
        id: Uuid,
        /// The revision the caller expected.
        expected: Revision,
        /// The revision actually stored (0: deleted).
        actual: Revision,
    },
    /// A write for a tenant would create or change a record of another
    /// tenant (or of the provider).
    #[error("{kind} {id} would not belong to tenant {tenant}, on whose behalf it is written")]
    OutOfScope {
        /// The kind written.
        kind: Kind,
        /// The id written.
        id: Uuid,
        /// The tenant the write is made for.
        tenant: Uuid,
    },
    /// A field references an object that does not exist.
    #[error("{kind} {id}: field {field} references missing {target_kind} {target_id}")]
    MissingReference {
        /// The kind of the record with the dangling reference.
        kind: Kind,
        /// Its id.
        id: Uuid,
        /// The referencing field.
        field: String,
        /// The kind that was expected.
        target_kind: Kind,
        /// The id that does not exist.
        target_id: Uuid,
    },
    /// The object cannot be deleted while others reference it.
    #[error("{kind} {id} is still referenced by {}", list_referrers(.referrers))]
    StillReferenced {
        /// The kind being deleted.
        kind: Kind,
        /// The id being deleted.
        id: Uuid,
        /// Everything that still points at it.
        referrers: Vec<Referrer>,
    },
    /// A uniqueness constraint would be violated.
    #[error("{kind} {id}: {constraint} '{value}' is already used by {owner}")]
    Duplicate {
        /// The kind of the record being written.
        kind: Kind,
        /// Its id.
        id: Uuid,
        /// Which constraint (e.g. "name within tenant", "mac on bridge").
        constraint: String,
        /// The duplicated value.
        value: String,
        /// The id of the record that already holds it.
        owner: String,
    },
    /// The record breaks a rule of the model.
    #[error("{kind} {id}: invalid {field}: {reason}")]
    Invalid {
        /// The kind of the record.
        kind: Kind,
        /// Its id.
        id: Uuid,
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The record is well-formed, but breaks a rule about how it relates to
    /// other records (a one-sided link, a next hop on another router, ...).
    #[error("{kind} {id}: {field}: {reason}")]
    Rejected {
        /// The kind of the record.
        kind: Kind,
        /// Its id.
        id: Uuid,
        /// The offending field.
        field: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A tenant's routed pod subnet overlaps another tenant's: the host
    /// could route only one of them back.
    #[error(
        "tenant {tenant}: pod subnet {pod_cidr} overlaps {other_cidr} of tenant {other_name} ({other_tenant}); \
         the host can route only one of them: choose another subnet, or opt in to NAT-only reachability"
    )]
    PodSubnetOverlap {
        /// The tenant being written.
        tenant: Uuid,
        /// Its pod subnet.
        pod_cidr: IpNet,
        /// The tenant whose subnet it overlaps.
        other_tenant: Uuid,
        /// That tenant's name.
        other_name: String,
        /// That tenant's pod subnet.
        other_cidr: IpNet,
    },
    /// An IP pool has no free address left.
    #[error("ip pool {pool} ({cidr}) is exhausted")]
    PoolExhausted {
        /// The pool id.
        pool: Uuid,
        /// The pool's CIDR.
        cidr: String,
    },
    /// Too many concurrent writers kept invalidating this transaction.
    #[error("transaction gave up after {attempts} conflicting attempts")]
    Contention {
        /// How many times it was tried.
        attempts: u32,
    },
}
