//! What the core tells its driver to do: every decision about a frame ends
//! as a list of [`Action`]s, performed in order.

use std::net::IpAddr;

use uuid::Uuid;

use crate::engine::DropReason;

/// Another agent's host, as the tunnel reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The host.
    pub host: Uuid,
    /// Its tunnel address (the driver adds the tunnel's UDP port).
    pub ip: IpAddr,
}

/// One thing for the driver to do.
///
/// `Forward` and `Tunnel` refer to the frame being processed, as the core
/// rewrote it in place; every other frame travels in the action. State
/// messages come before the frames that depend on them: a driver keeps
/// the order of everything it sends to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the frame being processed out of this local port.
    Forward(Uuid),
    /// Send the frame being processed through the tunnel to `peer`, with
    /// `key` as its VNI (a port's key, or a bridge's flood key).
    Tunnel {
        /// Where.
        peer: Peer,
        /// The tunnel key.
        key: u32,
    },
    /// Send a frame the core made (a device's answer, a released held
    /// frame, a copy rewritten differently) out of this local port.
    Emit {
        /// The local port.
        port: Uuid,
        /// The whole Ethernet frame (no offload).
        frame: Vec<u8>,
    },
    /// Send a frame the core made through the tunnel to `peer` with `key`.
    EmitTunnel {
        /// Where.
        peer: Peer,
        /// The tunnel key (the egress port's).
        key: u32,
        /// The whole Ethernet frame (no offload).
        frame: Vec<u8>,
    },
    /// Send a flow-state message to `peer` on [`crate::tunnel::STATE_KEY`]
    /// (see [`crate::tunnel::state`]).
    State {
        /// Where.
        peer: Peer,
        /// The message, an Ethernet frame.
        message: Vec<u8>,
    },
    /// Hand this frame to the local agent (an answer to its health probes).
    Agent(Vec<u8>),
    /// Count a drop: of the frame, of one branch of it, or of something
    /// the core gave up on.
    Drop(Reason),
    /// Publish this live trace event (stamped with the time); when it
    /// carries a tunnel tag, the frame's `Tunnel` actions that follow
    /// mark their datagrams with it. Comes before the frame's actions.
    Traced(Box<super::LiveTraceEvent>),
}

/// What became of the frame [`super::DatapathCore::process`] was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It leaves by the `Forward` and `Tunnel` actions.
    Sent,
    /// It goes nowhere: a drop of its ingress port.
    Dropped,
    /// It was answered instead of forwarded: a device replied (ARP, ICMP
    /// echo or error, fragmentation-needed for the tunnel) or took it for
    /// the agent. Not a drop.
    Answered,
    /// It waits: for its next hop's ARP answer, or for its datagram's
    /// first fragment. Not a drop (yet).
    Held,
}

impl Fate {
    /// The fate in one word, for traces.
    pub fn name(&self) -> &'static str {
        match self {
            Fate::Sent => "sent",
            Fate::Dropped => "dropped",
            Fate::Answered => "answered",
            Fate::Held => "held",
        }
    }
}

/// Why something was dropped, beyond the engine's own reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The engine ended a branch of the walk.
    Engine(DropReason),
    /// Too big for the tunnel and not to be fragmented: the remote copies
    /// were refused and the sender answered with fragmentation-needed.
    TunnelFragNeeded,
    /// A held later fragment's first fragment never passed.
    FragmentTimeout,
    /// A frame for another host, and this agent has no tunnel.
    TunnelUnavailable,
    /// A frame or state for a host that is not registered.
    TunnelUnknownPeer,
    /// A frame for a port the topology does not know.
    TunnelUnknownPort,
    /// A datagram from a registered host with a key nothing here answers to.
    TunnelUnknownKey,
    /// A datagram from an address that is neither a host nor a served VTEP.
    TunnelUnknownHost,
    /// An offloaded super-frame inside another.
    TunnelNestedOffload,
    /// A state message that does not decode.
    TunnelMalformedState,
    /// A sync request answered less than a second ago.
    TunnelSyncThrottled,
}

impl Reason {
    /// A short stable name, for counters (`plexus_datapath_drops_total`).
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Engine(reason) => reason.name(),
            Reason::TunnelFragNeeded => "tunnel_frag_needed",
            Reason::FragmentTimeout => "fragment_timeout",
            Reason::TunnelUnavailable => "tunnel_unavailable",
            Reason::TunnelUnknownPeer => "tunnel_unknown_peer",
            Reason::TunnelUnknownPort => "tunnel_unknown_port",
            Reason::TunnelUnknownKey => "tunnel_unknown_key",
            Reason::TunnelUnknownHost => "tunnel_unknown_host",
            Reason::TunnelNestedOffload => "tunnel_nested_offload",
            Reason::TunnelMalformedState => "tunnel_malformed_state",
            Reason::TunnelSyncThrottled => "tunnel_sync_throttled",
        }
    }
}

impl From<DropReason> for Reason {
    fn from(reason: DropReason) -> Reason {
        Reason::Engine(reason)
    }
}
