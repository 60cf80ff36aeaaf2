//! What the datapath learns while forwarding: MACs behind bridge ports, ARP
//! answers routers received, and the connections devices track. Entries
//! age out; every change returns the tags whose flows it invalidates.

use std::collections::HashMap;
use std::net::IpAddr;

use uuid::Uuid;

use crate::conntrack::{self, ConnEntry, ConnKey, ConnTable, Direction};
use crate::engine::{FragmentKey, Learned, Learning, Tag};
use crate::flows::FlowCache;
use crate::snapshot::Mac;

/// How long a learned entry lives without being seen again.
pub const MAC_AGE_MS: u64 = 300_000;
/// How long an ARP answer is trusted.
pub const ARP_AGE_MS: u64 = 600_000;
/// How long the ports of a datagram's first fragment are kept for its
/// later fragments (fragments of one datagram arrive within milliseconds;
/// a reassembly timeout is 30 s at most).
pub const FRAGMENT_AGE_MS: u64 = 10_000;
/// How long a next hop that did not answer ARP stays failed (packets toward
/// it get ICMP host unreachable at once; after it, resolution starts again).
pub const ARP_FAILED_MS: u64 = 3_000;

/// The most entries each table holds: past it, new addresses are not learned
/// (they are flooded or resolved again), so random source MACs cannot grow
/// memory without bound.
pub const MAX_ENTRIES: usize = 65_536;

/// The learned tables.
#[derive(Debug, Default)]
pub struct LearnedTables {
    macs: HashMap<(Uuid, Mac), (Uuid, u64)>,
    arp: HashMap<(Uuid, IpAddr), (Mac, u64)>,
    arp_failed: HashMap<(Uuid, IpAddr), u64>,
    fragments: HashMap<(Uuid, FragmentKey), ((u16, u16), u64)>,
    /// Session affinity: (VIP, client) → (member, until).
    affinity: HashMap<(Uuid, IpAddr), (Uuid, u64)>,
    conns: ConnTable,
    conns_refused: u64,
}

/// The tags of flows that looked a connection up.
pub fn conn_tags(entry: &ConnEntry) -> [Tag; 2] {
    conntrack::keys_of(entry).map(|key| Tag::Conn(entry.zone, key))
}

impl LearnedTables {
    /// Records a learning; returns the tags to invalidate (what it changed
    /// of what the engine would decide).
    pub fn learn(&mut self, learning: &Learning, now_ms: u64) -> Vec<Tag> {
        match *learning {
            Learning::Conn(entry) => match self.conns.insert(entry, now_ms) {
                Ok(replaced) => replaced
                    .iter()
                    .chain([entry].iter())
                    .flat_map(conn_tags)
                    .collect(),
                Err(conntrack::TableFull) => {
                    self.conns_refused += 1;
                    Vec::new()
                }
            },
            Learning::ConnSeen {
                zone,
                key,
                tcp_flags,
            } => {
                self.conns.seen(zone, &key, tcp_flags, now_ms);
                Vec::new()
            }
            _ => self.learn_address(learning, now_ms).into_iter().collect(),
        }
    }

    fn learn_address(&mut self, learning: &Learning, now_ms: u64) -> Option<Tag> {
        match *learning {
            Learning::Mac { bridge, mac, port } => {
                if self.macs.len() >= MAX_ENTRIES && !self.macs.contains_key(&(bridge, mac)) {
                    return None;
                }
                let previous = self.macs.insert((bridge, mac), (port, now_ms));
                (previous.map(|p| p.0) != Some(port)).then_some(Tag::Mac(bridge, mac))
            }
            Learning::Arp { router, ip, mac } => {
                if self.arp.len() >= MAX_ENTRIES && !self.arp.contains_key(&(router, ip)) {
                    return None;
                }
                self.arp_failed.remove(&(router, ip));
                let previous = self.arp.insert((router, ip), (mac, now_ms));
                (previous.map(|p| p.0) != Some(mac)).then_some(Tag::Arp(router, ip))
            }
            Learning::Fragment { zone, key, ports } => {
                if self.fragments.len() < MAX_ENTRIES || self.fragments.contains_key(&(zone, key)) {
                    self.fragments.insert((zone, key), (ports, now_ms));
                }
                None
            }
            Learning::Affinity {
                vip,
                client,
                member,
                timeout_ms,
            } => {
                if self.affinity.len() < MAX_ENTRIES || self.affinity.contains_key(&(vip, client)) {
                    let until = now_ms.saturating_add(timeout_ms);
                    self.affinity.insert((vip, client), (member, until));
                }
                None
            }
            Learning::Conn(_) | Learning::ConnSeen { .. } => None,
        }
    }

    /// Ages connections out; `last_used` tells when a cached flow carrying
    /// a connection last forwarded a packet. Returns the tags to invalidate.
    pub fn expire_conns(
        &mut self,
        now_ms: u64,
        last_used: impl Fn(&ConnEntry) -> Option<u64>,
    ) -> Vec<Tag> {
        self.conns
            .expire(now_ms, last_used)
            .iter()
            .flat_map(conn_tags)
            .collect()
    }

    /// The connection table.
    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    /// New connections not tracked because the table was full.
    pub fn conns_refused(&self) -> u64 {
        self.conns_refused
    }

    /// Forgets entries older than their age limits; returns their tags.
    /// An entry is seen again when a cached flow that depends on it (a flow
    /// from or to a learned MAC, a flow routed to a resolved neighbour) has
    /// forwarded a packet since: `last_used` tells when a flow carrying a
    /// tag last did. So traffic served from the cache keeps its entries
    /// alive without a write per packet.
    pub fn expire(&mut self, now_ms: u64, last_used: impl Fn(&Tag) -> Option<u64>) -> Vec<Tag> {
        let mut tags = Vec::new();
        let mut keep = |tag: Tag, seen: &mut u64, age: u64| {
            if now_ms.saturating_sub(*seen) < age {
                return true;
            }
            match last_used(&tag) {
                Some(used) if used > *seen && now_ms.saturating_sub(used) < age => {
                    *seen = used;
                    true
                }
                _ => {
                    tags.push(tag);
                    false
                }
            }
        };
        self.macs
            .retain(|(bridge, mac), (_, seen)| keep(Tag::Mac(*bridge, *mac), seen, MAC_AGE_MS));
        self.arp
            .retain(|(router, ip), (_, seen)| keep(Tag::Arp(*router, *ip), seen, ARP_AGE_MS));
        self.arp_failed
            .retain(|_, since| now_ms.saturating_sub(*since) < ARP_FAILED_MS);
        self.fragments
            .retain(|_, (_, since)| now_ms.saturating_sub(*since) < FRAGMENT_AGE_MS);
        self.affinity.retain(|_, (_, until)| now_ms < *until);
        tags
    }

    /// Records that `router` gave up resolving `ip` at `now_ms`.
    pub fn arp_gave_up(&mut self, router: Uuid, ip: IpAddr, now_ms: u64) {
        if self.arp_failed.len() < MAX_ENTRIES {
            self.arp_failed.insert((router, ip), now_ms);
        }
    }

    /// Records that flows carrying `tags` forwarded a packet at `used_ms`
    /// (a flow leaving the cache hands its last use to the entries it used).
    pub fn touch(&mut self, tags: &[Tag], used_ms: u64) {
        for tag in tags {
            let seen = match tag {
                Tag::Mac(bridge, mac) => self.macs.get_mut(&(*bridge, *mac)).map(|e| &mut e.1),
                Tag::Arp(router, ip) => self.arp.get_mut(&(*router, *ip)).map(|e| &mut e.1),
                _ => None,
            };
            if let Some(seen) = seen {
                *seen = (*seen).max(used_ms);
            }
        }
    }

    /// Housekeeping at `now_ms`: idle flows leave the cache (handing their
    /// last use to the entries they used), then aged entries and
    /// connections go (those a cached flow still uses are kept), and the
    /// flows that depended on what was forgotten are invalidated. An entry
    /// so lives its full age after the last packet that used it.
    pub fn age(&mut self, flows: &FlowCache, now_ms: u64, flow_idle_ms: u64) {
        flows.expire(now_ms, flow_idle_ms, |tags, used| self.touch(tags, used));
        let aged = self.expire(now_ms, |tag| flows.last_used(tag));
        flows.invalidate(&aged);
        let gone = self.expire_conns(now_ms, |entry| {
            conn_tags(entry)
                .iter()
                .filter_map(|tag| flows.last_used(tag))
                .max()
        });
        flows.invalidate(&gone);
    }

    /// The learned MACs and ARP answers, as learnings (for a peer's sync).
    pub fn addresses(&self) -> impl Iterator<Item = Learning> + '_ {
        let macs = self
            .macs
            .iter()
            .map(|((bridge, mac), (port, _))| Learning::Mac {
                bridge: *bridge,
                mac: *mac,
                port: *port,
            });
        let arps = self
            .arp
            .iter()
            .map(|((router, ip), (mac, _))| Learning::Arp {
                router: *router,
                ip: *ip,
                mac: *mac,
            });
        macs.chain(arps)
    }

    /// How many MAC and ARP entries are held.
    pub fn sizes(&self) -> (usize, usize) {
        (self.macs.len(), self.arp.len())
    }
}

impl Learned for LearnedTables {
    fn mac_port(&self, bridge: Uuid, mac: Mac) -> Option<Uuid> {
        self.macs.get(&(bridge, mac)).map(|e| e.0)
    }

    fn arp(&self, router: Uuid, ip: IpAddr) -> Option<Mac> {
        self.arp.get(&(router, ip)).map(|e| e.0)
    }

    fn arp_failed(&self, router: Uuid, ip: IpAddr) -> bool {
        self.arp_failed.contains_key(&(router, ip))
    }

    fn fragment_ports(&self, zone: Uuid, key: &FragmentKey) -> Option<(u16, u16)> {
        self.fragments.get(&(zone, *key)).map(|e| e.0)
    }

    fn affinity(&self, vip: Uuid, client: IpAddr) -> Option<Uuid> {
        self.affinity.get(&(vip, client)).map(|e| e.0)
    }

    fn conn(&self, zone: Uuid, key: &ConnKey) -> Option<(Direction, ConnEntry)> {
        self.conns.lookup(zone, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_reports_changes_and_ages_out() {
        let mut tables = LearnedTables::default();
        let (bridge, port) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mac = [2, 0, 0, 0, 0, 1];
        let learn = Learning::Mac { bridge, mac, port };
        assert_eq!(tables.learn(&learn, 0), vec![Tag::Mac(bridge, mac)]);
        assert!(
            tables.learn(&learn, 10).is_empty(),
            "seeing it again changes nothing"
        );
        assert_eq!(tables.mac_port(bridge, mac), Some(port));
        let moved = Learning::Mac {
            bridge,
            mac,
            port: Uuid::from_u128(3),
        };
        assert_eq!(
            tables.learn(&moved, 20),
            vec![Tag::Mac(bridge, mac)],
            "a move invalidates"
        );
        assert_eq!(
            tables.expire(20 + MAC_AGE_MS, |_| None),
            vec![Tag::Mac(bridge, mac)]
        );
        assert_eq!(tables.mac_port(bridge, mac), None);
    }

    #[test]
    fn tables_stop_growing_at_their_cap() {
        let mut tables = LearnedTables::default();
        let bridge = Uuid::from_u128(1);
        for n in 0..(MAX_ENTRIES as u32 + 10) {
            let b = n.to_be_bytes();
            tables.learn(
                &Learning::Mac {
                    bridge,
                    mac: [2, 0, b[0], b[1], b[2], b[3]],
                    port: Uuid::from_u128(2),
                },
                0,
            );
        }
        assert_eq!(tables.sizes().0, MAX_ENTRIES);
    }
}
