//! The typed NSDB: records in, records out, every write checked and atomic.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use crate::embedded::EmbeddedBackend;
use crate::error::{NsdbError, StoreError};
use crate::etcd::{EtcdBackend, EtcdConfig};
use crate::integrity::{self, Mutation, Scope};
use crate::keys::{self, ObjectKey};
use crate::kv::{KvBackend, Revision};
use crate::model::{Kind, Port, Record, Resource};
use crate::txn::{self, Tx, MAX_ATTEMPTS};
use crate::watch::NsdbWatch;

/// Where the NSDB lives.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One local file (the single-node default).
    Embedded {
        /// Path of the database file.
        path: PathBuf,
    },
    /// An etcd cluster (multi-host deployments).
    Etcd(EtcdConfig),
}

/// The records a batch committed, and the revision it committed at.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The commit's revision.
    pub revision: Revision,
    /// The stored records in batch order (`None` where the batch deleted).
    pub records: Vec<Option<Record>>,
}

/// Every record at one revision: the starting point of a watch.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The revision the snapshot was read at; watch from `revision + 1`.
    pub revision: Revision,
    /// All records, hosts with their liveness filled in.
    pub records: Vec<Record>,
}

/// The network state database: a typed, transactional view of a backend.
#[derive(Clone)]
pub struct Nsdb {
    kv: Arc<dyn KvBackend>,
    scope: Scope,
}

impl std::fmt::Debug for Nsdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nsdb")
    }
}

fn decode_entry(key: &str, value: &[u8], revision: Revision) -> Result<Option<Record>, NsdbError> {
    match keys::parse_object(key) {
        Some(ObjectKey::Record(kind, _)) => {
            let mut record = Record::decode(kind, value).map_err(|reason| StoreError::Corrupt {
                key: key.to_string(),
                reason,
            })?;
            record.set_revision(revision);
            Ok(Some(record))
        }
        _ => Ok(None),
    }
}

impl Nsdb {
    /// Wraps an already opened backend.
    pub fn new(kv: Arc<dyn KvBackend>) -> Nsdb {
        Nsdb {
            kv,
            scope: Scope::Admin,
        }
    }

    /// The same store, writing on behalf of `scope`: every write through
    /// it is checked against the scope inside its own transaction (a
    /// tenant's write may touch and reference only that tenant's records).
    pub fn scoped(&self, scope: Scope) -> Nsdb {
        Nsdb {
            kv: self.kv.clone(),
            scope,
        }
    }

    /// Whose behalf this handle writes on.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Opens the configured backend.
    pub async fn open(config: &StoreConfig) -> Result<Nsdb, NsdbError> {
        let kv: Arc<dyn KvBackend> = match config {
            StoreConfig::Embedded { path } => Arc::new(EmbeddedBackend::open(path)?),
            StoreConfig::Etcd(config) => Arc::new(EtcdBackend::connect(config.clone()).await?),
        };
        Ok(Nsdb::new(kv))
    }

    /// The backend, for watches and tooling that work below the model.
    pub fn backend(&self) -> &Arc<dyn KvBackend> {
        &self.kv
    }

    /// Applies a batch of mutations atomically: all of them, or (on any
    /// error) none. Integrity rules are checked on the batch's final state.
    pub async fn apply(&self, batch: Vec<Mutation>) -> Result<Applied, NsdbError> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new(self.kv.clone());
            let mut records = integrity::stage(&mut tx, &batch, self.scope).await?;
            if let Some(revision) = tx.commit().await? {
                for record in records.iter_mut().flatten() {
                    record.set_revision(revision);
                }
                return Ok(Applied { revision, records });
            }
            txn::backoff(attempt).await;
        }
        Err(txn::contention())
    }

    async fn apply_one<T: Resource>(&self, mutation: Mutation) -> Result<T, NsdbError> {
        let applied = self.apply(vec![mutation]).await?;
        applied
            .records
            .into_iter()
            .flatten()
            .next()
            .and_then(T::from_record)
            .ok_or_else(|| StoreError::Backend("commit returned no record".into()).into())
    }

    /// Creates a record; fails if its id is taken or a rule is broken.
    pub async fn create<T: Resource>(&self, record: T) -> Result<T, NsdbError> {
        self.apply_one(Mutation::Create(record.into_record())).await
    }

    /// Replaces a record. With `expected_revision`, only if it is unchanged.
    pub async fn update<T: Resource>(
        &self,
        record: T,
        expected_revision: Option<Revision>,
    ) -> Result<T, NsdbError> {
        self.apply_one(Mutation::Update {
            record: record.into_record(),
            expected_revision,
        })
        .await
    }

    /// Deletes a record. With `expected_revision`, only if it is unchanged.
    /// Returns the revision of the deletion.
    pub async fn delete<T: Resource>(
        &self,
        id: Uuid,
        expected_revision: Option<Revision>,
    ) -> Result<Revision, NsdbError> {
        let batch = vec![Mutation::Delete {
            kind: T::KIND,
            id,
            expected_revision,
        }];
        Ok(self.apply(batch).await?.revision)
    }

    /// Reads one record of any kind.
    pub async fn get_record(&self, kind: Kind, id: Uuid) -> Result<Option<Record>, NsdbError> {
        let key = keys::object(kind, id);
        let Some(entry) = self.kv.get(&key).await? else {
            return Ok(None);
        };
        let mut record = decode_entry(&key, &entry.value, entry.mod_revision)?;
        if let Some(Record::Host(host)) = record.as_mut() {
            host.alive = self.kv.get(&keys::liveness(host.id)).await?.is_some();
        }
        Ok(record)
    }

    /// Reads one record.
    pub async fn get<T: Resource>(&self, id: Uuid) -> Result<Option<T>, NsdbError> {
        Ok(self.get_record(T::KIND, id).await?.and_then(T::from_record))
    }

    /// Reads one record, failing with `NotFound` when it does not exist.
    pub async fn fetch<T: Resource>(&self, id: Uuid) -> Result<T, NsdbError> {
        self.get(id)
            .await?
            .ok_or(NsdbError::NotFound { kind: T::KIND, id })
    }

    /// Lists every record of one kind, in id order.
    pub async fn list<T: Resource>(&self) -> Result<Vec<T>, NsdbError> {
        let range = self.kv.range(&keys::objects_of(T::KIND)).await?;
        let alive = if T::KIND == Kind::Host {
            self.alive_hosts().await?
        } else {
            HashSet::new()
        };
        let mut out = Vec::with_capacity(range.entries.len());
        for entry in range.entries {
            if let Some(mut record) = decode_entry(&entry.key, &entry.value, entry.mod_revision)? {
                if let Record::Host(host) = &mut record {
                    host.alive = alive.contains(&host.id);
                }
                out.extend(T::from_record(record));
            }
        }
        Ok(out)
    }

    /// Lists the records of one kind whose parent (device, router, chain or
    /// tenant) is `parent`.
    pub async fn list_by_parent<T: Resource>(&self, parent: Uuid) -> Result<Vec<T>, NsdbError> {
        Ok(self
            .list::<T>()
            .await?
            .into_iter()
            .filter(|r| r.clone().into_record().parent_id() == Some(parent))
            .collect())
    }

    async fn alive_hosts(&self) -> Result<HashSet<Uuid>, NsdbError> {
        let range = self.kv.range(keys::LIVENESS).await?;
        Ok(range
            .entries
            .iter()
            .filter_map(|e| match keys::parse_object(&e.key) {
                Some(ObjectKey::Liveness(id)) => Some(id),
                _ => None,
            })
            .collect())
    }

    /// Every record at one consistent revision.
    pub async fn snapshot(&self) -> Result<Snapshot, NsdbError> {
        let range = self.kv.range(keys::OBJECTS).await?;
        let mut alive = HashSet::new();
        let mut records = Vec::with_capacity(range.entries.len());
        for entry in &range.entries {
            match keys::parse_object(&entry.key) {
                Some(ObjectKey::Liveness(id)) => {
                    alive.insert(id);
                }
                Some(ObjectKey::Record(..)) => {
                    records.extend(decode_entry(&entry.key, &entry.value, entry.mod_revision)?)
                }
                None => {}
            }
        }
        for record in records.iter_mut() {
            if let Record::Host(host) = record {
                host.alive = alive.contains(&host.id);
            }
        }
        Ok(Snapshot {
            revision: range.revision,
            records,
        })
    }

    /// Follows every record change from `from_revision` on (inclusive).
    pub async fn watch(&self, from_revision: Revision) -> Result<NsdbWatch, NsdbError> {
        let rx = self.kv.watch(keys::OBJECTS, from_revision).await?;
        Ok(NsdbWatch::new(rx))
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> Result<Revision, NsdbError> {
        Ok(self.kv.current_revision().await?)
    }

    /// Discards history before `revision`.
    pub async fn compact(&self, revision: Revision) -> Result<(), NsdbError> {
        Ok(self.kv.compact(revision).await?)
    }

    /// Links two ports (an interior link), both sides in one transaction.
    pub async fn link_ports(&self, a: Uuid, b: Uuid) -> Result<(Port, Port), NsdbError> {
        self.relink(a, Some(b), b).await
    }

    /// Removes the interior link of `port` on both sides.
    pub async fn unlink_port(&self, port: Uuid) -> Result<(Port, Port), NsdbError> {
        let current = self.fetch::<Port>(port).await?;
        let Some(peer) = current.peer_id else {
            return Err(NsdbError::Rejected {
                kind: Kind::Port,
                id: port,
                field: "peer_id".into(),
                reason: "the port is not linked".into(),
            });
        };
        self.relink(port, None, peer).await
    }

    /// Links or unlinks `a` and `b`, re-reading both when a concurrent
    /// writer changed either (the checks must see the latest state).
    async fn relink(
        &self,
        a: Uuid,
        peer: Option<Uuid>,
        b: Uuid,
    ) -> Result<(Port, Port), NsdbError> {
        if a == b {
            return Err(NsdbError::Invalid {
                kind: Kind::Port,
                id: a,
                field: "peer_id".into(),
                reason: "a port cannot be linked to itself".into(),
            });
        }
        for attempt in 0..MAX_ATTEMPTS {
            match self.relink_once(a, peer, b).await {
                Err(NsdbError::RevisionConflict { .. }) => txn::backoff(attempt).await,
                other => return other,
            }
        }
        Err(txn::contention())
    }

    async fn relink_once(
        &self,
        a: Uuid,
        peer: Option<Uuid>,
        b: Uuid,
    ) -> Result<(Port, Port), NsdbError> {
        let mut port_a = self.fetch::<Port>(a).await?;
        let mut port_b = self.fetch::<Port>(b).await?;
        if peer.is_some() {
            for (port, other) in [(&port_a, b), (&port_b, a)] {
                if let Some(existing) = port.peer_id.filter(|p| *p != other) {
                    return Err(NsdbError::Rejected {
                        kind: Kind::Port,
                        id: port.id,
                        field: "peer_id".into(),
                        reason: format!("port {} is already linked to port {existing}", port.id),
                    });
                }
            }
        }
        let (rev_a, rev_b) = (port_a.revision, port_b.revision);
        port_a.peer_id = peer;
        port_b.peer_id = peer.map(|_| a);
        let applied = self
            .apply(vec![
                Mutation::Update {
                    record: Record::Port(port_a),
                    expected_revision: Some(rev_a),
                },
                Mutation::Update {
                    record: Record::Port(port_b),
                    expected_revision: Some(rev_b),
                },
            ])
            .await?;
        let mut ports = applied
            .records
            .into_iter()
            .flatten()
            .filter_map(Port::from_record);
        match (ports.next(), ports.next()) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => Err(StoreError::Backend("link commit returned no ports".into()).into()),
        }
    }
}
