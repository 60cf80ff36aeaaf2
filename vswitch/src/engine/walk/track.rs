//! Connection tracking and NAT within the walk: a packet's state where it
//! enters a tracking device (fragments included), the translation of
//! tracked connections and of ICMP errors about them, new connections'
//! commits, and NAT rules choosing translations for new connections.

use crate::engine::Stage;
use std::net::IpAddr;

use nsdb::RuleAction;
use uuid::Uuid;

use super::{device_id, Here, Run, Stop};
use crate::conntrack::{ConnEntry, ConnKey, Direction};
use crate::engine::chain::Tracked;
use crate::engine::packet::{Fragment, PacketInfo};
use crate::engine::rewrite::rewritten;
use crate::engine::{nat, DropReason, Learned, Learning, Rewrite, Tag};
use crate::snapshot::Device;
use crate::wire;

impl<L: Learned + ?Sized> Run<'_, L> {
    /// The tracked connection `key` belongs to in `zone`: one committed
    /// earlier in this walk (an ICMP error a device generated about the
    /// packet being walked), or one learned before.
    pub(super) fn conn(&self, zone: Uuid, key: &ConnKey) -> Option<(Direction, ConnEntry)> {
        let committed = self.sim.learned.iter().find_map(|learning| match learning {
            Learning::Conn(entry) if entry.zone == zone && entry.orig == *key => {
                Some((Direction::Original, *entry))
            }
            Learning::Conn(entry) if entry.zone == zone && entry.reply == *key => {
                Some((Direction::Reply, *entry))
            }
            _ => None,
        });
        committed.or_else(|| self.learned.conn(zone, key))
    }

    /// Connection tracking on entry: the state, and the destination half of
    /// a tracked connection's translation. False when the packet must wait
    /// (a later fragment ahead of its first).
    pub(super) fn track_in(&mut self, device: Device, here: &mut Here) -> bool {
        let (zone, _) = device_id(device);
        if !self.topo.stateful.contains(&zone) || here.packet.ip().is_none() {
            return true;
        }
        if !self.track_fragment(device, here) {
            return false;
        }
        self.track_packet(device, here);
        true
    }

    /// Fragments at a tracking zone: a first fragment records its ports for
    /// the rest; a later one takes them (so it is tracked and translated
    /// with its datagram, never let out untranslated) or waits for them.
    fn track_fragment(&mut self, device: Device, here: &mut Here) -> bool {
        let (zone, _) = device_id(device);
        let Some(key) = here.packet.fragment_key() else {
            return true;
        };
        let fragment = here.packet.ip().map(|ip| ip.fragment);
        if fragment == Some(Fragment::First) {
            if let Some(conn) = here.packet.conn_key() {
                self.sim.learned.push(Learning::Fragment {
                    zone,
                    key,
                    ports: (conn.sport, conn.dport),
                });
            }
            return true;
        }
        let recorded = self.sim.learned.iter().find_map(|l| match l {
            Learning::Fragment {
                zone: z,
                key: k,
                ports,
            } if *z == zone && *k == key => Some(*ports),
            _ => None,
        });
        match recorded.or_else(|| self.learned.fragment_ports(zone, &key)) {
            Some(ports) => {
                here.packet = here.packet.with_fragment_ports(ports);
                self.sim.step(
                    Some(device),
                    None,
                    Stage::Conntrack,
                    format_args!("later fragment {} of its datagram's connection", key.id),
                );
                true
            }
            None => {
                self.sim.step(
                    Some(device),
                    None,
                    Stage::Conntrack,
                    format_args!("later fragment {} before its first: held", key.id),
                );
                self.sim.held_fragment = Some((zone, key));
                self.sim.drop(Some(device), DropReason::FragmentPending);
                false
            }
        }
    }

    /// Tracks an IP packet (its connection known) at its zone.
    fn track_packet(&mut self, device: Device, here: &mut Here) {
        let (zone, _) = device_id(device);
        if let Some(quoted) = here.packet.icmp_quoted() {
            let probe = quoted.reversed();
            self.sim.tag(Tag::Conn(zone, probe));
            let Some((direction, conn)) = self.conn(zone, &probe) else {
                here.tracked = Tracked::New;
                self.sim.step(
                    Some(device),
                    None,
                    Stage::Conntrack,
                    format_args!("ICMP error about untracked {quoted}"),
                );
                return;
            };
            here.tracked = Tracked::Related(direction);
            self.sim.step(
                Some(device),
                None,
                Stage::Conntrack,
                format_args!("related: ICMP error about {} ({direction:?})", conn.orig),
            );
            if let (true, Some(ip)) = (conn.is_translated(), here.packet.ip()) {
                self.translate_error(device, here, direction, &conn, ip.src, ip.dst);
            }
            return;
        }
        let Some(key) = here.packet.conn_key() else {
            return;
        };
        let tcp_flags = here.packet.tcp_flags();
        self.sim.tag(Tag::Conn(zone, key));
        match self.conn(zone, &key) {
            None => {
                here.tracked = Tracked::New;
                here.new_key = Some(key);
                self.sim.step(
                    Some(device),
                    None,
                    Stage::Conntrack,
                    format_args!("new {key}"),
                );
            }
            Some((direction, conn)) => {
                here.tracked = Tracked::Established(direction);
                here.conn = Some((direction, conn));
                if conn.flags_after(direction, tcp_flags) != conn.flags {
                    self.sim.learned.push(Learning::ConnSeen {
                        zone,
                        key,
                        tcp_flags,
                    });
                }
                let how = match direction {
                    Direction::Original => "",
                    Direction::Reply => " (reply direction)",
                };
                self.sim.step(
                    Some(device),
                    None,
                    Stage::Conntrack,
                    format_args!("established {}{how}", conn.orig),
                );
                let target = conn.translate(direction);
                let delta = Rewrite {
                    ip_dst: nat::changed(key.dst, target.dst),
                    dst_port: (target.dport != key.dport).then_some(target.dport),
                    ..Rewrite::default()
                };
                if !delta.is_identity() {
                    self.sim.step(
                        Some(device),
                        None,
                        Stage::Nat,
                        format_args!(
                            "dst {}:{} → {}:{} (tracked connection)",
                            key.dst, key.dport, target.dst, target.dport
                        ),
                    );
                    here.apply(delta);
                }
            }
        }
    }

    /// Rewrites an ICMP or ICMPv6 error about a translated connection,
    /// outer header and quoted datagram, into whole bytes.
    fn translate_error(
        &mut self,
        device: Device,
        here: &mut Here,
        direction: Direction,
        conn: &ConnEntry,
        outer_src: IpAddr,
        outer_dst: IpAddr,
    ) {
        let (src, dst, inner) = nat::related(direction, conn, outer_src, outer_dst);
        let current = here.bytes.as_deref().unwrap_or(self.frame);
        let translated = rewritten(current, &here.rewrite).and_then(|mut bytes| {
            let l3 = usize::from(wire::parse_frame(&bytes).ok()?.l3_offset);
            wire::nat_icmp_error(bytes.get_mut(l3..)?, src, dst, &inner).ok()?;
            let packet = PacketInfo::parse(&bytes).ok()?;
            Some((bytes, packet))
        });
        match translated {
            Some((bytes, packet)) => {
                self.sim.step(
                    Some(device),
                    None,
                    Stage::Nat,
                    format_args!(
                        "ICMP error translated: to {} about {}",
                        dst.unwrap_or(outer_dst),
                        conn.orig
                    ),
                );
                here.bytes = Some(bytes);
                here.rewrite = Rewrite::default();
                here.packet = packet;
            }
            None => self.sim.step(
                Some(device),
                None,
                Stage::Nat,
                "ICMP error could not be translated; passed as it is",
            ),
        }
    }

    /// Connection tracking on exit: the source half of a tracked
    /// connection's translation, and the commit of a new connection.
    pub(super) fn track_out(&mut self, device: Device, branch: &mut Here, generated: bool) {
        let (zone, _) = device_id(device);
        match (branch.tracked, branch.conn, branch.key()) {
            (Tracked::Established(_), Some((direction, conn)), Some(key)) => {
                let target = conn.translate(direction);
                let delta = Rewrite {
                    ip_src: nat::changed(key.src, target.src),
                    src_port: (target.sport != key.sport).then_some(target.sport),
                    ..Rewrite::default()
                };
                if !delta.is_identity() {
                    self.sim.step(
                        Some(device),
                        None,
                        Stage::Nat,
                        format_args!(
                            "src {}:{} → {}:{} (tracked connection)",
                            key.src, key.sport, target.src, target.sport
                        ),
                    );
                    branch.apply(delta);
                }
            }
            (Tracked::New, _, Some(now)) if !generated => {
                let Some(orig) = branch.new_key else { return };
                if self.committed.insert((zone, orig)) {
                    self.sim.learned.push(Learning::Conn(ConnEntry {
                        zone,
                        orig,
                        reply: now.reversed(),
                        flags: 0,
                    }));
                }
            }
            _ => {}
        }
    }

    /// Applies a NAT rule to a new connection.
    pub(super) fn nat(
        &mut self,
        device: Device,
        rule: &nsdb::Rule,
        out_port: Option<Uuid>,
        here: &mut Here,
    ) -> Result<(), Stop> {
        let (zone, _) = device_id(device);
        let is_dnat = rule.action == RuleAction::Dnat;
        let (Tracked::New, Some(key)) = (here.tracked, here.key()) else {
            self.sim.step(
                Some(device),
                None,
                Stage::Nat,
                "not a new connection: its translation stays as tracked",
            );
            return Ok(());
        };
        if (is_dnat && here.dnat_done) || (!is_dnat && here.snat_done) {
            self.sim.step(
                Some(device),
                None,
                Stage::Nat,
                "already translated at this device",
            );
            return Ok(());
        }
        let masquerade_address = out_port
            .and_then(|p| self.topo.ports.get(&p))
            .and_then(|p| match key.dst {
                IpAddr::V4(_) => p.address.map(|a| IpAddr::V4(a.addr())),
                IpAddr::V6(dst) => p.masquerade_ipv6_for(&dst).map(IpAddr::V6),
            });
        match nat::choose(self.learned, zone, rule, key, masquerade_address) {
            Ok(new) => {
                let delta = Rewrite {
                    ip_src: nat::changed(key.src, new.src),
                    ip_dst: nat::changed(key.dst, new.dst),
                    src_port: (new.sport != key.sport).then_some(new.sport),
                    dst_port: (new.dport != key.dport && !nat::is_icmp(key.proto))
                        .then_some(new.dport),
                    ..Rewrite::default()
                };
                let word = super::chain::action_word(rule.action);
                self.sim.step(
                    Some(device),
                    None,
                    Stage::Nat,
                    format_args!("{word} {key} → {new}"),
                );
                here.apply(delta);
                if is_dnat {
                    here.dnat_done = true;
                } else {
                    here.snat_done = true;
                }
                Ok(())
            }
            Err(nat::Untranslated::Exhausted) => {
                self.sim.step(
                    Some(device),
                    None,
                    Stage::Nat,
                    format_args!("no free address and port for {key}"),
                );
                Err(Stop::Exhausted)
            }
            Err(why) => {
                self.sim
                    .step(Some(device), None, Stage::Nat, format_args!("{why}"));
                Ok(())
            }
        }
    }
}
