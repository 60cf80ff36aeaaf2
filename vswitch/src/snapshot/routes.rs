//! A router's forwarding table: longest prefix, then most specific source,
//! then lowest weight; equal candidates share traffic by flow hash (ECMP).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nsdb::RouteKind;
use uuid::Uuid;

/// One usable route (configured, or implicit for a port's own subnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// The NSDB route, or `None` for a directly connected network.
    pub id: Option<Uuid>,
    /// Destination prefix.
    pub dst: Ipv4Net,
    /// Source prefix.
    pub src: Ipv4Net,
    /// The router port packets leave through.
    pub port: Option<Uuid>,
    /// The gateway, or `None` when the destination is on-link.
    pub gateway: Option<Ipv4Addr>,
    /// Lower wins among equal prefixes.
    pub weight: u32,
    /// Normal, blackhole or reject.
    pub kind: RouteKind,
}

/// The routes of one router, kept sorted, with an index by destination
/// prefix: a lookup probes one hash bucket per prefix length in use
/// (longest first), not every route.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Sorted by destination prefix length, longest first, then source
    /// prefix length, longest first, then weight.
    entries: Vec<RouteEntry>,
    /// The destination prefix lengths in use, longest first.
    lengths: Vec<u8>,
    /// (prefix length, network) → the entries with that destination, in
    /// lookup order.
    buckets: HashMap<(u8, u32), Vec<usize>>,
}

/// `address` with only its first `len` bits.
fn network(address: Ipv4Addr, len: u8) -> u32 {
    match len {
        0 => 0,
        len => u32::from(address) & (u32::MAX << (32 - u32::from(len.min(32)))),
    }
}

impl RouteTable {
    /// Builds a table from unsorted entries.
    pub fn new(mut entries: Vec<RouteEntry>) -> RouteTable {
        entries.sort_by(|a, b| {
            b.dst
                .prefix_len()
                .cmp(&a.dst.prefix_len())
                .then(b.src.prefix_len().cmp(&a.src.prefix_len()))
                .then(a.weight.cmp(&b.weight))
                .then(a.id.cmp(&b.id))
        });
        let mut lengths: Vec<u8> = entries.iter().map(|e| e.dst.prefix_len()).collect();
        lengths.dedup();
        let mut buckets: HashMap<(u8, u32), Vec<usize>> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let len = entry.dst.prefix_len();
            buckets
                .entry((len, network(entry.dst.network(), len)))
                .or_default()
                .push(i);
        }
        RouteTable {
            entries,
            lengths,
            buckets,
        }
    }

    /// Every entry, in lookup order.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    /// The route for a packet, choosing among equal-cost candidates with
    /// `flow_hash` so that one flow always takes the same path.
    pub fn lookup(&self, src: Ipv4Addr, dst: Ipv4Addr, flow_hash: u64) -> Option<&RouteEntry> {
        // Equal candidates share the destination prefix, so they sit in
        // the bucket of the best one.
        for &len in &self.lengths {
            let Some(bucket) = self.buckets.get(&(len, network(dst, len))) else {
                continue;
            };
            let mut matching = bucket
                .iter()
                .map(|&i| &self.entries[i])
                .filter(|e| e.src.contains(&src));
            let Some(best) = matching.next() else {
                continue;
            };
            let key = |e: &RouteEntry| (e.src.prefix_len(), e.weight);
            let equal = 1 + matching.clone().take_while(|e| key(e) == key(best)).count();
            if equal == 1 {
                return Some(best);
            }
            let pick = (flow_hash % equal as u64) as usize;
            return std::iter::once(best).chain(matching).nth(pick);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dst: &str, src: &str, weight: u32, port: u128) -> RouteEntry {
        RouteEntry {
            id: Some(Uuid::from_u128(port)),
            dst: dst.parse().unwrap(),
            src: src.parse().unwrap(),
            port: Some(Uuid::from_u128(port)),
            gateway: None,
            weight,
            kind: RouteKind::Normal,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_then_source_then_weight() {
        let table = RouteTable::new(vec![
            entry("0.0.0.0/0", "0.0.0.0/0", 10, 1),
            entry("10.0.0.0/8", "0.0.0.0/0", 10, 2),
            entry("10.1.0.0/16", "0.0.0.0/0", 10, 3),
            entry("10.1.0.0/16", "192.168.0.0/16", 10, 4),
            entry("10.2.0.0/16", "0.0.0.0/0", 20, 5),
            entry("10.2.0.0/16", "0.0.0.0/0", 5, 6),
        ]);
        let port = |src, dst| {
            table
                .lookup(ip(src), ip(dst), 0)
                .and_then(|e| e.port)
                .map(|p| p.as_u128())
        };
        assert_eq!(port("1.1.1.1", "8.8.8.8"), Some(1));
        assert_eq!(port("1.1.1.1", "10.9.0.1"), Some(2));
        assert_eq!(port("1.1.1.1", "10.1.0.1"), Some(3));
        assert_eq!(
            port("192.168.3.3", "10.1.0.1"),
            Some(4),
            "a more specific source wins"
        );
        assert_eq!(
            port("1.1.1.1", "10.2.0.1"),
            Some(6),
            "the lowest weight wins"
        );
    }

    #[test]
    fn equal_routes_spread_by_flow_hash_and_stay_stable() {
        let table = RouteTable::new(vec![
            entry("0.0.0.0/0", "0.0.0.0/0", 10, 1),
            entry("0.0.0.0/0", "0.0.0.0/0", 10, 2),
            entry("0.0.0.0/0", "0.0.0.0/0", 10, 3),
            entry("0.0.0.0/0", "0.0.0.0/0", 11, 4),
        ]);
        let mut seen = std::collections::HashSet::new();
        for hash in 0..30u64 {
            let first = table
                .lookup(ip("1.1.1.1"), ip("2.2.2.2"), hash)
                .unwrap()
                .port;
            assert_eq!(
                table
                    .lookup(ip("1.1.1.1"), ip("2.2.2.2"), hash)
                    .unwrap()
                    .port,
                first
            );
            seen.insert(first.unwrap().as_u128());
        }
        assert_eq!(
            seen,
            [1, 2, 3].into_iter().collect(),
            "only the equal-cost routes share"
        );
    }

    /// The lookup as a scan of every entry (the definition the index must
    /// agree with).
    fn scanned(table: &RouteTable, src: Ipv4Addr, dst: Ipv4Addr, hash: u64) -> Option<&RouteEntry> {
        let mut matching = table
            .entries()
            .iter()
            .filter(|e| e.dst.contains(&dst) && e.src.contains(&src));
        let best = matching.next()?;
        let key = |e: &RouteEntry| (e.dst.prefix_len(), e.src.prefix_len(), e.weight);
        let equal = 1 + matching.clone().take_while(|e| key(e) == key(best)).count();
        let pick = (hash % equal as u64) as usize;
        std::iter::once(best).chain(matching).nth(pick)
    }

    #[test]
    fn the_index_agrees_with_a_scan_of_every_route() {
        // A pseudo-random table: nested and overlapping prefixes, source
        // routes, ties, and a default route.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut entries = vec![entry("0.0.0.0/0", "0.0.0.0/0", 10, 1)];
        for n in 0..400u128 {
            let r = next();
            let len = [8, 12, 16, 16, 20, 24, 24, 28, 32][(r % 9) as usize];
            let dst = Ipv4Net::new(
                Ipv4Addr::from(0x0a00_0000 | (r >> 8) as u32 & 0x00ff_ffff),
                len,
            )
            .unwrap()
            .trunc();
            let src = if r % 5 == 0 {
                "192.168.0.0/16"
            } else {
                "0.0.0.0/0"
            };
            let weight = (r >> 40) as u32 % 3;
            entries.push(entry(&dst.to_string(), src, weight, 2 + n));
        }
        let table = RouteTable::new(entries);
        for _ in 0..5_000 {
            let r = next();
            let dst = Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x00ff_ffff));
            let src = if r % 3 == 0 {
                ip("192.168.1.1")
            } else {
                ip("1.1.1.1")
            };
            let hash = r >> 32;
            assert_eq!(
                table.lookup(src, dst, hash).map(|e| e.id),
                scanned(&table, src, dst, hash).map(|e| e.id),
                "{src} → {dst}"
            );
        }
    }

    #[test]
    fn no_match_is_none() {
        let table = RouteTable::new(vec![entry("10.0.0.0/8", "0.0.0.0/0", 0, 1)]);
        assert!(table.lookup(ip("1.1.1.1"), ip("11.0.0.1"), 0).is_none());
    }
}
