//! The agent's view of the NSDB: a topology snapshot kept current by a
//! watch, swapped atomically, plus the invalidation tags of every change.
//!
//! The feed re-lists and re-watches after compaction, and when the NSDB is
//! unreachable it keeps the last snapshot in place (forwarding goes on) and
//! retries with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use nsdb::{Kind, Nsdb, ObjectEvent, Record, WatchItem};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::engine::Tag;
use crate::snapshot::Topology;

/// The current topology, readable from any thread without a lock: a load
/// is an atomic pointer read (`arc-swap`), a swap never waits for readers.
#[derive(Default)]
pub struct SharedTopology {
    current: ArcSwap<Topology>,
    /// Topologies built, and the microseconds spent building them: whole
    /// builds, then those that only built route tables again, then those
    /// that moved bindings (and maybe built route tables).
    builds: [AtomicU64; 3],
    build_micros: [AtomicU64; 3],
}

/// How a topology was built from the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildKind {
    /// From every record.
    Whole,
    /// Only some routers' route tables again, the rest shared.
    Routes,
    /// Only some exterior bridge ports' bindings moved (or only their
    /// records' revisions; and maybe some routers' route tables built
    /// again): the shared base copied once if a binding really moved,
    /// nothing built from the records.
    Bindings,
}

impl BuildKind {
    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            BuildKind::Whole => "whole",
            BuildKind::Routes => "routes",
            BuildKind::Bindings => "bindings",
        }
    }
}

impl SharedTopology {
    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Topology> {
        self.current.load_full()
    }

    /// The snapshot in force now, borrowed for a short while (a batch)
    /// without touching its shared reference count.
    pub fn borrow(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.current.load()
    }

    /// Topologies built of `kind`, and the seconds spent building them.
    pub fn builds(&self, kind: BuildKind) -> (u64, f64) {
        let k = kind as usize;
        let micros = self.build_micros[k].load(Ordering::Relaxed);
        (self.builds[k].load(Ordering::Relaxed), micros as f64 / 1e6)
    }

    fn count_build(&self, kind: BuildKind, took: Duration) {
        let k = kind as usize;
        self.builds[k].fetch_add(1, Ordering::Relaxed);
        self.build_micros[k].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Puts `topology` in force as the next generation; returns it.
    fn store(&self, mut topology: Topology) -> u64 {
        topology.generation = self.current.load().generation + 1;
        let generation = topology.generation;
        self.current.store(Arc::new(topology));
        generation
    }
}

/// The tags a new topology invalidates, with its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The generation of the topology now in force.
    pub generation: u64,
    /// What changed.
    pub tags: Vec<Tag>,
}

/// The agent's first full read of the NSDB: what cold start waits for
/// before the agent can serve anything.
#[derive(Debug, Clone, Copy)]
pub struct InitialRead {
    /// The records read (liveness markers not counted).
    pub records: usize,
    /// How long the successful read took.
    pub duration: Duration,
    /// When it was done.
    pub done_at: SystemTime,
}

/// The tags a change to `record` (before and/or after) invalidates.
pub fn tags_of(record: &Record) -> Vec<Tag> {
    match record {
        Record::Port(p) => vec![Tag::Port(p.id), Tag::Device(p.device_id)],
        Record::Bridge(b) => vec![Tag::Device(b.id)],
        Record::Router(r) => vec![Tag::Device(r.id)],
        // A new or changed route can capture traffic of any flow through the router.
        Record::Route(r) => vec![Tag::Route(r.id), Tag::Device(r.router_id)],
        Record::Rule(r) => vec![Tag::Chain(r.chain_id)],
        Record::Chain(c) => vec![Tag::Chain(c.id)],
        Record::PortGroup(g) => vec![Tag::Group(g.id)],
        Record::IpAddressGroup(g) => vec![Tag::Group(g.id)],
        // A router with a load balancer tracks every connection.
        Record::LoadBalancer(lb) => vec![Tag::Device(lb.router_id)],
        // Established connections to a member carry its tag; VIPs, pools and
        // monitors only steer new connections, which are never cached.
        Record::PoolMember(m) => vec![Tag::LbMember(m.id)],
        _ => Vec::new(),
    }
}

/// Keeps `shared` equal to the NSDB's topology; sends the tags each commit
/// invalidates on `invalidations`, and the revision applied on `applied`;
/// sets `initial_read` once the first full read is done.
pub async fn run_feed(
    nsdb: Nsdb,
    shared: Arc<SharedTopology>,
    invalidations: mpsc::UnboundedSender<Invalidation>,
    applied: watch::Sender<nsdb::Revision>,
    initial_read: Arc<OnceLock<InitialRead>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let snapshot = match nsdb.snapshot().await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(%error, "NSDB unreachable; forwarding on the last topology");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if initial_read.get().is_none() {
            let read = InitialRead {
                records: snapshot.records.len(),
                duration: started.elapsed(),
                done_at: SystemTime::now(),
            };
            tracing::info!(
                records = read.records,
                revision = snapshot.revision,
                elapsed_ms = read.duration.as_millis() as u64,
                "NSDB read done"
            );
            let _ = initial_read.set(read);
        }
        let mut records: HashMap<(Kind, Uuid), Record> = snapshot
            .records
            .into_iter()
            .map(|r| ((r.kind(), r.id()), r))
            .collect();
        let mut revision = snapshot.revision;
        let building = Instant::now();
        let (generation, _) = publish(&shared, revision, &records, &Changes::everything());
        tracing::info!(
            generation,
            elapsed_ms = building.elapsed().as_millis() as u64,
            "topology built from the full read"
        );
        // Everything may have changed since the last snapshot we had.
        let _ = invalidations.send(Invalidation {
            generation,
            tags: records.values().flat_map(tags_of).collect(),
        });
        let _ = applied.send(revision);
        let mut watcher = match nsdb.watch(revision + 1).await {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the NSDB; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let mut next = None;
        loop {
            let item = match next.take() {
                Some(item) => Some(item),
                None => watcher.next().await,
            };
            match item {
                Some(WatchItem::Commit {
                    revision: rev,
                    events,
                }) => {
                    let mut tags = Vec::new();
                    let mut changes = Changes::default();
                    for event in events {
                        apply_event(&mut records, event, &mut tags, &mut changes);
                    }
                    revision = rev;
                    // The commits that came in meanwhile go into the same
                    // topology: a whole build per commit falls behind a
                    // stream of them (thousands of ports bound one by one).
                    while let Some(item) = watcher.try_next() {
                        let WatchItem::Commit {
                            revision: rev,
                            events,
                        } = item
                        else {
                            next = Some(item);
                            break;
                        };
                        for event in events {
                            apply_event(&mut records, event, &mut tags, &mut changes);
                        }
                        revision = rev;
                    }
                    let (generation, changed) = publish(&shared, revision, &records, &changes);
                    tags.extend(changed);
                    let _ = invalidations.send(Invalidation { generation, tags });
                    let _ = applied.send(revision);
                }
                Some(WatchItem::Compacted { compact_revision }) => {
                    tracing::info!(compact_revision, "NSDB history compacted; re-listing");
                    break;
                }
                Some(WatchItem::Failed(reason)) => {
                    tracing::warn!(%reason, "NSDB watch failed; re-listing");
                    break;
                }
                None => break,
            }
        }
    }
}

/// What the events since the last topology changed: anything, or only
/// the routes of these routers and the bindings of these ports.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    everything: bool,
    routers: HashSet<Uuid>,
    /// Exterior bridge ports whose binding (host, interface) alone changed.
    bindings: HashSet<Uuid>,
}

impl Changes {
    /// Anything may have changed: a whole build.
    pub(crate) fn everything() -> Changes {
        Changes {
            everything: true,
            routers: HashSet::new(),
            bindings: HashSet::new(),
        }
    }

    /// Notes a record put or deleted.
    fn note(&mut self, record: &Record) {
        match record {
            Record::Route(route) => {
                self.routers.insert(route.router_id);
            }
            _ => self.everything = true,
        }
    }
}

/// Whether `new` differs from `old` in its binding (host, interface) alone,
/// on an exterior bridge port (not linked, no VTEP): such a change moves
/// the port between the tunnel's per-host lists and nothing else
/// (`Topology::rebind`).
fn binding_alone(old: &nsdb::Port, new: &nsdb::Port) -> bool {
    let exterior = |p: &nsdb::Port| {
        p.device_type == nsdb::DeviceType::Bridge && p.peer_id.is_none() && p.vtep.is_none()
    };
    let unbound = |p: &nsdb::Port| nsdb::Port {
        revision: 0,
        host_id: None,
        interface_name: None,
        ..p.clone()
    };
    exterior(old) && exterior(new) && unbound(old) == unbound(new)
}

/// Applies one watch event to `records`, noting what it invalidates in
/// `tags` and what it changed in `changes`.
pub(crate) fn apply_event(
    records: &mut HashMap<(Kind, Uuid), Record>,
    event: ObjectEvent,
    tags: &mut Vec<Tag>,
    changes: &mut Changes,
) {
    match event {
        ObjectEvent::Put(record) => {
            tags.extend(tags_of(&record));
            let key = (record.kind(), record.id());
            let alone = match (records.get(&key), &record) {
                (Some(Record::Port(old)), Record::Port(new)) => binding_alone(old, new),
                _ => false,
            };
            if alone {
                changes.bindings.insert(record.id());
            } else {
                changes.note(&record);
            }
            if let Some(old) = records.insert(key, record) {
                tags.extend(tags_of(&old));
                if !alone {
                    changes.note(&old);
                }
            }
        }
        ObjectEvent::Deleted { kind, id } => {
            if let Some(old) = records.remove(&(kind, id)) {
                tags.extend(tags_of(&old));
                changes.note(&old);
            }
        }
        ObjectEvent::HostLiveness { host_id, alive } => {
            if let Some(Record::Host(host)) = records.get_mut(&(Kind::Host, host_id)) {
                if host.alive != alive {
                    host.alive = alive;
                    changes.everything = true;
                }
            }
        }
        ObjectEvent::Undecodable { key, reason } => {
            tracing::error!(%key, %reason, "undecodable NSDB record ignored");
        }
    }
}

/// The groups whose members differ between two topologies.
pub(crate) fn changed_groups(before: &Topology, after: &Topology) -> Vec<Tag> {
    let ports = before
        .port_groups
        .keys()
        .chain(after.port_groups.keys())
        .filter(|g| before.port_groups.get(g) != after.port_groups.get(g));
    let addresses = before
        .ip_groups
        .keys()
        .chain(after.ip_groups.keys())
        .filter(|g| before.ip_groups.get(g) != after.ip_groups.get(g));
    let mut tags: Vec<Tag> = ports.chain(addresses).map(|g| Tag::Group(*g)).collect();
    tags.sort_by_key(|t| match t {
        Tag::Group(g) => *g,
        _ => Uuid::nil(),
    });
    tags.dedup();
    tags
}

/// Builds and swaps in the topology (whole, or only the route tables of
/// the routers whose routes alone changed); returns its generation, and
/// the devices whose connection tracking turned on or off and the groups
/// whose members changed (a label change moves ports in and out of
/// selector groups): their flows must be decided again.
pub(crate) fn publish(
    shared: &SharedTopology,
    revision: nsdb::Revision,
    records: &HashMap<(Kind, Uuid), Record>,
    changes: &Changes,
) -> (u64, Vec<Tag>) {
    let started = Instant::now();
    let list: Vec<&Record> = records.values().collect();
    let before = shared.load();
    if !changes.everything {
        // Routes and bindings change no chain or group, and bindings no
        // route: nothing else to compare.
        let mut topology = before.with_routes(revision, &list, &changes.routers);
        for id in &changes.bindings {
            if let Some(Record::Port(port)) = records.get(&(Kind::Port, *id)) {
                topology.rebind(port);
            }
        }
        let kind = if changes.bindings.is_empty() {
            BuildKind::Routes
        } else {
            BuildKind::Bindings
        };
        shared.count_build(kind, started.elapsed());
        return (shared.store(topology), Vec::new());
    }
    let topology = Topology::build_from(revision, &list);
    shared.count_build(BuildKind::Whole, started.elapsed());
    let mut changed: Vec<Tag> = before
        .stateful
        .symmetric_difference(&topology.stateful)
        .map(|device| Tag::Device(*device))
        .collect();
    changed.extend(changed_groups(&before, &topology));
    (shared.store(topology), changed)
}
