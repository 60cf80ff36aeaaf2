//! The simulation engine: the one place forwarding decisions are made.
//!
//! [`simulate`] takes a topology snapshot, the learned state (MACs learned
//! by bridges, ARP entries resolved by routers), the ingress port and a
//! frame, and returns what to do with it: the ports to send it out of (with
//! the header rewrites to apply), the frames devices generated in answer
//! (ARP replies, ICMP), why it was dropped, every step taken (the trace),
//! the tags of everything the decision depended on (for flow invalidation)
//! and what was learned on the way. It does no I/O and reads no clock or
//! global: the datapath, `plexus trace` and the tests call the same function
//! and therefore agree.
//!
//! The walk follows MidoNet's device pipeline: a packet enters a device
//! through a port, the device decides, and the packet leaves through one or
//! more ports; an interior port hands it to its peer's device, an exterior
//! port ends the walk with an output. Devices may also emit new frames
//! (replies), which are walked the same way from the port they leave by.

mod bridge;
mod frames;
mod packet;
mod router;
#[cfg(test)]
mod tests;

pub use packet::{ArpInfo, ArpOp, IcmpKind, Ipv4Info, PacketInfo, L3};

use std::net::Ipv4Addr;

use uuid::Uuid;

use crate::snapshot::{Device, Mac, Topology};

/// How many device hops one simulation may take before it is cut as a loop.
pub const MAX_DEVICES_TRAVERSED: usize = 16;

/// What the datapath has learned, as the engine reads it.
pub trait Learned {
    /// The port of `bridge` behind which `mac` was last seen.
    fn mac_port(&self, bridge: Uuid, mac: Mac) -> Option<Uuid>;
    /// The MAC that `ip` resolved to for `router`.
    fn arp(&self, router: Uuid, ip: Ipv4Addr) -> Option<Mac>;
}

/// Learned state with nothing in it.
#[derive(Debug, Default, Clone, Copy)]
pub struct NothingLearned;

impl Learned for NothingLearned {
    fn mac_port(&self, _: Uuid, _: Mac) -> Option<Uuid> {
        None
    }
    fn arp(&self, _: Uuid, _: Ipv4Addr) -> Option<Mac> {
        None
    }
}

/// Where a frame leaves the virtual network: an exterior port on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Egress {
    /// The host the port is bound on (`None`: unbound, nowhere to deliver).
    pub host: Option<Uuid>,
    /// The exterior port.
    pub port: Uuid,
}

/// Header rewrites to apply to the ingress frame before sending it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rewrite {
    /// New Ethernet source.
    pub eth_src: Option<Mac>,
    /// New Ethernet destination.
    pub eth_dst: Option<Mac>,
    /// How many routers decremented the TTL.
    pub ttl_decrement: u8,
}

impl Rewrite {
    /// True when the frame goes out unchanged.
    pub fn is_identity(&self) -> bool {
        *self == Rewrite::default()
    }
}

/// The ingress frame, rewritten, out of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Output {
    /// Where.
    pub egress: Egress,
    /// With which rewrites.
    pub rewrite: Rewrite,
}

/// A frame a device generated (ARP reply, ICMP), out of one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Where.
    pub egress: Egress,
    /// The whole Ethernet frame.
    pub frame: Vec<u8>,
}

/// Why a frame (or one branch of it) went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The frame could not be parsed.
    Malformed(crate::wire::WireError),
    /// The ingress port is not in the topology.
    UnknownPort,
    /// The device is administratively down.
    AdminDown,
    /// Too many devices traversed (a loop).
    TooManyDevices,
    /// The destination is the port the frame came from.
    Hairpin,
    /// An interior port has no peer device.
    DanglingLink,
    /// The exterior port is not bound to any host.
    Unbound,
    /// The frame is not addressed to the router.
    NotForRouter,
    /// The router does not handle this kind of frame.
    Unsupported(&'static str),
    /// A blackhole route matched.
    Blackhole,
    /// No route (ICMP net unreachable was sent).
    NoRoute,
    /// A reject route matched (ICMP administratively prohibited was sent).
    Rejected,
    /// The TTL ran out (ICMP time exceeded was sent).
    TtlExpired,
    /// The next hop's MAC is unknown; the router is resolving it.
    ArpPending,
    /// A flood found no other port.
    NoPorts,
    /// The source MAC or IP (or an ARP claim) is not among the ingress
    /// port's allowed addresses.
    Spoofed,
}

impl DropReason {
    /// A short stable name, for counters.
    pub fn name(&self) -> &'static str {
        match self {
            DropReason::Malformed(_) => "malformed",
            DropReason::UnknownPort => "unknown_port",
            DropReason::AdminDown => "admin_down",
            DropReason::TooManyDevices => "too_many_devices",
            DropReason::Hairpin => "hairpin",
            DropReason::DanglingLink => "dangling_link",
            DropReason::Unbound => "unbound",
            DropReason::NotForRouter => "not_for_router",
            DropReason::Unsupported(_) => "unsupported",
            DropReason::Blackhole => "blackhole",
            DropReason::NoRoute => "no_route",
            DropReason::Rejected => "rejected",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::ArpPending => "arp_pending",
            DropReason::NoPorts => "no_ports",
            DropReason::Spoofed => "spoofed",
        }
    }
}

/// What a decision depended on: a change to any of these invalidates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// A port (any change to it).
    Port(Uuid),
    /// A device (bridge or router, any change to it or its ports).
    Device(Uuid),
    /// A configured route.
    Route(Uuid),
    /// What a bridge knows about a MAC (learning changes it).
    Mac(Uuid, Mac),
    /// What a router knows about an IP's MAC (ARP changes it).
    Arp(Uuid, Ipv4Addr),
}

/// Something learned during the walk, for the datapath to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learning {
    /// `mac` is behind `port` of `bridge`.
    Mac {
        /// The bridge.
        bridge: Uuid,
        /// The source MAC seen.
        mac: Mac,
        /// The port it came in by.
        port: Uuid,
    },
    /// `ip` of `router`'s neighbour has `mac`.
    Arp {
        /// The router.
        router: Uuid,
        /// The neighbour's address.
        ip: Ipv4Addr,
        /// Its MAC.
        mac: Mac,
    },
}

/// One step of the walk, for traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// The device acting (`None` for the walk itself).
    pub device: Option<Device>,
    /// The port involved.
    pub port: Option<Uuid>,
    /// The pipeline stage, e.g. `ingress`, `l2_lookup`, `route`.
    pub stage: &'static str,
    /// What happened, in words.
    pub detail: String,
}

/// Everything [`simulate`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Simulation {
    /// The ingress frame out of these ports.
    pub outputs: Vec<Output>,
    /// Frames devices generated.
    pub generated: Vec<Generated>,
    /// Why branches ended without output (the first is the verdict when
    /// nothing was output).
    pub drops: Vec<DropReason>,
    /// Every step.
    pub trace: Vec<TraceStep>,
    /// What the decision depends on.
    pub tags: Vec<Tag>,
    /// What was learned.
    pub learned: Vec<Learning>,
    /// The packet is waiting for ARP resolution of (router, ip): hold it
    /// and simulate it again once that is learned.
    pub held_for: Option<(Uuid, Ipv4Addr)>,
}

impl Simulation {
    /// Whether the result may be cached as a flow: only plain forwarding
    /// (generated frames, learning and held packets need the engine).
    pub fn is_cacheable(&self) -> bool {
        self.generated.is_empty() && self.learned.is_empty() && self.held_for.is_none()
    }

    /// The final verdict in one word, for traces and counters.
    pub fn verdict(&self) -> &'static str {
        match (self.outputs.is_empty(), self.generated.is_empty()) {
            (false, _) => "deliver",
            (true, false) => "reply",
            (true, true) => "drop",
        }
    }

    fn step(
        &mut self,
        device: Option<Device>,
        port: Option<Uuid>,
        stage: &'static str,
        detail: String,
    ) {
        self.trace.push(TraceStep {
            device,
            port,
            stage,
            detail,
        });
    }

    fn tag(&mut self, tag: Tag) {
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
    }

    fn drop(&mut self, device: Option<Device>, reason: DropReason) {
        self.step(device, None, "drop", format!("{reason:?}"));
        self.drops.push(reason);
    }
}

/// A frame arriving at a port, with the rewrites accumulated so far.
#[derive(Debug, Clone)]
struct Arrival {
    port: Uuid,
    rewrite: Rewrite,
    /// `Some` for a frame a device generated (walked like any other).
    generated: Option<Vec<u8>>,
}

/// What a device decided for one arrival.
pub(crate) enum Decision {
    /// Send out of these ports of the device, with these rewrites.
    Forward(Vec<(Uuid, Rewrite)>),
    /// Send this new frame out of this port of the device.
    Emit(Uuid, Vec<u8>),
    /// Nothing leaves.
    Drop(DropReason),
}

/// The walk's shared context, handed to the device modules.
pub(crate) struct Walk<'a, L: Learned + ?Sized> {
    pub(crate) topo: &'a Topology,
    pub(crate) learned: &'a L,
    pub(crate) sim: &'a mut Simulation,
}

/// Decides what happens to `frame` entering the virtual network at
/// `ingress`. See the module documentation.
pub fn simulate<L: Learned + ?Sized>(
    topo: &Topology,
    learned: &L,
    ingress: Uuid,
    frame: &[u8],
) -> Simulation {
    let mut sim = Simulation::default();
    let mut pending = vec![Arrival {
        port: ingress,
        rewrite: Rewrite::default(),
        generated: None,
    }];
    let mut hops = 0;
    while let Some(arrival) = pending.pop() {
        hops += 1;
        if hops > MAX_DEVICES_TRAVERSED {
            sim.drop(None, DropReason::TooManyDevices);
            break;
        }
        let bytes = arrival.generated.as_deref().unwrap_or(frame);
        let packet = match PacketInfo::parse(bytes) {
            Ok(packet) => packet.with_rewrite(&arrival.rewrite),
            Err(error) => {
                sim.drop(None, DropReason::Malformed(error));
                continue;
            }
        };
        let Some(port) = topo.ports.get(&arrival.port) else {
            sim.drop(None, DropReason::UnknownPort);
            continue;
        };
        sim.tag(Tag::Port(port.id));
        let device = port.device;
        let (device_id, kind) = match device {
            Device::Bridge(id) => (id, "bridge"),
            Device::Router(id) => (id, "router"),
        };
        sim.tag(Tag::Device(device_id));
        sim.step(
            Some(device),
            Some(port.id),
            "ingress",
            format!("{kind} {device_id} in port {}", port.id),
        );
        if arrival.generated.is_none() && port.peer.is_none() {
            if let Some(violation) = spoofing(port, &packet) {
                sim.step(Some(device), Some(port.id), "port_security", violation);
                sim.drop(Some(device), DropReason::Spoofed);
                continue;
            }
        }
        let mut walk = Walk {
            topo,
            learned,
            sim: &mut sim,
        };
        let decision = match device {
            Device::Bridge(id) => bridge::process(&mut walk, id, port, &packet),
            Device::Router(id) => router::process(&mut walk, id, port, &packet, bytes),
        };
        let leave =
            |port: Uuid, rewrite: Rewrite, generated: Option<Vec<u8>>, sim: &mut Simulation| {
                egress(topo, sim, device, port, rewrite, generated)
            };
        match decision {
            Decision::Drop(reason) => sim.drop(Some(device), reason),
            Decision::Forward(ports) => {
                for (out, rewrite) in ports {
                    let rewrite = merge(arrival.rewrite, rewrite);
                    pending.extend(leave(out, rewrite, arrival.generated.clone(), &mut sim));
                }
            }
            Decision::Emit(out, new_frame) => {
                pending.extend(leave(out, Rewrite::default(), Some(new_frame), &mut sim));
            }
        }
    }
    sim
}

/// Anti-spoofing at an exterior port with allowed addresses: the source MAC
/// must be allowed, and an IPv4 source or an ARP sender address must be
/// allowed together with that MAC. `None` when the frame is fine.
fn spoofing(port: &crate::snapshot::PortInfo, packet: &PacketInfo) -> Option<String> {
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
        L3::Ipv4(ip) => Some(ip.src),
        // An ARP probe (sender 0.0.0.0) claims nothing.
        L3::Arp(arp) if !arp.sender_ip.is_unspecified() => {
            if arp.sender_mac != mac {
                return Some(format!(
                    "ARP sender MAC {} differs from the frame's",
                    bridge::fmt_mac(&arp.sender_mac)
                ));
            }
            Some(arp.sender_ip)
        }
        _ => None,
    };
    match claimed {
        Some(ip)
            if !port
                .allowed
                .iter()
                .any(|(m, net)| *m == mac && net.contains(&std::net::IpAddr::V4(ip))) =>
        {
            Some(format!(
                "source address {ip} is not allowed with MAC {}",
                bridge::fmt_mac(&mac)
            ))
        }
        _ => None,
    }
}

fn merge(before: Rewrite, now: Rewrite) -> Rewrite {
    Rewrite {
        eth_src: now.eth_src.or(before.eth_src),
        eth_dst: now.eth_dst.or(before.eth_dst),
        ttl_decrement: before.ttl_decrement.saturating_add(now.ttl_decrement),
    }
}

/// A frame leaves `device` by `port`: to the peer's device (an arrival to
/// walk next) or out of the virtual network (an output).
fn egress(
    topo: &Topology,
    sim: &mut Simulation,
    device: Device,
    port: Uuid,
    rewrite: Rewrite,
    generated: Option<Vec<u8>>,
) -> Option<Arrival> {
    let info = topo.ports.get(&port)?;
    sim.tag(Tag::Port(port));
    if let Some(peer) = info.peer {
        if !topo.ports.contains_key(&peer) {
            sim.drop(Some(device), DropReason::DanglingLink);
            return None;
        }
        sim.step(
            Some(device),
            Some(port),
            "egress",
            format!("out port {port} to linked port {peer}"),
        );
        return Some(Arrival {
            port: peer,
            rewrite,
            generated,
        });
    }
    let Some(host) = info.host else {
        sim.drop(Some(device), DropReason::Unbound);
        return None;
    };
    let egress = Egress {
        host: Some(host),
        port,
    };
    sim.step(
        Some(device),
        Some(port),
        "output",
        format!("out port {port} on host {host}"),
    );
    match generated {
        Some(frame) => sim.generated.push(Generated { egress, frame }),
        None => sim.outputs.push(Output { egress, rewrite }),
    }
    None
}
