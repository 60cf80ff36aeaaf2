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
mod chain;
pub(crate) mod frames;
pub(crate) mod frames6;
mod lb;
mod nat;
mod packet;
mod record;
mod rewrite;
mod router;
mod router6;
#[cfg(test)]
mod tests;
mod walk;

pub use packet::{
    ArpInfo, ArpOp, Fragment, FragmentKey, IcmpKind, IpFields, Ipv4Info, Ipv6Info, NdInfo,
    PacketInfo, L3,
};
pub use record::{OutputRecord, ReplyRecord, StepRecord, TraceRecord};
pub use rewrite::apply_rewrite;

use std::net::IpAddr;

use uuid::Uuid;

use crate::conntrack::{ConnEntry, ConnKey, Direction};
use crate::snapshot::{Device, Mac, Topology};

/// How many device hops one simulation may take before it is cut as a loop.
pub const MAX_DEVICES_TRAVERSED: usize = 16;

/// TCP ports of a router's own addresses that belong to the local agent's
/// health probes: segments to them are handed to the agent
/// ([`Simulation::local`]) instead of being refused, and address
/// translation never picks them.
pub const PROBE_PORTS: std::ops::RangeInclusive<u16> = 61_000..=61_999;

/// What the datapath has learned, as the engine reads it.
pub trait Learned {
    /// The port of `bridge` behind which `mac` was last seen.
    fn mac_port(&self, bridge: Uuid, mac: Mac) -> Option<Uuid>;
    /// The MAC that `ip` resolved to for `router` (by ARP, or by Neighbor
    /// Discovery for IPv6).
    fn arp(&self, router: Uuid, ip: IpAddr) -> Option<Mac>;
    /// Whether `router` recently failed to resolve `ip` (frames held for it
    /// timed out): packets toward it get ICMP host (ICMPv6 address)
    /// unreachable at once.
    fn arp_failed(&self, router: Uuid, ip: IpAddr) -> bool {
        let _ = (router, ip);
        false
    }
    /// The transport ports the first fragment of datagram `key` carried
    /// through `zone`.
    fn fragment_ports(&self, zone: Uuid, key: &FragmentKey) -> Option<(u16, u16)> {
        let _ = (zone, key);
        None
    }
    /// The member of VIP `vip` that `client`'s affinity entry names.
    fn affinity(&self, vip: Uuid, client: IpAddr) -> Option<Uuid> {
        let _ = (vip, client);
        None
    }
    /// The connection `key` belongs to in `zone` (a device), and which way
    /// the packet travels.
    fn conn(&self, zone: Uuid, key: &ConnKey) -> Option<(Direction, ConnEntry)> {
        let _ = (zone, key);
        None
    }
}

/// Learned state with nothing in it.
#[derive(Debug, Default, Clone, Copy)]
pub struct NothingLearned;

impl Learned for NothingLearned {
    fn mac_port(&self, _: Uuid, _: Mac) -> Option<Uuid> {
        None
    }
    fn arp(&self, _: Uuid, _: IpAddr) -> Option<Mac> {
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
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Rewrite {
    /// New Ethernet source.
    pub eth_src: Option<Mac>,
    /// New Ethernet destination.
    pub eth_dst: Option<Mac>,
    /// How many routers decremented the TTL.
    pub ttl_decrement: u8,
    /// New IP source (NAT; of the packet's family).
    pub ip_src: Option<IpAddr>,
    /// New IP destination (NAT; of the packet's family).
    pub ip_dst: Option<IpAddr>,
    /// New TCP/UDP source port, or ICMP/ICMPv6 echo identifier (NAT).
    pub src_port: Option<u16>,
    /// New TCP/UDP destination port, or ICMP/ICMPv6 echo identifier (NAT).
    pub dst_port: Option<u16>,
}

impl Rewrite {
    /// True when the frame goes out unchanged.
    pub fn is_identity(&self) -> bool {
        *self == Rewrite::default()
    }

    /// The address and port translation part.
    pub fn nat(&self) -> crate::wire::NatRewrite {
        crate::wire::NatRewrite {
            src: self.ip_src,
            dst: self.ip_dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }

    /// `self` followed by `then`.
    pub fn then(self, then: Rewrite) -> Rewrite {
        Rewrite {
            eth_src: then.eth_src.or(self.eth_src),
            eth_dst: then.eth_dst.or(self.eth_dst),
            ttl_decrement: self.ttl_decrement.saturating_add(then.ttl_decrement),
            ip_src: then.ip_src.or(self.ip_src),
            ip_dst: then.ip_dst.or(self.ip_dst),
            src_port: then.src_port.or(self.src_port),
            dst_port: then.dst_port.or(self.dst_port),
        }
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
    /// The next hop did not answer ARP (ICMP host unreachable was sent).
    HostUnreachable,
    /// A later fragment waits for its first fragment at a tracking device.
    FragmentPending,
    /// TCP or UDP to a router's own address, where nothing listens (a TCP
    /// RST or ICMP port unreachable was sent).
    ClosedPort,
    /// A flood found no other port.
    NoPorts,
    /// The source MAC or IP (or an ARP claim) is not among the ingress
    /// port's allowed addresses.
    Spoofed,
    /// A rule dropped it.
    RuleDrop,
    /// A rule rejected it (TCP RST or ICMP unreachable was sent).
    RuleReject,
    /// NAT found no free address and port for a new connection.
    NatExhausted,
    /// A new connection to a VIP found no member that may take it (a TCP
    /// RST or ICMP port unreachable was sent).
    NoMember,
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
            DropReason::RuleDrop => "rule_drop",
            DropReason::RuleReject => "rule_reject",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::NoMember => "no_member",
            DropReason::HostUnreachable => "host_unreachable",
            DropReason::ClosedPort => "closed_port",
            DropReason::FragmentPending => "fragment_pending",
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
    /// What a router knows about an IP's MAC (ARP or Neighbor Discovery
    /// changes it).
    Arp(Uuid, IpAddr),
    /// A chain's rules.
    Chain(Uuid),
    /// A port group's or IP address group's members.
    Group(Uuid),
    /// What a zone knows about a connection key (tracking changes it).
    Conn(Uuid, ConnKey),
    /// A load-balancer pool member (any change to it).
    LbMember(Uuid),
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
    /// `ip` of `router`'s neighbour has `mac` (learned by ARP, or by
    /// Neighbor Discovery for IPv6).
    Arp {
        /// The router.
        router: Uuid,
        /// The neighbour's address.
        ip: IpAddr,
        /// Its MAC.
        mac: Mac,
    },
    /// A new connection to track.
    Conn(ConnEntry),
    /// A packet changed a tracked connection's state (first reply, FIN, RST).
    ConnSeen {
        /// The zone.
        zone: Uuid,
        /// The packet's key at the zone.
        key: ConnKey,
        /// Its TCP SYN/FIN/RST bits.
        tcp_flags: u8,
    },
    /// The first fragment of a datagram passed a tracking zone with these
    /// transport ports: its later fragments belong to the same connection.
    /// Local to the host the fragments enter by (never replicated).
    Fragment {
        /// The zone.
        zone: Uuid,
        /// The datagram, as the zone saw it.
        key: FragmentKey,
        /// The first fragment's (source, destination) ports or ICMP echo
        /// identifier.
        ports: (u16, u16),
    },
    /// `client`'s new connections to `vip` go to `member` for `timeout_ms`
    /// from now (session affinity). Local to the host the client's
    /// connections enter by.
    Affinity {
        /// The VIP.
        vip: Uuid,
        /// The client's address.
        client: IpAddr,
        /// The member chosen.
        member: Uuid,
        /// How long the entry lives.
        timeout_ms: u64,
    },
}

/// The pipeline stage of a trace step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `ingress`.
    Ingress,
    /// `port_security`.
    PortSecurity,
    /// `chain`.
    Chain,
    /// `conntrack`.
    Conntrack,
    /// `nat`.
    Nat,
    /// `load_balancer`.
    LoadBalancer,
    /// `l2_lookup`.
    L2Lookup,
    /// `learn`.
    Learn,
    /// `arp_suppression`.
    ArpSuppression,
    /// `nd_suppression`.
    NdSuppression,
    /// `route`.
    Route,
    /// `ttl`.
    Ttl,
    /// `rewrite`.
    Rewrite,
    /// `arp_resolve`.
    ArpResolve,
    /// `arp_learn`.
    ArpLearn,
    /// `arp_reply`.
    ArpReply,
    /// `nd_resolve`.
    NdResolve,
    /// `nd_learn`.
    NdLearn,
    /// `nd_advert`.
    NdAdvert,
    /// `router_advert`.
    RouterAdvert,
    /// `icmp_echo`.
    IcmpEcho,
    /// `icmp_error`.
    IcmpError,
    /// `reject`.
    Reject,
    /// `local`.
    Local,
    /// `egress`.
    Egress,
    /// `output`.
    Output,
    /// `drop`.
    Drop,
    /// `tunnel`.
    Tunnel,
}

impl Stage {
    /// Its name in traces (`l2_lookup`, `route`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Ingress => "ingress",
            Stage::PortSecurity => "port_security",
            Stage::Chain => "chain",
            Stage::Conntrack => "conntrack",
            Stage::Nat => "nat",
            Stage::LoadBalancer => "load_balancer",
            Stage::L2Lookup => "l2_lookup",
            Stage::Learn => "learn",
            Stage::ArpSuppression => "arp_suppression",
            Stage::NdSuppression => "nd_suppression",
            Stage::Route => "route",
            Stage::Ttl => "ttl",
            Stage::Rewrite => "rewrite",
            Stage::ArpResolve => "arp_resolve",
            Stage::ArpLearn => "arp_learn",
            Stage::ArpReply => "arp_reply",
            Stage::NdResolve => "nd_resolve",
            Stage::NdLearn => "nd_learn",
            Stage::NdAdvert => "nd_advert",
            Stage::RouterAdvert => "router_advert",
            Stage::IcmpEcho => "icmp_echo",
            Stage::IcmpError => "icmp_error",
            Stage::Reject => "reject",
            Stage::Local => "local",
            Stage::Egress => "egress",
            Stage::Output => "output",
            Stage::Drop => "drop",
            Stage::Tunnel => "tunnel",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of the walk, for traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// The device acting (`None` for the walk itself).
    pub device: Option<Device>,
    /// The port involved.
    pub port: Option<Uuid>,
    /// The pipeline stage.
    pub stage: Stage,
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
    /// The packet is waiting for ARP (or, for IPv6, Neighbor Discovery)
    /// resolution of (router, ip): hold it and simulate it again once that
    /// is learned.
    pub held_for: Option<(Uuid, IpAddr)>,
    /// The packet is a later fragment whose first fragment a tracking zone
    /// has not seen yet: hold it briefly and simulate it again once a
    /// [`Learning::Fragment`] for (zone, datagram) is recorded.
    pub held_fragment: Option<(Uuid, FragmentKey)>,
    /// Frames for the local agent: replies to its health probes, as they
    /// reached the router (see [`PROBE_PORTS`]).
    pub local: Vec<Vec<u8>>,
    /// The rules that matched, as (chain, rule), in the order they did.
    pub rules: Vec<RuleHit>,
    /// Whether the steps were left out ([`Steps::Skip`]): `trace` is empty.
    pub skip_steps: bool,
}

/// Whether a simulation records its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steps {
    /// Record every step (traces, tests, traced packets).
    Record,
    /// Leave them out (the datapath's misses nobody traces).
    Skip,
}

/// A rule that matched a packet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RuleHit {
    /// Its chain.
    pub chain: Uuid,
    /// The rule.
    pub rule: Uuid,
}

impl Simulation {
    /// Whether the result may be cached as a flow: only plain forwarding
    /// (generated frames, learning and held packets need the engine).
    pub fn is_cacheable(&self) -> bool {
        self.generated.is_empty()
            && self.local.is_empty()
            && self.learned.is_empty()
            && self.held_for.is_none()
            && self.held_fragment.is_none()
    }

    /// The final verdict in one word, for traces and counters.
    pub fn verdict(&self) -> &'static str {
        match (self.outputs.is_empty(), self.generated.is_empty()) {
            (false, _) => "deliver",
            (true, false) => "reply",
            (true, true) if !self.local.is_empty() => "local",
            (true, true) => "drop",
        }
    }

    /// Records a step when steps are recorded: `detail` is only
    /// formatted then (the datapath's misses do not pay for words nobody
    /// reads).
    fn step(
        &mut self,
        device: Option<Device>,
        port: Option<Uuid>,
        stage: Stage,
        detail: impl std::fmt::Display,
    ) {
        if self.skip_steps {
            return;
        }
        self.trace.push(TraceStep {
            device,
            port,
            stage,
            detail: detail.to_string(),
        });
    }

    fn tag(&mut self, tag: Tag) {
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
    }

    fn drop(&mut self, device: Option<Device>, reason: DropReason) {
        self.step(device, None, Stage::Drop, format_args!("{reason:?}"));
        self.drops.push(reason);
    }
}

/// A route as a trace names it: `route <id> <dst> via` or `connected <dst>
/// on` (formatted only when steps are recorded).
pub(crate) struct RouteName<D>(pub(crate) Option<Uuid>, pub(crate) D);

impl<D: std::fmt::Display> std::fmt::Display for RouteName<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "route {id} {} via", self.1),
            None => write!(f, "connected {} on", self.1),
        }
    }
}

/// What a device decided for one arrival.
pub(crate) enum Decision {
    /// Send out of these ports of the device, with these rewrites.
    Forward(Vec<(Uuid, Rewrite)>),
    /// Send this new frame out of this port of the device.
    Emit(Uuid, Vec<u8>),
    /// Hand this frame to the local agent.
    Local(Vec<u8>),
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
    walk::run(topo, learned, ingress, frame, Steps::Record)
}

/// [`simulate`], recording the steps or not: the decision is the same.
pub fn simulate_with<L: Learned + ?Sized>(
    topo: &Topology,
    learned: &L,
    ingress: Uuid,
    frame: &[u8],
    steps: Steps,
) -> Simulation {
    walk::run(topo, learned, ingress, frame, steps)
}
