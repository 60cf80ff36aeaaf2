//! The key-value backend contract that both stores implement.
//!
//! The typed NSDB ([`crate::Nsdb`]) is written once against this trait, so
//! integrity checks, indexes and IPAM behave identically on every backend.
//! The contract is etcd's v3 data model, reduced to what Plexus uses:
//!
//! - one global, strictly increasing revision; every committed transaction
//!   gets exactly one new revision, shared by all its events;
//! - every key carries the revision that created it and the one that last
//!   modified it;
//! - keys are relative: a backend that shares its keyspace (etcd) adds its
//!   configured prefix on the way in and strips it on the way out;
//! - a commit is all-or-nothing and applies only when all its comparisons
//!   hold;
//! - a watch delivers every change from a start revision on, in commit
//!   order, or says the history it needs has been compacted away;
//! - leases tie keys to a keep-alive: when a lease expires its keys go.

use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::error::StoreError;

/// A global store revision. Revision 0 means "never written".
pub type Revision = i64;

/// A lease identifier granted by [`KvBackend::grant_lease`].
pub type LeaseId = i64;

/// One stored key with its value and revision metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key, relative to the backend's own prefix.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision of the transaction that created the key.
    pub create_revision: Revision,
    /// The revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
}

/// The result of reading a key prefix: the entries and the revision read at.
#[derive(Debug, Clone)]
pub struct RangeResult {
    /// Entries sorted by key.
    pub entries: Vec<KvEntry>,
    /// The store revision the read observed.
    pub revision: Revision,
}

/// A precondition of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals this value (0: the key does not exist).
    ModRevisionEquals {
        /// The key compared.
        key: String,
        /// The expected mod revision.
        revision: Revision,
    },
    /// No key under the prefix was created or modified after `revision`.
    /// Together with a read at `revision`, this rules out phantoms.
    PrefixUnchangedSince {
        /// The key prefix compared.
        prefix: String,
        /// The revision the prefix was read at.
        revision: Revision,
    },
}

/// A write in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite a key, optionally attached to a lease.
    Put {
        /// The key written.
        key: String,
        /// The bytes written.
        value: Vec<u8>,
        /// The lease the key lives and dies with, if any.
        lease: Option<LeaseId>,
    },
    /// Delete a key (a no-op when it does not exist).
    Delete {
        /// The key deleted.
        key: String,
    },
}

/// What happened to a key in a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted (explicitly or by lease expiry).
    Delete,
}

/// One change observed by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEvent {
    /// Put or delete.
    pub kind: KvEventKind,
    /// The key changed.
    pub key: String,
    /// The new value (empty for deletes).
    pub value: Vec<u8>,
    /// The revision of the transaction that made the change.
    pub revision: Revision,
}

/// A message on a watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// All events of one or more committed transactions, in commit order.
    Events(Vec<KvEvent>),
    /// The requested start revision is older than the oldest revision still
    /// kept. The watch has ended; the watcher must re-list and watch again.
    Compacted {
        /// The oldest revision that can still be watched from.
        compact_revision: Revision,
    },
    /// The watch ended for a reason other than compaction.
    Failed(String),
}

/// The receiving end of a watch. Dropping it cancels the watch.
pub type WatchReceiver = mpsc::Receiver<WatchMessage>;

/// The outcome of a commit whose request itself succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// All comparisons held; the writes are applied at this revision.
    Committed(Revision),
    /// Some comparison failed; nothing was written.
    CompareFailed,
}

/// A transactional, watchable, revisioned key-value store.
#[async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, StoreError>;

    /// Reads every key starting with `prefix`, sorted by key, in one snapshot.
    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError>;

    /// Applies `ops` atomically if every comparison in `compares` holds.
    async fn commit(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<CommitOutcome, StoreError>;

    /// Streams every change under `prefix` from `from_revision` on (inclusive).
    ///
    /// Transient disconnects are hidden: the backend resumes after the last
    /// delivered revision, so no event is lost or repeated.
    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchReceiver, StoreError>;

    /// The current store revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Discards history before `revision`; watches from older revisions then
    /// receive [`WatchMessage::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease; fails with [`StoreError::LeaseNotFound`] once expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;
}
