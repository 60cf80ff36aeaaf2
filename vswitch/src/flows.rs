//! The flow cache: the first packet of a flow runs the engine; later ones
//! reuse its decision until a tag it depended on changes or it idles out.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::engine::{Output, PacketInfo, Tag};

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
#[derive(Debug, Clone)]
pub struct Flow {
    /// Where the packet goes, rewritten how.
    pub outputs: Vec<Output>,
    /// What the decision depended on.
    pub tags: Vec<Tag>,
    /// When it was last used (datapath milliseconds).
    pub last_used_ms: u64,
    /// How many packets it served.
    pub hits: u64,
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

/// The cache, with an index from tag to the flows that carry it.
#[derive(Debug)]
pub struct FlowCache {
    flows: HashMap<FlowKey, Flow>,
    by_tag: HashMap<Tag, HashSet<FlowKey>>,
    stats: FlowStats,
    capacity: usize,
}

impl Default for FlowCache {
    fn default() -> Self {
        FlowCache::with_capacity(MAX_FLOWS)
    }
}

impl FlowCache {
    /// A cache holding at most `capacity` flows.
    pub fn with_capacity(capacity: usize) -> FlowCache {
        FlowCache {
            flows: HashMap::new(),
            by_tag: HashMap::new(),
            stats: FlowStats::default(),
            capacity,
        }
    }

    /// The outputs cached for `key`, counting a hit or a miss.
    pub fn lookup(&mut self, key: &FlowKey, now_ms: u64) -> Option<&[Output]> {
        match self.flows.get_mut(key) {
            Some(flow) => {
                flow.last_used_ms = now_ms;
                flow.hits += 1;
                self.stats.hits += 1;
                Some(&flow.outputs)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Caches a decision (unless the cache is full).
    pub fn insert(&mut self, key: FlowKey, outputs: Vec<Output>, tags: Vec<Tag>, now_ms: u64) {
        if self.flows.len() >= self.capacity && !self.flows.contains_key(&key) {
            return;
        }
        for tag in &tags {
            self.by_tag.entry(*tag).or_default().insert(key);
        }
        if let Some(old) = self.flows.insert(
            key,
            Flow {
                outputs,
                tags,
                last_used_ms: now_ms,
                hits: 0,
            },
        ) {
            self.unindex(&key, &old.tags);
        }
    }

    fn unindex(&mut self, key: &FlowKey, tags: &[Tag]) {
        for tag in tags {
            if let Some(keys) = self.by_tag.get_mut(tag) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_tag.remove(tag);
                }
            }
        }
    }

    fn remove(&mut self, key: &FlowKey) -> bool {
        match self.flows.remove(key) {
            Some(flow) => {
                self.unindex(key, &flow.tags);
                true
            }
            None => false,
        }
    }

    /// Removes every flow carrying one of `tags`; returns how many.
    pub fn invalidate(&mut self, tags: &[Tag]) -> usize {
        let keys: Vec<FlowKey> = tags
            .iter()
            .filter_map(|t| self.by_tag.get(t))
            .flatten()
            .copied()
            .collect();
        let removed = keys.iter().filter(|k| self.remove(k)).count();
        self.stats.invalidations += removed as u64;
        removed
    }

    /// When a flow carrying `tag` last served a packet.
    pub fn last_used(&self, tag: &Tag) -> Option<u64> {
        self.by_tag
            .get(tag)?
            .iter()
            .filter_map(|key| self.flows.get(key))
            .map(|flow| flow.last_used_ms)
            .max()
    }

    /// Removes flows unused for `idle_ms`, telling `evicted` each one's
    /// tags and when it was last used; returns how many.
    pub fn expire(
        &mut self,
        now_ms: u64,
        idle_ms: u64,
        mut evicted: impl FnMut(&[Tag], u64),
    ) -> usize {
        let idle: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| now_ms.saturating_sub(f.last_used_ms) >= idle_ms)
            .map(|(k, _)| *k)
            .collect();
        for key in &idle {
            if let Some(flow) = self.flows.remove(key) {
                self.unindex(key, &flow.tags);
                evicted(&flow.tags, flow.last_used_ms);
            }
        }
        self.stats.expirations += idle.len() as u64;
        idle.len()
    }

    /// Removes everything (a new snapshot after re-listing).
    pub fn clear(&mut self) {
        self.stats.invalidations += self.flows.len() as u64;
        self.flows.clear();
        self.by_tag.clear();
    }

    /// How many flows are cached.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is cached.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> FlowStats {
        self.stats
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

    #[test]
    fn hits_misses_and_tag_invalidation() {
        let mut cache = FlowCache::default();
        assert!(cache.lookup(&key(1), 0).is_none());
        let (a, b) = (
            Tag::Device(Uuid::from_u128(7)),
            Tag::Route(Uuid::from_u128(8)),
        );
        cache.insert(key(1), out(2), vec![a, b], 0);
        cache.insert(key(2), out(3), vec![a], 0);
        cache.insert(key(3), out(4), vec![Tag::Port(Uuid::from_u128(9))], 0);
        assert_eq!(cache.lookup(&key(1), 5).unwrap(), &out(2)[..]);
        assert_eq!(
            cache.invalidate(&[b]),
            1,
            "only the flow that used the route"
        );
        assert!(cache.lookup(&key(1), 6).is_none());
        assert!(cache.lookup(&key(2), 6).is_some());
        assert_eq!(cache.invalidate(&[a, a]), 1);
        assert_eq!(cache.len(), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.invalidations), (2, 2, 2));
    }

    #[test]
    fn a_full_cache_stops_caching_but_keeps_what_it_has() {
        let mut cache = FlowCache::with_capacity(2);
        for n in 1..=3 {
            cache.insert(key(n), out(n as u128), vec![], 0);
        }
        assert_eq!(cache.len(), 2);
        assert!(
            cache.lookup(&key(3), 0).is_none(),
            "the third flow was not cached"
        );
        cache.insert(key(1), out(9), vec![], 0);
        assert_eq!(
            cache.lookup(&key(1), 0).unwrap(),
            &out(9)[..],
            "updating a cached flow still works"
        );
    }

    #[test]
    fn idle_flows_expire_and_used_ones_stay() {
        let mut cache = FlowCache::default();
        cache.insert(key(1), out(2), vec![], 0);
        cache.insert(key(2), out(3), vec![], 0);
        cache.lookup(&key(2), 900);
        let mut evicted = Vec::new();
        assert_eq!(
            cache.expire(1000, 500, |tags, used| evicted.push((tags.to_vec(), used))),
            1
        );
        assert_eq!(evicted, vec![(vec![], 0)]);
        assert!(cache.lookup(&key(2), 1000).is_some());
        assert_eq!(cache.stats().expirations, 1);
    }
}
