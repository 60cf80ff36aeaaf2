//! Agent-to-agent tunnels: VXLAN (RFC 7348) over UDP sockets (see [`Tunnel`]).
//!
//! The ingress host simulates a packet's whole virtual path; when the
//! egress port is bound on another host the frame goes there with the
//! port's tunnel key as the VNI, and the receiving agent delivers it
//! without simulating it again. A flood to several ports of one bridge on
//! one host travels once, with the bridge's key. Flow state the receiver
//! needs (tracked connections, NAT bindings, learned MACs and ARP answers)
//! travels on the reserved key [`STATE_KEY`], ahead of the frames it
//! concerns. Frames from addresses that are not registered hosts (or
//! external VTEPs a local port reaches) and frames with unknown keys are
//! dropped and counted.

pub mod port_lock;
pub mod state;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::io::{PortError, TunnelSocket};

/// The default UDP port (IANA's VXLAN port).
pub const DEFAULT_PORT: u16 = crate::wire::VXLAN_PORT;

/// The reserved key of flow-state messages (above every port and bridge key).
pub const STATE_KEY: u32 = 0x00ff_ffff;

/// Bytes VXLAN adds around an inner IP packet over an IPv4 underlay: outer
/// IPv4 (20), UDP (8), VXLAN (8) and the inner Ethernet header (14).
pub const OVERHEAD: usize = 50;

/// Bytes VXLAN adds over an IPv6 underlay (its header is 40 bytes, not 20).
pub const OVERHEAD_V6: usize = 70;

/// What VXLAN adds around an inner IP packet over an underlay of `ip`'s
/// family.
pub fn overhead(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => OVERHEAD,
        IpAddr::V6(_) => OVERHEAD_V6,
    }
}

/// The default underlay MTU.
pub const DEFAULT_UNDERLAY_MTU: usize = 1500;

/// The most sockets a tunnel receives on (and sends from).
pub const MAX_SOCKETS: usize = 8;

/// How an agent tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The UDP port agents listen on and send to.
    pub port: u16,
    /// The underlay's MTU; pods get `underlay_mtu - overhead` (50 bytes
    /// over IPv4, 70 over IPv6).
    pub underlay_mtu: usize,
    /// How many sockets receive on the port, each served by a task of its
    /// own (and as many send, each from a port of its own); 0: one per
    /// CPU, at most [`MAX_SOCKETS`].
    pub sockets: usize,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            port: DEFAULT_PORT,
            underlay_mtu: DEFAULT_UNDERLAY_MTU,
            sockets: 0,
        }
    }
}

impl TunnelConfig {
    /// How many sockets the tunnel opens each way (see [`Self::sockets`]).
    pub fn socket_count(&self) -> usize {
        match self.sockets {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .clamp(1, MAX_SOCKETS)
    }

    /// The largest inner IP packet a tunnel over an IPv4 underlay carries
    /// without fragmenting.
    pub fn max_ip_len(&self) -> usize {
        self.max_ip_len_over(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// The largest inner IP packet a tunnel over an underlay of `ip`'s
    /// family carries without fragmenting.
    pub fn max_ip_len_over(&self, ip: IpAddr) -> usize {
        self.underlay_mtu.saturating_sub(overhead(ip)).max(576)
    }
}

/// One agent's tunnel endpoint: sockets that receive on the tunnel port
/// and sockets that send.
///
/// With one socket it does both, and every datagram leaves from the
/// tunnel port. With several (`SO_REUSEPORT` on the port), what arrives
/// goes to receiving socket `source port % sockets` (`io::reuseport`),
/// each served by a task of its own; so that another agent's traffic
/// spreads too, datagrams leave from sending sockets on consecutive ports
/// of their own (standard VXLAN picks its source port by flow as well).
/// Ports get lanes in turn ([`crate::datapath::Datapath::next_lane`]) and
/// the frames a port receives, with the flow state queued ahead of them,
/// leave through its lane's socket ([`Tunnel::sender`]), so they reach
/// the receiving agent in order, through one of its sockets, while two
/// ports opened one after the other reach two. (Veths behind the shared
/// packet sockets go by their shared socket's lane. Frames the core makes
/// later, such as frames held for an address answer and released by
/// state from another agent, leave by the lane of whoever releases them;
/// they may overtake a frame of theirs sent meanwhile, as the first
/// packets of a flow could already be reordered on a lossy underlay.)
///
/// Two agents started at the same instant on one address could both
/// find the port free before either group binds it: a lock on the
/// address ([`port_lock`]) makes the second fail.
#[derive(Debug)]
pub struct Tunnel {
    receivers: Vec<Arc<TunnelSocket>>,
    senders: Vec<Arc<TunnelSocket>>,
    config: TunnelConfig,
    _lock: Option<port_lock::PortLock>,
}

impl Tunnel {
    /// Binds the tunnel's sockets on `ip` and the configured port (0: one
    /// the kernel picks).
    pub fn bind(ip: IpAddr, mut config: TunnelConfig) -> Result<Tunnel, PortError> {
        let count = config.socket_count();
        let alone = Arc::new(TunnelSocket::bind(SocketAddr::new(ip, config.port))?);
        config.port = alone.local_addr().port();
        let local = alone.local_addr();
        let lock = port_lock::hold(local).map_err(|e| {
            PortError::from_os(
                &local.to_string(),
                "holding the tunnel address (another agent started on it)",
                e,
            )
        })?;
        if count == 1 {
            return Ok(Tunnel {
                receivers: vec![alone.clone()],
                senders: vec![alone],
                config,
                _lock: lock,
            });
        }
        // The socket bound alone showed that nothing else holds the port
        // (another agent's group included); the group takes it over.
        drop(alone);
        let on = |port| SocketAddr::new(ip, port);
        let receivers = (0..count)
            .map(|_| TunnelSocket::bind_in_group(on(config.port)).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        // Without the program (a kernel before 4.5) the kernel's own hash
        // of addresses and ports spreads senders: less evenly, still in
        // order per sender.
        if let Err(error) = receivers[0].steer_by_source_port(count) {
            tracing::warn!(%error, "the tunnel's sockets are spread by the kernel's hash");
        }
        Ok(Tunnel {
            receivers,
            senders: bind_senders(ip, count)?,
            config,
            _lock: lock,
        })
    }

    /// The largest inner IP packet this tunnel carries without fragmenting
    /// (its underlay's family decides the overhead).
    pub fn max_ip_len(&self) -> usize {
        self.config.max_ip_len_over(self.socket().local_addr().ip())
    }

    /// The first socket receiving on the tunnel port (shared with VTEP
    /// ports, which send through it).
    pub fn socket(&self) -> &Arc<TunnelSocket> {
        &self.receivers[0]
    }

    /// The sockets receiving on the tunnel port, each to be served.
    pub fn receivers(&self) -> &[Arc<TunnelSocket>] {
        &self.receivers
    }

    /// The socket that sends what `lane` queues (a lane per local port:
    /// see the type's documentation).
    pub fn sender(&self, lane: usize) -> &Arc<TunnelSocket> {
        &self.senders[lane % self.senders.len()]
    }

    /// The configuration.
    pub fn config(&self) -> &TunnelConfig {
        &self.config
    }

    /// Where another agent at `ip` receives tunnelled frames.
    pub fn peer(&self, ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, self.config.port)
    }
}

/// `count` sockets to send from, on consecutive ports where they are free
/// (the first one the kernel's pick): lanes one after another then reach
/// different sockets of another agent's group (see `io::reuseport`).
fn bind_senders(ip: IpAddr, count: usize) -> Result<Vec<Arc<TunnelSocket>>, PortError> {
    let first = TunnelSocket::bind_sender(SocketAddr::new(ip, 0))?;
    let base = first.local_addr().port();
    let mut senders = vec![Arc::new(first)];
    for k in 1..count {
        let next = base.checked_add(k as u16).filter(|&port| port != 0);
        let socket = match next.map(|port| TunnelSocket::bind_sender(SocketAddr::new(ip, port))) {
            Some(Ok(socket)) => socket,
            // Taken (or past the last port): any port will do.
            _ => TunnelSocket::bind_sender(SocketAddr::new(ip, 0))?,
        };
        senders.push(Arc::new(socket));
    }
    Ok(senders)
}
