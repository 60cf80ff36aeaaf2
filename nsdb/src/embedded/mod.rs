//! The embedded backend: one local redb file, no external service.
//!
//! It reproduces the etcd semantics of [`KvBackend`]: a global revision per
//! commit, create/mod revisions per key, a change log that watches replay
//! from (until compacted), and leases. Commits are serialized by one lock
//! that also orders their broadcast to live watchers, so watchers see
//! commits exactly in revision order. Leases live in memory: keys attached
//! to a lease from an earlier process are deleted when the file is opened,
//! as etcd would expire them once their owner stopped renewing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc};

use crate::error::StoreError;

mod codec;
use crate::kv::{
    CommitOutcome, Compare, KvBackend, KvEntry, KvEvent, KvEventKind, LeaseId, Op, RangeResult,
    Revision, WatchMessage, WatchReceiver,
};
use codec::{decode_events, encode_events, Stored};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const COMPACT_REVISION: &str = "compact_revision";

/// How many revisions of history are kept before the oldest are compacted.
const RETAINED_REVISIONS: u64 = 50_000;

fn backend_error(op: &str) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("embedded store {op}: {e}"))
}

macro_rules! db {
    ($op:expr, $e:expr) => {
        $e.map_err(|e| backend_error($op)(e.into()))
    };
}

/// One committed revision, as broadcast to live watchers.
#[derive(Debug)]
struct Committed {
    revision: Revision,
    events: Vec<KvEvent>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

struct Inner {
    db: Database,
    commit_lock: Mutex<()>,
    committed: broadcast::Sender<Arc<Committed>>,
    leases: Mutex<HashMap<LeaseId, Lease>>,
    next_lease: AtomicI64,
}

/// The embedded single-file store.
#[derive(Clone)]
pub struct EmbeddedBackend {
    inner: Arc<Inner>,
}

impl EmbeddedBackend {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<EmbeddedBackend, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot open embedded store {}: {e}",
                path.display()
            ))
        })?;
        let wtx = db!("open", db.begin_write())?;
        {
            db!("open", wtx.open_table(KV))?;
            db!("open", wtx.open_table(LOG))?;
            db!("open", wtx.open_table(META))?;
        }
        db!("open", wtx.commit())?;
        let (committed, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            db,
            commit_lock: Mutex::new(()),
            committed,
            leases: Mutex::new(HashMap::new()),
            next_lease: AtomicI64::new(1),
        });
        inner.delete_orphaned_lease_keys()?;
        spawn_lease_reaper(Arc::downgrade(&inner));
        Ok(EmbeddedBackend { inner })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Backend(format!("embedded store task failed: {e}")))?
    }
}

fn spawn_lease_reaper(inner: Weak<Inner>) {
    std::thread::Builder::new()
        .name("nsdb-lease-reaper".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let Some(inner) = inner.upgrade() else { return };
            let now = Instant::now();
            let expired: Vec<LeaseId> = match inner.leases.lock() {
                Ok(leases) => leases
                    .iter()
                    .filter(|(_, l)| l.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect(),
                Err(_) => return,
            };
            for lease in expired {
                if let Err(error) = inner.end_lease(lease) {
                    tracing::warn!(lease, %error, "expiring lease failed");
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|error| tracing::error!(%error, "cannot start the lease reaper"));
}

impl Inner {
    fn revisions(&self) -> Result<(Revision, Revision), StoreError> {
        let rtx = db!("read", self.db.begin_read())?;
        let meta = db!("read", rtx.open_table(META))?;
        let get = |k| -> Result<Revision, StoreError> {
            Ok(db!("read", meta.get(k))?.map_or(0, |v| v.value() as Revision))
        };
        Ok((get(REVISION)?, get(COMPACT_REVISION)?))
    }

    fn delete_orphaned_lease_keys(&self) -> Result<(), StoreError> {
        let rtx = db!("open", self.db.begin_read())?;
        let kv = db!("open", rtx.open_table(KV))?;
        let mut orphans = Vec::new();
        for item in db!("open", kv.iter())? {
            let (k, v) = db!("open", item)?;
            if Stored::decode(k.value(), v.value())?.lease != 0 {
                orphans.push(Op::Delete {
                    key: k.value().to_string(),
                });
            }
        }
        drop((kv, rtx));
        if !orphans.is_empty() {
            self.commit(&[], orphans)?;
        }
        Ok(())
    }

    fn end_lease(&self, lease: LeaseId) -> Result<bool, StoreError> {
        let keys = match self.leases.lock() {
            Ok(mut leases) => match leases.remove(&lease) {
                Some(l) => l.keys,
                None => return Ok(false),
            },
            Err(_) => return Err(StoreError::Backend("lease table poisoned".into())),
        };
        let ops = keys.into_iter().map(|key| Op::Delete { key }).collect();
        self.commit(&[], ops)?;
        Ok(true)
    }

    fn commit(&self, compares: &[Compare], ops: Vec<Op>) -> Result<CommitOutcome, StoreError> {
        let _serial = self
            .commit_lock
            .lock()
            .map_err(|_| StoreError::Backend("commit lock poisoned".into()))?;
        let wtx = db!("commit", self.db.begin_write())?;
        let mut events = Vec::new();
        let mut lease_changes: Vec<(String, LeaseId, LeaseId)> = Vec::new();
        let revision;
        {
            let mut kv = db!("commit", wtx.open_table(KV))?;
            let mut meta = db!("commit", wtx.open_table(META))?;
            for compare in compares {
                if !compare_holds(&kv, compare)? {
                    return Ok(CommitOutcome::CompareFailed);
                }
            }
            let current = db!("commit", meta.get(REVISION))?.map_or(0, |v| v.value() as Revision);
            revision = current + 1;
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        let lease = lease.unwrap_or(0);
                        if lease != 0 && !self.lease_exists(lease)? {
                            return Err(StoreError::LeaseNotFound(lease));
                        }
                        let previous = db!("commit", kv.get(key.as_str()))?
                            .map(|v| Stored::decode(&key, v.value()))
                            .transpose()?;
                        let stored = Stored {
                            create_revision: previous
                                .as_ref()
                                .map_or(revision, |p| p.create_revision),
                            mod_revision: revision,
                            lease,
                            value,
                        };
                        db!(
                            "commit",
                            kv.insert(key.as_str(), stored.encode().as_slice())
                        )?;
                        lease_changes.push((key.clone(), previous.map_or(0, |p| p.lease), lease));
                        events.push(KvEvent {
                            kind: KvEventKind::Put,
                            key,
                            value: stored.value,
                            revision,
                        });
                    }
                    Op::Delete { key } => {
                        let removed = db!("commit", kv.remove(key.as_str()))?
                            .map(|v| Stored::decode(&key, v.value()))
                            .transpose()?;
                        if let Some(previous) = removed {
                            lease_changes.push((key.clone(), previous.lease, 0));
                            events.push(KvEvent {
                                kind: KvEventKind::Delete,
                                key,
                                value: Vec::new(),
                                revision,
                            });
                        }
                    }
                }
            }
            if events.is_empty() {
                return Ok(CommitOutcome::Committed(current));
            }
            db!("commit", meta.insert(REVISION, revision as u64))?;
            let mut log = db!("commit", wtx.open_table(LOG))?;
            db!(
                "commit",
                log.insert(revision as u64, encode_events(&events).as_slice())
            )?;
            let compacted = db!("commit", meta.get(COMPACT_REVISION))?.map_or(0, |v| v.value());
            if revision as u64 > compacted + 2 * RETAINED_REVISIONS {
                let to = revision as u64 - RETAINED_REVISIONS;
                db!("commit", log.retain_in(..to, |_, _| false))?;
                db!("commit", meta.insert(COMPACT_REVISION, to))?;
            }
        }
        db!("commit", wtx.commit())?;
        self.track_lease_keys(lease_changes);
        // No receivers is fine: nobody is watching.
        let _ = self
            .committed
            .send(Arc::new(Committed { revision, events }));
        Ok(CommitOutcome::Committed(revision))
    }

    fn lease_exists(&self, lease: LeaseId) -> Result<bool, StoreError> {
        let leases = self
            .leases
            .lock()
            .map_err(|_| StoreError::Backend("lease table poisoned".into()))?;
        Ok(leases.contains_key(&lease))
    }

    fn track_lease_keys(&self, changes: Vec<(String, LeaseId, LeaseId)>) {
        let Ok(mut leases) = self.leases.lock() else {
            return;
        };
        for (key, before, after) in changes {
            if let Some(l) = leases.get_mut(&before) {
                l.keys.remove(&key);
            }
            if let Some(l) = leases.get_mut(&after) {
                l.keys.insert(key);
            }
        }
    }

    fn read_log(
        &self,
        from: Revision,
        prefix: &str,
    ) -> Result<Result<Vec<KvEvent>, Revision>, StoreError> {
        let rtx = db!("watch", self.db.begin_read())?;
        let meta = db!("watch", rtx.open_table(META))?;
        let compacted =
            db!("watch", meta.get(COMPACT_REVISION))?.map_or(0, |v| v.value() as Revision);
        if from < compacted {
            return Ok(Err(compacted));
        }
        let log = db!("watch", rtx.open_table(LOG))?;
        let mut events = Vec::new();
        for item in db!("watch", log.range(from.max(0) as u64..))? {
            let (rev, bytes) = db!("watch", item)?;
            let decoded = decode_events(rev.value() as Revision, bytes.value())?;
            events.extend(decoded.into_iter().filter(|e| e.key.starts_with(prefix)));
        }
        Ok(Ok(events))
    }
}

fn compare_holds(kv: &redb::Table<&str, &[u8]>, compare: &Compare) -> Result<bool, StoreError> {
    match compare {
        Compare::ModRevisionEquals { key, revision } => {
            let actual = match db!("compare", kv.get(key.as_str()))? {
                Some(v) => Stored::decode(key, v.value())?.mod_revision,
                None => 0,
            };
            Ok(actual == *revision)
        }
        Compare::PrefixUnchangedSince { prefix, revision } => {
            for item in db!("compare", kv.range(prefix.as_str()..))? {
                let (k, v) = db!("compare", item)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                if Stored::decode(k.value(), v.value())?.mod_revision > *revision {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

fn read_range(inner: &Inner, prefix: &str) -> Result<RangeResult, StoreError> {
    let rtx = db!("range", inner.db.begin_read())?;
    let kv = db!("range", rtx.open_table(KV))?;
    let meta = db!("range", rtx.open_table(META))?;
    let revision = db!("range", meta.get(REVISION))?.map_or(0, |v| v.value() as Revision);
    let mut entries = Vec::new();
    for item in db!("range", kv.range(prefix..))? {
        let (k, v) = db!("range", item)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        let stored = Stored::decode(k.value(), v.value())?;
        entries.push(KvEntry {
            key: k.value().to_string(),
            value: stored.value,
            create_revision: stored.create_revision,
            mod_revision: stored.mod_revision,
        });
    }
    Ok(RangeResult { entries, revision })
}

#[async_trait]
impl KvBackend for EmbeddedBackend {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            let rtx = db!("get", inner.db.begin_read())?;
            let kv = db!("get", rtx.open_table(KV))?;
            let found = db!("get", kv.get(key.as_str()))?;
            found
                .map(|v| {
                    let stored = Stored::decode(&key, v.value())?;
                    Ok(KvEntry {
                        key: key.clone(),
                        value: stored.value,
                        create_revision: stored.create_revision,
                        mod_revision: stored.mod_revision,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| read_range(inner, &prefix)).await
    }

    async fn commit(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<CommitOutcome, StoreError> {
        self.blocking(move |inner| inner.commit(&compares, ops))
            .await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchReceiver, StoreError> {
        // Subscribe before reading history, so nothing falls between the two.
        let mut live = self.inner.committed.subscribe();
        let (current, _) = self.blocking(|inner| inner.revisions()).await?;
        let mut next = if from_revision <= 0 {
            current + 1
        } else {
            from_revision
        };
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut replay = true;
            loop {
                if replay {
                    let (p, from) = (prefix.clone(), next);
                    let message = match this.blocking(move |inner| inner.read_log(from, &p)).await {
                        Ok(Err(compact_revision)) => {
                            Some(WatchMessage::Compacted { compact_revision })
                        }
                        Err(e) => Some(WatchMessage::Failed(e.to_string())),
                        Ok(Ok(events)) => {
                            if let Some(last) = events.last() {
                                next = last.revision + 1;
                                if tx.send(WatchMessage::Events(events)).await.is_err() {
                                    return;
                                }
                            }
                            None
                        }
                    };
                    if let Some(message) = message {
                        let _ = tx.send(message).await;
                        return;
                    }
                    replay = false;
                }
                match live.recv().await {
                    Ok(commit) if commit.revision < next => {}
                    Ok(commit) if commit.revision > next => replay = true,
                    Ok(commit) => {
                        next = commit.revision + 1;
                        let events: Vec<KvEvent> = commit
                            .events
                            .iter()
                            .filter(|e| e.key.starts_with(&prefix))
                            .cloned()
                            .collect();
                        if !events.is_empty()
                            && tx.send(WatchMessage::Events(events)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => replay = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.blocking(|inner| inner.revisions()).await?.0)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            let _serial = inner
                .commit_lock
                .lock()
                .map_err(|_| StoreError::Backend("commit lock poisoned".into()))?;
            let wtx = db!("compact", inner.db.begin_write())?;
            {
                let mut meta = db!("compact", wtx.open_table(META))?;
                let current =
                    db!("compact", meta.get(REVISION))?.map_or(0, |v| v.value() as Revision);
                let compacted = db!("compact", meta.get(COMPACT_REVISION))?
                    .map_or(0, |v| v.value() as Revision);
                if revision > current {
                    return Err(StoreError::Backend(format!(
                        "cannot compact to future revision {revision} (current {current})"
                    )));
                }
                if revision <= compacted {
                    return Ok(());
                }
                db!("compact", meta.insert(COMPACT_REVISION, revision as u64))?;
                let mut log = db!("compact", wtx.open_table(LOG))?;
                db!("compact", log.retain_in(..revision as u64, |_, _| false))?;
            }
            db!("compact", wtx.commit())
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let id = self.inner.next_lease.fetch_add(1, Ordering::Relaxed);
        let mut leases = self
            .inner
            .leases
            .lock()
            .map_err(|_| StoreError::Backend("lease table poisoned".into()))?;
        leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: HashSet::new(),
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut leases = self
            .inner
            .leases
            .lock()
            .map_err(|_| StoreError::Backend("lease table poisoned".into()))?;
        let l = leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let ended = self.blocking(move |inner| inner.end_lease(lease)).await?;
        if ended {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }
}
