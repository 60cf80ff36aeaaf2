//! NAT decisions: where a new connection is translated to (SNAT, DNAT,
//! masquerade, with ports that never collide within the device), and how an
//! ICMP or ICMPv6 error about a translated connection is translated back.
//!
//! Both families translate, each to addresses of its own: a rule's targets
//! of the other family are skipped. IPv6 is routed, not translated, unless
//! configured: by an SNAT or DNAT rule with IPv6 targets, or by a
//! masquerade rule for IPv6 only (`ip_version` 6), so that the masquerade
//! rules tenant networks have always had keep translating IPv4 alone.
//!
//! Choices are deterministic (hashes of the connection key, no randomness
//! and no clock), so the engine stays a pure function.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nsdb::{Condition, Rule, RuleAction};
use uuid::Uuid;

use super::Learned;
use crate::conntrack::{ConnEntry, ConnKey, Direction};
use crate::wire::NatRewrite;

/// An SNAT address range and optional port range.
type SnatTarget = (IpAddr, IpAddr, Option<(u16, u16)>);

/// No address and port of the rule's targets is free for this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted;

/// Why a NAT rule left a new connection as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Untranslated {
    /// No address and port of the rule's targets is free: the packet is
    /// dropped.
    Exhausted,
    /// Masquerade, and the egress port has no address of the packet's
    /// family (IPv6: none but link-local).
    NoEgressAddress,
    /// An IPv6 packet and a masquerade rule not for IPv6 (`ip_version` 6):
    /// IPv6 stays routed.
    Ipv6Routed,
    /// The rule has no target of the packet's family.
    NoTargetOfFamily,
}

impl From<Exhausted> for Untranslated {
    fn from(_: Exhausted) -> Untranslated {
        Untranslated::Exhausted
    }
}

impl fmt::Display for Untranslated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Untranslated::Exhausted => "no free address and port",
            Untranslated::NoEgressAddress => {
                "masquerade needs an egress port with an address of the packet's family: not translated"
            }
            Untranslated::Ipv6Routed => {
                "masquerade without ip_version 6 leaves IPv6 routed: not translated"
            }
            Untranslated::NoTargetOfFamily => {
                "no nat target of the packet's family: not translated"
            }
        })
    }
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// ICMP or ICMPv6, whose echo identifier stands in for both ports.
pub(crate) fn is_icmp(proto: u8) -> bool {
    matches!(proto, 1 | 58)
}

fn has_ports(key: &ConnKey) -> bool {
    matches!(key.proto, 1 | 6 | 17 | 58 | 132)
}

/// Whether a masquerade rule translates IPv6: only when it is for IPv6
/// alone (`ip_version` 6, not negated).
pub(crate) fn masquerades_ipv6(rule: &Rule) -> bool {
    rule.ip_version == Some(6) && !rule.inverted(Condition::IpVersion)
}

/// Whether a connection whose first packet leaves as `candidate` would
/// collide with one the device still tracks (an ended TCP connection's
/// keys are free: the new connection replaces it).
pub(crate) fn free<L: Learned + ?Sized>(learned: &L, zone: Uuid, candidate: &ConnKey) -> bool {
    learned
        .conn(zone, &candidate.reversed())
        .is_none_or(|(_, entry)| entry.is_closed())
}

/// Addresses of an inclusive range (of one family; otherwise none),
/// starting at the one `hash` picks.
fn addresses(from: IpAddr, to: IpAddr, hash: u64) -> impl Iterator<Item = IpAddr> {
    let (a, b, v6) = match (from, to) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(b)), false)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), true),
        _ => (1, 0, false),
    };
    // The whole IPv6 space has 2^128 addresses: one short of it is plenty.
    let count = b.checked_sub(a).map_or(0, |span| span.saturating_add(1));
    let first = if count == 0 {
        0
    } else {
        u128::from(hash) % count
    };
    (0..count).map(move |i| {
        // (first + i) mod count, without overflowing.
        let offset = if i < count - first {
            first + i
        } else {
            i - (count - first)
        };
        let n = a + offset;
        if v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            IpAddr::V4(Ipv4Addr::from(n as u32))
        }
    })
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
/// `masquerade_address` is the egress port's address of the key's family
/// (see [`masquerades_ipv6`] for when IPv6 is masqueraded at all).
pub(crate) fn choose<L: Learned + ?Sized>(
    learned: &L,
    zone: Uuid,
    rule: &Rule,
    key: ConnKey,
    masquerade_address: Option<IpAddr>,
) -> Result<ConnKey, Untranslated> {
    let hash = hash_of(key);
    let ported = has_ports(&key);
    let of_family = |t: &&nsdb::NatTarget| t.address_from.is_ipv4() == key.src.is_ipv4();
    match rule.action {
        RuleAction::Dnat => {
            let mut targets = rule.nat_targets.iter().filter(of_family).peekable();
            if targets.peek().is_none() {
                return Err(Untranslated::NoTargetOfFamily);
            }
            for target in targets {
                let (from, to) = target.addresses();
                for address in addresses(from, to, hash) {
                    let (pf, pt) = match (target.ports(), ported && !is_icmp(key.proto)) {
                        (Some(range), true) => range,
                        _ => (key.dport, key.dport),
                    };
                    for port in ports(pf, pt, key.dport, hash) {
                        let candidate = ConnKey {
                            dst: address,
                            dport: port,
                            ..key
                        };
                        if free(learned, zone, &candidate) {
                            return Ok(candidate);
                        }
                    }
                }
            }
            Err(Untranslated::Exhausted)
        }
        RuleAction::Masquerade => {
            if key.src.is_ipv6() && !masquerades_ipv6(rule) {
                return Err(Untranslated::Ipv6Routed);
            }
            let address = masquerade_address
                .filter(|a| a.is_ipv4() == key.src.is_ipv4())
                .ok_or(Untranslated::NoEgressAddress)?;
            Ok(masquerade(learned, zone, key, address)?)
        }
        RuleAction::Snat => {
            let targets: Vec<SnatTarget> = rule
                .nat_targets
                .iter()
                .filter(of_family)
                .map(|t| {
                    let (from, to) = t.addresses();
                    (from, to, t.ports())
                })
                .collect();
            if targets.is_empty() {
                return Err(Untranslated::NoTargetOfFamily);
            }
            Ok(snat(learned, zone, key, &targets)?)
        }
        _ => Err(Untranslated::NoTargetOfFamily),
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
            let (pf, pt) = match (range, ported, is_icmp(key.proto)) {
                (_, false, _) => (key.sport, key.sport),
                (Some(range), true, _) => range,
                (None, true, true) => (1, u16::MAX),
                (None, true, false) => (1024, *super::PROBE_PORTS.start() - 1),
            };
            for port in ports(pf, pt, key.sport, hash) {
                let candidate = ConnKey {
                    src: address,
                    sport: port,
                    // An echo identifier is both "ports".
                    dport: if is_icmp(key.proto) { port } else { key.dport },
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
/// `address` (masquerade to one address of the key's family, any free port).
pub(crate) fn masquerade<L: Learned + ?Sized>(
    learned: &L,
    zone: Uuid,
    key: ConnKey,
    address: IpAddr,
) -> Result<ConnKey, Exhausted> {
    snat(learned, zone, key, &[(address, address, None)])
}

/// How an ICMP or ICMPv6 error is translated when the datagram it quotes
/// belongs to a translated connection: `direction` is the error's own
/// direction (the way a packet keyed like the reversed quote travels).
/// Returns the new outer source and destination (only those that are the
/// connection's endpoints change, so intermediate routers stay visible)
/// and the quoted datagram's new fields.
pub(crate) fn related(
    direction: Direction,
    entry: &ConnEntry,
    outer_src: IpAddr,
    outer_dst: IpAddr,
) -> (Option<IpAddr>, Option<IpAddr>, NatRewrite) {
    let (from, to) = match direction {
        Direction::Reply => (entry.reply, entry.orig.reversed()),
        Direction::Original => (entry.orig, entry.reply.reversed()),
    };
    let quoted = to.reversed();
    let inner = NatRewrite {
        src: Some(quoted.src),
        dst: Some(quoted.dst),
        src_port: Some(quoted.sport),
        dst_port: Some(quoted.dport),
    };
    let src = (outer_src == from.src && from.src != to.src).then_some(to.src);
    let dst = (outer_dst == from.dst && from.dst != to.dst).then_some(to.dst);
    (src, dst, inner)
}

/// `to` as a rewrite target when it differs from `from`.
pub(crate) fn changed(from: IpAddr, to: IpAddr) -> Option<IpAddr> {
    (from != to).then_some(to)
}
