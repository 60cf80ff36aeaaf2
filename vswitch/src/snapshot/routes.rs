//! A router's forwarding table: longest prefix, then most specific source,
//! then lowest weight; equal candidates share traffic by flow hash (ECMP).

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

/// The routes of one router, kept sorted for lookup.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Sorted by destination prefix length, longest first, then source
    /// prefix length, longest first, then weight.
    entries: Vec<RouteEntry>,
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
        RouteTable { entries }
    }

    /// Every entry, in lookup order.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    /// The route for a packet, choosing among equal-cost candidates with
    /// `flow_hash` so that one flow always takes the same path.
    pub fn lookup(&self, src: Ipv4Addr, dst: Ipv4Addr, flow_hash: u64) -> Option<&RouteEntry> {
        let mut matching = self
            .entries
            .iter()
            .filter(|e| e.dst.contains(&dst) && e.src.contains(&src));
        let best = matching.next()?;
        let key = |e: &RouteEntry| (e.dst.prefix_len(), e.src.prefix_len(), e.weight);
        let equal = 1 + matching.clone().take_while(|e| key(e) == key(best)).count();
        if equal == 1 {
            return Some(best);
        }
        let pick = (flow_hash % equal as u64) as usize;
        std::iter::once(best).chain(matching).nth(pick)
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

    #[test]
    fn no_match_is_none() {
        let table = RouteTable::new(vec![entry("10.0.0.0/8", "0.0.0.0/0", 0, 1)]);
        assert!(table.lookup(ip("1.1.1.1"), ip("11.0.0.1"), 0).is_none());
    }
}
