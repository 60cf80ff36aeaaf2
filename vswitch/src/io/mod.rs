//! Packet I/O: the ports the datapath reads frames from and writes frames to.
//!
//! Two kinds of port exist, both carrying a [`VnetHeader`] in front of every
//! frame so GSO super-frames and partial checksums survive forwarding:
//!
//! * [`AfPacket`]: an AF_PACKET socket on an existing interface (the host
//!   end of a pod's veth), batched with `recvmmsg`/`sendmmsg`;
//! * [`Tap`]: a TAP device we create (or attach to), batched with read/write loops.
//!
//! [`PortIo`] lets the datapath drive both the same way, statically, and
//! [`Port`] is the enum to keep heterogeneous ports in one collection.
//! Buffers ([`RxBatch`], [`TxBatch`]) are allocated once and reused.
//!
//! Typical receive loop of one port task:
//!
//! ```no_run
//! # async fn run(port: vswitch::io::Port, out: vswitch::io::Port) -> std::io::Result<()> {
//! use vswitch::io::{PortIo, RxBatch};
//! let mut rx = RxBatch::new(64);
//! loop {
//!     let n = port.recv_batch(&mut rx).await?; // waits, then drains up to 64 frames
//!     let all: Vec<usize> = (0..n).collect(); // (a real datapath reuses this Vec)
//!     let _ = out.send_rx(&rx, &all); // zero-copy forward, vnet header included
//! }
//! # }
//! ```

mod afpacket;
mod batch;
mod chunk;
mod encap;
mod error;
mod fanout;
mod gro;
mod ifindex_filter;
mod mmsg;
pub mod netlink;
mod open_many;
mod reuseport;
mod shared;
mod sys;
mod tap;
mod udp;
mod vnet;
mod vtep;

use std::future::Future;
use std::io;

pub use afpacket::{AfPacket, AfPacketOptions, KernelStats};
pub use batch::{RxBatch, TxBatch, MAX_FRAME_LEN, SLOT_LEN};
pub use chunk::{
    frame_prefix, gather, parse_chunk, Chunk, FramePrefix, Gathered, PieceHeader, PiecePlan,
    Reassembled, Reassembly, CHUNK_HEADER, MAX_GATHERED,
};
pub(crate) use encap::ipv4_of;
pub use encap::{
    offload_of_received, parse_offloaded, plexus_ethernet_header, vxlan_header, Datagrams,
    EncapError, OFFLOAD_KEY, OFFLOAD_PREAMBLE, PLEXUS_ETHERTYPE,
};
pub use error::PortError;
pub use fanout::MAX_PORT_QUEUES;
pub use gro::{coalesce, Merging, Run};
pub use ifindex_filter::IfindexFilter;
pub use open_many::{open_many, OpenTimes};
pub use shared::{SharedPort, SharedReceiver, SharedSockets};
pub use tap::{Tap, TAP_OFFLOADS, TAP_VNET_HDR_SZ};
pub(crate) use udp::refuses_segments;
pub use udp::{TunnelSocket, VXLAN_AT};
pub use vnet::{VnetHeader, VNET_HDR_LEN};
pub use vtep::VtepPort;

/// What the datapath needs from a port, whatever its kind.
pub trait PortIo {
    /// The interface name.
    fn ifname(&self) -> &str;

    /// Waits until at least one frame can be read (never, for a port
    /// that does not receive itself: see [`Port::receives`]).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Waits until the port has room to send.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Receives a batch without waiting (`Ok(0)`: nothing queued).
    fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize>;

    /// Waits for frames, then receives a batch.
    fn recv_batch(&self, rx: &mut RxBatch) -> impl Future<Output = io::Result<usize>> + Send;

    /// Sends the queued frames the port takes now (`Err(WouldBlock)`: none).
    fn try_send_batch(&self, tx: &mut TxBatch) -> io::Result<usize>;

    /// Sends every queued frame, waiting for room.
    fn send_batch(&self, tx: &mut TxBatch) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends the frames `which` of a receive batch without copying them.
    fn send_rx(&self, rx: &RxBatch, which: &[usize]) -> io::Result<usize>;
}

/// Sends every queued frame of `tx` through `port`, waiting for room;
/// stops at the first rejected frame (dropped from the batch) with its error.
pub(crate) async fn send_all<P: PortIo + Sync>(port: &P, tx: &mut TxBatch) -> io::Result<()> {
    while !tx.is_empty() {
        match port.try_send_batch(tx) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => port.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ports one closing thread closes in turn.
const CLOSES_PER_THREAD: usize = 8;

/// Most threads [`close_all`] starts.
const MAX_CLOSING_THREADS: usize = 1024;

/// Closes (drops) `ports` on many threads at once and returns when all
/// are closed. Closing an AF_PACKET socket or a TAP waits for an RCU grace
/// period in the kernel (`synchronize_net`, about 15 ms here), so closing
/// 1,000 ports one after the other takes 15 s; closes running at the same
/// time share grace periods.
pub fn close_all<T: Send>(ports: Vec<T>) {
    if ports.len() <= 1 {
        return drop(ports);
    }
    let threads = ports
        .len()
        .div_ceil(CLOSES_PER_THREAD)
        .min(MAX_CLOSING_THREADS);
    let per_thread = ports.len().div_ceil(threads);
    let mut ports = ports;
    std::thread::scope(|scope| {
        while !ports.is_empty() {
            let chunk = ports.split_off(ports.len().saturating_sub(per_thread));
            let spawned = std::thread::Builder::new()
                .name("plexus-close".into())
                .stack_size(64 * 1024)
                .spawn_scoped(scope, move || drop(chunk));
            // Out of threads: the rest closes here, one after the other.
            if spawned.is_err() {
                break;
            }
        }
    });
    drop(ports);
}

macro_rules! delegate_port_io {
    ($ty:ty) => {
        impl PortIo for $ty {
            fn ifname(&self) -> &str {
                <$ty>::ifname(self)
            }
            async fn readable(&self) -> io::Result<()> {
                <$ty>::readable(self).await
            }
            async fn writable(&self) -> io::Result<()> {
                <$ty>::writable(self).await
            }
            fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
                <$ty>::try_recv_batch(self, rx)
            }
            async fn recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
                <$ty>::recv_batch(self, rx).await
            }
            fn try_send_batch(&self, tx: &mut TxBatch) -> io::Result<usize> {
                <$ty>::try_send_batch(self, tx)
            }
            async fn send_batch(&self, tx: &mut TxBatch) -> io::Result<()> {
                <$ty>::send_batch(self, tx).await
            }
            fn send_rx(&self, rx: &RxBatch, which: &[usize]) -> io::Result<usize> {
                <$ty>::send_rx(self, rx, which)
            }
        }
    };
}

delegate_port_io!(AfPacket);
delegate_port_io!(Tap);
delegate_port_io!(VtepPort);
delegate_port_io!(SharedPort);
delegate_port_io!(SharedReceiver);

/// Either kind of port, for collections of heterogeneous ports.
#[derive(Debug)]
pub enum Port {
    /// An AF_PACKET socket on a veth (or any Ethernet interface).
    AfPacket(AfPacket),
    /// A TAP device.
    Tap(Tap),
    /// An external VXLAN endpoint, through the tunnel socket.
    Vtep(VtepPort),
    /// A veth served by the agent's [`SharedSockets`].
    Shared(SharedPort),
    /// One of the [`SharedSockets`], receiving frames of many ports.
    Receiver(SharedReceiver),
}

impl From<AfPacket> for Port {
    fn from(p: AfPacket) -> Port {
        Port::AfPacket(p)
    }
}

impl From<SharedPort> for Port {
    fn from(p: SharedPort) -> Port {
        Port::Shared(p)
    }
}

impl From<Tap> for Port {
    fn from(t: Tap) -> Port {
        Port::Tap(t)
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Port::AfPacket($p) => $e,
            Port::Tap($p) => $e,
            Port::Vtep($p) => $e,
            Port::Shared($p) => $e,
            Port::Receiver($p) => $e,
        }
    };
}

impl Port {
    /// Sends one frame with its offload header without waiting
    /// (`WouldBlock` if the port is full).
    pub fn try_send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        dispatch!(self, p => p.try_send(vnet, frame))
    }

    /// Whether frames are read from the port itself: not from a port of
    /// the shared sockets (their receivers read) nor from a VTEP port
    /// How many extra receive queues the port has (a veth port's fanout
    /// members, a multi-queue TAP's other queues).
    pub fn queue_count(&self) -> usize {
        match self {
            Port::AfPacket(socket) => socket.queues().len(),
            Port::Tap(tap) => tap.queues().len(),
            _ => 0,
        }
    }

    /// Takes the port's extra receive queues out, as ports (to close them
    /// apart; the port then receives only what its own queue gets).
    pub fn take_queues(&mut self) -> Vec<Port> {
        match self {
            Port::AfPacket(socket) => socket.take_queues().into_iter().map(Port::from).collect(),
            Port::Tap(tap) => tap.take_queues().into_iter().map(Port::from).collect(),
            _ => Vec::new(),
        }
    }

    /// (the tunnel's receivers decide its endpoint's frames).
    pub fn receives(&self) -> bool {
        !matches!(self, Port::Shared(_) | Port::Vtep(_))
    }

    /// Whether [`Self::try_send_parts`] sends (a veth's socket or a TAP).
    pub fn gathers(&self) -> bool {
        matches!(self, Port::AfPacket(_) | Port::Shared(_) | Port::Tap(_))
    }

    /// Sends one frame gathered from `parts` (at most [`MAX_GATHERED`],
    /// in order) with its offload header, without waiting and without
    /// copying it in user space; `Unsupported` unless [`Self::gathers`].
    pub fn try_send_parts(&self, vnet: &VnetHeader, parts: &[&[u8]]) -> io::Result<()> {
        match self {
            Port::AfPacket(p) => p.try_send_parts(vnet, parts),
            Port::Shared(p) => p.try_send_parts(vnet, parts),
            Port::Tap(p) => p.try_send_parts(vnet, parts),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this port takes frames whole only",
            )),
        }
    }
}

impl PortIo for Port {
    fn ifname(&self) -> &str {
        dispatch!(self, p => p.ifname())
    }
    async fn readable(&self) -> io::Result<()> {
        dispatch!(self, p => p.readable().await)
    }
    async fn writable(&self) -> io::Result<()> {
        dispatch!(self, p => p.writable().await)
    }
    fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        dispatch!(self, p => p.try_recv_batch(rx))
    }
    async fn recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        dispatch!(self, p => p.recv_batch(rx).await)
    }
    fn try_send_batch(&self, tx: &mut TxBatch) -> io::Result<usize> {
        dispatch!(self, p => p.try_send_batch(tx))
    }
    async fn send_batch(&self, tx: &mut TxBatch) -> io::Result<()> {
        dispatch!(self, p => p.send_batch(tx).await)
    }
    fn send_rx(&self, rx: &RxBatch, which: &[usize]) -> io::Result<usize> {
        dispatch!(self, p => p.send_rx(rx, which))
    }
}
