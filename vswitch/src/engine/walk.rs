//! The walk of one frame through the virtual topology.
//!
//! At every device the packet passes the same pipeline:
//!
//! 1. connection tracking (devices with stateful or NAT rules): the
//!    packet's state, and for a tracked, translated connection the
//!    destination half of its translation (before routing);
//! 2. the ingress port's inbound chain, then the device's inbound chain;
//! 3. the device itself (bridge or router) decides the egress ports;
//! 4. per egress port: the device's outbound chain, then the port's
//!    outbound chain; then the source half of a tracked connection's
//!    translation, and a new connection is committed;
//! 5. an interior port hands the packet to its peer's device, an exterior
//!    port ends the walk with an output.
//!
//! Frames the devices generate (ARP and ICMP replies, rejects) go through
//! connection tracking and NAT like any packet but skip the chains: they
//! answer a packet that policy already judged.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use nsdb::RuleAction;
use uuid::Uuid;

use super::chain::{self, MatchContext, Outcome, Tracked};
use super::packet::{Fragment, Ipv6Info, PacketInfo, L3};
use super::rewrite::{rewritten, EntryFrame};
use super::{
    bridge, frames, nat, router, Decision, DropReason, Generated, Learned, Learning, Output,
    Rewrite, Simulation, Tag, Walk, MAX_DEVICES_TRAVERSED,
};
use crate::conntrack::{ConnEntry, ConnKey, Direction};
use crate::snapshot::{Device, Mac, PortInfo, Topology};
use crate::wire;

/// A frame arriving at a port, with what happened to it so far.
#[derive(Debug, Clone)]
struct Arrival {
    port: Uuid,
    /// Rewrites to apply to `bytes` (or to the ingress frame).
    rewrite: Rewrite,
    /// Whole bytes when the frame is not the ingress frame: one a device
    /// generated, or one the engine had to rewrite itself.
    bytes: Option<Vec<u8>>,
    /// A device generated it: no port security, no chains, not committed.
    generated: bool,
    /// The devices passed so far.
    traversed: Vec<Uuid>,
}

/// A packet at one device.
#[derive(Debug, Clone)]
struct Here {
    packet: PacketInfo,
    rewrite: Rewrite,
    bytes: Option<Vec<u8>>,
    tracked: Tracked,
    /// The tracked connection the packet belongs to.
    conn: Option<(Direction, ConnEntry)>,
    /// A new connection's key as it entered the device.
    new_key: Option<ConnKey>,
    snat_done: bool,
    dnat_done: bool,
}

impl Here {
    fn key(&self) -> Option<ConnKey> {
        self.packet.conn_key()
    }

    /// Applies a further rewrite to the packet as it stands.
    fn apply(&mut self, delta: Rewrite) {
        self.packet = self.packet.with_rewrite(&delta);
        self.rewrite = self.rewrite.then(delta);
    }
}

/// Why a filter stopped a packet.
enum Stop {
    Drop,
    Reject,
    Exhausted,
}

/// The walk's state.
struct Run<'a, L: Learned + ?Sized> {
    topo: &'a Topology,
    learned: &'a L,
    frame: &'a [u8],
    sim: Simulation,
    pending: Vec<Arrival>,
    committed: HashSet<(Uuid, ConnKey)>,
}

/// See [`super::simulate`].
pub(crate) fn run<L: Learned + ?Sized>(
    topo: &Topology,
    learned: &L,
    ingress: Uuid,
    frame: &[u8],
) -> Simulation {
    let mut run = Run {
        topo,
        learned,
        frame,
        sim: Simulation::default(),
        pending: vec![Arrival {
            port: ingress,
            rewrite: Rewrite::default(),
            bytes: None,
            generated: false,
            traversed: Vec::new(),
        }],
        committed: HashSet::new(),
    };
    let mut hops = 0;
    while let Some(arrival) = run.pending.pop() {
        hops += 1;
        if hops > MAX_DEVICES_TRAVERSED {
            run.sim.drop(None, DropReason::TooManyDevices);
            break;
        }
        run.visit(arrival);
    }
    run.sim
}

fn chains_of(topo: &Topology, device: Device) -> (Option<Uuid>, Option<Uuid>) {
    match device {
        Device::Bridge(id) => topo.bridges.get(&id).map(|b| b.chains),
        Device::Router(id) => topo.routers.get(&id).map(|r| r.chains),
    }
    .unwrap_or((None, None))
}

fn device_id(device: Device) -> (Uuid, &'static str) {
    match device {
        Device::Bridge(id) => (id, "bridge"),
        Device::Router(id) => (id, "router"),
    }
}

impl<L: Learned + ?Sized> Run<'_, L> {
    fn visit(&mut self, arrival: Arrival) {
        let topo = self.topo;
        let bytes = arrival.bytes.as_deref().unwrap_or(self.frame);
        let packet = match PacketInfo::parse(bytes) {
            Ok(packet) => packet.with_rewrite(&arrival.rewrite),
            Err(error) => {
                self.sim.drop(None, DropReason::Malformed(error));
                return;
            }
        };
        let Some(port) = topo.ports.get(&arrival.port) else {
            self.sim.drop(None, DropReason::UnknownPort);
            return;
        };
        self.sim.tag(Tag::Port(port.id));
        let device = port.device;
        let (zone, kind) = device_id(device);
        self.sim.tag(Tag::Device(zone));
        self.sim.step(
            Some(device),
            Some(port.id),
            "ingress",
            format!("{kind} {zone} in port {}", port.id),
        );
        if !arrival.generated && port.peer.is_none() {
            if let Some(violation) = spoofing(port, &packet) {
                self.sim
                    .step(Some(device), Some(port.id), "port_security", violation);
                self.sim.drop(Some(device), DropReason::Spoofed);
                return;
            }
        }
        let mut traversed = arrival.traversed.clone();
        traversed.push(zone);
        let entry = EntryFrame {
            bytes,
            rewrite: arrival.rewrite,
        };
        let entry_packet = packet;
        let mut here = Here {
            packet,
            rewrite: arrival.rewrite,
            bytes: arrival.bytes.clone(),
            tracked: Tracked::No,
            conn: None,
            new_key: None,
            snat_done: false,
            dnat_done: false,
        };
        if !self.track_in(device, &mut here) {
            return;
        }
        let (device_in, device_out) = chains_of(topo, device);
        if !arrival.generated {
            let stages = [
                (port.chains.0, format!("port {} inbound", port.id)),
                (device_in, format!("{kind} inbound")),
            ];
            if let Err(stop) = self.filter(device, port.id, None, &traversed, &stages, &mut here) {
                self.stopped(stop, device, port, &entry_packet, &entry, &traversed);
                return;
            }
        }
        let decision = {
            let mut walk = Walk {
                topo,
                learned: self.learned,
                sim: &mut self.sim,
            };
            match device {
                Device::Bridge(id) => bridge::process(&mut walk, id, port, &here.packet),
                Device::Router(id) => router::process(&mut walk, id, port, &here.packet, &entry),
            }
        };
        match decision {
            Decision::Drop(reason) => self.sim.drop(Some(device), reason),
            Decision::Emit(out, frame) => self.leave(
                device,
                out,
                Rewrite::default(),
                Some(frame),
                true,
                &traversed,
            ),
            Decision::Forward(outs) => {
                for (out, rewrite) in outs {
                    let mut branch = here.clone();
                    branch.apply(rewrite);
                    if !arrival.generated {
                        let stages = [
                            (device_out, format!("{kind} outbound")),
                            (
                                topo.ports.get(&out).and_then(|p| p.chains.1),
                                format!("port {out} outbound"),
                            ),
                        ];
                        if let Err(stop) = self.filter(
                            device,
                            port.id,
                            Some(out),
                            &traversed,
                            &stages,
                            &mut branch,
                        ) {
                            self.stopped(stop, device, port, &entry_packet, &entry, &traversed);
                            continue;
                        }
                    }
                    self.track_out(device, &mut branch, arrival.generated);
                    self.leave(
                        device,
                        out,
                        branch.rewrite,
                        branch.bytes,
                        arrival.generated,
                        &traversed,
                    );
                }
            }
        }
    }

    /// The tracked connection `key` belongs to in `zone`: one committed
    /// earlier in this walk (an ICMP error a device generated about the
    /// packet being walked), or one learned before.
    fn conn(&self, zone: Uuid, key: &ConnKey) -> Option<(Direction, ConnEntry)> {
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
    fn track_in(&mut self, device: Device, here: &mut Here) -> bool {
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
                    "conntrack",
                    format!("later fragment {} of its datagram's connection", key.id),
                );
                true
            }
            None => {
                self.sim.step(
                    Some(device),
                    None,
                    "conntrack",
                    format!("later fragment {} before its first: held", key.id),
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
                    "conntrack",
                    format!("ICMP error about untracked {quoted}"),
                );
                return;
            };
            here.tracked = Tracked::Related(direction);
            self.sim.step(
                Some(device),
                None,
                "conntrack",
                format!("related: ICMP error about {} ({direction:?})", conn.orig),
            );
            if let (true, Some(ip)) = (conn.is_translated(), here.packet.ipv4().copied()) {
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
                self.sim
                    .step(Some(device), None, "conntrack", format!("new {key}"));
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
                    "conntrack",
                    format!("established {}{how}", conn.orig),
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
                        "nat",
                        format!(
                            "dst {}:{} → {}:{} (tracked connection)",
                            key.dst, key.dport, target.dst, target.dport
                        ),
                    );
                    here.apply(delta);
                }
            }
        }
    }

    /// Rewrites an ICMP error about a translated connection, outer header
    /// and quoted datagram, into whole bytes.
    fn translate_error(
        &mut self,
        device: Device,
        here: &mut Here,
        direction: Direction,
        conn: &ConnEntry,
        outer_src: Ipv4Addr,
        outer_dst: Ipv4Addr,
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
                    "nat",
                    format!(
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
                "nat",
                "ICMP error could not be translated; passed as it is".into(),
            ),
        }
    }

    /// Connection tracking on exit: the source half of a tracked
    /// connection's translation, and the commit of a new connection.
    fn track_out(&mut self, device: Device, branch: &mut Here, generated: bool) {
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
                        "nat",
                        format!(
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

    /// Runs the chains of `stages` in order; NAT rules translate `here`.
    fn filter(
        &mut self,
        device: Device,
        in_port: Uuid,
        out_port: Option<Uuid>,
        traversed: &[Uuid],
        stages: &[(Option<Uuid>, String)],
        here: &mut Here,
    ) -> Result<(), Stop> {
        let topo = self.topo;
        for (chain, what) in stages {
            let Some(chain) = chain else { continue };
            let context = MatchContext {
                in_port,
                out_port,
                traversed,
                tracked: here.tracked,
            };
            let rule = match chain::evaluate(
                topo,
                &mut self.sim,
                device,
                *chain,
                what,
                &here.packet,
                &context,
            ) {
                Outcome::Fallthrough => continue,
                Outcome::Decided(rule) => rule,
            };
            match rule.action {
                RuleAction::Drop => return Err(Stop::Drop),
                RuleAction::Reject => return Err(Stop::Reject),
                action if action.is_nat() => self.nat(device, rule, out_port, here)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies a NAT rule to a new connection.
    fn nat(
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
                "nat",
                "not a new connection: its translation stays as tracked".into(),
            );
            return Ok(());
        };
        if (is_dnat && here.dnat_done) || (!is_dnat && here.snat_done) {
            self.sim.step(
                Some(device),
                None,
                "nat",
                "already translated at this device".into(),
            );
            return Ok(());
        }
        let masquerade_address = out_port
            .and_then(|p| self.topo.ports.get(&p))
            .and_then(|p| p.address)
            .map(|a| a.addr());
        match nat::choose(self.learned, zone, rule, key, masquerade_address) {
            Ok(Some(new)) => {
                let delta = Rewrite {
                    ip_src: nat::changed(key.src, new.src),
                    ip_dst: nat::changed(key.dst, new.dst),
                    src_port: (new.sport != key.sport).then_some(new.sport),
                    dst_port: (new.dport != key.dport && key.proto != 1).then_some(new.dport),
                    ..Rewrite::default()
                };
                let word = format!("{:?}", rule.action).to_lowercase();
                self.sim
                    .step(Some(device), None, "nat", format!("{word} {key} → {new}"));
                here.apply(delta);
                if is_dnat {
                    here.dnat_done = true;
                } else {
                    here.snat_done = true;
                }
                Ok(())
            }
            Ok(None) => {
                self.sim.step(
                    Some(device),
                    None,
                    "nat",
                    "masquerade needs an egress port with an address: not translated".into(),
                );
                Ok(())
            }
            Err(nat::Exhausted) => {
                self.sim.step(
                    Some(device),
                    None,
                    "nat",
                    format!("no free address and port for {key}"),
                );
                Err(Stop::Exhausted)
            }
        }
    }

    /// A filter stopped the packet: drop it, or reject it back out of the
    /// port it entered the device by.
    fn stopped(
        &mut self,
        stop: Stop,
        device: Device,
        port: &PortInfo,
        entry_packet: &PacketInfo,
        entry: &EntryFrame,
        traversed: &[Uuid],
    ) {
        match stop {
            Stop::Drop => self.sim.drop(Some(device), DropReason::RuleDrop),
            Stop::Exhausted => self.sim.drop(Some(device), DropReason::NatExhausted),
            Stop::Reject => {
                self.sim.drops.push(DropReason::RuleReject);
                let icmp_source = match (device, port.address) {
                    (Device::Router(_), Some(address)) => Some(address.addr()),
                    _ => entry_packet.ipv4().map(|ip| ip.dst),
                };
                let answer =
                    icmp_source.and_then(|src| frames::reject(entry_packet, &entry.current(), src));
                match answer {
                    Some(frame) => {
                        self.sim.step(
                            Some(device),
                            Some(port.id),
                            "reject",
                            match entry_packet.l3 {
                                L3::Ipv4(ip) if ip.proto == 6 => "TCP RST to the sender".into(),
                                _ => "ICMP port unreachable to the sender".into(),
                            },
                        );
                        self.leave(
                            device,
                            port.id,
                            Rewrite::default(),
                            Some(frame),
                            true,
                            traversed,
                        );
                    }
                    None => self.sim.step(
                        Some(device),
                        Some(port.id),
                        "reject",
                        "nothing can be sent back for this packet: dropped".into(),
                    ),
                }
            }
        }
    }

    /// The packet leaves `device` by `port`: to the peer's device, or out
    /// of the virtual network.
    fn leave(
        &mut self,
        device: Device,
        port: Uuid,
        rewrite: Rewrite,
        bytes: Option<Vec<u8>>,
        generated: bool,
        traversed: &[Uuid],
    ) {
        let Some(info) = self.topo.ports.get(&port) else {
            return;
        };
        self.sim.tag(Tag::Port(port));
        if let Some(peer) = info.peer {
            if !self.topo.ports.contains_key(&peer) {
                self.sim.drop(Some(device), DropReason::DanglingLink);
                return;
            }
            self.sim.step(
                Some(device),
                Some(port),
                "egress",
                format!("out port {port} to linked port {peer}"),
            );
            self.pending.push(Arrival {
                port: peer,
                rewrite,
                bytes,
                generated,
                traversed: traversed.to_vec(),
            });
            return;
        }
        let Some(host) = info.host else {
            self.sim.drop(Some(device), DropReason::Unbound);
            return;
        };
        let egress = super::Egress {
            host: Some(host),
            port,
        };
        self.sim.step(
            Some(device),
            Some(port),
            "output",
            format!("out port {port} on host {host}"),
        );
        match bytes {
            Some(frame) => match rewritten(&frame, &rewrite) {
                Some(frame) => self.sim.generated.push(Generated { egress, frame }),
                None => self.sim.drop(
                    Some(device),
                    DropReason::Unsupported("frame cannot take its rewrite"),
                ),
            },
            None => self.sim.outputs.push(Output { egress, rewrite }),
        }
    }
}

/// Anti-spoofing at an exterior port with allowed addresses: the source MAC
/// must be allowed, and the IP source (IPv4 or IPv6), an ARP sender address
/// or an NDP advertisement's target must be allowed together with that MAC.
/// `None` when the frame is fine.
fn spoofing(port: &PortInfo, packet: &PacketInfo) -> Option<String> {
    if port.allowed.is_empty() {
        return None;
    }
    let mac = packet.eth_src;
    if !port.allowed.iter().any(|(allowed, _)| *allowed == mac) {
        return Some(format!(
            "source MAC {} is not allowed on this port",
            bridge::fmt_mac(&mac)
        ));
    }
    let claimed = match &packet.l3 {
        L3::Ipv4(ip) => Some(IpAddr::V4(ip.src)),
        // An ARP probe (sender 0.0.0.0) claims nothing.
        L3::Arp(arp) if !arp.sender_ip.is_unspecified() => {
            if arp.sender_mac != mac {
                return Some(format!(
                    "ARP sender MAC {} differs from the frame's",
                    bridge::fmt_mac(&arp.sender_mac)
                ));
            }
            Some(IpAddr::V4(arp.sender_ip))
        }
        L3::Ipv6(ip) => return ipv6_spoofing(port, mac, ip),
        _ => None,
    };
    match claimed {
        Some(ip) if !owns(port, mac, ip) => Some(format!(
            "source address {ip} is not allowed with MAC {}",
            bridge::fmt_mac(&mac)
        )),
        _ => None,
    }
}

/// Whether `port` may use `ip` with `mac`: one of its allowed addresses, or
/// for IPv6 the link-local address derived from the allowed MAC.
fn owns(port: &PortInfo, mac: Mac, ip: IpAddr) -> bool {
    if let IpAddr::V6(v6) = ip {
        if v6 == wire::link_local_from_mac(mac) {
            return true;
        }
    }
    port.allowed
        .iter()
        .any(|(m, net)| *m == mac && net.contains(&ip))
}

/// Port security for IPv6: the source must be owned (the unspecified
/// source only for duplicate-address probes and listener reports); an NDP
/// message's link-layer option must be the frame's MAC and an
/// advertisement's target must be owned; router advertisements and
/// redirects are a router's to send, never a port's.
fn ipv6_spoofing(port: &PortInfo, mac: Mac, ip: &Ipv6Info) -> Option<String> {
    let icmp_type = ip.icmp.map(|(_, (t, _))| t);
    if ip.src.is_unspecified() {
        // Neighbor solicitations (DAD) and listener reports may come from ::.
        return match icmp_type {
            Some(135 | 131 | 143) if ip.proto == 58 => None,
            _ => Some("unspecified source :: outside duplicate-address detection".into()),
        };
    }
    if !owns(port, mac, IpAddr::V6(ip.src)) {
        return Some(format!(
            "source address {} is not allowed with MAC {}",
            ip.src,
            bridge::fmt_mac(&mac)
        ));
    }
    if matches!(icmp_type, Some(134 | 137)) && ip.proto == 58 {
        return Some("router advertisements and redirects are not allowed from a port".into());
    }
    let nd = ip.nd?;
    if let Some(link) = nd.link_addr.filter(|link| *link != mac) {
        return Some(format!(
            "NDP link-layer address {} differs from the frame's",
            bridge::fmt_mac(&link)
        ));
    }
    match nd.target {
        Some(target) if nd.msg_type == 136 && !owns(port, mac, IpAddr::V6(target)) => {
            Some(format!(
                "neighbor advertisement for {target}, which is not allowed with MAC {}",
                bridge::fmt_mac(&mac)
            ))
        }
        _ => None,
    }
}
