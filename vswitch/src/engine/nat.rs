//! NAT decisions: where a new connection is translated to (SNAT, DNAT,
//! masquerade, with ports that never collide within the device), and how an
//! ICMP error about a translated connection is translated back.
//!
//! Choices are deterministic (hashes of the connection key, no randomness
//! and no clock), so the engine stays a pure function.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};

use nsdb::{Rule, RuleAction};
use uuid::Uuid;

use super::Learned;
use crate::conntrack::{ConnEntry, ConnKey, Direction};
use crate::wire::NatRewrite;

/// An SNAT address range and optional port range.
type SnatTarget = (Ipv4Addr, Ipv4Addr, Option<(u16, u16)>);

/// No address and port of the rule's targets is free for this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted;

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn has_ports(key: &ConnKey) -> bool {
    matches!(key.proto, 1 | 6 | 17 | 132)
}

/// Whether a connection whose first packet leaves as `candidate` would
/// collide with one the device still tracks (an ended TCP connection's
/// keys are free: the new connection replaces it).
pub(crate) fn free<L: Learned + ?Sized>(learned: &L, zone: Uuid, candidate: &ConnKey) -> bool {
    learned
        .conn(zone, &candidate.reversed())
        .is_none_or(|(_, entry)| entry.is_closed())
}

/// Addresses of an inclusive range, starting at the one `hash` picks.
fn addresses(from: Ipv4Addr, to: Ipv4Addr, hash: u64) -> impl Iterator<Item = Ipv4Addr> {
    let (a, b) = (u32::from(from), u32::from(to));
    let count = u64::from(b - a) + 1;
    let first = hash % count;
    (0..count).map(move |i| Ipv4Addr::from(a + ((first + i) % count) as u32))
}

/// Ports of an inclusive range, the preferred one first, then from where
/// `hash` points, wrapping.
fn ports(from: u16, to: u16, preferred: u16, hash: u64) -> impl Iterator<Item = u16> {
    let count = u64::from(to - from) + 1;
    let first = if (from..=to).contains(&preferred) {
        u64::from(preferred - from)
    } else {
        hash % count
    };
    (0..count).map(move |i| from + ((first + i) % count) as u16)
}

/// The key a new connection leaves with under `rule` (an SNAT, DNAT or
/// masquerade rule). `key` is the packet's key as it stands now;
/// `masquerade_address` is the egress port's address. `Ok(None)`: the rule
/// cannot translate this packet (masquerade with no egress address).
pub(crate) fn choose<L: Learned + ?Sized>(
    learned: &L,
    zone: Uuid,
    rule: &Rule,
    key: ConnKey,
    masquerade_address: Option<Ipv4Addr>,
) -> Result<Option<ConnKey>, Exhausted> {
    if !key.src.is_ipv4() {
        // Address translation is IPv4's: IPv6 is routed, never translated.
        return Ok(None);
    }
    let hash = hash_of(key);
    let ported = has_ports(&key);
    match rule.action {
        RuleAction::Dnat => {
            for target in &rule.nat_targets {
                let (from, to) = target.addresses();
                for address in addresses(from, to, hash) {
                    let (pf, pt) = match (target.ports(), ported && key.proto != 1) {
                        (Some(range), true) => range,
                        _ => (key.dport, key.dport),
                    };
                    for port in ports(pf, pt, key.dport, hash) {
                        let candidate = ConnKey {
                            dst: IpAddr::V4(address),
                            dport: port,
                            ..key
                        };
                        if free(learned, zone, &candidate) {
                            return Ok(Some(candidate));
                        }
                    }
                }
            }
            Err(Exhausted)
        }
        RuleAction::Snat | RuleAction::Masquerade => {
            let targets: Vec<SnatTarget> = match rule.action {
                RuleAction::Masquerade => match masquerade_address {
                    Some(address) => vec![(address, address, None)],
                    None => return Ok(None),
                },
                _ => rule
                    .nat_targets
                    .iter()
                    .map(|t| {
                        let (from, to) = t.addresses();
                        (from, to, t.ports())
                    })
                    .collect(),
            };
            snat(learned, zone, key, &targets).map(Some)
        }
        _ => Ok(None),
    }
}

/// The key a new connection leaves with when its source is translated to
/// one of `targets`: the first free address and port, sticky per source
/// (one client keeps one public address).
fn snat<L: Learned + ?Sized>(
    learned: &L,
    zone: Uuid,
    key: ConnKey,
    targets: &[SnatTarget],
) -> Result<ConnKey, Exhausted> {
    let hash = hash_of(key);
    let ported = has_ports(&key);
    let source_hash = hash_of(key.src);
    for &(from, to, range) in targets {
        for address in addresses(from, to, source_hash) {
            let (pf, pt) = match (range, ported, key.proto) {
                (_, false, _) => (key.sport, key.sport),
                (Some(range), true, _) => range,
                (None, true, 1) => (1, u16::MAX),
                (None, true, _) => (1024, *super::PROBE_PORTS.start() - 1),
            };
            for port in ports(pf, pt, key.sport, hash) {
                let candidate = ConnKey {
                    src: IpAddr::V4(address),
                    sport: port,
                    // An echo identifier is both "ports".
                    dport: if key.proto == 1 { port } else { key.dport },
                    ..key
                };
                if free(learned, zone, &candidate) {
                    return Ok(candidate);
                }
            }
        }
    }
    Err(Exhausted)
}

/// The key a new connection leaves with when its source is translated to
/// `address` (masquerade to one address, any free port).
pub(crate) fn masquerade<L: Learned + ?Sized>(
    learned: &L,
    zone: Uuid,
    key: ConnKey,
    address: Ipv4Addr,
) -> Result<ConnKey, Exhausted> {
    snat(learned, zone, key, &[(address, address, None)])
}

/// How an ICMP error is translated when the datagram it quotes belongs to
/// a translated connection: `direction` is the error's own direction (the
/// way a packet keyed like the reversed quote travels). Returns the new
/// outer source and destination (only those that are the connection's
/// endpoints change, so intermediate routers stay visible) and the quoted
/// datagram's new fields.
pub(crate) fn related(
    direction: Direction,
    entry: &ConnEntry,
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
) -> (Option<Ipv4Addr>, Option<Ipv4Addr>, NatRewrite) {
    let (from, to) = match direction {
        Direction::Reply => (entry.reply, entry.orig.reversed()),
        Direction::Original => (entry.orig, entry.reply.reversed()),
    };
    let quoted = to.reversed();
    let inner = NatRewrite {
        src: v4(quoted.src),
        dst: v4(quoted.dst),
        src_port: Some(quoted.sport),
        dst_port: Some(quoted.dport),
    };
    let src = (IpAddr::V4(outer_src) == from.src && from.src != to.src)
        .then_some(to.src)
        .and_then(v4);
    let dst = (IpAddr::V4(outer_dst) == from.dst && from.dst != to.dst)
        .then_some(to.dst)
        .and_then(v4);
    (src, dst, inner)
}

/// The IPv4 address, if `addr` is one.
pub(crate) fn v4(addr: IpAddr) -> Option<Ipv4Addr> {
    match addr {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

/// `to` as a rewrite target when it differs from `from` (IPv4 only: IPv6
/// connections are never translated).
pub(crate) fn changed(from: IpAddr, to: IpAddr) -> Option<Ipv4Addr> {
    (from != to).then_some(to).and_then(v4)
}
