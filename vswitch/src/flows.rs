//! The flow cache: the first packet of a flow runs the engine; later ones
//! reuse its decision until a tag it depended on changes or it idles out.
//! Every worker uses it at once: a hit takes one shard's read lock, never
//! a lock shared by all flows.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use uuid::Uuid;

use crate::engine::{Output, PacketInfo, RuleHit, Tag};

/// What identifies a flow: where it entered and every header the engine
/// may have decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The ingress port.
    pub in_port: Uuid,
    /// The decoded headers.
    pub packet: PacketInfo,
}

/// A cached decision.
#[derive(Debug)]
pub struct Flow {
    /// Where the packet goes, rewritten how.
    pub outputs: Vec<Output>,
    /// What the decision depended on.
    pub tags: Vec<Tag>,
    /// The rules that matched its first packet (each hit counts for them).
    pub rules: Vec<RuleHit>,
    /// When it was last used (datapath milliseconds).
    pub last_used_ms: AtomicU64,
    /// How many packets it served.
    pub hits: AtomicU64,
}

/// Cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets served from the cache.
    pub hits: u64,
    /// Packets that ran the engine.
    pub misses: u64,
    /// Flows removed because a tag changed.
    pub invalidations: u64,
    /// Flows removed for being idle.
    pub expirations: u64,
}

/// The most flows cached at once: past it, new flows still forward (through
/// the engine) but are not cached, so a flood of distinct flows cannot grow
/// memory without bound.
pub const MAX_FLOWS: usize = 200_000;

/// How many shards the cache is split into: flows of different shards are
/// looked up on different cores without touching a common cache line.
const SHARDS: usize = 64;

/// The flow cache's hasher: seeded per process and far cheaper than
/// SipHash on a flow key. A key is hashed once a packet: the hash picks
/// the shard and is the hash of the shard's map too ([`Hashed`]).
type FlowHasher = foldhash::quality::RandomState;

/// A flow key with its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hashed {
    hash: u64,
    key: FlowKey,
}

impl Hash for Hashed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hasher of a shard's map: hands on the hash a [`Hashed`] carries.
#[derive(Debug, Default)]
struct CarriedHash(u64);

impl Hasher for CarriedHash {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; anything else still hashes.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One shard: its flows and hit/miss counters, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    flows: RwLock<HashMap<Hashed, Flow, BuildHasherDefault<CarriedHash>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What only changes with the cache's contents, under one lock: the index
/// from tag to flows, and the newest topology generation whose
/// invalidations were applied.
#[derive(Debug, Default)]
struct Index {
    by_tag: HashMap<Tag, HashSet<FlowKey>>,
    len: usize,
    invalidated_through: u64,
    invalidations: u64,
    expirations: u64,
    /// Packets rules matched that no cached flow counts any more: packets
    /// that ran the engine, and hits of flows that left the cache.
    rule_hits: HashMap<RuleHit, u64>,
}

impl Index {
    /// Unindexes a flow that left the cache and keeps its rule hits.
    fn retire(&mut self, key: &FlowKey, flow: &Flow) {
        unindex(self, key, &flow.tags);
        let hits = flow.hits.load(Ordering::Relaxed);
        if hits > 0 {
            for rule in &flow.rules {
                *self.rule_hits.entry(*rule).or_default() += hits;
            }
        }
    }
}

/// The cache, safe to use from every worker at once. A hit takes only its
/// shard's read lock (shards are chosen by the flow key's hash, so flows on
/// different cores rarely share one); inserting, invalidating and expiring
/// take the index lock, then the write locks of the shards they change.
#[derive(Debug)]
pub struct FlowCache {
    shards: Box<[Shard]>,
    hasher: FlowHasher,
    index: Mutex<Index>,
    capacity: usize,
}

impl Default for FlowCache {
    fn default() -> Self {
        FlowCache::with_capacity(MAX_FLOWS)
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl FlowCache {
    /// A cache holding at most `capacity` flows.
    pub fn with_capacity(capacity: usize) -> FlowCache {
        FlowCache {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: FlowHasher::default(),
            index: Mutex::default(),
            capacity,
        }
    }

    /// `key` with its hash, and its shard. The shard comes from bits 32
    /// and up, which the shard's map does not use: it takes the bucket
    /// from the lowest bits and its tags from the highest seven.
    fn shard(&self, key: &FlowKey) -> (Hashed, &Shard) {
        let hash = self.hasher.hash_one(key);
        let hashed = Hashed { hash, key: *key };
        (hashed, &self.shards[(hash >> 32) as usize % SHARDS])
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies the outputs cached for `key` into `outputs` (cleared first)
    /// and returns true, or counts a miss and returns false.
    pub fn lookup(&self, key: &FlowKey, now_ms: u64, outputs: &mut Vec<Output>) -> bool {
        let (hashed, shard) = self.shard(key);
        let flows = read(&shard.flows);
        match flows.get(&hashed) {
            Some(flow) => {
                flow.last_used_ms.store(now_ms, Ordering::Relaxed);
                flow.hits.fetch_add(1, Ordering::Relaxed);
                shard.hits.fetch_add(1, Ordering::Relaxed);
                outputs.clear();
                outputs.extend_from_slice(&flow.outputs);
                true
            }
            None => {
                shard.misses.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Whether the cached flow of `key` crossed `device` (a bridge or
    /// router): its decision depends on the device.
    pub fn crosses(&self, key: &FlowKey, device: Uuid) -> bool {
        let (hashed, shard) = self.shard(key);
        let flows = read(&shard.flows);
        flows
            .get(&hashed)
            .is_some_and(|flow| flow.tags.contains(&Tag::Device(device)))
    }

    /// Caches a decision made on the topology of `generation` (unless the
    /// cache is full, or a newer topology's invalidations were already
    /// applied: the decision may be stale, so it is not kept).
    pub fn insert(
        &self,
        key: FlowKey,
        outputs: Vec<Output>,
        tags: Vec<Tag>,
        rules: Vec<RuleHit>,
        now_ms: u64,
        generation: u64,
    ) {
        let mut index = self.index();
        if generation < index.invalidated_through {
            return;
        }
        let (hashed, shard) = self.shard(&key);
        let mut flows = write(&shard.flows);
        if index.len >= self.capacity && !flows.contains_key(&hashed) {
            return;
        }
        for tag in &tags {
            index.by_tag.entry(*tag).or_default().insert(key);
        }
        let flow = Flow {
            outputs,
            tags,
            rules,
            last_used_ms: AtomicU64::new(now_ms),
            hits: AtomicU64::new(0),
        };
        match flows.insert(hashed, flow) {
            Some(old) => index.retire(&key, &old),
            None => index.len += 1,
        }
    }

    /// Counts one packet for each rule in `rules` (a packet that ran the
    /// engine; packets served by a cached flow count through its hits).
    pub fn count_rules(&self, rules: &[RuleHit]) {
        if rules.is_empty() {
            return;
        }
        let mut index = self.index();
        for rule in rules {
            *index.rule_hits.entry(*rule).or_default() += 1;
        }
    }

    /// Packets each rule matched so far: those counted by
    /// [`Self::count_rules`], and the hits of cached flows, present and
    /// past.
    pub fn rule_hits(&self) -> HashMap<RuleHit, u64> {
        let index = self.index();
        let mut totals = index.rule_hits.clone();
        for shard in self.shards.iter() {
            for flow in read(&shard.flows).values() {
                let hits = flow.hits.load(Ordering::Relaxed);
                if hits > 0 {
                    for rule in &flow.rules {
                        *totals.entry(*rule).or_default() += hits;
                    }
                }
            }
        }
        totals
    }

    /// Removes every flow carrying one of `tags`; returns how many.
    pub fn invalidate(&self, tags: &[Tag]) -> usize {
        let mut index = self.index();
        self.invalidate_locked(&mut index, tags)
    }

    /// Removes every flow carrying one of `tags`, which the topology of
    /// `generation` changed; decisions made on older topologies are no
    /// longer cached from now on. Returns how many flows were removed.
    pub fn invalidate_for(&self, generation: u64, tags: &[Tag]) -> usize {
        let mut index = self.index();
        index.invalidated_through = index.invalidated_through.max(generation);
        self.invalidate_locked(&mut index, tags)
    }

    fn invalidate_locked(&self, index: &mut Index, tags: &[Tag]) -> usize {
        let keys: Vec<FlowKey> = tags
            .iter()
            .filter_map(|t| index.by_tag.get(t))
            .flatten()
            .copied()
            .collect();
        let mut removed = 0;
        for key in keys {
            let (hashed, shard) = self.shard(&key);
            if let Some(flow) = write(&shard.flows).remove(&hashed) {
                index.retire(&key, &flow);
                index.len -= 1;
                removed += 1;
            }
        }
        index.invalidations += removed as u64;
        removed
    }

    /// When a flow carrying `tag` last served a packet.
    pub fn last_used(&self, tag: &Tag) -> Option<u64> {
        let index = self.index();
        index
            .by_tag
            .get(tag)?
            .iter()
            .filter_map(|key| {
                let (hashed, shard) = self.shard(key);
                let flows = read(&shard.flows);
                flows
                    .get(&hashed)
                    .map(|flow| flow.last_used_ms.load(Ordering::Relaxed))
            })
            .max()
    }

    /// Removes flows unused for `idle_ms`, telling `evicted` each one's
    /// tags and when it was last used; returns how many.
    pub fn expire(&self, now_ms: u64, idle_ms: u64, mut evicted: impl FnMut(&[Tag], u64)) -> usize {
        let mut index = self.index();
        let mut expired = 0;
        for shard in self.shards.iter() {
            let mut flows = write(&shard.flows);
            let idle: Vec<Hashed> = flows
                .iter()
                .filter(|(_, f)| {
                    now_ms.saturating_sub(f.last_used_ms.load(Ordering::Relaxed)) >= idle_ms
                })
                .map(|(k, _)| *k)
                .collect();
            for hashed in idle {
                if let Some(flow) = flows.remove(&hashed) {
                    index.retire(&hashed.key, &flow);
                    index.len -= 1;
                    expired += 1;
                    evicted(&flow.tags, flow.last_used_ms.load(Ordering::Relaxed));
                }
            }
        }
        index.expirations += expired as u64;
        expired
    }

    /// Removes everything (a new snapshot after re-listing).
    pub fn clear(&self) {
        let mut index = self.index();
        for shard in self.shards.iter() {
            for (hashed, flow) in write(&shard.flows).drain() {
                index.retire(&hashed.key, &flow);
            }
        }
        index.invalidations += index.len as u64;
        index.len = 0;
        index.by_tag.clear();
    }

    /// How many flows are cached.
    pub fn len(&self) -> usize {
        self.index().len
    }

    /// Whether no flow is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters.
    pub fn stats(&self) -> FlowStats {
        let index = self.index();
        let sum = |counter: fn(&Shard) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|s| counter(s).load(Ordering::Relaxed))
                .sum()
        };
        FlowStats {
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            invalidations: index.invalidations,
            expirations: index.expirations,
        }
    }
}

/// Removes `key` from the index entries of `tags`.
fn unindex(index: &mut Index, key: &FlowKey, tags: &[Tag]) {
    for tag in tags {
        if let Some(keys) = index.by_tag.get_mut(tag) {
            keys.remove(key);
            if keys.is_empty() {
                index.by_tag.remove(tag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Egress, PacketInfo, Rewrite, L3};

    fn key(n: u8) -> FlowKey {
        FlowKey {
            in_port: Uuid::from_u128(1),
            packet: PacketInfo {
                eth_src: [2, 0, 0, 0, 0, n],
                eth_dst: [2, 0, 0, 0, 0, 0xff],
                l3: L3::Other(0x88b5),
            },
        }
    }

    fn out(port: u128) -> Vec<Output> {
        vec![Output {
            egress: Egress {
                host: None,
                port: Uuid::from_u128(port),
            },
            rewrite: Rewrite::default(),
        }]
    }

    /// The outputs cached for `key`, if any.
    fn get(cache: &FlowCache, key: &FlowKey, now: u64) -> Option<Vec<Output>> {
        let mut outputs = Vec::new();
        cache.lookup(key, now, &mut outputs).then_some(outputs)
    }

    #[test]
    fn hits_misses_and_tag_invalidation() {
        let cache = FlowCache::default();
        assert!(get(&cache, &key(1), 0).is_none());
        let (a, b) = (
            Tag::Device(Uuid::from_u128(7)),
            Tag::Route(Uuid::from_u128(8)),
        );
        cache.insert(key(1), out(2), vec![a, b], vec![], 0, 0);
        cache.insert(key(2), out(3), vec![a], vec![], 0, 0);
        cache.insert(
            key(3),
            out(4),
            vec![Tag::Port(Uuid::from_u128(9))],
            vec![],
            0,
            0,
        );
        assert_eq!(get(&cache, &key(1), 5).unwrap(), out(2));
        assert_eq!(
            cache.invalidate(&[b]),
            1,
            "only the flow that used the route"
        );
        assert!(get(&cache, &key(1), 6).is_none());
        assert!(get(&cache, &key(2), 6).is_some());
        assert_eq!(cache.invalidate(&[a, a]), 1);
        assert_eq!(cache.len(), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.invalidations), (2, 2, 2));
    }

    #[test]
    fn a_full_cache_stops_caching_but_keeps_what_it_has() {
        let cache = FlowCache::with_capacity(2);
        for n in 1..=3 {
            cache.insert(key(n), out(n as u128), vec![], vec![], 0, 0);
        }
        assert_eq!(cache.len(), 2);
        assert!(
            get(&cache, &key(3), 0).is_none(),
            "the third flow was not cached"
        );
        cache.insert(key(1), out(9), vec![], vec![], 0, 0);
        assert_eq!(
            get(&cache, &key(1), 0).unwrap(),
            out(9),
            "updating a cached flow still works"
        );
    }

    #[test]
    fn idle_flows_expire_and_used_ones_stay() {
        let cache = FlowCache::default();
        cache.insert(key(1), out(2), vec![], vec![], 0, 0);
        cache.insert(key(2), out(3), vec![], vec![], 0, 0);
        get(&cache, &key(2), 900);
        let mut evicted = Vec::new();
        assert_eq!(
            cache.expire(1000, 500, |tags, used| evicted.push((tags.to_vec(), used))),
            1
        );
        assert_eq!(evicted, vec![(vec![], 0)]);
        assert!(get(&cache, &key(2), 1000).is_some());
        assert_eq!(cache.stats().expirations, 1);
    }

    #[test]
    fn a_decision_on_a_topology_older_than_an_applied_invalidation_is_not_cached() {
        let cache = FlowCache::default();
        let route = Tag::Route(Uuid::from_u128(8));
        cache.insert(key(1), out(2), vec![route], vec![], 0, 4);
        // Topology 5 changed the route: the flow decided on 4 goes, and a
        // worker still deciding on topology 4 cannot bring it back.
        assert_eq!(cache.invalidate_for(5, &[route]), 1);
        cache.insert(key(1), out(2), vec![route], vec![], 0, 4);
        assert!(
            get(&cache, &key(1), 1).is_none(),
            "a stale decision was cached"
        );
        cache.insert(key(1), out(3), vec![route], vec![], 0, 5);
        assert_eq!(get(&cache, &key(1), 2).unwrap(), out(3));
    }

    #[test]
    fn workers_hit_and_invalidate_at_once_and_the_index_stays_exact() {
        let cache = std::sync::Arc::new(FlowCache::default());
        let tag = |n: u8| Tag::Device(Uuid::from_u128(u128::from(n % 4)));
        let workers: Vec<_> = (0..4u8)
            .map(|w| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for round in 0..2_000u64 {
                        let n = (round % 50) as u8 + w * 50;
                        if get(&cache, &key(n), round).is_none() {
                            cache.insert(
                                key(n),
                                out(u128::from(n)),
                                vec![tag(n)],
                                vec![],
                                round,
                                0,
                            );
                        }
                        if round % 97 == 0 {
                            cache.invalidate(&[tag(w)]);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let cached = (0..200u8)
            .filter(|n| get(&cache, &key(*n), 0).is_some())
            .count();
        assert_eq!(cache.len(), cached);
        for n in 0..4u8 {
            cache.invalidate(&[tag(n)]);
        }
        assert_eq!(cache.len(), 0, "every flow was reachable through its tag");
        assert!(cache.index().by_tag.is_empty());
    }

    #[test]
    fn rule_hits_count_misses_and_every_hit_of_live_and_gone_flows() {
        let cache = FlowCache::default();
        let rule = RuleHit {
            chain: Uuid::from_u128(1),
            rule: Uuid::from_u128(2),
        };
        let tag = Tag::Chain(rule.chain);
        cache.count_rules(&[rule]);
        cache.insert(key(1), vec![], vec![tag], vec![rule], 0, 0);
        for now in 1..=4 {
            assert!(get(&cache, &key(1), now).is_some());
        }
        assert_eq!(cache.rule_hits()[&rule], 5, "one miss and four hits");
        cache.invalidate(&[tag]);
        assert_eq!(cache.rule_hits()[&rule], 5, "hits outlive their flow");
    }
}
