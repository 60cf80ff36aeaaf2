//! An AF_PACKET socket bound to one interface, carrying offload metadata.
//!
//! The socket is `SOCK_RAW` / `ETH_P_ALL`, non-blocking, promiscuous, with
//! `PACKET_VNET_HDR` (every frame is preceded by a [`VnetHeader`], so GSO
//! super-frames and CHECKSUM_PARTIAL frames keep their offload through us)
//! and `PACKET_IGNORE_OUTGOING` (frames we transmit are not read back).
//! Batches move through `recvmmsg`/`sendmmsg`; Tokio readiness comes from
//! [`AsyncFd`]. See `docs/datapath-io.md`.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::batch::{RxBatch, TxBatch};
use super::error::{ifname_bytes, PortError};
use super::mmsg::{
    check_indices, kernel_stats, promiscuous, recv_batch_raw, recv_one, send_one, send_parts,
    send_queued, send_wire, set_buffers,
};
use super::sys::{cvt, getsockopt_int, register, setsockopt_int, wait_readable};
use super::vnet::VnetHeader;

/// Options for [`AfPacket::open_with`].
#[derive(Clone, Debug)]
pub struct AfPacketOptions {
    /// Put the interface in promiscuous mode for as long as the socket is open.
    pub promiscuous: bool,
    /// Do not receive the frames this host transmits on the interface.
    pub ignore_outgoing: bool,
    /// Requested receive buffer (bytes); `SO_RCVBUFFORCE` is tried first.
    pub rcvbuf: usize,
    /// Requested send buffer (bytes); `SO_SNDBUFFORCE` is tried first.
    pub sndbuf: usize,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            promiscuous: true,
            ignore_outgoing: true,
            rcvbuf: 16 << 20,
            sndbuf: 4 << 20,
        }
    }
}

/// Per-socket kernel counters (`PACKET_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames the kernel queued to the socket (received + dropped).
    pub packets: u32,
    /// Frames dropped because the socket's receive buffer was full.
    pub drops: u32,
}

/// A non-blocking AF_PACKET port on one interface, frames carrying a [`VnetHeader`].
#[derive(Debug)]
pub struct AfPacket {
    fd: AsyncFd<OwnedFd>,
    ifname: String,
    ifindex: u32,
    /// More sockets on the interface receiving some of its flows (see
    /// [`AfPacket::add_queues`]).
    pub(super) queues: Vec<AfPacket>,
    /// The flow-hash fanout group of this socket and its queues, once it has any.
    pub(super) fanout_group: Option<u32>,
}

/// A new AF_PACKET socket (raw, non-blocking, close-on-exec) that receives
/// nothing yet: protocol 0, until [`AfPacket::configure`] binds it.
///
/// The kernel appends every packet socket at the tail of its network
/// namespace's list, walking the list under a mutex (`packet_create`), so
/// this call costs more the more packet sockets the namespace holds (see
/// [`super::open_many`]).
pub(crate) fn packet_socket(ifname: &str) -> Result<OwnedFd, PortError> {
    // Protocol 0: the socket receives nothing until bind() names both the
    // interface and ETH_P_ALL, so no frame from another interface slips in.
    // SAFETY: plain socket(2) call with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        let source = io::Error::last_os_error();
        return Err(PortError::from_os(
            ifname,
            "socket(AF_PACKET, SOCK_RAW)",
            source,
        ));
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

impl AfPacket {
    /// Opens `ifname` (in the caller's network namespace) with default options.
    ///
    /// Must run inside a Tokio runtime with IO enabled.
    pub fn open(ifname: &str) -> Result<AfPacket, PortError> {
        Self::open_with(ifname, &AfPacketOptions::default())
    }

    /// Opens `ifname` with explicit options; see [`AfPacket::open`].
    pub fn open_with(ifname: &str, opts: &AfPacketOptions) -> Result<AfPacket, PortError> {
        let name = ifname_bytes(ifname, false)?;
        // SAFETY: `name` is NUL-terminated (ifname_bytes leaves at least one
        // trailing zero in the IFNAMSIZ array) and outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr().cast()) };
        if ifindex == 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => PortError::NoSuchInterface {
                    ifname: ifname.to_owned(),
                },
                _ => PortError::from_os(ifname, "if_nametoindex", source),
            });
        }
        let fd = packet_socket(ifname)?;
        Self::configure(fd, ifname, ifindex, opts)
    }

    /// Configures a fresh socket of [`packet_socket`] as a port on `ifname`
    /// (index `ifindex`): options, bind, promiscuous membership, and
    /// registration with the current Tokio reactor.
    pub(crate) fn configure(
        fd: OwnedFd,
        ifname: &str,
        ifindex: u32,
        opts: &AfPacketOptions,
    ) -> Result<AfPacket, PortError> {
        let s = fd.as_raw_fd();
        let sockopt = |level, name, value: usize, op: &'static str| {
            let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
            setsockopt_int(s, level, name, value).map_err(|e| PortError::from_os(ifname, op, e))
        };

        sockopt(
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            1,
            "setsockopt(PACKET_VNET_HDR)",
        )?;
        if opts.ignore_outgoing {
            sockopt(
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                1,
                "setsockopt(PACKET_IGNORE_OUTGOING)",
            )?;
        }
        set_buffers(s, opts).map_err(|(op, e)| PortError::from_os(ifname, op, e))?;

        // SAFETY: all-zero is a valid sockaddr_ll (plain integers and arrays).
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a live, initialised sockaddr_ll and we pass its exact size.
        let ret = unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        cvt(ret).map_err(|e| PortError::from_os(ifname, "bind", e))?;

        if opts.promiscuous {
            // The kernel drops the membership when the socket closes.
            promiscuous(s, ifindex, libc::PACKET_ADD_MEMBERSHIP).map_err(|e| {
                PortError::from_os(ifname, "setsockopt(PACKET_ADD_MEMBERSHIP, PROMISC)", e)
            })?;
        }

        let fd = register(fd, ifname)?;
        Ok(AfPacket {
            fd,
            ifname: ifname.to_owned(),
            ifindex,
            queues: Vec::new(),
            fanout_group: None,
        })
    }

    /// The interface name this port is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index this port is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Effective (kernel-doubled) receive and send buffer sizes, in bytes.
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        let s = self.as_raw_fd();
        let r = getsockopt_int(s, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        let w = getsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUF)?;
        Ok((r.max(0) as usize, w.max(0) as usize))
    }

    /// Kernel counters since the previous call (reading resets them): frames
    /// queued to this socket and frames dropped because its receive buffer was full.
    pub fn take_kernel_stats(&self) -> io::Result<KernelStats> {
        kernel_stats(self.as_raw_fd())
    }

    /// Waits until at least one frame can be read (drain it with `try_recv_batch`).
    pub async fn readable(&self) -> io::Result<()> {
        wait_readable(&self.fd).await
    }

    /// Receives up to `rx.capacity()` frames without waiting; `Ok(0)` if none is queued.
    ///
    /// The batch is replaced, not appended to. Frames the kernel had to drop
    /// (too large for a slot, or an offload a vnet header cannot describe,
    /// e.g. tunnel GSO) are counted in [`RxBatch::dropped`].
    pub fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        match recv_batch_raw(self.as_raw_fd(), rx, false) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    /// Waits for frames and receives a batch.
    ///
    /// Returns once at least one frame was received or dropped (see
    /// [`RxBatch::dropped`]), so `Ok(0)` is possible but rare.
    pub async fn recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                recv_batch_raw(fd.as_raw_fd(), rx, false)
            })
            .await
    }

    /// Sends as many queued frames as the socket takes now; they leave the batch.
    ///
    /// `Ok(n)`: `n` frames sent (`0` only if the batch was empty); unsent ones
    /// stay queued. `Err(WouldBlock)`: nothing could be sent now. Any other
    /// error: the oldest queued frame was rejected (e.g. `EMSGSIZE`, `EINVAL`
    /// for a bad vnet header, `ENETDOWN`) and has been dropped from the batch.
    pub fn try_send_batch(&self, tx: &mut TxBatch) -> io::Result<usize> {
        send_queued(self.as_raw_fd(), tx, None)
    }

    /// Sends every queued frame, waiting for socket room; see [`AfPacket::try_send_batch`].
    ///
    /// Stops at the first rejected frame, which is dropped and its error returned.
    pub async fn send_batch(&self, tx: &mut TxBatch) -> io::Result<()> {
        super::send_all(self, tx).await
    }

    /// Sends frames `which` of `rx` as they are (header included) without copying.
    ///
    /// Returns how many leading entries of `which` were sent. `Err` only if
    /// the first one could not be sent: `WouldBlock` (socket full) or the
    /// frame's own error, which the caller should count as a drop and skip;
    /// `InvalidInput` (nothing sent) if an index is not below `rx.len()`.
    pub fn send_rx(&self, rx: &RxBatch, which: &[usize]) -> io::Result<usize> {
        check_indices(rx, which)?;
        send_wire(
            self.as_raw_fd(),
            which.iter().filter_map(|&i| rx.wire(i)),
            None,
        )
    }

    /// Receives one frame into `buf` without waiting; `Ok(None)` if none is queued.
    ///
    /// A frame longer than `buf` is consumed and reported as `InvalidData`.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<(VnetHeader, usize)>> {
        match recv_one(self.as_raw_fd(), buf) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for and receives one frame into `buf`; see [`AfPacket::try_recv`].
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(VnetHeader, usize)> {
        self.fd
            .async_io(Interest::READABLE, |fd| recv_one(fd.as_raw_fd(), buf))
            .await
    }

    /// Sends one frame with its vnet header without waiting (`WouldBlock` if full).
    pub fn try_send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        send_one(self.as_raw_fd(), vnet, frame, None)
    }

    /// Sends one frame gathered from `parts` without waiting (see
    /// [`super::Port::try_send_parts`]).
    pub fn try_send_parts(&self, vnet: &VnetHeader, parts: &[&[u8]]) -> io::Result<()> {
        send_parts(self.as_raw_fd(), vnet, parts, None)
    }

    /// Sends one frame, waiting for socket room if needed.
    pub async fn send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                send_one(fd.as_raw_fd(), vnet, frame, None)
            })
            .await
    }

    /// Waits until the socket has room to send.
    pub async fn writable(&self) -> io::Result<()> {
        let mut guard = self.fd.writable().await?;
        guard.retain_ready();
        Ok(())
    }
}

impl AsRawFd for AfPacket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}
