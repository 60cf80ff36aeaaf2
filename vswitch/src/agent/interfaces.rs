//! Opening the interfaces of the ports bound to this host: many at once on
//! a cold start, so that the kernel's cost of creating sockets is the only
//! thing on the path to forwarding (see [`crate::io::open_many`]).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::datapath::Datapath;
use crate::io::{open_many, AfPacket, AfPacketOptions, Port, PortError, Tap, VtepPort};
use crate::snapshot::Topology;
use crate::wire::Vni;

/// A port's opened interface (the flag: a TAP created for it), or why not.
pub(super) type Opened = Result<(Port, bool), PortError>;

/// One port's outcome: its id, interface name and interface.
pub(super) type Outcome = (Uuid, String, Opened);

/// Opening batches of at least this many ports log their timing at info
/// level (a cold start); smaller ones (a port bound now and then) at debug.
const LOG_BATCH: usize = 100;

/// Opens the interfaces of `ports` (id, interface name); the outcomes come
/// on the returned channel as each is ready, VTEP ports first. A VTEP port
/// reaches its endpoint through the tunnel socket; any other opens the
/// existing interface of its name (a veth's host end) with AF_PACKET, or
/// creates a TAP device of that name when there is none.
pub(super) fn open_interfaces(
    datapath: &Datapath,
    topo: &Topology,
    ports: Vec<(Uuid, String)>,
) -> mpsc::UnboundedReceiver<Outcome> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut packet = Vec::with_capacity(ports.len());
    for (id, ifname) in ports {
        if topo.tunnel.vteps.contains_key(&id) {
            let opened = open_vtep(datapath, topo, id, &ifname).map(|vtep| (vtep, false));
            let _ = tx.send((id, ifname, opened));
        } else {
            packet.push((id, ifname));
        }
    }
    if packet.is_empty() {
        return rx;
    }
    let shared = datapath.shared_sockets().cloned();
    // The first ports a socket of their own, the rest the shared sockets.
    let dedicated = datapath.dedicated_room().min(packet.len());
    let queues = datapath.port_queues();
    let queued_room = datapath.queued_room();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let names: Vec<&str> = packet.iter().map(|(_, name)| name.as_str()).collect();
        let (mut taps, mut failed, mut tap_time) = (0, 0, Duration::ZERO);
        let mut orphans = Vec::new();
        let mut hand = |i: usize, result: Result<Port, PortError>| {
            let (id, ifname) = &packet[i];
            let opened = match result {
                Ok(port) => Ok((port, false)),
                Err(PortError::NoSuchInterface { .. }) => {
                    let tap_started = Instant::now();
                    taps += 1;
                    let queues = if i < queued_room { 1 + queues } else { 1 };
                    let tap = Tap::open_queues(ifname, queues).map(|tap| (tap.into(), true));
                    tap_time += tap_started.elapsed();
                    tap
                }
                Err(error) => Err(error),
            };
            failed += usize::from(opened.is_err());
            match tx.send((*id, ifname.clone(), opened)) {
                Ok(()) => ControlFlow::Continue(()),
                // The agent is gone: no more opening.
                Err(unwanted) => {
                    orphans.extend((unwanted.0).2.ok());
                    ControlFlow::Break(())
                }
            }
        };
        let opts = AfPacketOptions::default();
        let mut times = open_many(&names[..dedicated], &opts, |i, opened| {
            let queues = if i < queued_room { queues } else { 0 };
            hand(i, opened.map(|socket| with_queues(socket, queues, &opts)))
        });
        if let Some(sockets) = shared.filter(|_| !tx.is_closed()) {
            // A port of the shared sockets is a filter entry: no socket.
            for (i, name) in names.iter().enumerate().skip(dedicated) {
                let adding = Instant::now();
                let added = sockets.add(name).map(Port::from);
                times.configure += adding.elapsed();
                let handing = Instant::now();
                let flow = hand(i, added);
                times.handed_on += handing.elapsed();
                if flow.is_break() {
                    break;
                }
            }
        }
        // Closed all at once (one at a time, each waits for the kernel).
        crate::io::close_all(orphans);
        let (ports, elapsed_ms) = (packet.len(), started.elapsed().as_millis() as u64);
        let ms = |d: Duration| d.as_millis() as u64;
        let (sockets_ms, configure_ms) = (ms(times.sockets), ms(times.configure));
        let (waited_ms, handed_on_ms, tap_ms) =
            (ms(times.waited), ms(times.handed_on), ms(tap_time));
        macro_rules! opened {
            ($level:ident) => {
                tracing::$level!(
                    ports,
                    dedicated,
                    taps,
                    failed,
                    sockets_ms,
                    configure_ms,
                    waited_ms,
                    handed_on_ms,
                    tap_ms,
                    elapsed_ms,
                    "port interfaces opened"
                )
            };
        }
        if ports >= LOG_BATCH {
            opened!(info);
        } else {
            opened!(debug);
        }
    });
    rx
}

/// `socket` as a port, with `queues` extra receive queues if it can have
/// them (without, it still serves every flow, on one core).
fn with_queues(mut socket: AfPacket, queues: usize, opts: &AfPacketOptions) -> Port {
    if queues > 0 {
        if let Err(error) = socket.add_queues(queues, opts) {
            tracing::warn!(%error, ifname = socket.ifname(), "no extra receive queues for the port");
        }
    }
    Port::from(socket)
}

/// The port of a VTEP: its endpoint through this agent's tunnel socket.
fn open_vtep(
    datapath: &Datapath,
    topo: &Topology,
    port: Uuid,
    name: &str,
) -> Result<Port, PortError> {
    let unavailable = |why: &str| {
        PortError::from_os(
            name,
            "reaching the VTEP",
            std::io::Error::other(why.to_string()),
        )
    };
    let endpoint = topo
        .tunnel
        .vteps
        .get(&port)
        .ok_or_else(|| unavailable("not a VTEP port"))?;
    let tunnel = datapath
        .tunnel()
        .ok_or_else(|| unavailable("this agent has no tunnel socket"))?;
    let vni = Vni::new(endpoint.vni).ok_or_else(|| unavailable("VNI out of range"))?;
    let remote = std::net::SocketAddr::new(endpoint.remote_ip, endpoint.remote_port);
    let max_ip_len = tunnel.max_ip_len();
    let vtep = VtepPort::new(name, tunnel.socket().clone(), remote, vni, max_ip_len);
    Ok(Port::Vtep(vtep))
}
