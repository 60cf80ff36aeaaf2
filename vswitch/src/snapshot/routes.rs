//! A router's forwarding table: longest prefix, then most specific source,
//! then lowest weight; equal candidates share traffic by flow hash (ECMP).
//! One table per address family ([`RouteTable`] for IPv4,
//! `RouteTable<Ipv6Net>` for IPv6).

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use nsdb::RouteKind;
use uuid::Uuid;

/// A prefix type a table can be built of: IPv4 or IPv6.
pub trait Prefix: Copy + Debug + Default + PartialEq + Eq + std::fmt::Display {
    /// Its address type.
    type Addr: Copy + Debug + PartialEq + Eq + std::fmt::Display;
    /// The prefix length.
    fn length(&self) -> u8;
    /// The prefix with its host bits cleared.
    fn truncated(&self) -> Self;
    /// The network address.
    fn net(&self) -> Self::Addr;
    /// Whether `addr` lies in the prefix.
    fn holds(&self, addr: &Self::Addr) -> bool;
    /// `addr` with only its first `len` bits, as a number.
    fn bits(addr: Self::Addr, len: u8) -> u128;
}

impl Prefix for Ipv4Net {
    type Addr = Ipv4Addr;
    fn length(&self) -> u8 {
        self.prefix_len()
    }
    fn truncated(&self) -> Self {
        self.trunc()
    }
    fn net(&self) -> Ipv4Addr {
        self.network()
    }
    fn holds(&self, addr: &Ipv4Addr) -> bool {
        self.contains(addr)
    }
    fn bits(addr: Ipv4Addr, len: u8) -> u128 {
        match len {
            0 => 0,
            len => u128::from(u32::from(addr) & (u32::MAX << (32 - u32::from(len.min(32))))),
        }
    }
}

impl Prefix for Ipv6Net {
    type Addr = Ipv6Addr;
    fn length(&self) -> u8 {
        self.prefix_len()
    }
    fn truncated(&self) -> Self {
        self.trunc()
    }
    fn net(&self) -> Ipv6Addr {
        self.network()
    }
    fn holds(&self, addr: &Ipv6Addr) -> bool {
        self.contains(addr)
    }
    fn bits(addr: Ipv6Addr, len: u8) -> u128 {
        match len {
            0 => 0,
            len => u128::from(addr) & (u128::MAX << (128 - u32::from(len.min(128)))),
        }
    }
}

/// One usable route (configured, or implicit for a port's own subnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry<N: Prefix = Ipv4Net> {
    /// The NSDB route, or `None` for a directly connected network.
    pub id: Option<Uuid>,
    /// Destination prefix.
    pub dst: N,
    /// Source prefix.
    pub src: N,
    /// The router port packets leave through.
    pub port: Option<Uuid>,
    /// The gateway, or `None` when the destination is on-link.
    pub gateway: Option<N::Addr>,
    /// Lower wins among equal prefixes.
    pub weight: u32,
    /// Normal, blackhole or reject.
    pub kind: RouteKind,
}

/// The routes of one router, kept sorted, with an index by destination
/// prefix: a lookup probes one hash bucket per prefix length in use
/// (longest first), not every route.
#[derive(Debug, Clone)]
pub struct RouteTable<N: Prefix = Ipv4Net> {
    /// Sorted by destination prefix length, longest first, then source
    /// prefix length, longest first, then weight, then id (connected
    /// networks, which have none, first), then port, then network.
    entries: Vec<RouteEntry<N>>,
    /// The destination prefix lengths in use, longest first.
    lengths: Vec<u8>,
    /// (prefix length, network) → the entries with that destination, in
    /// lookup order.
    buckets: HashMap<(u8, u128), Vec<usize>>,
}

impl<N: Prefix> Default for RouteTable<N> {
    fn default() -> Self {
        RouteTable {
            entries: Vec::new(),
            lengths: Vec::new(),
            buckets: HashMap::new(),
        }
    }
}

impl<N: Prefix> RouteTable<N> {
    /// Builds a table from unsorted entries (the order they come in does
    /// not matter).
    pub fn new(mut entries: Vec<RouteEntry<N>>) -> RouteTable<N> {
        entries.sort_by(|a, b| {
            b.dst
                .length()
                .cmp(&a.dst.length())
                .then(b.src.length().cmp(&a.src.length()))
                .then(a.weight.cmp(&b.weight))
                .then(a.id.cmp(&b.id))
                // Connected networks (no id): by port, then network, so
                // that a table is the same however its entries came.
                .then(a.port.cmp(&b.port))
                .then_with(|| {
                    let net = |e: &RouteEntry<N>| N::bits(e.dst.net(), e.dst.length());
                    net(a).cmp(&net(b))
                })
        });
        let mut lengths: Vec<u8> = entries.iter().map(|e| e.dst.length()).collect();
        lengths.dedup();
        let mut buckets: HashMap<(u8, u128), Vec<usize>> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let len = entry.dst.length();
            buckets
                .entry((len, N::bits(entry.dst.net(), len)))
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
    pub fn entries(&self) -> &[RouteEntry<N>] {
        &self.entries
    }

    /// The route for a packet, choosing among equal-cost candidates with
    /// `flow_hash` so that one flow always takes the same path.
    pub fn lookup(&self, src: N::Addr, dst: N::Addr, flow_hash: u64) -> Option<&RouteEntry<N>> {
        // Equal candidates share the destination prefix, so they sit in
        // the bucket of the best one.
        for &len in &self.lengths {
            let Some(bucket) = self.buckets.get(&(len, N::bits(dst, len))) else {
                continue;
            };
            let mut matching = bucket
                .iter()
                .map(|&i| &self.entries[i])
                .filter(|e| e.src.holds(&src));
            let Some(best) = matching.next() else {
                continue;
            };
            let key = |e: &RouteEntry<N>| (e.src.length(), e.weight);
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

    #[test]
    fn ipv6_tables_take_the_longest_prefix_source_routes_and_ecmp() {
        let entry6 = |dst: &str, src: &str, weight: u32, port: u128| RouteEntry::<Ipv6Net> {
            id: Some(Uuid::from_u128(port)),
            dst: dst.parse().unwrap(),
            src: src.parse().unwrap(),
            port: Some(Uuid::from_u128(port)),
            gateway: None,
            weight,
            kind: RouteKind::Normal,
        };
        let table = RouteTable::new(vec![
            entry6("::/0", "::/0", 0, 1),
            entry6("2001:db8::/32", "::/0", 0, 2),
            entry6("2001:db8:1::/48", "::/0", 0, 3),
            entry6("2001:db8:1::/48", "fd00::/8", 0, 4),
            entry6("2001:db8:2::/48", "::/0", 5, 5),
            entry6("2001:db8:2::/48", "::/0", 5, 6),
        ]);
        let port = |src: &str, dst: &str, hash| {
            table
                .lookup(src.parse().unwrap(), dst.parse().unwrap(), hash)
                .and_then(|e| e.port)
                .map(|p| p.as_u128())
        };
        assert_eq!(port("2001::1", "2002::1", 0), Some(1));
        assert_eq!(port("2001::1", "2001:db8:9::1", 0), Some(2));
        assert_eq!(port("2001::1", "2001:db8:1::1", 0), Some(3));
        assert_eq!(port("fd00::1", "2001:db8:1::1", 0), Some(4));
        let shared: std::collections::HashSet<_> = (0..16)
            .map(|hash| port("2001::1", "2001:db8:2::1", hash))
            .collect();
        assert_eq!(shared.len(), 2, "equal routes share by flow hash");
    }
}
