//! The walk of one frame through the virtual topology (connection tracking
//! and NAT in `track`, port security in `port_security`).
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

use crate::engine::Stage;
use std::collections::HashSet;

use nsdb::RuleAction;
use uuid::Uuid;

use super::chain::{self, ChainAt, MatchContext, Outcome, Tracked};
use super::packet::{PacketInfo, L3};
use super::rewrite::{rewritten, EntryFrame};

mod balance;
mod port_security;
mod track;

use super::{
    bridge, frames, frames6, router, Decision, DropReason, Generated, Learned, Output, Rewrite,
    Simulation, Tag, Walk, MAX_DEVICES_TRAVERSED,
};
use crate::conntrack::{ConnEntry, ConnKey, Direction};
use crate::snapshot::{Device, PortInfo, Topology};
use port_security::spoofing;

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
    /// A load balancer translated the packet at this device; its client
    /// came in by this port.
    balanced_from: Option<Uuid>,
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
    /// No load-balancer member can take the connection: rejected.
    NoMember,
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
    steps: super::Steps,
) -> Simulation {
    let mut run = Run {
        topo,
        learned,
        frame,
        sim: Simulation {
            skip_steps: steps == super::Steps::Skip,
            ..Simulation::default()
        },
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
            Stage::Ingress,
            format_args!("{kind} {zone} in port {}", port.id),
        );
        if !arrival.generated && port.peer.is_none() {
            if let Some(violation) = spoofing(port, &packet) {
                self.sim
                    .step(Some(device), Some(port.id), Stage::PortSecurity, violation);
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
            balanced_from: None,
        };
        if !self.track_in(device, &mut here) {
            return;
        }
        let (device_in, device_out) = chains_of(topo, device);
        if !arrival.generated {
            let stages = [
                (port.chains.0, ChainAt::PortIn(port.id)),
                (device_in, ChainAt::DeviceIn(kind)),
            ];
            if let Err(stop) = self.filter(device, port.id, None, &traversed, &stages, &mut here) {
                self.stopped(stop, device, port, &entry_packet, &entry, &traversed);
                return;
            }
            if let Device::Router(router) = device {
                if let Err(stop) = self.balance(router, port.id, &mut here) {
                    self.stopped(stop, device, port, &entry_packet, &entry, &traversed);
                    return;
                }
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
            Decision::Local(frame) => self.sim.local.push(frame),
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
                            (device_out, ChainAt::DeviceOut(kind)),
                            (
                                topo.ports.get(&out).and_then(|p| p.chains.1),
                                ChainAt::PortOut(out),
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
                    if let Device::Router(router) = device {
                        if let Err(stop) = self.hairpin(router, out, &mut branch) {
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

    /// Runs the chains of `stages` in order; NAT rules translate `here`.
    fn filter(
        &mut self,
        device: Device,
        in_port: Uuid,
        out_port: Option<Uuid>,
        traversed: &[Uuid],
        stages: &[(Option<Uuid>, ChainAt)],
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
            Stop::Reject | Stop::NoMember => {
                self.sim.drops.push(match stop {
                    Stop::NoMember => DropReason::NoMember,
                    _ => DropReason::RuleReject,
                });
                let answer = match &entry_packet.l3 {
                    L3::Ipv6(ip) => {
                        let icmp_source = match device {
                            Device::Router(_) => port.ipv6_source_for(&ip.src),
                            Device::Bridge(_) => ip.dst,
                        };
                        frames6::reject(
                            entry_packet,
                            &entry.current(),
                            icmp_source,
                            frames6::Icmp6Error::AdminProhibited,
                        )
                    }
                    _ => {
                        let icmp_source = match (device, port.address) {
                            (Device::Router(_), Some(address)) => Some(address.addr()),
                            _ => entry_packet.ipv4().map(|ip| ip.dst),
                        };
                        icmp_source
                            .and_then(|src| frames::reject(entry_packet, &entry.current(), src))
                    }
                };
                match answer {
                    Some(frame) => {
                        self.sim.step(
                            Some(device),
                            Some(port.id),
                            Stage::Reject,
                            match entry_packet.l3 {
                                L3::Ipv4(ip) if ip.proto == 6 => "TCP RST to the sender",
                                L3::Ipv6(ip) if ip.proto == 6 => "TCP RST to the sender",
                                L3::Ipv6(_) => "ICMPv6 administratively prohibited to the sender",
                                _ => "ICMP port unreachable to the sender",
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
                        Stage::Reject,
                        "nothing can be sent back for this packet: dropped",
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
                Stage::Egress,
                format_args!("out port {port} to linked port {peer}"),
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
            Stage::Output,
            format_args!("out port {port} on host {host}"),
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
