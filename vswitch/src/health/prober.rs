//! The probes one agent runs: when each member is probed next, the probe
//! in flight, and the consecutive results that move a member up or down.
//!
//! Sans-IO: the agent's task feeds it the clock, the targets and the
//! segments that come back, and sends what it returns.

use std::collections::HashMap;

use nsdb::MemberHealth;
use uuid::Uuid;

use super::session::{Check, Endpoints, Outcome, Session};
use crate::engine::PROBE_PORTS;

/// A member this agent probes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The member.
    pub member: Uuid,
    /// The router port the probes enter by.
    pub ingress: Uuid,
    /// Addresses (the source port is chosen per probe).
    pub ends: Endpoints,
    /// What a probe checks.
    pub check: Check,
    /// Milliseconds between probes.
    pub interval_ms: u64,
    /// Milliseconds a probe may take.
    pub timeout_ms: u64,
    /// Consecutive failures before down.
    pub failures_to_down: u8,
    /// Consecutive successes before a down member is up.
    pub successes_to_up: u8,
    /// The health the NSDB holds for it.
    pub health: MemberHealth,
}

#[derive(Debug)]
struct Probed {
    target: Target,
    next_at: u64,
    in_flight: Option<(Session, u64)>,
    failures: u8,
    successes: u8,
    health: MemberHealth,
}

/// What to do after feeding the prober.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Frames to inject: (router port, frame entering by it).
    pub frames: Vec<(Uuid, Vec<u8>)>,
    /// Members whose health changed, with the new health and why.
    pub changes: Vec<(Uuid, MemberHealth, String)>,
}

/// The probes of one agent.
#[derive(Debug, Default)]
pub struct Prober {
    probed: HashMap<Uuid, Probed>,
    next_port: u16,
    next_isn: u32,
}

impl Prober {
    /// Probes exactly `targets` from now on: new ones start at once,
    /// changed ones keep their counts, gone ones stop.
    pub fn set_targets(&mut self, targets: Vec<Target>, now_ms: u64) {
        let mut kept = HashMap::new();
        for target in targets {
            let entry = match self.probed.remove(&target.member) {
                Some(mut old) if old.target.ends.dst == target.ends.dst => {
                    if old.target.health != target.health {
                        // The NSDB's word (another agent, an operator) wins.
                        old.health = target.health;
                    }
                    old.target = target;
                    old
                }
                _ => Probed {
                    health: target.health,
                    target,
                    next_at: now_ms,
                    in_flight: None,
                    failures: 0,
                    successes: 0,
                },
            };
            kept.insert(entry.target.member, entry);
        }
        self.probed = kept;
    }

    /// How many members are probed.
    pub fn len(&self) -> usize {
        self.probed.len()
    }

    /// Whether no member is probed.
    pub fn is_empty(&self) -> bool {
        self.probed.is_empty()
    }

    fn sport(&mut self) -> u16 {
        let span = PROBE_PORTS.end() - PROBE_PORTS.start() + 1;
        let port = PROBE_PORTS.start() + self.next_port % span;
        self.next_port = self.next_port.wrapping_add(1) % span;
        port
    }

    /// Starts the probes that are due and ends those that timed out.
    pub fn poll(&mut self, now_ms: u64) -> Actions {
        let mut actions = Actions::default();
        let due: Vec<Uuid> = self
            .probed
            .values()
            .filter(|p| p.in_flight.is_none() && p.next_at <= now_ms)
            .map(|p| p.target.member)
            .collect();
        let timed_out: Vec<Uuid> = self
            .probed
            .values()
            .filter(|p| {
                p.in_flight
                    .as_ref()
                    .is_some_and(|(_, started)| now_ms >= started + p.target.timeout_ms)
            })
            .map(|p| p.target.member)
            .collect();
        for member in timed_out {
            let Some(probed) = self.probed.get_mut(&member) else {
                continue;
            };
            if let Some((session, _)) = probed.in_flight.take() {
                actions
                    .frames
                    .push((probed.target.ingress, session.abort()));
            }
            let why = format!("no answer within {} ms", probed.target.timeout_ms);
            record(probed, Outcome::Failed(why), &mut actions);
        }
        for member in due {
            let sport = self.sport();
            self.next_isn = self.next_isn.wrapping_add(0x0001_0001).wrapping_mul(31);
            let isn = self.next_isn;
            let Some(probed) = self.probed.get_mut(&member) else {
                continue;
            };
            let ends = Endpoints {
                sport,
                ..probed.target.ends
            };
            let (session, syn) = Session::start(ends, probed.target.check.clone(), isn);
            actions.frames.push((probed.target.ingress, syn));
            probed.in_flight = Some((session, now_ms));
            probed.next_at = now_ms + probed.target.interval_ms;
        }
        actions
    }

    /// Takes a segment a router handed to the agent.
    pub fn receive(&mut self, frame: &[u8]) -> Actions {
        let mut actions = Actions::default();
        let owner = self.probed.values_mut().find(|p| {
            p.in_flight
                .as_ref()
                .is_some_and(|(session, _)| session.owns(frame))
        });
        let Some(probed) = owner else {
            return actions;
        };
        let Some((session, _)) = probed.in_flight.as_mut() else {
            return actions;
        };
        let (frames, outcome) = session.receive(frame);
        let ingress = probed.target.ingress;
        actions
            .frames
            .extend(frames.into_iter().map(|f| (ingress, f)));
        if let Some(outcome) = outcome {
            probed.in_flight = None;
            record(probed, outcome, &mut actions);
        }
        actions
    }
}

/// Counts a probe's outcome; a member changes health after enough of one
/// kind in a row (an unprobed member is up at its first success).
fn record(probed: &mut Probed, outcome: Outcome, actions: &mut Actions) {
    let target = &probed.target;
    match outcome {
        Outcome::Passed => {
            probed.failures = 0;
            probed.successes = probed.successes.saturating_add(1);
            let up = match probed.health {
                MemberHealth::Up => false,
                MemberHealth::Unknown => true,
                MemberHealth::Down => probed.successes >= target.successes_to_up,
            };
            if up {
                probed.health = MemberHealth::Up;
                let why = format!("{} probe(s) passed", probed.successes);
                actions.changes.push((target.member, MemberHealth::Up, why));
            }
        }
        Outcome::Failed(why) => {
            probed.successes = 0;
            probed.failures = probed.failures.saturating_add(1);
            if probed.health != MemberHealth::Down && probed.failures >= target.failures_to_down {
                probed.health = MemberHealth::Down;
                let why = format!("{} probe(s) failed, the last: {why}", probed.failures);
                actions
                    .changes
                    .push((target.member, MemberHealth::Down, why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        emit_ethernet, EtherType, EthernetAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpFlags,
        TcpPacket,
    };

    const MEMBER: Uuid = Uuid::from_u128(7);

    fn target() -> Target {
        Target {
            member: MEMBER,
            ingress: Uuid::from_u128(1),
            ends: Endpoints {
                router_mac: [2, 0, 0, 0, 0, 1],
                src: "10.0.2.1".parse().unwrap(),
                sport: 0,
                dst: "10.0.2.10".parse().unwrap(),
                dport: 8080,
            },
            check: Check::Connect,
            interval_ms: 1000,
            timeout_ms: 500,
            failures_to_down: 2,
            successes_to_up: 2,
            health: MemberHealth::Unknown,
        }
    }

    /// The member's answer to `syn`: SYN-ACK when listening, RST if not.
    fn answer(syn: &[u8], listening: bool) -> Vec<u8> {
        let ip = Ipv4Packet::new_checked(&syn[14..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        let mut buf = vec![0u8; 14 + 20 + 20];
        let repr = Ipv4Repr {
            src_addr: ip.dst_addr(),
            dst_addr: ip.src_addr(),
            protocol: IpProtocol::Tcp,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            payload_len: 20,
        };
        let len = repr.emit(&mut buf[14..]).unwrap();
        let mut out = TcpPacket::new_unchecked(&mut buf[34..]);
        out.set_src_port(tcp.dst_port());
        out.set_dst_port(tcp.src_port());
        out.set_seq_number(9000);
        out.set_ack_number(tcp.seq_number().wrapping_add(1));
        out.set_header_len(20);
        let flags = if listening {
            TcpFlags::SYN
        } else {
            TcpFlags::RST
        };
        out.set_flags(TcpFlags::from_bits(flags.bits() | TcpFlags::ACK.bits()));
        out.fill_checksum(ip.dst_addr(), ip.src_addr());
        emit_ethernet(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 9]),
            EtherType::Ipv4,
            len,
            &mut buf,
        )
        .unwrap();
        buf
    }

    /// Runs one probe at `now` against a member that is or is not listening.
    fn probe(prober: &mut Prober, now: u64, listening: bool) -> Vec<(Uuid, MemberHealth, String)> {
        let sent = prober.poll(now);
        assert_eq!(sent.frames.len(), 1, "one probe is due at {now}");
        let back = prober.receive(&answer(&sent.frames[0].1, listening));
        back.changes
    }

    #[test]
    fn members_go_up_at_once_down_after_failures_and_back_after_successes() {
        let mut prober = Prober::default();
        prober.set_targets(vec![target()], 0);
        let up = probe(&mut prober, 0, true);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].1, MemberHealth::Up);
        assert!(
            prober.poll(999).frames.is_empty(),
            "the next probe waits an interval"
        );
        assert!(
            probe(&mut prober, 1000, false).is_empty(),
            "one failure is not enough"
        );
        let down = probe(&mut prober, 2000, false);
        assert_eq!(down[0].1, MemberHealth::Down);
        assert!(down[0].2.contains("connection refused"), "{down:?}");
        assert!(
            probe(&mut prober, 3000, true).is_empty(),
            "one success is not enough"
        );
        assert_eq!(probe(&mut prober, 4000, true)[0].1, MemberHealth::Up);
    }

    #[test]
    fn unanswered_probes_time_out_and_count_as_failures() {
        let mut prober = Prober::default();
        let mut t = target();
        t.health = MemberHealth::Up;
        prober.set_targets(vec![t], 0);
        assert_eq!(prober.poll(0).frames.len(), 1);
        let timeout = prober.poll(500);
        assert_eq!(timeout.frames.len(), 1, "the probe is reset");
        assert!(timeout.changes.is_empty());
        prober.poll(1000);
        let down = prober.poll(1500);
        assert_eq!(down.changes[0].1, MemberHealth::Down);
        assert!(down.changes[0].2.contains("no answer within 500 ms"));
    }

    #[test]
    fn probes_use_fresh_ports_and_targets_can_go() {
        let mut prober = Prober::default();
        prober.set_targets(vec![target()], 0);
        let first = prober.poll(0);
        prober.set_targets(vec![target()], 0);
        prober.poll(600);
        let second = prober.poll(1000);
        let port = |frames: &Actions| {
            let f = &frames.frames.last().unwrap().1;
            TcpPacket::new_checked(&f[34..]).unwrap().src_port()
        };
        assert_ne!(port(&first), port(&second));
        assert!(PROBE_PORTS.contains(&port(&first)));
        prober.set_targets(Vec::new(), 1000);
        assert!(prober.is_empty());
        assert!(prober.poll(5000).frames.is_empty());
    }
}
