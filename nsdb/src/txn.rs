//! Optimistic, serializable transactions over any [`KvBackend`].
//!
//! A [`Tx`] remembers every key and prefix it read and keeps its writes in
//! an overlay. On commit it asks the backend to apply the writes only if
//! nothing it read has changed since: each read key must still be at the
//! mod revision seen, and no key under a read prefix may have been created
//! or written after the prefix was read. Reads are thereby validated at
//! commit time, which makes every transaction serializable; a failed
//! validation means "somebody else won", and the caller runs the whole
//! transaction again against fresh state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{NsdbError, StoreError};
use crate::kv::{CommitOutcome, Compare, KvBackend, KvEntry, LeaseId, Op, Revision};

/// How many times a transaction is retried before giving up.
pub(crate) const MAX_ATTEMPTS: u32 = 200;

#[derive(Debug, Clone)]
enum Pending {
    Put {
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete,
}

/// One optimistic transaction; see the module docs.
pub(crate) struct Tx {
    kv: Arc<dyn KvBackend>,
    read_keys: HashMap<String, Option<KvEntry>>,
    read_prefixes: Vec<(String, Revision)>,
    writes: BTreeMap<String, Pending>,
}

impl Tx {
    /// Starts an empty transaction.
    pub(crate) fn new(kv: Arc<dyn KvBackend>) -> Tx {
        Tx {
            kv,
            read_keys: HashMap::new(),
            read_prefixes: Vec::new(),
            writes: BTreeMap::new(),
        }
    }

    /// The stored entry for `key` as of the transaction's first read of it,
    /// ignoring the transaction's own writes.
    pub(crate) async fn get_committed(&mut self, key: &str) -> Result<Option<KvEntry>, StoreError> {
        if let Some(entry) = self.read_keys.get(key) {
            return Ok(entry.clone());
        }
        let entry = self.kv.get(key).await?;
        self.read_keys.insert(key.to_string(), entry.clone());
        Ok(entry)
    }

    /// The value of `key` as this transaction sees it (its own writes first).
    pub(crate) async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(Pending::Put { value, .. }) => Ok(Some(value.clone())),
            Some(Pending::Delete) => Ok(None),
            None => Ok(self.get_committed(key).await?.map(|e| e.value)),
        }
    }

    /// Every (key, value) under `prefix` as this transaction sees it.
    pub(crate) async fn range(
        &mut self,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let result = self.kv.range(prefix).await?;
        self.read_prefixes
            .push((prefix.to_string(), result.revision));
        let mut merged: BTreeMap<String, Vec<u8>> = result
            .entries
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect();
        for (key, pending) in self.writes.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match pending {
                Pending::Put { value, .. } => merged.insert(key.clone(), value.clone()),
                Pending::Delete => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Writes `value` at `key` when the transaction commits.
    pub(crate) fn put(&mut self, key: impl Into<String>, value: Vec<u8>) {
        self.writes
            .insert(key.into(), Pending::Put { value, lease: None });
    }

    /// Writes `value` at `key`, attached to `lease`, when the transaction commits.
    pub(crate) fn put_with_lease(
        &mut self,
        key: impl Into<String>,
        value: Vec<u8>,
        lease: LeaseId,
    ) {
        self.writes.insert(
            key.into(),
            Pending::Put {
                value,
                lease: Some(lease),
            },
        );
    }

    /// Deletes `key` when the transaction commits.
    pub(crate) fn delete(&mut self, key: impl Into<String>) {
        self.writes.insert(key.into(), Pending::Delete);
    }

    /// Tries to commit. `Ok(None)` means a read was invalidated: run again.
    pub(crate) async fn commit(self) -> Result<Option<Revision>, StoreError> {
        let mut compares: Vec<Compare> = self
            .read_keys
            .iter()
            .map(|(key, entry)| Compare::ModRevisionEquals {
                key: key.clone(),
                revision: entry.as_ref().map_or(0, |e| e.mod_revision),
            })
            .collect();
        compares.extend(
            self.read_prefixes
                .into_iter()
                .map(|(prefix, revision)| Compare::PrefixUnchangedSince { prefix, revision }),
        );
        let ops = self
            .writes
            .into_iter()
            .map(|(key, pending)| match pending {
                Pending::Put { value, lease } => Op::Put { key, value, lease },
                Pending::Delete => Op::Delete { key },
            })
            .collect();
        match self.kv.commit(compares, ops).await? {
            CommitOutcome::Committed(revision) => Ok(Some(revision)),
            CommitOutcome::CompareFailed => Ok(None),
        }
    }
}

/// Backs off between attempts so that colliding writers spread out.
pub(crate) async fn backoff(attempt: u32) {
    let cap_us = 200u64 << attempt.min(6);
    let jitter = rand::random_range(0..cap_us);
    tokio::time::sleep(std::time::Duration::from_micros(jitter)).await;
}

/// The error for a transaction that never got through.
pub(crate) fn contention() -> NsdbError {
    NsdbError::Contention {
        attempts: MAX_ATTEMPTS,
    }
}
