//! Which member of a VIP's pool a new connection goes to.
//!
//! The choice is a pure function of the connection's 5-tuple and the
//! pool (plus the client's affinity entry, when the VIP keeps them), so
//! every host makes the same one and `plexus trace` shows it:
//!
//! - the usable members, in id order, each own a share of `[0, total)`
//!   as wide as its weight (1 under round-robin);
//! - the connection's point in it is a Fibonacci hash: a hash of
//!   (source, destination, protocol, destination port), plus the source
//!   port, times 2^64/φ. Successive source ports of one client land on
//!   evenly spread points (a Weyl sequence), so a client's consecutive
//!   connections go round the members in proportion to their weights;
//!   unrelated connections land as a good hash would put them.

use std::net::IpAddr;

use uuid::Uuid;

use crate::conntrack::ConnKey;
use crate::snapshot::{MemberInfo, VipInfo};

/// 2^64 / φ, odd: multiplication by it spreads consecutive integers.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// Why a member was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The client's affinity entry names it.
    Affinity,
    /// The connection's point fell in its share.
    Hash {
        /// The point.
        point: u64,
        /// The sum of the usable members' weights.
        total: u64,
    },
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Affinity => f.write_str("the client's affinity entry"),
            Why::Hash { point, total } => write!(f, "hash point {point} of {total}"),
        }
    }
}

/// FNV-1a over the bytes of what a connection's point depends on besides
/// its source port: stable across hosts and releases.
fn flow_hash(key: &ConnKey) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for address in [key.src, key.dst] {
        match address {
            IpAddr::V4(v4) => eat(&v4.octets()),
            IpAddr::V6(v6) => eat(&v6.octets()),
        }
    }
    eat(&[key.proto]);
    eat(&key.dport.to_be_bytes());
    hash
}

/// The member a new connection `key` (as it reached the VIP) goes to, and
/// why; `None` when no member of the pool may take it. `affinity` is the
/// member the client's affinity entry names, if it has one.
pub(crate) fn choose(
    vip: &VipInfo,
    key: &ConnKey,
    affinity: Option<Uuid>,
) -> Option<(MemberInfo, Why)> {
    if !vip.pool_up {
        return None;
    }
    let usable = || vip.members.iter().filter(|m| m.usable && m.weight > 0);
    if let Some(member) = affinity.and_then(|id| usable().find(|m| m.id == id)) {
        return Some((*member, Why::Affinity));
    }
    let total: u64 = usable().map(|m| u64::from(m.weight)).sum();
    if total == 0 {
        return None;
    }
    let spread = flow_hash(key)
        .wrapping_add(u64::from(key.sport))
        .wrapping_mul(FIBONACCI);
    let point = ((u128::from(spread) * u128::from(total)) >> 64) as u64;
    let mut below = 0;
    for member in usable() {
        below += u64::from(member.weight);
        if point < below {
            return Some((*member, Why::Hash { point, total }));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn member(n: u128, weight: u16) -> MemberInfo {
        MemberInfo {
            id: Uuid::from_u128(n),
            address: Ipv4Addr::new(10, 0, 0, n as u8),
            port: 8080,
            weight,
            usable: true,
            health: nsdb::MemberHealth::Up,
        }
    }

    fn vip(members: Vec<MemberInfo>) -> VipInfo {
        VipInfo {
            id: Uuid::from_u128(99),
            name: "web".into(),
            pool: Uuid::from_u128(98),
            pool_up: true,
            members,
            affinity_ms: None,
        }
    }

    fn key(src: u8, sport: u16) -> ConnKey {
        ConnKey {
            proto: 6,
            src: IpAddr::V4(Ipv4Addr::new(10, 1, 0, src)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
            sport,
            dport: 80,
        }
    }

    fn counts(vip: &VipInfo, keys: impl Iterator<Item = ConnKey>) -> HashMap<u128, usize> {
        let mut counts = HashMap::new();
        for k in keys {
            let (m, _) = choose(vip, &k, None).expect("a member");
            *counts.entry(m.id.as_u128()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn consecutive_source_ports_follow_the_weights_closely() {
        let pool = vip(vec![member(1, 1), member(2, 2), member(3, 3)]);
        for start in [1024u16, 33_000, 60_000] {
            let counts = counts(&pool, (0..300).map(|i| key(5, start + i)));
            for (id, share) in [(1, 50.0), (2, 100.0), (3, 150.0)] {
                let got = counts[&id] as f64;
                assert!(
                    (got - share).abs() <= share * 0.05,
                    "member {id}: {got} of 300, expected {share} ({counts:?})"
                );
            }
        }
    }

    #[test]
    fn unrelated_connections_spread_like_a_hash() {
        let pool = vip(vec![member(1, 1), member(2, 1), member(3, 1)]);
        let keys =
            (0..3000u32).map(|i| key((i % 250) as u8, (i.wrapping_mul(7919) % 60_000) as u16));
        let counts = counts(&pool, keys);
        for id in 1..=3 {
            assert!((800..=1200).contains(&counts[&id]), "{counts:?}");
        }
    }

    #[test]
    fn the_same_connection_always_gets_the_same_member() {
        let pool = vip(vec![member(1, 1), member(2, 5), member(3, 2)]);
        let first = choose(&pool, &key(9, 40_000), None);
        for _ in 0..10 {
            assert_eq!(choose(&pool, &key(9, 40_000), None), first);
        }
    }

    #[test]
    fn unusable_and_zero_weight_members_get_nothing() {
        let mut down = member(2, 4);
        down.usable = false;
        let pool = vip(vec![member(1, 1), down, member(3, 0)]);
        let counts = counts(&pool, (0..100).map(|i| key(1, 2000 + i)));
        assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![1]);
        let nobody = vip(vec![down, member(3, 0)]);
        assert_eq!(choose(&nobody, &key(1, 1), None), None);
        let mut pool_down = vip(vec![member(1, 1)]);
        pool_down.pool_up = false;
        assert_eq!(choose(&pool_down, &key(1, 1), None), None);
    }

    #[test]
    fn an_affinity_entry_wins_while_its_member_is_usable() {
        let mut pool = vip(vec![member(1, 1), member(2, 1), member(3, 1)]);
        for sport in 1000..1100 {
            let (m, why) = choose(&pool, &key(1, sport), Some(Uuid::from_u128(2))).unwrap();
            assert_eq!((m.id.as_u128(), why), (2, Why::Affinity));
        }
        pool.members[1].usable = false;
        let (m, why) = choose(&pool, &key(1, 1000), Some(Uuid::from_u128(2))).unwrap();
        assert_ne!(m.id.as_u128(), 2);
        assert!(matches!(why, Why::Hash { .. }));
    }
}
