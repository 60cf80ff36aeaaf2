//! Connection tracking: the connections each device (its *zone*) has seen,
//! with the translation NAT applied to them.
//!
//! A connection is keyed, within its zone, by the 5-tuple of its first
//! packet as it entered the device ([`ConnEntry::orig`]) and by the 5-tuple
//! its replies will carry ([`ConnEntry::reply`], the reverse of the first
//! packet as it left the device, after NAT). A packet matching `orig` is in
//! the original direction and is translated to look like the reverse of
//! `reply`; a packet matching `reply` is a reply and is translated to look
//! like the reverse of `orig`. So NAT needs no state of its own: the two
//! keys are the binding.
//!
//! The engine reads connections (through [`crate::engine::Learned`]) and
//! asks for new ones and state changes as learnings; the datapath keeps the
//! table ([`ConnTable`]), ages entries out (TCP by state, others by idle
//! time; an entry a cached flow still uses is kept alive by it), and bounds
//! it. Entries are plain data with a fixed binary encoding
//! ([`ConnEntry::encode`]) so that they can be shipped to other hosts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use uuid::Uuid;

/// The 5-tuple of a packet (for ICMP echo: the identifier in both ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// IP protocol.
    pub proto: u8,
    /// Source address (IPv4 or IPv6; both of one key have one family).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (echo identifier; 0 for protocols without ports).
    pub sport: u16,
    /// Destination port (echo identifier; 0 for protocols without ports).
    pub dport: u16,
}

impl ConnKey {
    /// The key of a packet travelling the other way.
    pub fn reversed(&self) -> ConnKey {
        ConnKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// Encoded length: protocol, two addresses as 16 bytes each (IPv4 as
    /// IPv4-mapped IPv6), two ports.
    pub(crate) const LEN: usize = 37;

    pub(crate) fn write(&self, out: &mut [u8]) {
        let octets = |addr: IpAddr| match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        out[0] = self.proto;
        out[1..17].copy_from_slice(&octets(self.src));
        out[17..33].copy_from_slice(&octets(self.dst));
        out[33..35].copy_from_slice(&self.sport.to_be_bytes());
        out[35..37].copy_from_slice(&self.dport.to_be_bytes());
    }

    pub(crate) fn read(bytes: &[u8]) -> ConnKey {
        let addr = |at: usize| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes[at..at + 16]);
            Ipv6Addr::from(octets).to_canonical()
        };
        ConnKey {
            proto: bytes[0],
            src: addr(1),
            dst: addr(17),
            sport: u16::from_be_bytes([bytes[33], bytes[34]]),
            dport: u16::from_be_bytes([bytes[35], bytes[36]]),
        }
    }
}

impl std::fmt::Display for ConnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = nsdb::IpProto(self.proto);
        match self.proto {
            6 | 17 | 132 => write!(
                f,
                "{proto} {} → {}",
                std::net::SocketAddr::new(self.src, self.sport),
                std::net::SocketAddr::new(self.dst, self.dport)
            ),
            1 => write!(f, "icmp {} → {} id {}", self.src, self.dst, self.sport),
            58 => write!(f, "icmpv6 {} → {} id {}", self.src, self.dst, self.sport),
            _ => write!(f, "{proto} {} → {}", self.src, self.dst),
        }
    }
}

/// Which way a packet travels relative to the connection's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Like the first packet.
    Original,
    /// Back towards the first packet's sender.
    Reply,
}

/// Connection flags (a bit set).
pub mod flags {
    /// A reply was seen.
    pub const REPLIED: u8 = 1;
    /// The original side sent FIN.
    pub const FIN_ORIGINAL: u8 = 2;
    /// The reply side sent FIN.
    pub const FIN_REPLY: u8 = 4;
    /// Either side sent RST.
    pub const RESET: u8 = 8;
}

/// TCP flag bits the flow key and connection tracking look at.
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
}

/// One tracked connection of one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnEntry {
    /// The device that tracks it.
    pub zone: Uuid,
    /// The first packet's key as it entered the device.
    pub orig: ConnKey,
    /// The key replies carry (the reverse of the first packet as it left).
    pub reply: ConnKey,
    /// [`flags`] bits.
    pub flags: u8,
}

/// Size of [`ConnEntry::encode`]'s output.
pub const ENCODED_LEN: usize = 16 + 2 * ConnKey::LEN + 1;

impl ConnEntry {
    /// Whether NAT changed anything.
    pub fn is_translated(&self) -> bool {
        self.orig != self.reply.reversed()
    }

    /// Whether a TCP connection has ended (reset, or closed both ways): a
    /// new connection may take its keys over.
    pub fn is_closed(&self) -> bool {
        let both = flags::FIN_ORIGINAL | flags::FIN_REPLY;
        self.orig.proto == 6 && (self.flags & flags::RESET != 0 || self.flags & both == both)
    }

    /// What a packet with key `key` travelling in `direction` becomes.
    pub fn translate(&self, direction: Direction) -> ConnKey {
        match direction {
            Direction::Original => self.reply.reversed(),
            Direction::Reply => self.orig.reversed(),
        }
    }

    /// The flags after a packet of `direction` with TCP flags `tcp_flags`.
    pub fn flags_after(&self, direction: Direction, tcp_flags: u8) -> u8 {
        let mut flags = self.flags;
        if direction == Direction::Reply {
            flags |= flags::REPLIED;
        }
        if self.orig.proto == 6 {
            if tcp_flags & tcp::RST != 0 {
                flags |= flags::RESET;
            }
            if tcp_flags & tcp::FIN != 0 {
                flags |= match direction {
                    Direction::Original => flags::FIN_ORIGINAL,
                    Direction::Reply => flags::FIN_REPLY,
                };
            }
        }
        flags
    }

    /// How long the connection lives without packets, by protocol and state.
    pub fn idle_timeout_ms(&self) -> u64 {
        let f = self.flags;
        match self.orig.proto {
            6 if f & flags::RESET != 0 => 10_000,
            6 if f & (flags::FIN_ORIGINAL | flags::FIN_REPLY)
                == flags::FIN_ORIGINAL | flags::FIN_REPLY =>
            {
                30_000
            }
            6 if f & (flags::FIN_ORIGINAL | flags::FIN_REPLY) != 0 => 120_000,
            6 if f & flags::REPLIED != 0 => 7_200_000,
            6 => 60_000,
            17 if f & flags::REPLIED != 0 => 180_000,
            _ => 30_000,
        }
    }

    /// The fixed binary form, for shipping to other hosts.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..16].copy_from_slice(self.zone.as_bytes());
        self.orig.write(&mut out[16..16 + ConnKey::LEN]);
        self.reply
            .write(&mut out[16 + ConnKey::LEN..16 + 2 * ConnKey::LEN]);
        out[ENCODED_LEN - 1] = self.flags;
        out
    }

    /// Decodes [`ConnEntry::encode`]'s form; `None` for a wrong length.
    pub fn decode(bytes: &[u8]) -> Option<ConnEntry> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let zone = Uuid::from_slice(&bytes[..16]).ok()?;
        Some(ConnEntry {
            zone,
            orig: ConnKey::read(&bytes[16..16 + ConnKey::LEN]),
            reply: ConnKey::read(&bytes[16 + ConnKey::LEN..16 + 2 * ConnKey::LEN]),
            flags: bytes[ENCODED_LEN - 1],
        })
    }
}

/// The most connections tracked at once; past it new ones are not tracked
/// (and counted), so a flood of connections cannot grow memory without bound.
pub const MAX_CONNS: usize = 262_144;

#[derive(Debug, Clone, Copy)]
struct Stored {
    entry: ConnEntry,
    last_seen_ms: u64,
}

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// The connections of one datapath, indexed by both keys.
#[derive(Debug)]
pub struct ConnTable {
    by_key: HashMap<(Uuid, ConnKey), (u64, Direction)>,
    entries: HashMap<u64, Stored>,
    next_id: u64,
    capacity: usize,
}

impl Default for ConnTable {
    fn default() -> Self {
        ConnTable::with_capacity(MAX_CONNS)
    }
}

/// The lookup keys a connection's flows were tagged with; creating or
/// removing the connection invalidates them.
pub fn keys_of(entry: &ConnEntry) -> [ConnKey; 2] {
    [entry.orig, entry.reply]
}

impl ConnTable {
    /// A table holding at most `capacity` connections.
    pub fn with_capacity(capacity: usize) -> ConnTable {
        ConnTable {
            by_key: HashMap::new(),
            entries: HashMap::new(),
            next_id: 1,
            capacity,
        }
    }

    /// The connection `key` belongs to in `zone`, and the packet's direction.
    pub fn lookup(&self, zone: Uuid, key: &ConnKey) -> Option<(Direction, ConnEntry)> {
        let (id, direction) = self.by_key.get(&(zone, *key))?;
        Some((*direction, self.entries.get(id)?.entry))
    }

    fn remove_id(&mut self, id: u64) -> Option<ConnEntry> {
        let stored = self.entries.remove(&id)?;
        for key in keys_of(&stored.entry) {
            if self.by_key.get(&(stored.entry.zone, key)).map(|e| e.0) == Some(id) {
                self.by_key.remove(&(stored.entry.zone, key));
            }
        }
        Some(stored.entry)
    }

    /// Tracks a new connection (replacing any that held one of its keys);
    /// returns the connections replaced.
    pub fn insert(&mut self, entry: ConnEntry, now_ms: u64) -> Result<Vec<ConnEntry>, TableFull> {
        let mut replaced = Vec::new();
        for key in keys_of(&entry) {
            if let Some((id, _)) = self.by_key.get(&(entry.zone, key)).copied() {
                replaced.extend(self.remove_id(id));
            }
        }
        if self.entries.len() >= self.capacity {
            return Err(TableFull);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Stored {
                entry,
                last_seen_ms: now_ms,
            },
        );
        self.by_key
            .insert((entry.zone, entry.orig), (id, Direction::Original));
        self.by_key
            .insert((entry.zone, entry.reply), (id, Direction::Reply));
        Ok(replaced)
    }

    /// Records a packet of the connection `key` belongs to: its flags and
    /// the time. Returns false when no such connection is tracked.
    pub fn seen(&mut self, zone: Uuid, key: &ConnKey, tcp_flags: u8, now_ms: u64) -> bool {
        let Some((id, direction)) = self.by_key.get(&(zone, *key)).copied() else {
            return false;
        };
        let Some(stored) = self.entries.get_mut(&id) else {
            return false;
        };
        stored.entry.flags = stored.entry.flags_after(direction, tcp_flags);
        stored.last_seen_ms = now_ms;
        true
    }

    /// Removes connections idle past their timeout. `last_used` says when a
    /// cached flow last carried a packet of the connection (flows hit in the
    /// datapath without touching the table); such use keeps it alive.
    pub fn expire(
        &mut self,
        now_ms: u64,
        last_used: impl Fn(&ConnEntry) -> Option<u64>,
    ) -> Vec<ConnEntry> {
        let mut expired = Vec::new();
        let ids: Vec<u64> = self.entries.keys().copied().collect();
        for id in ids {
            let Some(stored) = self.entries.get_mut(&id) else {
                continue;
            };
            let timeout = stored.entry.idle_timeout_ms();
            if now_ms.saturating_sub(stored.last_seen_ms) < timeout {
                continue;
            }
            if let Some(used) = last_used(&stored.entry) {
                stored.last_seen_ms = stored.last_seen_ms.max(used);
                if now_ms.saturating_sub(stored.last_seen_ms) < timeout {
                    continue;
                }
            }
            expired.extend(self.remove_id(id));
        }
        expired
    }

    /// How many connections are tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every connection (for inspection and for shipping to other hosts).
    pub fn entries(&self) -> impl Iterator<Item = &ConnEntry> {
        self.entries.values().map(|s| &s.entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: &str, sport: u16, dst: &str, dport: u16) -> ConnKey {
        ConnKey {
            proto: 6,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
        }
    }

    fn masqueraded() -> ConnEntry {
        let orig = key("10.0.0.5", 40000, "192.0.2.1", 80);
        ConnEntry {
            zone: Uuid::from_u128(7),
            orig,
            reply: key("192.0.2.1", 80, "169.254.0.2", 1024),
            flags: 0,
        }
    }

    #[test]
    fn both_directions_find_the_connection_and_translate() {
        let mut table = ConnTable::default();
        let entry = masqueraded();
        table.insert(entry, 0).unwrap();
        let (dir, found) = table.lookup(entry.zone, &entry.orig).unwrap();
        assert_eq!(dir, Direction::Original);
        assert_eq!(
            found.translate(dir),
            key("169.254.0.2", 1024, "192.0.2.1", 80)
        );
        let (dir, found) = table.lookup(entry.zone, &entry.reply).unwrap();
        assert_eq!(dir, Direction::Reply);
        assert_eq!(
            found.translate(dir),
            key("192.0.2.1", 80, "10.0.0.5", 40000)
        );
        assert!(found.is_translated());
        assert!(
            table.lookup(Uuid::from_u128(8), &entry.orig).is_none(),
            "zones are separate"
        );
    }

    #[test]
    fn tcp_ages_by_state_and_flows_keep_it_alive() {
        let mut table = ConnTable::default();
        let entry = masqueraded();
        table.insert(entry, 0).unwrap();
        assert!(table.expire(59_000, |_| None).is_empty());
        assert_eq!(
            table.expire(60_000, |_| None).len(),
            1,
            "an unanswered SYN goes after a minute"
        );

        table.insert(entry, 0).unwrap();
        table.seen(entry.zone, &entry.reply, tcp::SYN, 10);
        assert!(
            table.expire(3_600_000, |_| None).is_empty(),
            "established lives long"
        );
        table.seen(entry.zone, &entry.orig, tcp::FIN, 3_600_000);
        table.seen(entry.zone, &entry.reply, tcp::FIN, 3_600_001);
        assert!(table.expire(3_600_020, |_| Some(3_600_010)).is_empty());
        assert_eq!(
            table.expire(3_640_000, |_| None).len(),
            1,
            "closed connections go soon"
        );
        assert!(table.is_empty());

        table.insert(entry, 0).unwrap();
        assert!(
            table.expire(100_000, |_| Some(90_000)).is_empty(),
            "a cached flow that still carries packets keeps it"
        );
    }

    #[test]
    fn inserting_over_a_key_replaces_and_the_table_is_bounded() {
        let mut table = ConnTable::with_capacity(1);
        let entry = masqueraded();
        table.insert(entry, 0).unwrap();
        let mut other = entry;
        other.orig.sport = 40001;
        assert_eq!(
            table.insert(other, 0).unwrap(),
            vec![entry],
            "same reply key: replaced"
        );
        assert_eq!(table.len(), 1);
        let mut third = entry;
        third.orig.sport = 5;
        third.reply.dport = 5;
        assert_eq!(table.insert(third, 0), Err(TableFull));
    }

    #[test]
    fn entries_encode_and_decode() {
        let entry = ConnEntry {
            flags: flags::REPLIED,
            ..masqueraded()
        };
        assert_eq!(ConnEntry::decode(&entry.encode()), Some(entry));
        assert_eq!(ConnEntry::decode(&entry.encode()[1..]), None);
    }
}
