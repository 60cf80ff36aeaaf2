//! Packet sockets shared by every veth port of an agent.
//!
//! A socket per port costs the kernel a walk of the namespace's whole list
//! of packet sockets each time one is created (O(n²) over a cold start:
//! 2.2 s for 10,000 ports on kernel 6.18), a reactor registration and a
//! wakeup per port. [`SharedSockets`] are a few AF_PACKET sockets (one per
//! worker) bound to no interface, in one `PACKET_FANOUT` group whose eBPF
//! steering gives each interface's frames to one socket (in order, as a
//! socket of its own would) and spreads interfaces over the sockets.
//! An eBPF filter ([`IfindexFilter`]) passes only the frames of the served
//! interfaces; each received frame carries its interface index
//! ([`RxBatch::source`]), and sends name theirs (`sockaddr_ll`). Adding a
//! port is a map update and a promiscuous membership, no socket.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use super::afpacket::{packet_socket, AfPacketOptions, KernelStats};
use super::batch::{RxBatch, TxBatch};
use super::error::PortError;
use super::fanout::{self, PACKET_FANOUT_EBPF};
use super::ifindex_filter::{ifindex_steering, IfindexFilter};
use super::mmsg::{check_indices, kernel_stats, promiscuous, recv_batch_raw, send_one};
use super::mmsg::{send_queued, send_wire, set_buffers};
use super::open_many::IndexLookup;
use super::sys::{cvt, register, setsockopt_int, wait_readable};
use super::vnet::VnetHeader;

/// `setsockopt(SOL_PACKET, PACKET_FANOUT_DATA)`: the group's eBPF program.
const PACKET_FANOUT_DATA: libc::c_int = 22;

/// Most members a fanout group takes (`PACKET_FANOUT_MAX` without
/// `fanout_args`).
const MAX_SOCKETS: usize = 256;

/// The name these sockets go by in errors.
const NAME: &str = "shared packet sockets";

/// AF_PACKET sockets receiving from every served interface.
#[derive(Debug)]
pub struct SharedSockets {
    sockets: Vec<AsyncFd<OwnedFd>>,
    filter: IfindexFilter,
    lookup: IndexLookup,
    promiscuous: bool,
    /// Ports per interface index passed by the filter: the entry goes with
    /// the last of them (a port replaced on the same interface may be
    /// dropped after its successor was added).
    passed: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
}

impl SharedSockets {
    /// Opens `count` (1 to 256) sockets in the caller's network namespace,
    /// passing no interface yet. Fails where eBPF socket filters cannot be
    /// loaded (no `CAP_BPF`); the caller then opens a socket per port.
    /// Must run inside a Tokio runtime with IO enabled.
    pub fn open(count: usize, opts: &AfPacketOptions) -> Result<Arc<SharedSockets>, PortError> {
        let filter = IfindexFilter::new()
            .map_err(|e| PortError::from_os(NAME, "loading the interface filter (bpf)", e))?;
        let lookup = IndexLookup::new()
            .map_err(|e| PortError::from_os(NAME, "socket(AF_INET) for index lookups", e))?;
        let steering = ifindex_steering()
            .map_err(|e| PortError::from_os(NAME, "loading the fanout steering (bpf)", e))?;
        let count = count.clamp(1, MAX_SOCKETS);
        let mut sockets = Vec::with_capacity(count);
        let mut group = None;
        for _ in 0..count {
            let fd = packet_socket(NAME)?;
            if group.is_none() {
                let id = configure(&fd, &filter, opts, None)?;
                setsockopt_int(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    PACKET_FANOUT_DATA,
                    steering.as_raw_fd(),
                )
                .map_err(|e| PortError::from_os(NAME, "PACKET_FANOUT_DATA", e))?;
                group = Some(id);
            } else {
                configure(&fd, &filter, opts, group)?;
            }
            sockets.push(register(fd, NAME)?);
        }
        Ok(Arc::new(SharedSockets {
            sockets,
            filter,
            lookup,
            promiscuous: opts.promiscuous,
            passed: Default::default(),
        }))
    }

    /// How many sockets there are (receivers to serve them).
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Always false: there is at least one socket.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Starts receiving from interface `ifname` and returns its port;
    /// [`PortError::NoSuchInterface`] when the namespace has none of that name.
    pub fn add(self: &Arc<Self>, ifname: &str) -> Result<SharedPort, PortError> {
        let ifindex = self.lookup.index(ifname)?;
        // Before the port exists, whose drop undoes both.
        if self.promiscuous {
            promiscuous(self.first(), ifindex, libc::PACKET_ADD_MEMBERSHIP)
                .map_err(|e| PortError::from_os(ifname, "PACKET_ADD_MEMBERSHIP, PROMISC", e))?;
        }
        let mut passed = self.lock_passed();
        let ports = passed.entry(ifindex).or_default();
        if *ports == 0 {
            if let Err(e) = self.filter.pass(ifindex) {
                drop(passed);
                if self.promiscuous {
                    let _ = promiscuous(self.first(), ifindex, libc::PACKET_DROP_MEMBERSHIP);
                }
                return Err(PortError::from_os(
                    ifname,
                    "adding to the interface filter (bpf)",
                    e,
                ));
            }
        }
        *ports += 1;
        Ok(SharedPort {
            sockets: self.clone(),
            ifname: ifname.to_owned(),
            ifindex,
            to: destination(ifindex),
        })
    }

    /// The socket that holds the promiscuous memberships (the kernel drops
    /// them when it closes).
    fn first(&self) -> libc::c_int {
        self.sockets[0].get_ref().as_raw_fd()
    }

    fn lock_passed(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u32, usize>> {
        self.passed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A port of interface `ifindex` is dropped: the filter stops passing
    /// the interface with its last port.
    fn remove(&self, ifindex: u32, ifname: &str) {
        let mut passed = self.lock_passed();
        if let Some(ports) = passed.get_mut(&ifindex) {
            *ports -= 1;
            if *ports == 0 {
                passed.remove(&ifindex);
                if let Err(error) = self.filter.stop_passing(ifindex) {
                    tracing::warn!(%ifname, %error, "cannot remove the interface from the filter");
                }
            }
        }
        drop(passed);
        if self.promiscuous {
            // The interface may be gone already (its veth deleted): no matter.
            let _ = promiscuous(self.first(), ifindex, libc::PACKET_DROP_MEMBERSHIP);
        }
    }

    /// The socket a port sends on: spread by interface, so that ports do not
    /// all queue on one.
    fn sender(&self, ifindex: u32) -> &AsyncFd<OwnedFd> {
        &self.sockets[ifindex as usize % self.sockets.len()]
    }
}

/// Configures a fresh socket: offload headers, buffers, the filter, bound
/// to every interface, and in the fanout `group` (a new one when `None`).
/// Returns the group.
fn configure(
    fd: &OwnedFd,
    filter: &IfindexFilter,
    opts: &AfPacketOptions,
    group: Option<u32>,
) -> Result<u32, PortError> {
    let s = fd.as_raw_fd();
    let sockopt = |level, name, value: usize, op: &'static str| {
        let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
        setsockopt_int(s, level, name, value).map_err(|e| PortError::from_os(NAME, op, e))
    };
    sockopt(
        libc::SOL_PACKET,
        libc::PACKET_VNET_HDR,
        1,
        "PACKET_VNET_HDR",
    )?;
    if opts.ignore_outgoing {
        sockopt(
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            1,
            "PACKET_IGNORE_OUTGOING",
        )?;
    }
    set_buffers(s, opts).map_err(|(op, e)| PortError::from_os(NAME, op, e))?;
    // Filter first: the socket receives nothing until bound, and nothing
    // unfiltered after.
    filter
        .attach(s)
        .map_err(|e| PortError::from_os(NAME, "SO_ATTACH_BPF", e))?;
    let any = destination(0);
    // SAFETY: `any` is a live, initialised sockaddr_ll and we pass its exact size.
    let ret = unsafe {
        libc::bind(
            s,
            (&any as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    cvt(ret).map_err(|e| PortError::from_os(NAME, "bind", e))?;
    fanout::join(s, PACKET_FANOUT_EBPF, opts.ignore_outgoing, group, NAME)
}

/// The address of interface `ifindex` (0: every interface) for all protocols.
fn destination(ifindex: u32) -> libc::sockaddr_ll {
    // SAFETY: all-zero is a valid sockaddr_ll (plain integers and arrays).
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    sll
}

/// A port on one interface, received by the [`SharedSockets`] and sent
/// through them. Dropping it stops receiving from the interface.
pub struct SharedPort {
    sockets: Arc<SharedSockets>,
    ifname: String,
    ifindex: u32,
    to: libc::sockaddr_ll,
}

impl std::fmt::Debug for SharedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPort")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

impl SharedPort {
    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index (what [`RxBatch::source`] gives for its frames).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether the namespace's interface of this name is still the one
    /// served (false once it was deleted, or deleted and made again).
    pub fn is_current(&self) -> bool {
        self.sockets.lookup.index(&self.ifname).ok() == Some(self.ifindex)
    }

    fn fd(&self) -> libc::c_int {
        self.sockets.sender(self.ifindex).get_ref().as_raw_fd()
    }

    /// Never ready: the shared sockets' receivers take this port's frames.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::pending().await
    }

    /// Waits until the port's socket has room to send.
    pub async fn writable(&self) -> io::Result<()> {
        let mut guard = self.sockets.sender(self.ifindex).writable().await?;
        guard.retain_ready();
        Ok(())
    }

    /// Nothing: the shared sockets' receivers take this port's frames.
    pub fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        rx.clear();
        Ok(0)
    }

    /// Never returns: see [`SharedPort::readable`].
    pub async fn recv_batch(&self, _rx: &mut RxBatch) -> io::Result<usize> {
        std::future::pending().await
    }

    /// Sends as many queued frames as the socket takes now (as
    /// `AfPacket::try_send_batch`).
    pub fn try_send_batch(&self, tx: &mut TxBatch) -> io::Result<usize> {
        send_queued(self.fd(), tx, Some(&self.to))
    }

    /// Sends every queued frame, waiting for room (as `AfPacket::send_batch`).
    pub async fn send_batch(&self, tx: &mut TxBatch) -> io::Result<()> {
        super::send_all(self, tx).await
    }

    /// Sends frames `which` of `rx` without copying (as `AfPacket::send_rx`).
    pub fn send_rx(&self, rx: &RxBatch, which: &[usize]) -> io::Result<usize> {
        check_indices(rx, which)?;
        let frames = which.iter().filter_map(|&i| rx.wire(i));
        send_wire(self.fd(), frames, Some(&self.to))
    }

    /// Sends one frame with its offload header without waiting.
    pub fn try_send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        send_one(self.fd(), vnet, frame, Some(&self.to))
    }

    /// Sends one frame gathered from `parts` without waiting (see
    /// [`super::Port::try_send_parts`]).
    pub fn try_send_parts(&self, vnet: &VnetHeader, parts: &[&[u8]]) -> io::Result<()> {
        super::mmsg::send_parts(self.fd(), vnet, parts, Some(&self.to))
    }
}

impl Drop for SharedPort {
    fn drop(&mut self) {
        self.sockets.remove(self.ifindex, &self.ifname);
    }
}

/// One of the [`SharedSockets`], as a port that receives the frames of
/// many ports (each frame's [`RxBatch::source`] says whose) and sends none.
#[derive(Debug)]
pub struct SharedReceiver {
    sockets: Arc<SharedSockets>,
    k: usize,
}

impl SharedSockets {
    /// A receiver for each socket.
    pub fn receivers(self: &Arc<Self>) -> Vec<SharedReceiver> {
        (0..self.sockets.len())
            .map(|k| SharedReceiver {
                sockets: self.clone(),
                k,
            })
            .collect()
    }
}

/// The error of sending through a receiver.
fn receives_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a shared socket's receiver sends nothing (its ports do)",
    )
}

impl SharedReceiver {
    /// The name of the sockets.
    pub fn ifname(&self) -> &str {
        NAME
    }

    fn socket(&self) -> &AsyncFd<OwnedFd> {
        &self.sockets.sockets[self.k]
    }

    /// Waits until the socket has a frame to read.
    pub async fn readable(&self) -> io::Result<()> {
        wait_readable(self.socket()).await
    }

    /// Never ready: a receiver sends nothing.
    pub async fn writable(&self) -> io::Result<()> {
        std::future::pending().await
    }

    /// Receives a batch without waiting (`Ok(0)`: none queued), each frame
    /// with its interface index ([`RxBatch::source`]).
    pub fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        match recv_batch_raw(self.socket().get_ref().as_raw_fd(), rx, true) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    /// Waits for frames, then receives a batch.
    pub async fn recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        loop {
            self.readable().await?;
            let n = self.try_recv_batch(rx)?;
            if n > 0 || rx.dropped() > 0 {
                return Ok(n);
            }
        }
    }

    /// Fails: a receiver sends nothing.
    pub fn try_send_batch(&self, _tx: &mut TxBatch) -> io::Result<usize> {
        Err(receives_only())
    }

    /// Fails: a receiver sends nothing.
    pub async fn send_batch(&self, _tx: &mut TxBatch) -> io::Result<()> {
        Err(receives_only())
    }

    /// Fails: a receiver sends nothing.
    pub fn send_rx(&self, _rx: &RxBatch, _which: &[usize]) -> io::Result<usize> {
        Err(receives_only())
    }

    /// Fails: a receiver sends nothing.
    pub fn try_send(&self, _vnet: &VnetHeader, _frame: &[u8]) -> io::Result<()> {
        Err(receives_only())
    }

    /// Kernel counters of the socket since the previous call.
    pub fn take_kernel_stats(&self) -> io::Result<KernelStats> {
        kernel_stats(self.socket().get_ref().as_raw_fd())
    }
}
