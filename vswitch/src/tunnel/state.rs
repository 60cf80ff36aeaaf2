//! Flow-state messages between agents: what one host's simulations learned
//! (tracked connections and their NAT bindings, MACs behind ports, ARP
//! answers) shipped to the hosts that need it.
//!
//! A message is an Ethernet frame (so captures still decode) with Plexus's
//! local-experimental EtherType 0x88B5 ([`crate::io::PLEXUS_ETHERTYPE`]), sent on the reserved tunnel key
//! [`super::STATE_KEY`]; its payload is the magic `PLX1` followed by
//! records of a kind byte and a fixed-size body. Decoding is total: a
//! truncated or unknown record ends the message, which is why records of
//! kinds added later travel in messages of their own (see [`StateWriter`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use uuid::Uuid;

use crate::conntrack::{ConnEntry, ConnKey, ENCODED_LEN};
use crate::engine::Learning;
use crate::io::{plexus_ethernet_header, PLEXUS_ETHERTYPE};

const MAGIC: &[u8; 4] = b"PLX1";
const HEADER: usize = 14 + MAGIC.len();
/// Largest message, so it always fits an underlay packet.
const MAX_LEN: usize = 1200;

const CONN: u8 = 1;
const CONN_SEEN: u8 = 2;
const MAC: u8 = 3;
const ARP: u8 = 4;
/// A request for the receiver's whole flow state (an agent that restarted
/// or joined late asks its peers); no body.
const SYNC: u8 = 5;
/// A neighbour an IPv6 router port resolved (the IPv6 twin of `ARP`).
const NEIGHBOR6: u8 = 6;

fn body_len(kind: u8) -> Option<usize> {
    match kind {
        CONN => Some(ENCODED_LEN),
        CONN_SEEN => Some(16 + ConnKey::LEN + 1),
        MAC => Some(16 + 6 + 16),
        ARP => Some(16 + 4 + 6),
        SYNC => Some(0),
        NEIGHBOR6 => Some(16 + 16 + 6),
        _ => None,
    }
}

/// Builds state messages, splitting them to stay under a safe size.
///
/// Records of kinds added after the first release (`NEIGHBOR6`, and any
/// later) go in messages of their own: an agent that does not know a kind
/// stops reading its message there, so during an upgrade an older agent
/// still gets every record it understands.
#[derive(Debug, Default)]
pub struct StateWriter {
    messages: Vec<Vec<u8>>,
    /// The message still being filled, per class (first-release kinds,
    /// later kinds).
    open: [Option<usize>; 2],
}

/// Which messages a record kind goes in (see [`StateWriter`]).
fn class(kind: u8) -> usize {
    usize::from(kind >= NEIGHBOR6)
}

impl StateWriter {
    /// Appends `learning` (fragment ports are local to the host the
    /// fragments enter by and are not shipped).
    pub fn push(&mut self, learning: &Learning) {
        let Some((kind, mut body)) = encode(learning) else {
            return;
        };
        let need = 1 + body.len();
        let open = &mut self.open[class(kind)];
        let fits = open
            .and_then(|i| self.messages.get(i))
            .is_some_and(|m| m.len() + need <= MAX_LEN);
        if !fits {
            let mut m = Vec::with_capacity(MAX_LEN);
            m.extend_from_slice(&plexus_ethernet_header());
            m.extend_from_slice(MAGIC);
            *open = Some(self.messages.len());
            self.messages.push(m);
        }
        if let Some(m) = open.and_then(|i| self.messages.get_mut(i)) {
            m.push(kind);
            m.append(&mut body);
        }
    }

    /// The messages built.
    pub fn messages(&self) -> &[Vec<u8>] {
        &self.messages
    }

    /// True if nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

fn encode(learning: &Learning) -> Option<(u8, Vec<u8>)> {
    Some(match *learning {
        Learning::Fragment { .. } | Learning::Affinity { .. } => return None,
        Learning::Conn(entry) => (CONN, entry.encode().to_vec()),
        Learning::ConnSeen {
            zone,
            key,
            tcp_flags,
        } => {
            let mut b = vec![0u8; 16 + ConnKey::LEN + 1];
            b[..16].copy_from_slice(zone.as_bytes());
            key.write(&mut b[16..16 + ConnKey::LEN]);
            b[16 + ConnKey::LEN] = tcp_flags;
            (CONN_SEEN, b)
        }
        Learning::Mac { bridge, mac, port } => {
            let mut b = Vec::with_capacity(38);
            b.extend_from_slice(bridge.as_bytes());
            b.extend_from_slice(&mac);
            b.extend_from_slice(port.as_bytes());
            (MAC, b)
        }
        Learning::Arp { router, ip, mac } => {
            let mut b = Vec::with_capacity(38);
            b.extend_from_slice(router.as_bytes());
            let kind = match ip {
                IpAddr::V4(ip) => {
                    b.extend_from_slice(&ip.octets());
                    ARP
                }
                IpAddr::V6(ip) => {
                    b.extend_from_slice(&ip.octets());
                    NEIGHBOR6
                }
            };
            b.extend_from_slice(&mac);
            (kind, b)
        }
    })
}

fn uuid(b: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(b).ok()
}

fn mac(b: &[u8]) -> Option<[u8; 6]> {
    b.try_into().ok()
}

fn decode_one(kind: u8, b: &[u8]) -> Option<Learning> {
    Some(match kind {
        CONN => Learning::Conn(ConnEntry::decode(b)?),
        CONN_SEEN => Learning::ConnSeen {
            zone: uuid(&b[..16])?,
            key: ConnKey::read(&b[16..16 + ConnKey::LEN]),
            tcp_flags: b[16 + ConnKey::LEN],
        },
        MAC => Learning::Mac {
            bridge: uuid(&b[..16])?,
            mac: mac(&b[16..22])?,
            port: uuid(&b[22..38])?,
        },
        ARP => Learning::Arp {
            router: uuid(&b[..16])?,
            ip: IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19])),
            mac: mac(&b[20..26])?,
        },
        NEIGHBOR6 => Learning::Arp {
            router: uuid(&b[..16])?,
            ip: IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[16..32]).ok()?)),
            mac: mac(&b[32..38])?,
        },
        _ => return None,
    })
}

fn is_state_message(frame: &[u8]) -> bool {
    frame.len() >= HEADER
        && frame[12..14] == PLEXUS_ETHERTYPE.to_be_bytes()
        && &frame[14..HEADER] == MAGIC
}

/// A message asking its receiver for all the flow state it holds.
pub fn sync_request() -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + 1);
    m.extend_from_slice(&plexus_ethernet_header());
    m.extend_from_slice(MAGIC);
    m.push(SYNC);
    m
}

/// A state message with no records: a sync answer from a host that holds
/// nothing still arrives (its tunnel header says what the sender reads).
pub fn empty_message() -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER);
    m.extend_from_slice(&plexus_ethernet_header());
    m.extend_from_slice(MAGIC);
    m
}

/// Whether `frame` is a state message asking for a sync.
pub fn is_sync_request(frame: &[u8]) -> bool {
    is_state_message(frame) && frame.get(HEADER) == Some(&SYNC)
}

/// The learnings in a state message; `None` if it is not one.
pub fn decode(frame: &[u8]) -> Option<Vec<Learning>> {
    if !is_state_message(frame) {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = &frame[HEADER..];
    while let Some((&kind, tail)) = rest.split_first() {
        let Some(len) = body_len(kind).filter(|l| *l <= tail.len()) else {
            break;
        };
        if kind == SYNC {
            rest = tail;
            continue;
        }
        match decode_one(kind, &tail[..len]) {
            Some(learning) => out.push(learning),
            None => break,
        }
        rest = &tail[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ConnKey {
        ConnKey {
            proto: 6,
            src: Ipv4Addr::new(10, 0, 0, n).into(),
            dst: Ipv4Addr::new(10, 0, 1, n).into(),
            sport: 1000 + u16::from(n),
            dport: 80,
        }
    }

    #[test]
    fn round_trips_every_kind_and_splits_long_messages() {
        let zone = Uuid::new_v4();
        let mut all = vec![
            Learning::Conn(ConnEntry {
                zone,
                orig: key(1),
                reply: key(2).reversed(),
                flags: 1,
            }),
            Learning::ConnSeen {
                zone,
                key: key(3),
                tcp_flags: 0x11,
            },
            Learning::Conn(ConnEntry {
                zone,
                orig: ConnKey {
                    src: "fd00::1".parse().unwrap(),
                    dst: "fd00::2".parse().unwrap(),
                    ..key(4)
                },
                reply: ConnKey {
                    src: "fd00::2".parse().unwrap(),
                    dst: "fd00::1".parse().unwrap(),
                    ..key(4).reversed()
                },
                flags: 0,
            }),
            Learning::Mac {
                bridge: Uuid::new_v4(),
                mac: [2, 0, 0, 0, 0, 9],
                port: Uuid::new_v4(),
            },
            Learning::Arp {
                router: Uuid::new_v4(),
                ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                mac: [2, 0, 0, 0, 0, 7],
            },
            Learning::Arp {
                router: Uuid::new_v4(),
                ip: "2001:db8::1".parse().unwrap(),
                mac: [2, 0, 0, 0, 0, 8],
            },
        ];
        for n in 0..100 {
            all.push(Learning::ConnSeen {
                zone,
                key: key(n),
                tcp_flags: 0,
            });
        }
        let mut w = StateWriter::default();
        for l in &all {
            w.push(l);
        }
        assert!(w.messages().len() > 1);
        assert!(w.messages().iter().all(|m| m.len() <= MAX_LEN));
        let decoded: Vec<Learning> = w
            .messages()
            .iter()
            .flat_map(|m| decode(m).unwrap())
            .collect();
        // Every record comes back; the later kinds (NEIGHBOR6) travel in
        // messages of their own, so only the order between kinds differs.
        assert_eq!(decoded.len(), all.len());
        assert!(all.iter().all(|l| decoded.contains(l)));
        let first_kinds = |v: &[Learning]| -> Vec<Learning> {
            v.iter()
                .filter(|l| {
                    !matches!(
                        l,
                        Learning::Arp {
                            ip: IpAddr::V6(_),
                            ..
                        }
                    )
                })
                .cloned()
                .collect()
        };
        assert_eq!(first_kinds(&decoded), first_kinds(&all));
    }

    #[test]
    fn sync_requests_are_recognised_and_carry_no_learning() {
        let request = sync_request();
        assert!(is_sync_request(&request));
        assert_eq!(decode(&request), Some(vec![]));
        let mut w = StateWriter::default();
        w.push(&Learning::Conn(ConnEntry {
            zone: Uuid::new_v4(),
            orig: key(1),
            reply: key(1).reversed(),
            flags: 0,
        }));
        assert!(!is_sync_request(&w.messages()[0]));
        assert!(!is_sync_request(&request[..HEADER]));
    }

    #[test]
    fn decoding_is_total() {
        let mut w = StateWriter::default();
        w.push(&Learning::Arp {
            router: Uuid::new_v4(),
            ip: IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
            mac: [2; 6],
        });
        let m = &w.messages()[0];
        for cut in 0..m.len() {
            let _ = decode(&m[..cut]);
        }
        assert_eq!(decode(&m[..m.len() - 1]), Some(vec![]));
        assert_eq!(decode(b"not a state message at all"), None);
        let mut bad = m.clone();
        bad[HEADER] = 99;
        assert_eq!(decode(&bad), Some(vec![]));
    }

    #[test]
    fn an_empty_message_is_a_state_message_with_nothing_in_it() {
        let empty = empty_message();
        assert_eq!(decode(&empty), Some(Vec::new()));
        assert!(!is_sync_request(&empty));
    }

    #[test]
    fn an_agent_that_knows_only_the_first_kinds_still_reads_them_all() {
        let router = Uuid::from_u128(7);
        let mut writer = StateWriter::default();
        for n in 0..40u8 {
            writer.push(&Learning::Arp {
                router,
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
                mac: [2, 0, 0, 0, 0, n],
            });
            writer.push(&Learning::Arp {
                router,
                ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n))),
                mac: [2, 0, 0, 0, 1, n],
            });
        }
        // An older agent's decoder: stops at the first kind it does not know.
        let older = |frame: &[u8]| -> usize {
            let mut rest = &frame[HEADER..];
            let mut read = 0;
            while let Some((&kind, tail)) = rest.split_first() {
                if kind >= NEIGHBOR6 {
                    break;
                }
                let len = body_len(kind).unwrap();
                rest = &tail[len..];
                read += 1;
            }
            read
        };
        let read: usize = writer.messages().iter().map(|m| older(m)).sum();
        assert_eq!(read, 40, "every IPv4 record reaches the older agent");
        // And this agent reads everything.
        let all: usize = writer
            .messages()
            .iter()
            .map(|m| decode(m).unwrap().len())
            .sum();
        assert_eq!(all, 80);
        assert!(writer.messages().iter().all(|m| m.len() <= MAX_LEN));
    }
}
