//! Running an offline trace: the probe packet `plexus trace` and
//! `POST /v1/trace` build from a few fields (defaults taken from the
//! ingress port), simulated by the engine on a set of records.
//!
//! One place builds the probe so that the CLI and the API cannot disagree
//! on what "trace from this port to that address" means.

use std::fmt;
use std::net::IpAddr;

use nsdb::Record;
use serde_json::Value;
use uuid::Uuid;
use vswitch::engine::{simulate, Learned, NothingLearned, Simulation};
use vswitch::probe::Probe;
use vswitch::snapshot::{Device, Mac, Topology};

use crate::dump::Names;

pub use vswitch::probe::ProbeProtocol;

/// What to trace: the ingress port, the destination, and optional header
/// fields (`None`: the default derived from the port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSpec {
    /// The ingress port.
    pub port: Uuid,
    /// Destination address, IPv4 or IPv6.
    pub dst_ip: IpAddr,
    /// Source address (default: the port's allowed or own address of the
    /// destination's family).
    pub src_ip: Option<IpAddr>,
    /// Source MAC (default: the port's MAC).
    pub src_mac: Option<Mac>,
    /// Destination MAC (default: the owner of `dst_ip` on the bridge, else
    /// the bridge's gateway; needed for a router port).
    pub dst_mac: Option<Mac>,
    /// Transport.
    pub protocol: ProbeProtocol,
    /// Source port (TCP/UDP).
    pub src_port: u16,
    /// Destination port (TCP/UDP).
    pub dst_port: u16,
    /// Time to live.
    pub ttl: u8,
}

/// Why a trace could not run; each message says what to give instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceError {
    /// The ingress port is not among the records (or not visible).
    NoSuchPort(Uuid),
    /// The port has no address of the destination's family to default the
    /// source to.
    NoSourceAddress,
    /// The port's bridge is not among the records.
    MissingBridge(Uuid),
    /// A router port has no gateway to default the destination MAC to.
    RouterPortNeedsDstMac,
    /// The probe frame could not be built.
    Probe(String),
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::NoSuchPort(id) => {
                write!(f, "no port {id} (or not visible to this token)")
            }
            TraceError::NoSourceAddress => {
                write!(
                    f,
                    "the port has no address of the destination's family; give a source IP"
                )
            }
            TraceError::MissingBridge(id) => write!(f, "the port's bridge {id} is missing"),
            TraceError::RouterPortNeedsDstMac => write!(
                f,
                "give a destination MAC for a packet entering at a router port"
            ),
            TraceError::Probe(why) => write!(f, "cannot build the probe: {why}"),
        }
    }
}

impl std::error::Error for TraceError {}

/// A finished trace: the probe that was sent and what the engine did.
pub struct TraceRun {
    /// The probe, with every default filled in.
    pub probe: Probe,
    /// The ingress port.
    pub port: Uuid,
    /// The engine's result.
    pub simulation: Simulation,
    /// Names of the records the trace ran on.
    pub names: Names,
}

/// The name of a protocol as `plexus trace` prints it.
pub fn protocol_name(protocol: ProbeProtocol) -> &'static str {
    match protocol {
        ProbeProtocol::Icmp => "icmp",
        ProbeProtocol::Tcp => "tcp",
        ProbeProtocol::Udp => "udp",
    }
}

/// Simulates `spec` on `records` with nothing learned (no MACs, no
/// connections): what the NSDB alone says happens to the packet.
pub fn run_trace(records: &[Record], spec: &TraceSpec) -> Result<TraceRun, TraceError> {
    run_trace_with(records, spec, &NothingLearned)
}

/// Simulates `spec` on `records` with what an agent has `learned` (MACs,
/// ARP answers, connections and their NAT): what that agent's datapath
/// would do with the packet now.
pub fn run_trace_with<L: Learned + ?Sized>(
    records: &[Record],
    spec: &TraceSpec,
    learned: &L,
) -> Result<TraceRun, TraceError> {
    let topo = Topology::build(0, records);
    let port = topo
        .ports
        .get(&spec.port)
        .ok_or(TraceError::NoSuchPort(spec.port))?;
    let src_ip = match spec.src_ip {
        Some(ip) => ip,
        None => port
            .allowed
            .iter()
            .map(|(_, net)| net.addr())
            .chain(port.addresses.iter().map(|a| a.addr()))
            .find(|ip| ip.is_ipv4() == spec.dst_ip.is_ipv4())
            .ok_or(TraceError::NoSourceAddress)?,
    };
    let dst_mac = match (spec.dst_mac, port.device) {
        (Some(mac), _) => mac,
        (None, Device::Bridge(bridge)) => {
            let info = topo
                .bridges
                .get(&bridge)
                .ok_or(TraceError::MissingBridge(bridge))?;
            let gateway = info
                .ports
                .iter()
                .filter_map(|p| topo.ports.get(p)?.peer)
                .filter_map(|peer| topo.ports.get(&peer))
                .find(|peer| matches!(peer.device, Device::Router(_)))
                .map(|peer| peer.mac);
            let owner = match spec.dst_ip {
                IpAddr::V4(ip) => info.arp.get(&ip),
                IpAddr::V6(ip) => info.nd.get(&ip),
            };
            owner.copied().or(gateway).unwrap_or([0xff; 6])
        }
        (None, Device::Router(_)) => return Err(TraceError::RouterPortNeedsDstMac),
    };
    let probe = Probe {
        src_mac: spec.src_mac.unwrap_or(port.mac),
        dst_mac,
        src_ip,
        dst_ip: spec.dst_ip,
        protocol: spec.protocol,
        src_port: spec.src_port,
        dst_port: spec.dst_port,
        ttl: spec.ttl,
    };
    let frame = probe
        .frame()
        .map_err(|e| TraceError::Probe(e.to_string()))?;
    let simulation = simulate(&topo, learned, spec.port, &frame);
    Ok(TraceRun {
        probe,
        port: spec.port,
        simulation,
        names: Names::of(records),
    })
}

impl TraceRun {
    /// The first line of `plexus trace`: what was sent, from where.
    pub fn header(&self) -> String {
        format!(
            "trace: {} {} > {} ttl {} from port {}",
            protocol_name(self.probe.protocol),
            self.probe.src_ip,
            self.probe.dst_ip,
            self.probe.ttl,
            self.names.name(self.port)
        )
    }

    /// The trace as text, one block per device crossed (without the header).
    pub fn text(&self) -> String {
        crate::render_trace(&(&self.simulation).into(), &self.names)
    }

    /// The trace as JSON (what `plexus trace --format json` prints).
    pub fn json(&self) -> Value {
        crate::trace_json(&(&self.simulation).into(), &self.names)
    }
}
