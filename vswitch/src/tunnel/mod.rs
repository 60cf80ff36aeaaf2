//! Agent-to-agent tunnels: VXLAN (RFC 7348) over one UDP socket per agent.
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

/// How an agent tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The UDP port agents listen on and send to.
    pub port: u16,
    /// The underlay's MTU; pods get `underlay_mtu - overhead` (50 bytes
    /// over IPv4, 70 over IPv6).
    pub underlay_mtu: usize,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            port: DEFAULT_PORT,
            underlay_mtu: DEFAULT_UNDERLAY_MTU,
        }
    }
}

impl TunnelConfig {
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

/// One agent's tunnel endpoint.
#[derive(Debug)]
pub struct Tunnel {
    socket: Arc<TunnelSocket>,
    config: TunnelConfig,
}

impl Tunnel {
    /// Binds the tunnel socket on `ip` and the configured port.
    pub fn bind(ip: IpAddr, config: TunnelConfig) -> Result<Tunnel, PortError> {
        let socket = TunnelSocket::bind(SocketAddr::new(ip, config.port))?;
        Ok(Tunnel {
            socket: Arc::new(socket),
            config,
        })
    }

    /// The largest inner IP packet this tunnel carries without fragmenting
    /// (its underlay's family decides the overhead).
    pub fn max_ip_len(&self) -> usize {
        self.config.max_ip_len_over(self.socket.local_addr().ip())
    }

    /// The socket (shared with VTEP ports).
    pub fn socket(&self) -> &Arc<TunnelSocket> {
        &self.socket
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
